//! `icmp-echo`: answers echo requests to the gateway in place (RFC 792, RFC 1122 section
//! 3.2.2.6).
//!
//! The request becomes the reply: ICMP type 8 → 0 with the checksum updated incrementally
//! (RFC 1624), IPv4 source and destination swapped, TTL 64 and the header checksum
//! recomputed, Ethernet destination = the requester, source = the ingress port's MAC; sent
//! back on the ingress port. Identifier, sequence number, data and IP options are echoed
//! unchanged.
//!
//! A request that arrived by VXLAN (`meta.decapped`) is answered through the tunnel: the
//! reply is routed by the FIB to the requester's node and encapsulated, as the kernel
//! answers a ping to `cni0` from a remote pod over `flannel.1`.
//!
//! Drops: truncated ICMP or a bad ICMP checksum → `icmp-malformed`; other ICMP types →
//! `icmp-not-echo`; ingress port missing from the snapshot → `port-down`; for a decapped
//! request, whatever routing the reply gives (`neighbour-unresolved`, …).

use super::{TxState, egress, ip4_error};
use crate::{BATCH, Batch, DropReason, FrameMem, Next, PortId, Snapshot};
use xdplane_wire::{EthernetFrame, Icmpv4Message, Icmpv4Packet, Ipv4Packet, MacAddr};

pub const NAME: &str = "icmp-echo";

/// TTL of the replies the dataplane originates (Linux's default, RFC 1700 recommends 64).
pub const REPLY_TTL: u8 = 64;

pub fn run<M: FrameMem>(snap: &Snapshot, batch: &mut Batch, mem: &mut M, tx: &mut TxState) {
    let n = batch.len.min(BATCH);
    for (desc, meta) in batch.desc[..n].iter_mut().zip(&mut batch.meta[..n]) {
        if meta.next != Next::IcmpEcho {
            continue;
        }
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        let sent = reply(snap, meta.in_port, usize::from(meta.l3_offset), frame).and_then(|port| {
            if meta.decapped {
                egress::send_by_route(snap, tx, mem, desc)
            } else {
                Ok(port)
            }
        });
        match sent {
            Ok(port) => meta.tx(port),
            Err(reason) => meta.drop(reason),
        }
    }
}

#[inline]
fn reply(
    snap: &Snapshot,
    in_port: PortId,
    l3: usize,
    frame: &mut [u8],
) -> Result<PortId, DropReason> {
    let (l2, l3bytes) = frame
        .split_at_mut_checked(l3)
        .ok_or(DropReason::Ip4Truncated)?;
    let mut ip = Ipv4Packet::new_checked(l3bytes).map_err(ip4_error)?;
    {
        let icmp =
            Icmpv4Packet::new_checked(ip.payload()).map_err(|_| DropReason::IcmpMalformed)?;
        if !icmp.verify_checksum() {
            return Err(DropReason::IcmpMalformed);
        }
        if icmp.msg_type() != Icmpv4Message::ECHO_REQUEST {
            return Err(DropReason::IcmpNotEcho);
        }
    }
    let mut eth = EthernetFrame::new_checked(l2).map_err(|_| DropReason::EthTruncated)?;
    let mac = MacAddr(snap.port(in_port).ok_or(DropReason::PortDown)?.mac);

    let mut icmp =
        Icmpv4Packet::new_checked(ip.payload_mut()).map_err(|_| DropReason::IcmpMalformed)?;
    let code = icmp.msg_code();
    icmp.set_type_code_incremental(Icmpv4Message::ECHO_REPLY, code);

    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_ttl(REPLY_TTL);
    ip.fill_checksum();

    let requester = eth.src_addr();
    eth.set_dst_addr(requester);
    eth.set_src_addr(mac);
    Ok(in_port)
}
