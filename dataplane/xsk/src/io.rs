//! `WorkerIo`: one UMEM, its frame pool and the AF_XDP sockets of one worker.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use xdplane_pipeline::{Desc, FrameMem};

use crate::pool::{FramePool, MAX_SOCKETS};
use crate::socket::{Anchor, AnchorKind, XskSocket};
use crate::umem::{FRAME_SHIFT, FRAME_SIZE, Umem, UmemBacking, UmemConfig};
use crate::{XskError, sys};

/// Default size of each of the four rings of a socket.
pub const DEFAULT_RING_SIZE: u32 = 2048;
/// Default number of frames kept on a socket's fill ring.
pub const DEFAULT_FILL_TARGET: u32 = 1024;
const MAX_RING_SIZE: u32 = 1 << 16;

/// How the first bind of a worker chooses the UMEM's mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy when the device supports it, else copy (logged).
    #[default]
    Auto,
    /// Zero-copy or an error.
    ZeroCopy,
    /// Copy mode.
    Copy,
}

/// The mode the UMEM was bound in (every socket sharing it has the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XskMode {
    ZeroCopy,
    Copy,
}

/// One socket to add: a device queue, ring sizes, how many frames to keep on its fill ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    pub ifindex: u32,
    pub queue_id: u32,
    /// Ring sizes: powers of two, 1..=65536.
    pub rx_size: u32,
    pub tx_size: u32,
    pub fill_size: u32,
    pub comp_size: u32,
    /// Only the worker's first bind uses it; later sockets inherit the UMEM's mode.
    pub bind_mode: BindMode,
    /// Frames `service()` keeps on the fill ring (at most `fill_size`).
    pub fill_target: u32,
}

impl SocketConfig {
    /// Defaults: rings of [`DEFAULT_RING_SIZE`], fill target [`DEFAULT_FILL_TARGET`], `Auto`.
    pub fn new(ifindex: u32, queue_id: u32) -> SocketConfig {
        SocketConfig {
            ifindex,
            queue_id,
            rx_size: DEFAULT_RING_SIZE,
            tx_size: DEFAULT_RING_SIZE,
            fill_size: DEFAULT_RING_SIZE,
            comp_size: DEFAULT_RING_SIZE,
            bind_mode: BindMode::Auto,
            fill_target: DEFAULT_FILL_TARGET,
        }
    }

    fn validate(&self) -> Result<(), XskError> {
        for (name, v) in [
            ("rx_size", self.rx_size),
            ("tx_size", self.tx_size),
            ("fill_size", self.fill_size),
            ("comp_size", self.comp_size),
        ] {
            if !v.is_power_of_two() || v > MAX_RING_SIZE {
                return Err(XskError::Config(format!(
                    "{name} {v} must be a power of two in 1..={MAX_RING_SIZE}"
                )));
            }
        }
        if self.fill_target > self.fill_size {
            return Err(XskError::Config(format!(
                "fill_target {} exceeds fill_size {}",
                self.fill_target, self.fill_size
            )));
        }
        if self.ifindex == 0 {
            return Err(XskError::Config("ifindex 0".into()));
        }
        Ok(())
    }
}

/// A socket of a [`WorkerIo`]. Stale ids (of removed sockets) are recognised: the
/// packet-path calls treat them as empty sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockId {
    idx: u16,
    generation: u16,
}

impl SockId {
    /// A small index (< [`MAX_SOCKETS`]) for per-socket arrays; reused after removal.
    pub fn index(self) -> usize {
        self.idx as usize
    }
}

impl std::fmt::Display for SockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "xsk{}.{}", self.idx, self.generation)
    }
}

/// Where the worker's frames are. `free + in_fill + in_tx + held == total` always;
/// with no traffic in flight (nothing held, tx completed) `free + in_fill == total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    pub total: u32,
    /// In the free pool.
    pub free: u32,
    /// On fill rings, in the kernel for rx, or on rx rings not read yet.
    pub in_fill: u32,
    /// On tx rings or in the kernel until their completion is read.
    pub in_tx: u32,
    /// Returned by `rx_burst` and not yet given to `tx_burst` or `release`.
    pub held: u32,
    /// Descriptors refused because their frame was not where it had to be (a caller
    /// bug, or a kernel descriptor we never gave), since the worker started.
    pub bad_descs: u64,
}

