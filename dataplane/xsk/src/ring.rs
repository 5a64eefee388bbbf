//! The four AF_XDP rings, mapped from the kernel: single-producer/single-consumer
//! arrays of `size` (a power of two) entries with free-running u32 `producer` and
//! `consumer` indices and a `flags` word (`XDP_RING_NEED_WAKEUP`).
//!
//! Protocol (the kernel's `net/xdp/xsk_queue.h` and libxdp's `xsk.h` follow it too):
//! - producer side (fill, tx — we produce): write entries at `cached_prod + i`, then
//!   publish with a *release* store of `producer`; learn how much the kernel consumed
//!   with an *acquire* load of `consumer`.
//! - consumer side (rx, completion — we consume): an *acquire* load of `producer` makes
//!   the entries before it visible; read them, then hand the slots back with a *release*
//!   store of `consumer`.
//!
//! Both sides keep cached copies of the two indices, so a burst touches the shared
//! cache lines once: at most one load of the other side's index and one store of ours.

use std::io;
use std::marker::PhantomData;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};

/// Memory the ring lives in: a mapping of the socket (unmapped on drop), or in unit
/// tests a heap buffer that plays the kernel's part.
enum Backing {
    Mmap {
        ptr: NonNull<u8>,
        len: usize,
    },
    #[cfg(test)]
    Heap(#[allow(dead_code)] Box<[u64]>),
}

impl Drop for Backing {
    fn drop(&mut self) {
        match self {
            Backing::Mmap { ptr, len } => {
                // SAFETY: exactly the mapping made in `map`; ring pointers into it die
                // with the ring that owns this backing.
                unsafe {
                    libc::munmap(ptr.as_ptr().cast(), *len);
                }
            }
            #[cfg(test)]
            Backing::Heap(_) => {}
        }
    }
}

/// Pointers into one ring's memory.
struct RingMem<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    desc: NonNull<T>,
    mask: u32,
    size: u32,
    _backing: Backing,
    _t: PhantomData<T>,
}

impl<T: Copy> RingMem<T> {
    /// Maps the ring of `size` entries at page offset `pgoff` of the socket `fd`.
    fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: libc::off_t,
    ) -> io::Result<RingMem<T>> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        // SAFETY: a shared mapping of the socket's ring at the offset the AF_XDP ABI
        // defines; it aliases no Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: NULL"))?;
        let backing = Backing::Mmap { ptr: base, len };
        // SAFETY: the kernel reported these offsets for a mapping of at least `len`
        // bytes; producer/consumer/flags are u32 fields of its `struct xdp_ring`
        // (cache-line aligned), the descriptor array starts at `desc`.
        unsafe {
            Ok(RingMem {
                producer: base.add(off.producer as usize).cast(),
                consumer: base.add(off.consumer as usize).cast(),
                flags: base.add(off.flags as usize).cast(),
                desc: base.add(off.desc as usize).cast(),
                mask: size - 1,
                size,
                _backing: backing,
                _t: PhantomData,
            })
        }
    }

    /// A ring on the heap (indices in words 0..3, entries from byte 64).
    #[cfg(test)]
    fn heap(size: u32) -> RingMem<T> {
        assert!(size.is_power_of_two());
        let words = 8 + (size as usize * size_of::<T>()).div_ceil(8);
        let mut buf = vec![0u64; words].into_boxed_slice();
        let base = NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: offsets inside the boxed buffer, 8-byte aligned.
        unsafe {
            RingMem {
                producer: base.cast(),
                consumer: base.add(8).cast(),
                flags: base.add(16).cast(),
                desc: base.add(64).cast(),
                mask: size - 1,
                size,
                _backing: Backing::Heap(buf),
                _t: PhantomData,
            }
        }
    }

    #[inline]
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live, aligned ring memory owned by `self`.
        unsafe { self.producer.as_ref() }
    }
    #[inline]
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { self.consumer.as_ref() }
    }
    #[inline]
    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { self.flags.as_ref() }
    }
    #[inline]
    fn write(&mut self, idx: u32, v: T) {
        // SAFETY: `idx & mask < size`, inside the descriptor array; the slot belongs to
        // the producer (us) until `producer` is published past it.
        unsafe { self.desc.add((idx & self.mask) as usize).write(v) }
    }
    #[inline]
    fn read(&self, idx: u32) -> T {
        // SAFETY: `idx & mask < size`; the slot was published by the kernel (acquire
        // load of `producer`) and stays ours until `consumer` moves past it.
        unsafe { self.desc.add((idx & self.mask) as usize).read() }
    }
}

