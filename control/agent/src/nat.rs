//! Services/NAT on the node side: the SNAT port range and its checks against the kernel's
//! ephemeral ports, the uplink services the XDP program owns, the flow table's sweeper.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use xdplane_pipeline::Snapshot;
use xdplane_pipeline::tables::services::FrontendKind;

/// The kernel's ephemeral source ports (in the agent's network namespace).
pub const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
/// Kubernetes' default NodePort range (`--service-node-port-range`).
pub const NODE_PORT_RANGE: (u16, u16) = (30000, 32767);

/// Parses `LO-HI` (inclusive, 1 ≤ LO ≤ HI ≤ 65535), the form of `--snat-ports`.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected LO-HI, e.g. 61000-65535"))?;
    let port = |p: &str| -> Result<u16, String> {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("{s:?}: {p:?} is not a port number (1-65535)"))
    };
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo == 0 {
        return Err(format!("{s:?}: port 0 cannot be used"));
    }
    if lo > hi {
        return Err(format!("{s:?}: the range is empty ({lo} > {hi})"));
    }
    Ok((lo, hi))
}

/// Parses the contents of `ip_local_port_range` ("32768\t60999\n").
pub fn parse_local_port_range(text: &str) -> Result<(u16, u16), String> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi => Ok((lo, hi)),
        _ => Err(format!("unexpected contents {text:?}")),
    }
}

/// Reads the kernel's ephemeral port range.
pub fn read_local_port_range(path: &Path) -> Result<(u16, u16), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_local_port_range(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether two inclusive ranges share a port.
pub fn overlaps(a: (u16, u16), b: (u16, u16)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

/// Problems of a SNAT range: overlap with the kernel's ephemeral ports (`kernel`, when
/// known) — replies to the node's own connections would be taken by the dataplane — or
/// with the NodePort range, and a range too small to give every worker a slice.
pub fn snat_range_warnings(
    snat: (u16, u16),
    kernel: Option<(u16, u16)>,
    workers: usize,
) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(k) = kernel
        && overlaps(snat, k)
    {
        w.push(format!(
            "--snat-ports {}-{} overlaps the kernel's ip_local_port_range {}-{}: replies to \
             the node's own connections on the shared ports are taken by the dataplane and \
             lost. Use a disjoint range, or narrow net.ipv4.ip_local_port_range",
            snat.0, snat.1, k.0, k.1
        ));
    }
    if overlaps(snat, NODE_PORT_RANGE) {
        w.push(format!(
            "--snat-ports {}-{} overlaps the NodePort range {}-{}",
            snat.0, snat.1, NODE_PORT_RANGE.0, NODE_PORT_RANGE.1
        ));
    }
    let size = usize::from(snat.1 - snat.0) + 1;
    if size < workers.max(1) * 64 {
        w.push(format!(
            "--snat-ports {}-{} gives each of {workers} workers fewer than 64 ports",
            snat.0, snat.1
        ));
    }
    w
}

/// (address, IP protocol, port) the XDP program redirects on the uplink.
pub type OwnedService = (Ipv4Addr, u8, u16);

/// The uplink services the dataplane must own for `snap`: VXLAN's UDP port on the node IP
/// (`vxlan`, in vxlan mode with an uplink), and every NodePort, externalIP and
/// LoadBalancer frontend (TCP, UDP, SCTP). ClusterIPs are only reached from pods.
pub fn wanted_owned_services(
    snap: &Snapshot,
    vxlan: Option<(Ipv4Addr, u16)>,
) -> BTreeSet<OwnedService> {
    use xdplane_pipeline::tables::services::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};
    let mut want = BTreeSet::new();
    if let Some((ip, port)) = vxlan {
        want.insert((ip, PROTO_UDP, port));
    }
    for (key, fe) in snap.services.sorted() {
        let external = matches!(
            fe.kind,
            FrontendKind::NodePort | FrontendKind::ExternalIp | FrontendKind::LoadBalancer
        );
        if external && matches!(key.proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
            want.insert((key.ip, key.proto, key.port));
        }
    }
    want
}

/// What to remove from and add to the map to get from `have` to `want`.
pub fn diff_owned(
    have: &BTreeSet<OwnedService>,
    want: &BTreeSet<OwnedService>,
) -> (Vec<OwnedService>, Vec<OwnedService>) {
    (
        have.difference(want).copied().collect(),
        want.difference(have).copied().collect(),
    )
}

