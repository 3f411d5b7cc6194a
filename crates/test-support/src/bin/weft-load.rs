//! A small HTTP/1.1 load generator for `bench/`: open-loop at a fixed rate (latency measured
//! from each request's scheduled time, so queueing is not hidden) or closed-loop for maximum
//! throughput. Bounded by count and time; prints one JSON line.
//!
//! weft-load --addr 127.0.0.1:10000 --rate 1000 --duration 10 --connections 16
//! weft-load --addr 127.0.0.1:10000 --rate 0 --duration 5 --connections 32
//!
//! `--samples FILE` also writes every successful request's latency in microseconds, one per
//! line, so runs measured in slices can be pooled before taking percentiles.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

struct Args {
    addr: String,
    rate: u64,
    duration: Duration,
    connections: u64,
    path: String,
    samples: Option<std::path::PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut a =
        Args { addr: String::new(), rate: 1000, duration: Duration::from_secs(10), connections: 16, path: "/".into(), samples: None };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--addr" => a.addr = v,
            "--rate" => a.rate = v.parse().map_err(|_| format!("--rate: {v:?} is not a number"))?,
            "--duration" => a.duration = Duration::from_secs_f64(v.parse().map_err(|_| format!("--duration: {v:?} is not a number"))?),
            "--connections" => a.connections = v.parse().map_err(|_| format!("--connections: {v:?} is not a number"))?,
            "--path" => a.path = v,
            "--samples" => a.samples = Some(v.into()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.addr.is_empty() {
        return Err("--addr is required".into());
    }
    if a.duration > Duration::from_secs(600) || a.connections == 0 || a.connections > 1024 {
        return Err("--duration must be at most 600 s and --connections within 1..=1024".into());
    }
    Ok(a)
}

async fn conn(addr: &str) -> Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let _ = s.set_nodelay(true);
    let (tx, c) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.ok()?;
    tokio::spawn(c);
    Some(tx)
}

async fn one(tx: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, path: &str) -> bool {
    if tx.ready().await.is_err() {
        return false;
    }
    let Ok(req) = http::Request::get(path).header("host", "bench").body(Empty::new()) else { return false };
    match tx.send_request(req).await {
        Ok(r) => {
            let ok = r.status().is_success();
            ok && r.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

#[derive(Default)]
struct Out {
    lat_us: Vec<u64>,
    ok: u64,
    err: u64,
}

async fn worker(a: std::sync::Arc<Args>, idx: u64, start: Instant) -> Out {
    let mut out = Out::default();
    let Some(mut tx) = conn(&a.addr).await else {
        out.err += 1;
        return out;
    };
    let end = start + a.duration;
    let mut k = 0u64;
    // When the previous request ran past this one's scheduled time, latency counts from the
    // schedule (no coordinated omission); otherwise from the actual send, so timer wake-up
    // slack (up to 1 ms in tokio) is not billed to the server.
    let mut busy_until = start;
    loop {
        let intended = if a.rate > 0 {
            let t = start + Duration::from_secs_f64((k * a.connections + idx) as f64 / a.rate as f64);
            if t >= end {
                break;
            }
            tokio::time::sleep_until(t.into()).await;
            t
        } else {
            let now = Instant::now();
            if now >= end {
                break;
            }
            now
        };
        k += 1;
        let from = if busy_until > intended { intended } else { Instant::now() };
        let ok = one(&mut tx, &a.path).await;
        busy_until = Instant::now();
        if ok {
            out.ok += 1;
            out.lat_us.push(busy_until.duration_since(from).as_micros() as u64);
        } else {
            out.err += 1;
            match conn(&a.addr).await {
                Some(t) => tx = t,
                None => break,
            }
        }
    }
    out
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() -> std::process::ExitCode {
    let a = match parse() {
        Ok(a) => std::sync::Arc::new(a),
        Err(e) => {
            eprintln!("weft-load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-load: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let (all, elapsed) = rt.block_on(async {
        let start = Instant::now() + Duration::from_millis(50);
        let tasks: Vec<_> = (0..a.connections).map(|i| tokio::spawn(worker(a.clone(), i, start))).collect();
        let mut all = Out::default();
        for t in tasks {
            if let Ok(o) = t.await {
                all.ok += o.ok;
                all.err += o.err;
                all.lat_us.extend(o.lat_us);
            }
        }
        (all, start.elapsed())
    });
    let mut lat = all.lat_us;
    lat.sort_unstable();
    if let Some(path) = &a.samples {
        let text: String = lat.iter().map(|l| format!("{l}\n")).collect();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("weft-load: --samples {}: {e}", path.display());
            return std::process::ExitCode::from(1);
        }
    }
    println!(
        "{{\"ok\":{},\"errors\":{},\"rps\":{:.1},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3}}}",
        all.ok,
        all.err,
        all.ok as f64 / elapsed.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99)
    );
    std::process::ExitCode::SUCCESS
}