/// The kernel's drop counters of one socket (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStatistics {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// One worker's AF_XDP I/O: a UMEM shared by all its sockets (`XDP_SHARED_UMEM`), one
/// socket per (device, queue) with its own fill/completion rings, and a frame pool that
/// knows who holds every frame.
///
/// Not `Sync`: one thread drives it. It is `Send`, so it can be built on one thread and
/// moved to the worker thread.
pub struct WorkerIo {
    // Sockets and the anchor close before the UMEM is unmapped (field order).
    sockets: Vec<Option<XskSocket>>,
    generations: Vec<u16>,
    /// The copy-mode anchor (owns the UMEM registration).
    anchor: Option<Anchor>,
    /// In zero-copy mode, the socket that registered the UMEM.
    zc_anchor: Option<SockId>,
    pool: FramePool,
    umem: Umem,
    mode: Option<XskMode>,
    bad_descs: u64,
    pollfds: RefCell<Vec<libc::pollfd>>,
}

// SAFETY: the raw pointers inside (UMEM and ring mappings) are owned exclusively by this
// value and carry no thread affinity; moving it to another thread moves that ownership.
unsafe impl Send for WorkerIo {}

impl WorkerIo {
    /// Maps the UMEM (hugepages or 4 KiB pages, logged). Sockets come with `add_socket`;
    /// the UMEM is registered with the kernel at the first one.
    pub fn new(cfg: &UmemConfig) -> Result<WorkerIo, XskError> {
        let umem = Umem::new(cfg)?;
        let pool = FramePool::new(umem.frames());
        Ok(WorkerIo {
            sockets: Vec::new(),
            generations: Vec::new(),
            anchor: None,
            zc_anchor: None,
            pool,
            umem,
            mode: None,
            bad_descs: 0,
            pollfds: RefCell::new(Vec::new()),
        })
    }

    /// The page size backing the UMEM.
    pub fn backing(&self) -> UmemBacking {
        self.umem.backing()
    }

    /// The UMEM's mode, once the first socket is bound.
    pub fn mode(&self) -> Option<XskMode> {
        self.mode
    }

    /// Where the UMEM registration lives (None before the first socket, or in zero-copy
    /// mode after the anchoring socket was removed).
    pub fn anchor(&self) -> Option<AnchorKind> {
        match (&self.anchor, self.zc_anchor) {
            (Some(a), _) => Some(a.kind),
            (None, Some(s)) => Some(AnchorKind::Socket(s)),
            (None, None) => None,
        }
    }

