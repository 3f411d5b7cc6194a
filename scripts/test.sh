#!/usr/bin/env bash
# The whole test suite: install what it needs, then lint and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
# The Envoy descriptors weft compiles in are generated, not built: check they are current.
scripts/descriptors.sh --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The mesh tests run helper binaries of other crates (weft-test-app); nextest builds only
# test targets and their own crate's binaries.
cargo build --workspace --bins --quiet
cargo nextest run --workspace --no-fail-fast --profile ci
