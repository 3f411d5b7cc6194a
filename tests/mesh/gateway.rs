//! An ingress gateway driven by the control plane: plain HTTP routed by a bound VirtualService
//! (with its rewrite), `httpsRedirect`, TLS PASSTHROUGH chosen by SNI, a TCP server, and HTTPS
//! terminated with the Gateway's certificate files (SIMPLE, and MUTUAL with a client
//! certificate) and with Secrets named by `credentialName` (sent to the gateway over SDS; the
//! gateway's other servers keep working while one names a Secret that is not there, and a
//! Secret created later is picked up). The backends run without sidecars; the client is a plain
//! curl in its own namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use weft_test_support::mesh::{Mesh, Pod, Sidecar, HUB_IP, XDS_PORT};

use super::{app, weft, write};

struct Gw {
    mesh: Mesh,
    gw: Pod,
    client: Pod,
    /// Held for the test's length: a dropped Pod deletes its namespace, and a backend started
    /// in it a moment before could then fail to enter it ("setting the network namespace …
    /// failed: Invalid argument", the flake CI saw).
    _backends: Vec<Pod>,
    ca: PathBuf,
    config: PathBuf,
    gateway_yaml: String,
}

/// A CA and a certificate for `host` signed by it (EC P-256, one day), written to `dir`.
fn certs(dir: &Path, hosts: &[&str]) -> anyhow::Result<PathBuf> {
    let ssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = weft_test_support::tool("openssl").args(args).current_dir(dir).output()?;
        anyhow::ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=weft-test-ca"]);
    ssl(&args)?;
    for h in hosts {
        let (key, csr, pem, ext) = (format!("{h}.key"), format!("{h}.csr"), format!("{h}.pem"), format!("{h}.ext"));
        std::fs::write(dir.join(&ext), format!("subjectAltName=DNS:{h}\n"))?;
        let mut args = vec!["req"];
        args.extend(ec);
        let subj = format!("/CN={h}");
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        ssl(&args)?;
        ssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            &ext,
        ])?;
    }
    Ok(dir.join("ca.pem"))
}

/// A `kubernetes.io/tls` Secret in the gateway's namespace (istio-system) with `host`'s
/// certificate and key and the test CA.
fn tls_secret(name: &str, dir: &Path, host: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    let b64 = |f: PathBuf| -> anyhow::Result<String> { Ok(base64::engine::general_purpose::STANDARD.encode(std::fs::read(f)?)) };
    Ok(format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n  ca.crt: {}\n",
        b64(dir.join(format!("{host}.pem")))?,
        b64(dir.join(format!("{host}.key")))?,
        b64(dir.join("ca.pem"))?
    ))
}

