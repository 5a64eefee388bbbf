//! `ip4-forward`: forwards to a pod on this node (RFC 1812 section 5.3.1).
//!
//! TTL ≤ 1 → `ip4-ttl-expired` (no ICMP time-exceeded yet). The destination is looked up
//! in the snapshot's local endpoints: none → `ip4-no-route`; its port missing from the
//! snapshot → `port-down`. Otherwise the TTL is decremented with an incremental header
//! checksum update (RFC 1624 eqn. 3), the Ethernet source becomes the egress port's MAC and
//! the destination the pod's MAC, and the packet is sent on the pod's port. L4 is not
//! touched.

use super::ip4_error;
use crate::{BATCH, Batch, DropReason, FrameMem, Next, PortId, Snapshot};
use xdplane_wire::{EthernetFrame, Ipv4Packet, MacAddr};

pub const NAME: &str = "ip4-forward";

pub fn run<M: FrameMem>(snap: &Snapshot, batch: &mut Batch, mem: &mut M) {
    let n = batch.len.min(BATCH);
    for (desc, meta) in batch.desc[..n].iter().zip(&mut batch.meta[..n]) {
        if meta.next != Next::Ip4Forward {
            continue;
        }
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        match forward(snap, usize::from(meta.l3_offset), frame) {
            Ok(port) => meta.tx(port),
            Err(reason) => meta.drop(reason),
        }
    }
}

#[inline]
fn forward(snap: &Snapshot, l3: usize, frame: &mut [u8]) -> Result<PortId, DropReason> {
    let (l2, l3bytes) = frame
        .split_at_mut_checked(l3)
        .ok_or(DropReason::Ip4Truncated)?;
    let mut ip = Ipv4Packet::new_checked(l3bytes).map_err(ip4_error)?;
    if ip.ttl() <= 1 {
        return Err(DropReason::Ip4TtlExpired);
    }
    let ep = snap
        .local
        .get(ip.dst_addr())
        .ok_or(DropReason::Ip4NoRoute)?;
    let egress = snap.port(ep.port).ok_or(DropReason::PortDown)?;
    let mut eth = EthernetFrame::new_checked(l2).map_err(|_| DropReason::EthTruncated)?;
    ip.decrement_ttl();
    eth.set_src_addr(MacAddr(egress.mac));
    eth.set_dst_addr(MacAddr(ep.mac));
    Ok(ep.port)
}
