//! `weft sample` flags, validated here so the services only see typed values.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use http::uri::{Authority, Uri};

/// Run one service of the bookinfo sample application
/// (`weft sample <productpage|details|reviews|ratings> [flags]`).
///
/// `--version` (or `SAMPLE_VERSION`) only matters to reviews; the other services ignore it, so
/// one environment can be shared by every container of the demo. The upstream URLs only matter
/// to the services that call them (productpage: details and reviews; reviews v2/v3: ratings).
#[derive(clap::Args, Debug, Clone)]
pub struct SampleArgs {
    /// Which bookinfo service to run.
    #[arg(value_enum)]
    pub service: Service,
    /// Address to serve HTTP on.
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:9080", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// reviews only: v1 shows no stars and never calls ratings, v2 black stars, v3 red stars.
    /// Ignored by the other services.
    #[arg(long = "version", value_enum, value_name = "VERSION", env = "SAMPLE_VERSION", default_value = "v1")]
    pub version: ReviewsVersion,
    /// Where productpage finds details (plain HTTP; the mesh adds TLS).
    #[arg(long, value_name = "URL", default_value = "http://details:9080", value_parser = parse_base_url)]
    pub details_url: BaseUrl,
    /// Where productpage finds reviews.
    #[arg(long, value_name = "URL", default_value = "http://reviews:9080", value_parser = parse_base_url)]
    pub reviews_url: BaseUrl,
    /// Where reviews v2 and v3 find ratings.
    #[arg(long, value_name = "URL", default_value = "http://ratings:9080", value_parser = parse_base_url)]
    pub ratings_url: BaseUrl,
    /// Deadline for each upstream call, connect to last body byte (Go duration: "3s", "500ms").
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// The `podname` reviews reports (default: this host's name).
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The HTTP proxy upstream calls go through. Not a flag: `weft sample` reads curl's
    /// variables (`http_proxy`/`HTTP_PROXY`, `no_proxy`/`NO_PROXY`) when it starts.
    #[arg(skip)]
    pub proxy: crate::proxy::ProxyEnv,
}

/// The four bookinfo services.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Productpage,
    Details,
    Reviews,
    Ratings,
}

/// The three versions of reviews, as bookinfo deploys them.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReviewsVersion {
    #[default]
    V1,
    V2,
    V3,
}

/// An `http://host[:port][/prefix]` base URL for upstream calls; request paths are appended to
/// the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    authority: Authority,
    prefix: String,
}

impl Service {
    /// The name used in logs and in the `x-weft-sample` header (reviews adds its version).
    pub fn name(self, version: ReviewsVersion) -> &'static str {
        match (self, version) {
            (Service::Productpage, _) => "productpage",
            (Service::Details, _) => "details",
            (Service::Ratings, _) => "ratings",
            (Service::Reviews, ReviewsVersion::V1) => "reviews-v1",
            (Service::Reviews, ReviewsVersion::V2) => "reviews-v2",
            (Service::Reviews, ReviewsVersion::V3) => "reviews-v3",
        }
    }
}

impl BaseUrl {
    /// This base with `path` (starting with `/`) appended.
    pub(crate) fn join(&self, path: &str) -> Result<Uri, http::Error> {
        Uri::builder().scheme("http").authority(self.authority.clone()).path_and_query(format!("{}{path}", self.prefix)).build()
    }
}

impl FromStr for BaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let uri: Uri = s.parse().map_err(|e| format!("not a URL ({e}); expected http://host:port, e.g. http://details:9080"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(format!("scheme {other}:// is not supported: the samples speak plain http:// (the mesh adds TLS)")),
            None => return Err(format!("missing scheme: write http://{s}")),
        }
        let authority = uri.authority().cloned().ok_or_else(|| "missing host: expected http://host:port".to_string())?;
        if authority.as_str().contains('@') {
            return Err("user info is not supported in upstream URLs".to_string());
        }
        if uri.query().is_some() {
            return Err("a query string is not supported in upstream URLs".to_string());
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(BaseUrl { authority, prefix })
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| "expected IP:PORT, e.g. 0.0.0.0:9080 or [::]:9080 (a host name is not accepted here)".to_string())
}

fn parse_base_url(s: &str) -> Result<BaseUrl, String> {
    s.parse()
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse_go_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than zero".to_string());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_joins_paths() {
        let b: BaseUrl = "http://details:9080".parse().unwrap();
        assert_eq!(b.join("/details/0").unwrap().to_string(), "http://details:9080/details/0");
        let b: BaseUrl = "http://127.0.0.1:1234/prefix/".parse().unwrap();
        assert_eq!(b.join("/x").unwrap().to_string(), "http://127.0.0.1:1234/prefix/x");
        assert_eq!(b.to_string(), "http://127.0.0.1:1234/prefix");
    }

    #[test]
    fn base_url_rejects_what_the_client_cannot_do() {
        assert!(BaseUrl::from_str("https://details:9080").unwrap_err().contains("plain http://"));
        assert!(BaseUrl::from_str("details:9080").unwrap_err().contains("http://"));
        assert!(BaseUrl::from_str("http://details:9080/?a=b").unwrap_err().contains("query"));
        assert!(BaseUrl::from_str("not a url").is_err());
    }
}
