//! One generation of every table the stages read.
//!
//! A `Snapshot` is built by the control side (`xdplane-control`'s compiler), frozen, and
//! published as one `Arc<Snapshot>`; workers load it between batches, never mid-batch.

use crate::batch::PortId;
use serde::Serialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// The node's own addressing.
#[derive(Clone, Debug, Serialize)]
pub struct NodeTables {
    /// This node's underlay address (on the uplink), when it has one.
    pub node_ip: Option<Ipv4Addr>,
    /// The uplink port, when attached.
    pub uplink: Option<PortId>,
    /// The uplink's subnet (for direct next hops).
    pub uplink_net: Ipv4Addr,
    pub uplink_prefix: u8,
    pub uplink_mtu: u32,
    /// Our VTEP MAC (flannel's VtepMAC): the inner source MAC of frames we encapsulate.
    pub vtep_mac: [u8; 6],
    /// VXLAN UDP destination port (8472, the flannel/Linux default).
    pub vxlan_port: u16,
    /// VXLAN network identifier (1, flannel's default).
    pub vni: u32,
    pub name: String,
    /// The node's pod subnet (`spec.podCIDR`): network address and prefix length.
    pub pod_net: Ipv4Addr,
    pub pod_prefix: u8,
    /// The pods' gateway (first address of the pod CIDR, like flannel's cni0).
    pub gateway: Ipv4Addr,
    /// MTU given to pods.
    pub pod_mtu: u32,
    /// The cluster's pod network (flannel's `Network`): network address and prefix length.
    /// Prefix 0 with address 0.0.0.0 means unknown, which turns masquerade off.
    pub cluster_net: Ipv4Addr,
    pub cluster_prefix: u8,
    /// Masquerade pod traffic that leaves the cluster network (flannel's `--ip-masq`):
    /// source → the node IP, source port from [`NodeTables::snat_ports`].
    pub masquerade: bool,
    /// Source ports (inclusive) the dataplane may use when it translates a source to the
    /// node IP or the pod gateway; split between workers. Must not overlap the kernel's
    /// `ip_local_port_range` or the NodePort range (replies to these ports on the node IP
    /// are taken by the XDP program).
    pub snat_ports: (u16, u16),
}

impl Default for NodeTables {
    fn default() -> Self {
        NodeTables {
            node_ip: None,
            uplink: None,
            uplink_net: Ipv4Addr::UNSPECIFIED,
            uplink_prefix: 0,
            uplink_mtu: 1500,
            vtep_mac: [0; 6],
            vxlan_port: 8472,
            vni: 1,
            name: String::new(),
            pod_net: Ipv4Addr::UNSPECIFIED,
            pod_prefix: 32,
            gateway: Ipv4Addr::UNSPECIFIED,
            pod_mtu: 1500,
            cluster_net: Ipv4Addr::UNSPECIFIED,
            cluster_prefix: 0,
            masquerade: false,
            snat_ports: DEFAULT_SNAT_PORTS,
        }
    }
}

/// The default [`NodeTables::snat_ports`]: above Linux's default `ip_local_port_range`
/// (32768–60999) and the NodePort range (30000–32767).
pub const DEFAULT_SNAT_PORTS: (u16, u16) = (61000, 65535);

impl NodeTables {
    /// Whether `ip` lies in the uplink's subnet (a direct next hop).
    #[inline]
    pub fn on_uplink_subnet(&self, ip: Ipv4Addr) -> bool {
        self.uplink_prefix > 0
            && crate::tables::reference::mask(u32::from(ip), self.uplink_prefix)
                == crate::tables::reference::mask(u32::from(self.uplink_net), self.uplink_prefix)
    }

    /// Whether `ip` lies in the cluster's pod network (false when it is unknown).
    #[inline]
    pub fn in_cluster_cidr(&self, ip: Ipv4Addr) -> bool {
        self.cluster_prefix > 0
            && crate::tables::reference::mask(u32::from(ip), self.cluster_prefix)
                == crate::tables::reference::mask(u32::from(self.cluster_net), self.cluster_prefix)
    }

    /// Whether `ip` lies in the node's pod CIDR.
    #[inline]
    pub fn in_pod_cidr(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.pod_prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.pod_prefix))
        };
        u32::from(ip) & mask == u32::from(self.pod_net) & mask
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A pod's host-side veth.
    Pod,
    /// The node's link to the fabric.
    Uplink,
}

