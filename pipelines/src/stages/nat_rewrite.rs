//! Packet editing for NAT (not a stage): reading a packet's flow identity, rewriting
//! addresses and ports with incremental checksums, translating the packet quoted in an
//! ICMP error, and turning a TCP segment into the reset that rejects it.
//!
//! Checksums:
//! - IPv4 header and TCP/UDP (whose pseudo-header covers the addresses): RFC 1624 eqn. 3
//!   updates per changed 16/32-bit field, never a full recompute on the fast path. A UDP
//!   checksum of 0 ("none", RFC 768) stays 0 and a computed 0 is sent as `0xffff`.
//! - ICMP echo: the identifier is covered by the ICMP checksum (no pseudo-header), updated
//!   incrementally.
//! - SCTP: CRC32c (Castagnoli, RFC 9260 appendix A) over the SCTP packet, recomputed when
//!   a port changes; addresses are not covered.
//!
//! Every function reads through bounds-checked accessors: no input can make them panic.

use super::ip4_error;
use crate::DropReason;
use crate::tables::services::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use std::net::Ipv4Addr;
use xdplane_wire::checksum::{self, update_u16, update_u32};
use xdplane_wire::{IpProtocol, Ipv4Packet, Ipv4Repr, TcpFlags, TcpPacket, TcpRepr, UdpPacket};

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;

/// ICMP types handled here.
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_DST_UNREACHABLE: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAM_PROBLEM: u8 = 12;

/// TTL of the resets the dataplane sends (Linux's default).
pub const RST_TTL: u8 = 64;

/// The translatable identity of a packet: addresses and ports (for ICMP echo, both ports
/// are the identifier).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Ends {
    /// The same flow seen from the other direction.
    #[inline]
    pub const fn reversed(self) -> Ends {
        Ends {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// What `conntrack` and `nat` can do with a valid IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pkt {
    /// TCP, UDP or SCTP with a complete header, or an ICMP echo request/reply: trackable.
    Flow {
        proto: u8,
        ends: Ends,
        /// The TCP flags byte (FIN … CWR), for TCP only.
        tcp_flags: Option<u8>,
        /// ICMP echo request (may start a flow); an echo reply never does.
        echo_request: bool,
    },
    /// ICMP destination unreachable, time exceeded or parameter problem.
    IcmpError,
    /// TCP/UDP/SCTP (or ICMP) that cannot be translated: a fragment, or a truncated or
    /// inconsistent L4 header. `ports` when the first four L4 bytes are there (a first
    /// fragment, a short header).
    Opaque {
        proto: u8,
        ports: Option<(u16, u16)>,
    },
    /// Another protocol, or ICMP that is neither echo nor an error: never tracked.
    Other,
}

#[inline]
fn rd16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at + 2) {
        Some(&[h, l]) => Some(u16::from_be_bytes([h, l])),
        _ => None,
    }
}

#[inline]
fn wr16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[inline]
fn ports_of(l4: &[u8]) -> Option<(u16, u16)> {
    Some((rd16(l4, 0)?, rd16(l4, 2)?))
}

