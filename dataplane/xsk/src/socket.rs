//! One AF_XDP socket with its four mapped rings, and the UMEM anchor.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::ring::{ConsRing, ProdRing};
use crate::umem::{self, Umem};
use crate::{SocketConfig, XskError, sys};

/// Longest single wait of the EBUSY retry in `bind` (1 + 2 + ... + 256 ms in total).
const BIND_BUSY_MAX: Duration = Duration::from_millis(256);

/// A socket of a worker: bound to one (ifindex, queue), with its own fill and
/// completion rings (each distinct device queue needs its own pair, also with a shared
/// UMEM).
pub(crate) struct XskSocket {
    // Rings first: they are unmapped before the descriptor is closed.
    pub(crate) rx: ConsRing<libc::xdp_desc>,
    pub(crate) tx: ProdRing<libc::xdp_desc>,
    pub(crate) fill: ProdRing<u64>,
    pub(crate) comp: ConsRing<u64>,
    pub(crate) fd: OwnedFd,
    pub(crate) ifindex: u32,
    pub(crate) queue: u32,
    pub(crate) fill_target: u32,
    pub(crate) comp_size: u32,
    /// Descriptors one copy-mode `sendto` transmits (32 unless the kernel took more).
    pub(crate) tx_budget: u32,
    /// Last errno of a tx kick, to log changes only.
    pub(crate) last_kick_errno: i32,
}

fn sys_err(op: &'static str) -> impl FnOnce(io::Error) -> XskError {
    move |source| XskError::Sys { op, source }
}

impl XskSocket {
    /// A new socket with its rings created and mapped, not bound yet. With `register`,
    /// the UMEM is registered on this socket first (the socket that owns the UMEM).
    pub(crate) fn create(cfg: &SocketConfig, register: Option<&Umem>) -> Result<Self, XskError> {
        let fd = sys::xsk_socket().map_err(sys_err("socket(AF_XDP)"))?;
        let b = fd.as_fd();
        if let Some(u) = register {
            u.register(b).map_err(sys_err("setsockopt(XDP_UMEM_REG)"))?;
        }
        sys::setsockopt(b, libc::SOL_XDP, libc::XDP_UMEM_FILL_RING, &cfg.fill_size)
            .map_err(sys_err("setsockopt(XDP_UMEM_FILL_RING)"))?;
        sys::setsockopt(
            b,
            libc::SOL_XDP,
            libc::XDP_UMEM_COMPLETION_RING,
            &cfg.comp_size,
        )
        .map_err(sys_err("setsockopt(XDP_UMEM_COMPLETION_RING)"))?;
        sys::setsockopt(b, libc::SOL_XDP, libc::XDP_RX_RING, &cfg.rx_size)
            .map_err(sys_err("setsockopt(XDP_RX_RING)"))?;
        sys::setsockopt(b, libc::SOL_XDP, libc::XDP_TX_RING, &cfg.tx_size)
            .map_err(sys_err("setsockopt(XDP_TX_RING)"))?;

        let (off, len) =
            sys::getsockopt::<libc::xdp_mmap_offsets>(b, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS)
                .map_err(sys_err("getsockopt(XDP_MMAP_OFFSETS)"))?;
        if len != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(XskError::Sys {
                op: "getsockopt(XDP_MMAP_OFFSETS)",
                source: io::Error::other(
                    "kernel without ring flags (need_wakeup needs Linux 5.4 or newer)",
                ),
            });
        }
        let rx = ConsRing::map(b, &off.rx, cfg.rx_size, libc::XDP_PGOFF_RX_RING)
            .map_err(sys_err("mmap of the rx ring"))?;
        let tx = ProdRing::map(b, &off.tx, cfg.tx_size, libc::XDP_PGOFF_TX_RING)
            .map_err(sys_err("mmap of the tx ring"))?;
        let fill = ProdRing::map(
            b,
            &off.fr,
            cfg.fill_size,
            libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
        )
        .map_err(sys_err("mmap of the fill ring"))?;
        let comp = ConsRing::map(
            b,
            &off.cr,
            cfg.comp_size,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
        )
        .map_err(sys_err("mmap of the completion ring"))?;

        // Copy mode transmits at most this many descriptors per sendto (default 32).
        let budget = cfg.tx_size.min(512);
        let tx_budget = if budget > 32
            && sys::setsockopt(b, libc::SOL_XDP, sys::XDP_MAX_TX_SKB_BUDGET, &budget).is_ok()
        {
            budget
        } else {
            32
        };

