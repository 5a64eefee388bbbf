//! The pipeline: every stage, in order, over one batch.

use crate::stages::{arp, eth_input, icmp_echo, ip4_forward, ip4_input};
use crate::{BATCH, Batch, DropReason, FrameMem, Next, Snapshot, Verdict};

/// Runs the stages over batches. Stateless: one value can serve every worker.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pipeline;

impl Pipeline {
    /// Stage names in the order they run.
    pub const STAGES: [&'static str; 5] = [
        eth_input::NAME,
        arp::NAME,
        ip4_input::NAME,
        icmp_echo::NAME,
        ip4_forward::NAME,
    ];

    /// Runs every stage over the batch. Afterwards each of the first `batch.len` packets
    /// (at most [`BATCH`]) has `next == Next::Done` and a verdict `Tx(port)` or
    /// `Drop(reason)`. Stages may edit frames in place and shorten `desc[i].len` (Ethernet
    /// padding). Packets enter at whatever `meta.next` says (`Batch::load` sets
    /// `EthInput`). No allocation, no locks; no frame content can make it panic.
    pub fn process<M: FrameMem>(&self, snap: &Snapshot, batch: &mut Batch, mem: &mut M) {
        eth_input::run(snap, batch, mem);
        arp::run(snap, batch, mem);
        ip4_input::run(snap, batch, mem);
        icmp_echo::run(snap, batch, mem);
        ip4_forward::run(snap, batch, mem);
        finish(batch);
    }
}

/// The name of the stage that handles packets with this `next` (`"done"` for
/// [`Next::Done`]).
pub const fn stage_name(next: Next) -> &'static str {
    match next {
        Next::EthInput => eth_input::NAME,
        Next::Arp => arp::NAME,
        Next::Ip4Input => ip4_input::NAME,
        Next::IcmpEcho => icmp_echo::NAME,
        Next::Ip4Forward => ip4_forward::NAME,
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
