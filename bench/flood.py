#!/usr/bin/env python3
"""Hostile clients against Envoy and weft on the same bootstrap, one run, same machine.

  python3 bench/flood.py [--runs 3] [--out bench/FLOOD.md]

Three floods, each against a fresh proxy (--concurrency 1, Envoy's defaults: 60 KiB header
limit, 1 MiB per-connection buffer, no header timeout):
  header flood   50 connections, each sending one header of 390 KB that never ends
  slow clients   200 connections, each trickling an unfinished head, a byte per 50 ms for 2 s
  slow readers   20 connections, each asking for a 16 MB response and never reading it
Measured per proxy: anonymous RSS growth at the flood's peak and what is left 5 s after the
clients leave (RssAnon: without the binary's own pages), and how the flood was answered.
Medians over --runs runs, the proxies alternating which goes first. Everything binds
127.0.0.1; every flood is bounded in count and time.
"""

import argparse
import http.server
import os
import socket
import socketserver
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: proxies, bootstraps, ports)

BIG = 16 * 1024 * 1024


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        size = BIG if self.path.startswith("/big") else 2
        self.send_response(200)
        self.send_header("content-length", str(size))
        self.end_headers()
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < size:
                n = min(len(chunk), size - sent)
                self.wfile.write(chunk[:n])
                sent += n
        except OSError:
            pass

    def log_message(self, *args):
        pass


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def anon_kib(proc):
    return proc.rss_kb("RssAnon")


def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def header_flood(addr):
    socks, answered = [], 0
    for _ in range(50):
        s = connect(addr)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t.example\r\nX-Fill: ")
        socks.append(s)
    chunk = b"a" * 8192
    for _ in range(48):
        for s in socks:
            try:
                s.sendall(chunk)
            except OSError:
                pass
    for s in socks:
        s.settimeout(5)
        try:
            if s.recv(64).startswith(b"HTTP/1.1 431"):
                answered += 1
        except OSError:
            pass
    return socks, f"{answered}/50 answered 431"


def slow_clients(addr):
    socks = []
    for _ in range(200):
        s = connect(addr)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t.example\r\nX-Slow: ")
        socks.append(s)
    for _ in range(40):
        for s in socks:
            s.sendall(b"a")
        time.sleep(0.05)
    return socks, "200 held open"


def slow_readers(addr):
    socks = []
    for _ in range(20):
        s = connect(addr)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t.example\r\n\r\n")
        socks.append(s)
    # Let the proxy read what it will from the upstream.
    time.sleep(3)
    return socks, f"20 x {BIG // (1024 * 1024)} MB responses unread"


FLOODS = [("header flood", header_flood), ("slow clients", slow_clients), ("slow readers", slow_readers)]


def measure(kind, upstream_port, flood):
    admin, listen = run.free_port(), run.free_port()
    p = run.start_proxy(kind, run.bootstrap_plain(admin, listen, upstream_port))
    try:
        addr = f"127.0.0.1:{listen}"
        # One ordinary request first, so the flood is what is measured.
        s = connect(addr)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t.example\r\nConnection: close\r\n\r\n")
        s.settimeout(5)
        while s.recv(4096):
            pass
        s.close()
        time.sleep(0.5)
        before = anon_kib(p)
        socks, how = flood(addr)
        peak = anon_kib(p)
        for s in socks:
            s.close()
        time.sleep(5)
        after = anon_kib(p)
        return {"peak": (peak - before) / 1024, "left": (after - before) / 1024, "how": how}
    finally:
        p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(run.ROOT, "bench", "FLOOD.md"))
    args = ap.parse_args()
    srv = ThreadingServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    results = {(f, k): [] for f, _ in FLOODS for k in ("envoy", "weft")}
    for r in range(args.runs):
        order = ["envoy", "weft"] if r % 2 == 0 else ["weft", "envoy"]
        for name, flood in FLOODS:
            for kind in order:
                m = measure(kind, port, flood)
                print(f"run {r + 1} {name} {kind}: +{m['peak']:.1f} MiB at peak, +{m['left']:.1f} MiB after; {m['how']}", flush=True)
                results[(name, kind)].append(m)
    srv.shutdown()
    envoy_version = os.popen(f"{run.envoy_path()} --version").read().strip().split("version:")[-1].strip().split("/")[1] if run.envoy_path() else "?"
    lines = [
        "# Hostile clients: memory, weft beside Envoy",
        "",
        f"`python3 bench/flood.py --runs {args.runs}` (release build; Envoy {envoy_version}; both `--concurrency 1`, the same",
        "bootstrap with Envoy's defaults). Anonymous RSS (RssAnon, without the binary's pages) grown at",
        "the flood's peak and left 5 s after the clients closed; medians of the runs.",
        "",
        "| flood | Envoy peak (MiB) | weft peak (MiB) | Envoy left | weft left | weft ÷ Envoy at peak | answered (Envoy / weft) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, _ in FLOODS:
        e, w = results[(name, "envoy")], results[(name, "weft")]
        ep, wp = statistics.median(m["peak"] for m in e), statistics.median(m["peak"] for m in w)
        el, wl = statistics.median(m["left"] for m in e), statistics.median(m["left"] for m in w)
        ratio = f"{wp / ep:.2f}" if ep > 0.05 else "—"
        lines.append(f"| {name} | {ep:.1f} | {wp:.1f} | {el:.1f} | {wl:.1f} | {ratio} | {e[0]['how']} / {w[0]['how']} |")
    lines += [
        "",
        "Floods: header flood — 50 connections, each one header of 390 KB that never ends (both",
        "answer 431 at the 60 KiB limit and close); slow clients — 200 connections each trickling an",
        "unfinished head (kept open: neither has a header timeout by default); slow readers — 20",
        f"connections each asking for a {BIG // (1024 * 1024)} MB response and never reading it (what a proxy buffers",
        "is bounded by its per-connection buffer limit, 1 MiB by default, and flow control).",
        "",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
