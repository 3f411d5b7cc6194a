#!/usr/bin/env bash
# A long libFuzzer run of one fuzz target: fuzz/run.sh <target> [seconds] [libFuzzer flags…]
# Needs nightly Rust and cargo-fuzz (`cargo install cargo-fuzz`). Reads fuzz/corpus/<target>
# and never writes it: what the run finds goes to a scratch corpus under the target dir, a
# crash to fuzz/libfuzzer/artifacts/<target>/. One fuzzer, one job: meant to share a machine.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/run.sh <target> [seconds] [libFuzzer flags…]}
seconds=${2:-600}
shift $(($# < 2 ? $# : 2))
target_dir=${CARGO_TARGET_DIR:-target}/libfuzzer
scratch=$target_dir/corpus/$target
mkdir -p "$scratch"
exec cargo +nightly fuzz run --fuzz-dir fuzz/libfuzzer --target-dir "$target_dir" "$target" "$scratch" "fuzz/corpus/$target" -- \
  -max_total_time="$seconds" -timeout=30 -print_final_stats=1 "$@"
