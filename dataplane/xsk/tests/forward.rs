//! Forwarding between two veth ports by moving descriptors between the sockets of one
//! shared UMEM, and the frame accounting after a million frames. Needs root.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use xdplane_pipeline::{Desc, FrameMem};
use xdplane_xsk::*;

const MAGIC: u32 = 0x4657_4431;

/// Two single-queue ports v0 (in) and v1 (out) in `dp`, peers p0 and p1 in `peer`.
fn two_ports(lab: &mut Lab) -> (String, String) {
    let dp = lab.netns("dp");
    let peer = lab.netns("peer");
    lab.veth(&dp, "v0", &peer, "p0", Some(1));
    lab.veth(&dp, "v1", &peer, "p1", Some(1));
    (dp, peer)
}

struct Port {
    ifindex: u32,
    sock: SockId,
    mac: [u8; 6],
}

/// Binds a socket on queue 0 of `dev` into slot `slot`, redirect-all, XDP attached.
fn port(io: &mut WorkerIo, prog: &mut XdpProgram, dev: &str, slot: u32, fill: u32) -> Port {
    let ifindex = ifindex_of(dev).unwrap();
    let mut cfg = SocketConfig::new(ifindex, 0);
    cfg.fill_target = fill;
    let sock = io.add_socket(&cfg).unwrap();
    let maps = prog.maps();
    maps.set_slot(ifindex, 0, slot, io.socket_fd(sock)).unwrap();
    maps.set_port_policy(ifindex, PORT_REDIRECT_ALL).unwrap();
    prog.attach(ifindex, XdpMode::Auto).unwrap();
    Port {
        ifindex,
        sock,
        mac: mac_of(dev).unwrap(),
    }
}

/// One forwarding step: rx on `from`, rewrite the Ethernet addresses, tx on `to` (the
/// same descriptors: no copy), drop what the tx ring refused; frames arriving on `to`
/// are dropped. Returns (frames queued for tx, their rx addresses in `seen`).
fn step(
    io: &mut WorkerIo,
    from: SockId,
    to: SockId,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    seen: Option<&mut Vec<u64>>,
) -> usize {
    let mut descs = [Desc::default(); 64];
    let n = io.rx_burst(from, &mut descs);
    for d in &descs[..n] {
        let eth = io.frame_mut(d.addr, 12);
        eth[..6].copy_from_slice(&dst_mac);
        eth[6..12].copy_from_slice(&src_mac);
    }
    if let Some(seen) = seen {
        seen.extend(descs[..n].iter().map(|d| d.addr));
    }
    let sent = io.tx_burst(to, &descs[..n]);
    io.release(&descs[sent..n]);
    let m = io.rx_burst(to, &mut descs);
    io.release(&descs[..m]);
    sent
}

/// Services until every transmitted frame has completed.
fn settle(io: &mut WorkerIo) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        io.service();
        if io.frame_stats().in_tx == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "tx never completed: {:?}",
            io.frame_stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn frames_received_on_one_port_leave_on_the_other_unchanged_but_for_macs() {
    let mut lab = Lab::new();
    let (dp, peer) = two_ports(&mut lab);
    let peer2 = peer.clone();
    in_ns(&dp, move || {
        let mut io = WorkerIo::new(&UmemConfig {
            frame_count: 2048,
            hugepages: HugepagePolicy::Auto,
        })
        .unwrap();
        let mut prog = XdpProgram::load().unwrap();
        let a = port(&mut io, &mut prog, "v0", 0, 512);
        let b = port(&mut io, &mut prog, "v1", 1, 512);
        let start = io.frame_stats();

        let p1_mac = in_ns(&peer2, || mac_of("p1").unwrap());
        const N: u32 = 300;
        let frames: Vec<Vec<u8>> = (0..N)
            .map(|i| {
                udp_frame(
                    a.mac,
                    [2, 0, 0, 0, 0, 1],
                    [10, 1, 0, 2],
                    [10, 2, 0, 2],
                    MAGIC,
                    i,
                    60 + (i as usize * 13) % 1400,
                )
            })
            .collect();

        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = spawn_in(&peer2, move || {
            let raw = RawSock::open("p1");
            ready_tx.send(()).unwrap();
            let mut got = Vec::new();
            let end = Instant::now() + Duration::from_secs(20);
            while got.len() < N as usize && Instant::now() < end {
                if let Some(f) = raw.recv()
                    && matches!(frame_tag(&f), Some((MAGIC, _)))
                {
                    got.push(f);
                }
            }
            got
        });
        ready_rx.recv().unwrap();
        let to_send = frames.clone();
        let sender = spawn_in(&peer2, move || {
            let raw = RawSock::open("p0");
            for f in &to_send {
                while !raw.send(f) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Gentle pace: this test checks bytes, not speed.
                std::thread::sleep(Duration::from_micros(200));
            }
        });

        let mut forwarded = 0usize;
        let mut rx_addrs = Vec::new();
        let end = Instant::now() + Duration::from_secs(20);
        while forwarded < N as usize && Instant::now() < end {
            let n = step(&mut io, a.sock, b.sock, p1_mac, b.mac, Some(&mut rx_addrs));
            forwarded += n;
            io.service();
            if n == 0 {
                io.wait(Duration::from_millis(2), None).unwrap();
            }
        }
        sender.join().unwrap();
        settle(&mut io);
        assert_eq!(forwarded, N as usize);
        // Descriptors came from socket A's fill ring and went out on B's tx ring: all
        // within the one UMEM, each rx address once in flight at a time.
        assert!(rx_addrs.iter().all(|&a| (a as usize) < 2048 * FRAME_SIZE));

        let got = receiver.join().unwrap();
        assert_eq!(got.len(), N as usize, "the peer of v1 received every frame");
        for f in &got {
            let (_, seq) = frame_tag(f).unwrap();
            let mut want = frames[seq as usize].clone();
            want[..6].copy_from_slice(&p1_mac);
            want[6..12].copy_from_slice(&b.mac);
            assert_eq!(f, &want, "frame {seq}");
        }

        let st = io.frame_stats();
        assert_eq!(st, start, "every frame back on a fill ring or free");
        assert_eq!(st.free + st.in_fill, st.total);
        io.audit().unwrap();
        let _ = (a.ifindex, b.ifindex);
    });
}

