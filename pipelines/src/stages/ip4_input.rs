//! `ip4-input`: validates the IPv4 header.
//!
//! Checks, in order (RFC 1812 section 5.2.2): header within the frame (`ip4-truncated`),
//! version 4 (`ip4-bad-version`), IHL ≥ 5 and the header within the frame
//! (`ip4-bad-ihl`), total length ≥ header and ≤ the frame (`ip4-bad-length`), header
//! checksum (`ip4-bad-checksum`), source not multicast, limited broadcast or unspecified
//! (`ip4-bad-source`). Ethernet padding after the datagram is trimmed: `desc.len` becomes
//! L2 header + IPv4 total length.
//!
//! Every valid packet goes on to [`Next::Conntrack`]. The decision between local delivery
//! and forwarding is made by `nat`, for packets no flow and no Service frontend claims
//! (replies to translated flows are addressed to the node IP or the gateway).

use super::ip4_error;
use crate::{BATCH, Batch, DropReason, FrameMem, Next, Snapshot};
use xdplane_wire::Ipv4Packet;

pub const NAME: &str = "ip4-input";

pub fn run<M: FrameMem>(_snap: &Snapshot, batch: &mut Batch, mem: &mut M) {
    let n = batch.len.min(BATCH);
    for (desc, meta) in batch.desc[..n].iter_mut().zip(&mut batch.meta[..n]) {
        if meta.next != Next::Ip4Input {
            continue;
        }
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        match check(usize::from(meta.l3_offset), frame) {
            Ok((next, len)) => {
                desc.len = len;
                meta.next = next;
            }
            Err(reason) => meta.drop(reason),
        }
    }
}

/// The next stage and the frame length without padding.
#[inline]
fn check(l3: usize, frame: &[u8]) -> Result<(Next, u32), DropReason> {
    let bytes = frame.get(l3..).ok_or(DropReason::Ip4Truncated)?;
    let ip = Ipv4Packet::new_checked(bytes).map_err(ip4_error)?;
    if !ip.verify_checksum() {
        return Err(DropReason::Ip4BadChecksum);
    }
    let src = ip.src_addr();
    if src.is_multicast() || src.is_broadcast() || src.is_unspecified() {
        return Err(DropReason::Ip4BadSource);
    }
    // l3 + total length ≤ frame length, which came from a u32.
    let len = (l3 + usize::from(ip.total_len())) as u32;
    Ok((Next::Conntrack, len))
}
