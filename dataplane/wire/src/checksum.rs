//! The Internet checksum: RFC 1071 one's-complement sums, the IPv4 pseudo-header
//! (RFC 768, RFC 9293 section 3.1) and incremental updates (RFC 1624).
//!
//! Vocabulary used here:
//! - a *sum* is the 16-bit one's-complement sum of big-endian 16-bit words, carries folded
//!   back in (RFC 1071 section 1), not complemented;
//! - a *checksum* is the complement of a sum, the value stored in a header.
//!
//! A buffer whose checksum field is filled in sums to `0xffff` (that is how `verify` works).

use std::net::Ipv4Addr;

/// Folds the carries of a wide accumulator into 16 bits (RFC 1071 section 4.1).
#[inline]
pub const fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The one's-complement sum of `data` as big-endian 16-bit words; an odd last byte is
/// padded with zero (RFC 1071 section 4.1).
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    fold(sum_wide(data))
}

/// Unfolded sum, 32 bits at a time (the carries are folded once at the end; a u64
/// accumulator cannot overflow for any buffer shorter than 2^32 words).
#[inline]
fn sum_wide(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// One's-complement addition of two sums.
#[inline]
pub const fn add(a: u16, b: u16) -> u16 {
    fold(a as u64 + b as u64)
}

/// One's-complement sum of several partial sums.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|s| u64::from(*s)).sum())
}

/// The checksum of `data` (complemented sum), ready to store in a header whose checksum
/// field inside `data` is zero.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Whether `data`, checksum field included, verifies (sums to `0xffff`).
#[inline]
pub fn verify(data: &[u8]) -> bool {
    sum(data) == 0xffff
}

/// The sum of the IPv4 pseudo-header used by UDP (RFC 768) and TCP (RFC 9293 section
/// 3.1): source, destination, zero + protocol, and the L4 length.
#[inline]
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u16 {
    let s = u32::from(src);
    let d = u32::from(dst);
    fold(
        u64::from(s >> 16)
            + u64::from(s & 0xffff)
            + u64::from(d >> 16)
            + u64::from(d & 0xffff)
            + u64::from(protocol)
            + u64::from(length),
    )
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word of the covered data changes from
/// `old` to `new`, `HC' = ~(~HC + ~m + m')`. Unlike eqn. 2 it never yields `0xffff` for a
/// header whose recomputed checksum would be `0x0000` (RFC 1624 section 4).
///
/// For UDP, where a zero checksum means "none" (RFC 768), callers must leave a zero field
/// alone and store `0xffff` for a computed zero.
#[inline]
pub const fn update_u16(hc: u16, old: u16, new: u16) -> u16 {
    !add(add(!hc, !old), new)
}

/// RFC 1624 eqn. 3 for a 32-bit field (an IPv4 address, a TCP sequence number): both
/// 16-bit halves change at once.
#[inline]
pub const fn update_u32(hc: u16, old: u32, new: u32) -> u16 {
    let acc = (!hc) as u64
        + (!(old >> 16) & 0xffff) as u64
        + (!old & 0xffff) as u64
        + (new >> 16) as u64
        + (new & 0xffff) as u64;
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: the plain RFC 1071 loop, 16 bits at a time.
    fn naive_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            acc += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            acc = (acc & 0xffff) + (acc >> 16);
            i += 2;
        }
        if i < data.len() {
            acc += u32::from(data[i]) << 8;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12]), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn wide_sum_matches_naive_for_every_length() {
        let mut x: u32 = 0x1234_5678;
        let mut data = Vec::new();
        for _ in 0..600 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            data.push(x as u8);
        }
        // Many 0xff bytes exercise carry folding.
        data.extend(std::iter::repeat_n(0xff, 300));
        for len in 0..data.len() {
            assert_eq!(sum(&data[..len]), naive_sum(&data[..len]), "len {len}");
        }
    }

    #[test]
    fn ipv4_header_from_wikipedia_verifies() {
        // The IPv4 header checksum example: 192.168.0.1 -> 192.168.0.199, checksum 0xb861.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verify(&hdr));
        hdr[10] = 0;
        hdr[11] = 0;
        assert_eq!(checksum(&hdr), 0xb861);
    }

    #[test]
    fn pseudo_header_matches_capture() {
        // The captured UDP datagram 10.99.0.2 -> 10.99.0.1, length 21, went out with
        // CHECKSUM_PARTIAL: its checksum field holds exactly the pseudo-header sum.
        let s = pseudo_header(
            Ipv4Addr::new(10, 99, 0, 2),
            Ipv4Addr::new(10, 99, 0, 1),
            17,
            21,
        );
        assert_eq!(s, 0x14ef);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: m = 0x5555 -> m' = 0x3285, other octets sum to 0xCD7A.
        let hc = !add(0xcd7a, 0x5555);
        assert_eq!(hc, 0xdd2f);
        let recomputed = !add(0xcd7a, 0x3285);
        assert_eq!(recomputed, 0x0000);
        assert_eq!(update_u16(hc, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn incremental_updates_match_recompute() {
        let mut x: u32 = 0x9e37_79b9;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..2000 {
            let mut data = [0u8; 20];
            for b in data.iter_mut() {
                *b = next() as u8;
            }
            // The checksum lives in bytes 10..12.
            data[10] = 0;
            data[11] = 0;
            let hc = checksum(&data);
            data[10..12].copy_from_slice(&hc.to_be_bytes());

            // A 16-bit change at bytes 8..10.
            let old16 = u16::from_be_bytes([data[8], data[9]]);
            let new16 = next() as u16;
            let hc16 = update_u16(hc, old16, new16);
            data[8..10].copy_from_slice(&new16.to_be_bytes());
            data[10..12].copy_from_slice(&hc16.to_be_bytes());
            assert!(verify(&data));

            // A 32-bit change at bytes 12..16.
            let old32 = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
            let new32 = next();
            let hc32 = update_u32(hc16, old32, new32);
            data[12..16].copy_from_slice(&new32.to_be_bytes());
            data[10..12].copy_from_slice(&hc32.to_be_bytes());
            assert!(verify(&data));
            // Equal to a full recompute except for the +0/-0 ambiguity, which eqn. 3
            // resolves towards the recomputed value.
            data[10] = 0;
            data[11] = 0;
            assert_eq!(checksum(&data), hc32);
        }
    }

    #[test]
    fn combine_and_add_agree() {
        assert_eq!(combine(&[0xffff, 0x0001]), add(0xffff, 0x0001));
        assert_eq!(add(0xffff, 0x0001), 0x0001);
        assert_eq!(combine(&[]), 0);
    }
}
