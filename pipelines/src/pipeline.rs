//! The pipeline: every stage, in order, over one batch, with the per-worker state the
//! stages keep between batches.

use crate::stages::icmp_error::TokenBucket;
use crate::stages::nat::NatState;
use crate::stages::{
    TxState, arp, conntrack, eth_input, icmp_echo, icmp_error, ip4_forward, ip4_input, nat,
    vxlan_decap, vxlan_encap,
};
use crate::tables::conntrack::{FlowTable, FlowTableConfig};
use crate::{BATCH, Batch, DropReason, FrameMem, Next, Snapshot, Verdict};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Flows the private table of [`Pipeline::new`] / [`Pipeline::with_config`] holds (tests,
/// benchmarks); the agent shares one bigger table between its workers
/// ([`Pipeline::with_flows`]).
pub const PRIVATE_FLOWS: usize = 16_384;

/// How many distinct next hops [`NeighbourMisses`] holds until they are taken.
pub const NEIGHBOUR_MISSES: usize = 16;

/// Uplink next hops without a resolved MAC, recorded by the stages when they drop a packet
/// as `neighbour-unresolved`: distinct addresses, fixed capacity, no allocation. The
/// worker takes them after each batch and hands them to the resolver.
#[derive(Clone, Copy, Debug)]
pub struct NeighbourMisses {
    addrs: [Ipv4Addr; NEIGHBOUR_MISSES],
    len: usize,
    lost: u64,
}

impl Default for NeighbourMisses {
    fn default() -> Self {
        NeighbourMisses {
            addrs: [Ipv4Addr::UNSPECIFIED; NEIGHBOUR_MISSES],
            len: 0,
            lost: 0,
        }
    }
}

impl NeighbourMisses {
    /// Records `ip` unless it is already there. When the list is full the address is not
    /// kept and [`NeighbourMisses::lost`] counts it (the traffic that needs it records it
    /// again in a later batch).
    #[inline]
    pub fn record(&mut self, ip: Ipv4Addr) {
        if self.as_slice().contains(&ip) {
            return;
        }
        match self.addrs.get_mut(self.len) {
            Some(slot) => {
                *slot = ip;
                self.len += 1;
            }
            None => self.lost += 1,
        }
    }
    /// The recorded addresses, in the order they were first missed.
    #[inline]
    pub fn as_slice(&self) -> &[Ipv4Addr] {
        &self.addrs[..self.len.min(NEIGHBOUR_MISSES)]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn len(&self) -> usize {
        self.len
    }
    /// Forgets the recorded addresses (not the `lost` count).
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// Misses not recorded because the list was full, since the pipeline was created.
    pub fn lost(&self) -> u64 {
        self.lost
    }
    /// Empties the list, returning its addresses by value.
    #[inline]
    fn take(&mut self) -> std::iter::Take<std::array::IntoIter<Ipv4Addr, NEIGHBOUR_MISSES>> {
        let n = self.len.min(NEIGHBOUR_MISSES);
        self.len = 0;
        self.addrs.into_iter().take(n)
    }
}

/// Settings of a [`Pipeline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    /// ICMP errors a worker may send per second (the token bucket's rate). Linux's
    /// `net.ipv4.icmp_msgs_per_sec` default: 1000.
    pub icmp_errors_per_sec: u32,
    /// Largest burst of ICMP errors (the bucket's size). Linux's `net.ipv4.icmp_msgs_burst`
    /// default: 50. Zero turns rate-limited ICMP errors off.
    pub icmp_errors_burst: u32,
    /// This worker's index among `workers` (0-based): it allocates SNAT source ports and
    /// ICMP identifiers only from its own slice of `snap.node.snat_ports`
    /// ([`crate::stages::nat::snat_slice`]), so workers sharing a flow table never race
    /// for a reply tuple.
    pub worker: u16,
    /// How many workers share the flow table (and split the SNAT ports). Default 1.
    pub workers: u16,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            icmp_errors_per_sec: 1000,
            icmp_errors_burst: 50,
            worker: 0,
            workers: 1,
        }
    }
}

/// Runs the stages over batches. One per worker: it keeps the state stages carry from
/// batch to batch — the ICMP error token bucket, the outer IPv4 identification counter of
/// encapsulated packets, the neighbour misses — and the flow table (shared by all
/// workers of a node, see [`Pipeline::with_flows`]).
#[derive(Clone, Debug)]
pub struct Pipeline {
    icmp_limit: TokenBucket,
    tx: TxState,
    nat: NatState,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline::new()
    }
}

impl Pipeline {
    /// Stage names in the order they run.
    pub const STAGES: [&'static str; 10] = [
        vxlan_decap::NAME,
        eth_input::NAME,
        arp::NAME,
        ip4_input::NAME,
        conntrack::NAME,
        nat::NAME,
        icmp_echo::NAME,
        ip4_forward::NAME,
        vxlan_encap::NAME,
        icmp_error::NAME,
    ];

    /// A pipeline with the default settings ([`PipelineConfig::default`]).
    pub fn new() -> Pipeline {
        Pipeline::with_config(PipelineConfig::default())
    }

    /// A pipeline with `cfg` and a private flow table of [`PRIVATE_FLOWS`] flows. The IPv4
    /// identification counter starts at a random value (std's per-process hash keys), so
    /// workers and restarts do not all count from zero.
    pub fn with_config(cfg: PipelineConfig) -> Pipeline {
        let flows = FlowTable::new(FlowTableConfig {
            capacity: PRIVATE_FLOWS,
            timeouts: Default::default(),
        });
        Pipeline::with_flows(cfg, Arc::new(flows))
    }

