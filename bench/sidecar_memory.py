#!/usr/bin/env python3
"""Sidecar memory when fed over ADS: weft proxy and Envoy, side by side, per mesh size.

  python3 bench/sidecar_memory.py [--runs 3] [--sizes 10,1000] [--out bench/SIDECAR_MEMORY.md]

For each size, a mesh of N services x 2 ports in 10 namespaces, one WorkloadEntry each (the
mesh bench/convergence.py writes), is served by `weft control-plane` (release build). One
stock Envoy and one `weft proxy` connect to it as sidecars in namespace ns0 (`--concurrency 1`),
each with its own node id. They run in explicit mode (node metadata INTERCEPTION_MODE NONE and
an HTTP proxy port), so their only listener binds 127.0.0.x and both hold every cluster,
endpoint set and route the mesh has. RSS (VmRSS) is read once the control plane reports both
proxies SYNCED on CDS, EDS, LDS and RDS and 3 s have passed. A static `weft proxy` (one listener,
one cluster, no ADS) is measured in the same run for reference. Medians of --runs runs.
Everything binds 127.0.0.1/8; every wait is bounded.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import convergence  # bench/convergence.py, beside this script: the mesh it writes
from run import free_port, envoy_path  # bench/run.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
REL = os.path.join(TARGET, "release")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise SystemExit(f"no VmRSS for {pid}")


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


def wait_synced(dbg, pods, limit):
    end = time.time() + limit
    while time.time() < end:
        try:
            st = get_json(f"http://127.0.0.1:{dbg}/debug/syncz")
            done = [p for p in st["proxies"] if p["proxy"].split(".")[0] in pods
                    and all(p["types"][t]["state"] == "SYNCED" for t in ("CDS", "EDS", "LDS", "RDS"))]
            if len(done) == len(pods):
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"proxies {pods} not synced within {limit}s")


def run_once(size, d):
    convergence.SERVICES = size
    cfg = os.path.join(d, "config")
    os.makedirs(cfg, exist_ok=True)
    convergence.write_mesh(cfg, False)
    os.remove(os.path.join(cfg, "change.yaml"))
    xds, dbg = free_port(), free_port()
    procs = []
    log = open(os.path.join(d, "log.txt"), "w")

    def spawn(argv):
        p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        procs.append(p)
        return p

    try:
        spawn([os.path.join(REL, "weft"), "control-plane", "--config-dir", cfg, "--xds-address", f"127.0.0.1:{xds}",
               "--debug-address", f"127.0.0.1:{dbg}", "-l", "error"])
        convergence.wait_ready(f"http://127.0.0.1:{dbg}/ready", 120)
        eb = os.path.join(d, "envoy.json")
        with open(eb, "w") as f:
            json.dump(envoy_bootstrap("127.0.0.2", "envoy-1", free_port(), xds, free_port()), f)
        envoy = spawn([envoy_path(), "-c", eb, "--concurrency", "1", "-l", "error", "--base-id", str(free_port())])
        weft = spawn([os.path.join(REL, "weft"), "proxy", "--xds-address", f"127.0.0.1:{xds}", "--concurrency", "1", "-l", "error",
                      "--service-node", node("127.0.0.3", "weft-1"), "--node-meta", "NAMESPACE=ns0",
                      "--node-meta", 'LABELS={"app":"app-0"}', "--node-meta", "INTERCEPTION_MODE=NONE",
                      "--node-meta", f"HTTP_PROXY_PORT={free_port()}"])
        sb = os.path.join(d, "static.json")
        with open(sb, "w") as f:
            json.dump(static_bootstrap(free_port(), free_port()), f)
        static = spawn([os.path.join(REL, "weft"), "proxy", "-c", sb, "--concurrency", "1", "-l", "error"])
        wait_synced(dbg, ["envoy-1", "weft-1"], 300)
        time.sleep(3)
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"a process exited early:\n{open(os.path.join(d, 'log.txt')).read()[-3000:]}")
        return {"envoy": rss_mb(envoy.pid), "weft": rss_mb(weft.pid), "static": rss_mb(static.pid)}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="10,1000")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "SIDECAR_MEMORY.md"))
    args = ap.parse_args()
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "weft"], cwd=ROOT)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        runs = []
        for _ in range(args.runs):
            d = tempfile.mkdtemp(prefix="weft-sidecar-mem-")
            try:
                runs.append(run_once(size, d))
            finally:
                shutil.rmtree(d, ignore_errors=True)
            print(size, runs[-1], file=sys.stderr)
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append((size, med))
    envoy_version = subprocess.run([envoy_path(), "--version"], capture_output=True, text=True).stdout
    envoy_version = envoy_version.split("version:")[1].split("/")[1] if "version:" in envoy_version else "?"
    lines = [
        "# Sidecar memory over ADS",
        "",
        f"Produced by `python3 bench/sidecar_memory.py --runs {args.runs} --sizes {args.sizes}` on this machine "
        f"(2 cores, {time.strftime('%Y-%m-%d')}); medians of {args.runs} runs. One Envoy {envoy_version} and one `weft proxy` "
        "(release), both `--concurrency 1`, fed by `weft control-plane` over ADS as sidecars of ns0 holding the whole mesh "
        "(N services x 2 ports, 10 namespaces, one WorkloadEntry each); RSS once both are SYNCED on all four types. "
        "The static weft proxy (one listener, one cluster, no ADS) is measured in the same run.",
        "",
        "| services in mesh | Envoy RSS | weft RSS | weft / Envoy | static weft |",
        "|---|---|---|---|---|",
    ]
    for size, m in rows:
        lines.append(f"| {size} | {m['envoy']:.1f} MB | {m['weft']:.1f} MB | {m['weft'] / m['envoy']:.2f} | {m['static']:.1f} MB |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
