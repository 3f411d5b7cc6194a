#!/usr/bin/env python3
"""Sidecar memory against mesh size, fed over ADS: weft proxy and Envoy side by side.

  python3 bench/sidecar_memory.py [--runs 3] [--sizes 10,1000,3000,10000] [--probes 20]
                                  [--out bench/SIDECAR_MEMORY.md]

For each size, a mesh of N services x 2 ports in 10 namespaces, one WorkloadEntry each (the
mesh bench/convergence.py writes), plus --probes HTTP services in ns0 whose one endpoint is a
local HTTP server on 127.0.0.1, is served by `weft control-plane` (release build), unscoped
and again with a namespace `Sidecar` (egress `./*`) in every namespace. Connected to it as
sidecars of ns0, in explicit mode (node metadata INTERCEPTION_MODE NONE and an HTTP proxy
port, so their only listener binds 127.0.0.x), all `--concurrency 1`:
  - one stock Envoy (it holds every cluster, endpoint set and route the mesh has);
  - one `weft proxy` as it runs by default: virtual hosts, clusters and endpoints fetched on first use;
  - one `weft proxy` with WEFT_ON_DEMAND=false, holding everything as Envoy does;
  - one static `weft proxy` (one listener, one cluster, no ADS) for reference.
Read once the control plane reports the ADS proxies SYNCED and 12 s have passed (the weft proxy
lets go of its protobuf descriptor pool 10 s after the last xDS response):
  - RSS (VmRSS) and its anonymous part (RssAnon) from /proc/PID/status;
  - CPU seconds (utime + stime) each proxy spent from its start to then: taking the mesh's
    whole initial config;
  - first-request latency: for each probe service, one request through the proxy's HTTP proxy
    port to a service it has never used, then one more to the same; the first minus the
    second is what laziness costs (median over the probes);
  - RSS again 12 s after the probes (the working set is now --probes services).
Medians of --runs runs. Everything binds 127.0.0.0/8; every wait is bounded.
"""
import argparse
import http.server
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import convergence  # bench/convergence.py, beside this script: the mesh it writes
from run import free_port, envoy_path  # bench/run.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
REL = os.path.join(TARGET, "release")
TICKS = os.sysconf("SC_CLK_TCK")


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k = line.split(":")[0]
            if k in ("VmRSS", "RssAnon"):
                out[k] = int(line.split()[1]) / 1024.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["cpu"] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def get_json(url):
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.loads(r.read())


def node(ip, pod):
    return f"sidecar~{ip}~{pod}.ns0~ns0.svc.cluster.local"


def envoy_bootstrap(ip, pod, admin, xds, proxy_port):
    return {
        "node": {"id": node(ip, pod), "cluster": "app-0.ns0",
                 "metadata": {"NAMESPACE": "ns0", "LABELS": {"app": "app-0"}, "INTERCEPTION_MODE": "NONE",
                              "HTTP_PROXY_PORT": str(proxy_port)}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [{
            "name": "xds", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": xds}}}}]}]}}]},
    }


def static_bootstrap(port, upstream):
    return {
        "static_resources": {
            "listeners": [{"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                               "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                               "stat_prefix": "t", "cluster": "c"}}]}]}],
            "clusters": [{"name": "c", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
                "cluster_name": "c", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                    "socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}]}}]}}


def probe_services(count, port):
    docs = []
    for k in range(count):
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: probe-{k}, namespace: ns0}}\nspec:\n"
                    f"  selector: {{app: probe-{k}}}\n  ports:\n  - {{name: http, port: 80, targetPort: {port}}}\n")
        docs.append(f"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: probe-{k}, namespace: ns0}}\n"
                    f"spec: {{address: 127.0.0.1, labels: {{app: probe-{k}}}}}\n")
    return "---\n".join(docs)


class Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        # One write: headers and body in separate segments would meet Nagle and delayed ACKs
        # on a reused connection and add 40 ms to every request but the first.
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    def log_message(self, *a):
        pass


def request(proxy, host):
    """One GET through an HTTP proxy port on a new connection; (status, seconds)."""
    t = time.perf_counter()
    with socket.create_connection(proxy, timeout=10) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    elapsed = time.perf_counter() - t
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0, elapsed


def wait_synced(dbg, pods, limit):
    end = time.time() + limit
    while time.time() < end:
        try:
            st = get_json(f"http://127.0.0.1:{dbg}/debug/syncz")
            state = lambda p, t: p["types"].get(t, {}).get("state", "NOT SENT")
            done = [p for p in st["proxies"] if p["proxy"].split(".")[0] in pods
                    and all(state(p, t) == "SYNCED" for t in ("CDS", "LDS", "RDS"))
                    and state(p, "EDS") in ("SYNCED", "NOT SENT")]
            if len(done) == len(pods):
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"proxies {pods} not synced within {limit}s")