    /// A pipeline with `cfg` on the node's shared flow table: the agent builds one
    /// `FlowTable` and gives every worker a clone of the `Arc` (a reply may arrive on any
    /// worker; services.md section 1). `cfg.worker`/`cfg.workers` pick the worker's slice
    /// of the SNAT ports.
    pub fn with_flows(cfg: PipelineConfig, flows: Arc<FlowTable>) -> Pipeline {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x1d_u8);
        Pipeline {
            icmp_limit: TokenBucket::new(cfg.icmp_errors_per_sec, cfg.icmp_errors_burst),
            tx: TxState::new(seed as u16),
            nat: NatState::new(flows, cfg.worker, cfg.workers),
        }
    }

    /// The flow table this pipeline tracks NATed flows in.
    pub fn flows(&self) -> &Arc<FlowTable> {
        &self.nat.flows
    }

    /// TCP resets sent by this pipeline to reject connections to Services without
    /// endpoints (kube-proxy's REJECT), since it was created.
    pub fn service_rejects(&self) -> u64 {
        self.nat.service_rejects
    }

    /// Runs every stage over the batch. Afterwards each of the first `batch.len` packets
    /// (at most [`BATCH`]) has `next == Next::Done` and a verdict `Tx(port)` or
    /// `Drop(reason)`. Stages edit frames in place and may move a descriptor inside its
    /// chunk: decapsulation advances `addr` past the outer headers, encapsulation moves
    /// it back 50 bytes into the headroom, ICMP errors, TCP resets and padding change
    /// `len`. Packets enter at whatever `meta.next` says (`Batch::load` sets
    /// `VxlanDecap`). No allocation, no locks (the flow table is lock-free); no frame
    /// content can make it panic.
    ///
    /// Next hops found without a MAC are added to [`Pipeline::neighbour_misses`].
    pub fn process<M: FrameMem>(&mut self, snap: &Snapshot, batch: &mut Batch, mem: &mut M) {
        vxlan_decap::run(snap, batch, mem);
        eth_input::run(snap, batch, mem);
        arp::run(snap, batch, mem);
        ip4_input::run(snap, batch, mem);
        conntrack::run(snap, batch, mem, &self.nat.flows);
        nat::run(snap, batch, mem, &mut self.nat, &mut self.tx);
        icmp_echo::run(snap, batch, mem, &mut self.tx);
        ip4_forward::run(snap, batch, mem, &mut self.tx.misses);
        vxlan_encap::run(snap, batch, mem, &mut self.tx);
        icmp_error::run(
            snap,
            batch,
            mem,
            &mut self.icmp_limit,
            &mut self.tx,
            &self.nat.flows,
        );
        finish(batch);
    }

    /// Next hops that had no MAC since the misses were last taken (distinct, at most
    /// [`NEIGHBOUR_MISSES`]).
    pub fn neighbour_misses(&self) -> &[Ipv4Addr] {
        self.tx.misses.as_slice()
    }

    /// Takes the recorded misses, leaving the list empty: what the worker calls after each
    /// batch. Allocation-free.
    pub fn take_neighbour_misses(&mut self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        self.tx.misses.take()
    }

    /// Empties the miss list.
    pub fn clear_neighbour_misses(&mut self) {
        self.tx.misses.clear();
    }

    /// Misses not recorded because the list was full.
    pub fn neighbour_misses_lost(&self) -> u64 {
        self.tx.misses.lost()
    }
}

/// The name of the stage that handles packets with this `next` (`"done"` for
/// [`Next::Done`]).
pub const fn stage_name(next: Next) -> &'static str {
    match next {
        Next::VxlanDecap => vxlan_decap::NAME,
        Next::EthInput => eth_input::NAME,
        Next::Arp => arp::NAME,
        Next::Ip4Input => ip4_input::NAME,
        Next::Conntrack => conntrack::NAME,
        Next::Nat => nat::NAME,
        Next::IcmpEcho => icmp_echo::NAME,
        Next::Ip4Forward => ip4_forward::NAME,
        Next::VxlanEncap => vxlan_encap::NAME,
        Next::IcmpError => icmp_error::NAME,
        Next::Done => "done",
    }
}

/// Guarantees the postcondition of [`Pipeline::process`]: a packet no stage finished
/// (a stage bug, or a batch handed in with `next == Done` and no verdict) is dropped as
/// `no-verdict` rather than left pending.
#[inline]
fn finish(batch: &mut Batch) {
    let n = batch.len.min(BATCH);
    for meta in &mut batch.meta[..n] {
        if meta.verdict == Verdict::Pending {
            meta.drop(DropReason::NoVerdict);
        } else {
            meta.next = Next::Done;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_are_distinct_bounded_and_taken() {
        let mut m = NeighbourMisses::default();
        for i in 0..40u8 {
            m.record(Ipv4Addr::new(192, 168, 50, i % 20));
        }
        assert_eq!(m.len(), NEIGHBOUR_MISSES);
        assert_eq!(m.as_slice()[3], Ipv4Addr::new(192, 168, 50, 3));
        // 4 distinct addresses did not fit, twice each.
        assert_eq!(m.lost(), 8);
        let taken: Vec<_> = m.take().collect();
        assert_eq!(taken.len(), NEIGHBOUR_MISSES);
        assert!(m.is_empty());
        m.record(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(m.as_slice(), &[Ipv4Addr::new(10, 0, 0, 1)]);
    }
}
