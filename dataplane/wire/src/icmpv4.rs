//! ICMPv4 (RFC 792) messages.

use crate::checksum;
use crate::{WireError, be16, put16};
use std::fmt;

/// An ICMPv4 message type (RFC 792; IANA "ICMP Type Numbers").
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Icmpv4Message(pub u8);

impl Icmpv4Message {
    pub const ECHO_REPLY: Icmpv4Message = Icmpv4Message(0);
    pub const DST_UNREACHABLE: Icmpv4Message = Icmpv4Message(3);
    pub const REDIRECT: Icmpv4Message = Icmpv4Message(5);
    pub const ECHO_REQUEST: Icmpv4Message = Icmpv4Message(8);
    pub const TIME_EXCEEDED: Icmpv4Message = Icmpv4Message(11);
    pub const PARAM_PROBLEM: Icmpv4Message = Icmpv4Message(12);
}

impl fmt::Debug for Icmpv4Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Icmpv4Message::ECHO_REPLY => f.write_str("echo-reply"),
            Icmpv4Message::DST_UNREACHABLE => f.write_str("dst-unreachable"),
            Icmpv4Message::REDIRECT => f.write_str("redirect"),
            Icmpv4Message::ECHO_REQUEST => f.write_str("echo-request"),
            Icmpv4Message::TIME_EXCEEDED => f.write_str("time-exceeded"),
            Icmpv4Message::PARAM_PROBLEM => f.write_str("param-problem"),
            Icmpv4Message(t) => write!(f, "type {t}"),
        }
    }
}

/// Destination-unreachable codes (RFC 792, RFC 1122, RFC 1812).
pub mod unreachable {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set (RFC 1191 puts the next-hop MTU in the header).
    pub const FRAG_NEEDED: u8 = 4;
    /// Communication administratively prohibited (RFC 1812).
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Time-exceeded codes (RFC 792).
pub mod time_exceeded {
    pub const TTL_IN_TRANSIT: u8 = 0;
    pub const FRAG_REASSEMBLY: u8 = 1;
}

/// Length of the ICMP header (type, code, checksum, 4 bytes of rest-of-header).
pub const HEADER_LEN: usize = 8;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQNO: usize = 6;
    pub const UNUSED: usize = 4;
    pub const MTU: usize = 6;
    pub const DATA: usize = 8;
}

/// A view of an ICMPv4 message. The checksum covers the whole buffer: give the view
/// exactly the IP payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icmpv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Icmpv4Packet<T> {
        Icmpv4Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Icmpv4Packet<T>, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
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

    #[inline]
    pub fn msg_type(&self) -> Icmpv4Message {
        Icmpv4Message(self.buffer.as_ref()[field::TYPE])
    }
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// Identifier of an echo request/reply.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT)
    }
    /// Sequence number of an echo request/reply.
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }
    /// Next-hop MTU of a "fragmentation needed" message (RFC 1191).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::MTU)
    }
    /// The bytes after the 8-byte header (echo data, or the invoking datagram of an error).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }
    /// Whether the checksum over the whole message verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    #[inline]
    pub fn set_msg_type(&mut self, t: Icmpv4Message) {
        self.buffer.as_mut()[field::TYPE] = t.0;
    }
    #[inline]
    pub fn set_msg_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ECHO_IDENT, v);
    }
    #[inline]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ECHO_SEQNO, v);
    }
    #[inline]
    pub fn set_next_hop_mtu(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::MTU, v);
    }
    /// Zeroes the 4 rest-of-header bytes (the "unused" field of error messages).
    #[inline]
    pub fn clear_rest_of_header(&mut self) {
        self.buffer.as_mut()[field::UNUSED..field::DATA].fill(0);
    }
    /// Changes type and code and updates the checksum incrementally (RFC 1624 eqn. 3 on
    /// the type/code word).
    #[inline]
    pub fn set_type_code_incremental(&mut self, t: Icmpv4Message, code: u8) {
        let old = u16::from_be_bytes([self.msg_type().0, self.msg_code()]);
        let new = u16::from_be_bytes([t.0, code]);
        let c = checksum::update_u16(self.checksum(), old, new);
        self.set_msg_type(t);
        self.set_msg_code(code);
        self.set_checksum(c);
    }
    /// Recomputes the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }
}

