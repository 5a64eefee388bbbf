//! ARP (RFC 826) for Ethernet hardware addresses and IPv4 protocol addresses.

use crate::ethernet::{EtherType, MacAddr};
use crate::{WireError, be16, ipv4_at, put16};
use std::fmt;
use std::net::Ipv4Addr;

/// An ARP operation code (RFC 826; IANA "ARP operation codes").
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpOp(pub u16);

impl ArpOp {
    pub const REQUEST: ArpOp = ArpOp(1);
    pub const REPLY: ArpOp = ArpOp(2);
}

impl fmt::Debug for ArpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ArpOp::REQUEST => f.write_str("request"),
            ArpOp::REPLY => f.write_str("reply"),
            ArpOp(o) => write!(f, "op {o}"),
        }
    }
}

/// Hardware type Ethernet (RFC 826; IANA "Hardware Types").
pub const HTYPE_ETHERNET: u16 = 1;
/// Hardware address length of Ethernet.
pub const HLEN_ETHERNET: u8 = 6;
/// Protocol address length of IPv4.
pub const PLEN_IPV4: u8 = 4;

mod field {
    use std::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    // The address fields below assume hlen 6 and plen 4 (Ethernet/IPv4).
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: usize = 14;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: usize = 24;
    pub const END: usize = 28;
}

