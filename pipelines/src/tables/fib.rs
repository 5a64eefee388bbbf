//! The IPv4 FIB: longest-prefix match from address to [`RouteId`].
//!
//! Built with [`FibBuilder`] off the fast path and frozen into a read-only [`Fib`]; a
//! lookup reads at most three table entries, never allocates, never locks and never panics.
//!
//! # Layout: DIR-16-8-8 with sparse groups (after DPDK `rte_lpm`'s DIR-24-8)
//!
//! Every level is a directly indexed array of `u32` entries filled by *prefix expansion* (a
//! prefix writes its leaf into every entry it covers, longer prefixes over shorter ones), so
//! a lookup never compares prefixes:
//!
//! ```text
//!  address a.b.c.d
//!  L1  [a.b]  2^16 entries (256 KiB): a leaf, or → the /16's group
//!  L2  [c]    a group of 256 entries per /16 holding a prefix longer than /16:
//!             a leaf, or → the /24's group
//!  L3  [d]    a group of 256 leaves per /24 holding a prefix longer than /24
//! ```
//!
//! A group is stored in one of two forms, chosen when it is built:
//! - *dense*: the 256 entries (1 KiB), read directly, as DIR-24-8's tbl8 groups;
//! - *sparse*: when the 256 entries form at most 9 runs of equal values — a /24 with up to
//!   four scattered /32s, a /16 with up to four /24s: one 64-byte cache line holding where
//!   runs 1..=8 start (16-bit lanes, 16 bytes) and the 9 run values; entry d = the value of
//!   run number count(starts ≤ d), counted with two subtractions and a multiplication
//!   (SWAR, no popcount instruction needed).
//!
//! DIR-24-8 spends a 64 MiB first level on every table and 1 KiB on every /24 holding a
//! host route. Here the first level is 256 KiB and a group costs 64 bytes unless it is busy.
//!
//! Memory of one generation ([`Fib::memory_bytes`]; figures for 1k/100k/1M prefixes in
//! docs/PERFORMANCE.md):
//! - 256 KiB for L1, always (an empty FIB maps zero pages that are never written);
//! - 64 B per sparse group, 1 KiB per dense group; at most one L2 group per /16 (65,536)
//!   and one L3 group per /24 holding a prefix longer than /24;
//! - 12 B per prefix for [`Fib::prefixes`] (the expanded table cannot give them back).
//!
//! # Entries
//!
//! A `u32`. Bit 31 set: a pointer to a group, bit 30 set for a dense one, index in bits
//! 0..=29. Else a leaf: bit 30 set = a *large* route id (bits 0..=5 = the prefix length;
//! the id is found by binary search of the prefix list); else bits 0..=29 = route id + 1,
//! 0 = no route. Route ids up to [`MAX_DIRECT_ROUTE_ID`] (2^30 − 2) are answered from the
//! table alone; larger ones (the compiler never makes them: route ids index
//! `Snapshot::routes`) are still correct but cost a binary search. Every `u32` is a valid
//! [`RouteId`] and [`FibBuilder::build`] is infallible.
//!
//! # Building
//!
//! Prefixes are sorted by (address, length): a prefix comes before every prefix it covers,
//! so one pass writing each leaf over its range is a correct expansion, and when the pass
//! first needs a group below an entry, that entry is final. The open /16 and /24 groups are
//! painted densely on the stack and stored (sparse or dense) when the pass leaves them, so
//! building takes no memory beyond the result.

use crate::snapshot::RouteId;
use std::fmt;
use std::net::Ipv4Addr;

/// Largest [`RouteId`] stored directly in the table; larger ids work but cost a binary
/// search over the prefixes on lookup.
pub const MAX_DIRECT_ROUTE_ID: RouteId = PAYLOAD - 1;

/// Addresses looked up together by [`Fib::lookup_bulk`] (one stack buffer).
pub const BULK: usize = 64;

const L1_SIZE: usize = 1 << 16;
const EMPTY: u32 = 0;
const POINTER: u32 = 1 << 31;
/// In a pointer: the group is dense. In a leaf: the route id is large.
const DENSE: u32 = 1 << 30;
const LARGE: u32 = 1 << 30;
const PAYLOAD: u32 = (1 << 30) - 1;
const RUNS: usize = 9;

