//! `weft-cni` run exactly as a container runtime runs a chained plugin: the `CNI_*`
//! environment, the network config on stdin, the previous plugin's result as `prevResult`.
//! The interface plugin before it is Debian's real `bridge` with `host-local` IPAM
//! (containernetworking-plugins), in a fresh network namespace. Needs root (CI runs these as
//! root); without root or the plugins, the tests fail saying what is missing.

use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use weft_test_support::netns::{require_root_netadmin, sh, Netns};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const CNI_PATH: &str = "/usr/lib/cni";
/// What a runtime like kubelet's has; iptables and ip live in the sbin directories.
const RUNTIME_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A pod's sandbox as a runtime would have it: a network namespace, a `weft-cni` link to the
/// built binary, and the bridge and IPAM state the bridge plugin leaves on the host. All of it
/// is removed on drop, also when the test fails.
struct Pod {
    ns: Netns,
    container_id: String,
    bridge: String,
    dir: PathBuf,
    weft_cni: PathBuf,
}

/// One plugin run: exit status, stdout, stderr.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Pod {
    fn new(tag: &str) -> Pod {
        require_root_netadmin().unwrap_or_else(|e| panic!("{e}"));
        for plugin in ["bridge", "host-local"] {
            assert!(
                Path::new(CNI_PATH).join(plugin).exists(),
                "{CNI_PATH}/{plugin} is missing: install the Debian package containernetworking-plugins (scripts/setup.sh does)"
            );
        }
        let pid = std::process::id();
        let ns = Netns::new(tag).unwrap_or_else(|e| panic!("cannot create the pod's network namespace: {e}"));
        let dir = std::env::temp_dir().join(format!("weft-cni-test-{tag}-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let weft_cni = dir.join("weft-cni");
        symlink(WEFT, &weft_cni).expect("link weft-cni to the weft binary");
        Pod { container_id: format!("{tag}-{pid}"), bridge: format!("wt{}{}", &tag[..tag.len().min(4)], pid % 10000), ns, dir, weft_cni }
    }

    fn netns_path(&self) -> String {
        format!("/var/run/netns/{}", self.ns.name)
    }

    /// Runs `plugin` with `command`, the standard environment (`extra` overrides or, with an
    /// empty value, removes a variable) and `stdin`.
    fn run(&self, plugin: &Path, command: &str, stdin: &str, extra: &[(&str, &str)]) -> Run {
        let mut env = vec![
            ("CNI_COMMAND", command.to_owned()),
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_NETNS", self.netns_path()),
            ("CNI_IFNAME", "eth0".to_owned()),
            ("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=app-{}", self.container_id)),
            ("CNI_PATH", CNI_PATH.to_owned()),
        ];
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            if !v.is_empty() {
                env.push((k, (*v).to_owned()));
            }
        }
        let mut child = Command::new(plugin)
            .env_clear()
            .env("PATH", RUNTIME_PATH)
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", plugin.display()));
        if let Some(mut pipe) = child.stdin.take() {
            std::io::Write::write_all(&mut pipe, stdin.as_bytes()).expect("write the config to the plugin's stdin");
        }
        let out = child.wait_with_output().expect("plugin output");
        Run {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn weft(&self, command: &str, conf: &Value) -> Run {
        self.run(&self.weft_cni, command, &conf.to_string(), &[])
    }

    fn bridge(&self, command: &str) -> Run {
        let subnet = format!("10.{}.{}.0/24", 200 + std::process::id() % 50, (std::process::id() / 50) % 256);
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": "weft-cni-test",
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": false,
            "ipMasq": false,
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": self.dir.join("ipam")},
        });
        self.run(&Path::new(CNI_PATH).join("bridge"), command, &conf.to_string(), &[])
    }

    /// Every table as both iptables backends see it, so the test does not depend on which one
    /// the plugin picked.
    fn tables(&self) -> String {
        let mut all = String::new();
        for save in ["iptables-legacy-save", "iptables-nft-save"] {
            if let Ok(text) = self.ns.exec(save, &[]) {
                all.push_str(&text);
            }
        }
        all
    }

    /// The `iptables` command of the backend holding the capture chains.
    fn iptables(&self) -> &'static str {
        match self.ns.exec("iptables-legacy-save", &[]) {
            Ok(text) if text.contains(":ISTIO_") => "iptables-legacy",
            _ => "iptables-nft",
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // The netns goes with `ns`; the bridge and IPAM state live on the host.
        let _ = sh("ip", &["link", "del", &self.bridge]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The rule lines of a save (counters and comments left out).
fn rules(save: &str) -> Vec<&str> {
    save.lines().filter(|l| l.starts_with("-A ")).collect()
}

fn capture_rules(save: &str) -> Vec<&str> {
    rules(save).into_iter().filter(|l| l.contains("ISTIO_") || l.contains("weft-capture")).collect()
}

fn json_of(run: &Run, what: &str) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {:?}\nstderr: {}", run.stdout, run.stderr))
}

fn assert_ok(run: &Run, what: &str) {
    assert!(run.success, "{what} failed\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
}

/// Asserts `run` failed with the spec's error object carrying `code` and a msg containing
/// every one of `names`.
fn assert_cni_error(run: &Run, code: u64, names: &[&str], what: &str) {
    assert!(!run.success, "{what}: expected a failure, got success: {}", run.stdout);
    let e = json_of(run, what);
    assert_eq!(e["code"].as_u64(), Some(code), "{what}: {e}");
    let msg = e["msg"].as_str().unwrap_or_else(|| panic!("{what}: no msg in {e}"));
    for name in names {
        assert!(msg.contains(name), "{what}: msg should name {name:?}: {msg}");
    }
    assert!(e["cniVersion"].is_string() && e["details"].is_string(), "{what}: the spec's error object has cniVersion and details: {e}");
}

fn weft_conf(capture: Value, prev_result: Option<&Value>) -> Value {
    let mut conf = json!({"cniVersion": "1.0.0", "name": "weft-cni-test", "type": "weft-cni", "capture": capture});
    if let Some(prev) = prev_result {
        conf["prevResult"] = prev.clone();
    }
    conf
}

#[test]
fn chained_after_bridge_add_check_del_like_a_runtime() {
    let pod = Pod::new("cni");

    let bridge = pod.bridge("ADD");
    assert_ok(&bridge, "bridge ADD");
    let prev = json_of(&bridge, "bridge ADD");
    assert!(prev["ips"].as_array().is_some_and(|ips| !ips.is_empty()), "the bridge plugin assigned an address: {prev}");

    let conf = weft_conf(json!({"includeOutboundIPRanges": "10.96.0.0/12"}), Some(&prev));
    let add = pod.weft("ADD", &conf);
    assert_ok(&add, "weft-cni ADD");
    let result = json_of(&add, "weft-cni ADD");
    assert_eq!(result, prev, "a chained plugin that changes no interface passes prevResult through");
    assert_eq!(result["ips"], prev["ips"]);

    let save = pod.tables();
    for chain in ["ISTIO_INBOUND", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT", "ISTIO_REDIRECT"] {
        assert!(save.contains(&format!(":{chain} ")), "{chain} declared in the pod's nat table:\n{save}");
    }
    let lines = rules(&save);
    let jump = |chain: &str, to: &str| {
        lines.iter().any(|l| l.starts_with(&format!("-A {chain} ")) && l.contains("weft-capture") && l.ends_with(to))
    };
    assert!(jump("PREROUTING", "-j ISTIO_INBOUND") && jump("OUTPUT", "-j ISTIO_OUTPUT"), "jumps into Istio's chains:\n{save}");
    assert!(lines.contains(&"-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT"), "includeOutboundIPRanges applied:\n{save}");
    assert!(!lines.contains(&"-A ISTIO_OUTPUT -j ISTIO_REDIRECT"), "only the included range is captured:\n{save}");
    assert!(lines.iter().any(|l| l.contains("--dport 15020 -j RETURN")), "the proxy's status port is not captured:\n{save}");
    let host = sh("iptables-save", &[]).unwrap_or_default() + &sh("iptables-legacy-save", &[]).unwrap_or_default();
    assert!(!host.contains("weft-capture"), "nothing is written in the host's namespace");

    let check = pod.weft("CHECK", &conf);
    assert_ok(&check, "CHECK after ADD");
    assert_eq!(check.stdout, "", "CHECK prints nothing on success");

    let add_again = pod.weft("ADD", &conf);
    assert_ok(&add_again, "second ADD");
    assert_eq!(json_of(&add_again, "second ADD"), prev);
    let again = pod.tables();
    assert_eq!(rules(&again), lines, "a second ADD converges to the same rules");

    // A rule taken out by hand: CHECK notices, ADD puts it back.
    pod.ns.exec(pod.iptables(), &["-t", "nat", "-D", "ISTIO_OUTPUT", "-d", "10.96.0.0/12", "-j", "ISTIO_REDIRECT"]).expect("delete a rule");
    assert_cni_error(&pod.weft("CHECK", &conf), 100, &["not in place"], "CHECK after a rule was removed");
    assert_ok(&pod.weft("ADD", &conf), "ADD repairs");
    assert_ok(&pod.weft("CHECK", &conf), "CHECK after the repair");

    // DEL in reverse order, as runtimes do.
    let del = pod.weft("DEL", &conf);
    assert_ok(&del, "weft-cni DEL");
    assert_eq!(del.stdout, "", "DEL prints nothing on success");
    let after = pod.tables();
    assert!(capture_rules(&after).is_empty() && !after.contains(":ISTIO_"), "DEL removes every capture rule and chain:\n{after}");
    assert_ok(&pod.bridge("DEL"), "bridge DEL");

    assert_ok(&pod.weft("DEL", &conf), "DEL again (DEL must be idempotent)");
    assert_cni_error(&pod.weft("CHECK", &conf), 100, &["not in place", &pod.netns_path()], "CHECK after DEL");

    // The runtime removed the namespace before calling DEL: still success.
    sh("ip", &["netns", "del", &pod.ns.name]).expect("delete the netns");
    let gone = pod.weft("DEL", &conf);
    assert_ok(&gone, "DEL after the namespace is gone");
    let no_netns = pod.run(&pod.weft_cni, "DEL", &conf.to_string(), &[("CNI_NETNS", "")]);
    assert_ok(&no_netns, "DEL without CNI_NETNS");
}

#[test]
fn malformed_input_is_refused_with_cni_error_codes_and_writes_nothing() {
    let pod = Pod::new("cnibad");
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [], "ips": []});
    let good = weft_conf(json!({}), Some(&prev));
    let with_capture = |capture: Value| weft_conf(capture, Some(&prev)).to_string();
    let mut old = good.clone();
    old["cniVersion"] = json!("0.2.0");
    let refused = |what: &str, stdin: &str, env: &[(&str, &str)], code: u64, names: &[&str]| {
        assert_cni_error(&pod.run(&pod.weft_cni, "ADD", stdin, env), code, names, what);
    };
    refused("stdin not JSON", "{\"cniVersion\": \"1.0.0\",\n \"name\": ", &[], 6, &["not JSON", "line 2 column"]);
    refused("unsupported cniVersion", &old.to_string(), &[], 1, &["0.2.0", "1.0.0"]);
    refused(
        "bad CIDR in capture",
        &with_capture(json!({"includeOutboundIPRanges": "10.0.0/8"})),
        &[],
        7,
        &["capture.includeOutboundIPRanges", "\"10.0.0/8\"", "not an IPv4 CIDR"],
    );
    refused(
        "unknown key in capture",
        &with_capture(json!({"includeOutboundIpRanges": "10.0.0.0/8"})),
        &[],
        7,
        &["includeOutboundIpRanges", "unknown field"],
    );
    refused(
        "bad port in capture",
        &with_capture(json!({"excludeOutboundPorts": "5432,http"})),
        &[],
        7,
        &["capture.excludeOutboundPorts", "http"],
    );
    refused("missing CNI_NETNS on ADD", &good.to_string(), &[("CNI_NETNS", "")], 4, &["CNI_NETNS"]);
    refused("unknown CNI_COMMAND", &good.to_string(), &[("CNI_COMMAND", "ATTACH")], 4, &["CNI_COMMAND", "ATTACH"]);
    refused("CNI_NETNS not a namespace", &good.to_string(), &[("CNI_NETNS", "/proc/self/status")], 4, &["CNI_NETNS", "/proc/self/status"]);
    let save = pod.tables();
    assert!(capture_rules(&save).is_empty() && !save.contains(":ISTIO_"), "a refused config writes nothing:\n{save}");
}

