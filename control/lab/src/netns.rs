//! Network namespaces and links, through iproute2's `ip`.
//!
//! Every link is created inside a lab namespace (`ip -n NS link add … peer … netns OTHER`):
//! the root namespace only ever gets the `/run/netns/<name>` entries.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::{Command, Output};

/// The `ip` binary (`/usr/sbin/ip` or `/sbin/ip` or `/usr/bin/ip`, else from `PATH`).
pub fn ip_bin() -> PathBuf {
    for p in ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"] {
        let p = PathBuf::from(p);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("ip")
}

fn describe(args: &[&str]) -> String {
    format!("ip {}", args.join(" "))
}

fn output(args: &[&str]) -> Result<Output> {
    Command::new(ip_bin())
        .args(args)
        .output()
        .with_context(|| format!("running `{}`", describe(args)))
}

/// Runs `ip ARGS…`; an error carries the command and ip's stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = output(args)?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            describe(args),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `ip -n NS ARGS…`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// `ip -n NS ARGS…` and its stdout.
pub fn ip_in_output(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    let out = output(&all)?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            describe(&all),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `bridge` binary of iproute2.
pub fn bridge_bin() -> PathBuf {
    for p in [
        "/usr/sbin/bridge",
        "/sbin/bridge",
        "/usr/bin/bridge",
        "/bin/bridge",
    ] {
        let p = PathBuf::from(p);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("bridge")
}

fn checked(prog: &str, args: &[&str], out: std::io::Result<Output>) -> Result<String> {
    let shown = format!("{prog} {}", args.join(" "));
    let out = out.with_context(|| format!("running `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `bridge -n NS ARGS…` and its stdout.
pub fn bridge_in_output(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    checked(
        "bridge",
        &all,
        Command::new(bridge_bin()).args(&all).output(),
    )
}

/// `bridge -n NS ARGS…`.
pub fn bridge_in(ns: &str, args: &[&str]) -> Result<()> {
    bridge_in_output(ns, args).map(drop)
}

/// Runs `PROG ARGS…` inside `ns` (`ip netns exec`); its stdout, or an error with its stderr.
pub fn exec_in(ns: &str, prog: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, prog];
    all.extend_from_slice(args);
    checked(
        &format!("ip netns exec {ns} {prog}"),
        args,
        Command::new(ip_bin()).args(&all).output(),
    )
}

/// The names of all network namespaces (`ip netns list`).
pub fn list() -> Result<Vec<String>> {
    let out = output(&["netns", "list"])?;
    if !out.status.success() {
        bail!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_list(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `ip netns list` output: `name` or `name (id: N)` per line.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The namespaces whose name starts with `prefix`.
pub fn list_prefixed(prefix: &str) -> Result<Vec<String>> {
    Ok(list()?
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect())
}

pub fn exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Creates a namespace and brings its `lo` up.
pub fn add(name: &str) -> Result<()> {
    ip(&["netns", "add", name])?;
    ip_in(name, &["link", "set", "lo", "up"])
}

/// Deletes a namespace (its links go with it).
pub fn del(name: &str) -> Result<()> {
    ip(&["netns", "del", name])
}

/// The path a CNI runtime passes as `CNI_NETNS`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// The MAC address of `dev` inside `ns`.
pub fn link_mac(ns: &str, dev: &str) -> Result<String> {
    let text = ip_in_output(ns, &["-o", "link", "show", "dev", dev])?;
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "link/ether"
            && let Some(mac) = words.next()
        {
            return Ok(mac.to_string());
        }
    }
    bail!("no MAC address on {dev} in {ns}")
}

/// The first IPv4 address (`a.b.c.d/len`) of `dev` inside `ns`, if any.
pub fn link_ipv4(ns: &str, dev: &str) -> Result<Option<String>> {
    let text = ip_in_output(ns, &["-o", "-4", "addr", "show", "dev", dev])?;
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "inet" {
            return Ok(words.next().map(str::to_string));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_netns_list() {
        let text = "xl-server1 (id: 2)\nxl-fabric (id: 1)\nplain\n\n";
        assert_eq!(parse_list(text), vec!["xl-server1", "xl-fabric", "plain"]);
    }
}
