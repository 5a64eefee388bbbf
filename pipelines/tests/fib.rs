//! The FIB against the reference LPM (`RefLpm`): random prefix sets of every length,
//! nested prefixes, the default route, duplicates, large route ids, boundary and random
//! lookups, exhaustive small ranges, and a million prefixes.

use std::net::Ipv4Addr;
use xdplane_pipeline::tables::fib::{BULK, MAX_DIRECT_ROUTE_ID};
use xdplane_pipeline::tables::{Fib, FibBuilder, RefLpm};

/// xorshift64* (no dependency; deterministic per seed).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn u32(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        (((self.next() >> 32) * u64::from(n)) >> 32) as u32
    }
}

fn mask(a: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(len)))
    }
}

/// First and last address of `a/len`.
fn bounds(a: u32, len: u8) -> (u32, u32) {
    let first = mask(a, len);
    let size_minus_1 = if len == 0 {
        u32::MAX
    } else {
        (1u32 << (32 - len)).wrapping_sub(1)
    };
    (first, first | size_minus_1)
}

/// Both tables with the same inserts.
struct Pair {
    fib: FibBuilder,
    reference: RefLpm,
    /// Every inserted (address as given, length), for boundary lookups.
    inserted: Vec<(u32, u8)>,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            fib: FibBuilder::new(),
            reference: RefLpm::new(),
            inserted: Vec::new(),
        }
    }
    fn insert(&mut self, a: u32, len: u8, route: u32) {
        self.fib.insert(Ipv4Addr::from(a), len, route);
        self.reference.insert(Ipv4Addr::from(a), len, route);
        self.inserted.push((a, len));
    }
    fn build(self) -> (Fib, RefLpm, Vec<(u32, u8)>) {
        (self.fib.build(), self.reference, self.inserted)
    }
}

/// A route id: mostly small, sometimes anywhere in the u32 range (large ids included).
fn route(rng: &mut Rng, large: bool) -> u32 {
    match rng.below(20) {
        0 if large => u32::MAX - rng.below(4),
        1 if large => MAX_DIRECT_ROUTE_ID + rng.below(3), // both sides of the direct limit
        2 if large => rng.u32(),
        _ => rng.below(1000),
    }
}

/// A random prefix set: every length 0..=32, many /32s and /24s, prefixes nested in earlier
/// ones, host bits set, and re-inserted prefixes (the last insert wins).
fn random_pair(rng: &mut Rng, n: usize, large: bool) -> Pair {
    let mut p = Pair::new();
    for len in 0..=32u8 {
        let r = route(rng, large);
        p.insert(rng.u32(), len, r);
    }
    while p.inserted.len() < n {
        let r = route(rng, large);
        match rng.below(10) {
            // Nested in an earlier prefix: same leading bits, longer.
            0..=3 => {
                let (a, len) = p.inserted[rng.below(p.inserted.len() as u32) as usize];
                let longer = len + rng.below(u32::from(33 - len)) as u8;
                let a = mask(a, len) | (rng.u32() & !mask(u32::MAX, len));
                p.insert(a, longer, r);
            }
            // A re-insert of an earlier prefix (its host bits may differ).
            4 => {
                let (a, len) = p.inserted[rng.below(p.inserted.len() as u32) as usize];
                let a = mask(a, len) | (rng.u32() & !mask(u32::MAX, len));
                p.insert(a, len, r);
            }
            5 | 6 => p.insert(rng.u32(), 32, r),
            7 => p.insert(rng.u32(), 24, r),
            _ => {
                let len = rng.below(33) as u8;
                p.insert(rng.u32(), len, r);
            }
        }
    }
    p
}

/// Checks `lookup` and `lookup_bulk` against the reference for `addrs`.
fn agree(fib: &Fib, reference: &RefLpm, addrs: &[u32]) {
    let ips: Vec<Ipv4Addr> = addrs.iter().map(|&a| Ipv4Addr::from(a)).collect();
    let mut bulk = vec![Some(u32::MAX - 7); ips.len()];
    fib.lookup_bulk(&ips, &mut bulk);
    for (i, ip) in ips.iter().enumerate() {
        let want = reference.lookup(*ip);
        assert_eq!(fib.lookup(*ip), want, "lookup {ip}");
        assert_eq!(bulk[i], want, "lookup_bulk {ip} at {i}");
    }
}

