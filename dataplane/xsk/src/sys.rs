//! Thin wrappers over the syscalls AF_XDP and BPF need. Every `unsafe` block of the
//! socket layer that is not about ring or UMEM memory lives here.

use std::ffi::c_void;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `setsockopt(SOL_XDP, XDP_MAX_TX_SKB_BUDGET)`: descriptors one copy-mode `sendto` may
/// transmit (Linux 6.17+, range 32..=tx ring size). Not in `libc` yet.
pub(crate) const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// Turns a `-1` return into the thread's `errno`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A new AF_XDP socket in the calling thread's network namespace.
pub(crate) fn xsk_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments; the returned descriptor is new and
    // owned by nobody else, so wrapping it in an OwnedFd is sound.
    unsafe {
        let fd = cvt(libc::socket(
            libc::AF_XDP,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            0,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// `setsockopt(fd, level, name, &value)` for a plain-old-data `value`.
pub(crate) fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to `size_of::<T>()` readable bytes for the whole call; the
    // kernel only reads them.
    unsafe {
        cvt(libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<c_void>(),
            size_of::<T>() as libc::socklen_t,
        ))?;
    }
    Ok(())
}

/// `getsockopt(fd, level, name)` into a zeroed `T`; returns the value and the length the
/// kernel wrote (older kernels write shorter versions of some XDP structs).
pub(crate) fn getsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<(T, usize)> {
    // SAFETY: `T` is a plain C struct (all-zero is a valid value); the kernel writes at
    // most `len` bytes into it and reports how many.
    unsafe {
        let mut value: T = zeroed();
        let mut len = size_of::<T>() as libc::socklen_t;
        cvt(libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut T).cast::<c_void>(),
            &mut len,
        ))?;
        Ok((value, len as usize))
    }
}

/// `bind()` an AF_XDP socket to `(ifindex, queue)`.
pub(crate) fn xsk_bind(
    fd: BorrowedFd<'_>,
    flags: u16,
    ifindex: u32,
    queue: u32,
    shared_umem_fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    // SAFETY: sockaddr_xdp is a plain C struct; all-zero is valid before filling it.
    let mut sa: libc::sockaddr_xdp = unsafe { zeroed() };
    sa.sxdp_family = libc::AF_XDP as u16;
    sa.sxdp_flags = flags;
    sa.sxdp_ifindex = ifindex;
    sa.sxdp_queue_id = queue;
    sa.sxdp_shared_umem_fd = shared_umem_fd.map_or(0, |f| f.as_raw_fd() as u32);
    // SAFETY: `sa` is a valid sockaddr_xdp of the length passed; the kernel only reads it.
    unsafe {
        cvt(libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_xdp).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        ))?;
    }
    Ok(())
}

/// `sendto(fd, NULL, 0, MSG_DONTWAIT)`: asks the kernel to process the tx ring.
pub(crate) fn kick_tx(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zero-length send with no buffer and no address; nothing is read or written
    // in our memory.
    let ret = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `recvfrom(fd, NULL, 0, MSG_DONTWAIT)`: wakes the driver to process the fill ring
/// (zero-copy drivers that set need_wakeup on it).
pub(crate) fn kick_rx(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zero-length receive with no buffer and no address.
    let ret = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `poll()` over `fds` for at most `timeout_ms` (-1: forever). EINTR counts as "nothing".
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd entries.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(ret as usize)
}

/// Moves the calling thread into a new, empty network namespace (only `lo`, down).
pub(crate) fn unshare_netns() -> io::Result<()> {
    // SAFETY: unshare only changes the calling thread's namespaces.
    unsafe { cvt(libc::unshare(libc::CLONE_NEWNET))? };
    Ok(())
}

/// The raw `bpf(2)` syscall with `attr` (a `union bpf_attr` prefix).
pub(crate) fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, exclusively borrowed, fully initialised prefix of
    // `union bpf_attr` of `size_of::<T>()` bytes; any pointers inside it are set by the
    // caller to memory that outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Wraps a descriptor returned by a syscall that creates one (e.g. BPF_LINK_CREATE).
pub(crate) fn owned_fd(raw: libc::c_long) -> OwnedFd {
    // SAFETY: `raw` was just returned by a successful syscall that creates a descriptor;
    // nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(raw as libc::c_int) }
}
