//! Ethernet II frames (IEEE 802.3 with an EtherType, RFC 894 for IPv4 over Ethernet).

use crate::{WireError, be16, put16};
use std::fmt;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The address in the first 6 bytes of `b`, or `None` if `b` is shorter.
    pub fn from_bytes(b: &[u8]) -> Option<MacAddr> {
        let a: [u8; 6] = b.get(..6)?.try_into().ok()?;
        Some(MacAddr(a))
    }
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }
    pub const fn is_broadcast(&self) -> bool {
        let b = self.0;
        b[0] == 0xff && b[1] == 0xff && b[2] == 0xff && b[3] == 0xff && b[4] == 0xff && b[5] == 0xff
    }
    /// The I/G bit is set: a group (multicast or broadcast) address.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
    /// An individual address other than all-zero.
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }
    pub const fn is_zero(&self) -> bool {
        let b = self.0;
        b[0] | b[1] | b[2] | b[3] | b[4] | b[5] == 0
    }
    /// The U/L bit is set: a locally administered address.
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> MacAddr {
        MacAddr(b)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(m: MacAddr) -> [u8; 6] {
        m.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An EtherType (IEEE 802 numbers, registry maintained by the IEEE RA; values below
/// 0x0600 are 802.3 lengths, not types).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4 (RFC 894).
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP (RFC 826).
    pub const ARP: EtherType = EtherType(0x0806);
    /// IEEE 802.1Q VLAN tag.
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IPv6 (RFC 8200 / RFC 2464).
    pub const IPV6: EtherType = EtherType(0x86dd);
    /// IEEE 802.1ad service VLAN tag (Q-in-Q).
    pub const QINQ: EtherType = EtherType(0x88a8);
}

impl fmt::Debug for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EtherType::IPV4 => f.write_str("IPv4"),
            EtherType::ARP => f.write_str("ARP"),
            EtherType::VLAN => f.write_str("VLAN"),
            EtherType::IPV6 => f.write_str("IPv6"),
            EtherType::QINQ => f.write_str("QinQ"),
            EtherType(t) => write!(f, "0x{t:04x}"),
        }
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

mod field {
    use std::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

/// A view of an Ethernet II frame (no FCS: AF_XDP and veth hand frames without it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetFrame<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Length of the Ethernet II header.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// A view without a length check: accessors panic if the buffer is shorter than
    /// [`Self::HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// A view after checking that the buffer holds the whole header.
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, WireError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// `Err(Truncated)` if the buffer is shorter than the header.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < field::PAYLOAD {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        let d = self.buffer.as_ref();
        MacAddr([d[0], d[1], d[2], d[3], d[4], d[5]])
    }

    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        let d = self.buffer.as_ref();
        MacAddr([d[6], d[7], d[8], d[9], d[10], d[11]])
    }

    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// Everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a.0);
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a.0);
    }

    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, t.0);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// An Ethernet II header as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src_addr: MacAddr,
    pub dst_addr: MacAddr,
    pub ethertype: EtherType,
}

impl EthernetRepr {
    pub const HEADER_LEN: usize = field::PAYLOAD;

    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<EthernetRepr, WireError> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Writes the header into the first [`Self::HEADER_LEN`] bytes of `buf`; returns the
    /// header length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut f = EthernetFrame::new_checked(buf).map_err(|_| WireError::BufferTooSmall)?;
        f.set_dst_addr(self.dst_addr);
        f.set_src_addr(self.src_addr);
        f.set_ethertype(self.ethertype);
        Ok(Self::HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    const A: MacAddr = MacAddr([0x2a, 0x1a, 0x04, 0x14, 0xd7, 0xf9]);
    const B: MacAddr = MacAddr([0x62, 0x76, 0x71, 0xf5, 0x68, 0xd3]);

    #[test]
    fn captured_arp_request_header() {
        let f = EthernetFrame::new_checked(fixtures::ARP_REQUEST).unwrap();
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert!(f.dst_addr().is_broadcast() && f.dst_addr().is_multicast());
        assert_eq!(f.src_addr(), A);
        assert!(A.is_unicast() && A.is_local());
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert_eq!(f.payload().len(), 28);
    }

    #[test]
    fn captured_ipv4_and_ipv6_headers() {
        let f = EthernetFrame::new_checked(fixtures::ICMP_ECHO_REQUEST).unwrap();
        assert_eq!(f.dst_addr(), B);
        assert_eq!(f.src_addr(), A);
        assert_eq!(f.ethertype(), EtherType::IPV4);
        assert_eq!(f.payload()[0], 0x45);
        let f = EthernetFrame::new_checked(fixtures::IPV6_NEIGHBOR_SOLICIT).unwrap();
        assert_eq!(f.ethertype(), EtherType::IPV6);
        assert!(f.dst_addr().is_multicast() && !f.dst_addr().is_broadcast());
    }

    #[test]
    fn short_buffers_are_truncated() {
        for n in 0..14 {
            assert_eq!(
                EthernetFrame::new_checked(&fixtures::ARP_REQUEST[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        let f = EthernetFrame::new_checked(&fixtures::ARP_REQUEST[..14]).unwrap();
        assert!(f.payload().is_empty());
    }

    #[test]
    fn repr_round_trip_and_setters() {
        let f = EthernetFrame::new_checked(fixtures::ARP_REPLY).unwrap();
        let r = EthernetRepr::parse(&f).unwrap();
        assert_eq!(
            r,
            EthernetRepr {
                src_addr: B,
                dst_addr: A,
                ethertype: EtherType::ARP
            }
        );
        let mut buf = fixtures::ARP_REPLY.to_vec();
        buf[..14].fill(0);
        assert_eq!(r.emit(&mut buf).unwrap(), 14);
        assert_eq!(buf, fixtures::ARP_REPLY);
        assert_eq!(r.emit(&mut [0u8; 13]), Err(WireError::BufferTooSmall));

        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_src_addr(A);
        f.set_dst_addr(B);
        f.set_ethertype(EtherType::VLAN);
        f.payload_mut()[0] = 0xab;
        assert_eq!(
            &buf[..14],
            &[
                0x62, 0x76, 0x71, 0xf5, 0x68, 0xd3, 0x2a, 0x1a, 0x04, 0x14, 0xd7, 0xf9, 0x81, 0x00
            ]
        );
        assert_eq!(buf[14], 0xab);
    }

    #[test]
    fn formatting() {
        assert_eq!(A.to_string(), "2a:1a:04:14:d7:f9");
        assert_eq!(format!("{:?}", EtherType(0x88cc)), "0x88cc");
        assert_eq!(EtherType::IPV4.to_string(), "IPv4");
        assert_eq!(MacAddr::from_bytes(&[1, 2, 3, 4, 5]), None);
        assert_eq!(
            MacAddr::from_bytes(&[1, 2, 3, 4, 5, 6, 7]),
            Some(MacAddr([1, 2, 3, 4, 5, 6]))
        );
        assert!(MacAddr::ZERO.is_zero() && !MacAddr::ZERO.is_unicast());
    }
}
