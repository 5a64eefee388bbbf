//! The XDP program: attach modes, nothing left attached after drop, and the
//! REDIRECT_OWNED policy of uplinks. Needs root.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use xdplane_pipeline::Desc;
use xdplane_xsk::*;

const MAGIC: u32 = 0x5844_5031;

#[test]
fn attachments_are_links_that_go_away_with_the_program() {
    let mut lab = Lab::new();
    let dp = lab.netns("dp");
    let peer = lab.netns("peer");
    lab.veth(&dp, "v0", &peer, "p0", Some(1));
    lab.veth(&dp, "v1", &peer, "p1", Some(1));
    lab.veth(&dp, "v2", &peer, "p2", Some(1));
    // Native XDP on a veth refuses a large MTU of its *peer* (ERANGE: a frame must fit
    // one page); generic mode takes it.
    run(&["ip", "-n", &peer, "link", "set", "p2", "mtu", "9000"]);
    let dp2 = dp.clone();
    in_ns(&dp, move || {
        let [v0, v1, v2, lo] = ["v0", "v1", "v2", "lo"].map(|d| ifindex_of(d).unwrap());
        let mut prog = XdpProgram::load().unwrap();
        assert_eq!(
            prog.attach(v0, XdpMode::Native).unwrap(),
            AttachedMode::Native
        );
        assert_eq!(
            prog.attach(v1, XdpMode::Generic).unwrap(),
            AttachedMode::Generic
        );
        assert_eq!(
            prog.attach(v2, XdpMode::Auto).unwrap(),
            AttachedMode::Generic
        );
        assert!(matches!(
            prog.attach(v0, XdpMode::Auto),
            Err(BpfError::AlreadyAttached(_))
        ));
        assert!(matches!(
            prog.attach(lo, XdpMode::Native),
            Err(BpfError::Attach { .. })
        ));
        assert_eq!(
            prog.attach(lo, XdpMode::Auto).unwrap(),
            AttachedMode::Generic
        );
        assert_eq!(prog.attached(v0), Some(AttachedMode::Native));
        for dev in ["v0", "v1", "v2", "lo"] {
            assert!(xdp_attached(&dp2, dev), "{dev} has the program");
        }
        assert_eq!(xdp_mode(&dp2, "v0").as_deref(), Some("xdp"));
        assert_eq!(xdp_mode(&dp2, "v1").as_deref(), Some("xdpgeneric"));
        assert_eq!(xdp_mode(&dp2, "v2").as_deref(), Some("xdpgeneric"));

        // An attachment is a bpf_link: netlink (`ip link set xdp off`) cannot remove it.
        let off = Command::new("ip")
            .args(["-n", &dp2, "link", "set", "dev", "v0", "xdp", "off"])
            .output()
            .unwrap();
        assert!(
            !off.status.success(),
            "netlink detach of a bpf_link attachment"
        );
        assert!(xdp_attached(&dp2, "v0"));

        assert!(prog.detach(v0));
        assert!(!prog.detach(v0));
        assert!(!xdp_attached(&dp2, "v0"));
        assert!(xdp_attached(&dp2, "v1"));
        // Re-attaching after detach works.
        assert_eq!(
            prog.attach(v0, XdpMode::Auto).unwrap(),
            AttachedMode::Native
        );

        let maps = prog.maps();
        drop(prog);
        for dev in ["v0", "v1", "v2", "lo"] {
            assert!(
                !xdp_attached(&dp2, dev),
                "{dev} still has a program after drop"
            );
        }
        // Map handles outlive the program object.
        maps.set_port_policy(v0, PORT_REDIRECT_ALL).unwrap();
        assert_eq!(maps.port_policy(v0).unwrap(), Some(PORT_REDIRECT_ALL));
        assert!(maps.clear_port_policy(v0).unwrap());
        assert!(!maps.clear_port_policy(v0).unwrap());
    });
    // bpftool agrees: no XDP attachment left in the namespace.
    let out = run(&["ip", "netns", "exec", &dp, "bpftool", "net", "show"]);
    assert!(!out.contains("xdplane_redirect"), "{out}");
}

