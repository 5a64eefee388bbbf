//! FIB micro-benchmarks: longest-prefix match of IPv4 addresses with 1k, 100k and 1M
//! prefixes, one address at a time (`Fib::lookup` in a loop) and in blocks
//! (`Fib::lookup_bulk`), and the time to build each table.
//!
//! Prefix mix: a default route, then 60 % /24, 30 % /32 and 10 % /8–/23, addresses in
//! 1.0.0.0–223.255.255.255, route ids below 1024 (they index `Snapshot::routes`).
//! Addresses hit: each is a random address inside a random inserted prefix, from a pool of
//! 2^20 addresses (4 MiB) walked in order, so the large tables are read from memory, not
//! from a cache warmed by a few repeated addresses. Every lookup iteration handles 64
//! addresses; criterion's time ÷ 64 is the cost per lookup. `build` times
//! `FibBuilder::new` + the inserts + `build`.
//!
//! Run: `cargo bench -p xdplane-perf --bench fib -- --warm-up-time 1 --measurement-time 3`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::Ipv4Addr;
use xdplane_pipeline::{Fib, FibBuilder};

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
const BLOCK: usize = 64;
const POOL: usize = 1 << 20;

/// xorshift64* (deterministic).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
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

/// `n` prefixes of the documented mix (duplicates are possible and harmless).
fn prefixes(n: usize) -> Vec<(Ipv4Addr, u8, u32)> {
    let mut rng = Rng(0x5eed ^ n as u64);
    let mut v = vec![(Ipv4Addr::UNSPECIFIED, 0, 0)];
    while v.len() < n {
        let len = match rng.below(10) {
            0..=5 => 24,
            6..=8 => 32,
            _ => 8 + rng.below(16) as u8,
        };
        let a = ((1 + rng.below(223)) << 24) | rng.below(1 << 24);
        v.push((Ipv4Addr::from(mask(a, len)), len, rng.below(1024)));
    }
    v
}

/// Addresses inside random prefixes of `p` (the default route excepted).
fn hits(p: &[(Ipv4Addr, u8, u32)]) -> Vec<Ipv4Addr> {
    let mut rng = Rng(0xadd7);
    (0..POOL)
        .map(|_| {
            let (a, len, _) = p[1 + rng.below(p.len() as u32 - 1) as usize];
            let host = (rng.next() as u32) & !mask(u32::MAX, len);
            Ipv4Addr::from(u32::from(a) | host)
        })
        .collect()
}

fn build(p: &[(Ipv4Addr, u8, u32)]) -> Fib {
    let mut b = FibBuilder::new();
    for &(a, len, r) in p {
        b.insert(a, len, r);
    }
    b.build()
}

fn label(n: usize) -> String {
    match n {
        1_000_000 => "1M".into(),
        n if n >= 1000 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn lookups(c: &mut Criterion) {
    for n in SIZES {
        let p = prefixes(n);
        let fib = build(&p);
        let pool = hits(&p);
        let shape = fib.shape();
        eprintln!(
            "fib {}: {} prefixes, {} dense groups, {} sparse groups, {:.1} MiB",
            label(n),
            shape.prefixes,
            shape.dense_groups,
            shape.sparse_groups,
            shape.memory_bytes as f64 / (1 << 20) as f64
        );
        let mut g = c.benchmark_group(format!("fib-lookup/{}", label(n)));
        g.throughput(Throughput::Elements(BLOCK as u64));
        let mut at = 0;
        g.bench_function("single", |b| {
            b.iter(|| {
                let ips = &pool[at..at + BLOCK];
                at = (at + BLOCK) % POOL;
                let mut out = [None; BLOCK];
                for (o, ip) in out.iter_mut().zip(ips) {
                    *o = fib.lookup(*ip);
                }
                black_box(out)
            })
        });
        let mut at = 0;
        g.bench_function("bulk64", |b| {
            b.iter(|| {
                let ips = &pool[at..at + BLOCK];
                at = (at + BLOCK) % POOL;
                let mut out = [None; BLOCK];
                fib.lookup_bulk(ips, &mut out);
                black_box(out)
            })
        });
        g.finish();
    }
}

fn builds(c: &mut Criterion) {
    let mut g = c.benchmark_group("fib-build");
    g.sample_size(10);
    for n in SIZES {
        let p = prefixes(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(label(n), |b| {
            b.iter_batched(|| (), |()| build(black_box(&p)), BatchSize::PerIteration)
        });
    }
    g.finish();
}

criterion_group!(benches, lookups, builds);
criterion_main!(benches);
