//! IPv4 (RFC 791) headers.

use crate::checksum;
use crate::{WireError, be16, ipv4_at, put16};
use std::fmt;
use std::net::Ipv4Addr;

/// An IP protocol number (IANA "Assigned Internet Protocol Numbers").
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// ICMP (RFC 792).
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// IGMP (RFC 1112).
    pub const IGMP: IpProtocol = IpProtocol(2);
    /// TCP (RFC 9293).
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP (RFC 768).
    pub const UDP: IpProtocol = IpProtocol(17);
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IpProtocol::ICMP => f.write_str("ICMP"),
            IpProtocol::IGMP => f.write_str("IGMP"),
            IpProtocol::TCP => f.write_str("TCP"),
            IpProtocol::UDP => f.write_str("UDP"),
            IpProtocol(p) => write!(f, "proto {p}"),
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Minimum (option-less) IPv4 header length (RFC 791: IHL 5).
pub const MIN_HEADER_LEN: usize = 20;
/// Maximum IPv4 header length (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;
/// The "don't fragment" flag (RFC 791), in the flags/fragment-offset word.
const FLAG_DF: u16 = 0x4000;
/// The "more fragments" flag (RFC 791).
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC_ADDR: usize = 12;
    pub const DST_ADDR: usize = 16;
    pub const OPTIONS: usize = 20;
}

/// A view of an IPv4 packet.
///
/// `new_checked` validates, in this order: buffer ≥ 20 bytes (`Truncated`), version 4
/// (`BadVersion`), IHL ≥ 5 and header within the buffer (`BadHeaderLen`), total length ≥
/// header length and ≤ buffer (`BadLength`). Bytes after the total length (Ethernet padding)
/// are allowed and excluded from [`Ipv4Packet::payload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The checks of [`Ipv4Packet::new_checked`].
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = usize::from(self.header_len());
        if hl < MIN_HEADER_LEN || hl > len {
            return Err(WireError::BadHeaderLen);
        }
        let tl = usize::from(self.total_len());
        if tl < hl || tl > len {
            return Err(WireError::BadLength);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    /// Differentiated Services Code Point (RFC 2474).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }
    /// Explicit Congestion Notification (RFC 3168).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }
    /// Fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLG_OFF) & FRAG_OFFSET_MASK) << 3
    }
    /// A fragment of a larger datagram (MF set or a non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::SRC_ADDR)
    }
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::DST_ADDR)
    }
    /// Length of the options (header length − 20), 0 when the IHL is below 5.
    #[inline]
    pub fn options_len(&self) -> usize {
        usize::from(self.header_len()).saturating_sub(MIN_HEADER_LEN)
    }
    /// The option bytes (empty if the header-length field is inconsistent).
    #[inline]
    pub fn options(&self) -> &[u8] {
        let hl = usize::from(self.header_len());
        self.buffer.as_ref().get(field::OPTIONS..hl).unwrap_or(&[])
    }
    /// Whether the header checksum verifies (RFC 791, RFC 1071).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let hl = usize::from(self.header_len());
        match self.buffer.as_ref().get(..hl) {
            Some(h) => checksum::verify(h),
            None => false,
        }
    }
    /// The payload: from the header's end to the total length, Ethernet padding excluded
    /// (empty if the length fields are inconsistent with the buffer).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let hl = usize::from(self.header_len());
        let tl = usize::from(self.total_len());
        self.buffer.as_ref().get(hl..tl).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (v << 4);
    }
    /// Sets the header length in bytes (stored as IHL = len / 4). Changing a length field
    /// can make the view inconsistent with its buffer: length-dependent accessors then
    /// return empty slices rather than panic.
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) & 0x0f);
    }
    #[inline]
    pub fn set_dscp(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (v << 2);
    }
    #[inline]
    pub fn set_ecn(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (v & 0x03);
    }
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }
    #[inline]
    fn set_flg_off_bits(&mut self, mask: u16, value: u16) {
        let d = self.buffer.as_mut();
        let w = (be16(d, field::FLG_OFF) & !mask) | (value & mask);
        put16(d, field::FLG_OFF, w);
    }
    #[inline]
    pub fn set_dont_frag(&mut self, v: bool) {
        self.set_flg_off_bits(FLAG_DF, if v { FLAG_DF } else { 0 });
    }
    #[inline]
    pub fn set_more_frags(&mut self, v: bool) {
        self.set_flg_off_bits(FLAG_MF, if v { FLAG_MF } else { 0 });
    }
    /// Sets the fragment offset in bytes (rounded down to 8-byte units).
    #[inline]
    pub fn set_frag_offset(&mut self, bytes: u16) {
        self.set_flg_off_bits(FRAG_OFFSET_MASK, bytes >> 3);
    }
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }
    #[inline]
    pub fn set_protocol(&mut self, v: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = v.0;
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR..field::SRC_ADDR + 4].copy_from_slice(&a.octets());
    }
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR..field::DST_ADDR + 4].copy_from_slice(&a.octets());
    }
    /// Recomputes the header checksum over the header (options included).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = usize::from(self.header_len());
        let c = match self.buffer.as_ref().get(..hl) {
            Some(h) => checksum::checksum(h),
            None => return,
        };
        self.set_checksum(c);
    }
    /// Decrements the TTL and updates the header checksum incrementally (RFC 1624 eqn. 3
    /// on the TTL/protocol word). Returns the new TTL, or `None` (packet untouched) if the
    /// TTL is already 0.
    #[inline]
    pub fn decrement_ttl(&mut self) -> Option<u8> {
        let ttl = self.ttl();
        let new = ttl.checked_sub(1)?;
        let proto = self.protocol().0;
        let old_word = u16::from_be_bytes([ttl, proto]);
        let new_word = u16::from_be_bytes([new, proto]);
        let c = checksum::update_u16(self.checksum(), old_word, new_word);
        self.set_ttl(new);
        self.set_checksum(c);
        Some(new)
    }
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = usize::from(self.header_len());
        self.buffer
            .as_mut()
            .get_mut(field::OPTIONS..hl)
            .unwrap_or(&mut [])
    }
    /// The payload, mutable (see [`Ipv4Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = usize::from(self.header_len());
        let tl = usize::from(self.total_len());
        self.buffer.as_mut().get_mut(hl..tl).unwrap_or(&mut [])
    }
}

