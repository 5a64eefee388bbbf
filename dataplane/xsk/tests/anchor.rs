//! The UMEM anchor: deleting the device of any socket never stops later sockets from
//! sharing the UMEM. Needs root.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::*;
use xdplane_pipeline::Desc;
use xdplane_xsk::*;

const MAGIC: u32 = 0x414e_4331;

/// Binds a bare AF_XDP socket (own fill/completion rings, a tx ring, no mappings) to
/// `ifindex` queue 0 sharing the UMEM of `shared_fd`; returns the bind result.
fn raw_shared_bind(ifindex: u32, shared_fd: i32) -> std::io::Result<()> {
    // SAFETY: plain socket/setsockopt/bind calls on a descriptor we own; the option
    // values and the sockaddr are valid for the lengths given.
    unsafe {
        let fd = libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        let n: u32 = 64;
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_TX_RING,
        ] {
            let r = libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                opt,
                (&n as *const u32).cast(),
                4,
            );
            assert_eq!(r, 0);
        }
        let mut sa: libc::sockaddr_xdp = std::mem::zeroed();
        sa.sxdp_family = libc::AF_XDP as u16;
        sa.sxdp_flags = libc::XDP_SHARED_UMEM;
        sa.sxdp_ifindex = ifindex;
        sa.sxdp_queue_id = 0;
        sa.sxdp_shared_umem_fd = shared_fd as u32;
        let r = libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_xdp).cast(),
            std::mem::size_of::<libc::sockaddr_xdp>() as u32,
        );
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// Receives frames tagged MAGIC on `s` until `n` arrived (or 10 s), releasing them.
fn receive(io: &mut WorkerIo, s: SockId, n: usize) -> usize {
    let mut got = 0;
    let mut descs = [Desc::default(); 64];
    let end = Instant::now() + Duration::from_secs(10);
    while got < n && Instant::now() < end {
        let k = io.rx_burst(s, &mut descs);
        for d in &descs[..k] {
            if matches!(frame_tag(io.frame(*d).unwrap()), Some((MAGIC, _))) {
                got += 1;
            }
        }
        io.release(&descs[..k]);
        io.service();
        if k == 0 {
            io.wait(Duration::from_millis(2), None).unwrap();
        }
    }
    got
}

