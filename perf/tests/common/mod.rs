//! Helpers shared by the root integration tests of the scenarios.
#![allow(dead_code)] // each test crate uses its own subset

/// Fails the test unless it runs as root, with `msg`.
pub fn need_root(msg: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")),
        "{msg}"
    );
}

/// No network namespace whose name starts with `start` is left.
pub fn assert_no_namespaces(start: &str) {
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with(start)),
        "namespaces left behind:\n{left}"
    );
}

/// The scenario's state directory `/run/xdplane-perf/<prefix>` is gone.
pub fn assert_no_state_dir(prefix: &str) {
    assert!(
        !std::path::Path::new("/run/xdplane-perf")
            .join(prefix)
            .exists(),
        "state directory left behind"
    );
}
