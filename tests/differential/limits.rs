//! The connection manager's limits, with Envoy's defaults and as configured: what a client
//! that sends too much, too slowly or for too long meets, in Envoy and in weft alike.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// What a client saw on one connection after sending `bytes` (and, if given, more bytes after
/// a pause): the statuses of the responses, whether the proxy closed the connection, and when.
#[derive(Debug)]
struct Seen {
    statuses: Vec<u16>,
    closed_after: Option<Duration>,
}

async fn converse(addr: &str, bytes: &[u8], wait: Duration) -> Seen {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut closed_after = None;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let statuses = text.match_indices("HTTP/1.1 ").filter_map(|(i, _)| text.get(i + 9..i + 12)).filter_map(|c| c.parse().ok()).collect();
    Seen { statuses, closed_after }
}

#[tokio::test]
async fn headers_with_underscores_are_rejected_or_dropped_as_configured() {
    for action in ["REJECT_REQUEST", "DROP_HEADER"] {
        let (ups, envoy, weft) = pair(json!({"common_http_protocol_options": {"headers_with_underscores_action": action}})).await;
        let req = b"GET /u HTTP/1.1\r\nHost: t.example\r\nx_user: admin\r\nx-ok: 1\r\nConnection: close\r\n\r\n";
        let mut results = Vec::new();
        for (run, up) in [(&envoy, &ups[0]), (&weft, &ups[1])] {
            up.reset();
            let seen = converse(&run.addr(), req, Duration::from_secs(3)).await;
            let forwarded: Vec<String> =
                up.seen().first().and_then(|r| r["headers"].as_object().map(|h| h.keys().cloned().collect())).unwrap_or_default();
            let counters = (
                run.stat("http1.requests_rejected_with_underscores_in_headers").await,
                run.stat("http1.dropped_headers_with_underscores").await,
            );
            results.push((seen.statuses, forwarded.contains(&"x_user".to_string()), forwarded.contains(&"x-ok".to_string()), counters));
        }
        let want = if action == "REJECT_REQUEST" { (vec![400], false, false, (1, 0)) } else { (vec![200], false, true, (0, 1)) };
        assert_eq!(results[0], want, "{action}: envoy");
        assert_eq!(results[1], want, "{action}: weft");
    }
}

#[tokio::test]
async fn max_headers_count_is_envoys_default_and_configurable() {
    let head = |n: usize| {
        let mut r = "GET / HTTP/1.1\r\nHost: t.example\r\nConnection: close\r\n".to_string();
        for i in 0..n {
            r.push_str(&format!("x-h{i}: v\r\n"));
        }
        r.push_str("\r\n");
        r.into_bytes()
    };
    let (_ups, envoy, weft) = pair(json!({"common_http_protocol_options": {"max_headers_count": 6}})).await;
    for (n, want) in [(4, 200), (5, 431), (20, 431)] {
        for run in [&envoy, &weft] {
            let seen = converse(&run.addr(), &head(n), Duration::from_secs(3)).await;
            assert_eq!(seen.statuses, vec![want], "{}: host, connection and {n} more headers with max_headers_count 6", run.kind);
        }
    }
}

#[tokio::test]
async fn max_requests_per_connection_closes_after_the_last() {
    let (ups, envoy, weft) = pair(json!({"common_http_protocol_options": {"max_requests_per_connection": 2}})).await;
    let three =
        b"GET /1 HTTP/1.1\r\nHost: t.example\r\n\r\nGET /2 HTTP/1.1\r\nHost: t.example\r\n\r\nGET /3 HTTP/1.1\r\nHost: t.example\r\n\r\n";
    for (run, up) in [(&envoy, &ups[0]), (&weft, &ups[1])] {
        up.reset();
        let seen = converse(&run.addr(), three, Duration::from_secs(3)).await;
        assert_eq!(seen.statuses, vec![200, 200], "{}: two answers, then the connection closes", run.kind);
        assert!(seen.closed_after.is_some(), "{}: closed", run.kind);
        assert_eq!(up.seen().len(), 2, "{}: the third request never reached the upstream", run.kind);
        assert_eq!(run.stat("http.ingress.downstream_cx_max_requests_reached").await, 1, "{}", run.kind);
    }
}

#[tokio::test]
async fn max_connection_duration_closes_an_old_connection() {
    let (_ups, envoy, weft) = pair(json!({"common_http_protocol_options": {"max_connection_duration": "1s"}, "drain_timeout": "1s"})).await;
    for run in [&envoy, &weft] {
        let seen = converse(&run.addr(), b"GET / HTTP/1.1\r\nHost: t.example\r\n\r\n", Duration::from_secs(6)).await;
        assert_eq!(seen.statuses, vec![200], "{}", run.kind);
        let closed = seen.closed_after.unwrap_or_else(|| panic!("{}: a keep-alive connection outlived max_connection_duration", run.kind));
        assert!(closed >= Duration::from_millis(900), "{}: closed after {closed:?}, before max_connection_duration", run.kind);
        assert_eq!(run.stat("http.ingress.downstream_cx_max_duration_reached").await, 1, "{}", run.kind);
    }
}