    /// The live sockets.
    pub fn sockets(&self) -> impl Iterator<Item = SockId> + '_ {
        self.sockets.iter().enumerate().filter_map(|(i, s)| {
            s.as_ref().map(|_| SockId {
                idx: i as u16,
                generation: self.generations[i],
            })
        })
    }

    /// The (ifindex, queue) a live socket is bound to.
    pub fn socket_queue(&self, s: SockId) -> Option<(u32, u32)> {
        self.sock(s).map(|k| (k.ifindex, k.queue))
    }

    #[inline]
    fn sock(&self, s: SockId) -> Option<&XskSocket> {
        match self.sockets.get(s.idx as usize) {
            Some(Some(k)) if self.generations[s.idx as usize] == s.generation => Some(k),
            _ => None,
        }
    }

    /// Creates a socket on `(ifindex, queue_id)`, binds it sharing the worker's UMEM and
    /// fills its fill ring to the target. The first socket of a worker decides the
    /// UMEM's mode (see [`BindMode`]).
    pub fn add_socket(&mut self, cfg: &SocketConfig) -> Result<SockId, XskError> {
        cfg.validate()?;
        if self
            .sockets
            .iter()
            .flatten()
            .any(|k| k.ifindex == cfg.ifindex && k.queue == cfg.queue_id)
        {
            return Err(XskError::Duplicate {
                ifindex: cfg.ifindex,
                queue: cfg.queue_id,
            });
        }
        let idx = match self.sockets.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.sockets.len() < MAX_SOCKETS => self.sockets.len(),
            None => return Err(XskError::TooManySockets(MAX_SOCKETS)),
        };
        if idx == self.sockets.len() {
            self.sockets.push(None);
            self.generations.push(0);
        }
        let id = SockId {
            idx: idx as u16,
            generation: self.generations[idx],
        };

        let sock = self.bind_new(cfg, id)?;
        self.sockets[idx] = Some(sock);
        self.pool.add_socket(idx as u16);
        self.refill(idx);
        self.rebuild_pollfds();

        let planned: u64 = self
            .sockets
            .iter()
            .flatten()
            .map(|k| k.fill_target as u64)
            .sum();
        if planned > self.pool.total() as u64 / 2 {
            tracing::warn!(
                fill_targets = planned,
                frames = self.pool.total(),
                "fill targets take more than half of the UMEM; rx may starve under load"
            );
        }
        tracing::info!(
            sock = %id,
            ifindex = cfg.ifindex,
            queue = cfg.queue_id,
            mode = ?self.mode,
            in_fill = self.pool.in_fill(idx as u16),
            "AF_XDP socket bound"
        );
        Ok(id)
    }

    /// Creates and binds the socket: the first bind of the worker chooses the mode;
    /// later ones share the UMEM through the anchor (or any other bound socket).
    fn bind_new(&mut self, cfg: &SocketConfig, id: SockId) -> Result<XskSocket, XskError> {
        let bind_err = |source: io::Error| XskError::Bind {
            ifindex: cfg.ifindex,
            queue: cfg.queue_id,
            source,
        };
        for attempt in 0..2 {
            if self.mode.is_none()
                && let Some(sock) = self.first_bind(cfg, id)?
            {
                return Ok(sock);
            }
            let sock = XskSocket::create(cfg, None)?;
            let candidates = self
                .anchor
                .iter()
                .map(|a| a.fd.as_fd())
                .chain(self.sockets.iter().flatten().map(|k| k.fd.as_fd()));
            let mut last = None;
            for shared in candidates {
                match sock.bind(libc::XDP_SHARED_UMEM, Some(shared)) {
                    Ok(()) => return Ok(sock),
                    // That socket is no longer bound (its device went away): try another.
                    Err(e) if e.raw_os_error() == Some(libc::EBADF) => last = Some(e),
                    Err(e)
                        if e.raw_os_error() == Some(libc::EOPNOTSUPP)
                            && self.mode == Some(XskMode::ZeroCopy) =>
                    {
                        return Err(XskError::Bind {
                            ifindex: cfg.ifindex,
                            queue: cfg.queue_id,
                            source: io::Error::new(
                                e.kind(),
                                format!(
                                    "{e}: this worker's UMEM is zero-copy and the device \
                                     cannot join it; use BindMode::Copy for this worker"
                                ),
                            ),
                        });
                    }
                    Err(e) => return Err(bind_err(e)),
                }
            }
            // No bound socket shares the UMEM any more (only possible when the anchor
            // is a real zero-copy socket whose device is gone): register it afresh.
            tracing::warn!(
                attempt,
                error = ?last,
                "no bound socket left to share the UMEM through; registering it again"
            );
            self.anchor = None;
            self.zc_anchor = None;
            self.mode = None;
        }
        Err(bind_err(io::Error::other(
            "no socket to share the UMEM through after registering it again",
        )))
    }

    /// The worker's first bind. Returns the socket when it is itself the UMEM's owner
    /// (zero-copy), or None after setting up the copy-mode anchor.
    fn first_bind(
        &mut self,
        cfg: &SocketConfig,
        id: SockId,
    ) -> Result<Option<XskSocket>, XskError> {
        if cfg.bind_mode != BindMode::Copy {
            let sock = XskSocket::create(cfg, Some(&self.umem))?;
            match sock.bind(libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP, None) {
                Ok(()) => {
                    tracing::info!(
                        ifindex = cfg.ifindex,
                        queue = cfg.queue_id,
                        "AF_XDP zero-copy mode; the first socket anchors the UMEM"
                    );
                    self.mode = Some(XskMode::ZeroCopy);
                    self.anchor = None;
                    self.zc_anchor = Some(id);
                    return Ok(Some(sock));
                }
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    if cfg.bind_mode == BindMode::ZeroCopy {
                        return Err(XskError::ZeroCopyUnsupported {
                            ifindex: cfg.ifindex,
                            queue: cfg.queue_id,
                        });
                    }
                    tracing::info!(
                        ifindex = cfg.ifindex,
                        queue = cfg.queue_id,
                        "zero-copy not supported by the device (EOPNOTSUPP); using copy mode"
                    );
                }
                Err(e) => {
                    return Err(XskError::Bind {
                        ifindex: cfg.ifindex,
                        queue: cfg.queue_id,
                        source: e,
                    });
                }
            }
        }
        self.anchor = Some(Anchor::copy_mode(&self.umem)?);
        self.mode = Some(XskMode::Copy);
        Ok(None)
    }
}