/// A device the dataplane is attached to.
#[derive(Clone, Debug, Serialize)]
pub struct PortConfig {
    pub id: PortId,
    pub name: String,
    pub ifindex: u32,
    /// The device's own MAC: the source MAC of frames sent on it, and the gateway MAC that
    /// ARP answers give on it.
    pub mac: [u8; 6],
    pub kind: PortKind,
}

/// A pod on this node, reachable on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LocalEndpoint {
    pub port: PortId,
    /// The pod interface's MAC (destination MAC of frames to it).
    pub mac: [u8; 6],
}

/// Pod IPv4 → endpoint. Built off the fast path, read-only on it.
#[derive(Clone, Debug, Default)]
pub struct LocalEndpoints {
    map: HashMap<u32, LocalEndpoint, FxBuild>,
}

impl LocalEndpoints {
    pub fn insert(&mut self, ip: Ipv4Addr, ep: LocalEndpoint) {
        self.map.insert(u32::from(ip), ep);
    }
    #[inline]
    pub fn get(&self, ip: Ipv4Addr) -> Option<&LocalEndpoint> {
        self.map.get(&u32::from(ip))
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Entries sorted by address (for dumps and golden tests).
    pub fn sorted(&self) -> Vec<(Ipv4Addr, LocalEndpoint)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .map(|(k, v)| (Ipv4Addr::from(*k), *v))
            .collect();
        v.sort_by_key(|(ip, _)| *ip);
        v
    }
}

impl Serialize for LocalEndpoints {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let sorted = self.sorted();
        let mut m = s.serialize_map(Some(sorted.len()))?;
        for (ip, ep) in sorted {
            m.serialize_entry(&ip.to_string(), &ep)?;
        }
        m.end()
    }
}

/// A multiplicative hash for u32 keys (Fx-style): one multiply, good spread for addresses.
#[derive(Clone, Copy, Default, Debug)]
pub struct FxBuild;

#[derive(Default)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::BuildHasher for FxBuild {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

/// Index into [`Snapshot::routes`].
pub type RouteId = u32;

/// What the FIB says about a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Route {
    /// The node's own pod CIDR: look up the local endpoints.
    Local,
    /// A remote node's pod subnet behind a VXLAN tunnel endpoint.
    Vxlan {
        vtep: Ipv4Addr,
        vtep_mac: [u8; 6],
        vni: u32,
    },
    /// A remote node's pod subnet routed to its address on the shared L2 (host-gw,
    /// DirectRouting).
    Direct { next_hop: Ipv4Addr },
    /// Through the uplink's default gateway.
    Gateway { next_hop: Ipv4Addr },
    /// A known prefix with no way to reach it (answered with ICMP unreachable).
    Unreachable,
}

/// Every table of one generation.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Snapshot {
    pub generation: u64,
    pub node: NodeTables,
    /// Indexed by [`PortId`]; `None` for ids not in use.
    pub ports: Vec<Option<PortConfig>>,
    pub local: LocalEndpoints,
    /// Indexed by [`RouteId`].
    pub routes: Vec<Route>,
    #[serde(serialize_with = "ser_fib")]
    pub fib: crate::tables::Fib,
    #[serde(serialize_with = "ser_neigh")]
    pub neighbours: crate::tables::Neighbours,
    /// Service frontends and their backends.
    pub services: crate::tables::Services,
}

fn ser_fib<S: serde::Serializer>(f: &crate::tables::Fib, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let p = f.prefixes();
    let mut m = s.serialize_map(Some(p.len()))?;
    for (addr, len, route) in p {
        m.serialize_entry(&format!("{addr}/{len}"), &route)?;
    }
    m.end()
}

fn ser_neigh<S: serde::Serializer>(n: &crate::tables::Neighbours, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let p = n.sorted();
    let mut m = s.serialize_map(Some(p.len()))?;
    for (ip, mac) in p {
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        m.serialize_entry(&ip.to_string(), &mac)?;
    }
    m.end()
}

impl Snapshot {
    /// The route for `ip`, if any.
    #[inline]
    pub fn route(&self, ip: Ipv4Addr) -> Option<&Route> {
        self.fib
            .lookup(ip)
            .and_then(|id| self.routes.get(id as usize))
    }

    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortConfig> {
        self.ports.get(usize::from(id)).and_then(|p| p.as_ref())
    }
}
