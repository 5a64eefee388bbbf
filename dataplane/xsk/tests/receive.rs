//! Receiving over AF_XDP on a veth: frames sent from the peer namespace arrive on the
//! socket of the queue they came in on, byte for byte. Needs root.

mod common;

use std::time::{Duration, Instant};

use common::*;
use xdplane_pipeline::{Desc, FrameMem};
use xdplane_xsk::*;

const MAGIC: u32 = 0x5853_4b31;

#[test]
fn frames_from_the_peer_arrive_on_the_socket_of_their_queue() {
    let mut lab = Lab::new();
    let dp = lab.netns("dp");
    let peer = lab.netns("peer");
    // veth allocates one queue per CPU but only one is active by default.
    lab.veth(&dp, "v0", &peer, "p0", None);
    assert_eq!(in_ns(&dp, || rx_queue_count("v0").unwrap()), 1);
    let cpus = std::thread::available_parallelism().unwrap().get().max(2) as u32;
    lab.channels(&dp, "v0", cpus);
    lab.channels(&peer, "p0", cpus);
    let peer2 = peer.clone();

    in_ns(&dp, move || {
        let ifindex = ifindex_of("v0").unwrap();
        let queues = rx_queue_count("v0").unwrap();
        assert_eq!(queues, cpus, "active queues after ethtool -L");
        let v0_mac = mac_of("v0").unwrap();

        let mut io = WorkerIo::new(&UmemConfig {
            frame_count: 2048,
            hugepages: HugepagePolicy::Never,
        })
        .unwrap();
        assert_eq!(io.backing(), UmemBacking::Pages4K);
        let mut prog = XdpProgram::load().unwrap();
        let maps = prog.maps();
        let mut socks = Vec::new();
        for q in 0..queues {
            let mut cfg = SocketConfig::new(ifindex, q);
            cfg.fill_target = 256;
            let s = io.add_socket(&cfg).unwrap();
            maps.set_slot(ifindex, q, q, io.socket_fd(s)).unwrap();
            assert_eq!(maps.slot(ifindex, q).unwrap(), Some(q));
            socks.push(s);
        }
        // veth cannot do zero-copy: Auto fell back to copy mode, anchored on a private lo.
        assert_eq!(io.mode(), Some(XskMode::Copy));
        assert_eq!(io.anchor(), Some(AnchorKind::PrivateLoopback));
        assert!(matches!(
            io.add_socket(&SocketConfig::new(ifindex, 0)),
            Err(XskError::Duplicate { .. })
        ));
        maps.set_port_policy(ifindex, PORT_REDIRECT_ALL).unwrap();
        assert_eq!(
            prog.attach(ifindex, XdpMode::Auto).unwrap(),
            AttachedMode::Native
        );

        let start = io.frame_stats();
        assert_eq!(start.in_fill, 256 * queues);
        assert_eq!(start.free + start.in_fill, start.total);

        // Frames of several sizes, from the peer namespace.
        let sizes = [60usize, 64, 128, 512, 1000, 1514];
        let frames: Vec<Vec<u8>> = (0..30u32)
            .map(|i| {
                udp_frame(
                    v0_mac,
                    [2, 0, 0, 0, 0, 9],
                    [10, 9, 0, 2],
                    [10, 9, 0, 1],
                    MAGIC,
                    i,
                    sizes[i as usize % sizes.len()],
                )
            })
            .collect();
        let to_send = frames.clone();
        let sender = spawn_in(&peer2, move || {
            let raw = RawSock::open("p0");
            for f in &to_send {
                while !raw.send(f) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });

        let mut got = vec![None; frames.len()];
        let mut per_queue = vec![0u32; queues as usize];
        let mut descs = [Desc::default(); 64];
        let end = Instant::now() + Duration::from_secs(10);
        while got.iter().any(Option::is_none) && Instant::now() < end {
            let mut any = false;
            for (q, &s) in socks.iter().enumerate() {
                let n = io.rx_burst(s, &mut descs);
                any |= n > 0;
                for d in &descs[..n] {
                    let bytes = io.frame(*d).unwrap().to_vec();
                    // frame_mut sees the same bytes, headroom is in front of the data.
                    assert_eq!(io.frame_mut(d.addr, d.len as usize), &bytes[..]);
                    assert!(io.headroom(d.addr) >= 256, "copy mode leaves XDP headroom");
                    assert_eq!(io.headroom(d.addr) + io.room(d.addr), FRAME_SIZE);
                    if let Some((MAGIC, seq)) = frame_tag(&bytes) {
                        assert!(got[seq as usize].is_none(), "frame {seq} twice");
                        got[seq as usize] = Some(bytes);
                        per_queue[q] += 1;
                    }
                }
                assert_eq!(io.frame_stats().held, n as u32);
                io.release(&descs[..n]);
            }
            io.service();
            if !any {
                io.wait(Duration::from_millis(5), None).unwrap();
            }
        }
        sender.join().unwrap();
        for (i, g) in got.iter().enumerate() {
            let g = g
                .as_ref()
                .unwrap_or_else(|| panic!("frame {i} not received"));
            assert_eq!(g, &frames[i], "frame {i} bytes");
        }
        eprintln!("received per queue: {per_queue:?}");
        assert!(
            per_queue.iter().all(|&n| n > 0),
            "30 flows spread over every queue: {per_queue:?}"
        );

        let st = io.frame_stats();
        assert_eq!((st.held, st.in_tx, st.bad_descs), (0, 0, 0));
        assert_eq!(st, start, "frames are back where they started");
        io.audit().unwrap();
        for &s in &socks {
            let x = io.xdp_stats(s).unwrap();
            assert_eq!(x.rx_invalid_descs, 0);
            assert_eq!(x.rx_dropped, 0);
        }
        drop(prog);
    });
}

#[test]
fn stale_ids_and_bad_descriptors_are_counted_not_fatal() {
    let mut lab = Lab::new();
    let dp = lab.netns("dp");
    let peer = lab.netns("peer");
    lab.veth(&dp, "v0", &peer, "p0", Some(1));
    in_ns(&dp, move || {
        let ifindex = ifindex_of("v0").unwrap();
        let mut io = WorkerIo::new(&UmemConfig {
            frame_count: 512,
            hugepages: HugepagePolicy::Never,
        })
        .unwrap();
        let mut cfg = SocketConfig::new(ifindex, 0);
        cfg.fill_target = 64;
        cfg.rx_size = 128;
        cfg.tx_size = 128;
        cfg.fill_size = 128;
        cfg.comp_size = 128;
        let s = io.add_socket(&cfg).unwrap();
        assert_eq!(io.socket_queue(s), Some((ifindex, 0)));
        assert_eq!(io.socket_frames(s), Some((64, 0)));

        // Descriptors never handed out: refused and counted, nothing moves.
        let bogus = [
            Desc { addr: 0, len: 60 },
            Desc {
                addr: 1 << 40,
                len: 60,
            },
        ];
        assert_eq!(io.tx_burst(s, &bogus), 2, "both consumed (refused)");
        io.release(&bogus);
        let st = io.frame_stats();
        assert_eq!(st.bad_descs, 4);
        assert_eq!((st.in_tx, st.held), (0, 0));
        assert!(io.frame(bogus[0]).is_none());
        io.audit().unwrap();

        // Invalid configurations are refused before touching the kernel.
        let mut bad = SocketConfig::new(ifindex, 1);
        bad.rx_size = 1000;
        assert!(matches!(io.add_socket(&bad), Err(XskError::Config(_))));
        let mut bad = SocketConfig::new(ifindex, 1);
        bad.fill_target = 4096;
        assert!(matches!(io.add_socket(&bad), Err(XskError::Config(_))));
        // A queue the device does not have.
        assert!(matches!(
            io.add_socket(&SocketConfig::new(ifindex, 7)),
            Err(XskError::Bind { .. })
        ));

        io.remove_socket(s);
        io.remove_socket(s); // no-op
        let mut out = [Desc::default(); 4];
        assert_eq!(io.rx_burst(s, &mut out), 0);
        assert_eq!(io.tx_burst(s, &out), 0);
        assert!(io.xdp_stats(s).is_err());
        assert_eq!(io.socket_frames(s), None);
        let st = io.frame_stats();
        assert_eq!((st.free, st.in_fill), (512, 0));
        io.audit().unwrap();

        // The same queue can be bound again; the new id differs from the stale one.
        let s2 = io.add_socket(&cfg).unwrap();
        assert_ne!(s2, s);
        assert_eq!(s2.index(), s.index());
        assert_eq!(io.sockets().collect::<Vec<_>>(), vec![s2]);
    });
}

#[test]
fn hugepage_policy() {
    common::init_tracing();
    let never = WorkerIo::new(&UmemConfig {
        frame_count: 1024,
        hugepages: HugepagePolicy::Never,
    })
    .unwrap();
    assert_eq!(never.backing(), UmemBacking::Pages4K);
    assert_eq!(never.frame_stats().free, 1024);

    let free_huge: usize = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    // 1024 frames = 4 MiB = two 2 MiB pages.
    let require = WorkerIo::new(&UmemConfig {
        frame_count: 1024,
        hugepages: HugepagePolicy::Require,
    });
    let auto = WorkerIo::new(&UmemConfig {
        frame_count: 1024,
        hugepages: HugepagePolicy::Auto,
    })
    .unwrap();
    if free_huge >= 4 {
        assert_eq!(require.unwrap().backing(), UmemBacking::Hugepages2M);
        assert_eq!(auto.backing(), UmemBacking::Hugepages2M);
    } else if free_huge < 2 {
        assert!(matches!(require, Err(XskError::Hugepages { .. })));
        assert_eq!(auto.backing(), UmemBacking::Pages4K);
    }
    assert!(matches!(
        WorkerIo::new(&UmemConfig {
            frame_count: 0,
            hugepages: HugepagePolicy::Never
        }),
        Err(XskError::Config(_))
    ));
}

#[test]
fn wait_wakes_for_frames_and_for_the_extra_fd() {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    let mut lab = Lab::new();
    let dp = lab.netns("dp");
    let peer = lab.netns("peer");
    lab.veth(&dp, "v0", &peer, "p0", Some(1));
    let peer2 = peer.clone();
    in_ns(&dp, move || {
        let ifindex = ifindex_of("v0").unwrap();
        let mut io = WorkerIo::new(&UmemConfig {
            frame_count: 512,
            hugepages: HugepagePolicy::Never,
        })
        .unwrap();
        let mut cfg = SocketConfig::new(ifindex, 0);
        cfg.fill_target = 128;
        let s = io.add_socket(&cfg).unwrap();
        let mut prog = XdpProgram::load().unwrap();
        let maps = prog.maps();
        maps.set_slot(ifindex, 0, 0, io.socket_fd(s)).unwrap();
        maps.set_port_policy(ifindex, PORT_REDIRECT_ALL).unwrap();
        prog.attach(ifindex, XdpMode::Auto).unwrap();

        // SAFETY: eventfd returns a new descriptor that we own.
        let efd = unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, libc::EFD_CLOEXEC)) };
        let t = Instant::now();
        assert!(
            !io.wait(Duration::from_millis(30), Some(efd.as_fd()))
                .unwrap()
        );
        assert!(
            t.elapsed() >= Duration::from_millis(25),
            "slept until the timeout"
        );
        // Sub-millisecond timeouts still sleep (rounded up), never spin.
        assert!(!io.wait(Duration::from_micros(10), None).unwrap());

        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        let w = unsafe { libc::write(efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        assert_eq!(w, 8);
        let t = Instant::now();
        assert!(io.wait(Duration::from_secs(5), Some(efd.as_fd())).unwrap());
        assert!(t.elapsed() < Duration::from_secs(1));

        // A frame on the rx ring wakes it too (without the eventfd).
        let mac = mac_of("v0").unwrap();
        in_ns(&peer2, move || {
            let f = udp_frame(
                mac,
                [2, 0, 0, 0, 0, 3],
                [10, 5, 0, 2],
                [10, 5, 0, 1],
                MAGIC,
                0,
                64,
            );
            assert!(RawSock::open("p0").send(&f));
        });
        assert!(io.wait(Duration::from_secs(5), None).unwrap());
        let mut d = [Desc::default(); 4];
        assert!(io.rx_burst(s, &mut d) >= 1);
    });
}