/// The first and last address of every inserted prefix, and their neighbours.
fn boundary_addrs(inserted: &[(u32, u8)]) -> Vec<u32> {
    let mut v = Vec::with_capacity(inserted.len() * 6);
    for &(a, len) in inserted {
        let (first, last) = bounds(a, len);
        v.extend([
            first,
            last,
            first.wrapping_sub(1),
            first.wrapping_add(1),
            last.wrapping_sub(1),
            last.wrapping_add(1),
        ]);
    }
    v
}

fn random_addrs(rng: &mut Rng, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.u32()).collect()
}

#[test]
fn random_sets_of_every_length_agree_with_the_reference() {
    for seed in 1..=12 {
        let mut rng = Rng::new(seed);
        let n = [40, 300, 3000][seed as usize % 3];
        let (fib, reference, inserted) = random_pair(&mut rng, n, seed % 2 == 0).build();
        assert_eq!(fib.len(), reference.len(), "seed {seed}");
        assert_eq!(fib.prefixes(), reference.entries(), "seed {seed}");
        agree(&fib, &reference, &boundary_addrs(&inserted));
        agree(&fib, &reference, &random_addrs(&mut rng, 20_000));
        // Addresses near the inserted ones (inside /24s that hold longer prefixes).
        let near: Vec<u32> = inserted
            .iter()
            .map(|&(a, _)| a ^ (rng.u32() & 0x3ff))
            .collect();
        agree(&fib, &reference, &near);
    }
}

#[test]
fn last_insert_wins_also_across_builder_compactions() {
    let mut rng = Rng::new(77);
    let mut p = Pair::new();
    let prefixes: Vec<(u32, u8)> = (0..20_000)
        .map(|_| (rng.u32(), [8, 16, 20, 24, 28, 32][rng.below(6) as usize]))
        .collect();
    for &(a, len) in &prefixes {
        p.insert(a, len, rng.below(50));
    }
    // Re-insert every other prefix twice, with the host bits changed.
    for round in 0..2 {
        for &(a, len) in prefixes.iter().step_by(2) {
            p.insert(a ^ ((round + 1) & !mask(u32::MAX, len)), len, 100 + round);
        }
    }
    let (fib, reference, inserted) = p.build();
    assert_eq!(fib.prefixes(), reference.entries());
    agree(&fib, &reference, &boundary_addrs(&inserted));
    for &(a, len) in prefixes.iter().step_by(2) {
        let (_, last) = bounds(a, len);
        // Not masked by something longer inserted later? Compare with the reference only.
        assert_eq!(
            fib.lookup(Ipv4Addr::from(last)),
            reference.lookup(Ipv4Addr::from(last))
        );
    }
    let ids: std::collections::HashSet<u32> = fib
        .prefixes()
        .iter()
        .filter(|(_, _, r)| *r >= 100)
        .map(|p| p.2)
        .collect();
    assert_eq!(
        ids,
        [101].into_iter().collect(),
        "the second re-insert wins"
    );
}

#[test]
fn exhaustive_small_ranges() {
    for seed in 100..104 {
        let mut rng = Rng::new(seed);
        let mut p = Pair::new();
        // Everything inside 10.0.0.0/15 (2^17 addresses), plus covering routes.
        let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
        if seed % 2 == 0 {
            p.insert(0, 0, 1);
        }
        p.insert(base, 8, 2);
        p.insert(base | 0x1_0000, 16, 3);
        for _ in 0..400 {
            let len = 15 + rng.below(18) as u8;
            let a = base | (rng.u32() & 0x1_ffff);
            let r = route(&mut rng, seed == 101);
            p.insert(a, len, r);
        }
        // A fully split /24: 256 /32s with alternating values (many L3 runs).
        for d in 0..256u32 {
            p.insert(base | 0x1_0500 | d, 32, d % 3);
        }
        let (fib, reference, _) = p.build();
        let shape = fib.shape();
        assert!(
            shape.dense_groups > 0 && shape.sparse_groups > 0,
            "{shape:?}"
        );
        // The whole /15 and 4096 addresses on each side.
        let addrs: Vec<u32> = (base - (1 << 12)..base + (1 << 17) + (1 << 12)).collect();
        agree(&fib, &reference, &addrs);
    }
}