fn start(tag: &str, gateway: Sidecar) -> anyhow::Result<Gw> {
    let mut mesh = Mesh::new(tag)?;
    let config = mesh.dir.join("config");
    let tls = mesh.dir.join("tls");
    std::fs::create_dir_all(&config)?;
    std::fs::create_dir_all(&tls)?;
    let ca = certs(&tls, &["web.example.com", "secure.example.com", "client.example.com", "cred.example.com"])?;
    let gw = mesh.pod("gw")?;
    let web = mesh.pod("web")?;
    let secure = mesh.pod("secure")?;
    let db = mesh.pod("db")?;
    let client = mesh.pod("client")?;

    let mut objects = String::new();
    for (name, ip, port, pname) in [("web", &web.ip, 8080, "http"), ("secure", &secure.ip, 8443, "https"), ("db", &db.ip, 5432, "tcp")] {
        objects.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: {pname}, port: {port}}}]\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: default}}\nspec: {{address: {ip}, labels: {{app: {name}}}}}\n---\n"
        ));
    }
    write(&config, "services.yaml", &objects);
    // SIMPLE on 443 next to the PASSTHROUGH server (chains by SNI), MUTUAL on 9443.
    let https = format!(
        "  - port: {{number: 443, name: https-web, protocol: HTTPS}}\n    hosts: [web.example.com]\n    tls: {{mode: SIMPLE, serverCertificate: {0}/web.example.com.pem, privateKey: {0}/web.example.com.key}}\n  - port: {{number: 9443, name: https-mutual, protocol: HTTPS}}\n    hosts: [web.example.com]\n    tls: {{mode: MUTUAL, serverCertificate: {0}/web.example.com.pem, privateKey: {0}/web.example.com.key, caCertificates: {0}/ca.pem}}\n",
        tls.display()
    );
    // credentialName: SIMPLE on 443 by SNI, MUTUAL on 9444 with the CA from the same Secret,
    // and one naming a Secret that does not exist yet (8443).
    let https = format!(
        "{https}  - port: {{number: 443, name: https-cred, protocol: HTTPS}}\n    hosts: [cred.example.com]\n    tls: {{mode: SIMPLE, credentialName: cred-tls}}\n  - port: {{number: 9444, name: https-cred-mutual, protocol: HTTPS}}\n    hosts: [cred.example.com]\n    tls: {{mode: MUTUAL, credentialName: kubernetes://cred-tls}}\n  - port: {{number: 8443, name: https-later, protocol: HTTPS}}\n    hosts: [cred.example.com]\n    tls: {{mode: SIMPLE, credentialName: later-tls}}\n"
    );
    write(&config, "secrets.yaml", &tls_secret("cred-tls", &tls, "cred.example.com")?);
    let gateway_yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [web.example.com]\n    tls: {{httpsRedirect: true}}\n  - port: {{number: 8000, name: http-plain, protocol: HTTP}}\n    hosts: [\"*\"]\n{https}  - port: {{number: 443, name: tls-secure, protocol: TLS}}\n    hosts: [secure.example.com]\n    tls: {{mode: PASSTHROUGH}}\n  - port: {{number: 5432, name: tcp-db, protocol: TCP}}\n    hosts: [\"*\"]\n"
        );
    write(&config, "gateway.yaml", &gateway_yaml);
    write(
        &config,
        "routes.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: default}\nspec:\n  hosts: [web.example.com]\n  gateways: [edge]\n  http:\n  - match: [{uri: {prefix: /api}}]\n    rewrite: {uri: /v2/api}\n    route: [{destination: {host: web}}]\n  - route: [{destination: {host: web}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: secure, namespace: default}\nspec:\n  hosts: [secure.example.com]\n  gateways: [edge]\n  tls:\n  - match: [{port: 443, sniHosts: [secure.example.com]}]\n    route: [{destination: {host: secure, port: {number: 8443}}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: db, namespace: default}\nspec:\n  hosts: [\"*\"]\n  gateways: [edge]\n  tcp:\n  - route: [{destination: {host: db, port: {number: 5432}}}]\n",
    );

    let xds = format!("{HUB_IP}:{XDS_PORT}");
    let cfg = config.to_str().unwrap_or_default().to_string();
    mesh.spawn(
        "control-plane",
        None,
        false,
        &weft(),
        &["control-plane", "--config-dir", &cfg, "--xds-address", &xds, "--debounce", "50ms"],
    )?;

    let app = app();
    mesh.spawn("web-app", Some(&web.ns), false, &app, &["serve", "0.0.0.0:8080", "web"])?;
    mesh.spawn("db-app", Some(&db.ns), false, &app, &["serve", "0.0.0.0:5432", "db"])?;
    // A real TLS server with secure.example.com's certificate: if the gateway terminated or
    // re-encrypted, curl's check of that name against the test CA would fail.
    let (cert, key) = (tls.join("secure.example.com.pem"), tls.join("secure.example.com.key"));
    let (cert, key) = (cert.to_str().unwrap_or_default(), key.to_str().unwrap_or_default());
    mesh.spawn(
        "secure-app",
        Some(&secure.ns),
        false,
        Path::new("openssl"),
        &["s_server", "-accept", "8443", "-cert", cert, "-key", key, "-www", "-quiet"],
    )?;

    let boot = mesh.gateway_bootstrap(&gw, &[("istio", "ingressgateway")], false)?;
    let b = boot.to_str().unwrap_or_default().to_string();
    match gateway {
        Sidecar::Envoy => {
            let envoy = weft_test_support::envoy_path()?;
            mesh.spawn("gateway", Some(&gw.ns), false, &envoy, &["-c", &b, "--disable-hot-restart", "-l", "warning"])?;
        }
        Sidecar::Weft => mesh.spawn("gateway", Some(&gw.ns), false, &weft(), &["proxy", "-c", &b, "-l", "info"])?,
    }
    Ok(Gw { mesh, gw, client, _backends: vec![web, secure, db], ca, config, gateway_yaml })
}

impl Gw {
    /// curl from the client namespace; `args` before the URL. Returns "<status> <body>" and the
    /// headers, or curl's error.
    fn curl(&self, args: &[&str], url: &str) -> Result<(String, String), String> {
        let mut full = vec!["-sS", "--max-time", "5", "-D", "-", "-o", "/dev/stdout"];
        full.extend_from_slice(args);
        full.push(url);
        let out = self.client.ns.command("curl").args(&full).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.lines().next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("?").to_string();
        Ok((format!("{status} {}", body.trim()), head.to_ascii_lowercase()))
    }

