//! Calls out of the mesh, to a host in a namespace of its own that is not in the mesh (an
//! `openssl s_server` with a certificate from its own CA for `api.example.com` on 443, a
//! plain HTTP server on 80, and one on 3306 that the mesh sees as opaque TCP), from a captured
//! client under REGISTRY_ONLY — once with Envoy proxies (identities from `weft agent`), once
//! with weft proxies:
//!
//! - TCP to an address on 3306 is black-holed until a ServiceEntry declares it by address;
//! - TLS the application speaks itself is blocked until a ServiceEntry declares the host, then
//!   passed through by SNI untouched (curl checks the server's own certificate); another name
//!   on the same address stays blocked;
//! - TLS origination: a plain `http://api.example.com` call leaves the sidecar as TLS from a
//!   DestinationRule `tls: SIMPLE` (SNI, the CA, the SAN); a SAN the server does not have is
//!   refused (503);
//! - the egress gateway (Istio's "egress gateway" task with mTLS): the same call goes from the
//!   sidecar to a `router~` egress gateway over the mesh's mTLS (`ISTIO_MUTUAL`), and from the
//!   gateway to the outside host; the gateway's counters show it carried the request; then
//!   the same for TLS the client speaks itself, passed through by SNI at both hops.

use std::path::Path;
use std::time::Duration;

use weft_test_support::certs::TestCa;
use weft_test_support::mesh::{Mesh, Pod, Sidecar, HUB_IP};

use super::{app, issue_token, start_control_plane_with_ca, start_proxy_with_identity, weft, write, CA_PORT};

const EGRESS_VIP: &str = "10.96.0.50";

struct Egress {
    mesh: Mesh,
    config: std::path::PathBuf,
    client: Pod,
    gateway: Pod,
    outside: Pod,
    ca: TestCa,
}

fn start(tag: &str, kind: Sidecar) -> anyhow::Result<Egress> {
    let mut mesh = Mesh::new(tag)?;
    let config = mesh.dir.join("config");
    let tokens = mesh.dir.join("tokens");
    let cacerts = mesh.dir.join("cacerts");
    let pki = mesh.dir.join("pki");
    for d in [&config, &tokens, &cacerts, &pki] {
        std::fs::create_dir_all(d)?;
    }
    let client = mesh.pod("client")?;
    let gateway = mesh.pod("egress")?;
    let outside = mesh.pod("outside")?;
    write(
        &config,
        "workloads.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: client, namespace: default}}\nspec: {{address: {}, labels: {{app: client, security.istio.io/tlsMode: istio}}, serviceAccount: client}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: egress, namespace: istio-system}}\nspec: {{address: {}, labels: {{istio: egressgateway}}, serviceAccount: egress}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: istio-egressgateway, namespace: istio-system}}\nspec:\n  clusterIP: {EGRESS_VIP}\n  selector: {{istio: egressgateway}}\n  ports: [{{name: http2, port: 80}}, {{name: https, port: 443}}]\n",
            client.ip, gateway.ip
        ),
    );
    issue_token(&mesh, &tokens, &client, "default")?;
    issue_token(&mesh, &tokens, &gateway, "istio-system")?;
    let mesh_file = mesh.dir.join("mesh.yaml");
    std::fs::write(&mesh_file, "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n")?;
    let mf = mesh_file.to_str().unwrap_or_default().to_string();
    let root = start_control_plane_with_ca(&mut mesh, &config, &tokens, &cacerts, &["--mesh", &mf])?;
    let ca_addr = format!("{HUB_IP}:{CA_PORT}");

    // The outside host: its own CA, not the mesh's.
    let ca = TestCa::new(&pki, "outside")?;
    let leaf = ca.issue("api", weft_test_support::certs::Leaf { dns: &["api.example.com"], ..Default::default() })?;
    let (cert, key) = (leaf.cert_str(), leaf.key_str());
    mesh.spawn(
        "outside-tls",
        Some(&outside.ns),
        false,
        Path::new("openssl"),
        &["s_server", "-accept", "443", "-cert", &cert, "-key", &key, "-www", "-quiet"],
    )?;
    mesh.spawn("outside-http", Some(&outside.ns), false, &app(), &["serve", "0.0.0.0:80", "outside"])?;
    // A database's port: what crosses it is opaque TCP to the mesh.
    mesh.spawn("outside-db", Some(&outside.ns), false, &app(), &["serve", "0.0.0.0:3306", "db"])?;

    mesh.capture(&client)?;
    start_proxy_with_identity(
        &mut mesh,
        &client,
        kind,
        &[("app", "client"), ("security.istio.io/tlsMode", "istio")],
        (&ca_addr, &root),
        false,
    )?;
    start_proxy_with_identity(&mut mesh, &gateway, kind, &[("istio", "egressgateway")], (&ca_addr, &root), true)?;
    let e = Egress { mesh, config, client, gateway, outside, ca };
    Mesh::wait_for(Duration::from_secs(30), "both proxies SYNCED", || {
        let st = e.mesh.proxy_status(&weft());
        (st.lines().filter(|l| l.contains("SYNCED")).count() == 2).then_some(())
    })
    .map_err(|err| anyhow::anyhow!("{err}\n{}\ncontrol plane log:\n{}", e.mesh.proxy_status(&weft()), e.mesh.log("control-plane")))?;
    Ok(e)
}

