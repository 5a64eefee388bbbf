//! TCP (RFC 9293) segment headers.

use crate::checksum;
use crate::ipv4::IpProtocol;
use crate::{WireError, be16, be32, put16, put32};
use std::fmt;
use std::net::Ipv4Addr;

/// Minimum (option-less) TCP header length (data offset 5).
pub const MIN_HEADER_LEN: usize = 20;
/// Maximum TCP header length (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;

/// The TCP control bits (RFC 9293 section 3.1; ECE/CWR from RFC 3168, NS from RFC 3540).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x001);
    pub const SYN: TcpFlags = TcpFlags(0x002);
    pub const RST: TcpFlags = TcpFlags(0x004);
    pub const PSH: TcpFlags = TcpFlags(0x008);
    pub const ACK: TcpFlags = TcpFlags(0x010);
    pub const URG: TcpFlags = TcpFlags(0x020);
    pub const ECE: TcpFlags = TcpFlags(0x040);
    pub const CWR: TcpFlags = TcpFlags(0x080);
    pub const NS: TcpFlags = TcpFlags(0x100);
    /// Every defined bit.
    pub const MASK: u16 = 0x1ff;

    pub const fn empty() -> TcpFlags {
        TcpFlags(0)
    }
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        self.union(rhs)
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(TcpFlags, &str); 9] = [
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::RST, "RST"),
            (TcpFlags::PSH, "PSH"),
            (TcpFlags::ACK, "ACK"),
            (TcpFlags::URG, "URG"),
            (TcpFlags::ECE, "ECE"),
            (TcpFlags::CWR, "CWR"),
            (TcpFlags::NS, "NS"),
        ];
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    pub const FLAGS: usize = 12;
    pub const WIN_SIZE: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// A view of a TCP segment. The segment is the whole buffer (give the view exactly the IP
/// payload: the checksum covers it and TCP has no length field). `new_checked` requires
/// the 20-byte header (`Truncated`) and a data offset ≥ 5 within the buffer
/// (`BadHeaderLen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = usize::from(self.header_len());
        if hl < MIN_HEADER_LEN || hl > len {
            return Err(WireError::BadHeaderLen);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ_NUM)
    }
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK_NUM)
    }
    /// Header length in bytes (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::FLAGS] >> 4) * 4
    }
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(be16(self.buffer.as_ref(), field::FLAGS) & TcpFlags::MASK)
    }
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags().contains(TcpFlags::FIN)
    }
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags().contains(TcpFlags::SYN)
    }
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags().contains(TcpFlags::RST)
    }
    #[inline]
    pub fn psh(&self) -> bool {
        self.flags().contains(TcpFlags::PSH)
    }
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags().contains(TcpFlags::ACK)
    }
    #[inline]
    pub fn urg(&self) -> bool {
        self.flags().contains(TcpFlags::URG)
    }
    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WIN_SIZE)
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }
    /// The option bytes (empty if the data offset is inconsistent).
    #[inline]
    pub fn options(&self) -> &[u8] {
        let hl = usize::from(self.header_len());
        self.buffer.as_ref().get(field::OPTIONS..hl).unwrap_or(&[])
    }
    /// The payload after the header (empty if the data offset is inconsistent).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let hl = usize::from(self.header_len());
        self.buffer.as_ref().get(hl..).unwrap_or(&[])
    }
    #[inline]
    fn checksum_sum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Option<u16> {
        let seg = self.buffer.as_ref();
        let len = u16::try_from(seg.len()).ok()?;
        let ph = checksum::pseudo_header(src, dst, IpProtocol::TCP.0, len);
        Some(checksum::add(ph, checksum::sum(seg)))
    }
    /// Whether the checksum over the IPv4 pseudo-header and the segment verifies.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum_sum(src, dst) == Some(0xffff)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::SEQ_NUM, v);
    }
    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::ACK_NUM, v);
    }
    /// Sets the header length in bytes (stored as data offset = len / 4).
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = (*b & 0x0f) | (((len / 4) & 0x0f) << 4);
    }
    /// Sets the control bits, leaving the data offset alone (reserved bits cleared).
    #[inline]
    pub fn set_flags(&mut self, flags: TcpFlags) {
        let d = self.buffer.as_mut();
        let w = (be16(d, field::FLAGS) & 0xf000) | (flags.0 & TcpFlags::MASK);
        put16(d, field::FLAGS, w);
    }
    #[inline]
    pub fn set_window_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::WIN_SIZE, v);
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
    #[inline]
    pub fn set_urgent_at(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::URGENT, v);
    }
    /// Computes the checksum over the pseudo-header and the whole segment.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        if let Some(s) = self.checksum_sum(src, dst) {
            self.set_checksum(!s);
        }
    }
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = usize::from(self.header_len());
        self.buffer
            .as_mut()
            .get_mut(field::OPTIONS..hl)
            .unwrap_or(&mut [])
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = usize::from(self.header_len());
        self.buffer.as_mut().get_mut(hl..).unwrap_or(&mut [])
    }
}