impl WorkerIo {
    /// Closes the socket and reclaims exactly the frames on its fill and tx sides. Frames
    /// it received that the caller still holds stay held. Unknown ids are ignored.
    pub fn remove_socket(&mut self, s: SockId) {
        if self.sock(s).is_none() {
            return;
        }
        let idx = s.idx as usize;
        // Close first: once the socket is released the kernel no longer writes into its
        // fill-side frames, so they can be reused.
        drop(self.sockets[idx].take());
        let (from_fill, from_tx) = self.pool.reclaim(s.idx);
        self.generations[idx] = self.generations[idx].wrapping_add(1);
        if self.zc_anchor == Some(s) {
            self.zc_anchor = None;
        }
        self.rebuild_pollfds();
        tracing::info!(sock = %s, from_fill, from_tx, "AF_XDP socket removed, frames reclaimed");
    }

    /// Reads up to `out.len()` received frames of socket `s` into `out`; they are held
    /// by the caller until passed to [`tx_burst`](Self::tx_burst) or
    /// [`release`](Self::release). Touches the ring indices once.
    #[inline]
    pub fn rx_burst(&mut self, s: SockId, out: &mut [Desc]) -> usize {
        let idx = s.idx as usize;
        let sock = match self.sockets.get_mut(idx) {
            Some(Some(k)) if self.generations[idx] == s.generation => k,
            _ => return 0,
        };
        let n = sock.rx.peek(out.len().min(u32::MAX as usize) as u32);
        let mut k = 0;
        for i in 0..n {
            let d = sock.rx.read(i);
            if self.pool.rx_to_caller(s.idx, d.addr) {
                out[k] = Desc {
                    addr: d.addr,
                    len: d.len,
                };
                k += 1;
            } else {
                self.bad_descs += 1;
            }
        }
        sock.rx.release(n);
        k
    }

    /// Queues frames the caller holds on socket `s`'s tx ring, in order, until the ring
    /// is full. Returns how many descriptors from the front of `descs` were consumed;
    /// the caller still owns `descs[n..]`. A consumed descriptor whose frame the caller
    /// does not hold is skipped and counted (`bad_descs`); one that is held but does not
    /// fit its chunk (or is empty) is dropped back to the pool and counted.
    /// [`service`](Self::service) wakes the kernel to transmit.
    #[inline]
    pub fn tx_burst(&mut self, s: SockId, descs: &[Desc]) -> usize {
        let idx = s.idx as usize;
        let sock = match self.sockets.get_mut(idx) {
            Some(Some(k)) if self.generations[idx] == s.generation => k,
            _ => return 0,
        };
        let room = sock.tx.reserve(descs.len().min(u32::MAX as usize) as u32);
        let mut queued = 0u32;
        let mut used = 0usize;
        for d in descs {
            if queued == room {
                break;
            }
            used += 1;
            let off = (d.addr as usize) & (FRAME_SIZE - 1);
            if d.len == 0 || off + d.len as usize > FRAME_SIZE {
                if self.pool.release(d.addr) {
                    tracing::debug!(
                        addr = d.addr,
                        len = d.len,
                        "tx descriptor does not fit its frame"
                    );
                }
                self.bad_descs += 1;
                continue;
            }
            if !self.pool.caller_to_tx(s.idx, d.addr) {
                self.bad_descs += 1;
                continue;
            }
            sock.tx.write(
                queued,
                libc::xdp_desc {
                    addr: d.addr,
                    len: d.len,
                    options: 0,
                },
            );
            queued += 1;
        }
        sock.tx.submit(queued);
        used
    }

    /// Returns frames the caller holds (dropped packets) to the free pool. Descriptors
    /// whose frame is not held are ignored and counted (`bad_descs`).
    #[inline]
    pub fn release(&mut self, descs: &[Desc]) {
        for d in descs {
            if !self.pool.release(d.addr) {
                self.bad_descs += 1;
            }
        }
    }

