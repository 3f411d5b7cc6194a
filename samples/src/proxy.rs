//! Upstream calls through an HTTP proxy, as curl makes them: `http_proxy` (else `HTTP_PROXY`)
//! names the proxy for `http://` URLs, `no_proxy` (else `NO_PROXY`) the hosts reached directly
//! (curl's rules: `*`, domain suffixes, IPs and CIDRs). A proxied request goes to the proxy with
//! its absolute URI (`GET http://reviews:9080/reviews/0`) and its own `Host` header, so the
//! proxy — a sidecar that is not capturing traffic — can route it by `host:port`.
//!
//! The connector below only decides where to connect and marks proxied connections; hyper's
//! client then writes the absolute form itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where upstream calls go through a proxy; the default is never.
#[derive(Clone, Debug, Default)]
pub struct ProxyEnv {
    matcher: Option<Arc<Matcher>>,
}

impl ProxyEnv {
    /// Reads curl's variables through `get` (the process environment in `weft sample`, a map in
    /// tests). Lower case wins, as in curl; an empty or unusable proxy URL means no proxy.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let var = |lower: &str, upper: &str| get(lower).filter(|v| !v.is_empty()).or_else(|| get(upper)).unwrap_or_default();
        let http = var("http_proxy", "HTTP_PROXY");
        if http.trim().is_empty() {
            return ProxyEnv::default();
        }
        let matcher = Matcher::builder().http(http.trim()).no(var("no_proxy", "NO_PROXY")).build();
        ProxyEnv { matcher: Some(Arc::new(matcher)) }
    }

    /// The process's own environment.
    pub fn from_process() -> ProxyEnv {
        ProxyEnv::from_lookup(|k| std::env::var(k).ok())
    }

    /// The proxy a request for `uri` goes through, if any.
    pub fn proxy_for(&self, uri: &Uri) -> Option<Uri> {
        Some(self.matcher.as_ref()?.intercept(uri)?.uri().clone())
    }

    /// `Proxy-Authorization` for `uri`'s proxy, when its URL carries `user:password@`.
    pub(crate) fn authorization(&self, uri: &Uri) -> Option<HeaderValue> {
        self.matcher.as_ref()?.intercept(uri)?.basic_auth().cloned()
    }
}

/// Connects to the proxy for proxied destinations, straight to the destination otherwise.
#[derive(Clone)]
pub(crate) struct ProxyConnector {
    direct: HttpConnector,
    proxy: ProxyEnv,
}

impl ProxyConnector {
    pub(crate) fn new(direct: HttpConnector, proxy: ProxyEnv) -> ProxyConnector {
        ProxyConnector { direct, proxy }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let proxy = self.proxy.proxy_for(&dst);
        let mut direct = self.direct.clone();
        Box::pin(async move {
            let proxied = proxy.is_some();
            let io = direct.call(proxy.unwrap_or(dst)).await?;
            Ok(Conn { io, proxied })
        })
    }
}

/// A connection that tells hyper whether it leads to a proxy (then requests are written in
/// absolute form).
pub(crate) struct Conn {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: hyper::rt::ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ProxyEnv::from_lookup(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    fn via(p: &ProxyEnv, url: &str) -> Option<String> {
        p.proxy_for(&url.parse().expect("uri")).map(|u| u.to_string())
    }

    #[test]
    fn curls_variables_choose_the_proxy() {
        assert_eq!(via(&env(&[]), "http://reviews:9080/"), None);
        let upper = env(&[("HTTP_PROXY", "http://127.77.0.2:15080")]);
        assert_eq!(via(&upper, "http://reviews:9080/reviews/0").as_deref(), Some("http://127.77.0.2:15080/"));
        let both = env(&[("HTTP_PROXY", "http://127.0.0.9:1"), ("http_proxy", "127.77.0.2:15080")]);
        assert_eq!(via(&both, "http://reviews:9080/").as_deref(), Some("http://127.77.0.2:15080/"), "lower case wins; no scheme is http");
        assert_eq!(via(&both, "https://reviews/"), None, "http_proxy is for http:// only");
    }

    #[test]
    fn no_proxy_names_hosts_reached_directly() {
        let p = env(&[("http_proxy", "http://127.77.0.2:15080"), ("NO_PROXY", "localhost, .example.com,127.0.0.0/8")]);
        assert_eq!(via(&p, "http://localhost:8080/"), None);
        assert_eq!(via(&p, "http://api.example.com/"), None);
        assert_eq!(via(&p, "http://127.1.2.3:9080/"), None);
        assert!(via(&p, "http://reviews:9080/").is_some());
        assert!(via(&env(&[("http_proxy", "http://127.77.0.2:15080"), ("no_proxy", "*")]), "http://reviews/").is_none());
    }

    #[test]
    fn credentials_in_the_proxy_url_become_proxy_authorization() {
        let p = env(&[("http_proxy", "http://user:pass@127.77.0.2:15080")]);
        let auth = p.authorization(&"http://reviews:9080/".parse().expect("uri"));
        assert_eq!(auth.as_ref().and_then(|v| v.to_str().ok()), Some("Basic dXNlcjpwYXNz"));
    }
}
