//! `icmp-error`: turns a packet that could not be forwarded into the ICMP error that
//! answers it, in place (RFC 792, RFC 1812 section 4.3.2).
//!
//! Stages ask for an error with [`crate::Meta::icmp_error`]; the reason in the request is
//! the drop counted when no error is sent. No error is sent (RFC 1122 section 3.2.2,
//! RFC 1812 section 4.3.2.7) for:
//! - an ICMP error (or an ICMP message whose type cannot be read): only echo, router
//!   advertisement/solicitation, timestamp, information and address mask messages
//!   (types 0, 8, 9, 10, 13–18) are answered, like Linux's `icmp_send`;
//! - a fragment other than the first;
//! - a frame sent to a link-layer broadcast or multicast address;
//! - a source that does not name one host: unspecified, limited or directed broadcast
//!   (of the pod CIDR or the uplink subnet), multicast, loopback, class E;
//! - a destination that is a broadcast (limited or directed) or multicast address;
//! - a packet from the uplink when the node has no node IP to send it from.
//!
//! Errors are rate-limited by the worker's token bucket (default 1000/s, burst 50, like
//! Linux's `net.ipv4.icmp_msgs_per_sec` / `icmp_msgs_burst`); over the limit the packet is
//! dropped as `icmp-error-rate-limited`. Like Linux (`icmpv4_mask_allow`), "fragmentation
//! needed" is not limited: path MTU discovery must not black-hole.
//!
//! The error reuses the frame: Ethernet, a new IPv4 header (source = the pod gateway for
//! packets from pods or from the overlay, the node IP for packets from the uplink;
//! destination = the offending source; TTL 64; precedence 6 "internetwork control",
//! RFC 1812 section 4.3.2.5; DF off; identification from the worker's counter), the ICMP
//! header (type, code, next-hop MTU for code 4, RFC 1191) and the offending packet's IP
//! header with the first 8 bytes of its payload (RFC 792), checksums computed. It leaves by
//! the ingress port, the Ethernet destination being the offending frame's source and the
//! source the port's MAC. An error about a packet `conntrack`/`nat` translated is
//! translated back through its flow (the quote and the destination become what the
//! sender sent; a flow gone meanwhile drops it with the request's reason), as Linux's
//! conntrack translates errors related to a NATed connection. A packet that arrived by
//! VXLAN is answered through the tunnel (routed by the FIB and encapsulated), as the kernel
//! does for `flannel.1`.

use super::{TxState, conntrack, egress, ip4_error, nat_rewrite};
use crate::batch::IcmpErr;
use crate::tables::conntrack::FlowTable;
use crate::{BATCH, Batch, Desc, DropReason, FrameMem, Next, PortId, PortKind, Snapshot};
use std::net::Ipv4Addr;
use xdplane_wire::icmpv4::unreachable;
use xdplane_wire::{
    EtherType, EthernetFrame, EthernetRepr, Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet,
    Ipv4Repr, MacAddr,
};

pub const NAME: &str = "icmp-error";

/// TTL of the errors (Linux's default, RFC 1700).
pub const ERROR_TTL: u8 = 64;
/// DSCP of the errors: class selector 6, the old precedence 6 "internetwork control"
/// (RFC 1812 section 4.3.2.5, Linux's `IPTOS_PREC_INTERNETCONTROL`).
pub const ERROR_DSCP: u8 = 48;
/// Bytes of the offending payload quoted after its IP header (RFC 792).
pub const QUOTED_PAYLOAD: usize = 8;

/// Ethernet + IPv4 + ICMP header in front of the quote.
const PREFIX: usize = 14 + 20 + 8;
const NANOS: u64 = 1_000_000_000;

/// A token bucket on the batch clock: `per_sec` tokens a second, at most `burst`, full at
/// the start.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    per_sec: u64,
    /// Capacity and level in token-nanoseconds (one token = 10⁹).
    cap: u64,
    level: u64,
    last_ns: u64,
}

impl TokenBucket {
    pub fn new(per_sec: u32, burst: u32) -> TokenBucket {
        let cap = u64::from(burst) * NANOS;
        TokenBucket {
            per_sec: u64::from(per_sec),
            cap,
            level: cap,
            last_ns: 0,
        }
    }

