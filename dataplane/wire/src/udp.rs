//! UDP (RFC 768) datagrams.

use crate::checksum;
use crate::ipv4::IpProtocol;
use crate::{WireError, be16, put16};
use std::net::Ipv4Addr;

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// A view of a UDP datagram. `new_checked` requires the 8-byte header (`Truncated`) and a
/// length field between 8 and the buffer length (`BadLength`); bytes past the length field
/// are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let l = usize::from(self.len());
        if l < HEADER_LEN || l > len {
            return Err(WireError::BadLength);
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
    /// The length field: header plus payload.
    #[inline]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }
    /// Whether the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// The payload up to the length field (empty if the field is inconsistent).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let l = usize::from(self.len());
        self.buffer.as_ref().get(field::PAYLOAD..l).unwrap_or(&[])
    }
    /// The datagram as the length field delimits it (`None` if inconsistent).
    #[inline]
    fn datagram(&self) -> Option<&[u8]> {
        self.buffer.as_ref().get(..usize::from(self.len()))
    }
    /// Whether the checksum verifies against the IPv4 pseudo-header. A zero checksum means
    /// "not computed" over IPv4 (RFC 768) and is accepted.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        match self.datagram() {
            Some(d) => {
                let ph = checksum::pseudo_header(src, dst, IpProtocol::UDP.0, self.len());
                checksum::add(ph, checksum::sum(d)) == 0xffff
            }
            None => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
    /// Computes the checksum over the pseudo-header and the datagram; a computed zero is
    /// stored as `0xffff` (RFC 768).
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = match self.datagram() {
            Some(d) => {
                let ph = checksum::pseudo_header(src, dst, IpProtocol::UDP.0, self.len());
                !checksum::add(ph, checksum::sum(d))
            }
            None => return,
        };
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let l = usize::from(self.len());
        self.buffer
            .as_mut()
            .get_mut(field::PAYLOAD..l)
            .unwrap_or(&mut [])
    }
}

/// A UDP datagram as plain values; `payload` borrows the packet's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

impl<'a> UdpRepr<'a> {
    /// Parses a checked datagram whose checksum verifies (or is zero).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        p: &UdpPacket<&'a T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<UdpRepr<'a>, WireError> {
        p.check_len()?;
        if !p.verify_checksum(src, dst) {
            return Err(WireError::BadChecksum);
        }
        let bytes: &'a T = p.buffer;
        let payload = &bytes.as_ref()[field::PAYLOAD..usize::from(p.len())];
        Ok(UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload,
        })
    }

    /// Header plus payload length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Writes header and payload with the checksum filled; returns the datagram length.
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<usize, WireError> {
        let len = self.buffer_len();
        let len16 = u16::try_from(len).map_err(|_| WireError::BadLength)?;
        let b = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        let mut p = UdpPacket::new_unchecked(b);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len16);
        p.payload_mut().copy_from_slice(self.payload);
        p.fill_checksum(src, dst);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

    fn udp(frame: &[u8]) -> &[u8] {
        &frame[34..]
    }

    #[test]
    fn captured_datagram_fields() {
        let p = UdpPacket::new_checked(udp(fixtures::UDP_OFFLOADED)).unwrap();
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 5353);
        assert_eq!(p.len(), 21);
        assert!(!p.is_empty());
        assert_eq!(p.payload(), b"hello xdplane");
        // Sent with tx checksum offload: the field holds the pseudo-header sum only.
        assert_eq!(p.checksum(), 0x14ef);
        assert!(!p.verify_checksum(SRC, DST));
    }

    #[test]
    fn fill_gives_the_checksum_tcpdump_computed() {
        let mut b = udp(fixtures::UDP_OFFLOADED).to_vec();
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(SRC, DST);
        assert_eq!(p.checksum(), 0x46a0);
        assert!(p.verify_checksum(SRC, DST));
        // Addresses are covered by the pseudo-header.
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(10, 99, 0, 3)));
        p.set_checksum(0);
        assert!(p.verify_checksum(SRC, Ipv4Addr::new(10, 99, 0, 3)));
    }

    #[test]
    fn repr_round_trip() {
        let mut b = udp(fixtures::UDP_OFFLOADED).to_vec();
        b[6..8].copy_from_slice(&0x46a0u16.to_be_bytes());
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        let r = UdpRepr::parse(&p, SRC, DST).unwrap();
        assert_eq!(
            r,
            UdpRepr {
                src_port: 40000,
                dst_port: 5353,
                payload: b"hello xdplane"
            }
        );
        let mut out = [0u8; 21];
        assert_eq!(r.emit(&mut out, SRC, DST).unwrap(), 21);
        assert_eq!(&out[..], &b[..]);
        assert_eq!(
            r.emit(&mut [0u8; 20], SRC, DST),
            Err(WireError::BufferTooSmall)
        );
        let offloaded = UdpPacket::new_checked(udp(fixtures::UDP_OFFLOADED)).unwrap();
        assert_eq!(
            UdpRepr::parse(&offloaded, SRC, DST),
            Err(WireError::BadChecksum)
        );
    }

    #[test]
    fn zero_computed_checksum_is_sent_as_ffff() {
        // Find a payload whose checksum computes to zero: adjust two bytes so the sum of
        // everything is 0xffff.
        let mut b = vec![0u8; 10];
        b[4..6].copy_from_slice(&10u16.to_be_bytes());
        let ph = checksum::pseudo_header(SRC, DST, 17, 10);
        let s = checksum::add(ph, checksum::sum(&b));
        let fill = 0xffff - s;
        b[8..10].copy_from_slice(&fill.to_be_bytes());
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(SRC, DST);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn length_errors() {
        let good = udp(fixtures::UDP_OFFLOADED).to_vec();
        for n in 0..8 {
            assert_eq!(
                UdpPacket::new_checked(&good[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        for n in 8..21 {
            assert_eq!(
                UdpPacket::new_checked(&good[..n]).unwrap_err(),
                WireError::BadLength
            );
        }
        let mut b = good.clone();
        b[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::BadLength
        );
        // Trailing bytes beyond the length field are not payload.
        let mut b = good.clone();
        b.extend_from_slice(&[0xee; 9]);
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload(), b"hello xdplane");
    }
}