/// A group of 256 entries, stored as is.
#[derive(Clone)]
#[repr(C, align(64))]
struct Dense([u32; 256]);

/// A group of 256 entries that form at most [`RUNS`] runs of equal values.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Sparse {
    /// Where runs 1.. start, one per 16-bit lane (unused lanes: 256, never reached), so that
    /// one subtraction compares a position with 4 starts at once.
    starts: [u64; 2],
    /// The run values, in order.
    values: [u32; RUNS],
}

const LANES: u64 = 0x0001_0001_0001_0001;

const _: () = assert!(std::mem::size_of::<Sparse>() == 64);
const _: () = assert!(std::mem::size_of::<Dense>() == 1024);
const _: () = assert!(MAX_DIRECT_ROUTE_ID == 0x3fff_fffe);

impl Sparse {
    /// Entry `d` (0..=255).
    #[inline(always)]
    fn get(&self, d: u32) -> u32 {
        // Lane j of `0x100 + d − start_j` stays within 0..=0x1ff (no borrow between lanes)
        // and has bit 8 set iff d ≥ start_j; adding both words' bits and multiplying by
        // LANES sums the 8 lanes into the top one: how many of runs 1..=8 start at or
        // before d, which is the number of d's run.
        let d = u64::from(d & 0xff) * LANES;
        let bit8 = 0x100 * LANES;
        let a = (bit8 + d - self.starts[0]) & bit8;
        let b = (bit8 + d - self.starts[1]) & bit8;
        let run = (((a + b) >> 8).wrapping_mul(LANES) >> 48) as usize;
        self.values.get(run).copied().unwrap_or(EMPTY)
    }

    /// The sparse form of `dense`, if it has at most [`RUNS`] runs.
    fn from_dense(dense: &[u32; 256]) -> Option<Sparse> {
        let mut lanes = [256u64; RUNS - 1];
        let mut values = [EMPTY; RUNS];
        values[0] = dense[0];
        let mut runs = 1;
        for d in 1..256 {
            if dense[d] != dense[d - 1] {
                *values.get_mut(runs)? = dense[d];
                lanes[runs - 1] = d as u64;
                runs += 1;
            }
        }
        let word = |l: &[u64]| l.iter().rev().fold(0, |w, &lane| (w << 16) | lane);
        Some(Sparse {
            starts: [word(&lanes[..4]), word(&lanes[4..])],
            values,
        })
    }
}

/// The leaf entry of `route` for a prefix of length `len`.
#[inline]
fn leaf(route: RouteId, len: u8) -> u32 {
    if route <= MAX_DIRECT_ROUTE_ID {
        route + 1
    } else {
        LARGE | u32::from(len)
    }
}

/// Clears the host bits of `addr` for a `len`-bit prefix (`len` ≤ 32).
#[inline]
fn mask(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(len)))
    }
}

/// Collects prefixes; [`build`](FibBuilder::build) freezes them into a [`Fib`].
#[derive(Clone, Debug, Default)]
pub struct FibBuilder {
    /// (masked address << 8 | length, route): sorted and unique up to `compacted`, then in
    /// insertion order.
    items: Vec<(u64, RouteId)>,
    /// Length after the last compaction: bounds the memory taken by repeated inserts.
    compacted: usize,
}

impl FibBuilder {
    pub fn new() -> FibBuilder {
        FibBuilder::default()
    }

    /// Adds `prefix/len` → `route` (host bits ignored; a later insert of the same prefix
    /// wins). A length above 32 is taken as 32.
    pub fn insert(&mut self, prefix: Ipv4Addr, len: u8, route: RouteId) {
        let len = len.min(32);
        let key = (u64::from(mask(u32::from(prefix), len)) << 8) | u64::from(len);
        self.items.push((key, route));
        if self.items.len() >= 2 * self.compacted + 4096 {
            self.compact();
        }
    }

