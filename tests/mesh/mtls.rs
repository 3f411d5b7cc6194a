//! Mutual TLS between sidecars, driven by the control plane: every pairing of Envoy and weft
//! sidecars calls over mTLS with certificates from the control plane's CA (Envoy's over SDS from
//! `weft agent`, weft's made in the proxy), and PeerAuthentication decides where plaintext is
//! still taken.
//!
//! Pods: `ce`/`cw` are callers with an Envoy/weft sidecar, `se`/`sw` servers with an Envoy/weft
//! sidecar (services `se` and `sw` on 8080), `plain` has no sidecar at all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use weft_test_support::mesh::{Mesh, Pod, Sidecar, HUB_IP};

use super::{app, issue_token, start_control_plane_with_ca, start_proxy_with_identity, weft, write, CA_PORT};

const SE_VIP: &str = "10.96.0.21";
const SW_VIP: &str = "10.96.0.22";

struct MtlsMesh {
    mesh: Mesh,
    config: PathBuf,
    pods: Vec<(Pod, Sidecar)>,
    plain: Pod,
}

fn id(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
}

fn resources(pods: &[(&Pod, &str)]) -> String {
    let mut y = String::new();
    for (svc, vip) in [("se", SE_VIP), ("sw", SW_VIP)] {
        y.push_str(&format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: default}}\nspec:\n  clusterIP: {vip}\n  selector: {{app: {svc}}}\n  ports: [{{name: http, port: 8080}}]\n"));
    }
    for (pod, app) in pods {
        // The label the injector sets on a pod with a sidecar: auto mTLS keys off it.
        y.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {}, namespace: default}}\nspec: {{address: {}, labels: {{app: {app}, security.istio.io/tlsMode: istio}}, serviceAccount: {}}}\n",
            pod.name, pod.ip, pod.name
        ));
    }
    y
}

