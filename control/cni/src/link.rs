//! Links, addresses and routes, through iproute2's `ip` (and util-linux `nsenter` to run it
//! inside a network namespace given by path). Every command runs with `LC_ALL=C` so that
//! "does not exist" can be told apart from other failures.

use crate::error::CniError;
use crate::net::Ipv4Net;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where binaries are looked for after `PATH` (runtimes often call plugins with a bare env).
const FALLBACK_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The host-side veth name of a container: `xv` + the first 11 hex digits of the 64-bit
/// FNV-1a hash of the container ID (13 bytes, under IFNAMSIZ). Deterministic, so DEL finds
/// the interface ADD created without any stored state.
pub fn host_ifname(container_id: &str) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let h = container_id
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    format!("xv{:016x}", h)[..13].to_string()
}

/// Finds `name` on `PATH`, then in the usual system directories.
pub fn find_binary(name: &str) -> PathBuf {
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A failed `ip` command.
#[derive(Debug, Clone)]
pub struct IpError {
    pub command: String,
    pub stderr: String,
}

impl IpError {
    /// The object named by the command does not exist (link, address, route).
    pub fn is_not_found(&self) -> bool {
        let s = &self.stderr;
        s.contains("does not exist")
            || s.contains("Cannot find device")
            || s.contains("No such device")
            || s.contains("No such process")
    }

    pub fn into_cni(self, msg: impl Into<String>) -> CniError {
        CniError::io(msg).with_details(format!("`{}`: {}", self.command, self.stderr.trim()))
    }
}

/// Runs `ip ARGS` in the current network namespace (`ns == None`) or inside the network
/// namespace at `ns` (through `nsenter --net=NS`). Returns stdout.
pub fn ip(ns: Option<&Path>, args: &[&str]) -> Result<String, IpError> {
    tool(ns, "ip", args)
}

/// Runs the tool `name ARGS` (found like `ip`) in the current or the given namespace.
fn tool(ns: Option<&Path>, name: &str, args: &[&str]) -> Result<String, IpError> {
    let ip_bin = find_binary(name);
    let mut cmd = match ns {
        None => Command::new(&ip_bin),
        Some(path) => {
            let mut c = Command::new(find_binary("nsenter"));
            c.arg(format!("--net={}", path.display()))
                .arg("--")
                .arg(&ip_bin);
            c
        }
    };
    cmd.args(args).env("LC_ALL", "C");
    let shown = {
        let mut s = String::new();
        if let Some(p) = ns {
            s.push_str(&format!("nsenter --net={} ", p.display()));
        }
        s.push_str(name);
        s.push(' ');
        s.push_str(&args.join(" "));
        s
    };
    let out = cmd.output().map_err(|e| IpError {
        command: shown.clone(),
        stderr: format!("cannot run: {e}"),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(IpError {
            command: shown,
            stderr: format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        })
    }
}

fn json_of(out: &str, command: &str) -> Result<Value, IpError> {
    serde_json::from_str(out).map_err(|e| IpError {
        command: command.to_string(),
        stderr: format!("unparsable JSON output: {e}"),
    })
}

/// What `ip -j link show` says about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    /// The administrative state (the `UP` flag).
    pub up: bool,
}

/// The link `name`, or `None` when it does not exist.
pub fn link(ns: Option<&Path>, name: &str) -> Result<Option<LinkInfo>, IpError> {
    let out = match ip(ns, &["-j", "link", "show", "dev", name]) {
        Ok(o) => o,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let v = json_of(&out, "ip -j link show")?;
    let Some(l) = v.as_array().and_then(|a| a.first()) else {
        return Ok(None);
    };
    let flags = l["flags"].as_array().cloned().unwrap_or_default();
    Ok(Some(LinkInfo {
        name: l["ifname"].as_str().unwrap_or(name).to_string(),
        mac: l["address"].as_str().unwrap_or_default().to_string(),
        mtu: l["mtu"]
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(0),
        up: flags.iter().any(|f| f == "UP"),
    }))
}

/// Creates the veth pair: `host` in the current namespace and `peer` directly inside the
/// namespace at `netns`, both with one tx and one rx queue (an AF_XDP socket per queue is
/// then enough) and the given MTU. Both ends stay down.
pub fn create_veth(host: &str, peer: &str, netns: &Path, mtu: u32) -> Result<(), IpError> {
    let mtu = mtu.to_string();
    let ns = netns.display().to_string();
    ip(
        None,
        &[
            "link",
            "add",
            host,
            "mtu",
            &mtu,
            "numtxqueues",
            "1",
            "numrxqueues",
            "1",
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "mtu",
            &mtu,
            "numtxqueues",
            "1",
            "numrxqueues",
            "1",
            "netns",
            &ns,
        ],
    )
    .map(drop)
}

/// Deletes a link; `Ok(false)` when it did not exist.
pub fn delete_link(ns: Option<&Path>, name: &str) -> Result<bool, IpError> {
    match ip(ns, &["link", "del", "dev", name]) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn set_up(ns: Option<&Path>, name: &str) -> Result<(), IpError> {
    ip(ns, &["link", "set", "dev", name, "up"]).map(drop)
}

/// Sets `net.ipv6.conf.NAME.disable_ipv6=1` in the current namespace. A kernel without
/// IPv6 has nothing to disable.
pub fn disable_ipv6(name: &str) -> Result<(), CniError> {
    if !Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    let p = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    std::fs::write(&p, "1").map_err(|e| CniError::io(format!("cannot write {p}: {e}")))
}

pub fn add_addr(ns: Option<&Path>, dev: &str, addr: Ipv4Net) -> Result<(), IpError> {
    ip(ns, &["-4", "addr", "add", &addr.to_string(), "dev", dev]).map(drop)
}

/// The IPv4 addresses of `dev`.
pub fn addrs(ns: Option<&Path>, dev: &str) -> Result<Vec<Ipv4Net>, IpError> {
    let out = ip(ns, &["-j", "-4", "addr", "show", "dev", dev])?;
    let v = json_of(&out, "ip -j -4 addr show")?;
    let mut res = Vec::new();
    for l in v.as_array().into_iter().flatten() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            let local = a["local"].as_str().and_then(|s| s.parse::<Ipv4Addr>().ok());
            let prefix = a["prefixlen"].as_u64().and_then(|p| u8::try_from(p).ok());
            if let (Some(local), Some(prefix)) = (local, prefix)
                && let Some(n) = Ipv4Net::new(local, prefix)
            {
                res.push(n);
            }
        }
    }
    Ok(res)
}

/// Adds a route `dst via gw dev DEV`; `onlink` when the gateway is not inside any prefix
/// of the interface (e.g. a /32 address).
pub fn add_route(
    ns: Option<&Path>,
    dst: Ipv4Net,
    gw: Ipv4Addr,
    dev: &str,
    onlink: bool,
) -> Result<(), IpError> {
    let dst = if dst.is_default() {
        "default".to_string()
    } else {
        dst.trunc().to_string()
    };
    let gw = gw.to_string();
    let mut args = vec!["-4", "route", "add", &dst, "via", &gw, "dev", dev];
    if onlink {
        args.push("onlink");
    }
    ip(ns, &args).map(drop)
}

/// The IPv4 default routes of the main table, as (gateway, device).
pub fn default_routes(ns: Option<&Path>) -> Result<Vec<(Option<Ipv4Addr>, String)>, IpError> {
    let out = ip(ns, &["-j", "-4", "route", "show", "default"])?;
    let v = json_of(&out, "ip -j -4 route show default")?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["gateway"].as_str().and_then(|g| g.parse().ok()),
                r["dev"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// Turns off transmit checksum offload (and with it TSO) on a pod's interface.
///
/// A veth leaves the L4 checksum of locally sent TCP/UDP partial (`CHECKSUM_PARTIAL`) and
/// expects the receiver to trust that metadata; a frame that leaves through XDP and AF_XDP
/// loses it, so the checksum must be complete when the pod sends it. Userspace dataplanes
/// on veth (Calico/VPP, OVS-AF_XDP) do the same.
pub fn disable_tx_offload(ns: Option<&Path>, name: &str) -> Result<(), IpError> {
    tool(ns, "ethtool", &["-K", name, "tx", "off"]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_short_stable_and_distinct() {
        let a = host_ifname("0123456789abcdef0123456789abcdef");
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("xv"));
        assert!(a[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, host_ifname("0123456789abcdef0123456789abcdef"));
        assert_ne!(a, host_ifname("0123456789abcdef0123456789abcdee"));
        // FNV-1a 64 of "" is the offset basis: the name is fixed forever.
        assert_eq!(host_ifname(""), "xvcbf29ce4842");
        assert_eq!(host_ifname("a"), "xvaf63dc4c860");
    }

    #[test]
    fn not_found_detection() {
        let e = IpError {
            command: "ip link show dev x".into(),
            stderr: "Device \"x\" does not exist.".into(),
        };
        assert!(e.is_not_found());
        let e = IpError {
            command: "ip link add".into(),
            stderr: "RTNETLINK answers: File exists".into(),
        };
        assert!(!e.is_not_found());
        assert_eq!(e.into_cni("veth").code, 5);
    }
}