    /// Sorts by (address, length) and keeps the last insert of each prefix.
    fn compact(&mut self) {
        // Stable: equal keys keep their insertion order, so the last one is the latest.
        self.items.sort_by_key(|&(key, _)| key);
        let mut kept = 0;
        for i in 0..self.items.len() {
            if kept > 0 && self.items[kept - 1].0 == self.items[i].0 {
                self.items[kept - 1] = self.items[i];
            } else {
                self.items[kept] = self.items[i];
                kept += 1;
            }
        }
        self.items.truncate(kept);
        self.compacted = kept;
    }

    /// Freezes the prefixes into a FIB. Infallible: every prefix length and every
    /// [`RouteId`] is supported.
    pub fn build(mut self) -> Fib {
        self.compact();
        let mut fib = Fib::default();
        let mut open = Open { l2: None, l3: None };
        for &(key, route) in &self.items {
            let addr = (key >> 8) as u32;
            let len = key as u8;
            let e = leaf(route, len);
            if len <= 16 {
                open.close_l2(&mut fib);
                let start = (addr >> 16) as usize;
                fib.l1[start..start + (1 << (16 - len))].fill(e);
                continue;
            }
            if len <= 24 {
                open.close_l3(&mut fib);
                let l2 = open.l2_for(&mut fib, addr >> 16);
                let start = ((addr >> 8) & 0xff) as usize;
                l2[start..start + (1 << (24 - len))].fill(e);
            } else {
                open.l2_for(&mut fib, addr >> 16);
                let l3 = open.l3_for(&mut fib, addr >> 8);
                let start = (addr & 0xff) as usize;
                l3[start..start + (1 << (32 - len))].fill(e);
            }
        }
        open.close_l2(&mut fib);
        fib.prefixes = self
            .items
            .iter()
            .map(|&(key, route)| (Ipv4Addr::from((key >> 8) as u32), key as u8, route))
            .collect();
        fib.dense.shrink_to_fit();
        fib.sparse.shrink_to_fit();
        fib
    }
}

/// The groups being painted by [`FibBuilder::build`]: the current /16 and /24 (inside it).
struct Open {
    l2: Option<(u32, [u32; 256])>,
    l3: Option<(u32, [u32; 256])>,
}

impl Open {
    /// Opens the group of /16 number `slash16` (closing another one) from its L1 leaf.
    fn l2_for(&mut self, fib: &mut Fib, slash16: u32) -> &mut [u32; 256] {
        if !matches!(self.l2, Some((open, _)) if open == slash16) {
            self.close_l2(fib);
            let below = fib.l1[slash16 as usize & 0xffff];
            self.l2 = Some((slash16, [below; 256]));
        }
        let (_, dense) = self.l2.get_or_insert((slash16, [EMPTY; 256]));
        dense
    }

    /// Opens the group of /24 number `slash24` (its /16's group is open) from its L2 leaf.
    fn l3_for(&mut self, fib: &mut Fib, slash24: u32) -> &mut [u32; 256] {
        if !matches!(self.l3, Some((open, _)) if open == slash24) {
            self.close_l3(fib);
            let below = self
                .l2
                .as_ref()
                .map_or(EMPTY, |(_, l2)| l2[(slash24 & 0xff) as usize]);
            self.l3 = Some((slash24, [below; 256]));
        }
        let (_, dense) = self.l3.get_or_insert((slash24, [EMPTY; 256]));
        dense
    }

    /// Stores the open /24 group and points its L2 entry at it.
    fn close_l3(&mut self, fib: &mut Fib) {
        if let Some((slash24, dense)) = self.l3.take() {
            let p = fib.store(&dense);
            if let Some((_, l2)) = &mut self.l2 {
                l2[(slash24 & 0xff) as usize] = p;
            }
        }
    }

    /// Stores the open /16 group (after its open /24) and points its L1 entry at it.
    fn close_l2(&mut self, fib: &mut Fib) {
        self.close_l3(fib);
        if let Some((slash16, dense)) = self.l2.take() {
            fib.l1[slash16 as usize & 0xffff] = fib.store(&dense);
        }
    }
}

