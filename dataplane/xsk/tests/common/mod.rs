//! Test lab: network namespaces and veth pairs that this test process creates and
//! removes (also when a test fails), threads that run inside a namespace, raw frame
//! senders and receivers.
#![allow(dead_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Runs a command, panicking with its output when it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Namespaces named `xk<pid>-<n>-<role>`; all deleted on drop (their veths with them).
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
}

impl Lab {
    pub fn new() -> Lab {
        init_tracing();
        Lab {
            prefix: format!(
                "xk{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ),
            namespaces: Vec::new(),
        }
    }

    /// A new namespace with IPv6 off (no stray router solicitations) and lo up.
    pub fn netns(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        run(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        for key in [
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ] {
            run(&["ip", "netns", "exec", &name, "sysctl", "-qw", key]);
        }
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// A veth pair `a` (in `a_ns`) — `b` (in `b_ns`), both up. `queues`: rx/tx queue
    /// count of each end (None: the kernel default, one per CPU).
    pub fn veth(&self, a_ns: &str, a: &str, b_ns: &str, b: &str, queues: Option<u32>) {
        let q = queues.map(|q| q.to_string());
        let mut args = vec!["ip", "-n", a_ns, "link", "add", a];
        if let Some(q) = &q {
            args.extend(["numtxqueues", q, "numrxqueues", q]);
        }
        args.extend(["type", "veth", "peer", "name", b, "netns", b_ns]);
        if let Some(q) = &q {
            args.extend(["numtxqueues", q, "numrxqueues", q]);
        }
        run(&args);
        run(&["ip", "-n", a_ns, "link", "set", a, "up"]);
        run(&["ip", "-n", b_ns, "link", "set", b, "up"]);
    }

    /// Sets the active queue count of a veth end (`ethtool -L`).
    pub fn channels(&self, ns: &str, dev: &str, n: u32) {
        let n = n.to_string();
        run(&[
            "ip", "netns", "exec", ns, "ethtool", "-L", dev, "rx", &n, "tx", &n,
        ]);
    }

    pub fn addr(&self, ns: &str, dev: &str, cidr: &str) {
        run(&["ip", "-n", ns, "addr", "add", cidr, "dev", dev]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// Moves the calling thread into namespace `ns`, with a private mount namespace whose
/// /sys shows that network namespace (like `ip netns exec`).
pub fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("open netns");
    // SAFETY: setns/unshare/mount only change this thread's namespaces and its private
    // mount table; the strings are valid NUL-terminated literals.
    unsafe {
        assert_eq!(
            libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET),
            0,
            "setns: {}",
            io::Error::last_os_error()
        );
        assert_eq!(
            libc::unshare(libc::CLONE_NEWNS),
            0,
            "unshare(NEWNS): {}",
            io::Error::last_os_error()
        );
        let none = c"none".as_ptr();
        assert_eq!(
            libc::mount(
                none,
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null()
            ),
            0,
            "make / rslave: {}",
            io::Error::last_os_error()
        );
        libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH);
        assert_eq!(
            libc::mount(
                c"sysfs".as_ptr(),
                c"/sys".as_ptr(),
                c"sysfs".as_ptr(),
                0,
                std::ptr::null()
            ),
            0,
            "mount sysfs: {}",
            io::Error::last_os_error()
        );
    }
}

/// Runs `f` on a new thread inside namespace `ns`.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
}

/// Runs `f` inside namespace `ns` and returns its result (re-raising its panic).
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match spawn_in(ns, f).join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// A device counter, e.g. `rx_packets`.
pub fn counter(ns: &str, dev: &str, name: &str) -> u64 {
    run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "cat",
        &format!("/sys/class/net/{dev}/statistics/{name}"),
    ])
    .trim()
    .parse()
    .unwrap()
}

