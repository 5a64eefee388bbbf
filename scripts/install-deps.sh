#!/usr/bin/env bash
# Installs what xdplane needs to build, test and run its lab on Debian 12 (as root).
set -euo pipefail
PKGS=(clang llvm libbpf-dev libelf-dev zlib1g-dev m4 pkg-config make gcc
      iproute2 iputils-ping tcpdump bpftool ethtool util-linux procps
      containernetworking-plugins iperf3 iptables curl ca-certificates)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Rust 1.95 or newer (the workspace's rust-version).
need_rust=1
if command -v cargo >/dev/null 2>&1; then
    v=$(rustc --version | awk '{print $2}')
    if [ "$(printf '%s\n1.95.0\n' "$v" | sort -V | head -1)" = "1.95.0" ]; then need_rust=0; fi
fi
if ((need_rust)); then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
    if ! command -v rustup >/dev/null 2>&1; then
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        rustup toolchain install 1.95.0 --profile minimal && rustup default 1.95.0
    fi
fi
cd "$(dirname "$0")/.."
cargo fetch --locked -q
