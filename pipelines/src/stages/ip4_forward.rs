//! `ip4-forward`: forwards by the FIB (RFC 1812 section 5.2, 5.3.1).
//!
//! The destination's route (`snap.fib`, longest prefix):
//! - none → ICMP destination unreachable, net unreachable (code 0; RFC 1812 section
//!   5.2.7.1), counted as `ip4-no-route` if the error is not sent;
//! - `Unreachable` → ICMP host unreachable (code 1), as Linux answers for an
//!   `unreachable` route; `ip4-route-unreachable`;
//! - `Local` (the node's pod CIDR): TTL ≤ 1 → ICMP time exceeded (RFC 792); no pod with
//!   that address → ICMP host unreachable (code 1), `ip4-host-unreachable`; the pod's
//!   port missing from the snapshot → `port-down`. Else TTL − 1 (RFC 1624 eqn. 3
//!   incremental checksum), Ethernet source = the pod's port MAC, destination = the pod's
//!   MAC, `Tx(pod port)`;
//! - `Vxlan`: a packet that arrived by VXLAN is not sent back into the overlay
//!   (`vxlan-loop`, no ICMP); TTL ≤ 1 → time exceeded; else on to `vxlan-encap` with
//!   `meta.route` set (the TTL is decremented there, after its MTU check, so an ICMP
//!   "fragmentation needed" quotes the header as it arrived);
//! - `Direct` / `Gateway` (next hop on the uplink): TTL ≤ 1 → time exceeded; DF and
//!   longer than `uplink_mtu` → ICMP fragmentation needed with that MTU (RFC 1191); the
//!   next hop's MAC from the neighbour table, a miss recorded for the resolver and the
//!   packet dropped as `neighbour-unresolved`; then TTL − 1, Ethernet source = uplink MAC,
//!   destination = the next hop's MAC, `Tx(uplink)`. No uplink → `uplink-unconfigured`.
//!
//! A routing failure never drops silently: the packet goes to `icmp-error`, which answers
//! or, when RFC 1812 forbids an answer, drops it with the reason above. L4 is never
//! touched.

use super::egress::{neighbour, uplink};
use super::ip4_error;
use crate::batch::IcmpErr;
use crate::pipeline::NeighbourMisses;
use crate::{BATCH, Batch, DropReason, FrameMem, Next, PortId, Route, RouteId, Snapshot};
use xdplane_wire::icmpv4::unreachable;
use xdplane_wire::{EthernetFrame, Ipv4Packet, MacAddr};

pub const NAME: &str = "ip4-forward";

/// What to do with a packet.
enum Fwd {
    Tx(PortId),
    Encap(RouteId),
    Error(IcmpErr),
}

pub fn run<M: FrameMem>(
    snap: &Snapshot,
    batch: &mut Batch,
    mem: &mut M,
    misses: &mut NeighbourMisses,
) {
    let n = batch.len.min(BATCH);
    for (desc, meta) in batch.desc[..n].iter().zip(&mut batch.meta[..n]) {
        if meta.next != Next::Ip4Forward {
            continue;
        }
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        match forward(
            snap,
            misses,
            meta.decapped,
            usize::from(meta.l3_offset),
            frame,
        ) {
            Ok(Fwd::Tx(port)) => meta.tx(port),
            Ok(Fwd::Encap(route)) => {
                meta.route = route;
                meta.next = Next::VxlanEncap;
            }
            Ok(Fwd::Error(err)) => meta.icmp_error(err),
            Err(reason) => meta.drop(reason),
        }
    }
}

#[inline]
fn forward(
    snap: &Snapshot,
    misses: &mut NeighbourMisses,
    decapped: bool,
    l3: usize,
    frame: &mut [u8],
) -> Result<Fwd, DropReason> {
    let (l2, l3bytes) = frame
        .split_at_mut_checked(l3)
        .ok_or(DropReason::Ip4Truncated)?;
    let mut ip = Ipv4Packet::new_checked(l3bytes).map_err(ip4_error)?;
    let dst = ip.dst_addr();
    let no_route = Fwd::Error(IcmpErr::unreachable(
        DropReason::Ip4NoRoute,
        unreachable::NET,
    ));
    let Some(id) = snap.fib.lookup(dst) else {
        return Ok(no_route);
    };
    let Some(route) = snap.routes.get(id as usize) else {
        return Ok(no_route);
    };
    let ttl_expired = ip.ttl() <= 1;
    let (port, src, dst_mac) = match *route {
        Route::Local => {
            if ttl_expired {
                return Ok(Fwd::Error(IcmpErr::time_exceeded()));
            }
            let Some(ep) = snap.local.get(dst) else {
                return Ok(Fwd::Error(IcmpErr::unreachable(
                    DropReason::Ip4HostUnreachable,
                    unreachable::HOST,
                )));
            };
            let egress = snap.port(ep.port).ok_or(DropReason::PortDown)?;
            (ep.port, MacAddr(egress.mac), MacAddr(ep.mac))
        }
        Route::Vxlan { .. } => {
            if decapped {
                return Err(DropReason::VxlanLoop);
            }
            if ttl_expired {
                return Ok(Fwd::Error(IcmpErr::time_exceeded()));
            }
            return Ok(Fwd::Encap(id));
        }
        Route::Direct { next_hop } | Route::Gateway { next_hop } => {
            if ttl_expired {
                return Ok(Fwd::Error(IcmpErr::time_exceeded()));
            }
            let (port, mac) = uplink(snap)?;
            if ip.dont_frag() && u32::from(ip.total_len()) > snap.node.uplink_mtu {
                return Ok(Fwd::Error(IcmpErr::frag_needed(super::vxlan_encap::mtu16(
                    snap.node.uplink_mtu,
                ))));
            }
            (port, mac, neighbour(snap, misses, next_hop)?)
        }
        Route::Unreachable => {
            return Ok(Fwd::Error(IcmpErr::unreachable(
                DropReason::Ip4RouteUnreachable,
                unreachable::HOST,
            )));
        }
    };
    let mut eth = EthernetFrame::new_checked(l2).map_err(|_| DropReason::EthTruncated)?;
    ip.decrement_ttl();
    eth.set_src_addr(src);
    eth.set_dst_addr(dst_mac);
    Ok(Fwd::Tx(port))
}
