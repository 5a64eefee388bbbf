//! `vxlan-encap`: sends packets to a remote node's pods through its VXLAN tunnel endpoint
//! (RFC 7348), wire-compatible with Linux's vxlan driver as flannel configures it.
//!
//! Packets arrive from `ip4-forward` with a `Vxlan` route in `meta.route`, TTL checked but
//! not yet decremented. In order:
//! 1. DF set and IP total length + 50 > `uplink_mtu` → ICMP fragmentation needed with
//!    next-hop MTU `uplink_mtu − 50` (RFC 1191; like the kernel forwarding onto
//!    `flannel.1`, whose MTU is the uplink's − 50, the quoted header still has the TTL it
//!    arrived with). A packet without DF that is too big is encapsulated anyway: the
//!    dataplane does not fragment (Linux would fragment the outer packet, whose DF is off).
//! 2. TTL − 1 (RFC 1624 incremental checksum).
//! 3. Underlay next hop: the VTEP itself when it is on the uplink's subnet, else the next
//!    hop of the `Gateway` (or `Direct`) route the FIB gives for the VTEP; otherwise
//!    `vxlan-vtep-unreachable`. No MAC for it → `neighbour-unresolved` (recorded).
//! 4. 50 bytes of headroom are needed (AF_XDP leaves 256) → else `vxlan-no-headroom`.
//! 5. Outer headers written in front of the frame (the descriptor moves back 50 bytes):
//!    - Ethernet: uplink MAC → next hop's MAC, IPv4.
//!    - IPv4: node IP → VTEP, TTL 64, DF off, DSCP 0, ECN copied from the inner header
//!      with CE sent as ECT(0) (RFC 6040 section 4.1 normal mode, Linux's
//!      `INET_ECN_encapsulate`), identification from the worker's counter, checksum.
//!    - UDP: source port from a hash of the inner flow (addresses, protocol, ports of an
//!      unfragmented TCP/UDP/SCTP packet) mapped into 32768..60999 the way Linux's
//!      `udp_flow_src_port` does (the default `ip_local_port_range`, upper bound
//!      excluded), destination `vxlan_port`, checksum 0 (RFC 7348 section 5: "SHOULD be
//!      transmitted as zero"; receivers MUST accept it).
//!    - VXLAN: flags 0x08, the route's VNI.
//!    - Inner Ethernet: source = our VtepMAC, destination = the route's VtepMAC.
//!
//! Then `Tx(uplink)`. No uplink port or node IP → `uplink-unconfigured`.

use super::egress::{neighbour, uplink};
use super::{TxState, ip4_error};
use crate::batch::IcmpErr;
use crate::{BATCH, Batch, Desc, DropReason, FrameMem, Next, PortId, Route, RouteId, Snapshot};
use std::net::Ipv4Addr;
use xdplane_wire::vxlan::{MAX_VNI, OVERHEAD};
use xdplane_wire::{
    EtherType, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, MacAddr, UdpPacket,
    VxlanRepr,
};

pub const NAME: &str = "vxlan-encap";

/// TTL of the outer header (Linux: the route's hop limit, `net.ipv4.ip_default_ttl` = 64).
pub const OUTER_TTL: u8 = 64;
/// Source port range of the outer UDP header: Linux's default `ip_local_port_range`, which
/// the vxlan driver uses when no `srcport` is configured (flannel configures none).
pub const SRC_PORT_MIN: u16 = 32768;
pub const SRC_PORT_MAX: u16 = 60999;

/// IPv4 ECN codepoints (RFC 3168 section 5).
const ECN_ECT0: u8 = 0b10;
const ECN_CE: u8 = 0b11;

pub fn run<M: FrameMem>(snap: &Snapshot, batch: &mut Batch, mem: &mut M, tx: &mut TxState) {
    let n = batch.len.min(BATCH);
    for (desc, meta) in batch.desc[..n].iter_mut().zip(&mut batch.meta[..n]) {
        if meta.next != Next::VxlanEncap {
            continue;
        }
        match forward(snap, tx, mem, desc, usize::from(meta.l3_offset), meta.route) {
            Ok(Ok(port)) => meta.tx(port),
            Ok(Err(err)) => meta.icmp_error(err),
            Err(reason) => meta.drop(reason),
        }
    }
}