/// Classifies the IPv4 packet `l3` (already validated by `ip4-input`).
#[inline]
pub fn classify(l3: &[u8]) -> Pkt {
    let Ok(ip) = Ipv4Packet::new_checked(l3) else {
        return Pkt::Other;
    };
    let proto = ip.protocol().0;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let l4 = ip.payload();
    let opaque = |ports| Pkt::Opaque { proto, ports };
    if ip.is_fragment() {
        return match proto {
            PROTO_TCP | PROTO_UDP | PROTO_SCTP if ip.frag_offset() == 0 => opaque(ports_of(l4)),
            PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_ICMP => opaque(None),
            _ => Pkt::Other,
        };
    }
    let flow = |sport, dport, tcp_flags, echo_request| Pkt::Flow {
        proto,
        ends: Ends {
            src,
            dst,
            sport,
            dport,
        },
        tcp_flags,
        echo_request,
    };
    match proto {
        PROTO_TCP => match TcpPacket::new_checked(l4) {
            Ok(t) => flow(t.src_port(), t.dst_port(), Some(t.flags().0 as u8), false),
            Err(_) => opaque(ports_of(l4)),
        },
        PROTO_UDP => match UdpPacket::new_checked(l4) {
            Ok(u) => flow(u.src_port(), u.dst_port(), None, false),
            Err(_) => opaque(ports_of(l4)),
        },
        PROTO_SCTP => match (ports_of(l4), l4.len() >= 12) {
            (Some((s, d)), true) => flow(s, d, None, false),
            (ports, _) => opaque(ports),
        },
        PROTO_ICMP => {
            if l4.len() < 8 {
                // Left to the local decision (icmp-echo counts icmp-malformed).
                return Pkt::Other;
            }
            match l4.first().copied() {
                Some(t @ (ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY)) => match rd16(l4, 4) {
                    Some(id) => flow(id, id, None, t == ICMP_ECHO_REQUEST),
                    None => Pkt::Other,
                },
                Some(ICMP_DST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAM_PROBLEM) => {
                    Pkt::IcmpError
                }
                _ => Pkt::Other,
            }
        }
        _ => Pkt::Other,
    }
}

/// Rewrites the packet `l3` (IPv4 header onwards) from `from` to `to`: addresses with the
/// header checksum, ports or echo identifier with the L4 checksum. `from` is what
/// [`classify`] read from the packet.
#[inline]
pub fn rewrite_packet(l3: &mut [u8], proto: u8, from: Ends, to: Ends) -> Result<(), DropReason> {
    let mut ip = Ipv4Packet::new_checked(l3).map_err(ip4_error)?;
    let mut c = ip.checksum();
    if from.src != to.src {
        c = update_u32(c, u32::from(from.src), u32::from(to.src));
        ip.set_src_addr(to.src);
    }
    if from.dst != to.dst {
        c = update_u32(c, u32::from(from.dst), u32::from(to.dst));
        ip.set_dst_addr(to.dst);
    }
    ip.set_checksum(c);
    rewrite_l4(proto, ip.payload_mut(), from, to, true)
}

/// Rewrites ports (or the echo identifier) and the L4 checksum of `l4`, whose packet's
/// addresses change from `from` to `to`. `complete`: `l4` is the whole L4 packet (SCTP's
/// CRC is recomputed only then; a quote in an ICMP error usually is not complete).
/// Fields beyond `l4` are left alone (a short quote).
#[inline]
fn rewrite_l4(
    proto: u8,
    l4: &mut [u8],
    from: Ends,
    to: Ends,
    complete: bool,
) -> Result<(), DropReason> {
    let ports_change = from.sport != to.sport || from.dport != to.dport;
    match proto {
        PROTO_TCP | PROTO_UDP => {
            let at = if proto == PROTO_TCP { 16 } else { 6 };
            if let Some(old) = rd16(l4, at)
                && !(proto == PROTO_UDP && old == 0)
            {
                let mut c = old;
                c = update_u32(c, u32::from(from.src), u32::from(to.src));
                c = update_u32(c, u32::from(from.dst), u32::from(to.dst));
                c = update_u16(c, from.sport, to.sport);
                c = update_u16(c, from.dport, to.dport);
                if proto == PROTO_UDP && c == 0 {
                    c = 0xffff;
                }
                wr16(l4, at, c);
            }
            if ports_change {
                if l4.len() < 4 {
                    return Err(DropReason::NatUnsupported);
                }
                wr16(l4, 0, to.sport);
                wr16(l4, 2, to.dport);
            }
        }
        PROTO_SCTP => {
            if ports_change {
                if l4.len() < 4 {
                    return Err(DropReason::NatUnsupported);
                }
                wr16(l4, 0, to.sport);
                wr16(l4, 2, to.dport);
                if complete && l4.len() >= 12 {
                    fill_sctp_checksum(l4);
                }
            }
        }
        PROTO_ICMP => {
            if from.sport != to.sport {
                let (Some(c), Some(_)) = (rd16(l4, 2), rd16(l4, 4)) else {
                    return Err(DropReason::NatUnsupported);
                };
                wr16(l4, 2, update_u16(c, from.sport, to.sport));
                wr16(l4, 4, to.sport);
            }
        }
        _ => {
            if ports_change {
                return Err(DropReason::NatUnsupported);
            }
        }
    }
    Ok(())
}

