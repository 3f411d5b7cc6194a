//! Transport sockets: a connection as plain TCP or TLS on either side, and the TLS handshakes
//! with their `ssl.*` accounting.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::stats::SslStats;
use crate::tls::san::Sans;
use crate::tls::verify::{classify, Failure};
use crate::tls::{version_name, ClientTls, ServerTls};

/// One connection's byte stream, whatever its transport.
pub enum Stream {
    Plain(TcpStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// What a TLS handshake established, for routing, logs and later layers (authorization,
/// telemetry labels).
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: &'static str,
    pub cipher: String,
    pub alpn: Option<String>,
    /// The peer's leaf certificate, when it presented one. Its names are read on demand
    /// (`peer_sans`), so a handshake does not parse a certificate nothing asks about.
    pub peer: Option<Arc<CertificateDer<'static>>>,
    /// The certificate this side presented (server side only), for `x-forwarded-client-cert`.
    pub local: Option<Arc<CertificateDer<'static>>>,
    /// This connection's `x-forwarded-client-cert` element, built by the first request that
    /// needs it: hashing and parsing certificates is per connection, not per request (a
    /// connection has one connection manager, so one set of details).
    pub xfcc: Arc<std::sync::OnceLock<String>>,
    /// The peer's first URI SAN, read once per connection by the first request that needs it
    /// (telemetry's peer principal).
    pub peer_uri: Arc<std::sync::OnceLock<Option<String>>>,
}

impl TlsInfo {
    fn of(conn: &rustls::CommonState) -> TlsInfo {
        TlsInfo {
            version: version_name(conn.protocol_version()),
            cipher: conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default(),
            alpn: conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
            peer: conn.peer_certificates().and_then(|c| c.first()).map(|c| Arc::new(c.clone().into_owned())),
            local: None,
            xfcc: Arc::default(),
            peer_uri: Arc::default(),
        }
    }

    /// The peer certificate's names (none without a peer certificate).
    pub fn peer_sans(&self) -> Sans {
        self.peer.as_ref().map(|c| Sans::of(c)).unwrap_or_default()
    }

    /// The peer certificate's first URI SAN, parsed once per connection.
    pub fn peer_uri(&self) -> Option<&str> {
        self.peer_uri.get_or_init(|| self.peer_sans().uri.into_iter().next()).as_deref()
    }

    /// The peer's SPIFFE identity (first `spiffe://` URI SAN), if any.
    pub fn peer_spiffe(&self) -> Option<String> {
        self.peer_sans().uri.into_iter().find(|u| u.starts_with("spiffe://"))
    }
}

/// A failed handshake: counted, and described for logs.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {peer} failed: {reason}")]
pub struct HandshakeError {
    pub peer: SocketAddr,
    pub reason: String,
    /// The peer's certificate was refused (untrusted, expired, wrong SAN, missing).
    pub verification: bool,
}

fn count_success(stats: &SslStats, info: &TlsInfo) {
    stats.handshake.inc();
    match info.version {
        "TLSv1.3" => stats.tls13.inc(),
        "TLSv1.2" => stats.tls12.inc(),
        _ => {}
    }
}

fn failed(stats: &SslStats, e: &io::Error, peer: SocketAddr) -> HandshakeError {
    let failure = classify(e);
    match failure {
        Failure::NoCert => stats.fail_verify_no_cert.inc(),
        Failure::San => stats.fail_verify_san.inc(),
        Failure::Verify => stats.fail_verify_error.inc(),
        Failure::Other => {}
    }
    stats.connection_error.inc();
    HandshakeError { peer, reason: e.to_string(), verification: failure != Failure::Other }
}

/// Terminates TLS on an accepted connection within `timeout`.
pub async fn accept_tls(
    tls: &ServerTls,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    stats: &SslStats,
) -> Result<(Stream, TlsInfo), HandshakeError> {
    let handshake = async {
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let config = tls.config_for(start.client_hello().alpn());
        start.into_stream(config).await
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(s)) => {
            let mut info = TlsInfo::of(s.get_ref().1);
            info.local = tls.local_cert();
            count_success(stats, &info);
            Ok((Stream::ServerTls(Box::new(s)), info))
        }
        Ok(Err(e)) => Err(failed(stats, &e, peer)),
        Err(_) => {
            stats.connection_error.inc();
            Err(HandshakeError { peer, reason: format!("no handshake within {timeout:?}"), verification: false })
        }
    }
}

/// Originates TLS on a connected upstream socket.
pub async fn connect_tls(tls: &ClientTls, tcp: TcpStream, peer: SocketAddr, stats: &SslStats) -> Result<(Stream, TlsInfo), HandshakeError> {
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    match connector.connect(tls.server_name(peer.ip()), tcp).await {
        Ok(s) => {
            let info = TlsInfo::of(s.get_ref().1);
            count_success(stats, &info);
            Ok((Stream::ClientTls(Box::new(s)), info))
        }
        Err(e) => Err(failed(stats, &e, peer)),
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => $e,
            Stream::ServerTls($s) => $e,
            Stream::ClientTls($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::ServerTls(s) => s.is_write_vectored(),
            Stream::ClientTls(s) => s.is_write_vectored(),
        }
    }
}