    /// Polls until `url` answers with a status-and-body starting with `want` (the gateway gets
    /// its listeners from the control plane a moment after it starts).
    fn wait_for(&self, args: &[&str], url: &str, want: &str) -> (String, String) {
        let r = Mesh::wait_for(Duration::from_secs(20), &format!("{url} to answer {want:?}"), || {
            self.curl(args, url).ok().filter(|(s, _)| s.starts_with(want))
        });
        r.unwrap_or_else(|e| {
            panic!(
                "{e}; last: {:?}\ngateway log:\n{}\ncontrol plane log:\n{}\nproxy-status:\n{}\nbackends' logs:\n{}",
                self.curl(args, url),
                self.mesh.log("gateway"),
                self.mesh.log("control-plane"),
                self.status(),
                ["web-app", "secure-app", "db-app"].map(|l| format!("{l}: {}", self.mesh.log(l))).join("\n")
            )
        })
    }
}

impl Gw {
    fn status(&self) -> String {
        self.mesh.proxy_status(&weft())
    }

    /// The control plane's config for the gateway, as `weft proxy-config` prints it.
    fn config_dump(&self) -> String {
        let dump = self.mesh.run(&self.mesh.hub, &weft(), &["proxy-config", "secret", "gw-1.istio-system", "-o", "json"]);
        let dump = dump.unwrap_or_else(|e| panic!("proxy-config: {e}"));
        assert!(dump.contains("kubernetes://cred-tls"), "the dump should list the gateway's secrets by name: {dump}");
        dump
    }
}

