#!/usr/bin/env bash
# Installs what is needed and runs the lab demo (root on Debian 12).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked --release --bins -q
exec ./target/release/xdplane lab demo "$@"