/// An IPv4 header without options, as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: IpProtocol,
    /// Length of the payload (total length − header length).
    pub payload_len: usize,
    pub ttl: u8,
    pub dscp: u8,
    pub ecn: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// In bytes, a multiple of 8.
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// Length of the header `emit` writes.
    pub const HEADER_LEN: usize = MIN_HEADER_LEN;

    /// Parses a checked packet; the header checksum must verify. Options are skipped
    /// (`payload_len` excludes them).
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Ipv4Repr, WireError> {
        p.check_len()?;
        if !p.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        Ok(Ipv4Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: usize::from(p.total_len()) - usize::from(p.header_len()),
            ttl: p.ttl(),
            dscp: p.dscp(),
            ecn: p.ecn(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
        })
    }

    /// Header length plus payload length.
    pub fn total_len(&self) -> usize {
        Self::HEADER_LEN + self.payload_len
    }

    /// Writes the 20-byte header (checksum filled) at the start of `buf`; returns 20. The
    /// payload is the caller's to write after it. The header is assembled in a local array
    /// and stored with one copy (encapsulation and ICMP errors write one per packet).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let total = u16::try_from(self.total_len()).map_err(|_| WireError::BadLength)?;
        let hdr = buf
            .first_chunk_mut::<{ Self::HEADER_LEN }>()
            .ok_or(WireError::BufferTooSmall)?;
        let flg_off = (if self.dont_frag { FLAG_DF } else { 0 })
            | (if self.more_frags { FLAG_MF } else { 0 })
            | ((self.frag_offset >> 3) & FRAG_OFFSET_MASK);
        let [t0, t1] = total.to_be_bytes();
        let [i0, i1] = self.ident.to_be_bytes();
        let [f0, f1] = flg_off.to_be_bytes();
        let [s0, s1, s2, s3] = self.src_addr.octets();
        let [d0, d1, d2, d3] = self.dst_addr.octets();
        let mut h: [u8; MIN_HEADER_LEN] = [
            0x45, // version 4, IHL 5
            (self.dscp << 2) | (self.ecn & 0x03),
            t0,
            t1,
            i0,
            i1,
            f0,
            f1,
            self.ttl,
            self.protocol.0,
            0,
            0,
            s0,
            s1,
            s2,
            s3,
            d0,
            d1,
            d2,
            d3,
        ];
        let c = checksum::checksum(&h);
        h[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        *hdr = h;
        Ok(Self::HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn ip(frame: &[u8]) -> &[u8] {
        &frame[14..]
    }

    #[test]
    fn captured_echo_request_fields() {
        let p = Ipv4Packet::new_checked(ip(fixtures::ICMP_ECHO_REQUEST)).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!((p.dscp(), p.ecn()), (0, 0));
        assert_eq!(p.total_len(), 84);
        assert_eq!(p.ident(), 10691);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::ICMP);
        assert_eq!(p.checksum(), 0xfc1d);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 99, 0, 1));
        assert_eq!(p.options_len(), 0);
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 64);
        assert_eq!(p.payload()[0], 8);
    }

    #[test]
    fn captured_udp_and_tcp_headers() {
        let p = Ipv4Packet::new_checked(ip(fixtures::UDP_OFFLOADED)).unwrap();
        assert_eq!(p.protocol(), IpProtocol::UDP);
        assert_eq!(p.total_len(), 41);
        assert_eq!(p.checksum(), 0xb064);
        assert!(p.verify_checksum());
        let p = Ipv4Packet::new_checked(ip(fixtures::TCP_SYNACK_OFFLOADED)).unwrap();
        assert_eq!(p.protocol(), IpProtocol::TCP);
        assert_eq!(p.ident(), 0);
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 40);
    }

    #[test]
    fn check_order_and_errors() {
        let good = ip(fixtures::ICMP_ECHO_REQUEST).to_vec();
        for n in 0..20 {
            assert_eq!(
                Ipv4Packet::new_checked(&good[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        let with = |at: usize, v: u8| {
            let mut b = good.clone();
            b[at] = v;
            Ipv4Packet::new_checked(b).map(|_| ())
        };
        assert_eq!(with(0, 0x65), Err(WireError::BadVersion));
        assert_eq!(with(0, 0x60), Err(WireError::BadVersion));
        assert_eq!(with(0, 0x43), Err(WireError::BadHeaderLen));
        assert_eq!(with(0, 0x40), Err(WireError::BadHeaderLen));
        // IHL 15 = 60 bytes fits in the 84-byte packet; it is beyond a 40-byte one.
        assert_eq!(with(0, 0x4f), Ok(()));
        let mut short = good[..40].to_vec();
        short[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&short[..]).unwrap_err(),
            WireError::BadHeaderLen
        );
        // Total length below the header, above the buffer.
        assert_eq!(with(3, 19), Err(WireError::BadLength));
        assert_eq!(with(3, 85), Err(WireError::BadLength));
        assert_eq!(with(3, 20), Ok(()));
    }

    #[test]
    fn ethernet_padding_is_excluded() {
        // A 41-byte datagram in a 60-byte minimum frame: 5 padding bytes after it.
        let mut b = ip(fixtures::UDP_OFFLOADED).to_vec();
        b.extend_from_slice(&[0; 5]);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 21);
        assert_eq!(p.payload(), &ip(fixtures::UDP_OFFLOADED)[20..]);
    }

    #[test]
    fn options_are_visible() {
        // IHL 6 with a 4-byte Router Alert option (RFC 2113): 94 04 00 00.
        let r = Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(224, 0, 0, 22),
            protocol: IpProtocol::IGMP,
            payload_len: 4 + 8,
            ttl: 1,
            dscp: 0x30,
            ecn: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        };
        let mut b = [0u8; 32];
        r.emit(&mut b).unwrap();
        b.copy_within(20..24, 24);
        b[20..24].copy_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_header_len(24);
        p.set_total_len(32);
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.options_len(), 4);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.payload().len(), 8);
        assert!(p.verify_checksum());
        assert_eq!(p.dscp(), 0x30);
        let parsed = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(parsed.payload_len, 8);
    }

    /// `emit` writes what the view's setters write, for every flag and odd values.
    #[test]
    fn emit_agrees_with_the_setters() {
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let r = Ipv4Repr {
                src_addr: Ipv4Addr::from(x.rotate_left(7)),
                dst_addr: Ipv4Addr::from(!x),
                protocol: IpProtocol((x >> 3) as u8),
                payload_len: (x % 1500) as usize,
                ttl: (x >> 11) as u8,
                dscp: ((x >> 19) % 64) as u8,
                ecn: ((x >> 25) % 4) as u8,
                ident: (x >> 5) as u16,
                dont_frag: x & 1 != 0,
                more_frags: x & 2 != 0,
                frag_offset: ((x >> 9) as u16) & 0xfff8,
            };
            let mut a = [0u8; 20];
            r.emit(&mut a).unwrap();
            let mut b = [0xffu8; 20];
            let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
            p.set_version(4);
            p.set_header_len(20);
            p.set_dscp(r.dscp);
            p.set_ecn(r.ecn);
            p.set_total_len(20 + r.payload_len as u16);
            p.set_ident(r.ident);
            p.set_flg_off_bits(0xffff, 0);
            p.set_dont_frag(r.dont_frag);
            p.set_more_frags(r.more_frags);
            p.set_frag_offset(r.frag_offset);
            p.set_ttl(r.ttl);
            p.set_protocol(r.protocol);
            p.set_src_addr(r.src_addr);
            p.set_dst_addr(r.dst_addr);
            p.fill_checksum();
            assert_eq!(a, b, "{r:?}");
        }
    }

    #[test]
    fn repr_round_trip() {
        let bytes = ip(fixtures::ICMP_ECHO_REPLY);
        let p = Ipv4Packet::new_checked(bytes).unwrap();
        let r = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(
            r,
            Ipv4Repr {
                src_addr: Ipv4Addr::new(10, 99, 0, 1),
                dst_addr: Ipv4Addr::new(10, 99, 0, 2),
                protocol: IpProtocol::ICMP,
                payload_len: 64,
                ttl: 64,
                dscp: 0,
                ecn: 0,
                ident: 58101,
                dont_frag: false,
                more_frags: false,
                frag_offset: 0,
            }
        );
        let mut out = [0u8; 20];
        assert_eq!(r.emit(&mut out).unwrap(), 20);
        assert_eq!(&out[..], &bytes[..20]);
        assert_eq!(r.emit(&mut [0u8; 19]), Err(WireError::BufferTooSmall));
        let big = Ipv4Repr {
            payload_len: 65_516,
            ..r
        };
        assert_eq!(big.emit(&mut out), Err(WireError::BadLength));

        let mut bad = bytes.to_vec();
        bad[10] ^= 1;
        let p = Ipv4Packet::new_checked(&bad[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::BadChecksum));
    }

    #[test]
    fn fragments() {
        let mut b = ip(fixtures::ICMP_ECHO_REQUEST).to_vec();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_frag_offset(1480);
        p.set_more_frags(true);
        p.set_dont_frag(false);
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
        assert_eq!(&b[6..8], &[0x20, 0xb9]);
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut b = ip(fixtures::UDP_OFFLOADED).to_vec();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        for expect in (0..64u8).rev() {
            assert_eq!(p.decrement_ttl(), Some(expect));
            assert!(p.verify_checksum());
            let incremental = p.checksum();
            p.fill_checksum();
            assert_eq!(p.checksum(), incremental);
        }
        assert_eq!(p.decrement_ttl(), None);
        assert_eq!(p.ttl(), 0);
        assert!(p.verify_checksum());
    }

    #[test]
    fn setters_round_trip() {
        let mut b = ip(fixtures::ICMP_ECHO_REQUEST).to_vec();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        p.set_dst_addr(Ipv4Addr::new(5, 6, 7, 8));
        p.set_ttl(3);
        p.set_protocol(IpProtocol::UDP);
        p.set_ident(0xbeef);
        p.set_ecn(3);
        p.set_dscp(46);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(5, 6, 7, 8));
        assert_eq!(
            (p.ttl(), p.protocol(), p.ident()),
            (3, IpProtocol::UDP, 0xbeef)
        );
        assert_eq!((p.dscp(), p.ecn()), (46, 3));
        p.payload_mut()[0] = 0;
        assert_eq!(b[20], 0);
        assert_eq!(format!("{:?}", IpProtocol(99)), "proto 99");
    }
}