impl Egress {
    /// curl in the client's namespace, `host` resolved to the outside host at `port`; its
    /// status code ("000" when the connection failed) and body.
    fn curl(&self, scheme: &str, host: &str, port: u16, extra: &[&str]) -> (String, String) {
        let resolve = format!("{host}:{port}:{}", self.outside.ip);
        let url = format!("{scheme}://{host}:{port}/");
        let mut args = vec!["-s", "-m", "5", "--resolve", &resolve, "-o", "/dev/stdout", "-w", "\n%{http_code}"];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = self.client.ns.command("curl").args(&args).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        (code.to_owned(), body.to_owned())
    }

    /// Polls `call` until it answers 200 and the gateway's counter `counter` has grown past
    /// what it was before: the call was carried by the gateway. The last answer.
    fn wait_through_gateway(&self, what: &str, counter: &str, call: impl Fn() -> (String, String)) -> (String, String) {
        let before = self.stat(&self.gateway, &[counter]);
        let through = || {
            let r = call();
            if self.stat(&self.gateway, &[counter]) > before {
                r
            } else {
                ("not through the gateway yet".into(), r.1)
            }
        };
        self.wait(what, through, |c| c == "200")
    }

    /// Polls `call` until `ok` accepts its status code; the last answer.
    fn wait(&self, what: &str, call: impl Fn() -> (String, String), ok: impl Fn(&str) -> bool) -> (String, String) {
        let mut last = (String::new(), String::new());
        let r = Mesh::wait_for(Duration::from_secs(20), what, || {
            last = call();
            ok(&last.0).then_some(())
        });
        r.unwrap_or_else(|e| {
            panic!(
                "{e}; last answer: {} {}\n{}\nclient sidecar:\n{}\ngateway:\n{}",
                last.0,
                last.1,
                self.mesh.proxy_status(&weft()),
                self.mesh.log("client-sidecar"),
                self.mesh.log("egress-sidecar")
            )
        });
        last
    }

    /// A counter from a proxy's admin (`/stats`, in its namespace), summed over every line
    /// whose name contains all of `parts`.
    fn stat(&self, pod: &Pod, parts: &[&str]) -> u64 {
        let text = self.mesh.run(&pod.ns, Path::new("curl"), &["-s", "127.0.0.1:15000/stats"]).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(name, _)| parts.iter().all(|p| name.contains(p)))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }
}

