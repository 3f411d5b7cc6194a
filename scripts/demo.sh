#!/usr/bin/env bash
# `weft demo` on a fresh Debian/Ubuntu machine: installs the system tools the one-machine mesh
# needs (iproute2, iptables, util-linux, procps), builds weft, and runs the demo as root (network
# namespaces and capture need it). Extra arguments go to `weft demo` (e.g. --duration 60s).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
{ command -v setpriv && command -v nsenter && command -v setsid; } >/dev/null 2>&1 || need+=(util-linux)
# `kill` is also a shell builtin; `weft down` runs the program.
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  echo "demo: installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p weft
exec $SUDO "${CARGO_TARGET_DIR:-target}/release/weft" demo "$@"