#[test]
fn version_lists_the_supported_spec_versions() {
    let out = Command::new(WEFT)
        .arg0("weft-cni")
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .expect("run weft as weft-cni");
    assert!(out.status.success(), "VERSION: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("VERSION prints JSON");
    assert_eq!(v["cniVersion"], "1.0.0");
    let supported: Vec<&str> = v["supportedVersions"].as_array().expect("a list").iter().filter_map(Value::as_str).collect();
    assert_eq!(supported, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
}

#[test]
fn excluded_namespace_is_passed_through_untouched() {
    let pod = Pod::new("cniex");
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": pod.netns_path()}],
                      "ips": [{"address": "10.1.2.3/24", "interface": 0}], "dns": {}});
    let mut conf = weft_conf(json!({}), Some(&prev));
    conf["excludeNamespaces"] = json!(["kube-system", "istio-system"]);
    let kube_system = [("CNI_ARGS", "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1")];
    let add = pod.run(&pod.weft_cni, "ADD", &conf.to_string(), &kube_system);
    assert_ok(&add, "ADD in kube-system");
    assert_eq!(json_of(&add, "ADD in kube-system"), prev);
    assert!(capture_rules(&pod.tables()).is_empty(), "kube-system is excluded: no rules");
    assert_ok(&pod.run(&pod.weft_cni, "CHECK", &conf.to_string(), &kube_system), "CHECK in kube-system");

    // The same config captures a pod elsewhere.
    assert_ok(&pod.weft("ADD", &conf), "ADD in default");
    assert!(!capture_rules(&pod.tables()).is_empty(), "default is captured");
    assert_ok(&pod.weft("DEL", &conf), "DEL in default");
}

