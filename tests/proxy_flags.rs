//! `weft proxy`'s Envoy command-line flags: each one either does what Envoy's does or is refused
//! with a message naming it (exit 1, nothing bound). Comparisons with Envoy itself are in
//! `differential/cli.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weft_test_support::{free_port, send, Req};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A directory for one test's files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("weft-flags-{}-{tag}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A bootstrap with only an admin listener on `admin`, plus `extra` YAML at the top level.
fn bootstrap(admin: u16, extra: &str) -> String {
    format!("admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}\n{extra}static_resources: {{}}\n")
}

/// A `weft proxy` child, killed by its own PID on drop.
struct Proxy {
    child: Option<Child>,
    admin: u16,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proxy {
    /// Starts `weft proxy -c <bootstrap> <args>` and waits for `/ready`.
    async fn start(dir: &Dir, admin: u16, extra_bootstrap: &str, args: &[&str]) -> Proxy {
        let cfg = dir.file("bootstrap.yaml", &bootstrap(admin, extra_bootstrap));
        let (stdout, stderr) = (dir.path("stdout.txt"), dir.path("stderr.txt"));
        let child = Command::new(WEFT)
            .arg("proxy")
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start weft");
        let mut p = Proxy { child: Some(child), admin, stdout, stderr };
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(status))) = p.child.as_mut().map(|c| c.try_wait()) {
                panic!("weft exited with {status} before becoming ready: {}", p.stderr());
            }
            if send(&format!("127.0.0.1:{admin}"), Req::get("/ready")).await.is_ok_and(|r| r.status == 200) {
                return p;
            }
            assert!(tokio::time::Instant::now() < end, "weft did not become ready: {}", p.stderr());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
    async fn admin(&self, path: &str) -> String {
        send(&format!("127.0.0.1:{}", self.admin), Req::get(path)).await.map(|r| r.text()).unwrap_or_default()
    }
    /// Stops the proxy (SIGKILL through the child handle) and waits for it.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `weft proxy` with `args` on a valid bootstrap; asserts exit 1, every `expect` in
/// stderr, and nothing listening on the admin port.
fn assert_refused(args: &[&str], expect: &[&str]) {
    let dir = Dir::new("refused");
    let admin = free_port();
    let cfg = dir.file("bootstrap.yaml", &bootstrap(admin, ""));
    let out = Command::new(WEFT).arg("proxy").arg("-c").arg(&cfg).args(args).output().expect("run weft");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?} should be refused with exit 1; stderr:\n{err}");
    for e in expect {
        assert!(err.contains(e), "{args:?}: stderr should contain {e:?}:\n{err}");
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", admin)).is_err(), "{args:?}: a refused start must bind nothing");
}

fn wait_for(path: &Path, what: &str) -> String {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(std::time::Instant::now() < end, "{} never contained {what:?}:\n{text}", path.display());
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn every_flag_has_a_help_line() {
    let out = Command::new(WEFT).args(["proxy", "-h"]).output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = help.lines().collect();
    let mut flags = 0;
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        if l.starts_with("  ") && t.starts_with('-') && l.len() - t.len() <= 6 {
            flags += 1;
            let next = lines.get(i + 1).copied().unwrap_or_default();
            assert!(next.starts_with("          ") && !next.trim().is_empty(), "{t} has no help line:\n{help}");
        }
    }
    assert!(flags > 30, "expected every flag in the help:\n{help}");
}

#[test]
fn flags_weft_cannot_honour_are_refused_by_name() {
    assert_refused(&["--restart-epoch", "1"], &["--restart-epoch 1: weft has no hot restart"]);
    assert_refused(&["--drain-strategy", "gradual"], &["--drain-strategy gradual is not supported", "use --drain-strategy immediate"]);
    assert_refused(&["--drain-strategy", "slow"], &["--drain-strategy \"slow\": unknown drain strategy (gradual or immediate)"]);
    assert_refused(&["--local-address-ip-version", "v5"], &["--local-address-ip-version \"v5\": unknown IP address version (v4 or v6)"]);
    assert_refused(&["--component-log-level", "bogus:debug"], &["--component-log-level: invalid component specified \"bogus\""]);
    assert_refused(&["--component-log-level", "upstream"], &["--component-log-level: component log level not correctly specified"]);
    assert_refused(&["--component-log-level", "upstream:loud"], &["--component-log-level: invalid log level \"loud\""]);
    assert_refused(&["--log-format", "%! %v"], &["--log-format \"%! %v\": %! is not a pattern flag weft supports"]);
    assert_refused(&["--log-path", "/nonexistent-dir/weft.log"], &["--log-path \"/nonexistent-dir/weft.log\": cannot open the log file"]);
}

/// `--log-path` takes the log away from stderr and appends to what the file held, as Envoy's
/// does; `--log-format` lays each line out.
#[tokio::test]
async fn log_path_appends_and_log_format_lays_out_lines() {
    let dir = Dir::new("logpath");
    let log = dir.file("weft.log", "line from before\n");
    let logs = log.to_string_lossy().into_owned();
    let mut p = Proxy::start(&dir, free_port(), "", &["--log-path", &logs, "--log-format", "%l|%L|%n|%s|%v"]).await;
    let text = wait_for(&log, "weft proxy is live");
    p.stop();
    assert!(text.starts_with("line from before\n"), "the file must be appended to:\n{text}");
    let live = text.lines().find(|l| l.contains("weft proxy is live")).unwrap_or_default();
    assert!(live.starts_with("info|I|weft_proxy::server|server.rs|weft proxy is live"), "{live}");
    assert_eq!(p.stderr(), "", "with --log-path nothing is logged to stderr");
    assert_eq!(p.stdout(), "");

    // A second run appends again.
    let mut p = Proxy::start(&dir, free_port(), "", &["--log-path", &logs]).await;
    let text = wait_for(&log, "control_plane");
    p.stop();
    assert_eq!(text.matches("weft proxy is live").count(), 2, "{text}");
}

/// `--log-format` with Envoy's default pattern: `[date time.ms][thread][level][logger] [file:line] message`.
#[tokio::test]
async fn envoy_default_pattern_renders_every_part() {
    let dir = Dir::new("pattern");
    let mut p = Proxy::start(&dir, free_port(), "", &["--log-format", "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v"]).await;
    let text = wait_for(&p.stderr, "weft proxy is live");
    p.stop();
    let line = text.lines().find(|l| l.contains("weft proxy is live")).unwrap_or_default().to_string();
    // [2026-01-02 03:04:05.678][1][info][weft_proxy::server] [crates/proxy/src/server.rs:199] weft proxy is live …
    let b = line.as_bytes();
    assert!(line.len() > 25 && b[0] == b'[' && b[5] == b'-' && b[8] == b'-' && b[11] == b' ' && b[20] == b'.' && b[24] == b']', "{line}");
    assert!(line.contains("][info][weft_proxy::server] [crates/proxy/src/server.rs:"), "{line}");
    assert!(line.contains("] weft proxy is live listeners=0"), "{line}");
}

/// `--component-log-level` sets the level of the weft modules doing that Envoy component's
/// job: `main` is the server's start and drain.
#[tokio::test]
async fn component_log_levels_apply_to_their_modules() {
    let dir = Dir::new("component");
    let mut p = Proxy::start(&dir, free_port(), "", &["-l", "warning", "--component-log-level", "misc:error,main:info"]).await;
    wait_for(&p.stderr, "weft proxy is live");
    p.stop();
    let dir = Dir::new("component2");
    let mut p = Proxy::start(&dir, free_port(), "", &["-l", "info", "--component-log-level", "main:error"]).await;
    // The line follows readiness by microseconds; give it ample time to (not) appear.
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.stop();
    assert!(!p.stderr().contains("weft proxy is live"), "main:error must hide the server's info lines:\n{}", p.stderr());
}

/// The flags Istio's pilot-agent passes to Envoy (pkg/envoy/proxy.go) are all taken.
#[tokio::test]
async fn pilot_agent_command_line_is_accepted() {
    let dir = Dir::new("istio");
    let args = [
        "--drain-time-s",
        "45",
        "--drain-strategy",
        "immediate",
        "--local-address-ip-version",
        "v4",
        "--file-flush-interval-msec",
        "1000",
        "--file-flush-min-size-kb",
        "64",
        "--disable-hot-restart",
        "--allow-unknown-static-fields",
        "-l",
        "warning",
        "--component-log-level",
        "misc:error",
        "--concurrency",
        "2",
        "--restart-epoch",
        "0",
        "--parent-shutdown-time-s",
        "60",
        "--base-id",
        "1",
    ];
    let p = Proxy::start(&dir, free_port(), "", &args).await;
    assert!(p.admin("/stats").await.contains("server.concurrency: 2\n"));
}

/// `--concurrency 0` runs one worker, as Envoy 1.40 does (its `server.concurrency` reads 1).
#[tokio::test]
async fn concurrency_zero_means_one_worker() {
    let dir = Dir::new("conc");
    let p = Proxy::start(&dir, free_port(), "", &["--concurrency", "0"]).await;
    assert!(p.admin("/stats").await.contains("server.concurrency: 1\n"));
}

/// `--service-zone` is the node's locality zone (over the bootstrap's), as `/server_info` shows.
#[tokio::test]
async fn service_zone_sets_the_node_locality() {
    let dir = Dir::new("zone");
    let p = Proxy::start(&dir, free_port(), "node: {id: n1, locality: {region: r1, zone: z0}}\n", &["--service-zone", "z1"]).await;
    let info: serde_json::Value = serde_json::from_str(&p.admin("/server_info").await).expect("JSON");
    assert_eq!(info["node"]["locality"], serde_json::json!({"region": "r1", "zone": "z1", "sub_zone": ""}));
}

/// `--allow-unknown-static-fields`: a field that is not Envoy's is ignored with a warning naming
/// it and counted; without the flag it is refused; a field weft knows but does not implement is
/// refused either way.
#[tokio::test]
async fn allow_unknown_static_fields_warns_and_counts() {
    let extra = "bogus_top: 1\nnode: {id: n1, clustr: c}\n";
    let dir = Dir::new("unknown");
    let admin = free_port();
    let cfg = dir.file("bootstrap.yaml", &bootstrap(admin, extra));
    let out = Command::new(WEFT).arg("proxy").arg("-c").arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus_top: unknown field \"bogus_top\""), "{out:?}");

    let p = Proxy::start(&dir, admin, extra, &["--allow-unknown-static-fields", "-l", "warning"]).await;
    let err = p.stderr();
    assert!(
        err.contains("--allow-unknown-static-fields: ignoring ") && err.contains("bootstrap.yaml:2:1: bogus_top: unknown field"),
        "{err}"
    );
    assert!(err.contains("node.clustr: unknown field \"clustr\"; did you mean \"cluster\"?"), "{err}");
    assert!(p.admin("/stats").await.contains("server.static_unknown_fields: 2\n"));
    drop(p);

    let cfg = dir.file("b2.yaml", &bootstrap(free_port(), "bogus_top: 1\ndefault_socket_interface: x\n"));
    let out = Command::new(WEFT).arg("proxy").arg("-c").arg(&cfg).arg("--allow-unknown-static-fields").output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("default_socket_interface: not supported"), "{out:?}");
}