#[tokio::test]
async fn request_headers_timeout_ends_a_head_that_never_ends() {
    let (ups, envoy, weft) = pair(json!({"request_headers_timeout": "1s"})).await;
    let mut outcomes = Vec::new();
    for (run, up) in [(&envoy, &ups[0]), (&weft, &ups[1])] {
        up.reset();
        let slow = converse(&run.addr(), b"GET /slow HTTP/1.1\r\nHost: t.example\r\nX-Half: ", Duration::from_secs(5)).await;
        let closed = slow.closed_after.unwrap_or_else(|| panic!("{}: an unfinished head held the connection", run.kind));
        assert!(closed >= Duration::from_millis(900), "{}: closed after {closed:?}, before the timeout", run.kind);
        assert!(up.seen().is_empty(), "{}", run.kind);
        assert_eq!(run.stat("http.ingress.downstream_rq_header_timeout").await, 1, "{}", run.kind);
        outcomes.push(slow.statuses);
    }
    assert_eq!(outcomes[0], outcomes[1], "the answer to a timed-out head (envoy, weft)");
    assert_eq!(outcomes[0], vec![408]);
    for run in [&envoy, &weft] {
        assert_eq!(run.stat("http.ingress.downstream_rq_4xx").await, 1, "{}: the 408 is counted", run.kind);
        // Time between requests is the idle timeout's, not the head's.
        let mut s = tokio::net::TcpStream::connect(run.addr()).await.expect("connect");
        let get = b"GET /a HTTP/1.1\r\nHost: t.example\r\n\r\n";
        let mut buf = [0u8; 4096];
        for round in 0..2 {
            s.write_all(get).await.expect("write");
            let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await.expect("answer").expect("read");
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}: request {round} after an idle pause", run.kind);
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
}

/// Anonymous resident memory of `pid` in KiB: what connections cost, without the binary's own
/// pages (a debug build faults in megabytes of code as new paths run).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("RssAnon:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

/// A header flood (50 connections, each sending 390 KB of one header that never ends) and a
/// slow-client flood (200 connections each trickling an unfinished head) cost weft bounded
/// memory, returned when the clients leave. bench/flood.py measures Envoy beside it.
#[tokio::test]
async fn header_and_slow_client_floods_cost_bounded_memory() {
    let (_ups, _envoy, weft) = pair(json!({})).await;
    let pid = weft.proxy.pid().expect("weft pid");
    // Warm up the paths a flood takes once, so what follows measures the flood.
    let _ = converse(&weft.addr(), b"GET / HTTP/1.1\r\nHost: t.example\r\nConnection: close\r\n\r\n", Duration::from_secs(3)).await;
    let before = rss_kib(pid);

    // Header flood: Envoy answers 431 at 60 KiB and closes; so must weft, holding no more.
    let mut floods = Vec::new();
    for _ in 0..50 {
        let addr = weft.addr();
        floods.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: t.example\r\nX-Fill: ").await;
            let chunk = vec![b'a'; 8192];
            for _ in 0..48 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
            answer
        }));
    }
    let mut peak = 0;
    for f in floods {
        let answer = f.await.expect("flood task");
        assert!(
            answer.starts_with(b"HTTP/1.1 431"),
            "a 390 KB header is refused: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(80)])
        );
        peak = peak.max(rss_kib(pid));
    }
    let flood_growth = peak.saturating_sub(before);

    // Slow clients: each head grows a byte at a time and never ends; weft keeps them open (no
    // request_headers_timeout by default, as in Envoy) but holds at most a read buffer each.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(weft.addr()).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: t.example\r\nX-Slow: ").await.expect("write");
        slow.push(s);
    }
    for _ in 0..20 {
        for s in &mut slow {
            s.write_all(b"a").await.expect("trickle");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slow_peak = rss_kib(pid);
    let slow_growth = slow_peak.saturating_sub(before);
    drop(slow);

    eprintln!("weft RSS before {before} KiB; header flood +{flood_growth} KiB; 200 slow clients +{slow_growth} KiB");
    // Memory comes back once the clients are gone (the allocator may keep some pages).
    let settled = weft_test_support::eventually(Duration::from_secs(10), "weft's RSS settles after the floods", || async {
        let now = rss_kib(pid);
        (now.saturating_sub(before) < 2 * 1024).then_some(now)
    })
    .await;
    eprintln!("weft RSS after the clients left: {settled} KiB");
    // Measured: +0.4 MiB and +4.4 MiB (about 22 KiB per slow connection), back to +0.1 MiB.
    assert!(flood_growth < 4 * 1024, "50 header floods grew weft by {flood_growth} KiB");
    assert!(slow_growth < 12 * 1024, "200 slow clients grew weft by {slow_growth} KiB");
}