#[test]
fn tproxy_and_dns_capture_are_written_checked_and_removed() {
    let pod = Pod::new("cnitp");
    let prev = json!({"cniVersion": "1.1.0", "interfaces": [], "ips": [], "dns": {"nameservers": ["10.96.0.10"]}});
    let mut conf = weft_conf(json!({"interceptionMode": "TPROXY", "redirectDNS": true, "excludeInboundPorts": "9901"}), Some(&prev));
    conf["cniVersion"] = json!("1.1.0");
    let add = pod.weft("ADD", &conf);
    assert_ok(&add, "ADD with TPROXY");
    assert_eq!(json_of(&add, "ADD with TPROXY")["cniVersion"], "1.1.0");
    let save = pod.tables();
    let lines = rules(&save);
    assert!(lines.iter().any(|l| l.starts_with("-A ISTIO_TPROXY") && l.contains("--on-port 15006")), "TPROXY in mangle:\n{save}");
    assert!(
        lines.iter().any(|l| l.contains("-d 10.96.0.10/32") && l.contains("--to-ports 15053")),
        "DNS to the prevResult's nameserver:\n{save}"
    );
    assert!(lines.iter().any(|l| l.contains("--dport 9901 -j RETURN")), "excludeInboundPorts:\n{save}");
    let rule = pod.ns.exec("ip", &["-f", "inet", "rule", "list"]).expect("ip rule");
    assert!(rule.contains("fwmark 0x539 lookup 133"), "TPROXY's policy routing: {rule}");
    assert_ok(&pod.weft("CHECK", &conf), "CHECK with TPROXY");
    assert_ok(&pod.weft("DEL", &conf), "DEL with TPROXY");
    assert!(capture_rules(&pod.tables()).is_empty(), "DEL removes mangle and raw rules too");
    let rule = pod.ns.exec("ip", &["-f", "inet", "rule", "list"]).expect("ip rule");
    assert!(!rule.contains("lookup 133"), "DEL removes the policy routing: {rule}");
}