        Ok(XskSocket {
            rx,
            tx,
            fill,
            comp,
            fd,
            ifindex: cfg.ifindex,
            queue: cfg.queue_id,
            fill_target: cfg.fill_target,
            comp_size: cfg.comp_size,
            tx_budget,
            last_kick_errno: 0,
        })
    }

    /// Binds to (ifindex, queue). EBUSY is retried for up to about half a second: a
    /// socket closed on the same queue releases it from a kernel work item, a moment
    /// after `close()` returns.
    pub(crate) fn bind(&self, flags: u16, shared: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let mut delay = Duration::from_millis(1);
        loop {
            match sys::xsk_bind(self.fd.as_fd(), flags, self.ifindex, self.queue, shared) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && delay <= BIND_BUSY_MAX => {
                    tracing::debug!(
                        ifindex = self.ifindex,
                        queue = self.queue,
                        ?delay,
                        "queue busy, retrying bind"
                    );
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                r => return r,
            }
        }
    }
}

/// Where the anchor socket lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnchorKind {
    /// `lo` queue 0 of a private network namespace created for this worker: nothing
    /// else can bind there and the namespace lives exactly as long as the socket.
    PrivateLoopback,
    /// `lo` queue 0 of the caller's namespace (fallback when creating a namespace is
    /// not permitted; only one worker per namespace can have it).
    Loopback,
    /// The first real socket (zero-copy: the UMEM's mode is fixed by a bind on the
    /// real device).
    Socket(crate::SockId),
}

/// A copy-mode socket that owns the UMEM registration and stays bound for the life of
/// the worker, so later sockets can always share the UMEM through it
/// (`XDP_SHARED_UMEM` needs a *bound* socket: an unbound one gives EBADF).
pub(crate) struct Anchor {
    pub(crate) fd: OwnedFd,
    pub(crate) kind: AnchorKind,
}

/// Rings of the anchor: it never receives or transmits, but the kernel wants a fill and
/// a completion ring and at least one of rx/tx before the first bind.
const ANCHOR_RING: u32 = 64;

impl Anchor {
    /// Registers the UMEM on a new socket bound in copy mode (with need_wakeup, which
    /// sockets sharing the UMEM inherit) to `lo` queue 0 of a private network namespace,
    /// or of the current one when unshare is not permitted.
    pub(crate) fn copy_mode(umem: &Umem) -> Result<Anchor, XskError> {
        let (addr, len) = (umem.base().as_ptr() as u64, umem.len() as u64);
        let private = std::thread::Builder::new()
            .name("xsk-anchor".into())
            .spawn(move || -> io::Result<io::Result<OwnedFd>> {
                // The namespace is this short-lived thread's only; the socket keeps it
                // alive after the thread exits.
                sys::unshare_netns()?;
                Ok(anchor_socket(addr, len))
            })
            .map_err(sys_err("spawning the anchor thread"))?
            .join()
            .map_err(|_| XskError::Sys {
                op: "anchor thread",
                source: io::Error::other("panicked"),
            })?;
        match private {
            Ok(Ok(fd)) => {
                tracing::info!("UMEM anchor bound to lo:0 of a private network namespace");
                Ok(Anchor {
                    fd,
                    kind: AnchorKind::PrivateLoopback,
                })
            }
            Ok(Err(e)) => Err(XskError::Anchor(e)),
            Err(unshare) => {
                tracing::warn!(
                    error = %unshare,
                    "cannot create a private network namespace for the UMEM anchor; using lo:0 of \
                     the current one (one worker per namespace)"
                );
                let fd = anchor_socket(addr, len).map_err(XskError::Anchor)?;
                Ok(Anchor {
                    fd,
                    kind: AnchorKind::Loopback,
                })
            }
        }
    }
}

fn anchor_socket(addr: u64, len: u64) -> io::Result<OwnedFd> {
    let fd = sys::xsk_socket()?;
    let b = fd.as_fd();
    umem::register(b, addr, len)?;
    sys::setsockopt(b, libc::SOL_XDP, libc::XDP_UMEM_FILL_RING, &ANCHOR_RING)?;
    sys::setsockopt(
        b,
        libc::SOL_XDP,
        libc::XDP_UMEM_COMPLETION_RING,
        &ANCHOR_RING,
    )?;
    sys::setsockopt(b, libc::SOL_XDP, libc::XDP_TX_RING, &ANCHOR_RING)?;
    let lo = crate::netdev::ifindex_of("lo")?;
    sys::xsk_bind(b, libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP, lo, 0, None)?;
    Ok(fd)
}