#[test]
fn map_arguments_are_checked() {
    init_tracing();
    let prog = XdpProgram::load().unwrap();
    let maps = prog.maps();
    assert!(matches!(
        maps.set_port_policy(5, 0),
        Err(BpfError::Invalid(_))
    ));
    assert!(matches!(
        maps.set_port_policy(5, 8),
        Err(BpfError::Invalid(_))
    ));
    assert!(matches!(
        maps.add_owned_prefix(Ipv4Addr::new(10, 0, 0, 0), 33),
        Err(BpfError::Invalid(_))
    ));
    let devnull = std::fs::File::open("/dev/null").unwrap();
    use std::os::fd::AsFd;
    assert!(matches!(
        maps.set_slot(5, 0, XSK_SLOTS, devnull.as_fd()),
        Err(BpfError::Invalid(_))
    ));
    // The kernel refuses a descriptor that is not an AF_XDP socket in the XSKMAP.
    assert!(matches!(
        maps.set_slot(5, 0, 3, devnull.as_fd()),
        Err(BpfError::Map { map: "xsks", .. })
    ));
    assert_eq!(maps.slot(5, 0).unwrap(), None, "slot hash untouched");
    maps.clear_slot(5, 0, 3).unwrap();

    maps.add_owned_prefix(Ipv4Addr::new(10, 99, 7, 7), 16)
        .unwrap();
    assert!(maps.is_owned(Ipv4Addr::new(10, 99, 200, 1)).unwrap());
    assert!(!maps.is_owned(Ipv4Addr::new(10, 98, 0, 1)).unwrap());
    assert!(
        maps.remove_owned_prefix(Ipv4Addr::new(10, 99, 0, 0), 16)
            .unwrap()
    );
    assert!(!maps.is_owned(Ipv4Addr::new(10, 99, 200, 1)).unwrap());
    // Handles are Send + Sync + Clone.
    let m2 = maps.clone();
    std::thread::spawn(move || m2.set_port_policy(9, PORT_REDIRECT_OWNED).unwrap())
        .join()
        .unwrap();
    assert_eq!(maps.port_policy(9).unwrap(), Some(PORT_REDIRECT_OWNED));
}

