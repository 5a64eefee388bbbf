//! Network namespaces for scenarios and tests: created with `ip netns add`, removed on drop,
//! plus helpers to run commands and closures inside one.
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A named network namespace (`/run/netns/NAME`) that this process created; deleted on drop
/// together with every interface in it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace; fails when it already exists (a stale run: remove it with
    /// `ip netns del NAME`). Brings up `lo` and turns IPv6 off so that no router
    /// solicitation or DAD frame disturbs a measurement.
    pub fn create(name: &str) -> Result<Netns> {
        if name.is_empty() || name.len() > 200 || name.contains('/') {
            bail!("bad namespace name {name:?}");
        }
        if PathBuf::from("/run/netns").join(name).exists() {
            bail!(
                "network namespace {name} already exists (left by an earlier run? `ip netns del {name}`)"
            );
        }
        run("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, for `setns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS…`; returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// `ip netns exec NAME PROG ARGS…` (with /sys of the namespace); returns stdout.
    pub fn exec(&self, prog: &str, args: &[&str]) -> Result<String> {
        let mut a = vec!["netns", "exec", self.name.as_str(), prog];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Writes a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Reads a file as the namespace sees it (e.g. under /sys/class/net or /proc/sys/net).
    pub fn read_file(&self, path: &str) -> Result<String> {
        Ok(self.exec("cat", &[path])?.trim().to_string())
    }

    /// Writes a file as the namespace sees it.
    pub fn write_file(&self, path: &str, value: &str) -> Result<()> {
        self.exec("sh", &["-c", &format!("echo {value} > {path}")])
            .map(|_| ())
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> Result<[u8; 6]> {
        let s = self.read_file(&format!("/sys/class/net/{dev}/address"))?;
        parse_mac(&s).with_context(|| format!("MAC of {dev} in {}", self.name))
    }

    /// The interface index of `dev`.
    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        let s = self.read_file(&format!("/sys/class/net/{dev}/ifindex"))?;
        s.parse()
            .with_context(|| format!("ifindex of {dev} in {}: {s:?}", self.name))
    }

    /// Runs `f` on a new thread that has joined this namespace, and returns its result.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        in_netns(Some(&self.path()), f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("warning: removing network namespace {}: {e:#}", self.name);
        }
    }
}

/// Runs `f` on a new thread that has joined the namespace at `path` (`None`: the caller's
/// namespace), and returns its result. Only that thread changes namespace.
pub fn in_netns<T: Send>(path: Option<&Path>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(p) = path {
                crate::sys::setns_net(p)?;
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    })
}

/// Runs a command and returns its stdout; an error carries the command line and stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {prog}"))?;
    if !out.status.success() {
        bail!(
            "`{prog} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        let p = parts.next().with_context(|| format!("bad MAC {s:?}"))?;
        *b = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s:?}"))?;
    }
    if parts.next().is_some() {
        bail!("bad MAC {s:?}");
    }
    Ok(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Creates a veth pair: `a` in namespace `ns_a`, `b` in `ns_b`, one rx and one tx queue
/// each (so that one NAPI instance, and one AF_XDP queue, serve each side), both up.
pub fn veth_pair(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str) -> Result<()> {
    ns_a.ip(&[
        "link",
        "add",
        "name",
        a,
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
        "type",
        "veth",
        "peer",
        "name",
        b,
        "netns",
        ns_b.name(),
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
    ])?;
    ns_a.ip(&["link", "set", a, "up"])?;
    ns_b.ip(&["link", "set", b, "up"])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m = parse_mac("02:1a:FF:00:09:7e\n").unwrap();
        assert_eq!(m, [0x02, 0x1a, 0xff, 0x00, 0x09, 0x7e]);
        assert_eq!(fmt_mac(&m), "02:1a:ff:00:09:7e");
        assert!(parse_mac("02:1a:ff:00:09").is_err());
        assert!(parse_mac("02:1a:ff:00:09:7e:01").is_err());
        assert!(parse_mac("02:1a:ff:00:09:zz").is_err());
    }
}