/// The packet quoted by the ICMP error `l3`: its protocol and identity, when it is a
/// first fragment (or whole packet) of TCP, UDP, SCTP or an ICMP echo with at least the
/// ports (identifier) quoted.
#[inline]
pub fn quoted_flow(l3: &[u8]) -> Option<(u8, Ends)> {
    let ip = Ipv4Packet::new_checked(l3).ok()?;
    let quote = ip.payload().get(8..)?;
    let (proto, ends, _) = parse_quote(quote)?;
    Some((proto, ends))
}

/// Parses a quoted IPv4 header and the start of its payload: protocol, identity, header
/// length. The quote is usually truncated, so no total-length check.
#[inline]
fn parse_quote(q: &[u8]) -> Option<(u8, Ends, usize)> {
    let vihl = *q.first()?;
    if vihl >> 4 != 4 {
        return None;
    }
    let hl = usize::from(vihl & 0x0f) * 4;
    if hl < 20 || q.len() < hl {
        return None;
    }
    let frag = rd16(q, 6)?;
    if frag & 0x1fff != 0 {
        return None;
    }
    let proto = *q.get(9)?;
    let addr = |at: usize| -> Option<Ipv4Addr> {
        let b = q.get(at..at + 4)?;
        Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    let (src, dst) = (addr(12)?, addr(16)?);
    let l4 = q.get(hl..)?;
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => ports_of(l4)?,
        PROTO_ICMP => match l4.first() {
            Some(&(ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY)) => {
                let id = rd16(l4, 4)?;
                (id, id)
            }
            _ => return None,
        },
        _ => return None,
    };
    Some((
        proto,
        Ends {
            src,
            dst,
            sport,
            dport,
        },
        hl,
    ))
}

/// Translates the ICMP error `l3` whose quoted packet `q` (as [`quoted_flow`] read it)
/// belongs to a tracked flow: `r` is what a packet with the tuple `q.reversed()` becomes.
/// The quoted packet becomes `r.reversed()` (what the receiver of the error sent, before
/// translation): its addresses with the quoted header checksum, its ports or identifier
/// with the quoted L4 checksum when that is inside the quote (UDP's always is, TCP's from
/// 18 quoted bytes on, SCTP's CRC only when the whole packet is quoted). The outer
/// destination becomes `r.dst`, and the outer source `r.src` when it was the translated
/// endpoint (`q.dst`); an error from a router on the way keeps the router's address. The
/// outer header checksum is updated and the ICMP checksum recomputed.
pub fn translate_icmp_error(l3: &mut [u8], proto: u8, q: Ends, r: Ends) -> Result<(), DropReason> {
    let t = r.reversed();
    let mut ip = Ipv4Packet::new_checked(l3).map_err(ip4_error)?;
    let (osrc, odst) = (ip.src_addr(), ip.dst_addr());
    {
        let icmp = ip.payload_mut();
        let quote = icmp.get_mut(8..).ok_or(DropReason::NatUnsupported)?;
        let (_, _, hl) = parse_quote(quote).ok_or(DropReason::NatUnsupported)?;
        let qtotal = usize::from(rd16(quote, 2).unwrap_or(0));
        let (qh, ql4) = quote.split_at_mut(hl);
        // Quoted header: addresses and its checksum.
        let mut c = rd16(qh, 10).unwrap_or(0);
        c = update_u32(c, u32::from(q.src), u32::from(t.src));
        c = update_u32(c, u32::from(q.dst), u32::from(t.dst));
        wr16(qh, 10, c);
        if let Some(s) = qh.get_mut(12..16) {
            s.copy_from_slice(&t.src.octets());
        }
        if let Some(s) = qh.get_mut(16..20) {
            s.copy_from_slice(&t.dst.octets());
        }
        // The quoted L4 bytes that belong to the quoted packet.
        let l4len = qtotal.saturating_sub(hl);
        let complete = l4len > 0 && l4len <= ql4.len();
        let ql4 = if complete { &mut ql4[..l4len] } else { ql4 };
        rewrite_l4(proto, ql4, q, t, complete)?;
    }
    let new_src = if osrc == q.dst { r.src } else { osrc };
    let new_dst = r.dst;
    let mut c = ip.checksum();
    c = update_u32(c, u32::from(osrc), u32::from(new_src));
    c = update_u32(c, u32::from(odst), u32::from(new_dst));
    ip.set_src_addr(new_src);
    ip.set_dst_addr(new_dst);
    ip.set_checksum(c);
    let icmp = ip.payload_mut();
    wr16(icmp, 2, 0);
    let c = checksum::checksum(icmp);
    wr16(icmp, 2, c);
    Ok(())
}

