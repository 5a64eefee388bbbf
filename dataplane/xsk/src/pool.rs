//! The frame pool: who holds each UMEM chunk, and the free frames.
//!
//! One u16 per chunk says where it is:
//! - `FREE`: on the free stack, ours to give;
//! - `CALLER`: returned by `rx_burst`, held by the pipeline until `tx_burst`/`release`;
//! - `fill(s)`: on socket `s`'s fill ring, or in the kernel's hands for rx, or on its rx
//!   ring not yet read;
//! - `tx(s)`: on socket `s`'s tx ring, or in the kernel's hands until its completion
//!   ring returns it.
//!
//! Every transition checks the current owner, so a descriptor we did not hand out (or
//! hand out twice) is detected instead of corrupting the pool, and removing a socket
//! reclaims exactly the chunks marked `fill(s)`/`tx(s)`.

use crate::umem::FRAME_SHIFT;

const FREE: u16 = 0;
const CALLER: u16 = 1;

/// Sockets per worker (owner codes `2 + 2s`, `3 + 2s` must fit a u16).
pub const MAX_SOCKETS: usize = 4096;
const _: () = assert!(3 + 2 * (MAX_SOCKETS - 1) <= u16::MAX as usize);

#[inline]
fn fill(s: u16) -> u16 {
    2 + 2 * s
}
#[inline]
fn tx(s: u16) -> u16 {
    3 + 2 * s
}

pub(crate) struct FramePool {
    owner: Vec<u16>,
    /// Chunk indices of free frames; LIFO so recently used (cache-warm) frames go first.
    free: Vec<u32>,
    held: u32,
    in_fill: Vec<u32>,
    in_tx: Vec<u32>,
}

impl FramePool {
    pub(crate) fn new(frames: u32) -> FramePool {
        FramePool {
            owner: vec![FREE; frames as usize],
            // Reversed so that chunk 0 is handed out first.
            free: (0..frames).rev().collect(),
            held: 0,
            in_fill: Vec::new(),
            in_tx: Vec::new(),
        }
    }

    #[inline]
    fn chunk(&self, addr: u64) -> Option<usize> {
        let c = (addr >> FRAME_SHIFT) as usize;
        (c < self.owner.len()).then_some(c)
    }

    pub(crate) fn total(&self) -> u32 {
        self.owner.len() as u32
    }
    pub(crate) fn free_count(&self) -> u32 {
        self.free.len() as u32
    }
    pub(crate) fn held(&self) -> u32 {
        self.held
    }
    pub(crate) fn in_fill(&self, s: u16) -> u32 {
        self.in_fill.get(s as usize).copied().unwrap_or(0)
    }
    pub(crate) fn in_tx(&self, s: u16) -> u32 {
        self.in_tx.get(s as usize).copied().unwrap_or(0)
    }
    pub(crate) fn in_fill_total(&self) -> u32 {
        self.in_fill.iter().sum()
    }
    pub(crate) fn in_tx_total(&self) -> u32 {
        self.in_tx.iter().sum()
    }

    /// Makes room for socket index `s` in the per-socket counters.
    pub(crate) fn add_socket(&mut self, s: u16) {
        let need = s as usize + 1;
        if self.in_fill.len() < need {
            self.in_fill.resize(need, 0);
            self.in_tx.resize(need, 0);
        }
    }

    /// Whether the chunk of `addr` is held by the caller.
    #[inline]
    pub(crate) fn is_held(&self, addr: u64) -> bool {
        self.chunk(addr).is_some_and(|c| self.owner[c] == CALLER)
    }

    /// Gives up to `n` free frames to socket `s`'s fill ring: `put(i, chunk_addr)` writes
    /// entry `i`. Returns how many were given.
    #[inline]
    pub(crate) fn take_for_fill(&mut self, s: u16, n: u32, mut put: impl FnMut(u32, u64)) -> u32 {
        let n = n.min(self.free.len() as u32);
        let code = fill(s);
        for i in 0..n {
            // `n <= free.len()`, so pop always yields.
            let Some(c) = self.free.pop() else { return i };
            self.owner[c as usize] = code;
            put(i, (c as u64) << FRAME_SHIFT);
        }
        self.in_fill[s as usize] += n;
        n
    }

    /// An rx descriptor of socket `s`: the chunk moves from its fill side to the caller.
    #[inline]
    pub(crate) fn rx_to_caller(&mut self, s: u16, addr: u64) -> bool {
        match self.chunk(addr) {
            Some(c) if self.owner[c] == fill(s) => {
                self.owner[c] = CALLER;
                self.in_fill[s as usize] -= 1;
                self.held += 1;
                true
            }
            _ => false,
        }
    }

    /// The caller queues a frame on socket `s`'s tx ring.
    #[inline]
    pub(crate) fn caller_to_tx(&mut self, s: u16, addr: u64) -> bool {
        match self.chunk(addr) {
            Some(c) if self.owner[c] == CALLER => {
                self.owner[c] = tx(s);
                self.held -= 1;
                self.in_tx[s as usize] += 1;
                true
            }
            _ => false,
        }
    }

    /// A completion of socket `s`: the frame is free again.
    #[inline]
    pub(crate) fn complete(&mut self, s: u16, addr: u64) -> bool {
        match self.chunk(addr) {
            Some(c) if self.owner[c] == tx(s) => {
                self.owner[c] = FREE;
                self.in_tx[s as usize] -= 1;
                self.free.push(c as u32);
                true
            }
            _ => false,
        }
    }

