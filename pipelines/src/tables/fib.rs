//! The IPv4 FIB: longest-prefix match from address to [`RouteId`].
//!
//! Built with [`FibBuilder`] off the fast path and frozen into a read-only [`Fib`].
//! This version answers through the reference structure; the DIR-24-8 layout replaces its
//! internals without changing the API (see docs/design/overlay.md).

use super::reference::RefLpm;
use crate::snapshot::RouteId;
use std::net::Ipv4Addr;

#[derive(Clone, Debug, Default)]
pub struct FibBuilder {
    lpm: RefLpm,
}

impl FibBuilder {
    pub fn new() -> FibBuilder {
        FibBuilder { lpm: RefLpm::new() }
    }
    /// Adds `prefix/len` → `route` (host bits ignored; a later insert of the same prefix wins).
    pub fn insert(&mut self, prefix: Ipv4Addr, len: u8, route: RouteId) {
        self.lpm.insert(prefix, len, route);
    }
    pub fn build(self) -> Fib {
        Fib { lpm: self.lpm }
    }
}

/// A frozen FIB.
#[derive(Clone, Debug, Default)]
pub struct Fib {
    lpm: RefLpm,
}

impl Fib {
    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<RouteId> {
        self.lpm.lookup(ip)
    }
    /// Looks up every address of `ips` into `out` (same length).
    pub fn lookup_bulk(&self, ips: &[Ipv4Addr], out: &mut [Option<RouteId>]) {
        for (ip, o) in ips.iter().zip(out.iter_mut()) {
            *o = self.lookup(*ip);
        }
    }
    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.lpm.len()
    }
    pub fn is_empty(&self) -> bool {
        self.lpm.is_empty()
    }
    /// Every (prefix, len, route), sorted.
    pub fn prefixes(&self) -> Vec<(Ipv4Addr, u8, RouteId)> {
        self.lpm.entries()
    }
}
