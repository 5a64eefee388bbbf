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
    pub name: String,
    /// The node's pod subnet (`spec.podCIDR`): network address and prefix length.
    pub pod_net: Ipv4Addr,
    pub pod_prefix: u8,
    /// The pods' gateway (first address of the pod CIDR, like flannel's cni0).
    pub gateway: Ipv4Addr,
    /// MTU given to pods.
    pub pod_mtu: u32,
}

impl NodeTables {
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

/// Every table of one generation.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub generation: u64,
    pub node: NodeTables,
    /// Indexed by [`PortId`]; `None` for ids not in use.
    pub ports: Vec<Option<PortConfig>>,
    pub local: LocalEndpoints,
}

impl Snapshot {
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortConfig> {
        self.ports.get(usize::from(id)).and_then(|p| p.as_ref())
    }
}