fn egress(tag: &str, kind: Sidecar) {
    let e = start(tag, kind).unwrap_or_else(|err| panic!("{err:#}"));
    let root = e.ca.root_str();
    let verify = ["--cacert", root.as_str()];

    // A TCP service by address (2018's "MySQL on 3306" EgressRule): blocked, then declared.
    let call_db = || e.curl("http", "mysql.example.com", 3306, &[]);
    assert_eq!(call_db().0, "000", "REGISTRY_ONLY blackholes TCP to an undeclared address");
    write(
        &e.config,
        "db.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: mysql, namespace: default}}\nspec:\n  hosts: [mysql.example.com]\n  addresses: [{}/32]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  endpoints: [{{address: {}}}]\n  ports: [{{number: 3306, name: tcp, protocol: TCP}}]\n",
            e.outside.ip, e.outside.ip
        ),
    );
    let (_, body) = e.wait("TCP to 3306 once declared by address", call_db, |c| c == "200");
    assert_eq!(body, "db");

    // TLS the application speaks itself: blocked until declared, then passed through by SNI.
    let (code, _) = e.curl("https", "api.example.com", 443, &verify);
    assert_eq!(code, "000", "REGISTRY_ONLY blocks TLS to an undeclared host");
    let se = |extra_ports: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: api, namespace: default}}\nspec:\n  hosts: [api.example.com]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  endpoints: [{{address: {}}}]\n  ports:\n  - {{number: 443, name: tls, protocol: TLS}}\n{extra_ports}",
            e.outside.ip
        )
    };
    write(&e.config, "api.yaml", &se(""));
    let (_, body) = e.wait("TLS passed through by SNI once declared", || e.curl("https", "api.example.com", 443, &verify), |c| c == "200");
    assert!(body.contains("s_server"), "curl verified the outside host's own certificate and got its page: {body}");
    let (code, _) = e.curl("https", "other.example.com", 443, &["-k"]);
    assert_eq!(code, "000", "another name on the same address is still blocked");

    // TLS origination: a plain HTTP call leaves the sidecar as TLS to 443, checked.
    let origination = |san: &str| {
        format!(
            "{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api, namespace: default}}\nspec:\n  host: api.example.com\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 80}}\n      tls: {{mode: SIMPLE, sni: api.example.com, caCertificates: {root}, subjectAltNames: [{san}]}}\n",
            se("  - {number: 80, name: http, protocol: HTTP, targetPort: 443}\n")
        )
    };
    write(&e.config, "api.yaml", &origination("api.example.com"));
    let (_, body) = e.wait("http:// originated as TLS by the sidecar", || e.curl("http", "api.example.com", 80, &[]), |c| c == "200");
    assert!(body.contains("s_server"), "the TLS server answered the plain call: {body}");
    write(&e.config, "api.yaml", &origination("wrong.example.com"));
    e.wait("a server without the SAN refused", || e.curl("http", "api.example.com", 80, &[]), |c| c == "503");
    write(&e.config, "api.yaml", &origination("api.example.com"));
    e.wait("origination back", || e.curl("http", "api.example.com", 80, &[]), |c| c == "200");

    // The egress gateway: mesh → gateway over mTLS (ISTIO_MUTUAL), gateway → outside.
    write(
        &e.config,
        "egress.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: egress, namespace: istio-system}\nspec:\n  selector: {istio: egressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [api.example.com]\n    tls: {mode: ISTIO_MUTUAL}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: egress-for-api, namespace: default}\nspec:\n  host: istio-egressgateway.istio-system.svc.cluster.local\n  subsets:\n  - name: api\n    trafficPolicy:\n      portLevelSettings:\n      - port: {number: 443}\n        tls: {mode: ISTIO_MUTUAL, sni: api.example.com}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api-through-egress, namespace: default}\nspec:\n  hosts: [api.example.com]\n  gateways: [istio-system/egress, mesh]\n  http:\n  - match: [{gateways: [mesh], port: 80}]\n    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, subset: api, port: {number: 443}}}]\n  - match: [{gateways: [istio-system/egress], port: 443}]\n    route: [{destination: {host: api.example.com, port: {number: 80}}}]\n",
    );
    let (_, body) =
        e.wait_through_gateway("the call carried by the egress gateway", "cluster.outbound|80||api.example.com.upstream_rq_2", || {
            e.curl("http", "api.example.com", 80, &[])
        });
    assert!(body.contains("s_server"), "the outside host answered through the gateway: {body}");
    let handshakes = e.stat(&e.gateway, &["listener.0.0.0.0_443.ssl.handshake"]);
    assert!(handshakes >= 1, "the gateway terminated the sidecar's mTLS on 443 ({handshakes} handshakes)");

    // The egress gateway for TLS the application speaks itself (the task's HTTPS variant):
    // mesh → gateway and gateway → outside by SNI, the TLS untouched end to end.
    write(
        &e.config,
        "egress.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: egress, namespace: istio-system}\nspec:\n  selector: {istio: egressgateway}\n  servers:\n  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [api.example.com]\n    tls: {mode: PASSTHROUGH}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api-through-egress, namespace: default}\nspec:\n  hosts: [api.example.com]\n  gateways: [istio-system/egress, mesh]\n  tls:\n  - match: [{gateways: [mesh], port: 443, sniHosts: [api.example.com]}]\n    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: 443}}}]\n  - match: [{gateways: [istio-system/egress], port: 443, sniHosts: [api.example.com]}]\n    route: [{destination: {host: api.example.com, port: {number: 443}}}]\n",
    );
    let (_, body) =
        e.wait_through_gateway("TLS passed through the egress gateway", "cluster.outbound|443||api.example.com.upstream_cx_total", || {
            e.curl("https", "api.example.com", 443, &verify)
        });
    assert!(body.contains("s_server"), "curl verified the outside host's own certificate through the gateway: {body}");
}

#[test]
fn egress_with_envoy_proxies() {
    egress("egrenv", Sidecar::Envoy);
}

#[test]
fn egress_with_weft_proxies() {
    egress("egrweft", Sidecar::Weft);
}
