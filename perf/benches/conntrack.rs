//! Flow-table micro-benchmarks (`tables::conntrack::FlowTable`), one thread:
//!
//! - `conntrack-hit/1M`: `lookup` + `touch` of tracked tuples with 1M flows in a table of
//!   capacity 1M (4M slots). The tuples are the 1M flows' original or reply tuples (half
//!   each) in a random order, walked in sequence, so the table is read from memory, not
//!   from a cache warmed by a few repeated tuples. The `now` passed to `touch` advances by
//!   1 ms per block, so some touches write the flow word.
//! - `conntrack-miss/1M`: `lookup` of untracked tuples in the same table.
//! - `conntrack-insert/empty` and `/75pct`: `insert` of fresh SNAT flows (reply tuple and
//!   original tuple both new) into a table of capacity 1M that is empty (replaced by a new
//!   one after every 131 072 inserts, outside the timing) or holds 750k flows (the
//!   inserted flows are removed again after every 65 536, outside the timing).
//! - `conntrack-sweep/1M`: `sweep` over a table holding 1M live flows (nothing expires):
//!   the cost per slot examined.
//!
//! Every lookup/insert iteration handles 64 tuples (criterion's time ÷ 64 is the cost per
//! operation); a sweep iteration examines 4096 slots (time ÷ 4096 per slot).
//!
//! Run: `cargo bench -p xdplane-perf --bench conntrack -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use xdplane_pipeline::tables::conntrack::{FlowTable, FlowTableConfig, Hit, Timeouts, Tuple};

const FLOWS: u32 = 1 << 20;
const BLOCK: usize = 64;
const SWEEP_BUDGET: usize = 4096;
const PROTO_TCP: u8 = 6;
const ACK: u8 = 0x10;

/// xorshift64* (deterministic).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Flow `i`: a pod (10.x.y.z) to a ClusterIP, DNAT to a backend and SNAT to the node IP
/// with a port; `i` < 2^28 gives distinct original and reply tuples.
fn flow(i: u32) -> (Tuple, Tuple) {
    let client = Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff));
    let sport = 1024 + (i >> 24) as u16 * 8 + (i % 7) as u16;
    let orig = Tuple::new(PROTO_TCP, client, Ipv4Addr::new(10, 96, 0, 10), sport, 443);
    let snat = Ipv4Addr::from(0xc000_0000 | (i >> 8));
    let rw = Tuple::new(
        PROTO_TCP,
        snat,
        Ipv4Addr::new(10, 244, (i % 200) as u8, 10),
        (i & 0xff) as u16 + 40_000,
        8443,
    );
    (orig, rw)
}

fn new_table() -> FlowTable {
    FlowTable::new(FlowTableConfig {
        capacity: 1 << 20,
        timeouts: Timeouts::default(),
    })
}

fn filled(n: u32) -> FlowTable {
    let t = new_table();
    for i in 0..n {
        let (o, rw) = flow(i);
        t.insert(&o, &rw, 0, Some(ACK)).expect("prefill");
    }
    t
}

fn lookups(c: &mut Criterion) {
    let t = filled(FLOWS);
    let cnt = t.counters();
    eprintln!(
        "conntrack 1M: {} flows, {} slots, {:.0} MiB, {} evicted",
        cnt.entries,
        t.slots(),
        t.memory_bytes() as f64 / (1 << 20) as f64,
        cnt.evicted
    );
    let mut rng = Rng(0x5eed);
    let mut pool: Vec<Tuple> = (0..FLOWS)
        .map(|i| {
            let (o, rw) = flow(i);
            if rng.next() & 1 == 0 {
                o
            } else {
                rw.reversed()
            }
        })
        .collect();
    for i in (1..pool.len()).rev() {
        pool.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let misses: Vec<Tuple> = (0..FLOWS)
        .map(|i| {
            let (o, _) = flow(i);
            Tuple { dport: 444, ..o }
        })
        .collect();

    let mut g = c.benchmark_group("conntrack-hit");
    g.throughput(Throughput::Elements(BLOCK as u64));
    let (mut at, mut now) = (0, 0u64);
    g.bench_function("1M", |b| {
        b.iter(|| {
            now += 1_000_000;
            let mut n = 0;
            for tup in &pool[at..at + BLOCK] {
                if let Some(h) = t.lookup(tup) {
                    t.touch(&h, now, Some(ACK));
                    n += 1;
                }
            }
            at = (at + BLOCK) % pool.len();
            black_box(n)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("conntrack-miss");
    g.throughput(Throughput::Elements(BLOCK as u64));
    let mut at = 0;
    g.bench_function("1M", |b| {
        b.iter(|| {
            let mut n = 0;
            for tup in &misses[at..at + BLOCK] {
                n += usize::from(t.lookup(tup).is_some());
            }
            at = (at + BLOCK) % misses.len();
            black_box(n)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("conntrack-sweep");
    g.throughput(Throughput::Elements(SWEEP_BUDGET as u64));
    g.bench_function("1M", |b| {
        b.iter(|| black_box(t.sweep(1_000_000_000, SWEEP_BUDGET)))
    });
    g.finish();
}

fn inserts(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack-insert");
    g.throughput(Throughput::Elements(BLOCK as u64));
    g.sample_size(30);

    // Into an empty table: fresh flows until 131 072, then a new table (untimed).
    let mut t = new_table();
    let mut next = 0u32;
    g.bench_function("empty", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if next >= 1 << 17 {
                    t = new_table();
                    next = 0;
                }
                let start = Instant::now();
                for i in next..next + BLOCK as u32 {
                    let (o, rw) = flow(i);
                    black_box(t.insert(&o, &rw, 0, Some(0x02)).is_ok());
                }
                spent += start.elapsed();
                next += BLOCK as u32;
            }
            spent
        })
    });

    // Into a table holding 750k flows: fresh flows above that, removed again after 65 536.
    let base = 3 * (FLOWS / 4);
    let t = filled(base);
    let mut added: Vec<Hit> = Vec::with_capacity(1 << 16);
    let mut next = base;
    g.bench_function("75pct", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if added.len() >= 1 << 16 {
                    for h in added.drain(..) {
                        t.remove_hit(&h);
                    }
                }
                let mut hits = [None; BLOCK];
                let start = Instant::now();
                for (k, i) in (next..next + BLOCK as u32).enumerate() {
                    let (o, rw) = flow(i);
                    hits[k] = t.insert(&o, &rw, 0, Some(0x02)).ok();
                }
                spent += start.elapsed();
                added.extend(hits.into_iter().flatten());
                next = if next + 2 * BLOCK as u32 >= 1 << 28 {
                    base
                } else {
                    next + BLOCK as u32
                };
            }
            spent
        })
    });
    let cnt = t.counters();
    eprintln!(
        "conntrack 75pct: {} flows, {} inserted, {} failed, {} evicted",
        cnt.entries, cnt.inserted, cnt.insert_failed, cnt.evicted
    );
    g.finish();
}

criterion_group!(benches, lookups, inserts);
criterion_main!(benches);