#[test]
fn exhaustive_last_octet_patterns() {
    // Every prefix length 25..=32 at every aligned position in one /24, over a /24 leaf:
    // covers every run layout the L3 nodes can take at word boundaries.
    let base = u32::from(Ipv4Addr::new(192, 168, 7, 0));
    for len in 25..=32u8 {
        let size = 1u32 << (32 - len);
        for start in (0..256).step_by(size as usize) {
            let mut p = Pair::new();
            p.insert(base, 24, 5);
            p.insert(base | start, len, 6);
            if start + size < 256 {
                p.insert(base | (start + size), 32, 7);
            }
            let (fib, reference, _) = p.build();
            let addrs: Vec<u32> = (base - 2..base + 258).collect();
            agree(&fib, &reference, &addrs);
        }
    }
}

#[test]
fn empty_fib() {
    let mut rng = Rng::new(5);
    let addrs: Vec<u32> = random_addrs(&mut rng, 1000)
        .into_iter()
        .chain([0, u32::MAX])
        .collect();
    for fib in [Fib::default(), FibBuilder::new().build()] {
        assert!(fib.is_empty());
        assert_eq!(fib.len(), 0);
        assert!(fib.prefixes().is_empty());
        agree(&fib, &RefLpm::new(), &addrs);
    }
}

#[test]
fn default_route_only_and_host_routes_only() {
    let mut p = Pair::new();
    p.insert(u32::from(Ipv4Addr::new(1, 2, 3, 4)), 0, 9);
    let (fib, reference, _) = p.build();
    assert_eq!(fib.prefixes(), vec![(Ipv4Addr::UNSPECIFIED, 0, 9)]);
    agree(
        &fib,
        &reference,
        &[0, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX],
    );

    let mut p = Pair::new();
    for a in [0, 1, 255, 256, u32::MAX - 1, u32::MAX] {
        p.insert(a, 32, a % 7);
    }
    let (fib, reference, inserted) = p.build();
    agree(&fib, &reference, &boundary_addrs(&inserted));
}

#[test]
fn lengths_above_32_are_32_as_in_the_reference() {
    let mut p = Pair::new();
    p.insert(u32::from(Ipv4Addr::new(10, 0, 0, 1)), 40, 4);
    p.insert(u32::from(Ipv4Addr::new(10, 0, 0, 0)), 24, 3);
    let (fib, reference, _) = p.build();
    assert_eq!(fib.prefixes(), reference.entries());
    agree(
        &fib,
        &reference,
        &(0x0a00_0000..0x0a00_0100).collect::<Vec<_>>(),
    );
}

#[test]
fn bulk_lookup_handles_partial_blocks_and_mismatched_lengths() {
    let mut rng = Rng::new(9);
    let (fib, _, _) = random_pair(&mut rng, 2000, true).build();
    let ips: Vec<Ipv4Addr> = random_addrs(&mut rng, 3 * BULK + 5)
        .into_iter()
        .map(Ipv4Addr::from)
        .collect();
    let single: Vec<Option<u32>> = ips.iter().map(|ip| fib.lookup(*ip)).collect();
    for n in [0, 1, BULK - 1, BULK, BULK + 1, ips.len()] {
        let mut out = vec![Some(12345); n];
        fib.lookup_bulk(&ips[..n], &mut out);
        assert_eq!(out, single[..n]);
    }
    // A shorter output: only its length is written.
    let mut out = vec![Some(12345); 10];
    fib.lookup_bulk(&ips, &mut out);
    assert_eq!(out, single[..10]);
    // A longer output: the tail is left alone.
    let mut out = vec![Some(12345); 20];
    fib.lookup_bulk(&ips[..10], &mut out);
    assert_eq!(out[..10], single[..10]);
    assert!(out[10..].iter().all(|o| *o == Some(12345)));
}

