#!/usr/bin/env python3
"""Control-plane scale: convergence time, memory, CPU and bytes pushed per proxy.

  python3 bench/convergence.py [--runs 3] [--out bench/CONVERGENCE.md]

A mesh of 1000 services x 2 ports (HTTP 8080, TCP 9090) in 10 namespaces, one WorkloadEntry
each, is written to a config directory and served by `weft control-plane` (release build) on
127.0.0.1. `weft-ads-load` then holds 100 or 1000 real ADS streams (state of the world), each a
sidecar with its own Istio node id, following EDS/RDS names and ACKing like Envoy. The tool
rewrites a VirtualService five times and measures, per change, the time from the file write
to each proxy's receipt and ACK of the push (this includes the control plane's 100 ms file
polling and its 100 ms debounce). Control-plane RSS and CPU come from /proc: "connected" is
read by the load tool while every stream is open and synced, 6 s after the last change (the
control plane returns freed memory every 5 s); "peak" is VmHWM over the run. A third scenario
adds a Sidecar per namespace (egress: own namespace only) to show the bytes scoping saves; the
on-demand scenarios make every stream a weft sidecar that fetches service clusters and virtual
hosts (VHDS) on first use (`WEFT_ON_DEMAND`) and has used 5 services, with no Sidecar written; one
of them is svc-0, the service the change rewrites, so the change must reach every proxy.
Everything binds 127.0.0.1; every wait is bounded.
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

from run import free_port  # bench/run.py, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
REL = os.path.join(TARGET, "release")
SERVICES = 1000
NAMESPACES = 10
TICKS = os.sysconf("SC_CLK_TCK")


def write_mesh(d, sidecar_scoping):
    docs = []
    for i in range(SERVICES):
        ns = f"ns{i % NAMESPACES}"
        # Loopback addresses: the control plane scrapes each connected proxy's address for the
        # service graph, and the benchmark's proxies are made up.
        ip = f"127.200.{i // 250}.{i % 250 + 1}"
        vip = f"10.100.{i // 250}.{i % 250 + 1}"
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec:\n  clusterIP: {vip}\n"
                    f"  selector: {{app: app-{i}}}\n  ports:\n  - {{name: http, port: 8080}}\n  - {{name: tcp, port: 9090}}\n")
        docs.append(f"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: app-{i}, namespace: {ns}}}\n"
                    f"spec: {{address: {ip}, labels: {{app: app-{i}}}, serviceAccount: app-{i}}}\n")
    if sidecar_scoping:
        for n in range(NAMESPACES):
            docs.append(f"apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: ns{n}}}\n"
                        f"spec:\n  egress:\n  - hosts: [\"./*\"]\n")
    with open(os.path.join(d, "mesh.yaml"), "w") as f:
        f.write("---\n".join(docs))
    with open(os.path.join(d, "change.yaml"), "w") as f:
        f.write("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bench-change, namespace: ns0}\nspec:\n"
                "  hosts: [svc-0.ns0.svc.cluster.local]\n  http:\n  - timeout: 1s\n    route:\n    - destination: {host: svc-0.ns0.svc.cluster.local}\n")


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    cpu = (int(parts[11]) + int(parts[12])) / TICKS
    mem = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                mem[k] = int(v.split()[0]) / 1024.0
    return cpu, mem


def wait_ready(url, limit):
    end = time.time() + limit
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"control plane not ready at {url} within {limit}s")


def scenario(proxies, sidecar_scoping, changes, on_demand=None):
    d = tempfile.mkdtemp(prefix="weft-conv-")
    cp = None
    try:
        cfg = os.path.join(d, "config")
        os.makedirs(cfg)
        write_mesh(cfg, sidecar_scoping)
        xds, dbg = free_port(), free_port()
        log = open(os.path.join(d, "cp.log"), "w")
        cp = subprocess.Popen([os.path.join(REL, "weft"), "control-plane", "--config-dir", cfg, "--xds-address", f"127.0.0.1:{xds}",
                               "--debug-address", f"127.0.0.1:{dbg}", "--debounce", "100ms", "-l", "warning"],
                              stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_ready(f"http://127.0.0.1:{dbg}/ready", 60)
        cpu0, mem0 = proc_stat(cp.pid)
        # With Sidecar scoping only ns0's proxies see the changed service, so the others never
        # get a push: that scenario measures bytes, not convergence.
        load_args = ["--change", os.path.join(cfg, "change.yaml"), "--changes", str(changes)] if changes else []
        out = subprocess.run([os.path.join(REL, "weft-ads-load"), "--xds", f"127.0.0.1:{xds}", "--proxies", str(proxies),
                              "--namespaces", str(NAMESPACES), "--ip-base", "127.200", "--timeout", "300",
                              "--rss-of", str(cp.pid)] + load_args
                             + (["--on-demand", str(on_demand), "--services", str(SERVICES)] if on_demand else []),
                             capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise SystemExit(f"weft-ads-load failed: {out.stderr}\n{open(os.path.join(d, 'cp.log')).read()[-3000:]}")
        cpu1, mem1 = proc_stat(cp.pid)
        r = json.loads(out.stdout)
        r.update({
            "cp_rss_idle_mb": mem0["VmRSS"],
            "cp_rss_connected_mb": r["rss_held_mb"],
            "cp_rss_peak_mb": mem1["VmHWM"],
            "cp_cpu_s": cpu1 - cpu0,
        })
        return r
    finally:
        if cp is not None:
            cp.terminate()
            try:
                cp.wait(10)
            except subprocess.TimeoutExpired:
                cp.kill()
        shutil.rmtree(d, ignore_errors=True)


def summarize(runs):
    med = lambda xs: statistics.median(xs)
    conv = lambda k: med([med([c[k] for c in r["changes"]]) for r in runs]) if runs[0]["changes"] else float("nan")
    return {
        "sync_s": med([r["initial_sync_s"] for r in runs]),
        "bytes": med([r["initial_bytes_per_proxy"] for r in runs]),
        "p50": conv("p50_ms"),
        "p99": conv("p99_ms"),
        "max": med([max(c["max_ms"] for c in r["changes"]) for r in runs]) if runs[0]["changes"] else float("nan"),
        "rss_idle": med([r["cp_rss_idle_mb"] for r in runs]),
        "rss": med([r["cp_rss_connected_mb"] for r in runs]),
        "rss_peak": med([r["cp_rss_peak_mb"] for r in runs]),
        "cpu": med([r["cp_cpu_s"] for r in runs]),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "CONVERGENCE.md"))
    ap.add_argument("--only", help="run just the scenarios whose name contains this (e.g. '2000') and print their rows; "
                                   "CONVERGENCE.md is left alone")
    args = ap.parse_args()
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "weft", "-p", "weft-test-support"], cwd=ROOT)
    rows = []
    scenarios = [("100 proxies", 100, False, None), ("1000 proxies", 1000, False, None), ("100 proxies, Sidecar-scoped", 100, True, None),
                 ("1000 proxies, on demand (5 services used)", 1000, False, 5)]
    if args.only:
        # istiod's published figure is for 2000 sidecars: measured on request, since it takes as
        # long as the other scenarios together.
        scenarios = [s for s in scenarios + [("2000 proxies", 2000, False, None)] if args.only in s[0]]
    for name, proxies, scoped, on_demand in scenarios:
        runs = []
        for i in range(args.runs):
            r = scenario(proxies, scoped, 0 if scoped else args.changes, on_demand)
            print(name, "run", i + 1, json.dumps(r), file=sys.stderr)
            runs.append(r)
        rows.append((name, summarize(runs)))
    lines = [
        "# Control-plane scale",
        "",
        f"Produced by `python3 bench/convergence.py --runs {args.runs} --changes {args.changes}` on this machine (2 cores, "
        f"{time.strftime('%Y-%m-%d')}); medians of {args.runs} runs. `weft control-plane` (release) serves {SERVICES} services x 2 ports "
        f"in {NAMESPACES} namespaces, one WorkloadEntry each; `weft-ads-load` holds the ADS streams (state of the world, one HTTP/2 "
        "connection and one Istio node id per proxy, EDS/RDS followed and every response ACKed) on the same 2 cores. Convergence: "
        "from the write of a changed VirtualService file to each proxy's receipt and ACK of the push, including the control plane's "
        "100 ms file polling and 100 ms debounce; median over the changes of each run's p50/p99.",
        "",
        "| scenario | convergence p50 (ms) | p99 (ms) | max (ms) | initial sync of all (s) | bytes per proxy | CP RSS idle (MB) | CP RSS connected (MB) | CP RSS peak (MB) | CP CPU (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in rows:
        fmt = lambda v: "—" if v != v else f"{v:.0f}"
        lines.append(f"| {name} | {fmt(s['p50'])} | {fmt(s['p99'])} | {fmt(s['max'])} | {s['sync_s']:.1f} | {s['bytes']:.0f} | "
                     f"{s['rss_idle']:.0f} | {s['rss']:.0f} | {s['rss_peak']:.0f} | {s['cpu']:.1f} |")
    if args.only:
        for name, s in rows:
            print(f"| {name} | p50 {s['p50']:.0f} ms | p99 {s['p99']:.0f} ms | max {s['max']:.0f} ms | sync {s['sync_s']:.1f} s | "
                  f"{s['bytes']:.0f} B/proxy | RSS connected {s['rss']:.0f} MB | peak {s['rss_peak']:.0f} MB | CPU {s['cpu']:.1f} s |")
        return
    big = dict(rows)["1000 proxies"]
    lines += [
        "",
        "CP CPU is the control plane's CPU seconds over the whole run (initial sync of every proxy plus the changes). "
        "The Sidecar-scoped scenario makes no change (only ns0's proxies would see it); it shows bytes per proxy.",
        "",
        "The initial sync of 1000 proxies is paced on purpose: a first push (1.45 MB) waits for one of the control plane's 64 push slots, a connection keeps its slot until its last large push is ACKed, which bounds the memory peak (before pacing and streamed responses the peak was 1245 MB).",
        "",
        "## Against istiod's published figures",
        "",
        "Istio publishes (istio.io, Performance and Scalability, v1.16 onwards): istiod uses 1 vCPU and 1.5 GB of memory with "
        "1000 services and 2000 sidecars. istiod itself cannot run here (no Kubernetes, and only crates.io, PyPI, Debian and npm "
        "are reachable), so this compares with the published number, not a measurement.",
        "",
        f"| metric | weft, 1000 services x 2 ports, 1000 proxies | istiod published (1000 services, 2000 sidecars) | ratio | target |",
        "|---|---|---|---|---|",
        f"| control-plane memory, all proxies connected and synced | {big['rss']:.0f} MB | 1500 MB | {big['rss'] / 1500:.2f} | ≤ 0.25 |",
        f"| control-plane memory, peak during the fleet's initial sync and the changes | {big['rss_peak']:.0f} MB | 1500 MB | {big['rss_peak'] / 1500:.2f} | — |",
        f"| convergence p99 | {big['p99']:.0f} ms | — | — | < 1000 ms |",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