/// The bootstrap's `application_log_config` lays out weft's lines (text or JSON, as Istio's
/// bootstrap asks); with `--log-format` too it is refused, as by Envoy.
#[tokio::test]
async fn application_log_config_formats_the_log() {
    let dir = Dir::new("applog");
    let mut p = Proxy::start(&dir, free_port(), "application_log_config: {log_format: {text_format: \"%l\\tenvoy %n\\t%v\"}}\n", &[]).await;
    let text = wait_for(&p.stderr, "weft proxy is live");
    p.stop();
    assert!(text.lines().any(|l| l.starts_with("info\tenvoy weft_proxy::server\tweft proxy is live")), "{text}");

    let dir = Dir::new("applog-json");
    let json = "application_log_config: {log_format: {json_format: {level: \"%l\", msg: \"%j\", scope: \"envoy %n\"}}}\n";
    let mut p = Proxy::start(&dir, free_port(), json, &[]).await;
    let text = wait_for(&p.stderr, "weft proxy is live");
    p.stop();
    let line = text.lines().find(|l| l.contains("weft proxy is live")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["level"], "info");
    assert_eq!(v["scope"], "envoy weft_proxy::server");
    assert!(v["msg"].as_str().unwrap_or_default().starts_with("weft proxy is live"), "{v}");

    let admin = free_port();
    let cfg = dir.file("both.yaml", &bootstrap(admin, "application_log_config: {log_format: {text_format: \"%v\"}}\n"));
    let out = Command::new(WEFT).arg("proxy").arg("-c").arg(&cfg).args(["--log-format", "%v"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("application_log_config.log_format and --log-format cannot both be given"),
        "{out:?}"
    );
    let cfg = dir.file("bad.yaml", &bootstrap(admin, "application_log_config: {log_format: {text_format: \"%Q\"}}\n"));
    let out = Command::new(WEFT).arg("proxy").arg("-c").arg(&cfg).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("application_log_config.log_format.text_format: %Q is not"), "{out:?}");
}
