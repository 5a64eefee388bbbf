#!/usr/bin/env bash
# Runs every test of xdplane (unit, golden, and the root-only integration tests that build
# network namespaces). Needs root for the namespace tests. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
# The lab and CNI tests run the real binaries: build them first.
cargo build --locked --bins -q
cargo test --locked --workspace --no-fail-fast -- --test-threads=2
