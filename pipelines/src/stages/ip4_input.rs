//! `ip4-input`: validates the IPv4 header and decides between local delivery and
//! forwarding.
//!
//! Checks, in order (RFC 1812 section 5.2.2): header within the frame (`ip4-truncated`),
//! version 4 (`ip4-bad-version`), IHL ≥ 5 and the header within the frame
//! (`ip4-bad-ihl`), total length ≥ header and ≤ the frame (`ip4-bad-length`), header
//! checksum (`ip4-bad-checksum`), source not multicast, limited broadcast or unspecified
//! (`ip4-bad-source`). Ethernet padding after the datagram is trimmed: `desc.len` becomes
//! L2 header + IPv4 total length.
//!
//! Addressed to the gateway: unfragmented ICMP → [`Next::IcmpEcho`], anything else
//! `ip4-local-unhandled`. Addressed to the node IP: `ip4-local-unhandled` (VXLAN to the
//! node IP was taken by `vxlan-decap` already; the XDP program leaves everything else for
//! the node IP, pings included, to the kernel). Every other destination →
//! [`Next::Ip4Forward`].

use super::ip4_error;
use crate::{BATCH, Batch, DropReason, FrameMem, Next, Snapshot};
use xdplane_wire::{IpProtocol, Ipv4Packet};

pub const NAME: &str = "ip4-input";

pub fn run<M: FrameMem>(snap: &Snapshot, batch: &mut Batch, mem: &mut M) {
    let n = batch.len.min(BATCH);
    for (desc, meta) in batch.desc[..n].iter_mut().zip(&mut batch.meta[..n]) {
        if meta.next != Next::Ip4Input {
            continue;
        }
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        match check(snap, usize::from(meta.l3_offset), frame) {
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
fn check(snap: &Snapshot, l3: usize, frame: &[u8]) -> Result<(Next, u32), DropReason> {
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
    let dst = ip.dst_addr();
    if snap.node.node_ip == Some(dst) {
        return Err(DropReason::Ip4LocalUnhandled);
    }
    if dst == snap.node.gateway {
        if ip.protocol() == IpProtocol::ICMP && !ip.is_fragment() {
            Ok((Next::IcmpEcho, len))
        } else {
            Err(DropReason::Ip4LocalUnhandled)
        }
    } else {
        Ok((Next::Ip4Forward, len))
    }
}
