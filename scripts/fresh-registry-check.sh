#!/usr/bin/env bash
# Proves the build needs nothing a warm machine happens to hold: with an empty, temporary
# CARGO_HOME, fetch only this platform's crates (what a first `cargo build` downloads), then
# build offline. The crates of this workspace that have a build script (and weft-xds, which
# compiles in the Envoy descriptors) are cleaned first, so their build scripts really run
# against that registry; everything else comes from a target directory kept for this check,
# so a warm run costs well under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
home=$(mktemp -d /tmp/weft-fresh-cargo-home.XXXXXX)
trap 'rm -rf "$home"' EXIT
export CARGO_HOME="$home"
export CARGO_TARGET_DIR="${WEFT_FRESH_TARGET_DIR:-/var/tmp/weft-fresh-target}"
host=$(rustc -vV | sed -n 's/^host: //p')
start=$(date +%s)
cargo fetch --locked --target "$host" -q
names=(weft-xds)
for build in crates/*/build.rs samples/build.rs; do
  [ -f "$build" ] || continue
  names+=("$(sed -n 's/^name = "\(.*\)"/\1/p' "$(dirname "$build")/Cargo.toml" | head -1)")
done
packages=()
for n in "${names[@]}"; do packages+=(-p "$n"); done
cargo clean --offline -q "${packages[@]}" 2>/dev/null || true
# `check` runs build scripts and compiles every dependency's metadata, without codegen.
cargo check --offline --locked -q "${packages[@]}"
echo "fresh-registry check: ${names[*]} checked from an empty CARGO_HOME in $(( $(date +%s) - start ))s"
