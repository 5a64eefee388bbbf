//! Facts about the node's own links, read from the kernel without extra privileges.

use anyhow::{Context, Result, anyhow};
use std::net::Ipv4Addr;

/// The first IPv4 address of `ifname` and its prefix length.
pub fn ipv4_of(ifname: &str) -> Result<(Ipv4Addr, u8)> {
    let addrs = nix::ifaddrs::getifaddrs().context("listing interface addresses")?;
    for a in addrs {
        if a.interface_name != ifname {
            continue;
        }
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        let (Some(sin), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else {
            continue;
        };
        return Ok((sin.ip(), u32::from(m.ip()).count_ones() as u8));
    }
    Err(anyhow!(
        "{ifname} has no IPv4 address: the uplink needs the node's address"
    ))
}

pub fn mtu_of(ifname: &str) -> Result<u32> {
    let p = format!("/sys/class/net/{ifname}/mtu");
    let s = std::fs::read_to_string(&p).with_context(|| format!("reading {p}"))?;
    s.trim()
        .parse()
        .with_context(|| format!("{p}: {s:?} is not an MTU"))
}

/// The kernel's IPv4 default route through `ifname`, if any (`/proc/net/route`).
pub fn default_gateway(ifname: &str) -> Result<Option<Ipv4Addr>> {
    let text = std::fs::read_to_string("/proc/net/route").context("reading /proc/net/route")?;
    Ok(parse_default_gateway(&text, ifname))
}

fn parse_default_gateway(text: &str, ifname: &str) -> Option<Ipv4Addr> {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0] != ifname || f[1] != "00000000" || f[7] != "00000000" {
            continue;
        }
        // Little-endian hex of the address in network order.
        let g = u32::from_str_radix(f[2], 16).ok()?;
        if g != 0 {
            return Some(Ipv4Addr::from(g.swap_bytes()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_route_from_proc() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0132A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth0\t0032A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            super::parse_default_gateway(t, "eth0"),
            Some("192.168.50.1".parse().unwrap())
        );
        assert_eq!(super::parse_default_gateway(t, "eth1"), None);
    }
}