/// An ICMPv4 message as plain values; `data` borrows the packet's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    /// `data` is the invoking datagram's IP header and leading payload (RFC 792, RFC 1812
    /// section 4.3.2.3). `next_hop_mtu` is meaningful for code 4 (RFC 1191), else 0.
    DstUnreachable {
        code: u8,
        next_hop_mtu: u16,
        data: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        data: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Parses a message whose checksum verifies. Types other than echo, unreachable and
    /// time exceeded give `Unsupported`.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        p: &Icmpv4Packet<&'a T>,
    ) -> Result<Icmpv4Repr<'a>, WireError> {
        p.check_len()?;
        if !p.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        let bytes: &'a T = p.buffer;
        let data = &bytes.as_ref()[field::DATA..];
        match p.msg_type() {
            Icmpv4Message::ECHO_REQUEST => Ok(Icmpv4Repr::EchoRequest {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            }),
            Icmpv4Message::ECHO_REPLY => Ok(Icmpv4Repr::EchoReply {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            }),
            Icmpv4Message::DST_UNREACHABLE => Ok(Icmpv4Repr::DstUnreachable {
                code: p.msg_code(),
                next_hop_mtu: p.next_hop_mtu(),
                data,
            }),
            Icmpv4Message::TIME_EXCEEDED => Ok(Icmpv4Repr::TimeExceeded {
                code: p.msg_code(),
                data,
            }),
            _ => Err(WireError::Unsupported),
        }
    }

    fn data(&self) -> &'a [u8] {
        match *self {
            Icmpv4Repr::EchoRequest { data, .. }
            | Icmpv4Repr::EchoReply { data, .. }
            | Icmpv4Repr::DstUnreachable { data, .. }
            | Icmpv4Repr::TimeExceeded { data, .. } => data,
        }
    }

    /// Header plus data length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data().len()
    }

    /// Writes the whole message (checksum filled) at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        let b = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        let mut p = Icmpv4Packet::new_unchecked(b);
        match *self {
            Icmpv4Repr::EchoRequest { ident, seq_no, .. }
            | Icmpv4Repr::EchoReply { ident, seq_no, .. } => {
                let t = if matches!(self, Icmpv4Repr::EchoRequest { .. }) {
                    Icmpv4Message::ECHO_REQUEST
                } else {
                    Icmpv4Message::ECHO_REPLY
                };
                p.set_msg_type(t);
                p.set_msg_code(0);
                p.set_echo_ident(ident);
                p.set_echo_seq_no(seq_no);
            }
            Icmpv4Repr::DstUnreachable {
                code, next_hop_mtu, ..
            } => {
                p.set_msg_type(Icmpv4Message::DST_UNREACHABLE);
                p.set_msg_code(code);
                p.clear_rest_of_header();
                p.set_next_hop_mtu(next_hop_mtu);
            }
            Icmpv4Repr::TimeExceeded { code, .. } => {
                p.set_msg_type(Icmpv4Message::TIME_EXCEEDED);
                p.set_msg_code(code);
                p.clear_rest_of_header();
            }
        }
        p.data_mut().copy_from_slice(self.data());
        p.fill_checksum();
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn icmp(frame: &[u8]) -> &[u8] {
        &frame[34..]
    }

    #[test]
    fn captured_echo_request() {
        let p = Icmpv4Packet::new_checked(icmp(fixtures::ICMP_ECHO_REQUEST)).unwrap();
        assert_eq!(p.msg_type(), Icmpv4Message::ECHO_REQUEST);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.checksum(), 0xd8fa);
        assert!(p.verify_checksum());
        assert_eq!(p.echo_ident(), 8071);
        assert_eq!(p.echo_seq_no(), 1);
        assert_eq!(p.data().len(), 56);
        assert_eq!(&p.data()[16..24], b"abcdefgh");
    }

    #[test]
    fn request_becomes_captured_reply_incrementally() {
        let mut b = icmp(fixtures::ICMP_ECHO_REQUEST).to_vec();
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_type_code_incremental(Icmpv4Message::ECHO_REPLY, 0);
        assert!(p.verify_checksum());
        // Linux computed the same reply: checksum 0xe0fa.
        assert_eq!(&b[..], icmp(fixtures::ICMP_ECHO_REPLY));
    }

    #[test]
    fn repr_round_trip() {
        let bytes = icmp(fixtures::ICMP_ECHO_REPLY);
        let p = Icmpv4Packet::new_checked(bytes).unwrap();
        let r = Icmpv4Repr::parse(&p).unwrap();
        match r {
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                assert_eq!((ident, seq_no, data.len()), (8071, 1, 56));
            }
            other => panic!("parsed as {other:?}"),
        }
        let mut out = vec![0u8; r.buffer_len()];
        assert_eq!(r.emit(&mut out).unwrap(), 64);
        assert_eq!(&out[..], bytes);
        assert_eq!(r.emit(&mut [0u8; 63]), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn errors_round_trip() {
        let invoking = &fixtures::UDP_OFFLOADED[14..14 + 28];
        for r in [
            Icmpv4Repr::TimeExceeded {
                code: time_exceeded::TTL_IN_TRANSIT,
                data: invoking,
            },
            Icmpv4Repr::DstUnreachable {
                code: unreachable::FRAG_NEEDED,
                next_hop_mtu: 1450,
                data: invoking,
            },
        ] {
            let mut out = [0xaau8; 36];
            assert_eq!(r.emit(&mut out).unwrap(), 36);
            let p = Icmpv4Packet::new_checked(&out[..]).unwrap();
            assert!(p.verify_checksum());
            assert_eq!(Icmpv4Repr::parse(&p).unwrap(), r);
        }
        let mut out = [0u8; 36];
        Icmpv4Repr::TimeExceeded {
            code: 0,
            data: invoking,
        }
        .emit(&mut out)
        .unwrap();
        assert_eq!(&out[..8], &[11, 0, out[2], out[3], 0, 0, 0, 0]);
    }

    #[test]
    fn truncated_bad_checksum_unsupported() {
        for n in 0..8 {
            assert_eq!(
                Icmpv4Packet::new_checked(&icmp(fixtures::ICMP_ECHO_REQUEST)[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        let mut b = icmp(fixtures::ICMP_ECHO_REQUEST).to_vec();
        b[20] ^= 0x40;
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p), Err(WireError::BadChecksum));
        let mut b = icmp(fixtures::ICMP_ECHO_REQUEST).to_vec();
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(Icmpv4Message(13));
        p.fill_checksum();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p), Err(WireError::Unsupported));
        assert_eq!(format!("{:?}", Icmpv4Message(13)), "type 13");
    }
}