/// Kubernetes mode, as `weft cni-install` chains the plugin: the pod is read from the API
/// server (a stand-in answering as kube-apiserver does). A pod `weft kube-inject` gave a
/// sidecar with CNI on is captured with exactly the options of its `istio-validation`
/// container — which then finds them in place, run in the pod's namespace as the kubelet would;
/// a pod without a sidecar is passed through untouched; an API server that cannot answer fails
/// ADD rather than start a meshed pod uncaptured.
#[test]
fn kubernetes_mode_captures_only_injected_pods_with_their_own_options() {
    use weft_test_support::apiserver::{list, ApiServer};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = ApiServer::new();
    let addr = rt.block_on(api.serve());
    let injected_pod = Pod::new("kcni");
    let dir = &injected_pod.dir;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, ApiServer::kubeconfig(addr)).expect("kubeconfig");

    // A pod as the webhook stores it: kube-inject with CNI on and an annotation narrowing capture.
    std::fs::write(dir.join("values.yaml"), "cni: true\n").expect("values");
    std::fs::write(
        dir.join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\n  namespace: default\n  annotations: {traffic.sidecar.istio.io/includeOutboundIPRanges: 10.96.0.0/12, traffic.sidecar.istio.io/excludeInboundPorts: \"9901\"}\nspec:\n  containers: [{name: app, image: example.com/app:1}]\n",
    )
    .expect("pod");
    let out = Command::new(WEFT)
        .args(["kube-inject", "-f"])
        .arg(dir.join("pod.yaml"))
        .arg("--valuesFile")
        .arg(dir.join("values.yaml"))
        .output()
        .expect("kube-inject");
    assert!(out.status.success(), "kube-inject: {}", String::from_utf8_lossy(&out.stderr));
    let injected: Value = serde_yaml::from_slice(&out.stdout).expect("injected pod");
    let validation = injected["spec"]["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "istio-validation"))
        .cloned()
        .unwrap_or_else(|| panic!("no istio-validation container: {injected}"));
    let args: Vec<String> = validation["args"].as_array().expect("args").iter().filter_map(|a| a.as_str().map(str::to_owned)).collect();
    let mut stored = injected.clone();
    stored["metadata"]["name"] = json!(format!("app-{}", injected_pod.container_id));
    stored["metadata"]["resourceVersion"] = json!("7");
    let plain_pod = Pod::new("kcnp");
    let plain = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("app-{}", plain_pod.container_id), "namespace": "default", "resourceVersion": "8"},
                       "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}});
    for p in [&stored, &plain] {
        let name = p["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        api.set(&format!("/api/v1/namespaces/default/pods/{name}"), p.clone());
    }
    api.set("/api/v1/namespaces/default/pods", list("Pod", "v1", "9", vec![stored.clone(), plain.clone()]));

    let conf = |prev: &Value| {
        json!({"cniVersion": "1.0.0", "name": "weft-cni-test", "type": "weft-cni", "kubernetes": {"kubeconfig": kubeconfig.display().to_string()},
               "excludeNamespaces": ["kube-system"], "prevResult": prev})
    };

    // The injected pod: captured with its own options.
    let bridge = injected_pod.bridge("ADD");
    assert_ok(&bridge, "bridge ADD");
    let prev = json_of(&bridge, "bridge ADD");
    let add = injected_pod.weft("ADD", &conf(&prev));
    assert_ok(&add, "weft-cni ADD of the injected pod");
    let save = injected_pod.tables();
    let lines = rules(&save);
    assert!(lines.contains(&"-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT"), "the pod's includeOutboundIPRanges:\n{save}");
    assert!(lines.iter().any(|l| l.contains("--dport 9901 -j RETURN")), "the pod's excludeInboundPorts:\n{save}");
    // istio-validation, run in the pod's namespace as the kubelet would, finds them in place.
    let mut verify = vec![WEFT.to_owned()];
    verify.extend(args.iter().cloned());
    let checked = injected_pod.ns.exec(&verify[0], &verify[1..].iter().map(String::as_str).collect::<Vec<_>>());
    assert!(checked.is_ok(), "istio-validation ({args:?}) fails in the captured pod: {checked:?}");
    assert_ok(&injected_pod.weft("CHECK", &conf(&prev)), "CHECK of the injected pod");
    assert_ok(&injected_pod.weft("DEL", &conf(&prev)), "DEL");
    assert!(capture_rules(&injected_pod.tables()).is_empty(), "DEL removes the rules");
    assert_ok(&injected_pod.bridge("DEL"), "bridge DEL");

    // The pod without a sidecar: passed through, nothing written.
    let bridge = plain_pod.bridge("ADD");
    assert_ok(&bridge, "bridge ADD");
    let prev = json_of(&bridge, "bridge ADD");
    let add = plain_pod.weft("ADD", &conf(&prev));
    assert_ok(&add, "weft-cni ADD of a pod without a sidecar");
    assert_eq!(json_of(&add, "ADD"), prev);
    assert!(add.stderr.contains("no sidecar"), "the log says why nothing was done: {}", add.stderr);
    assert!(capture_rules(&plain_pod.tables()).is_empty(), "a pod without a sidecar is not captured:\n{}", plain_pod.tables());

    // A pod the API server does not know (or cannot be asked about): ADD fails, naming it.
    let missing = plain_pod.run(
        &plain_pod.weft_cni,
        "ADD",
        &conf(&prev).to_string(),
        &[("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=nobody")],
    );
    assert_cni_error(&missing, 103, &["default/nobody"], "ADD of a pod the API server does not have");
    assert_ok(&plain_pod.bridge("DEL"), "bridge DEL");
}

/// `weft cni-install` as the DaemonSet runs it, against directories standing in for the node's
/// `/opt/cni/bin` and `/etc/cni/net.d`: it installs the plugin and its kubeconfig and chains the
/// plugin into the node's single-plugin `.conf` (now a `.conflist`); chains it again when the
/// node's network plugin rewrites its config; follows a changed kubeconfig; and on SIGTERM
/// takes out exactly what it put in.
#[test]
fn cni_install_chains_keeps_and_removes_the_plugin() {
    let dir = std::env::temp_dir().join(format!("weft-cni-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (bin, net) = (dir.join("bin"), dir.join("net.d"));
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::create_dir_all(&net).expect("net.d");
    let bridge = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.244.0.0/24"}});
    std::fs::write(net.join("10-bridge.conf"), bridge.to_string()).expect("node config");
    std::fs::write(net.join("99-loopback.conf"), json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}).to_string()).expect("lo");
    let source = dir.join("source-kubeconfig");
    std::fs::write(&source, "apiVersion: v1\nkind: Config\n# first\n").expect("kubeconfig");
    let ready = dir.join("ready");
    let log = std::fs::File::create(dir.join("install.log")).expect("log");
    let mut child = Command::new(WEFT)
        .args([
            "cni-install",
            "--interval",
            "100ms",
            "--host-net-dir",
            "/etc/cni/net.d",
            "--exclude-namespaces",
            "kube-system,istio-system",
        ])
        .arg("--bin-dir")
        .arg(&bin)
        .arg("--net-dir")
        .arg(&net)
        .arg("--kubeconfig")
        .arg(&source)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("cni-install");
    let log = || std::fs::read_to_string(dir.join("install.log")).unwrap_or_default();
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}\n{}", log());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait("the ready file", &|| ready.exists());
    let list = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(net.join("10-bridge.conflist")).unwrap_or_default()).unwrap_or(Value::Null)
    };
    let chained = list();
    assert!(!net.join("10-bridge.conf").exists(), "the single-plugin .conf became a .conflist");
    assert_eq!(chained["plugins"][0]["type"], "bridge", "{chained}");
    assert_eq!(
        chained["plugins"][1],
        json!({"type": "weft-cni", "kubernetes": {"kubeconfig": "/etc/cni/net.d/weft-cni-kubeconfig"}, "excludeNamespaces": ["kube-system", "istio-system"]})
    );
    assert_eq!(std::fs::read(bin.join("weft-cni")).expect("plugin"), std::fs::read(WEFT).expect("weft"), "the plugin is this weft");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(bin.join("weft-cni")).expect("plugin").permissions().mode() & 0o777, 0o755);
    let kc = net.join("weft-cni-kubeconfig");
    assert_eq!(std::fs::metadata(&kc).expect("kubeconfig").permissions().mode() & 0o777, 0o600, "the token is root's only");
    assert!(std::fs::read_to_string(net.join("99-loopback.conf")).expect("lo").contains("loopback"), "other configs are left alone");

    // The node's network plugin rewrites its config without weft-cni: chained again.
    let mut rewritten = chained.clone();
    rewritten["plugins"].as_array_mut().expect("plugins").truncate(1);
    std::fs::write(net.join("10-bridge.conflist"), rewritten.to_string()).expect("rewrite");
    wait("weft-cni chained again", &|| list()["plugins"].as_array().is_some_and(|p| p.len() == 2));
    // A rotated token (a changed kubeconfig) reaches the plugin's copy.
    std::fs::write(&source, "apiVersion: v1\nkind: Config\n# second\n").expect("kubeconfig");
    wait("the new kubeconfig", &|| std::fs::read_to_string(&kc).unwrap_or_default().contains("second"));
    // A plugin binary someone removed is put back.
    std::fs::remove_file(bin.join("weft-cni")).expect("remove the plugin");
    wait("the plugin put back", &|| bin.join("weft-cni").exists());

    // SIGTERM, as the kubelet stops the DaemonSet's pod, to the child this test started.
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(term.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "cni-install exits cleanly on SIGTERM\n{}", log());
    assert_eq!(list(), rewritten, "only weft-cni's entry is taken out");
    for gone in [bin.join("weft-cni"), kc, ready] {
        assert!(!gone.exists(), "{} is removed", gone.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
