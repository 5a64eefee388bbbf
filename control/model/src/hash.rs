//! Stable hashing for generated names: FNV-1a (64 bit) over explicit bytes, so names do not
//! change between Rust versions, platforms or runs (unlike `std`'s `DefaultHasher`).

/// The alphabet Kubernetes uses for generated name suffixes and `pod-template-hash`
/// (`k8s.io/apimachinery/pkg/util/rand`): no vowels, no `0 1 3`, so no words are spelled.
pub const ALPHANUMS: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `parts`, each followed by a 0xff separator (a byte no UTF-8 text contains),
/// so `("ab","c")` and `("a","bc")` differ.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        h ^= 0xff;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// `n` characters of [`ALPHANUMS`] from `h` (base-27 digits, least significant first).
/// 27^13 < 2^64, so up to 13 characters use independent digits.
pub fn encode(mut h: u64, n: usize) -> String {
    let mut s = String::with_capacity(n);
    for _ in 0..n {
        let i = usize::try_from(h % 27).unwrap_or(0);
        s.push(char::from(ALPHANUMS[i]));
        h /= 27;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_values() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; the separator byte follows it here.
        let mut h = FNV_OFFSET;
        h ^= u64::from(b'a');
        h = h.wrapping_mul(FNV_PRIME);
        assert_eq!(h, 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_eq!(fnv1a(&[b"x"]), fnv1a(&[b"x"]));
    }

    #[test]
    fn encoding() {
        assert_eq!(encode(0, 3), "bbb");
        assert_eq!(encode(1, 2), "cb");
        assert_eq!(encode(26, 1), "9");
        let s = encode(u64::MAX, 10);
        assert_eq!(s.len(), 10);
        assert!(s.bytes().all(|b| ALPHANUMS.contains(&b)));
    }
}