fn send_from(peer: &str, dev: &'static str, dst_mac: [u8; 6], n: u32) {
    in_ns(peer, move || {
        let raw = RawSock::open(dev);
        for i in 0..n {
            let f = udp_frame(
                dst_mac,
                [2, 0, 0, 0, 0, 7],
                [10, 3, 0, 2],
                [10, 3, 0, 1],
                MAGIC,
                i,
                80,
            );
            while !raw.send(&f) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
}

#[test]
fn deleting_the_first_device_does_not_stop_later_sockets() {
    let mut lab = Lab::new();
    let dp = lab.netns("dp");
    let peer = lab.netns("peer");
    for (v, p) in [("va", "pa"), ("vb", "pb"), ("vc", "pc")] {
        lab.veth(&dp, v, &peer, p, Some(1));
    }
    let (dp2, peer2) = (dp.clone(), peer.clone());
    in_ns(&dp, move || {
        let mut io = WorkerIo::new(&UmemConfig {
            frame_count: 1024,
            hugepages: HugepagePolicy::Never,
        })
        .unwrap();
        let mut prog = XdpProgram::load().unwrap();
        let maps = prog.maps();
        let add = |io: &mut WorkerIo, prog: &mut XdpProgram, dev: &str, slot: u32| {
            let ifindex = ifindex_of(dev).unwrap();
            let mut cfg = SocketConfig::new(ifindex, 0);
            cfg.fill_target = 128;
            let s = io.add_socket(&cfg).unwrap();
            maps.set_slot(ifindex, 0, slot, io.socket_fd(s)).unwrap();
            maps.set_port_policy(ifindex, PORT_REDIRECT_ALL).unwrap();
            prog.attach(ifindex, XdpMode::Auto).unwrap();
            (ifindex, s, mac_of(dev).unwrap())
        };
        let (ia, sa, mac_a) = add(&mut io, &mut prog, "va", 0);
        let (_ib, sb, mac_b) = add(&mut io, &mut prog, "vb", 1);
        assert_eq!(io.anchor(), Some(AnchorKind::PrivateLoopback));
        send_from(&peer2, "pa", mac_a, 5);
        assert_eq!(receive(&mut io, sa, 5), 5);

        // The kernel unbinds va's socket when va is deleted.
        run(&["ip", "-n", &dp2, "link", "del", "va"]);
        assert!(ifindex_of("va").is_err());
        // Kernel fact behind the anchor: sharing through an unbound socket fails with
        // EBADF, so the first real socket could not have served as the anchor ...
        let vc = ifindex_of("vc").unwrap();
        let e = raw_shared_bind(vc, io.socket_fd(sa).as_raw_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        // ... while vb's socket (still bound) could.
        maps.clear_slot(ia, 0, 0).unwrap();
        maps.clear_port_policy(ia).unwrap();
        assert!(
            prog.detach(ia),
            "detaching from a deleted device still works"
        );

        // The packet path copes with the dead socket.
        let mut out = [Desc::default(); 8];
        assert_eq!(io.rx_burst(sa, &mut out), 0);
        io.service();

        // A new socket on vc shares the UMEM through the anchor.
        let (_ic, sc, mac_c) = add(&mut io, &mut prog, "vc", 2);
        send_from(&peer2, "pc", mac_c, 7);
        assert_eq!(receive(&mut io, sc, 7), 7);
        send_from(&peer2, "pb", mac_b, 3);
        assert_eq!(receive(&mut io, sb, 3), 3);

        // Removing the dead socket gives its fill frames back.
        let before = io.frame_stats();
        assert_eq!(io.socket_frames(sa), Some((128, 0)));
        io.remove_socket(sa);
        let after = io.frame_stats();
        assert_eq!(after.in_fill, before.in_fill - 128);
        assert_eq!(after.free, before.free + 128);
        assert_eq!(after.free + after.in_fill, after.total);
        io.audit().unwrap();

        // Even with every real socket gone, the anchor keeps the UMEM shareable.
        io.remove_socket(sb);
        io.remove_socket(sc);
        let st = io.frame_stats();
        assert_eq!((st.free, st.in_fill), (st.total, 0));
        let (_ib2, sb2, _) = {
            let ifindex = ifindex_of("vb").unwrap();
            let mut cfg = SocketConfig::new(ifindex, 0);
            cfg.fill_target = 128;
            let s = io.add_socket(&cfg).unwrap();
            maps.set_slot(ifindex, 0, 1, io.socket_fd(s)).unwrap();
            (ifindex, s, ())
        };
        send_from(&peer2, "pb", mac_b, 4);
        assert_eq!(receive(&mut io, sb2, 4), 4);
        assert_eq!(io.anchor(), Some(AnchorKind::PrivateLoopback));
        io.audit().unwrap();
    });
}

#[test]
fn many_workers_each_get_an_anchor() {
    // One anchor per worker: each on lo:0 of its own private namespace, so two workers
    // in the same namespace do not collide on lo's only queue.
    let mut lab = Lab::new();
    let dp = lab.netns("dp");
    let peer = lab.netns("peer");
    lab.veth(&dp, "v0", &peer, "p0", Some(1));
    lab.veth(&dp, "v1", &peer, "p1", Some(1));
    lab.veth(&dp, "v2", &peer, "p2", Some(1));
    in_ns(&dp, || {
        let mut workers = Vec::new();
        for dev in ["v0", "v1"] {
            let mut io = WorkerIo::new(&UmemConfig {
                frame_count: 512,
                hugepages: HugepagePolicy::Never,
            })
            .unwrap();
            let mut cfg = SocketConfig::new(ifindex_of(dev).unwrap(), 0);
            cfg.bind_mode = BindMode::Copy;
            cfg.fill_target = 64;
            io.add_socket(&cfg).unwrap();
            assert_eq!(io.anchor(), Some(AnchorKind::PrivateLoopback));
            assert_eq!(io.mode(), Some(XskMode::Copy));
            workers.push(io);
        }
        // Zero-copy cannot be forced on veth.
        let mut io = WorkerIo::new(&UmemConfig {
            frame_count: 512,
            hugepages: HugepagePolicy::Never,
        })
        .unwrap();
        let mut cfg = SocketConfig::new(ifindex_of("v2").unwrap(), 0);
        cfg.bind_mode = BindMode::ZeroCopy;
        assert!(matches!(
            io.add_socket(&cfg),
            Err(XskError::ZeroCopyUnsupported { .. })
        ));
        assert_eq!(io.mode(), None);
        // Moving a worker to another thread works (WorkerIo is Send).
        let w = workers.pop().unwrap();
        std::thread::spawn(move || drop(w)).join().unwrap();
    });
}
