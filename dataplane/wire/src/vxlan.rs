//! VXLAN (RFC 7348) headers.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The header follows a UDP header (destination port 4789 from IANA, 8472 on Linux and
//! flannel) and is followed by the inner Ethernet frame. RFC 7348 section 5 says reserved
//! bits are to be ignored on receipt; Linux's driver (`vxlan_rcv`) drops packets with any
//! bit set besides the I flag and the VNI unless an extension (GBP, GPE, RCO) is
//! configured. [`VxlanHeader::is_plain`] is that check; [`VxlanRepr::parse`] applies it.

use crate::{WireError, be32, put32};

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI field is valid (RFC 7348 section 5). The only flag plain VXLAN sets.
pub const FLAG_I: u8 = 0x08;
/// The UDP port IANA assigned to VXLAN (RFC 7348 section 5).
pub const IANA_PORT: u16 = 4789;
/// The UDP port Linux's vxlan driver and flannel use by default.
pub const LINUX_PORT: u16 = 8472;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// Outer Ethernet (14) + IPv4 without options (20) + UDP (8) + VXLAN (8): what
/// encapsulation adds in front of the inner frame, and why flannel's pod MTU is the
/// uplink's minus 50.
pub const OVERHEAD: usize = 14 + 20 + 8 + HEADER_LEN;

mod field {
    pub const FLAGS: usize = 0;
    /// Flags byte + 24 reserved bits, as one big-endian word.
    pub const WORD0: usize = 0;
    /// VNI (24 bits) + 8 reserved bits.
    pub const WORD1: usize = 4;
    pub const PAYLOAD: usize = 8;
}

/// A view of a VXLAN header and the frame it carries. `new_checked` requires the 8-byte
/// header (`Truncated`); after it no accessor can panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanHeader<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    pub const fn new_unchecked(buffer: T) -> VxlanHeader<T> {
        VxlanHeader { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<VxlanHeader<T>, WireError> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// `Err(Truncated)` if the buffer is shorter than the 8-byte header.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte (`R R R R I R R R`).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    /// Whether the I flag (VNI valid) is set.
    #[inline]
    pub fn has_vni(&self) -> bool {
        self.flags() & FLAG_I != 0
    }
    /// The 24-bit VXLAN network identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        be32(self.buffer.as_ref(), field::WORD1) >> 8
    }
    /// The 24 reserved bits after the flags.
    #[inline]
    pub fn reserved0(&self) -> u32 {
        be32(self.buffer.as_ref(), field::WORD0) & 0x00ff_ffff
    }
    /// The 8 reserved bits after the VNI.
    #[inline]
    pub fn reserved1(&self) -> u8 {
        self.buffer.as_ref()[field::WORD1 + 3]
    }
    /// Plain VXLAN as Linux accepts it without extensions: flags exactly `0x08` (I) and
    /// every reserved bit zero.
    #[inline]
    pub fn is_plain(&self) -> bool {
        be32(self.buffer.as_ref(), field::WORD0) == u32::from(FLAG_I) << 24 && self.reserved1() == 0
    }
    /// The encapsulated frame: everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanHeader<T> {
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }
    /// Sets the VNI (the low 24 bits of `vni`), keeping the reserved byte after it.
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        let d = self.buffer.as_mut();
        let w = ((vni & MAX_VNI) << 8) | u32::from(d[field::WORD1 + 3]);
        put32(d, field::WORD1, w);
    }
    /// Zeroes every reserved bit (the flags byte is kept).
    #[inline]
    pub fn clear_reserved(&mut self) {
        let d = self.buffer.as_mut();
        d[field::FLAGS + 1..field::WORD1].fill(0);
        d[field::WORD1 + 3] = 0;
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// A plain VXLAN header (I flag, reserved bits zero) as a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanRepr {
    /// 24 bits.
    pub vni: u32,
}

impl VxlanRepr {
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Parses a checked header: `Truncated` if short, `Unsupported` unless
    /// [`VxlanHeader::is_plain`].
    pub fn parse<T: AsRef<[u8]>>(h: &VxlanHeader<T>) -> Result<VxlanRepr, WireError> {
        h.check_len()?;
        if !h.is_plain() {
            return Err(WireError::Unsupported);
        }
        Ok(VxlanRepr { vni: h.vni() })
    }

