//! The few kernel calls the perf tools make directly: `BPF_PROG_TEST_RUN` in live-frame
//! mode, `setns`, CPU affinity, signals. This is the only module with `unsafe` (besides the
//! `aya::Pod` impls of the map value types); every block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// `BPF_PROG_TEST_RUN` (also named `BPF_PROG_RUN`), `include/uapi/linux/bpf.h`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_F_TEST_XDP_LIVE_FRAMES` (kernel 5.18+).
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// The largest `batch_size` the kernel accepts in live-frame mode (`TEST_XDP_MAX_BATCH`).
pub const MAX_LIVE_BATCH: u32 = 256;

/// The `test` member of `union bpf_attr`, `include/uapi/linux/bpf.h`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs the XDP program `prog` `repeat` times in live-frame mode: every invocation gets a
/// frame initialised (once per page) from `data`, and the kernel carries out the verdict
/// (here: the redirect). Runs on the calling thread, in the calling thread's network
/// namespace; returns `EINTR` early when a signal is pending.
pub fn prog_test_run_live(
    prog: BorrowedFd<'_>,
    data: &[u8],
    repeat: u32,
    batch_size: u32,
) -> io::Result<()> {
    let fd = u32::try_from(prog.as_raw_fd())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative program fd"))?;
    let len = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut attr = TestRunAttr {
        prog_fd: fd,
        data_size_in: len,
        data_in: data.as_ptr() as u64,
        repeat,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a fully initialised `bpf_attr.test` (unused fields zero, as the kernel
    // requires), it lives across the call, `data_in` points to `data_size_in` readable bytes
    // that outlive the call, and no output buffers are given (live mode rejects them).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs the XDP program `prog` once in plain test mode (nothing is sent): the program sees a
/// copy of `data`, and the frame it leaves behind is copied to `out`. Returns the program's
/// verdict (e.g. `XDP_REDIRECT` = 4) and the length of the output frame.
pub fn prog_test_run_once(
    prog: BorrowedFd<'_>,
    data: &[u8],
    out: &mut [u8],
) -> io::Result<(u32, usize)> {
    let fd = u32::try_from(prog.as_raw_fd())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative program fd"))?;
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "frame too large");
    let mut attr = TestRunAttr {
        prog_fd: fd,
        data_size_in: u32::try_from(data.len()).map_err(|_| too_large())?,
        data_in: data.as_ptr() as u64,
        data_size_out: u32::try_from(out.len()).map_err(|_| too_large())?,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a fully initialised `bpf_attr.test`; `data_in` points to
    // `data_size_in` readable bytes and `data_out` to `data_size_out` writable bytes, both
    // valid for the whole call; the kernel writes at most `data_size_out` bytes to `data_out`
    // and updates `retval` and `data_size_out` inside `attr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((attr.retval, (attr.data_size_out as usize).min(out.len())))
}

/// Moves the calling thread into the network namespace at `path` (e.g. `/run/netns/NAME`).
/// Only this thread changes namespace.
pub fn setns_net(path: &Path) -> io::Result<()> {
    let f = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    // SAFETY: `f` is an open namespace file descriptor for the duration of the call; setns
    // only changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("setns {}: {e}", path.display()),
        ));
    }
    Ok(())
}

/// Restricts thread/process `tid` (0: the calling thread) to `cpu`.
pub fn pin_to_cpu(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} out of range"),
        ));
    }
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t and its size is passed with it.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("pin task {tid} to CPU {cpu}: {e}"),
        ));
    }
    Ok(())
}

/// Sets the nice value of thread `tid` (0: the calling thread; on Linux a nice value is per
/// thread, and new threads inherit their creator's). The error is the bare errno.
pub fn set_nice(tid: libc::pid_t, nice: i32) -> io::Result<()> {
    let id = libc::id_t::try_from(tid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative task id"))?;
    // SAFETY: setpriority has no memory-safety preconditions.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, id, nice) };
    if rc != 0 {
        // Keep the errno (callers match ESRCH): the message only names the call.
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's id.
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Sends `sig` to process `pid`. Callers pass only PIDs of children they started.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal a process group",
        ));
    }
    // SAFETY: kill has no memory-safety preconditions; pid > 0 targets one process.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The interface index of `name` in the calling thread's network namespace.
pub fn if_nametoindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("no interface {name}: {e}"),
        ));
    }
    Ok(idx)
}

/// Clock ticks per second of /proc/stat and /proc/PID/stat.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as u64 } else { 100 }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs SIGINT/SIGTERM handlers that only set a flag (see [`stop_requested`]), so that a
/// scenario interrupted by Ctrl-C unwinds normally and its guards remove what it created.
pub fn install_stop_handler() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction is zero-initialisable; the handler only stores to an atomic,
        // which is async-signal-safe. No SA_RESTART: blocking calls return EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// True once SIGINT or SIGTERM arrived (after [`install_stop_handler`]).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