#[test]
fn redirect_owned_passes_everything_else_to_the_kernel() {
    let mut lab = Lab::new();
    let dp = lab.netns("dp");
    let peer = lab.netns("peer");
    lab.veth(&dp, "up0", &peer, "ext0", Some(1));
    lab.addr(&dp, "up0", "10.77.0.1/24");
    lab.addr(&peer, "ext0", "10.77.0.2/24");
    let peer2 = peer.clone();
    in_ns(&dp, move || {
        let ifindex = ifindex_of("up0").unwrap();
        let up_mac = mac_of("up0").unwrap();
        let mut io = WorkerIo::new(&UmemConfig {
            frame_count: 1024,
            hugepages: HugepagePolicy::Never,
        })
        .unwrap();
        let mut cfg = SocketConfig::new(ifindex, 0);
        cfg.fill_target = 256;
        let s = io.add_socket(&cfg).unwrap();
        let mut prog = XdpProgram::load().unwrap();
        let maps = prog.maps();
        maps.set_slot(ifindex, 0, 0, io.socket_fd(s)).unwrap();
        maps.set_port_policy(ifindex, PORT_REDIRECT_OWNED).unwrap();
        maps.add_owned_prefix(Ipv4Addr::new(10, 99, 0, 0), 24)
            .unwrap();
        prog.attach(ifindex, XdpMode::Auto).unwrap();

        let mut descs = [Desc::default(); 64];
        let mut drain = |io: &mut WorkerIo| -> Vec<[u8; 4]> {
            let mut dsts = Vec::new();
            io.service();
            let n = io.rx_burst(s, &mut descs);
            for d in &descs[..n] {
                let f = io.frame(*d).unwrap();
                if f.len() >= 34 && f[12..14] == [8, 0] {
                    dsts.push(f[30..34].try_into().unwrap());
                } else {
                    dsts.push([0, 0, 0, 0]);
                }
            }
            io.release(&descs[..n]);
            dsts
        };

        // The node's own traffic (ARP, ICMP to its address) still reaches the kernel.
        let ping = Command::new("ip")
            .args([
                "netns",
                "exec",
                &peer2,
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
                "10.77.0.1",
            ])
            .output()
            .unwrap();
        assert!(
            ping.status.success(),
            "ping answered by the kernel while XDP is attached: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
        assert!(
            drain(&mut io).is_empty(),
            "nothing of the ping reached the socket"
        );

        // Owned destinations are redirected; others pass.
        let send = |dst: [u8; 4], n: u32| {
            let peer = peer2.clone();
            in_ns(&peer, move || {
                let raw = RawSock::open("ext0");
                for i in 0..n {
                    let f = udp_frame(
                        up_mac,
                        [2, 0, 0, 0, 0, 5],
                        [10, 77, 0, 2],
                        dst,
                        MAGIC,
                        i,
                        100,
                    );
                    while !raw.send(&f) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        };
        send([10, 99, 0, 5], 20);
        send([10, 98, 0, 5], 20);
        send([10, 99, 0, 200], 5);
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        while got.len() < 25 && Instant::now() < end {
            got.extend(drain(&mut io));
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(100));
        got.extend(drain(&mut io));
        assert_eq!(got.len(), 25, "{got:?}");
        assert!(got.iter().all(|d| d[..3] == [10, 99, 0]), "{got:?}");

        // Without the prefix, the same traffic passes too.
        assert!(
            maps.remove_owned_prefix(Ipv4Addr::new(10, 99, 0, 0), 24)
                .unwrap()
        );
        send([10, 99, 0, 5], 10);
        std::thread::sleep(Duration::from_millis(200));
        assert!(drain(&mut io).is_empty());

        // An owned service on the node's own address (as VXLAN's UDP port): UDP to
        // 10.77.0.1:4001 is redirected while the kernel keeps the address's other traffic.
        let node_ip = Ipv4Addr::new(10, 77, 0, 1);
        maps.add_owned_service(node_ip, 17, 4001).unwrap();
        assert!(maps.is_owned_service(node_ip, 17, 4001).unwrap());
        assert!(!maps.is_owned_service(node_ip, 6, 4001).unwrap());
        assert!(
            maps.add_owned_service(node_ip, 1, 4001).is_err(),
            "ICMP is no service"
        );
        send([10, 77, 0, 1], 7);
        let end = Instant::now() + Duration::from_secs(5);
        let mut svc = Vec::new();
        while svc.len() < 7 && Instant::now() < end {
            svc.extend(drain(&mut io));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(svc.len(), 7, "{svc:?}");
        assert!(svc.iter().all(|d| *d == [10, 77, 0, 1]), "{svc:?}");
        assert!(maps.remove_owned_service(node_ip, 17, 4001).unwrap());
        send([10, 77, 0, 1], 5);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            drain(&mut io).is_empty(),
            "service given back to the kernel"
        );

        // REDIRECT_ALL takes everything, the peer's ARP/ICMP included.
        maps.set_port_policy(ifindex, PORT_REDIRECT_ALL).unwrap();
        send([10, 98, 0, 5], 10);
        let end = Instant::now() + Duration::from_secs(5);
        let mut n = 0;
        while n < 10 && Instant::now() < end {
            n += drain(&mut io).len();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(n >= 10);
        // Clearing the slot hands the queue back to the kernel.
        maps.clear_slot(ifindex, 0, 0).unwrap();
        assert_eq!(maps.slot(ifindex, 0).unwrap(), None);
        let ping = Command::new("ip")
            .args([
                "netns",
                "exec",
                &peer2,
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                "10.77.0.1",
            ])
            .output()
            .unwrap();
        assert!(ping.status.success());
        assert!(drain(&mut io).is_empty());
        let st = io.frame_stats();
        assert_eq!(st.free + st.in_fill, st.total);
        io.audit().unwrap();
    });
}

/// Child half of `attachments_vanish_when_the_process_exits`: attaches and exits the
/// process without dropping anything. Runs only when started by that test.
#[test]
#[ignore = "started by attachments_vanish_when_the_process_exits"]
fn child_attach_then_exit() {
    let Ok(ns) = std::env::var("XDPLANE_XSK_CHILD_NS") else {
        panic!("run by attachments_vanish_when_the_process_exits only");
    };
    enter(&ns);
    let mut prog = XdpProgram::load().unwrap();
    prog.attach(ifindex_of("v0").unwrap(), XdpMode::Native)
        .unwrap();
    prog.attach(ifindex_of("v1").unwrap(), XdpMode::Generic)
        .unwrap();
    println!("ATTACHED");
    std::process::exit(0);
}

#[test]
fn attachments_vanish_when_the_process_exits() {
    let mut lab = Lab::new();
    let dp = lab.netns("dp");
    let peer = lab.netns("peer");
    lab.veth(&dp, "v0", &peer, "p0", Some(1));
    lab.veth(&dp, "v1", &peer, "p1", Some(1));
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_attach_then_exit",
            "--ignored",
            "--nocapture",
        ])
        .env("XDPLANE_XSK_CHILD_NS", &dp)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ATTACHED"),
        "child: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!xdp_attached(&dp, "v0"));
    assert!(!xdp_attached(&dp, "v1"));
}
