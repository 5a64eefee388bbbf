//! AF_XDP for xdplane: the UMEM, sockets and rings on `libc`, the frame pool, and the XDP
//! program that steers frames to the sockets. The only crate of the workspace with
//! `unsafe` for AF_XDP; every unsafe block says why it is sound.
//!
//! - [`WorkerIo`]: one per worker. One UMEM of [`FRAME_SIZE`] chunks (2 MiB hugepages
//!   when possible), shared by all its sockets; one socket per (device, queue) with its
//!   own fill/completion rings. Bursts touch ring indices once, not per packet.
//! - Frame ownership: every frame is free, on a socket's fill side, on a socket's tx
//!   side, or held by the caller. [`WorkerIo::frame_stats`] reports it and
//!   [`WorkerIo::remove_socket`] reclaims exactly the frames of that socket. With no
//!   traffic in flight, `free + in_fill == total`.
//! - The UMEM is registered on an anchor socket bound for the whole life of the worker
//!   (copy mode: `lo` queue 0 of a private network namespace), so deleting any device
//!   never stops later sockets from sharing the UMEM. See README.md.
//! - [`XdpProgram`] loads `bpf/xdplane_redirect.c` (built by clang in build.rs) with aya
//!   and attaches it as bpf_links; [`XdpMaps`] sets its maps from any thread.
//!
//! Needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_IPC_LOCK for the UMEM, and
//! CAP_SYS_ADMIN for the anchor's private namespace).

mod bpf;
mod io;
mod netdev;
pub mod packet;
mod pool;
mod ring;
mod socket;
mod sys;
mod umem;

pub use bpf::{
    AttachedMode, BpfError, NatConfig, PORT_REDIRECT_ALL, PORT_REDIRECT_OWNED, XSK_SLOTS, XdpMaps,
    XdpMode, XdpProgram,
};
pub use io::{
    BindMode, DEFAULT_FILL_TARGET, DEFAULT_RING_SIZE, FrameStats, SockId, SocketConfig, WorkerIo,
    XdpStatistics, XskMode,
};
pub use netdev::{ifindex_of, mac_of, rx_queue_count};
pub use pool::MAX_SOCKETS;
pub use socket::AnchorKind;
pub use umem::{FRAME_SIZE, HugepagePolicy, MAX_FRAMES, UmemBacking, UmemConfig};

/// Errors of UMEM and socket setup. The packet path (`rx_burst`, `tx_burst`, `release`,
/// `service`) never fails: it counts what it refuses.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(
        "no 2 MiB hugepages for a {bytes}-byte UMEM ({source}); reserve them with \
         vm.nr_hugepages or use HugepagePolicy::Auto"
    )]
    Hugepages {
        bytes: usize,
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("binding ifindex {ifindex} queue {queue}: {source}")]
    Bind {
        ifindex: u32,
        queue: u32,
        source: std::io::Error,
    },
    #[error("zero-copy requested but not supported on ifindex {ifindex} queue {queue}")]
    ZeroCopyUnsupported { ifindex: u32, queue: u32 },
    #[error("ifindex {ifindex} queue {queue} already has a socket in this worker")]
    Duplicate { ifindex: u32, queue: u32 },
    #[error("a worker has at most {0} sockets")]
    TooManySockets(usize),
    #[error("creating the UMEM anchor socket: {0}")]
    Anchor(std::io::Error),
}

#[cfg(test)]
mod thread_safety {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_cross_threads() {
        send::<crate::WorkerIo>();
        send::<crate::XdpProgram>();
        send_sync::<crate::XdpMaps>();
        send_sync::<crate::SockId>();
    }
}
