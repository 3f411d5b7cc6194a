#!/usr/bin/env bash
# Writes crates/xds/descriptors/envoy.binpb, the trimmed Envoy descriptor set weft compiles in,
# from the full set the locked `envoy-types` package ships. `--check` only verifies that the
# committed file is what this would write (CI runs it). Nothing here runs at build time.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=()
[ "${1:-}" = "--check" ] && mode=(--check)
host=$(rustc -vV | sed -n 's/^host: //p')
# Only this platform's packages: `cargo metadata` without --filter-platform wants every
# platform's crates, which a Linux build never downloads.
cargo fetch --locked --target "$host" -q
dir=$(cargo metadata --locked --offline --format-version 1 --filter-platform "$host" \
  | python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="envoy-types"))')
cargo run --locked -q -p weft-xds --example descriptors -- "${mode[@]}" "$dir/src/generated/types.bin" crates/xds/descriptors/envoy.binpb