/// A frozen FIB (see the module documentation for the layout).
#[derive(Clone)]
pub struct Fib {
    l1: Box<[u32; L1_SIZE]>,
    dense: Vec<Dense>,
    sparse: Vec<Sparse>,
    /// Sorted by (address, length); also searched for large route ids.
    prefixes: Vec<(Ipv4Addr, u8, RouteId)>,
}

/// Counts describing a [`Fib`]'s layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FibShape {
    pub prefixes: usize,
    /// Groups stored as 256 entries (1 KiB each).
    pub dense_groups: usize,
    /// Groups stored as at most 9 runs (64 B each).
    pub sparse_groups: usize,
    pub memory_bytes: usize,
}

impl Default for Fib {
    fn default() -> Fib {
        // A zeroed allocation: pages never written cost no memory.
        let l1 = vec![EMPTY; L1_SIZE]
            .into_boxed_slice()
            .try_into()
            .unwrap_or_else(|_| Box::new([EMPTY; L1_SIZE])); // not taken: the length is right
        Fib {
            l1,
            dense: Vec::new(),
            sparse: Vec::new(),
            prefixes: Vec::new(),
        }
    }
}

impl fmt::Debug for Fib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shape();
        f.debug_struct("Fib")
            .field("prefixes", &s.prefixes)
            .field("dense_groups", &s.dense_groups)
            .field("sparse_groups", &s.sparse_groups)
            .field("memory_bytes", &s.memory_bytes)
            .finish()
    }
}

impl Fib {
    /// Stores a built group, sparse if it can be, and returns the pointer to it.
    fn store(&mut self, dense: &[u32; 256]) -> u32 {
        match Sparse::from_dense(dense) {
            Some(s) => {
                self.sparse.push(s);
                POINTER | (self.sparse.len() - 1) as u32
            }
            None => {
                self.dense.push(Dense(*dense));
                POINTER | DENSE | (self.dense.len() - 1) as u32
            }
        }
    }

    /// Entry `d` of the group that pointer `p` points to.
    #[inline(always)]
    fn group(&self, p: u32, d: u32) -> u32 {
        let i = (p & PAYLOAD) as usize;
        if p & DENSE != 0 {
            match self.dense.get(i) {
                Some(g) => g.0[(d & 0xff) as usize],
                None => EMPTY,
            }
        } else {
            match self.sparse.get(i) {
                Some(g) => g.get(d & 0xff),
                None => EMPTY,
            }
        }
    }

    /// The longest-prefix match of `ip`.
    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<RouteId> {
        let a = u32::from(ip);
        let mut e = self.l1[(a >> 16) as usize];
        if e & POINTER != 0 {
            e = self.group(e, a >> 8);
            if e & POINTER != 0 {
                e = self.group(e, a);
            }
        }
        self.decode(e, a)
    }

    /// The route of leaf `e` found for address `a`.
    #[inline(always)]
    fn decode(&self, e: u32, a: u32) -> Option<RouteId> {
        if e & LARGE == 0 {
            e.checked_sub(1)
        } else {
            self.large(a, (e & 63) as u8)
        }
    }

    /// A route id above [`MAX_DIRECT_ROUTE_ID`]: the leaf says which prefix length matched,
    /// so the prefix is the address masked to it.
    #[cold]
    #[inline(never)]
    fn large(&self, a: u32, len: u8) -> Option<RouteId> {
        let key = (Ipv4Addr::from(mask(a, len.min(32))), len);
        self.prefixes
            .binary_search_by(|&(p, l, _)| (p, l).cmp(&key))
            .ok()
            .map(|i| self.prefixes[i].2)
    }

