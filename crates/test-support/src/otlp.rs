//! A real OTLP/gRPC collector for tests (`assets/otlp_collector.py`: grpcio with OpenTelemetry's
//! own protobuf definitions): traces and logs it receives come back as JSON values.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Collector {
    pub port: u16,
    child: Child,
    lines: Receiver<String>,
}

impl Collector {
    /// Starts the collector on a free loopback port; fails naming what to install when it
    /// cannot.
    pub fn start() -> Collector {
        let port = crate::free_port();
        let script = format!("{}/assets/otlp_collector.py", env!("CARGO_MANIFEST_DIR"));
        let mut child = crate::tool("python3")
            .args([&script, &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        if lines.recv_timeout(Duration::from_secs(20)).unwrap_or_default() != "ready" {
            let _ = child.kill();
            let err = child.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
            panic!("the OTLP collector did not start (grpcio and opentelemetry-proto from PyPI: run scripts/setup.sh): {err}");
        }
        Collector { port, child, lines }
    }

    /// The next `n` items received (spans or log records), waiting at most `within`.
    pub fn take(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => out.push(serde_json::from_str(&line).unwrap_or(Value::String(line))),
                Err(_) => panic!("the OTLP collector got {} of {n} items: {out:?}", out.len()),
            }
        }
        out
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