    /// Takes one token if there is one, after refilling for the time since the last call.
    /// A clock that goes backwards refills nothing.
    #[inline]
    pub fn allow(&mut self, now_ns: u64) -> bool {
        if now_ns > self.last_ns {
            let add = (now_ns - self.last_ns).saturating_mul(self.per_sec);
            self.level = self.level.saturating_add(add).min(self.cap);
            self.last_ns = now_ns;
        }
        if self.level >= NANOS {
            self.level -= NANOS;
            true
        } else {
            false
        }
    }
}

pub fn run<M: FrameMem>(
    snap: &Snapshot,
    batch: &mut Batch,
    mem: &mut M,
    limit: &mut TokenBucket,
    tx: &mut TxState,
    flows: &FlowTable,
) {
    let n = batch.len.min(BATCH);
    let now = batch.now_ns;
    for (desc, meta) in batch.desc[..n].iter_mut().zip(&mut batch.meta[..n]) {
        if meta.next != Next::IcmpError {
            continue;
        }
        let Some(err) = meta.icmp else {
            meta.drop(DropReason::NoVerdict);
            continue;
        };
        let from = Ingress {
            port: meta.in_port,
            decapped: meta.decapped,
            l3: usize::from(meta.l3_offset),
        };
        let flows = meta.translated.then_some(flows);
        match answer(snap, limit, now, tx, mem, desc, from, err, flows) {
            Ok(port) => meta.tx(port),
            Err(reason) => meta.drop(reason),
        }
    }
}

/// Where the offending packet came from.
#[derive(Clone, Copy)]
struct Ingress {
    port: PortId,
    decapped: bool,
    l3: usize,
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn answer<M: FrameMem>(
    snap: &Snapshot,
    limit: &mut TokenBucket,
    now: u64,
    tx: &mut TxState,
    mem: &mut M,
    desc: &mut Desc,
    from: Ingress,
    err: IcmpErr,
    translated: Option<&FlowTable>,
) -> Result<PortId, DropReason> {
    let port = snap.port(from.port).ok_or(DropReason::PortDown)?;
    let port_mac = MacAddr(port.mac);
    let (src, dst, peer_mac, quote) = {
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        let eth = EthernetFrame::new_checked(&*frame).map_err(|_| DropReason::EthTruncated)?;
        if eth.dst_addr().is_multicast() {
            return Err(err.reason);
        }
        let bytes = frame.get(from.l3..).ok_or(DropReason::Ip4Truncated)?;
        let ip = Ipv4Packet::new_checked(bytes).map_err(ip4_error)?;
        if !may_answer(snap, &ip) {
            return Err(err.reason);
        }
        let src = if from.decapped || port.kind == PortKind::Pod {
            snap.node.gateway
        } else {
            snap.node.node_ip.ok_or(err.reason)?
        };
        if src.is_unspecified() {
            return Err(err.reason);
        }
        let quote = usize::from(ip.header_len()) + ip.payload().len().min(QUOTED_PAYLOAD);
        (src, ip.src_addr(), eth.src_addr(), quote)
    };
    let pmtu =
        err.msg_type == Icmpv4Message::DST_UNREACHABLE.0 && err.code == unreachable::FRAG_NEEDED;
    if !pmtu && !limit.allow(now) {
        return Err(DropReason::IcmpErrorRateLimited);
    }

    let len = PREFIX + quote;
    if mem.room(desc.addr) < len || from.l3 + quote > len {
        return Err(err.reason);
    }
    let frame = mem.frame_mut(desc.addr, len);
    frame.copy_within(from.l3..from.l3 + quote, PREFIX);
    let (head, _) = frame.split_at_mut(PREFIX);
    let built = EthernetRepr {
        src_addr: port_mac,
        dst_addr: peer_mac,
        ethertype: EtherType::IPV4,
    }
    .emit(head)
    .and_then(|_| {
        Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            protocol: IpProtocol::ICMP,
            payload_len: 8 + quote,
            ttl: ERROR_TTL,
            dscp: ERROR_DSCP,
            ecn: 0,
            ident: tx.next_ip_id(),
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut head[14..])
    });
    if built.is_err() {
        // `head` is exactly PREFIX bytes and the lengths are small: cannot happen.
        return Err(DropReason::NoVerdict);
    }
    let mut icmp = Icmpv4Packet::new_unchecked(&mut frame[34..]);
    icmp.set_msg_type(Icmpv4Message(err.msg_type));
    icmp.set_msg_code(err.code);
    icmp.clear_rest_of_header();
    if err.mtu != 0 {
        icmp.set_next_hop_mtu(err.mtu);
    }
    icmp.fill_checksum();
    // len ≤ room, which fits in a chunk.
    desc.len = len as u32;
    if let Some(flows) = translated {
        // The quote is the packet as translated: give its sender the packet it sent.
        let l3 = frame.get_mut(14..).ok_or(DropReason::Ip4Truncated)?;
        let (proto, q) = nat_rewrite::quoted_flow(l3).ok_or(err.reason)?;
        let hit = flows
            .lookup(&conntrack::tuple(proto, q.reversed()))
            .ok_or(err.reason)?;
        nat_rewrite::translate_icmp_error(l3, proto, q, conntrack::ends(&hit.rewrite))?;
    }