    /// Writes the 8-byte header at the start of `buf`; returns 8. A VNI above 24 bits is
    /// `Unsupported`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if self.vni > MAX_VNI {
            return Err(WireError::Unsupported);
        }
        let b = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
        put32(b, field::WORD0, u32::from(FLAG_I) << 24);
        put32(b, field::WORD1, self.vni << 8);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::{EtherType, EthernetFrame, Ipv4Packet, MacAddr, UdpPacket};

    /// The VXLAN header of the captured frame (outer Ethernet 14 + IPv4 20 + UDP 8).
    fn captured() -> &'static [u8] {
        &fixtures::VXLAN_UDP[42..]
    }

    #[test]
    fn captured_linux_header() {
        let eth = EthernetFrame::new_checked(fixtures::VXLAN_UDP).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(udp.dst_port(), LINUX_PORT);
        let h = VxlanHeader::new_checked(udp.payload()).unwrap();
        assert_eq!(h.flags(), FLAG_I);
        assert!(h.has_vni() && h.is_plain());
        assert_eq!((h.vni(), h.reserved0(), h.reserved1()), (1, 0, 0));
        assert_eq!(VxlanRepr::parse(&h).unwrap(), VxlanRepr { vni: 1 });
        let inner = EthernetFrame::new_checked(h.payload()).unwrap();
        assert_eq!(
            inner.src_addr(),
            MacAddr([0x82, 0x1f, 0x5a, 0x6e, 0x2c, 0x02])
        );
        assert_eq!(
            inner.dst_addr(),
            MacAddr([0x6e, 0x9d, 0x2b, 0x14, 0x7a, 0x01])
        );
        assert_eq!(inner.ethertype(), EtherType::IPV4);
        assert_eq!(h.payload().len(), fixtures::VXLAN_UDP.len() - OVERHEAD);
    }

    #[test]
    fn emit_matches_linux() {
        let mut out = [0xaa; 8];
        assert_eq!(VxlanRepr { vni: 1 }.emit(&mut out).unwrap(), 8);
        assert_eq!(&out[..], &captured()[..8]);
        VxlanRepr { vni: MAX_VNI }.emit(&mut out).unwrap();
        assert_eq!(out, [0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0]);
        assert_eq!(
            VxlanRepr { vni: MAX_VNI + 1 }.emit(&mut out),
            Err(WireError::Unsupported)
        );
        assert_eq!(
            VxlanRepr { vni: 1 }.emit(&mut [0u8; 7]),
            Err(WireError::BufferTooSmall)
        );
    }

    #[test]
    fn reserved_bits_and_flags() {
        // Every bit besides I and the VNI makes the header non-plain.
        for bit in 0..64 {
            let mut b = captured()[..8].to_vec();
            b[bit / 8] ^= 0x80 >> (bit % 8);
            let h = VxlanHeader::new_checked(&b[..]).unwrap();
            let in_vni = (32..56).contains(&bit);
            assert_eq!(h.is_plain(), in_vni, "bit {bit}");
            assert_eq!(VxlanRepr::parse(&h).is_ok(), in_vni, "bit {bit}");
            if bit == 4 {
                assert!(!h.has_vni());
            }
        }
    }

    #[test]
    fn setters() {
        let mut b = [0xffu8; 10];
        let mut h = VxlanHeader::new_checked(&mut b[..]).unwrap();
        assert!(!h.is_plain());
        h.set_vni(0x12_3456);
        assert_eq!(h.reserved1(), 0xff);
        h.set_flags(FLAG_I);
        h.clear_reserved();
        assert!(h.is_plain());
        assert_eq!(h.vni(), 0x12_3456);
        h.set_vni(0xab12_3457);
        assert_eq!(h.vni(), 0x12_3457);
        assert_eq!(h.payload_mut(), &mut [0xff, 0xff][..]);
    }

    #[test]
    fn truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                VxlanHeader::new_checked(&captured()[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        let h = VxlanHeader::new_checked(&captured()[..8]).unwrap();
        assert!(h.payload().is_empty());
    }
}