    /// Looks up every address of `ips` into `out` (same length; the extra elements of the
    /// longer one are left alone). The same answers as [`lookup`](Fib::lookup), faster:
    /// blocks of [`BULK`] addresses go level by level, so the memory reads of a block are
    /// independent of each other and overlap instead of waiting one behind the other; the
    /// addresses that need the last level (a mix that branch prediction cannot guess: /32s
    /// among /24s) are listed without a branch first.
    pub fn lookup_bulk(&self, ips: &[Ipv4Addr], out: &mut [Option<RouteId>]) {
        for (ips, out) in ips.chunks(BULK).zip(out.chunks_mut(BULK)) {
            let n = ips.len().min(out.len()).min(BULK);
            let mut addr = [0u32; BULK];
            let mut e = [EMPTY; BULK];
            for i in 0..n {
                addr[i] = u32::from(ips[i]);
                e[i] = self.l1[(addr[i] >> 16) as usize];
            }
            for i in 0..n {
                if e[i] & POINTER != 0 {
                    e[i] = self.group(e[i], addr[i] >> 8);
                }
            }
            let mut deeper = [0u8; BULK];
            let mut k = 0;
            for (i, &e) in e[..n].iter().enumerate() {
                deeper[k % BULK] = i as u8;
                k += (e >> 31) as usize;
            }
            for &i in &deeper[..k.min(BULK)] {
                let i = usize::from(i) % BULK;
                e[i] = self.group(e[i], addr[i]);
            }
            for i in 0..n {
                out[i] = self.decode(e[i], addr[i]);
            }
        }
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Every (prefix, len, route), sorted.
    pub fn prefixes(&self) -> Vec<(Ipv4Addr, u8, RouteId)> {
        self.prefixes.clone()
    }

    /// Bytes held by this FIB: the table and the prefix list.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<[u32; L1_SIZE]>()
            + self.dense.capacity() * std::mem::size_of::<Dense>()
            + self.sparse.capacity() * std::mem::size_of::<Sparse>()
            + self.prefixes.capacity() * std::mem::size_of::<(Ipv4Addr, u8, RouteId)>()
    }

    /// The layout's counts.
    pub fn shape(&self) -> FibShape {
        FibShape {
            prefixes: self.prefixes.len(),
            dense_groups: self.dense.len(),
            sparse_groups: self.sparse.len(),
            memory_bytes: self.memory_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_groups_round_trip_and_busy_groups_stay_dense() {
        let mut dense = [7u32; 256];
        dense[0] = 1;
        dense[63] = 2;
        dense[64] = 3;
        dense[100..110].fill(4);
        dense[200] = 5;
        dense[255] = 6; // runs: 1, 7, 2, 3, 7, 4, 7, 5, 7, 6 = 10
        assert!(Sparse::from_dense(&dense).is_none());
        dense[255] = 7; // 9 runs
        let s = Sparse::from_dense(&dense).unwrap();
        for d in 0..256u32 {
            assert_eq!(s.get(d), dense[d as usize], "d={d}");
        }
        for (start, end) in [(1, 2), (255, 256), (0, 256), (128, 129), (17, 200)] {
            let mut dense = [3u32; 256];
            dense[start..end].fill(4);
            let s = Sparse::from_dense(&dense).unwrap();
            assert!(
                (0..256).all(|d| s.get(d) == dense[d as usize]),
                "{start}..{end}"
            );
        }
    }

    #[test]
    fn large_route_ids_use_the_prefix_list() {
        let mut b = FibBuilder::new();
        b.insert(Ipv4Addr::new(10, 0, 0, 0), 8, u32::MAX);
        b.insert(Ipv4Addr::new(10, 1, 2, 3), 32, MAX_DIRECT_ROUTE_ID + 1);
        b.insert(Ipv4Addr::new(10, 1, 2, 4), 32, MAX_DIRECT_ROUTE_ID);
        let f = b.build();
        assert_eq!(f.lookup(Ipv4Addr::new(10, 9, 9, 9)), Some(u32::MAX));
        assert_eq!(
            f.lookup(Ipv4Addr::new(10, 1, 2, 3)),
            Some(MAX_DIRECT_ROUTE_ID + 1)
        );
        assert_eq!(
            f.lookup(Ipv4Addr::new(10, 1, 2, 4)),
            Some(MAX_DIRECT_ROUTE_ID)
        );
        assert_eq!(f.lookup(Ipv4Addr::new(10, 1, 2, 5)), Some(u32::MAX));
        assert_eq!(f.lookup(Ipv4Addr::new(11, 0, 0, 0)), None);
    }
}