/// The XDP mode `ip link show` reports on the device: "xdp" (native), "xdpgeneric",
/// or None when nothing is attached.
pub fn xdp_mode(ns: &str, dev: &str) -> Option<String> {
    let out = run(&["ip", "-n", ns, "-d", "link", "show", dev]);
    let first = out.lines().next().unwrap_or("");
    let words: Vec<&str> = first.split_whitespace().collect();
    let mode = words
        .iter()
        .find(|w| ["xdp", "xdpgeneric", "xdpdrv", "xdpoffload", "xdpmulti"].contains(w))
        .map(|w| w.to_string());
    // The program line is there exactly when a mode is.
    assert_eq!(mode.is_some(), out.contains("prog/xdp"), "{out}");
    mode
}

/// Whether an XDP program is attached to the device.
pub fn xdp_attached(ns: &str, dev: &str) -> bool {
    xdp_mode(ns, dev).is_some()
}

/// An AF_PACKET socket bound to `dev` (in the calling thread's namespace).
pub struct RawSock {
    fd: OwnedFd,
    ifindex: u32,
}

impl RawSock {
    pub fn open(dev: &str) -> RawSock {
        let ifindex = xdplane_xsk::ifindex_of(dev).unwrap();
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket/bind syscalls on a new descriptor we own; `sll` is a
        // valid sockaddr_ll of the given length.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                proto as i32,
            );
            assert!(fd >= 0, "socket(AF_PACKET): {}", io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            let r = libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(r, 0, "bind(AF_PACKET): {}", io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            RawSock { fd, ifindex }
        }
    }

    /// Sends one frame; false if the kernel had no room (ENOBUFS/EAGAIN).
    pub fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: `frame` is valid for reads of its length during the call.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => return false,
                _ => panic!("send(AF_PACKET): {e}"),
            }
        }
        true
    }

    /// Sends `frames` with one sendmmsg; returns how many were sent.
    pub fn send_many(&self, frames: &[Vec<u8>]) -> usize {
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: mmsghdr is a plain C struct; all-zero is valid.
        let mut msgs: Vec<libc::mmsghdr> = (0..frames.len())
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs/iov point at live buffers for the duration of the call.
        let r =
            unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => 0,
                _ => panic!("sendmmsg(AF_PACKET): {e}"),
            }
        } else {
            r as usize
        }
    }

    /// Receives one frame that arrived on the device (not ones it sent), or None after
    /// the 100 ms receive timeout.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        loop {
            // SAFETY: sockaddr_ll is plain C; buf and sll are valid for writes.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let r = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if r < 0 {
                return None;
            }
            if sll.sll_pkttype == libc::PACKET_OUTGOING || sll.sll_ifindex as u32 != self.ifindex {
                continue;
            }
            buf.truncate(r as usize);
            return Some(buf);
        }
    }
}

/// An Ethernet + IPv4 + UDP frame (valid IPv4 checksum, UDP checksum 0) whose payload
/// starts with `magic` and `seq`, padded to `size` bytes.
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    magic: u32,
    seq: u32,
    size: usize,
) -> Vec<u8> {
    let size = size.max(14 + 20 + 8 + 8);
    let mut f = vec![0u8; size];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (size - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let mut sum = 0u32;
    for c in ip.chunks(2) {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut f[34..42];
    // Source ports vary with seq so that flows hash to different tx queues.
    udp[0..2].copy_from_slice(&(4000 + (seq % 64) as u16).to_be_bytes());
    udp[2..4].copy_from_slice(&4001u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f[42..46].copy_from_slice(&magic.to_be_bytes());
    f[46..50].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[50..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7);
    }
    f
}

/// The (magic, seq) of a frame built by [`udp_frame`], if it is one.
pub fn frame_tag(f: &[u8]) -> Option<(u32, u32)> {
    if f.len() < 50 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return None;
    }
    Some((
        u32::from_be_bytes(f[42..46].try_into().unwrap()),
        u32::from_be_bytes(f[46..50].try_into().unwrap()),
    ))
}

/// Polls `cond` every millisecond until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}