fn start(tag: &str) -> anyhow::Result<MtlsMesh> {
    let mut mesh = Mesh::new(tag)?;
    let config = mesh.dir.join("config");
    let tokens = mesh.dir.join("tokens");
    let cacerts = mesh.dir.join("cacerts");
    for d in [&config, &tokens, &cacerts] {
        std::fs::create_dir_all(d)?;
    }
    let mut pods = Vec::new();
    for (name, kind) in [("ce", Sidecar::Envoy), ("cw", Sidecar::Weft), ("se", Sidecar::Envoy), ("sw", Sidecar::Weft)] {
        pods.push((mesh.pod(name)?, kind));
    }
    let plain = mesh.pod("plain")?;
    let apps: Vec<(&Pod, &str)> = pods.iter().map(|(p, _)| (p, if p.name.starts_with('c') { "client" } else { p.name.as_str() })).collect();
    write(&config, "mesh.yaml", &resources(&apps));
    for (p, _) in &pods {
        issue_token(&mesh, &tokens, p, "default")?;
    }

    let ca = format!("{HUB_IP}:{CA_PORT}");
    let root = start_control_plane_with_ca(&mut mesh, &config, &tokens, &cacerts, &[])?;
    for (pod, kind) in &pods {
        let app_name = if pod.name.starts_with('c') { "client" } else { pod.name.as_str() };
        mesh.capture(pod)?;
        mesh.spawn(&format!("{}-app", pod.name), Some(&pod.ns), false, &app(), &["serve", "0.0.0.0:8080", &pod.name])?;
        let labels = [("app", app_name), ("security.istio.io/tlsMode", "istio")];
        start_proxy_with_identity(&mut mesh, pod, *kind, &labels, (&ca, &root), false)?;
    }
    mesh.spawn("plain-app", Some(&plain.ns), false, &app(), &["serve", "0.0.0.0:8080", "plain"])?;
    let m = MtlsMesh { mesh, config, pods, plain };
    Mesh::wait_for(Duration::from_secs(30), "every sidecar SYNCED", || {
        let st = m.mesh.proxy_status(&weft());
        (st.lines().filter(|l| l.split_whitespace().filter(|w| *w == "SYNCED").count() == 4).count() == 4).then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}\ncontrol plane log:\n{}", m.mesh.proxy_status(&weft()), m.mesh.log("control-plane")))?;
    Ok(m)
}

/// Istio's standard metrics from the weft sidecars, with the peer an Envoy sidecar, a weft
/// sidecar or no sidecar: the weft side names both workloads (Envoy reports none of Istio's).
fn istio_metrics_name_both_workloads_whatever_runs_on_the_other_side(m: &MtlsMesh) {
    let metrics =
        |pod: &str| m.mesh.run(&m.pod(pod).ns, Path::new("curl"), &["-s", "127.0.0.1:15000/stats/prometheus"]).unwrap_or_default();
    let series = |text: &str, want: &[String]| -> Option<u64> {
        text.lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .find(|l| want.iter().all(|w| l.contains(w.as_str())))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let kv = |k: &str, v: &str| format!("{k}=\"{v}\"");
    let shown = |text: &str| text.lines().filter(|l| l.starts_with("istio_requests_total")).collect::<Vec<_>>().join("\n");
    // The weft client: reporter=source, the destination by its workload whether the server's
    // sidecar is Envoy (se) or weft (sw).
    let cw = metrics("cw");
    for server in ["se", "sw"] {
        let want = [
            kv("reporter", "source"),
            kv("source_workload", "cw"),
            kv("source_principal", &id("cw")),
            kv("destination_workload", server),
            kv("destination_principal", &id(server)),
            kv("destination_service", &format!("{server}.default.svc.cluster.local")),
            kv("response_code", "200"),
        ];
        assert!(series(&cw, &want).is_some_and(|n| n >= 1), "cw → {server} not counted as Istio counts it:\n{}", shown(&cw));
    }
    // The weft server: reporter=destination, the caller by its workload and its certificate,
    // over mTLS from an Envoy (ce) or weft (cw) sidecar, in plaintext from a pod without one.
    let sw = metrics("sw");
    for client in ["ce", "cw"] {
        let want = [
            kv("reporter", "destination"),
            kv("source_workload", client),
            kv("source_principal", &id(client)),
            kv("destination_workload", "sw"),
            kv("destination_service", "sw.default.svc.cluster.local"),
            kv("connection_security_policy", "mutual_tls"),
            kv("response_code", "200"),
        ];
        assert!(series(&sw, &want).is_some_and(|n| n >= 1), "{client} → sw not counted as Istio counts it:\n{}", shown(&sw));
    }
    let plain = [
        kv("reporter", "destination"),
        kv("source_workload", "unknown"),
        kv("source_principal", "unknown"),
        kv("connection_security_policy", "none"),
    ];
    assert!(series(&sw, &plain).is_some_and(|n| n >= 1), "a caller without a sidecar is unknown, in plaintext:\n{}", shown(&sw));
    assert!(sw.contains("# TYPE istio_request_duration_milliseconds histogram"), "{sw}");
}

impl MtlsMesh {
    fn pod(&self, name: &str) -> &Pod {
        if name == "plain" {
            return &self.plain;
        }
        self.pods.iter().map(|(p, _)| p).find(|p| p.name == name).unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// One request from `from` to `url`: `"<status> <body>"`, or `"error …"`.
    fn call(&self, from: &str, url: &str) -> String {
        let out = self.mesh.run(&self.pod(from).ns, &app(), &["get", url, "1"]).unwrap_or_else(|e| panic!("client failed: {e}"));
        let m: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("client output {out:?}: {e}"));
        m.keys().next().cloned().unwrap_or_default()
    }

    /// Polls until `from` → `url` gives an answer `ok` accepts, so a test follows the push.
    fn wait_call(&self, from: &str, url: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let r = Mesh::wait_for(Duration::from_secs(20), what, || {
            last = self.call(from, url);
            ok(&last).then(|| last.clone())
        });
        r.unwrap_or_else(|e| {
            panic!(
                "{e}; last answer: {last}\n{}\n{from} sidecar:\n{}",
                self.mesh.proxy_status(&weft()),
                self.mesh.log(&format!("{from}-sidecar"))
            )
        })
    }

    fn stat(&self, pod: &str, name: &str) -> u64 {
        let stats = self.mesh.run(&self.pod(pod).ns, Path::new("curl"), &["-s", "127.0.0.1:15000/stats"]).unwrap_or_default();
        stats.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }
}

fn url(vip: &str) -> String {
    format!("http://{vip}:8080/peer")
}

#[test]
fn mutual_tls_between_every_pairing_of_envoy_and_weft_sidecars() {
    let m = start("mtls").unwrap_or_else(|e| panic!("{e:#}"));
    let mut servers = Vec::new();

    // Every pairing talks mTLS: the server's application learns the caller's SPIFFE ID from
    // its sidecar, which signs it with its own identity (x-forwarded-client-cert).
    for client in ["ce", "cw"] {
        for (server, vip) in [("se", SE_VIP), ("sw", SW_VIP)] {
            let got = m.wait_call(client, &url(vip), &format!("{client} → {server} over mTLS"), |a| a.starts_with("200 "));
            assert!(
                got.starts_with(&format!("200 {server} peer=By={};Hash=", id(server))) && got.ends_with(&format!(";URI={}", id(client))),
                "{client} → {server}: the hop must be mTLS between the two workload identities: {got}"
            );
        }
    }
    for server in ["se", "sw"] {
        let tls13 = m.stat(server, "listener.0.0.0.0_15006.ssl.versions.TLSv1.3");
        assert!(tls13 >= 2, "{server}: the sidecar-to-sidecar hops must be TLS 1.3 (ssl.versions.TLSv1.3 = {tls13})");
    }

    // PERMISSIVE (the default): a workload with no sidecar still gets in, in plaintext.
    for (server, pod_ip) in [("se", m.pod("se").ip.clone()), ("sw", m.pod("sw").ip.clone())] {
        let got = m.call("plain", &format!("http://{pod_ip}:8080/peer"));
        assert_eq!(got, format!("200 {server} peer=none"), "PERMISSIVE must take plaintext from a caller without a sidecar");
    }

    istio_metrics_name_both_workloads_whatever_runs_on_the_other_side(&m);

    // A server whose certificate is not the identity the client expects is refused (503), and
    // counted by the client's sidecar.
    write(
        &m.config,
        "dr.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: impostor}\nspec:\n  host: sw\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL, subjectAltNames: [\"spiffe://cluster.local/ns/default/sa/someone-else\"]}\n",
    );
    for client in ["ce", "cw"] {
        m.wait_call(client, &url(SW_VIP), &format!("{client}: refused, sw is not who the DestinationRule expects"), |a| {
            a.starts_with("503")
        });
        let san = m.stat(client, "cluster.outbound|8080||sw.default.svc.cluster.local.ssl.fail_verify_san");
        assert!(san >= 1, "{client}: the refusal must be counted as ssl.fail_verify_san");
    }
    std::fs::remove_file(m.config.join("dr.yaml")).expect("remove dr.yaml");
    for client in ["ce", "cw"] {
        m.wait_call(client, &url(SW_VIP), "mTLS again without the DestinationRule", |a| a.starts_with("200 "));
    }

    // STRICT for the namespace: plaintext is refused (and counted); sidecars still get through.
    write(
        &m.config,
        "pa.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec:\n  mtls: {mode: STRICT}\n",
    );
    for server in ["se", "sw"] {
        let ip = m.pod(server).ip.clone();
        m.wait_call("plain", &format!("http://{ip}:8080/peer"), &format!("STRICT {server} to refuse plaintext"), |a| {
            a.starts_with("error")
        });
        let n = m.stat(server, "listener.0.0.0.0_15006.no_filter_chain_match");
        assert!(n >= 1, "{server}: plaintext to a STRICT port must be counted (no_filter_chain_match = {n})");
    }
    for client in ["ce", "cw"] {
        for (server, vip) in [("se", SE_VIP), ("sw", SW_VIP)] {
            let got = m.call(client, &url(vip));
            assert!(got.ends_with(&format!(";URI={}", id(client))), "{client} → {server} under STRICT: {got}");
        }
    }

    // A workload policy with a port-level DISABLE beats the namespace's STRICT (Istio's
    // precedence): plaintext is taken there, and auto mTLS stops sending TLS to it.
    write(
        &m.config,
        "pa-sw.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: sw, namespace: default}\nspec:\n  selector: {matchLabels: {app: sw}}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
    );
    let sw_ip = m.pod("sw").ip.clone();
    m.wait_call("plain", &format!("http://{sw_ip}:8080/peer"), "port-level DISABLE to take plaintext", |a| a == "200 sw peer=none");
    for client in ["ce", "cw"] {
        m.wait_call(client, &url(SW_VIP), &format!("{client}: auto mTLS to follow DISABLE"), |a| a == "200 sw peer=none");
    }
    // The namespace's STRICT still holds for se.
    let se_ip = m.pod("se").ip.clone();
    assert!(m.call("plain", &format!("http://{se_ip}:8080/peer")).starts_with("error"));

    // DestinationRule DISABLE: the callers send plaintext, which se (STRICT) refuses.
    write(&m.config, "dr.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: se}\nspec:\n  host: se\n  trafficPolicy: {tls: {mode: DISABLE}}\n");
    for client in ["ce", "cw"] {
        m.wait_call(client, &url(SE_VIP), &format!("{client}: DISABLE sends plaintext to a STRICT server"), |a| !a.starts_with("200"));
    }
    std::fs::remove_file(m.config.join("dr.yaml")).expect("remove dr.yaml");

    // SIMPLE and MUTUAL with files: TLS origination from the sidecar to an outside TLS server
    // (openssl s_server in the sidecar-less pod; the one on 9443 demands a client certificate).
    let pki = m.mesh.dir.join("pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    let ca = weft_test_support::certs::TestCa::new(&pki, "external").expect("ca");
    let leaf = |name: &str, dns: &[&str]| ca.issue(name, weft_test_support::certs::Leaf { dns, ..Default::default() }).expect("leaf");
    let server = leaf("secure", &["secure.example.com"]);
    let client = leaf("client", &[]);
    for (port, verify) in [("8443", false), ("9443", true)] {
        let (cert, key, root) = (server.cert_str(), server.key_str(), ca.root_str());
        let mut args = vec!["s_server", "-accept", port, "-cert", &cert, "-key", &key, "-www", "-quiet"];
        if verify {
            args.extend(["-Verify", "1", "-CAfile", &root]);
        }
        let plain = m.pod("plain").ns.name.clone();
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &plain, "openssl"]).args(&args).stdin(std::process::Stdio::null());
        c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        servers.push(c.spawn().expect("openssl s_server"));
    }
    let plain_ip = m.pod("plain").ip.clone();
    write(
        &m.config,
        "secure.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: secure}}\nspec:\n  hosts: [secure.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{{number: 8443, name: http-simple, protocol: HTTP}}, {{number: 9443, name: http-mutual, protocol: HTTP}}]\n  endpoints: [{{address: {plain_ip}}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: secure}}\nspec:\n  host: secure.example.com\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 8443}}\n      tls: {{mode: SIMPLE, caCertificates: {root}}}\n    - port: {{number: 9443}}\n      tls: {{mode: MUTUAL, caCertificates: {root}, clientCertificate: {cc}, privateKey: {ck}, subjectAltNames: [secure.example.com]}}\n",
            root = ca.root_str(),
            cc = client.cert_str(),
            ck = client.key_str()
        ),
    );
    for client in ["ce", "cw"] {
        for port in [8443, 9443] {
            let u = format!("http://{plain_ip}:{port}/");
            let mut last = String::new();
            let ok =
                Mesh::wait_for(Duration::from_secs(20), &format!("{client} → s_server:{port} over TLS the sidecar originates"), || {
                    last = m.mesh.run(&m.pod(client).ns, &app(), &["get", &u, "1", "host:secure.example.com"]).unwrap_or_default();
                    (last.contains("\"200 ") && last.contains("s_server")).then_some(())
                });
            ok.unwrap_or_else(|e| panic!("{e}: {last}\n{}", m.mesh.log(&format!("{client}-sidecar"))));
        }
    }
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
}