    /// Housekeeping for every socket, one pass: wake the kernel for tx rings with
    /// pending descriptors when it asks for it (need_wakeup; always the case in copy
    /// mode, where `sendto` itself transmits), drain completion rings into the free
    /// pool, refill fill rings up to their targets (and wake zero-copy drivers that ask
    /// for it on the fill ring).
    pub fn service(&mut self) {
        let zc = self.mode == Some(XskMode::ZeroCopy);
        for idx in 0..self.sockets.len() {
            let Some(sock) = self.sockets[idx].as_mut() else {
                continue;
            };
            let s = idx as u16;
            Self::kick_tx(sock, zc, &mut self.pool, &mut self.bad_descs, s);
            Self::drain_completions(sock, &mut self.pool, &mut self.bad_descs, s);
            self.refill(idx);
        }
    }

    fn kick_tx(sock: &mut XskSocket, zc: bool, pool: &mut FramePool, bad: &mut u64, s: u16) {
        let pending = sock.tx.outstanding();
        if pending == 0 || !sock.tx.needs_wakeup() {
            return;
        }
        // Copy mode sends at most `tx_budget` descriptors per call and reports EAGAIN
        // when more remain or the completion ring is full; zero-copy only wakes the driver.
        let rounds = if zc {
            1
        } else {
            pending.div_ceil(sock.tx_budget) + 1
        };
        for _ in 0..rounds {
            let errno = match sys::kick_tx(sock.fd.as_fd()) {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(-1),
            };
            if errno != sock.last_kick_errno {
                if errno != 0 && errno != libc::EAGAIN && errno != libc::EBUSY {
                    tracing::debug!(
                        ifindex = sock.ifindex,
                        queue = sock.queue,
                        error = %io::Error::from_raw_os_error(errno),
                        "tx wakeup failed"
                    );
                }
                sock.last_kick_errno = errno;
            }
            match errno {
                // EAGAIN: budget used up or completion ring full; EBUSY: the driver
                // dropped one frame (it still completes).
                0 | libc::EAGAIN | libc::EBUSY => {}
                // ENOBUFS (no skb), ENETDOWN, ENXIO (device gone): retry next service.
                _ => break,
            }
            if zc {
                break;
            }
            Self::drain_completions(sock, pool, bad, s);
            if sock.tx.outstanding() == 0 {
                break;
            }
        }
    }

    fn drain_completions(sock: &mut XskSocket, pool: &mut FramePool, bad: &mut u64, s: u16) {
        let n = sock.comp.peek(sock.comp_size);
        for i in 0..n {
            if !pool.complete(s, sock.comp.read(i)) {
                *bad += 1;
            }
        }
        sock.comp.release(n);
    }

    /// Tops socket `idx`'s fill ring up to its target from the free pool.
    fn refill(&mut self, idx: usize) {
        let Some(sock) = self.sockets[idx].as_mut() else {
            return;
        };
        let s = idx as u16;
        let have = self.pool.in_fill(s);
        if have < sock.fill_target {
            let want = (sock.fill_target - have).min(self.pool.free_count());
            if want > 0 {
                let room = sock.fill.reserve(want);
                let fill = &mut sock.fill;
                let n = self.pool.take_for_fill(s, room, |i, a| fill.write(i, a));
                fill.submit(n);
            }
        }
        if self.mode == Some(XskMode::ZeroCopy) && sock.fill.needs_wakeup() {
            let _ = sys::kick_rx(sock.fd.as_fd());
        }
    }