#[test]
fn clone_and_debug() {
    let mut rng = Rng::new(3);
    let (fib, reference, inserted) = random_pair(&mut rng, 500, true).build();
    let copy = fib.clone();
    drop(fib);
    agree(&copy, &reference, &boundary_addrs(&inserted));
    let dbg = format!("{copy:?}");
    assert!(dbg.starts_with("Fib {") && dbg.len() < 200, "{dbg}");
}

#[test]
fn memory_grows_with_the_prefixes_not_the_address_space() {
    // A node's FIB: pod CIDRs of 100 nodes, a default route, some host routes.
    let mut b = FibBuilder::new();
    b.insert(Ipv4Addr::UNSPECIFIED, 0, 0);
    b.insert(Ipv4Addr::new(10, 244, 0, 0), 16, 1);
    for n in 0..100u8 {
        b.insert(Ipv4Addr::new(10, 244, n, 0), 24, 2 + u32::from(n));
        b.insert(Ipv4Addr::new(192, 168, 0, n), 32, 200 + u32::from(n));
    }
    let fib = b.build();
    let shape = fib.shape();
    // 10.244/16 and 192.168.0/24 are busy (dense); 192.168/16 holds one /24 (sparse).
    assert_eq!(
        (shape.dense_groups, shape.sparse_groups),
        (2, 1),
        "{shape:?}"
    );
    assert_eq!(shape.memory_bytes, fib.memory_bytes());
    assert!(fib.memory_bytes() < 270 * 1024, "{}", fib.memory_bytes());
    assert!(Fib::default().memory_bytes() <= 256 * 1024 + 64);

    // Scattered host routes: one sparse L2 and one sparse L3 group each, 64 bytes apiece.
    let mut rng = Rng::new(11);
    let mut b = FibBuilder::new();
    let mut slash16s = std::collections::HashSet::new();
    while slash16s.len() < 1000 {
        let a = rng.u32();
        if slash16s.insert(a >> 16) {
            b.insert(Ipv4Addr::from(a), 32, rng.below(100));
        }
    }
    let shape = b.build().shape();
    assert_eq!((shape.dense_groups, shape.sparse_groups), (0, 2000));
    assert!(shape.memory_bytes <= 256 * 1024 + 2000 * 64 + 1000 * 12);
}

/// `n` prefixes (mostly /24 and /32) built and checked on `lookups` random addresses
/// inside them plus `lookups` anywhere.
fn big(n: usize, lookups: usize) {
    let mut rng = Rng::new(n as u64);
    let mut p = Pair::new();
    p.insert(0, 0, 0);
    for _ in 1..n {
        let len = match rng.below(10) {
            0..=5 => 24,
            6..=8 => 32,
            _ => 8 + rng.below(24) as u8,
        };
        let r = route(&mut rng, true);
        p.insert(rng.u32(), len, r);
    }
    let (fib, reference, inserted) = p.build();
    assert_eq!(fib.len(), reference.len());
    let mut addrs: Vec<u32> = (0..lookups / 2)
        .map(|_| {
            let (a, len) = inserted[rng.below(inserted.len() as u32) as usize];
            mask(a, len) | (rng.u32() & !mask(u32::MAX, len))
        })
        .collect();
    addrs.extend(random_addrs(&mut rng, lookups / 2));
    agree(&fib, &reference, &addrs);
}

#[test]
fn hundred_thousand_prefixes() {
    big(100_000, 100_000);
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "slow without optimisations: run with --release"
)]
fn a_million_prefixes() {
    big(1_000_000, 1_000_000);
}
