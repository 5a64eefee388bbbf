//! `arp`: answers ARP requests for the node's pod CIDR in place, like a routed `cni0` with
//! proxy ARP.
//!
//! A request (Ethernet/IPv4, op 1) whose target lies in the pod CIDR is answered with the
//! ingress port's MAC — for the gateway address and, proxy-ARP style, for every other pod
//! address, so pods send all their traffic to the dataplane. Not answered:
//! - a target equal to the sender's own address (gratuitous ARP), or the address of the
//!   endpoint attached to the ingress port itself (an RFC 5227 probe from `0.0.0.0`): the
//!   asker owns it, answering would make it see a conflict → `arp-not-for-us`;
//! - a target outside the pod CIDR → `arp-not-for-us`;
//! - a request received on an uplink → `arp-not-for-us` (the node's kernel answers ARP on
//!   the uplink; proxy ARP for the pod CIDR there would hijack the fabric);
//! - replies and other operations → `arp-reply`;
//! - truncated, non-Ethernet/IPv4, or a non-unicast sender MAC → `arp-malformed`;
//! - an ingress port missing from the snapshot → `port-down`.
//!
//! The reply goes back out of the ingress port, unicast to the requester's MAC.

use crate::{BATCH, Batch, DropReason, FrameMem, Next, PortId, PortKind, Snapshot};
use xdplane_wire::{ArpOp, ArpPacket, EthernetFrame, MacAddr};

pub const NAME: &str = "arp";

pub fn run<M: FrameMem>(snap: &Snapshot, batch: &mut Batch, mem: &mut M) {
    let n = batch.len.min(BATCH);
    for (desc, meta) in batch.desc[..n].iter().zip(&mut batch.meta[..n]) {
        if meta.next != Next::Arp {
            continue;
        }
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        match answer(snap, meta.in_port, frame) {
            Ok(port) => meta.tx(port),
            Err(reason) => meta.drop(reason),
        }
    }
}

#[inline]
fn answer(snap: &Snapshot, in_port: PortId, frame: &mut [u8]) -> Result<PortId, DropReason> {
    let mut eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::EthTruncated)?;
    let mut arp =
        ArpPacket::new_checked(eth.payload_mut()).map_err(|_| DropReason::ArpMalformed)?;
    if !arp.is_ethernet_ipv4() {
        return Err(DropReason::ArpMalformed);
    }
    let sha = arp.source_hardware_addr();
    if !sha.is_unicast() {
        return Err(DropReason::ArpMalformed);
    }
    if arp.operation() != ArpOp::REQUEST {
        return Err(DropReason::ArpReply);
    }
    let spa = arp.source_protocol_addr();
    let tpa = arp.target_protocol_addr();
    if tpa == spa || !snap.node.in_pod_cidr(tpa) {
        return Err(DropReason::ArpNotForUs);
    }
    if snap.local.get(tpa).is_some_and(|ep| ep.port == in_port) {
        return Err(DropReason::ArpNotForUs);
    }
    let port = snap.port(in_port).ok_or(DropReason::PortDown)?;
    if port.kind == PortKind::Uplink {
        return Err(DropReason::ArpNotForUs);
    }
    let mac = MacAddr(port.mac);

    arp.set_operation(ArpOp::REPLY);
    arp.set_target_hardware_addr(sha);
    arp.set_target_protocol_addr(spa);
    arp.set_source_hardware_addr(mac);
    arp.set_source_protocol_addr(tpa);
    eth.set_dst_addr(sha);
    eth.set_src_addr(mac);
    Ok(in_port)
}