    fn rebuild_pollfds(&mut self) {
        let fds = self.pollfds.get_mut();
        fds.clear();
        for k in self.sockets.iter().flatten() {
            fds.push(libc::pollfd {
                fd: k.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
    }

    /// Sleeps in `poll()` until a socket has received frames, `extra_fd` (e.g. an
    /// eventfd) is readable, or `timeout` passes. Returns whether anything is readable.
    /// Call [`service`](Self::service) first so that fill rings are stocked.
    pub fn wait(&self, timeout: Duration, extra_fd: Option<BorrowedFd<'_>>) -> io::Result<bool> {
        let mut fds = self.pollfds.borrow_mut();
        let n_sock = fds.len();
        if let Some(e) = extra_fd {
            fds.push(libc::pollfd {
                fd: e.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for p in fds.iter_mut() {
            p.revents = 0;
        }
        // Round up: a sub-millisecond timeout must still sleep, not spin.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        let result = sys::poll(&mut fds, ms);
        let ready = fds[..n_sock].iter().any(|p| p.revents & libc::POLLIN != 0)
            || fds[n_sock..].iter().any(|p| p.revents != 0);
        fds.truncate(n_sock);
        result.map(|_| ready)
    }

    /// The descriptor of socket `s` (for the XSKMAP). Panics if `s` was removed.
    pub fn socket_fd(&self, s: SockId) -> BorrowedFd<'_> {
        match self.sock(s) {
            Some(k) => k.fd.as_fd(),
            None => panic!("socket_fd: {s} is not a live socket of this worker"),
        }
    }

    pub fn frame_stats(&self) -> FrameStats {
        FrameStats {
            total: self.pool.total(),
            free: self.pool.free_count(),
            in_fill: self.pool.in_fill_total(),
            in_tx: self.pool.in_tx_total(),
            held: self.pool.held(),
            bad_descs: self.bad_descs,
        }
    }

    /// Frames on socket `s`'s fill side and tx side.
    pub fn socket_frames(&self, s: SockId) -> Option<(u32, u32)> {
        self.sock(s)
            .map(|_| (self.pool.in_fill(s.idx), self.pool.in_tx(s.idx)))
    }

    /// The kernel's counters for socket `s` (`getsockopt(XDP_STATISTICS)`).
    pub fn xdp_stats(&self, s: SockId) -> io::Result<XdpStatistics> {
        let k = self.sock(s).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{s} is not a live socket"))
        })?;
        let (st, len) = sys::getsockopt::<libc::xdp_statistics>(
            k.fd.as_fd(),
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
        )?;
        // Kernels before 5.9 fill only the first three counters.
        let _ = len;
        Ok(XdpStatistics {
            rx_dropped: st.rx_dropped,
            rx_invalid_descs: st.rx_invalid_descs,
            tx_invalid_descs: st.tx_invalid_descs,
            rx_ring_full: st.rx_ring_full,
            rx_fill_ring_empty_descs: st.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: st.tx_ring_empty_descs,
        })
    }

    /// The bytes of a frame the caller holds, or None if `d` is not such a frame or does
    /// not fit its chunk.
    pub fn frame(&self, d: Desc) -> Option<&[u8]> {
        let off = (d.addr as usize) & (FRAME_SIZE - 1);
        if !self.pool.is_held(d.addr) || off + d.len as usize > FRAME_SIZE {
            return None;
        }
        // SAFETY: the chunk is inside the UMEM (is_held checked the index) and held by
        // the caller, so no ring owns it and the kernel neither reads nor writes it; the
        // slice borrows `self`, so no `&mut` to it can exist at the same time.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.umem.base().as_ptr().add(d.addr as usize),
                d.len as usize,
            )
        })
    }

    /// Checks the frame pool's bookkeeping against its owner array (O(frames)); for
    /// tests and debugging.
    pub fn audit(&self) -> Result<(), String> {
        self.pool.audit()
    }
}

impl FrameMem for WorkerIo {
    /// Panics if `addr` is not in a frame the caller holds or `addr + len` leaves its
    /// chunk: only descriptors from `rx_burst` (or in-chunk edits of them) are valid.
    #[inline]
    fn frame_mut(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let off = (addr as usize) & (FRAME_SIZE - 1);
        assert!(
            self.pool.is_held(addr) && off + len <= FRAME_SIZE,
            "frame_mut({addr:#x}, {len}): not a frame held by the caller"
        );
        // SAFETY: as in `frame`: inside the UMEM, held by the caller (not on any ring, so
        // the kernel does not touch it), and `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.umem.base().as_ptr().add(addr as usize), len) }
    }

    #[inline]
    fn headroom(&self, addr: u64) -> usize {
        (addr as usize) & (FRAME_SIZE - 1)
    }

    #[inline]
    fn room(&self, addr: u64) -> usize {
        FRAME_SIZE - ((addr as usize) & (FRAME_SIZE - 1))
    }
}

const _: () = assert!(FRAME_SIZE == 1 << FRAME_SHIFT);