/// A ring we produce into (fill: u64 addresses; tx: `xdp_desc`).
pub(crate) struct ProdRing<T> {
    mem: RingMem<T>,
    cached_prod: u32,
    cached_cons: u32,
}

impl<T: Copy> ProdRing<T> {
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: libc::off_t,
    ) -> io::Result<Self> {
        Ok(Self::from_mem(RingMem::map(fd, off, size, pgoff)?))
    }
    fn from_mem(mem: RingMem<T>) -> Self {
        let cached_prod = mem.producer().load(Ordering::Relaxed);
        let cached_cons = mem.consumer().load(Ordering::Acquire);
        ProdRing {
            mem,
            cached_prod,
            cached_cons,
        }
    }

    /// Up to `want` free slots; loads the kernel's `consumer` only when the cached view
    /// has fewer than `want`.
    #[inline]
    pub(crate) fn reserve(&mut self, want: u32) -> u32 {
        let mut free = self.mem.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free < want {
            self.cached_cons = self.mem.consumer().load(Ordering::Acquire);
            free = self.mem.size - self.cached_prod.wrapping_sub(self.cached_cons);
        }
        free.min(want)
    }

    /// Writes entry `i` of the current reservation (0-based from the producer index).
    #[inline]
    pub(crate) fn write(&mut self, i: u32, v: T) {
        let idx = self.cached_prod.wrapping_add(i);
        self.mem.write(idx, v);
    }

    /// Publishes `n` written entries with one release store.
    #[inline]
    pub(crate) fn submit(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.mem
            .producer()
            .store(self.cached_prod, Ordering::Release);
    }

    /// Entries published but not yet consumed by the kernel.
    #[inline]
    pub(crate) fn outstanding(&mut self) -> u32 {
        self.cached_cons = self.mem.consumer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// The kernel asks to be woken (sendto/recvfrom) to process this ring. The fence
    /// orders our earlier `producer` store before this load, so a flag the kernel sets
    /// after looking at an empty ring is not missed.
    #[inline]
    pub(crate) fn needs_wakeup(&self) -> bool {
        fence(Ordering::SeqCst);
        self.mem.flags().load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

/// A ring we consume from (rx: `xdp_desc`; completion: u64 addresses).
pub(crate) struct ConsRing<T> {
    mem: RingMem<T>,
    cached_prod: u32,
    cached_cons: u32,
}

impl<T: Copy> ConsRing<T> {
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: libc::off_t,
    ) -> io::Result<Self> {
        Ok(Self::from_mem(RingMem::map(fd, off, size, pgoff)?))
    }
    fn from_mem(mem: RingMem<T>) -> Self {
        let cached_prod = mem.producer().load(Ordering::Acquire);
        let cached_cons = mem.consumer().load(Ordering::Relaxed);
        ConsRing {
            mem,
            cached_prod,
            cached_cons,
        }
    }

    /// Up to `max` entries ready to read; loads the kernel's `producer` only when the
    /// cached view has fewer than `max`.
    #[inline]
    pub(crate) fn peek(&mut self, max: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n < max {
            self.cached_prod = self.mem.producer().load(Ordering::Acquire);
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n.min(max)
    }

    /// Entry `i` of the current peek (0-based from the consumer index).
    #[inline]
    pub(crate) fn read(&self, i: u32) -> T {
        self.mem.read(self.cached_cons.wrapping_add(i))
    }

    /// Hands `n` read entries back to the kernel with one release store.
    #[inline]
    pub(crate) fn release(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.mem
            .consumer()
            .store(self.cached_cons, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the kernel: consumes from a producer ring / produces into a consumer ring
    /// through the same memory.
    fn kernel_consume<T: Copy>(r: &ProdRing<T>, n: u32) -> Vec<T> {
        let cons = r.mem.consumer().load(Ordering::Relaxed);
        let prod = r.mem.producer().load(Ordering::Acquire);
        let n = n.min(prod.wrapping_sub(cons));
        let out = (0..n).map(|i| r.mem.read(cons.wrapping_add(i))).collect();
        r.mem
            .consumer()
            .store(cons.wrapping_add(n), Ordering::Release);
        out
    }
    fn kernel_produce<T: Copy>(r: &mut ConsRing<T>, items: &[T]) -> u32 {
        let prod = r.mem.producer().load(Ordering::Relaxed);
        let cons = r.mem.consumer().load(Ordering::Acquire);
        let free = r.mem.size - prod.wrapping_sub(cons);
        let n = free.min(items.len() as u32);
        for (i, v) in items[..n as usize].iter().enumerate() {
            r.mem.write(prod.wrapping_add(i as u32), *v);
        }
        r.mem
            .producer()
            .store(prod.wrapping_add(n), Ordering::Release);
        n
    }

    #[test]
    fn producer_respects_capacity_and_wraps() {
        let mut r = ProdRing::<u64>::from_mem(RingMem::heap(8));
        assert_eq!(r.reserve(10), 8);
        for i in 0..8 {
            r.write(i, i as u64);
        }
        r.submit(8);
        assert_eq!(r.reserve(1), 0, "full ring has no room");
        assert_eq!(r.outstanding(), 8);
        assert_eq!(kernel_consume(&r, 5), vec![0, 1, 2, 3, 4]);
        assert_eq!(r.reserve(8), 5);
        for i in 0..5 {
            r.write(i, 100 + i as u64);
        }
        r.submit(5);
        assert_eq!(
            kernel_consume(&r, 8),
            vec![5, 6, 7, 100, 101, 102, 103, 104]
        );
        assert_eq!(r.outstanding(), 0);
    }

    #[test]
    fn indices_wrap_around_u32() {
        let mem = RingMem::<u64>::heap(4);
        mem.producer().store(u32::MAX - 1, Ordering::Relaxed);
        mem.consumer().store(u32::MAX - 1, Ordering::Relaxed);
        let mut r = ProdRing::from_mem(mem);
        assert_eq!(r.reserve(4), 4);
        for i in 0..4 {
            r.write(i, 7 + i as u64);
        }
        r.submit(4);
        assert_eq!(kernel_consume(&r, 4), vec![7, 8, 9, 10]);
        assert_eq!(r.reserve(4), 4);
    }

    #[test]
    fn consumer_sees_only_published_entries() {
        let mut r = ConsRing::<u64>::from_mem(RingMem::heap(4));
        assert_eq!(r.peek(4), 0);
        assert_eq!(kernel_produce(&mut r, &[1, 2, 3]), 3);
        assert_eq!(r.peek(2), 2);
        assert_eq!((r.read(0), r.read(1)), (1, 2));
        r.release(2);
        assert_eq!(
            kernel_produce(&mut r, &[4, 5, 6, 7]),
            3,
            "one slot still unread"
        );
        assert_eq!(r.peek(8), 4);
        let got: Vec<u64> = (0..4).map(|i| r.read(i)).collect();
        assert_eq!(got, vec![3, 4, 5, 6]);
        r.release(4);
        assert_eq!(r.peek(8), 0);
    }

    #[test]
    fn need_wakeup_flag() {
        let r = ProdRing::<u64>::from_mem(RingMem::heap(4));
        assert!(!r.needs_wakeup());
        r.mem
            .flags()
            .store(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        assert!(r.needs_wakeup());
    }
}
