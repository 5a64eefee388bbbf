//! Helpers shared by the stages that send packets out (not a stage).

use super::{TxState, ip4_error, vxlan_encap};
use crate::pipeline::NeighbourMisses;
use crate::{Desc, DropReason, FrameMem, PortId, Route, Snapshot};
use std::net::Ipv4Addr;
use xdplane_wire::{EthernetFrame, Ipv4Packet, MacAddr};

/// The uplink's port id and MAC: `uplink-unconfigured` when the snapshot names no
/// uplink, `port-down` when the port it names is missing.
#[inline]
pub(crate) fn uplink(snap: &Snapshot) -> Result<(PortId, MacAddr), DropReason> {
    let id = snap.node.uplink.ok_or(DropReason::UplinkUnconfigured)?;
    let port = snap.port(id).ok_or(DropReason::PortDown)?;
    Ok((id, MacAddr(port.mac)))
}

/// The MAC of a next hop on the uplink. A miss is recorded for the resolver and drops the
/// packet as `neighbour-unresolved`.
#[inline]
pub(crate) fn neighbour(
    snap: &Snapshot,
    misses: &mut NeighbourMisses,
    ip: Ipv4Addr,
) -> Result<MacAddr, DropReason> {
    match snap.neighbours.get(ip) {
        Some(mac) => Ok(MacAddr(mac)),
        None => {
            misses.record(ip);
            Err(DropReason::NeighbourUnresolved)
        }
    }
}

/// Sends a packet the dataplane built itself (an echo reply, an ICMP error) by the FIB,
/// the way the kernel routes its own packets: no TTL decrement, no MTU check, no
/// `vxlan-loop` rule. The frame holds Ethernet + IPv4 at `desc`; the Ethernet header is
/// rewritten (or, for a VXLAN route, the frame encapsulated). Returns the egress port.
pub(crate) fn send_by_route<M: FrameMem>(
    snap: &Snapshot,
    tx: &mut TxState,
    mem: &mut M,
    desc: &mut Desc,
) -> Result<PortId, DropReason> {
    let frame = mem.frame_mut(desc.addr, desc.len as usize);
    let dst = {
        let l3 = frame
            .get(EthernetFrame::<&[u8]>::HEADER_LEN..)
            .ok_or(DropReason::Ip4Truncated)?;
        Ipv4Packet::new_checked(l3).map_err(ip4_error)?.dst_addr()
    };
    let (port, src, dst_mac) = match snap.route(dst).copied() {
        Some(Route::Vxlan {
            vtep,
            vtep_mac,
            vni,
        }) => return vxlan_encap::encapsulate(snap, tx, mem, desc, vtep, vtep_mac, vni),
        Some(Route::Direct { next_hop } | Route::Gateway { next_hop }) => {
            let (port, mac) = uplink(snap)?;
            (port, mac, neighbour(snap, &mut tx.misses, next_hop)?)
        }
        Some(Route::Local) => {
            let ep = snap.local.get(dst).ok_or(DropReason::Ip4HostUnreachable)?;
            let egress = snap.port(ep.port).ok_or(DropReason::PortDown)?;
            (ep.port, MacAddr(egress.mac), MacAddr(ep.mac))
        }
        Some(Route::Unreachable) => return Err(DropReason::Ip4RouteUnreachable),
        None => return Err(DropReason::Ip4NoRoute),
    };
    let mut eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::EthTruncated)?;
    eth.set_src_addr(src);
    eth.set_dst_addr(dst_mac);
    Ok(port)
}
