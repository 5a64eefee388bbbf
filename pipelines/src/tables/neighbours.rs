//! Resolved neighbours on the uplink: underlay IPv4 → MAC. Filled by the agent's resolver,
//! frozen into each snapshot.

use crate::snapshot::FxBuild;
use std::collections::HashMap;
use std::net::Ipv4Addr;

#[derive(Clone, Debug, Default)]
pub struct Neighbours {
    map: HashMap<u32, [u8; 6], FxBuild>,
}

impl Neighbours {
    pub fn insert(&mut self, ip: Ipv4Addr, mac: [u8; 6]) {
        self.map.insert(u32::from(ip), mac);
    }
    #[inline]
    pub fn get(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.map.get(&u32::from(ip)).copied()
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Entries sorted by address.
    pub fn sorted(&self) -> Vec<(Ipv4Addr, [u8; 6])> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .map(|(k, m)| (Ipv4Addr::from(*k), *m))
            .collect();
        v.sort();
        v
    }
}