/// A listener the gateway cannot bind (its port is taken in the pod) is refused: the proxy
/// NACKs, `proxy-status` shows it with the proxy's error, and everything it had keeps serving.
/// Taking the server out again brings it back to SYNCED.
fn nack_keeps_the_last_good_config(g: &mut Gw) {
    let app = app();
    g.mesh.spawn("squatter", Some(&g.gw.ns), false, &app, &["serve", "0.0.0.0:9000", "squatter"]).expect("squatter");
    let gw = g.gw.ip.clone();
    g.wait_for(&[], &format!("http://{gw}:9000/"), "200 squatter");
    let taken = format!("{}  - port: {{number: 9000, name: http-taken, protocol: HTTP}}\n    hosts: [\"*\"]\n", g.gateway_yaml);
    write(&g.config, "gateway.yaml", &taken);
    let status = Mesh::wait_for(Duration::from_secs(20), "the gateway to NACK its listeners", || {
        let s = g.status();
        s.contains("NACKED").then_some(s)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\ngateway log:\n{}", g.status(), g.mesh.log("gateway")));
    let nack = status.lines().find(|l| l.starts_with("NACK ")).unwrap_or_else(|| panic!("no NACK detail in:\n{status}"));
    assert!(nack.contains("LDS") && nack.contains("9000"), "the NACK should say which listener failed: {nack}");
    assert!(g.mesh.log("control-plane").contains("proxy rejected config (NACK)"), "the control plane logs the NACK");
    // The last good listeners keep working.
    g.wait_for(&["-H", "Host: web.example.com"], &format!("http://{gw}:8000/"), "200 web");
    write(&g.config, "gateway.yaml", &g.gateway_yaml);
    Mesh::wait_for(Duration::from_secs(20), "the gateway SYNCED again", || {
        let s = g.status();
        (!s.contains("NACK") && s.lines().nth(1).is_some_and(|l| l.split_whitespace().filter(|w| *w == "SYNCED").count() == 5))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", g.status()));
}

fn gateway_serves_every_server_kind(g: &Gw) {
    let gw = &g.gw.ip;
    let ca = g.ca.to_str().unwrap_or_default();
    // Plain HTTP on 8000: the bound VirtualService's rewrite reaches the backend.
    let (_, head) = g.wait_for(&["-H", "Host: web.example.com"], &format!("http://{gw}:8000/api/items"), "200 web");
    assert!(head.contains("x-path: /v2/api/items"), "rewrite not applied: {head}");
    // A host no VirtualService binds on this port gets the gateway's 404.
    let (s, _) = g.curl(&["-H", "Host: other.example.com"], &format!("http://{gw}:8000/")).expect("curl");
    assert!(s.starts_with("404"), "{s}");
    // httpsRedirect on 80.
    let (_, head) = g.wait_for(&["-H", "Host: web.example.com"], &format!("http://{gw}/x?y=1"), "301");
    assert!(head.contains("location: https://web.example.com/x?y=1"), "{head}");
    // PASSTHROUGH: the TLS session is the backend's own (its certificate, checked by name).
    let resolve = format!("secure.example.com:443:{gw}");
    let (s, _) = g.wait_for(&["--cacert", ca, "--resolve", &resolve], "https://secure.example.com/", "200");
    assert!(s.contains("s_server"), "not the backend's TLS server: {s}");
    // TCP: bytes forwarded to db.
    g.wait_for(&[], &format!("http://{gw}:5432/"), "200 db");
    // SIMPLE: TLS terminated with the Gateway's files, then HTTP routing (with the rewrite).
    let resolve = format!("web.example.com:443:{gw}");
    let (_, head) = g.wait_for(&["--cacert", ca, "--resolve", &resolve], "https://web.example.com/api/a", "200 web");
    assert!(head.contains("x-path: /v2/api/a"), "{head}");
    // MUTUAL: a client certificate from the Gateway's CA is required.
    let resolve = format!("web.example.com:9443:{gw}");
    let dir = g.ca.parent().map(Path::to_path_buf).unwrap_or_default();
    let (cert, key) = (dir.join("client.example.com.pem"), dir.join("client.example.com.key"));
    let (cert, key) = (cert.to_str().unwrap_or_default(), key.to_str().unwrap_or_default());
    g.wait_for(&["--cacert", ca, "--resolve", &resolve, "--cert", cert, "--key", key], "https://web.example.com:9443/", "200 web");
    let without = g.curl(&["--cacert", ca, "--resolve", &resolve], "https://web.example.com:9443/");
    assert!(without.is_err(), "MUTUAL must refuse a client without a certificate: {without:?}");
    credential_name(g, cert, key);
}

/// Servers whose certificate is a Secret named by `credentialName`, sent over SDS.
fn credential_name(g: &Gw, client_cert: &str, client_key: &str) {
    let gw = &g.gw.ip;
    let ca = g.ca.to_str().unwrap_or_default();
    // SIMPLE: the Secret's certificate, checked by curl against the test CA for its name.
    let resolve = format!("cred.example.com:443:{gw}");
    g.wait_for(&["--cacert", ca, "--resolve", &resolve], "https://cred.example.com/", "404");
    // MUTUAL: the client CA is the Secret's ca.crt.
    let resolve = format!("cred.example.com:9444:{gw}");
    let args = ["--cacert", ca, "--resolve", &resolve];
    let with_cert = [&args[..], &["--cert", client_cert, "--key", client_key]].concat();
    g.wait_for(&with_cert, "https://cred.example.com:9444/", "404");
    let without = g.curl(&args, "https://cred.example.com:9444/");
    assert!(without.is_err(), "MUTUAL must refuse a client without a certificate: {without:?}");
    // A Secret that does not exist: that server is left out (nothing listens on 8443), the
    // others keep serving, and the control plane says why.
    let resolve = format!("cred.example.com:8443:{gw}");
    let missing = g.curl(&["--cacert", ca, "--resolve", &resolve], "https://cred.example.com:8443/");
    assert!(missing.is_err(), "a server whose Secret is missing must not serve: {missing:?}");
    assert!(g.mesh.log("control-plane").contains("later-tls"), "the control plane should say the Secret is missing");
    // Created later, it is picked up.
    let dir = g.ca.parent().map(Path::to_path_buf).unwrap_or_default();
    write(&g.config, "later.yaml", &tls_secret("later-tls", &dir, "cred.example.com").expect("secret"));
    g.wait_for(&["--cacert", ca, "--resolve", &resolve], "https://cred.example.com:8443/", "404");
    // The key never reaches a dump or a log.
    let key_line = std::fs::read_to_string(dir.join("cred.example.com.key")).expect("key");
    let key_line = key_line.lines().nth(1).unwrap_or_default();
    for (what, text) in
        [("gateway log", g.mesh.log("gateway")), ("control plane log", g.mesh.log("control-plane")), ("proxy-config", g.config_dump())]
    {
        assert!(!key_line.is_empty() && !text.contains(key_line), "the private key appears in the {what}");
    }
}

#[test]
fn envoy_gateway_routes_http_https_passthrough_and_tcp() {
    let mut g = start("gwe", Sidecar::Envoy).expect("start");
    gateway_serves_every_server_kind(&g);
    nack_keeps_the_last_good_config(&mut g);
}

#[test]
fn weft_gateway_routes_http_https_passthrough_and_tcp() {
    let mut g = start("gww", Sidecar::Weft).expect("start");
    gateway_serves_every_server_kind(&g);
    nack_keeps_the_last_good_config(&mut g);
}
