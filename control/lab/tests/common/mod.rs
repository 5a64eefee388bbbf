//! What the lab's integration tests share: finding the real agent and CNI plugin.
#![allow(dead_code)]

use std::path::PathBuf;
use xdplane_lab::lab;

/// `target/<profile>` of this test binary (`target/<profile>/deps/<test>-…`), or
/// `XDPLANE_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDPLANE_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The bin dir, after checking that the agent and the plugin are there.
pub fn require_binaries() -> PathBuf {
    let dir = bin_dir();
    if let Err(e) = lab::check_binaries(&dir) {
        panic!(
            "these tests run the real agent and CNI plugin: {e:#}\n\
             build them first into the same target directory: \
             `cargo build -p xdplane-agent -p xdplane-cni` (with the same CARGO_TARGET_DIR), \
             or set XDPLANE_BIN_DIR"
        );
    }
    dir
}