/// A TCP segment as plain values; `options` and `payload` borrow the packet's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    pub flags: TcpFlags,
    pub window_len: u16,
    pub urgent_at: u16,
    /// Raw option bytes, a multiple of 4 and at most 40 bytes.
    pub options: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// Parses a checked segment whose checksum verifies.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        p: &TcpPacket<&'a T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<TcpRepr<'a>, WireError> {
        p.check_len()?;
        if !p.verify_checksum(src, dst) {
            return Err(WireError::BadChecksum);
        }
        let bytes: &'a T = p.buffer;
        let seg = bytes.as_ref();
        let hl = usize::from(p.header_len());
        Ok(TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq_number: p.seq_number(),
            ack_number: p.ack_number(),
            flags: p.flags(),
            window_len: p.window_len(),
            urgent_at: p.urgent_at(),
            options: &seg[field::OPTIONS..hl],
            payload: &seg[hl..],
        })
    }

    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + self.options.len()
    }

    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the segment (checksum filled) at the start of `buf`; returns its length.
    /// Options must be padded to a multiple of 4 bytes, at most 40 (`BadHeaderLen`).
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<usize, WireError> {
        let hl = self.header_len();
        if !self.options.len().is_multiple_of(4) || hl > MAX_HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        let len = self.buffer_len();
        if len > usize::from(u16::MAX) {
            return Err(WireError::BadLength);
        }
        let b = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        b[..MIN_HEADER_LEN].fill(0);
        let mut p = TcpPacket::new_unchecked(b);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.set_header_len(hl as u8);
        p.set_flags(self.flags);
        p.set_window_len(self.window_len);
        p.set_urgent_at(self.urgent_at);
        p.options_mut().copy_from_slice(self.options);
        p.payload_mut().copy_from_slice(self.payload);
        p.fill_checksum(src, dst);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

    fn tcp(frame: &[u8]) -> &[u8] {
        &frame[34..]
    }

    #[test]
    fn captured_syn_fields() {
        let p = TcpPacket::new_checked(tcp(fixtures::TCP_SYN_OFFLOADED)).unwrap();
        assert_eq!(p.src_port(), 54878);
        assert_eq!(p.dst_port(), 8080);
        assert_eq!(p.seq_number(), 819_394_467);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), TcpFlags::SYN);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst() && !p.psh() && !p.urg());
        assert_eq!(p.window_len(), 64240);
        assert_eq!(p.urgent_at(), 0);
        // MSS 1460 is the first option.
        assert_eq!(&p.options()[..4], &[0x02, 0x04, 0x05, 0xb4]);
        assert_eq!(p.options().len(), 20);
        assert!(p.payload().is_empty());
        assert_eq!(p.checksum(), 0x14f7);
        assert!(!p.verify_checksum(CLIENT, SERVER));
    }

    #[test]
    fn fill_gives_the_checksums_tcpdump_computed() {
        for (frame, src, dst, expect) in [
            (fixtures::TCP_SYN_OFFLOADED, CLIENT, SERVER, 0x019a),
            (fixtures::TCP_SYNACK_OFFLOADED, SERVER, CLIENT, 0x06ec),
            (fixtures::TCP_ACK_OFFLOADED, CLIENT, SERVER, 0x3405),
        ] {
            let mut b = tcp(frame).to_vec();
            let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
            p.fill_checksum(src, dst);
            assert_eq!(p.checksum(), expect);
            assert!(p.verify_checksum(src, dst));
            assert!(!p.verify_checksum(dst, Ipv4Addr::new(10, 99, 0, 9)));
        }
        let p = TcpPacket::new_checked(tcp(fixtures::TCP_SYNACK_OFFLOADED)).unwrap();
        assert_eq!(p.flags(), TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!(p.ack_number(), 819_394_468);
        assert_eq!(format!("{:?}", p.flags()), "SYN|ACK");
    }

    #[test]
    fn repr_round_trip() {
        let mut b = tcp(fixtures::TCP_ACK_OFFLOADED).to_vec();
        b[16..18].copy_from_slice(&0x3405u16.to_be_bytes());
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        let r = TcpRepr::parse(&p, CLIENT, SERVER).unwrap();
        assert_eq!(r.src_port, 54878);
        assert_eq!(r.seq_number, 819_394_468);
        assert_eq!(r.ack_number, 2_929_046_242);
        assert_eq!(r.flags, TcpFlags::ACK);
        assert_eq!(r.window_len, 63);
        assert_eq!(r.options.len(), 12);
        assert!(r.payload.is_empty());
        let mut out = [0u8; 32];
        assert_eq!(r.emit(&mut out, CLIENT, SERVER).unwrap(), 32);
        assert_eq!(&out[..], &b[..]);

        // With a payload.
        let r2 = TcpRepr {
            payload: b"GET / HTTP/1.1\r\n\r\n",
            flags: TcpFlags::ACK | TcpFlags::PSH,
            ..r
        };
        let mut out = [0u8; 64];
        let n = r2.emit(&mut out, CLIENT, SERVER).unwrap();
        let p = TcpPacket::new_checked(&out[..n]).unwrap();
        assert_eq!(TcpRepr::parse(&p, CLIENT, SERVER).unwrap(), r2);

        let odd = TcpRepr {
            options: &[1, 1, 1],
            ..r
        };
        assert_eq!(
            odd.emit(&mut out, CLIENT, SERVER),
            Err(WireError::BadHeaderLen)
        );
        assert_eq!(
            r.emit(&mut [0u8; 31], CLIENT, SERVER),
            Err(WireError::BufferTooSmall)
        );
        let bad = TcpPacket::new_checked(tcp(fixtures::TCP_ACK_OFFLOADED)).unwrap();
        assert_eq!(
            TcpRepr::parse(&bad, CLIENT, SERVER),
            Err(WireError::BadChecksum)
        );
    }

    #[test]
    fn header_len_errors() {
        let good = tcp(fixtures::TCP_SYN_OFFLOADED).to_vec();
        for n in 0..20 {
            assert_eq!(
                TcpPacket::new_checked(&good[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        // Data offset 10 (40 bytes) beyond a 39-byte buffer.
        assert_eq!(
            TcpPacket::new_checked(&good[..39]).unwrap_err(),
            WireError::BadHeaderLen
        );
        let mut b = good.clone();
        b[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::BadHeaderLen
        );
    }

    #[test]
    fn setters() {
        let mut b = tcp(fixtures::TCP_SYN_OFFLOADED).to_vec();
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.set_flags(TcpFlags::RST | TcpFlags::ACK | TcpFlags::NS);
        assert_eq!(p.header_len(), 40);
        assert!(p.rst() && p.ack() && p.flags().contains(TcpFlags::NS));
        p.set_seq_number(1);
        p.set_ack_number(2);
        p.set_window_len(3);
        p.set_src_port(4);
        p.set_dst_port(5);
        assert_eq!((p.seq_number(), p.ack_number(), p.window_len()), (1, 2, 3));
        assert_eq!((p.src_port(), p.dst_port()), (4, 5));
        assert_eq!(format!("{:?}", TcpFlags::empty()), "-");
    }
}