    /// The caller drops a frame it holds.
    #[inline]
    pub(crate) fn release(&mut self, addr: u64) -> bool {
        match self.chunk(addr) {
            Some(c) if self.owner[c] == CALLER => {
                self.owner[c] = FREE;
                self.held -= 1;
                self.free.push(c as u32);
                true
            }
            _ => false,
        }
    }

    /// Socket `s` is gone: every frame on its fill and tx sides is free again. Returns
    /// (frames from the fill side, frames from the tx side).
    pub(crate) fn reclaim(&mut self, s: u16) -> (u32, u32) {
        let (f, t) = (fill(s), tx(s));
        let (mut nf, mut nt) = (0, 0);
        for (c, o) in self.owner.iter_mut().enumerate() {
            if *o == f {
                nf += 1;
            } else if *o == t {
                nt += 1;
            } else {
                continue;
            }
            *o = FREE;
            self.free.push(c as u32);
        }
        if let Some(x) = self.in_fill.get_mut(s as usize) {
            *x = 0;
        }
        if let Some(x) = self.in_tx.get_mut(s as usize) {
            *x = 0;
        }
        (nf, nt)
    }

    /// Checks the counters against the owner array and the free stack (O(frames)).
    pub(crate) fn audit(&self) -> Result<(), String> {
        let mut free = 0u32;
        let mut held = 0u32;
        let mut fills = vec![0u32; self.in_fill.len()];
        let mut txs = vec![0u32; self.in_tx.len()];
        for (c, &o) in self.owner.iter().enumerate() {
            match o {
                FREE => free += 1,
                CALLER => held += 1,
                _ => {
                    let s = ((o - 2) / 2) as usize;
                    let slot = if o % 2 == 0 { &mut fills } else { &mut txs };
                    match slot.get_mut(s) {
                        Some(x) => *x += 1,
                        None => return Err(format!("chunk {c} owned by unknown socket {s}")),
                    }
                }
            }
        }
        if free != self.free.len() as u32 {
            return Err(format!(
                "{free} chunks marked free, free stack has {}",
                self.free.len()
            ));
        }
        let mut seen = vec![false; self.owner.len()];
        for &c in &self.free {
            if self.owner[c as usize] != FREE || std::mem::replace(&mut seen[c as usize], true) {
                return Err(format!("free stack entry {c} is not free or is duplicated"));
            }
        }
        if held != self.held {
            return Err(format!("{held} chunks held, counter says {}", self.held));
        }
        if fills != self.in_fill || txs != self.in_tx {
            return Err(format!(
                "per-socket counters {:?}/{:?} differ from owners {fills:?}/{txs:?}",
                self.in_fill, self.in_tx
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill_n(p: &mut FramePool, s: u16, n: u32) -> Vec<u64> {
        let mut v = Vec::new();
        p.take_for_fill(s, n, |_, a| v.push(a));
        v
    }

    #[test]
    fn lifecycle_keeps_counts() {
        let mut p = FramePool::new(16);
        p.add_socket(0);
        p.add_socket(1);
        let f0 = fill_n(&mut p, 0, 4);
        let f1 = fill_n(&mut p, 1, 4);
        assert_eq!(f0, vec![0, 4096, 8192, 12288]);
        assert_eq!((p.free_count(), p.in_fill_total()), (8, 8));
        // rx on 0 (the kernel writes at chunk + 256 in copy mode)
        assert!(p.rx_to_caller(0, f0[0] + 256));
        assert!(p.rx_to_caller(0, f0[1] + 256));
        assert!(
            !p.rx_to_caller(0, f1[0]),
            "socket 1's frame is not socket 0's"
        );
        assert_eq!(p.held(), 2);
        // forward one to socket 1, drop one
        assert!(p.caller_to_tx(1, f0[0] + 300));
        assert!(!p.caller_to_tx(1, f0[0] + 300), "already queued");
        assert!(p.release(f0[1] + 256));
        assert!(!p.release(f0[1]), "double release");
        assert_eq!((p.held(), p.in_tx(1), p.free_count()), (0, 1, 9));
        // completion comes back on socket 1's completion ring
        assert!(!p.complete(0, f0[0]), "completion on the wrong socket");
        assert!(p.complete(1, f0[0]));
        assert_eq!(p.free_count(), 10);
        p.audit().unwrap();
        assert_eq!(p.free_count() + p.in_fill_total(), p.total());
    }

    #[test]
    fn reclaim_returns_exactly_the_sockets_frames() {
        let mut p = FramePool::new(32);
        for s in 0..3 {
            p.add_socket(s);
        }
        let f0 = fill_n(&mut p, 0, 8);
        fill_n(&mut p, 1, 8);
        let f2 = fill_n(&mut p, 2, 8);
        assert!(p.rx_to_caller(0, f0[0]));
        assert!(p.caller_to_tx(2, f0[0]));
        assert!(p.rx_to_caller(2, f2[0]));
        // socket 2 goes away: 7 fill-side frames + 1 tx frame; its rx'd frame stays held
        assert_eq!(p.reclaim(2), (7, 1));
        assert_eq!(p.held(), 1);
        assert!(p.release(f2[0]));
        p.audit().unwrap();
        assert_eq!(p.in_fill(0), 7);
        assert_eq!(p.in_fill(1), 8);
        assert_eq!(p.free_count() + p.in_fill_total(), 32);
    }

    #[test]
    fn out_of_range_addresses_are_rejected() {
        let mut p = FramePool::new(4);
        p.add_socket(0);
        assert!(!p.release(4 * 4096));
        assert!(!p.rx_to_caller(0, u64::MAX));
        assert!(!p.is_held(1 << 40));
        assert_eq!(fill_n(&mut p, 0, 10).len(), 4, "only what is free");
        p.audit().unwrap();
    }
}