/// A view of an ARP packet with Ethernet/IPv4 address sizes (28 bytes).
///
/// `new_checked` checks only the length; the address accessors read the Ethernet/IPv4
/// layout, so check [`ArpPacket::is_ethernet_ipv4`] (or use [`ArpRepr::parse`]) before
/// trusting them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Length of an Ethernet/IPv4 ARP packet.
    pub const LEN: usize = field::END;

    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Err(Truncated)` if the buffer is shorter than an Ethernet/IPv4 ARP packet.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < field::END {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn hardware_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::HTYPE)
    }
    #[inline]
    pub fn protocol_type(&self) -> EtherType {
        EtherType(be16(self.buffer.as_ref(), field::PTYPE))
    }
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }
    #[inline]
    pub fn operation(&self) -> ArpOp {
        ArpOp(be16(self.buffer.as_ref(), field::OPER))
    }
    /// Hardware type Ethernet, protocol type IPv4, lengths 6 and 4.
    #[inline]
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.hardware_type() == HTYPE_ETHERNET
            && self.protocol_type() == EtherType::IPV4
            && self.hardware_len() == HLEN_ETHERNET
            && self.protocol_len() == PLEN_IPV4
    }
    #[inline]
    pub fn source_hardware_addr(&self) -> MacAddr {
        let d = &self.buffer.as_ref()[field::SHA];
        MacAddr([d[0], d[1], d[2], d[3], d[4], d[5]])
    }
    #[inline]
    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::SPA)
    }
    #[inline]
    pub fn target_hardware_addr(&self) -> MacAddr {
        let d = &self.buffer.as_ref()[field::THA];
        MacAddr([d[0], d[1], d[2], d[3], d[4], d[5]])
    }
    #[inline]
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    #[inline]
    pub fn set_hardware_type(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::HTYPE, v);
    }
    #[inline]
    pub fn set_protocol_type(&mut self, v: EtherType) {
        put16(self.buffer.as_mut(), field::PTYPE, v.0);
    }
    #[inline]
    pub fn set_hardware_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v;
    }
    #[inline]
    pub fn set_protocol_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::PLEN] = v;
    }
    #[inline]
    pub fn set_operation(&mut self, v: ArpOp) {
        put16(self.buffer.as_mut(), field::OPER, v.0);
    }
    #[inline]
    pub fn set_source_hardware_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&a.0);
    }
    #[inline]
    pub fn set_source_protocol_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA..field::SPA + 4].copy_from_slice(&a.octets());
    }
    #[inline]
    pub fn set_target_hardware_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&a.0);
    }
    #[inline]
    pub fn set_target_protocol_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA..field::TPA + 4].copy_from_slice(&a.octets());
    }
}

/// An Ethernet/IPv4 ARP packet as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: ArpOp,
    pub source_hardware_addr: MacAddr,
    pub source_protocol_addr: Ipv4Addr,
    pub target_hardware_addr: MacAddr,
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    pub const LEN: usize = field::END;

    /// `Err(Unsupported)` for any hardware/protocol combination other than Ethernet/IPv4.
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Result<ArpRepr, WireError> {
        p.check_len()?;
        if !p.is_ethernet_ipv4() {
            return Err(WireError::Unsupported);
        }
        Ok(ArpRepr {
            operation: p.operation(),
            source_hardware_addr: p.source_hardware_addr(),
            source_protocol_addr: p.source_protocol_addr(),
            target_hardware_addr: p.target_hardware_addr(),
            target_protocol_addr: p.target_protocol_addr(),
        })
    }

    /// Writes the 28-byte packet at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut p = ArpPacket::new_checked(buf).map_err(|_| WireError::BufferTooSmall)?;
        p.set_hardware_type(HTYPE_ETHERNET);
        p.set_protocol_type(EtherType::IPV4);
        p.set_hardware_len(HLEN_ETHERNET);
        p.set_protocol_len(PLEN_IPV4);
        p.set_operation(self.operation);
        p.set_source_hardware_addr(self.source_hardware_addr);
        p.set_source_protocol_addr(self.source_protocol_addr);
        p.set_target_hardware_addr(self.target_hardware_addr);
        p.set_target_protocol_addr(self.target_protocol_addr);
        Ok(Self::LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    const A: MacAddr = MacAddr([0x2a, 0x1a, 0x04, 0x14, 0xd7, 0xf9]);
    const B: MacAddr = MacAddr([0x62, 0x76, 0x71, 0xf5, 0x68, 0xd3]);

    #[test]
    fn captured_request() {
        let p = ArpPacket::new_checked(&fixtures::ARP_REQUEST[14..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), EtherType::IPV4);
        assert_eq!((p.hardware_len(), p.protocol_len()), (6, 4));
        assert!(p.is_ethernet_ipv4());
        assert_eq!(p.operation(), ArpOp::REQUEST);
        assert_eq!(p.source_hardware_addr(), A);
        assert_eq!(p.source_protocol_addr(), Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(p.target_hardware_addr(), MacAddr::ZERO);
        assert_eq!(p.target_protocol_addr(), Ipv4Addr::new(10, 99, 0, 1));
    }

    #[test]
    fn captured_reply_round_trip() {
        let p = ArpPacket::new_checked(&fixtures::ARP_REPLY[14..]).unwrap();
        let r = ArpRepr::parse(&p).unwrap();
        assert_eq!(
            r,
            ArpRepr {
                operation: ArpOp::REPLY,
                source_hardware_addr: B,
                source_protocol_addr: Ipv4Addr::new(10, 99, 0, 1),
                target_hardware_addr: A,
                target_protocol_addr: Ipv4Addr::new(10, 99, 0, 2),
            }
        );
        let mut buf = [0u8; 28];
        assert_eq!(r.emit(&mut buf).unwrap(), 28);
        assert_eq!(&buf[..], &fixtures::ARP_REPLY[14..]);
        assert_eq!(r.emit(&mut [0u8; 27]), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn truncated_and_unsupported() {
        for n in 0..28 {
            assert_eq!(
                ArpPacket::new_checked(&fixtures::ARP_REQUEST[14..14 + n]).unwrap_err(),
                WireError::Truncated
            );
        }
        for (at, v) in [(1, 6u8), (3, 0xdd), (4, 8), (5, 16)] {
            let mut b = fixtures::ARP_REQUEST[14..].to_vec();
            b[at] = v;
            let p = ArpPacket::new_checked(&b[..]).unwrap();
            assert!(!p.is_ethernet_ipv4());
            assert_eq!(ArpRepr::parse(&p), Err(WireError::Unsupported));
        }
    }

    #[test]
    fn setters_build_a_reply_in_place() {
        // Turn the captured request into the captured reply by editing fields.
        let mut b = fixtures::ARP_REQUEST[14..].to_vec();
        let mut p = ArpPacket::new_checked(&mut b[..]).unwrap();
        p.set_operation(ArpOp::REPLY);
        p.set_target_hardware_addr(A);
        p.set_target_protocol_addr(Ipv4Addr::new(10, 99, 0, 2));
        p.set_source_hardware_addr(B);
        p.set_source_protocol_addr(Ipv4Addr::new(10, 99, 0, 1));
        assert_eq!(&b[..], &fixtures::ARP_REPLY[14..]);
        assert_eq!(format!("{:?}", ArpOp(7)), "op 7");
    }
}