/// Turns the TCP segment `l3` into the reset that refuses it, as Linux's `nf_send_reset`
/// does: from its destination address and port to its source, no options; a segment with
/// ACK gets `RST` with `seq = its ack`; otherwise `RST|ACK` with `seq = 0` and
/// `ack = seq + payload length + SYN + FIN` (RFC 9293 section 3.10.7.1). IPv4: TTL 64,
/// DF, identification 0, DSCP 0, no options. Returns the new length of `l3` (40). A reset
/// is never answered (`service-no-endpoints`).
pub fn build_rst(l3: &mut [u8]) -> Result<usize, DropReason> {
    let (src, dst, sport, dport, seq, ack, flags, payload) = {
        let ip = Ipv4Packet::new_checked(&*l3).map_err(ip4_error)?;
        let tcp = TcpPacket::new_checked(ip.payload()).map_err(|_| DropReason::NatUnsupported)?;
        let payload = ip.payload().len() - usize::from(tcp.header_len());
        (
            ip.src_addr(),
            ip.dst_addr(),
            tcp.src_port(),
            tcp.dst_port(),
            tcp.seq_number(),
            tcp.ack_number(),
            tcp.flags(),
            payload as u32,
        )
    };
    if flags.contains(TcpFlags::RST) {
        return Err(DropReason::ServiceNoEndpoints);
    }
    let (rseq, rack, rflags) = if flags.contains(TcpFlags::ACK) {
        (ack, 0, TcpFlags::RST)
    } else {
        let ack = seq
            .wrapping_add(payload)
            .wrapping_add(u32::from(flags.contains(TcpFlags::SYN)))
            .wrapping_add(u32::from(flags.contains(TcpFlags::FIN)));
        (0, ack, TcpFlags::RST | TcpFlags::ACK)
    };
    let (head, rest) = l3
        .split_at_mut_checked(20)
        .ok_or(DropReason::Ip4Truncated)?;
    Ipv4Repr {
        src_addr: dst,
        dst_addr: src,
        protocol: IpProtocol::TCP,
        payload_len: 20,
        ttl: RST_TTL,
        dscp: 0,
        ecn: 0,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(head)
    .map_err(|_| DropReason::Ip4Truncated)?;
    TcpRepr {
        src_port: dport,
        dst_port: sport,
        seq_number: rseq,
        ack_number: rack,
        flags: rflags,
        window_len: 0,
        urgent_at: 0,
        options: &[],
        payload: &[],
    }
    .emit(rest, dst, src)
    .map_err(|_| DropReason::NatUnsupported)?;
    Ok(40)
}

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78) lookup table.
const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC32c of `data` (RFC 9260 appendix A, RFC 3720 appendix B.4).
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

/// Feeds `data` into a running (not yet complemented) CRC32c register.
#[inline]
fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The CRC32c of an SCTP packet as if its checksum field (8..12) were zero.
#[inline]
fn sctp_crc(sctp: &[u8]) -> Option<u32> {
    let head = sctp.get(..8)?;
    let tail = sctp.get(12..)?;
    let crc = crc32c_update(!0, head);
    let crc = crc32c_update(crc, &[0; 4]);
    Some(!crc32c_update(crc, tail))
}