#[test]
fn a_million_frames_leave_the_frame_pool_where_it_started() {
    const TOTAL: u64 = 1_000_000;
    const WINDOW: u64 = 2048;
    let mut lab = Lab::new();
    let (dp, peer) = two_ports(&mut lab);
    let peer2 = peer.clone();
    let p1_rx_before = counter(&peer, "p1", "rx_packets");

    let forwarded = in_ns(&dp, move || {
        let mut io = WorkerIo::new(&UmemConfig {
            frame_count: 8192,
            hugepages: HugepagePolicy::Auto,
        })
        .unwrap();
        let mut prog = XdpProgram::load().unwrap();
        let a = port(&mut io, &mut prog, "v0", 0, 2048);
        let b = port(&mut io, &mut prog, "v1", 1, 256);
        let start = io.frame_stats();
        assert_eq!(start.free + start.in_fill, start.total);
        let p1_mac = in_ns(&peer2, || mac_of("p1").unwrap());

        // The sender keeps at most WINDOW frames ahead of the forwarder (and pushes on
        // after a short stall, so a lost frame cannot stop it).
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (done2, stop2) = (done.clone(), stop.clone());
        let a_mac = a.mac;
        let sender = spawn_in(&peer2, move || {
            let raw = RawSock::open("p0");
            let batch: Vec<Vec<u8>> = (0..32)
                .map(|i| {
                    udp_frame(
                        a_mac,
                        [2, 0, 0, 0, 0, 1],
                        [10, 1, 0, 2],
                        [10, 2, 0, 2],
                        MAGIC,
                        i,
                        60,
                    )
                })
                .collect();
            let mut sent = 0u64;
            let mut stalled_since: Option<Instant> = None;
            while !stop2.load(Ordering::Relaxed) {
                if sent > done2.load(Ordering::Relaxed) + WINDOW {
                    let t = *stalled_since.get_or_insert_with(Instant::now);
                    if t.elapsed() < Duration::from_millis(2) {
                        std::thread::yield_now();
                        continue;
                    }
                }
                stalled_since = None;
                sent += raw.send_many(&batch) as u64;
            }
            sent
        });

        let began = Instant::now();
        let mut forwarded = 0u64;
        let deadline = began + Duration::from_secs(240);
        while forwarded < TOTAL {
            assert!(
                Instant::now() < deadline,
                "only {forwarded} frames forwarded"
            );
            let n = step(&mut io, a.sock, b.sock, p1_mac, b.mac, None) as u64;
            forwarded += n;
            done.store(forwarded, Ordering::Relaxed);
            io.service();
            if n == 0 {
                io.wait(Duration::from_millis(1), None).unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
        let sent = sender.join().unwrap();
        let secs = began.elapsed().as_secs_f64();
        // Whatever is still arriving is forwarded too, then everything completes.
        let quiet = Instant::now() + Duration::from_millis(300);
        while Instant::now() < quiet {
            forwarded += step(&mut io, a.sock, b.sock, p1_mac, b.mac, None) as u64;
            io.service();
        }
        settle(&mut io);
        let xa = io.xdp_stats(a.sock).unwrap();
        let xb = io.xdp_stats(b.sock).unwrap();
        eprintln!(
            "forwarded {forwarded} of {sent} sent in {secs:.1} s ({:.0} kpps); A {xa:?}; B {xb:?}",
            forwarded as f64 / secs / 1e3
        );
        assert_eq!(xb.tx_invalid_descs, 0);
        assert_eq!(xa.rx_invalid_descs, 0);

        let st = io.frame_stats();
        assert_eq!((st.held, st.in_tx, st.bad_descs), (0, 0, 0));
        assert_eq!(st, start, "frame pool back where it started");
        io.audit().unwrap();
        forwarded
    });
    assert!(forwarded >= TOTAL);
    // Every frame put on v1's tx ring and completed reached p1 (veth counts the ones it
    // could not deliver as drops of the sender).
    let p1_rx = counter(&peer, "p1", "rx_packets") - p1_rx_before;
    let v1_drops = counter(&dp, "v1", "tx_dropped");
    assert_eq!(
        p1_rx + v1_drops,
        forwarded,
        "p1 rx {p1_rx}, v1 tx_dropped {v1_drops}"
    );
}