/// A protocol's name in dumps.
pub fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        255 => "affinity".into(),
        o => o.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdplane_pipeline::tables::services::{
        Backend, BackendSet, Frontend, FrontendKey, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
    };

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_port_range("61000-65535"), Ok((61000, 65535)));
        assert_eq!(parse_port_range(" 100 - 100"), Ok((100, 100)));
        assert!(parse_port_range("61000").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("65535-61000").is_err());
        assert!(parse_port_range("61000-65536").is_err());
        assert!(parse_port_range("a-b").is_err());
        assert_eq!(parse_local_port_range("32768\t60999\n"), Ok((32768, 60999)));
        assert!(parse_local_port_range("32768").is_err());
        assert!(parse_local_port_range("60999 32768").is_err());
        assert!(parse_local_port_range("1 2 3").is_err());
    }

    #[test]
    fn overlap_checks() {
        assert!(overlaps((10, 20), (20, 30)));
        assert!(overlaps((10, 20), (0, 10)));
        assert!(overlaps((10, 20), (12, 13)));
        assert!(!overlaps((10, 20), (21, 30)));
        assert!(!overlaps((10, 20), (0, 9)));
        // The defaults are disjoint from Linux's default range and from NodePorts.
        assert!(snat_range_warnings((61000, 65535), Some((32768, 60999)), 2).is_empty());
        let w = snat_range_warnings((60000, 65535), Some((32768, 60999)), 1);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("ip_local_port_range 32768-60999"), "{w:?}");
        let w = snat_range_warnings((32000, 32100), None, 1);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("NodePort"), "{w:?}");
        let w = snat_range_warnings((61000, 61100), None, 2);
        assert!(w[0].contains("fewer than 64"), "{w:?}");
    }

    #[test]
    fn local_port_range_of_this_namespace_reads() {
        let (lo, hi) = read_local_port_range(Path::new(LOCAL_PORT_RANGE)).unwrap();
        assert!(lo <= hi);
        assert!(read_local_port_range(Path::new("/nonexistent/xdplane")).is_err());
    }

    fn snap_with(frontends: &[(FrontendKind, [u8; 4], u16, u8)]) -> Snapshot {
        let mut snap = Snapshot::default();
        let set = snap.services.add_set(
            BackendSet::new(vec![Backend {
                ip: Ipv4Addr::new(10, 244, 1, 2),
                port: 8080,
                local: true,
            }])
            .unwrap(),
        );
        for (i, (kind, ip, port, proto)) in frontends.iter().enumerate() {
            snap.services
                .add_frontend(
                    FrontendKey {
                        ip: Ipv4Addr::from(*ip),
                        port: *port,
                        proto: *proto,
                    },
                    Frontend {
                        name: format!("default/s{i}:p"),
                        kind: *kind,
                        set,
                        masquerade: true,
                        affinity_timeout_s: 0,
                        service_port: i as u32,
                    },
                )
                .unwrap();
        }
        snap
    }

    #[test]
    fn owned_services_follow_external_frontends() {
        let node = Ipv4Addr::new(192, 168, 50, 11);
        let snap = snap_with(&[
            (FrontendKind::ClusterIp, [10, 96, 0, 10], 80, PROTO_TCP),
            (FrontendKind::NodePort, node.octets(), 30080, PROTO_TCP),
            (FrontendKind::NodePort, node.octets(), 30053, PROTO_UDP),
            (FrontendKind::NodePort, node.octets(), 30090, PROTO_SCTP),
            (FrontendKind::ExternalIp, [192, 168, 50, 200], 80, PROTO_TCP),
            (
                FrontendKind::LoadBalancer,
                [192, 168, 50, 201],
                443,
                PROTO_TCP,
            ),
        ]);
        let want = wanted_owned_services(&snap, Some((node, 8472)));
        let expect: BTreeSet<OwnedService> = [
            (node, PROTO_UDP, 8472),
            (node, PROTO_TCP, 30080),
            (node, PROTO_UDP, 30053),
            (node, PROTO_SCTP, 30090),
            (Ipv4Addr::new(192, 168, 50, 200), PROTO_TCP, 80),
            (Ipv4Addr::new(192, 168, 50, 201), PROTO_TCP, 443),
        ]
        .into();
        assert_eq!(want, expect);
        assert_eq!(wanted_owned_services(&snap, None).len(), 5);

        // Diffing: unchanged entries are not touched, gone ones removed, new ones added.
        let next = snap_with(&[
            (FrontendKind::NodePort, node.octets(), 30080, PROTO_TCP),
            (FrontendKind::NodePort, node.octets(), 30081, PROTO_TCP),
        ]);
        let want2 = wanted_owned_services(&next, Some((node, 8472)));
        let (remove, add) = diff_owned(&want, &want2);
        assert_eq!(add, vec![(node, PROTO_TCP, 30081)]);
        assert_eq!(
            remove.into_iter().collect::<BTreeSet<_>>(),
            [
                (node, PROTO_UDP, 30053),
                (node, PROTO_SCTP, 30090),
                (Ipv4Addr::new(192, 168, 50, 200), PROTO_TCP, 80),
                (Ipv4Addr::new(192, 168, 50, 201), PROTO_TCP, 443),
            ]
            .into()
        );
        let (r, a) = diff_owned(&want2, &want2);
        assert!(r.is_empty() && a.is_empty());
    }
}