/// Fills the checksum of the SCTP packet `sctp` (common header at offset 0, checksum at
/// 8..12): CRC32c over the packet with the field zeroed, stored least significant byte
/// first as Linux's `sctp_compute_cksum` does (RFC 9260 appendix A).
#[inline]
pub fn fill_sctp_checksum(sctp: &mut [u8]) {
    if let Some(c) = sctp_crc(sctp)
        && let Some(f) = sctp.get_mut(8..12)
    {
        f.copy_from_slice(&c.to_le_bytes());
    }
}

/// Whether the checksum of the SCTP packet `sctp` verifies.
pub fn verify_sctp_checksum(sctp: &[u8]) -> bool {
    match (sctp.get(8..12), sctp_crc(sctp)) {
        (Some(&[a, b, c, d]), Some(crc)) => crc == u32::from_le_bytes([a, b, c, d]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vectors() {
        // RFC 3720 appendix B.4.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let inc: Vec<u8> = (0..32u8).collect();
        assert_eq!(crc32c(&inc), 0x46dd_794e);
        let dec: Vec<u8> = (0..32u8).rev().collect();
        assert_eq!(crc32c(&dec), 0x113f_db5c);
        // The common check value.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    fn udp_packet(csum: bool) -> Vec<u8> {
        let mut l3 = vec![0u8; 20 + 8 + 5];
        Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 244, 1, 2),
            dst_addr: Ipv4Addr::new(10, 96, 0, 10),
            protocol: IpProtocol::UDP,
            payload_len: 13,
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 7,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut l3)
        .unwrap();
        xdplane_wire::UdpRepr {
            src_port: 5000,
            dst_port: 53,
            payload: b"hello",
        }
        .emit(
            &mut l3[20..],
            Ipv4Addr::new(10, 244, 1, 2),
            Ipv4Addr::new(10, 96, 0, 10),
        )
        .unwrap();
        if !csum {
            l3[26] = 0;
            l3[27] = 0;
        }
        l3
    }

    #[test]
    fn udp_rewrite_matches_recompute() {
        let mut p = udp_packet(true);
        let Pkt::Flow { proto, ends, .. } = classify(&p) else {
            panic!("not a flow")
        };
        let to = Ends {
            dst: Ipv4Addr::new(10, 244, 2, 7),
            dport: 8053,
            ..ends
        };
        rewrite_packet(&mut p, proto, ends, to).unwrap();
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(udp.dst_port(), 8053);
        assert!(udp.verify_checksum(ends.src, to.dst));
        assert_ne!(udp.checksum(), 0);

        let mut p = udp_packet(false);
        rewrite_packet(&mut p, proto, ends, to).unwrap();
        assert_eq!(&p[26..28], &[0, 0]);
    }

    #[test]
    fn classify_cases() {
        let p = udp_packet(true);
        assert!(matches!(classify(&p), Pkt::Flow { proto: 17, .. }));
        // Truncated UDP header.
        let mut short = p[..24].to_vec();
        short[2..4].copy_from_slice(&24u16.to_be_bytes());
        short[10] = 0;
        short[11] = 0;
        assert_eq!(
            classify(&short),
            Pkt::Opaque {
                proto: 17,
                ports: Some((5000, 53))
            }
        );
        // A later fragment.
        let mut frag = p.clone();
        frag[6] = 0x00;
        frag[7] = 0x10;
        assert_eq!(
            classify(&frag),
            Pkt::Opaque {
                proto: 17,
                ports: None
            }
        );
        assert_eq!(classify(&[]), Pkt::Other);
    }

    #[test]
    fn quote_parsing_rejects_garbage() {
        assert_eq!(parse_quote(&[]), None);
        assert_eq!(parse_quote(&[0x45; 10]), None);
        let p = udp_packet(true);
        let (proto, ends, hl) = parse_quote(&p[..28]).unwrap();
        assert_eq!((proto, hl), (17, 20));
        assert_eq!((ends.sport, ends.dport), (5000, 53));
    }
}
