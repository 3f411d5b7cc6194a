//! Serving queries: UDP datagrams and TCP streams (two-byte length prefix, RFC 1035 4.2.2),
//! each answered from the name table or forwarded upstream over the same transport.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::message::{refusal, Query, Refusal, RCODE_SERVFAIL};
use super::{Dns, TCP_IDLE, UPSTREAM_TIMEOUT};

/// The largest DNS message (a TCP one; also the receive buffer for UDP).
const MAX_MESSAGE: usize = 65_535;

pub async fn serve_udp(dns: Arc<Dns>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors of earlier replies surface here on some systems: not fatal.
                tracing::debug!(error = %e, "DNS proxy: UDP receive");
                continue;
            }
        };
        let Ok(permit) = dns.inflight.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "DNS proxy: too many queries in flight; dropped (the client retries)");
            continue;
        };
        let msg = buf[..n].to_vec();
        let (dns, sock) = (dns.clone(), sock.clone());
        tokio::spawn(async move {
            if let Some(reply) = dns.handle(&msg, false).await {
                let _ = sock.send_to(&reply, peer).await;
            }
            drop(permit);
        });
    }
}

pub async fn serve_tcp(dns: Arc<Dns>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::debug!(error = %e, "DNS proxy: TCP accept");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = dns.tcp_slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "DNS proxy: too many TCP connections; closed");
            continue;
        };
        let dns = dns.clone();
        tokio::spawn(async move {
            serve_stream(&dns, stream).await;
            drop(slot);
        });
    }
}

/// Queries on one TCP connection, one after another, until it closes or idles.
async fn serve_stream(dns: &Dns, mut stream: TcpStream) {
    while let Some(msg) = read_framed(&mut stream).await {
        let Some(reply) = dns.handle(&msg, true).await else { return };
        // A client that does not read its answers gives its slot back after the idle time.
        if !matches!(tokio::time::timeout(TCP_IDLE, write_framed(&mut stream, &reply)).await, Ok(Ok(()))) {
            return;
        }
    }
}

async fn read_framed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await.ok()?.ok()?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg)).await.ok()?.ok()?;
    Some(msg)
}

async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::Error::other("DNS message over 64 KiB"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await
}

/// What the proxy does with one message before any upstream is asked.
pub(crate) enum Local {
    /// Not answered at all (no header, or a response).
    Drop,
    Reply(Vec<u8>),
    /// Not the table's to answer: forward it.
    Forward(Query),
}

/// The answer from `table` (`None`: before the first table), or what else to do.
pub(crate) fn local(table: Option<&super::table::Table>, msg: &[u8], tcp: bool) -> Local {
    let q = match Query::parse(msg) {
        Ok(q) => q,
        Err(Refusal::Drop) => return Local::Drop,
        Err(Refusal::Answer { id, rd, rcode }) => return Local::Reply(refusal(id, rd, rcode)),
    };
    let limit = reply_limit(&q, tcp);
    let Some(table) = table else {
        tracing::debug!(name = %q.name, "DNS proxy: query before the first name table; SERVFAIL");
        return Local::Reply(q.answer(RCODE_SERVFAIL, &[], limit));
    };
    if q.is_internet() {
        if let Some(records) = table.lookup(&q.name, q.qtype) {
            return Local::Reply(q.answer(0, &records, limit));
        }
    }
    Local::Forward(q)
}

/// The largest reply the asker takes: any over TCP, its UDP size over UDP.
pub(crate) fn reply_limit(q: &Query, tcp: bool) -> usize {
    if tcp {
        MAX_MESSAGE
    } else {
        q.udp_size
    }
}

impl Dns {
    /// The reply to one message, or `None` when it is not answered at all.
    async fn handle(&self, msg: &[u8], tcp: bool) -> Option<Vec<u8>> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let table = self.table.load_full();
        let q = match local(table.as_deref(), msg, tcp) {
            Local::Drop => return None,
            Local::Reply(r) => return Some(r),
            Local::Forward(q) => q,
        };
        self.stats.upstream_requests.fetch_add(1, Ordering::Relaxed);
        for upstream in &self.upstreams {
            let reply = if tcp { forward_tcp(*upstream, msg).await } else { forward_udp(*upstream, msg, &q).await };
            match reply {
                Ok(r) if q.answered_by(&r) => return Some(r),
                Ok(_) => tracing::debug!(%upstream, name = %q.name, "DNS proxy: upstream answered another question"),
                Err(e) => tracing::debug!(%upstream, name = %q.name, error = %e, "DNS proxy: upstream failed"),
            }
        }
        self.stats.upstream_failures.fetch_add(1, Ordering::Relaxed);
        Some(q.answer(RCODE_SERVFAIL, &[], reply_limit(&q, tcp)))
    }
}

/// Sends `msg` to `upstream` from a fresh port and waits for the datagram that answers it
/// (others, spoofed or late, are skipped) until the timeout.
async fn forward_udp(upstream: SocketAddr, msg: &[u8], q: &Query) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(upstream).await?;
    sock.send(msg).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))??;
        if q.answered_by(&buf[..n]) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(upstream: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let mut s = TcpStream::connect(upstream).await?;
        write_framed(&mut s, msg).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut reply).await?;
        Ok(reply)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
}