    if from.decapped {
        egress::send_by_route(snap, tx, mem, desc)
    } else {
        Ok(from.port)
    }
}

/// The RFC 1122 section 3.2.2 / RFC 1812 section 4.3.2.7 rules on the offending packet.
#[inline]
fn may_answer<T: AsRef<[u8]>>(snap: &Snapshot, ip: &Ipv4Packet<T>) -> bool {
    if ip.frag_offset() != 0 {
        return false;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let node = &snap.node;
    let directed = |a: Ipv4Addr| {
        broadcast_of(node.pod_net, node.pod_prefix) == Some(a)
            || broadcast_of(node.uplink_net, node.uplink_prefix) == Some(a)
    };
    if src.is_unspecified()
        || src.is_broadcast()
        || src.is_multicast()
        || src.is_loopback()
        || src.octets()[0] >= 240
        || directed(src)
    {
        return false;
    }
    if dst.is_broadcast() || dst.is_multicast() || directed(dst) {
        return false;
    }
    if ip.protocol() == IpProtocol::ICMP {
        // Informational messages may be answered; errors and unreadable types may not.
        return matches!(
            ip.payload().first(),
            Some(0 | 8 | 9 | 10 | 13 | 14 | 15 | 16 | 17 | 18)
        );
    }
    true
}

/// The directed broadcast address of a subnet (none for /0, /31 and /32: RFC 3021).
#[inline]
fn broadcast_of(net: Ipv4Addr, prefix: u8) -> Option<Ipv4Addr> {
    if prefix == 0 || prefix >= 31 {
        return None;
    }
    let host = u32::MAX >> prefix;
    Some(Ipv4Addr::from(u32::from(net) | host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bursts_then_refills_at_its_rate() {
        let mut b = TokenBucket::new(1000, 50);
        let t0 = 5 * NANOS;
        assert_eq!((0..60).filter(|_| b.allow(t0)).count(), 50);
        assert!(!b.allow(t0));
        // 1 ms later: one token.
        assert!(b.allow(t0 + 1_000_000));
        assert!(!b.allow(t0 + 1_000_000));
        // Half a millisecond gives half a token; another half completes it.
        assert!(!b.allow(t0 + 1_500_000));
        assert!(b.allow(t0 + 2_000_000));
        // A long pause refills to the burst, not beyond.
        let later = t0 + 3600 * NANOS;
        assert_eq!((0..60).filter(|_| b.allow(later)).count(), 50);
        // The clock going backwards refills nothing.
        assert!(!b.allow(t0));
        // Burst 0: never.
        let mut off = TokenBucket::new(1000, 0);
        assert!(!off.allow(u64::MAX));
    }

    #[test]
    fn broadcast_addresses() {
        let net = Ipv4Addr::new(10, 244, 1, 0);
        assert_eq!(broadcast_of(net, 24), Some(Ipv4Addr::new(10, 244, 1, 255)));
        assert_eq!(broadcast_of(net, 31), None);
        assert_eq!(broadcast_of(net, 0), None);
    }
}
