//! DNS proxying end to end, in a network namespace: `weft capture --redirect-dns` sends the
//! application's DNS to a `weft proxy` sidecar with `ISTIO_META_DNS_CAPTURE`, which answers
//! the mesh's names from the control plane's name table and forwards the rest to the
//! namespace's nameserver (a stand-in in a namespace of its own that knows `outside.test`). The application
//! is glibc itself (`getent`), with a Kubernetes pod's search list and `ndots:5`.
//! Needs root (namespaces, iptables) and python3 (the stand-in nameserver).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_test_support::netns::Netns;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(30);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/etc/netns/<ns>`: what `ip netns exec` mounts over `/etc` files; removed on drop.
struct EtcDir(PathBuf);

impl Drop for EtcDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(name: &str) -> String {
    format!("{}/../../tests/fixtures/dns/{name}", env!("CARGO_MANIFEST_DIR"))
}

const MESH: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec:\n  clusterIP: 10.96.0.11\n  ports: [{name: http, port: 9080}]\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: prod}\nspec:\n  clusterIP: 10.96.0.12\n  ports: [{name: http, port: 9080}]\n---\n\
apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: api, namespace: default}\nspec:\n  hosts: [api.example.com]\n  addresses: [10.55.0.5]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  endpoints: [{address: 10.55.0.5}]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n---\n\
apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: default}\nspec:\n  hosts: [db.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 3306, name: mysql, protocol: TCP}]\n";

/// Spawns `args` in `ns` (as GID 1337 when `proxy`, which capture leaves alone).
fn spawn_in(ns: &Netns, proxy: bool, args: &[&str], env: &[(&str, &str)], stdout: Stdio, log: &Path) -> Proc {
    let log = std::fs::File::create(log).expect("create log");
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.name]);
    if proxy {
        c.args(["setpriv", "--regid=1337", "--clear-groups", "--"]);
    }
    c.args(args).envs(env.iter().copied()).stdin(Stdio::null()).stdout(stdout).stderr(log);
    Proc(c.spawn().unwrap_or_else(|e| panic!("cannot start {args:?}: {e}")))
}

/// The first line a process prints (within the wait).
fn first_line(p: &mut Proc) -> String {
    let out = p.0.stdout.take().expect("stdout piped");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("read first line");
    line
}

/// glibc's answer for `name` (`gethostbyname`: the namespace has no address but loopback, so
/// `getaddrinfo` with `AI_ADDRCONFIG` would not even ask), or `None` when it resolves nothing.
fn getent(ns: &Netns, name: &str) -> Option<String> {
    let out = ns.command("getent").args(["hosts", name]).output().expect("run getent");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().next().and_then(|l| l.split_whitespace().next()).map(str::to_owned)
}