/// A forwarded packet: MTU check, TTL − 1, encapsulation. `Ok(Err(_))` asks for an ICMP
/// error.
#[inline]
fn forward<M: FrameMem>(
    snap: &Snapshot,
    tx: &mut TxState,
    mem: &mut M,
    desc: &mut Desc,
    l3: usize,
    route: RouteId,
) -> Result<Result<PortId, IcmpErr>, DropReason> {
    let Some(&Route::Vxlan {
        vtep,
        vtep_mac,
        vni,
    }) = snap.routes.get(route as usize)
    else {
        // ip4-forward only sends packets here with a VXLAN route.
        return Err(DropReason::NoVerdict);
    };
    {
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        let bytes = frame.get_mut(l3..).ok_or(DropReason::Ip4Truncated)?;
        let mut ip = Ipv4Packet::new_checked(bytes).map_err(ip4_error)?;
        let limit = snap.node.uplink_mtu.saturating_sub(OVERHEAD as u32);
        if ip.dont_frag() && u32::from(ip.total_len()) > limit {
            return Ok(Err(IcmpErr::frag_needed(mtu16(limit))));
        }
        ip.decrement_ttl();
    }
    encapsulate(snap, tx, mem, desc, vtep, vtep_mac, vni).map(Ok)
}

/// An MTU for an ICMP "fragmentation needed" field (16 bits, RFC 1191).
#[inline]
pub(crate) fn mtu16(mtu: u32) -> u16 {
    u16::try_from(mtu).unwrap_or(u16::MAX)
}

/// Encapsulates the Ethernet frame at `desc` for the VTEP `vtep` (inner destination MAC
/// `vtep_mac`, VNI `vni`) and returns the uplink port. Checks (and the neighbour miss)
/// happen before any byte is written.
pub(crate) fn encapsulate<M: FrameMem>(
    snap: &Snapshot,
    tx: &mut TxState,
    mem: &mut M,
    desc: &mut Desc,
    vtep: Ipv4Addr,
    vtep_mac: [u8; 6],
    vni: u32,
) -> Result<PortId, DropReason> {
    let (port, uplink_mac) = uplink(snap)?;
    let node_ip = snap.node.node_ip.ok_or(DropReason::UplinkUnconfigured)?;
    let next_hop = if snap.node.on_uplink_subnet(vtep) {
        vtep
    } else {
        match snap.route(vtep) {
            Some(&Route::Gateway { next_hop } | &Route::Direct { next_hop }) => next_hop,
            _ => return Err(DropReason::VxlanVtepUnreachable),
        }
    };
    let next_hop_mac = neighbour(snap, &mut tx.misses, next_hop)?;
    if vni > MAX_VNI {
        return Err(DropReason::VxlanBadVni);
    }
    if mem.headroom(desc.addr) < OVERHEAD {
        return Err(DropReason::VxlanNoHeadroom);
    }
    let inner_len = desc.len as usize;
    if inner_len < EthernetFrame::<&[u8]>::HEADER_LEN {
        return Err(DropReason::EthTruncated);
    }
    // UDP length = UDP + VXLAN headers + inner frame; the IPv4 total length adds 20.
    let udp_len = u16::try_from(inner_len + 16)
        .ok()
        .filter(|l| *l <= u16::MAX - 20)
        .ok_or(DropReason::Ip4BadLength)?;

    let addr = desc.addr - OVERHEAD as u64;
    let frame = mem.frame_mut(addr, inner_len + OVERHEAD);
    let (outer, inner) = frame.split_at_mut(OVERHEAD);
    let (hash, inner_ecn) = inner_flow(inner);
    {
        let mut eth = EthernetFrame::new_unchecked(&mut inner[..]);
        eth.set_src_addr(MacAddr(snap.node.vtep_mac));
        eth.set_dst_addr(MacAddr(vtep_mac));
    }
    let emitted = EthernetRepr {
        src_addr: uplink_mac,
        dst_addr: next_hop_mac,
        ethertype: EtherType::IPV4,
    }
    .emit(outer)
    .and_then(|_| {
        Ipv4Repr {
            src_addr: node_ip,
            dst_addr: vtep,
            protocol: IpProtocol::UDP,
            payload_len: usize::from(udp_len),
            ttl: OUTER_TTL,
            dscp: 0,
            ecn: if inner_ecn == ECN_CE {
                ECN_ECT0
            } else {
                inner_ecn
            },
            ident: tx.next_ip_id(),
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut outer[14..])
    })
    .and_then(|_| VxlanRepr { vni }.emit(&mut outer[42..]));
    if emitted.is_err() {
        // The split gives `outer` exactly 50 bytes and the VNI was checked.
        return Err(DropReason::NoVerdict);
    }
    let mut udp = UdpPacket::new_unchecked(&mut outer[34..42]);
    udp.set_src_port(src_port(hash));
    udp.set_dst_port(snap.node.vxlan_port);
    udp.set_len(udp_len);
    udp.set_checksum(0);

    desc.addr = addr;
    desc.len += OVERHEAD as u32;
    Ok(port)
}

