//! Per-worker, per-port counters.
//!
//! The worker is the only writer: it counts into a plain local array and, after each poll
//! round, *stores* (no read-modify-write) the ports it touched into the shared atomics, so the
//! fast path pays no locked instruction per packet. Readers (the admin socket) load with
//! `Relaxed` and may see a round's counters a little late, never torn per counter.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use xdplane_pipeline::{DropReason, PortId};

/// Highest number of ports a worker counts (PortIds at or above are counted in the last slot).
pub const MAX_PORTS: usize = 1024;

const N_FIXED: usize = 4; // rx_packets, rx_bytes, tx_packets, tx_bytes
const PER_PORT: usize = N_FIXED + DropReason::COUNT;

/// Worker-local counters (plain integers).
pub struct LocalCounters {
    v: Vec<u64>,
    dirty: Vec<PortId>,
    is_dirty: Vec<bool>,
}

impl LocalCounters {
    pub fn new() -> LocalCounters {
        LocalCounters {
            v: vec![0; MAX_PORTS * PER_PORT],
            dirty: Vec::with_capacity(MAX_PORTS),
            is_dirty: vec![false; MAX_PORTS],
        }
    }

    #[inline]
    fn base(&mut self, port: PortId) -> usize {
        let p = usize::from(port).min(MAX_PORTS - 1);
        if !self.is_dirty[p] {
            self.is_dirty[p] = true;
            self.dirty.push(p as PortId);
        }
        p * PER_PORT
    }

    #[inline]
    pub fn rx(&mut self, port: PortId, packets: u64, bytes: u64) {
        let b = self.base(port);
        self.v[b] += packets;
        self.v[b + 1] += bytes;
    }

    #[inline]
    pub fn tx(&mut self, port: PortId, packets: u64, bytes: u64) {
        let b = self.base(port);
        self.v[b + 2] += packets;
        self.v[b + 3] += bytes;
    }

    #[inline]
    pub fn drop(&mut self, port: PortId, reason: DropReason) {
        let b = self.base(port);
        self.v[b + N_FIXED + reason as usize] += 1;
    }

    /// Stores the counters of every port touched since the last publish.
    pub fn publish(&mut self, shared: &SharedCounters) {
        for &p in &self.dirty {
            let p = usize::from(p);
            self.is_dirty[p] = false;
            let b = p * PER_PORT;
            for i in 0..PER_PORT {
                shared.v[b + i].store(self.v[b + i], Relaxed);
            }
        }
        self.dirty.clear();
    }

    /// Forgets a port's counters (when a PortId is reused for another device).
    pub fn reset_port(&mut self, port: PortId, shared: &SharedCounters) {
        let p = usize::from(port).min(MAX_PORTS - 1);
        let b = p * PER_PORT;
        for i in 0..PER_PORT {
            self.v[b + i] = 0;
            shared.v[b + i].store(0, Relaxed);
        }
    }
}

impl Default for LocalCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// The counters a worker shares with readers.
pub struct SharedCounters {
    v: Vec<AtomicU64>,
}

impl Default for SharedCounters {
    fn default() -> Self {
        SharedCounters {
            v: (0..MAX_PORTS * PER_PORT)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

/// One port's counters, as read.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Non-zero drop counters by reason name.
    pub drops: std::collections::BTreeMap<&'static str, u64>,
}

impl PortCounters {
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }
}

impl SharedCounters {
    /// Reads one port's counters.
    pub fn port(&self, port: PortId) -> PortCounters {
        let b = usize::from(port).min(MAX_PORTS - 1) * PER_PORT;
        let mut drops = std::collections::BTreeMap::new();
        for r in DropReason::ALL {
            let n = self.v[b + N_FIXED + *r as usize].load(Relaxed);
            if n != 0 {
                drops.insert(r.name(), n);
            }
        }
        PortCounters {
            rx_packets: self.v[b].load(Relaxed),
            rx_bytes: self.v[b + 1].load(Relaxed),
            tx_packets: self.v[b + 2].load(Relaxed),
            tx_bytes: self.v[b + 3].load(Relaxed),
            drops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_stores_only_dirty_ports_and_reads_back() {
        let shared = SharedCounters::default();
        let mut local = LocalCounters::new();
        local.rx(3, 2, 128);
        local.tx(4, 1, 64);
        local.drop(3, DropReason::Ip4NoRoute);
        assert_eq!(
            shared.port(3),
            PortCounters::default(),
            "nothing before publish"
        );
        local.publish(&shared);
        let p3 = shared.port(3);
        assert_eq!((p3.rx_packets, p3.rx_bytes), (2, 128));
        assert_eq!(p3.drops.get("ip4-no-route"), Some(&1));
        assert_eq!(shared.port(4).tx_packets, 1);
        local.rx(3, 1, 60);
        local.publish(&shared);
        assert_eq!(shared.port(3).rx_packets, 3);
        local.reset_port(3, &shared);
        assert_eq!(shared.port(3), PortCounters::default());
    }
}
