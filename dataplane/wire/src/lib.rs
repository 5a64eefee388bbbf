//! Zero-copy packet header views and builders for xdplane.
//!
//! Every header has a typed view over a byte buffer, in the style of smoltcp's `wire`
//! module: `XPacket<T: AsRef<[u8]>>` reads fields in place, and with `T: AsMut<[u8]>` also
//! writes them. Field ranges live in a private `mod field` per header.
//!
//! # Guarantees
//!
//! - `new_checked(buf)` performs every length check the view needs, once. After it returns
//!   `Ok`, no accessor of that view can panic (as long as the buffer's `AsRef` returns the
//!   same slice every time, which every slice, `Vec` and array does).
//! - `new_unchecked(buf)` skips the check; accessors may then panic on a short buffer. Use it
//!   only on buffers whose length is known (for example when emitting into a sized buffer).
//! - Views never allocate and never copy the packet. No `unsafe` anywhere.
//! - Owned `Repr` structs parse a checked view into plain values and `emit` them into a
//!   buffer, for building headers (tests, ICMP errors, encapsulation). `emit` checks the
//!   buffer length and returns an error instead of panicking.
//! - Multi-byte fields are network byte order on the wire; accessors take and return host
//!   values.
//!
//! Checksums (RFC 1071 sums, pseudo-headers, RFC 1624 incremental updates) are in
//! [`checksum`].
#![forbid(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod ipv4;
pub mod tcp;
pub mod udp;
pub mod vxlan;

pub use arp::{ArpOp, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr, MacAddr};
pub use icmpv4::{Icmpv4Message, Icmpv4Packet, Icmpv4Repr};
pub use ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
pub use tcp::{TcpFlags, TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};
pub use vxlan::{VxlanHeader, VxlanRepr};

use std::fmt;

/// Why a buffer could not be viewed or parsed as a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer is shorter than the header's fixed part.
    Truncated,
    /// The IP version field does not match the view (IPv4 view, version not 4).
    BadVersion,
    /// A header-length field (IPv4 IHL, TCP data offset) is below the minimum or points
    /// beyond the buffer.
    BadHeaderLen,
    /// A total-length field (IPv4 total length, UDP length) is smaller than the header or
    /// larger than the buffer.
    BadLength,
    /// A checksum does not verify.
    BadChecksum,
    /// Well-formed but not a variant this crate handles (for example ARP for a hardware
    /// type other than Ethernet).
    Unsupported,
    /// The destination buffer of an `emit` is too small.
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "buffer shorter than the header",
            WireError::BadVersion => "wrong IP version",
            WireError::BadHeaderLen => "header length field below minimum or beyond the buffer",
            WireError::BadLength => "length field inconsistent with the header or the buffer",
            WireError::BadChecksum => "checksum does not verify",
            WireError::Unsupported => "header variant not supported",
            WireError::BufferTooSmall => "destination buffer too small",
        })
    }
}

impl std::error::Error for WireError {}

/// Reads a big-endian u16 at `at`. Callers pass ranges inside a length-checked buffer.
#[inline(always)]
fn be16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

#[inline(always)]
fn be32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

#[inline(always)]
fn put16(data: &mut [u8], at: usize, v: u16) {
    data[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
fn put32(data: &mut [u8], at: usize, v: u32) {
    data[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
fn ipv4_at(data: &[u8], at: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(data[at], data[at + 1], data[at + 2], data[at + 3])
}

#[cfg(test)]
#[path = "../tests/common/fixtures.rs"]
pub(crate) mod fixtures;