def run_once(size, scoped, probes, d):
    convergence.SERVICES = size
    cfg = os.path.join(d, "config")
    os.makedirs(cfg, exist_ok=True)
    convergence.write_mesh(cfg, scoped)
    os.remove(os.path.join(cfg, "change.yaml"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with open(os.path.join(cfg, "probes.yaml"), "w") as f:
        f.write(probe_services(probes, server.server_address[1]))
    xds, dbg = free_port(), free_port()
    procs = []
    log = open(os.path.join(d, "log.txt"), "w")

    def spawn(argv):
        p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        procs.append(p)
        return p

    def weft_sidecar(ip, pod, port, extra):
        return spawn([os.path.join(REL, "weft"), "proxy", "--xds-address", f"127.0.0.1:{xds}", "--concurrency", "1", "-l", "error",
                      "--service-node", node(ip, pod), "--node-meta", "NAMESPACE=ns0",
                      "--node-meta", 'LABELS={"app":"app-0"}', "--node-meta", "INTERCEPTION_MODE=NONE",
                      "--node-meta", f"HTTP_PROXY_PORT={port}"] + extra)

    try:
        spawn([os.path.join(REL, "weft"), "control-plane", "--config-dir", cfg, "--xds-address", f"127.0.0.1:{xds}",
               "--debug-address", f"127.0.0.1:{dbg}", "-l", "error"])
        convergence.wait_ready(f"http://127.0.0.1:{dbg}/ready", 300)
        ports = {"envoy": free_port(), "weft": free_port(), "full": free_port()}
        eb = os.path.join(d, "envoy.json")
        with open(eb, "w") as f:
            json.dump(envoy_bootstrap("127.0.0.2", "envoy-1", free_port(), xds, ports["envoy"]), f)
        ps = {
            "envoy": spawn([envoy_path(), "-c", eb, "--concurrency", "1", "-l", "error", "--base-id", str(free_port())]),
            "weft": weft_sidecar("127.0.0.3", "weft-1", ports["weft"], []),
            # Another workload, so the two weft proxies share no working set.
            "full": weft_sidecar("127.0.0.4", "full-1", ports["full"], ["--node-meta", "WEFT_ON_DEMAND=false"]),
        }
        sb = os.path.join(d, "static.json")
        with open(sb, "w") as f:
            json.dump(static_bootstrap(free_port(), free_port()), f)
        ps["static"] = spawn([os.path.join(REL, "weft"), "proxy", "-c", sb, "--concurrency", "1", "-l", "error"])
        wait_synced(dbg, ["envoy-1", "weft-1", "full-1"], 600)
        time.sleep(12)
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"a process exited early:\n{open(os.path.join(d, 'log.txt')).read()[-3000:]}")
        out = {k: status(p.pid) for k, p in ps.items()}
        addr = {"envoy": ("127.0.0.2", ports["envoy"]), "weft": ("127.0.0.3", ports["weft"]), "full": ("127.0.0.4", ports["full"])}
        for k in ("envoy", "weft", "full"):
            extra = []
            for i in range(probes):
                host = f"probe-{i}.ns0.svc.cluster.local"
                s1, first = request(addr[k], host)
                s2, second = request(addr[k], host)
                if (s1, s2) != (200, 200):
                    raise SystemExit(f"{k}: probe {host} answered {s1}, {s2}\n{open(os.path.join(d, 'log.txt')).read()[-3000:]}")
                extra.append((first - second) * 1000)
            out[k]["first_ms"] = statistics.median(extra)
        # As before the probes: once the weft proxies have let go of what they held only while
        # decoding.
        time.sleep(12)
        for k in ("envoy", "weft", "full"):
            out[k]["rss_used"] = status(ps[k].pid)["VmRSS"]
        return out
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        server.shutdown()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="10,1000,3000,10000")
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "SIDECAR_MEMORY.md"))
    args = ap.parse_args()
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "weft"], cwd=ROOT)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for scoped in (False, True):
            runs = []
            for _ in range(args.runs):
                d = tempfile.mkdtemp(prefix="weft-sidecar-mem-")
                try:
                    runs.append(run_once(size, scoped, args.probes, d))
                finally:
                    shutil.rmtree(d, ignore_errors=True)
                print(size, scoped, json.dumps(runs[-1]), file=sys.stderr)
            med = {k: {m: statistics.median(r[k][m] for r in runs) for m in runs[0][k]} for k in runs[0]}
            rows.append((size, scoped, med))
    envoy_version = subprocess.run([envoy_path(), "--version"], capture_output=True, text=True).stdout
    envoy_version = envoy_version.split("version:")[1].split("/")[1] if "version:" in envoy_version else "?"
    lines = [
        "# Sidecar memory against mesh size",
        "",
        f"Produced by `python3 bench/sidecar_memory.py --runs {args.runs} --sizes {args.sizes} --probes {args.probes}` on this machine "
        f"(2 cores, {time.strftime('%Y-%m-%d')}); medians of {args.runs} runs. Envoy {envoy_version} and `weft proxy` (release), "
        "all `--concurrency 1`, fed by `weft control-plane` over ADS as sidecars of ns0 in explicit mode. The mesh: N services x 2 "
        "ports (HTTP 8080, TCP 9090) in 10 namespaces, one WorkloadEntry each, plus the probe services; \"Sidecar\" rows add a "
        "namespace `Sidecar` with egress `./*` to every namespace. weft is the default proxy (virtual hosts, clusters and "
        "endpoints fetched on first use); \"weft, all\" is the same binary with `WEFT_ON_DEMAND=false`, holding every virtual host and cluster as Envoy does. RSS is read once "
        "the proxies are SYNCED and 12 s have passed, before any request; \"after use\" after one request to each of "
        f"{args.probes} services. CPU is the proxy's CPU seconds from its start to then: taking the mesh's initial config. "
        "First request: median over the probe services of (first request to a service never used) minus (the next request to "
        "it), each on a new connection.",
        "",
        "| services | Sidecar | Envoy RSS | weft RSS (anon) | weft / Envoy | weft, all RSS | weft after use | static weft (anon) | Envoy CPU s | weft CPU s | weft, all CPU s | weft first request +ms | Envoy first request +ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, scoped, m in rows:
        e, w, f, s = m["envoy"], m["weft"], m["full"], m["static"]
        lines.append(
            f"| {size} | {'./*' if scoped else '—'} | {e['VmRSS']:.1f} MB | {w['VmRSS']:.1f} MB ({w['RssAnon']:.1f}) | "
            f"{w['VmRSS'] / e['VmRSS']:.2f} | {f['VmRSS']:.1f} MB | {w['rss_used']:.1f} MB | {s['VmRSS']:.1f} MB ({s['RssAnon']:.1f}) | "
            f"{e['cpu']:.2f} | {w['cpu']:.2f} | {f['cpu']:.2f} | {w['first_ms']:.2f} | {e['first_ms']:.2f} |")
    lines += [
        "",
        "Reading the table:",
        "",
        "- RSS counts the pages of the `weft` binary the process has touched. They are file-backed and shared by every "
        "process run from the same file (every sidecar on a node, from one image), and they are most of the static "
        "proxy's RSS (its anonymous memory, in brackets, is about 1.5 MB). The anonymous part is what one more sidecar "
        "costs.",
        "- weft fetches a service's virtual host (VHDS), cluster and endpoints on first use, so what still grows with "
        "the mesh is the `weft.workloads` table that names telemetry peers, kept as it arrived (protobuf) with an index "
        "by address, and the listeners. \"weft, all\" (`WEFT_ON_DEMAND=false`) holds every virtual host, cluster and "
        "endpoint set up front, as Envoy does.",
        "- The first request to a service a sidecar has never used waits for the control plane to send its virtual host, "
        "then its cluster and endpoints (three round trips on loopback here); later requests, and restarted or added "
        "replicas of the same workload (the control plane remembers the working set), do not.",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    write_ratios(args, rows)


MARK = "<!-- sidecar_memory.py -->"
END = "<!-- /sidecar_memory.py -->"


def write_ratios(args, rows):
    """The sidecar's ratios to Envoy, as a block of bench/RESULTS.md (replaced on each run)."""
    block = [
        MARK,
        "## Sidecar fed over ADS, against mesh size (weft / Envoy)",
        "",
        f"From `python3 bench/sidecar_memory.py --runs {args.runs} --sizes {args.sizes} --probes {args.probes}` "
        f"({time.strftime('%Y-%m-%d')}; table and method in [SIDECAR_MEMORY.md](SIDECAR_MEMORY.md)). weft as it runs by "
        "default (virtual hosts, clusters and endpoints fetched on first use); Envoy holding the whole mesh. Targets (issue 21): weft RSS "
        "≤ 15 MB at 10 services, ≤ 25 MB at 1000, ≤ 30 MB at 10,000.",
        "",
        "| services | Sidecar | weft RSS | Envoy RSS | RSS ratio | CPU to take the config, ratio | weft first request to a new service |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, scoped, m in rows:
        e, w = m["envoy"], m["weft"]
        cpu = f"{w['cpu'] / e['cpu']:.2f}" if e["cpu"] > 0 else "—"
        block.append(f"| {size} | {'./*' if scoped else '—'} | {w['VmRSS']:.1f} MB | {e['VmRSS']:.1f} MB | "
                     f"{w['VmRSS'] / e['VmRSS']:.2f} | {cpu} | +{w['first_ms']:.1f} ms |")
    block.append(END)
    path = os.path.join(ROOT, "bench", "RESULTS.md")
    with open(path) as f:
        text = f.read()
    new = "\n".join(block)
    if MARK in text and END in text:
        text = text[:text.index(MARK)] + new + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