/// The inner flow's hash and ECN codepoint. IPv4: addresses, protocol and, for an
/// unfragmented TCP/UDP/SCTP packet, the ports (the fields Linux's flow dissector feeds
/// `skb_get_hash`). Anything else: the MAC addresses (Linux's fallback).
#[inline]
fn inner_flow(inner: &[u8]) -> (u32, u8) {
    let eth = EthernetFrame::new_unchecked(inner);
    if eth.ethertype() == EtherType::IPV4
        && let Ok(ip) = Ipv4Packet::new_checked(eth.payload())
    {
        let proto = ip.protocol();
        let ports = match ip.payload().get(..4) {
            Some(p)
                if !ip.is_fragment()
                    && matches!(proto.0, 6 | 17 | 132 /* TCP, UDP, SCTP */) =>
            {
                u32::from_be_bytes([p[0], p[1], p[2], p[3]])
            }
            _ => 0,
        };
        let h = flow_hash(&[
            u32::from(ip.src_addr()),
            u32::from(ip.dst_addr()),
            ports,
            u32::from(proto.0),
        ]);
        return (h, ip.ecn());
    }
    let d = eth.dst_addr().0;
    let s = eth.src_addr().0;
    let h = flow_hash(&[
        u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
        u32::from_be_bytes([d[4], d[5], s[0], s[1]]),
        u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
    ]);
    (h, 0)
}

/// A 32-bit hash of a few words: multiply-rotate per word, MurmurHash3's `fmix32` at the
/// end. Deterministic: a flow keeps its source port across workers and restarts.
#[inline]
fn flow_hash(words: &[u32]) -> u32 {
    let mut h: u32 = 0x9747_b28c;
    for w in words {
        let k = w
            .wrapping_mul(0xcc9e_2d51)
            .rotate_left(15)
            .wrapping_mul(0x1b87_3593);
        h = (h ^ k)
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Linux's `udp_flow_src_port`: fold the hash's low half into its high half, then scale
/// it into `[min, max)`.
#[inline]
pub fn src_port(hash: u32) -> u16 {
    let h = hash ^ (hash << 16);
    let span = u64::from(SRC_PORT_MAX - SRC_PORT_MIN);
    ((u64::from(h) * span) >> 32) as u16 + SRC_PORT_MIN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn src_port_stays_in_linux_range() {
        for h in [0, 1, 0xffff, 0x1_0000, u32::MAX, 0x8000_0000, 0x7fff_ffff] {
            let p = src_port(h);
            assert!((SRC_PORT_MIN..SRC_PORT_MAX).contains(&p), "{h:#x} → {p}");
        }
        assert_eq!(src_port(0), SRC_PORT_MIN);
        assert_eq!(src_port(u32::MAX ^ 0xffff), SRC_PORT_MAX - 1);
        // Spread: 10,000 consecutive flows hit thousands of different ports.
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            seen.insert(src_port(flow_hash(&[0x0af4_0102, 0x0af4_0203, i, 17])));
        }
        assert!(seen.len() > 8_000, "{}", seen.len());
    }
}
