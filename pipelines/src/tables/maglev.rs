//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4).
//!
//! A lookup table of `M` slots (M prime) is filled from each backend's permutation of the
//! slots; a flow hash picks a slot, the slot names the backend. Every backend owns close to
//! `M / N` slots, and when a backend is added or removed only about `1 / N` of the slots
//! change owner — so only that share of new flows moves (established flows are pinned by
//! connection tracking, not by this table).
//!
//! Building is off the fast path (O(M log M) at worst); a lookup is one modulo and one load.
//! Backends are identified by a stable 64-bit key (e.g. a hash of IP and port), so the table
//! depends only on the set of backends, not on their order.

/// The default table size: a prime, ≥ 100 × the backends a service usually has (the paper
/// uses M = 65537 for up to hundreds of backends).
pub const DEFAULT_SIZE: usize = 65_537;

/// A built Maglev table: slot → index into the backend list given to [`Maglev::build`].
#[derive(Clone, Debug, Default)]
pub struct Maglev {
    table: Vec<u32>,
}

/// 64-bit mix (splitmix64's finalizer): a fixed, platform-independent hash step.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether `m` is prime (trial division; `m` is at most a few hundred thousand).
fn is_prime(m: usize) -> bool {
    if m < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= m {
        if m.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Errors building a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaglevError {
    /// The size must be a prime so every skip generates a full permutation.
    SizeNotPrime(usize),
    /// More backends than slots.
    TooManyBackends { backends: usize, size: usize },
}

impl std::fmt::Display for MaglevError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaglevError::SizeNotPrime(m) => write!(f, "Maglev table size {m} is not a prime"),
            MaglevError::TooManyBackends { backends, size } => {
                write!(
                    f,
                    "{backends} backends do not fit a Maglev table of {size} slots"
                )
            }
        }
    }
}

impl std::error::Error for MaglevError {}

impl Maglev {
    /// Builds the table for `backends` (stable keys, duplicates allowed but pointless) with
    /// `size` slots (a prime). No backends: an empty table whose lookups return `None`.
    pub fn build(backends: &[u64], size: usize) -> Result<Maglev, MaglevError> {
        if !is_prime(size) {
            return Err(MaglevError::SizeNotPrime(size));
        }
        let n = backends.len();
        if n == 0 {
            return Ok(Maglev { table: Vec::new() });
        }
        if n > size {
            return Err(MaglevError::TooManyBackends { backends: n, size });
        }
        let m = size as u64;
        // Turns are taken in key order, so the table depends on the set of backends and
        // not on the order the caller lists them in; slots store the caller's index.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (backends[i], i));
        // offset and skip per backend, from two independent hashes of its key.
        let perm: Vec<(u64, u64)> = order
            .iter()
            .map(|&i| {
                let k = backends[i];
                let offset = mix(k ^ 0x6d61_676c_6576_0001) % m;
                let skip = mix(k ^ 0x6d61_676c_6576_0002) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u32::MAX; size];
        let mut filled = 0usize;
        // Round-robin: each backend in turn takes its next preferred free slot.
        'fill: loop {
            for (i, (offset, skip)) in perm.iter().enumerate() {
                let mut c = (offset + next[i] * skip) % m;
                while table[c as usize] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                table[c as usize] = order[i] as u32;
                next[i] += 1;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
        Ok(Maglev { table })
    }

    /// The backend (index into the build's list) for a flow hash; `None` when there are no
    /// backends.
    #[inline]
    pub fn lookup(&self, flow_hash: u64) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(flow_hash % self.table.len() as u64) as usize])
    }

    pub fn size(&self) -> usize {
        self.table.len()
    }

    /// Slots owned by each backend (for tests and dumps).
    pub fn shares(&self, backends: usize) -> Vec<usize> {
        let mut v = vec![0; backends];
        for b in &self.table {
            if let Some(c) = v.get_mut(*b as usize) {
                *c += 1;
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u64) -> Vec<u64> {
        (0..n).map(|i| mix(0x0a00_0000 + i)).collect()
    }

    #[test]
    fn every_backend_gets_a_near_equal_share() {
        for n in [1u64, 2, 3, 10, 100] {
            let t = Maglev::build(&keys(n), DEFAULT_SIZE).unwrap();
            let shares = t.shares(n as usize);
            let ideal = DEFAULT_SIZE as f64 / n as f64;
            for s in &shares {
                assert!(
                    (*s as f64 - ideal).abs() <= ideal * 0.02 + 1.0,
                    "n={n}: {shares:?}"
                );
            }
            assert_eq!(shares.iter().sum::<usize>(), DEFAULT_SIZE);
        }
    }

    #[test]
    fn removing_one_of_ten_moves_about_a_tenth_of_new_flows() {
        let all = keys(10);
        let before = Maglev::build(&all, DEFAULT_SIZE).unwrap();
        let removed = 4usize;
        let rest: Vec<u64> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != removed)
            .map(|(_, k)| *k)
            .collect();
        let after = Maglev::build(&rest, DEFAULT_SIZE).unwrap();
        // 10,000 hashed flows: a flow "moves" when its backend (by key) changes.
        let mut moved = 0;
        let mut on_removed = 0;
        for f in 0..10_000u64 {
            let h = mix(f.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let b = all[before.lookup(h).unwrap() as usize];
            let a = rest[after.lookup(h).unwrap() as usize];
            if b != a {
                moved += 1;
            }
            if b == all[removed] {
                on_removed += 1;
            }
        }
        // The removed backend's flows must move; the rest move only rarely.
        assert!(moved >= on_removed);
        assert!(
            moved <= 1_500,
            "{moved} of 10,000 flows moved (≤ 15 % expected)"
        );
        assert!(
            moved - on_removed <= 300,
            "collateral moves: {}",
            moved - on_removed
        );
    }

    #[test]
    fn the_table_depends_on_the_set_not_the_order() {
        let k = keys(7);
        let mut r = k.clone();
        r.reverse();
        let a = Maglev::build(&k, 251).unwrap();
        let b = Maglev::build(&r, 251).unwrap();
        for h in 0..251u64 {
            assert_eq!(
                k[a.lookup(h).unwrap() as usize],
                r[b.lookup(h).unwrap() as usize]
            );
        }
    }

    #[test]
    fn bad_sizes_and_empty_sets() {
        assert_eq!(
            Maglev::build(&keys(3), 65_536).unwrap_err(),
            MaglevError::SizeNotPrime(65_536)
        );
        assert!(matches!(
            Maglev::build(&keys(10), 7),
            Err(MaglevError::TooManyBackends { .. })
        ));
        let e = Maglev::build(&[], 7).unwrap();
        assert_eq!(e.lookup(42), None);
        assert!(is_prime(65_537) && !is_prime(1) && is_prime(2));
    }
}