fn query(ns: &Netns, name: &str, qtype: &str, proto: &str) -> String {
    let out = ns.command("python3").args([&fixture("query.py"), name, qtype, "127.0.0.1", "15053", proto]).output().expect("run query.py");
    assert!(out.status.success(), "query {name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn until<T>(what: &str, logs: &Path, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            let log = |n: &str| std::fs::read_to_string(logs.join(n)).unwrap_or_default();
            panic!("timed out waiting for {what}\nsidecar:\n{}\ncontrol plane:\n{}", log("sidecar.log"), log("control-plane.log"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Who answers the workload's DNS.
#[derive(Clone, Copy)]
enum Answerer {
    /// A `weft proxy` sidecar.
    Sidecar,
    /// `weft agent`, as pilot-agent next to a stock Envoy (which has no part in DNS).
    Agent,
}

#[test]
fn a_sidecar_answers_mesh_names_and_forwards_the_rest() {
    answers_mesh_names_and_forwards_the_rest(Answerer::Sidecar);
}

#[test]
fn the_agent_next_to_envoy_answers_mesh_names_and_forwards_the_rest() {
    answers_mesh_names_and_forwards_the_rest(Answerer::Agent);
}

fn answers_mesh_names_and_forwards_the_rest(who: Answerer) {
    if let Err(e) = weft_test_support::netns::require_root_netadmin() {
        panic!("{e}");
    }
    assert!(Command::new("python3").arg("--version").output().is_ok(), "this test needs python3 (scripts/setup.sh)");
    let tag = match who {
        Answerer::Sidecar => "dns",
        Answerer::Agent => "dnsag",
    };
    let ns = Netns::new(tag).expect("netns");
    // The cluster's nameserver lives on another host: a namespace of its own, one veth away.
    let outside = Netns::new(&format!("{tag}up")).expect("netns");
    let peer = format!("w{tag}{}", std::process::id() % 100_000);
    weft_test_support::netns::sh(
        "ip",
        &["-n", &ns.name, "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns", &outside.name],
    )
    .expect("veth");
    ns.exec("ip", &["addr", "add", "10.78.0.2/24", "dev", "eth0"]).expect("address");
    ns.exec("ip", &["link", "set", "eth0", "up"]).expect("link up");
    outside.exec("ip", &["addr", "add", "10.78.0.53/24", "dev", &peer]).expect("address");
    outside.exec("ip", &["link", "set", &peer, "up"]).expect("link up");
    let etc = EtcDir(Path::new("/etc/netns").join(&ns.name));
    std::fs::create_dir_all(&etc.0).expect("mkdir /etc/netns/<ns>");
    // A Kubernetes pod's resolver configuration, with the namespace's nameserver.
    std::fs::write(
        etc.0.join("resolv.conf"),
        "nameserver 10.78.0.53\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:2 attempts:2\n",
    )
    .expect("write resolv.conf");
    // As in a container image: no mDNS module to claim `.local` names before DNS.
    std::fs::write(etc.0.join("nsswitch.conf"), "hosts: files dns\n").expect("write nsswitch.conf");
    let config = weft_test_support::proxy::temp_dir("dns-config");
    std::fs::write(config.join("mesh.yaml"), MESH).expect("write mesh");
    let logs = weft_test_support::proxy::temp_dir("dns-logs");

    let mut upstream =
        spawn_in(&outside, false, &["python3", &fixture("upstream.py"), "10.78.0.53"], &[], Stdio::piped(), &logs.join("upstream.log"));
    assert_eq!(first_line(&mut upstream).trim(), "ready", "the stand-in nameserver did not start");
    let mut cp = spawn_in(
        &ns,
        false,
        &[
            WEFT,
            "control-plane",
            "--config-dir",
            config.to_str().expect("utf-8"),
            "--xds-address",
            "127.0.0.1:0",
            "--debug-address",
            "127.0.0.1:0",
        ],
        &[],
        Stdio::piped(),
        &logs.join("control-plane.log"),
    );
    let line = first_line(&mut cp);
    let xds = line.split("xDS on ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default().trim().to_owned();
    assert!(xds.starts_with("127.0.0.1:"), "control plane did not start: {line}");
    ns.exec(WEFT, &["capture", "--redirect-dns", "-i", "", "-b", ""]).expect("weft capture --redirect-dns");
    let args: Vec<&str> = match who {
        Answerer::Sidecar => vec![WEFT, "proxy", "--xds-address", &xds, "--concurrency", "1", "-l", "info"],
        Answerer::Agent => vec![WEFT, "agent", "--xds-address", &xds, "-l", "info"],
    };
    let _sidecar = spawn_in(
        &ns,
        true,
        &args,
        &[
            ("POD_NAME", "client-1"),
            ("POD_NAMESPACE", "default"),
            ("INSTANCE_IP", "10.78.0.2"),
            ("ISTIO_META_DNS_CAPTURE", "true"),
            ("ISTIO_META_DNS_AUTO_ALLOCATE", "true"),
        ],
        Stdio::null(),
        &logs.join("sidecar.log"),
    );

    // Kubernetes names, as a pod's resolver expands them.
    assert_eq!(until("reviews to resolve through the sidecar", &logs, || getent(&ns, "reviews")), "10.96.0.11");
    assert_eq!(getent(&ns, "reviews.default").as_deref(), Some("10.96.0.11"));
    assert_eq!(getent(&ns, "ratings.prod.svc.cluster.local").as_deref(), Some("10.96.0.12"));
    assert_eq!(getent(&ns, "ratings.prod").as_deref(), Some("10.96.0.12"));
    assert_eq!(getent(&ns, "ratings"), None, "a short name only from the pod's own namespace");
    // ServiceEntry hosts: by their address, or the one allocated for them.
    assert_eq!(getent(&ns, "api.example.com").as_deref(), Some("10.55.0.5"));
    let db = getent(&ns, "db.example.com").expect("db.example.com resolves to an allocated address");
    assert!(db.starts_with("240.240."), "{db}");
    // Everything else goes to the namespace's nameserver, and its answer (or NXDOMAIN) comes back.
    assert_eq!(getent(&ns, "outside.test").as_deref(), Some("192.0.2.10"));
    assert_eq!(getent(&ns, "nowhere.test"), None);

    // The same over TCP, and the details glibc does not show.
    assert_eq!(query(&ns, "reviews.default.svc.cluster.local", "A", "tcp"), "rcode=0 tc=0 a=10.96.0.11 cname=");
    assert_eq!(query(&ns, "outside.test", "A", "tcp"), "rcode=0 tc=0 a=192.0.2.10 cname=");
    assert_eq!(query(&ns, "nowhere.test", "A", "udp"), "rcode=3 tc=0 a= cname=", "NXDOMAIN passed through");
    assert_eq!(query(&ns, "reviews", "AAAA", "udp"), "rcode=0 tc=0 a= cname=", "a known name without IPv6: no records, not NXDOMAIN");
    assert_eq!(
        query(&ns, "api.example.com.default.svc.cluster.local", "A", "udp"),
        "rcode=0 tc=0 a=10.55.0.5 cname=api.example.com",
        "the first search expansion is answered at once with a CNAME"
    );

    // A name added to the mesh is answered without a restart.
    std::fs::write(
        config.join("late.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: default}\nspec:\n  clusterIP: 10.96.0.40\n  ports: [{name: http, port: 80}]\n",
    )
    .expect("write late.yaml");
    assert_eq!(until("a new service to be answered", &logs, || getent(&ns, "late")), "10.96.0.40");
    let _ = std::fs::remove_dir_all(&config);
    let _ = std::fs::remove_dir_all(&logs);
}
