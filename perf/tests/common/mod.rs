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

/// No namespace (`<prefix>-…`), state directory or child process of ours is left.
pub fn assert_clean(prefix: &str) {
    assert_no_namespaces(&format!("{prefix}-"));
    assert_no_state_dir(prefix);
    let me = std::process::id().to_string();
    let mut children = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        if rest.split_whitespace().nth(1) == Some(me.as_str()) {
            children.push(stat);
        }
    }
    assert!(children.is_empty(), "child processes left: {children:?}");
}
