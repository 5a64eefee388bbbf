//! The reference longest-prefix match: one hash map per prefix length, searched longest
//! first. Obviously correct and slow; the FIB is tested against it.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Clears the host bits of `addr` for a `len`-bit prefix.
#[inline]
pub fn mask(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(len.min(32))))
    }
}

#[derive(Clone, Debug, Default)]
pub struct RefLpm {
    by_len: Vec<HashMap<u32, u32>>, // index = prefix length 0..=32
}

impl RefLpm {
    pub fn new() -> RefLpm {
        RefLpm {
            by_len: vec![HashMap::new(); 33],
        }
    }
    /// Inserts (or replaces) `prefix/len` → `value`; host bits are ignored.
    pub fn insert(&mut self, prefix: Ipv4Addr, len: u8, value: u32) {
        if self.by_len.is_empty() {
            self.by_len = vec![HashMap::new(); 33];
        }
        let len = len.min(32);
        self.by_len[usize::from(len)].insert(mask(u32::from(prefix), len), value);
    }
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<u32> {
        let a = u32::from(ip);
        for len in (0..self.by_len.len()).rev() {
            if let Some(v) = self.by_len[len].get(&mask(a, len as u8)) {
                return Some(*v);
            }
        }
        None
    }
    /// Every (prefix, len, value), sorted by prefix then length.
    pub fn entries(&self) -> Vec<(Ipv4Addr, u8, u32)> {
        let mut v: Vec<_> = self
            .by_len
            .iter()
            .enumerate()
            .flat_map(|(len, m)| {
                m.iter()
                    .map(move |(p, r)| (Ipv4Addr::from(*p), len as u8, *r))
            })
            .collect();
        v.sort();
        v
    }
    pub fn len(&self) -> usize {
        self.by_len.iter().map(|m| m.len()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn longest_prefix_wins() {
        let mut t = RefLpm::new();
        t.insert(Ipv4Addr::new(0, 0, 0, 0), 0, 1);
        t.insert(Ipv4Addr::new(10, 244, 0, 0), 16, 2);
        t.insert(Ipv4Addr::new(10, 244, 1, 77), 24, 3); // host bits ignored
        assert_eq!(t.lookup(Ipv4Addr::new(10, 244, 1, 5)), Some(3));
        assert_eq!(t.lookup(Ipv4Addr::new(10, 244, 2, 5)), Some(2));
        assert_eq!(t.lookup(Ipv4Addr::new(8, 8, 8, 8)), Some(1));
        assert_eq!(t.entries()[2], (Ipv4Addr::new(10, 244, 1, 0), 24, 3));
    }
}
