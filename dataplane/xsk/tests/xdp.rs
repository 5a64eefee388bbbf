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

/// An Ethernet + IPv4 frame (valid header checksum) carrying `l4` as protocol `proto`;
/// `id` (the IPv4 identification) tags the frame, `frag` is the fragment offset field.
fn ip_frame(
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    frag: u16,
    l4: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 5]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f.extend(ipv4_header(src, dst, proto, id, frag, l4.len()));
    f.extend_from_slice(l4);
    while f.len() < 60 {
        f.push(0);
    }
    f
}

fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, frag: u16, len: usize) -> [u8; 20] {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
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
    ip
}

/// 8 bytes of an L4 header with these ports (TCP/UDP/SCTP all start with them), padded.
fn ports(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = vec![0u8; 20];
    v[0..2].copy_from_slice(&sport.to_be_bytes());
    v[2..4].copy_from_slice(&dport.to_be_bytes());
    v
}

/// An ICMP message: type, code, 4 bytes rest-of-header (the echo identifier in the first
/// two), then `body`.
fn icmp(ty: u8, code: u8, ident: u16, body: &[u8]) -> Vec<u8> {
    let mut v = vec![ty, code, 0, 0];
    v.extend(ident.to_be_bytes());
    v.extend([0, 1]);
    v.extend_from_slice(body);
    v
}

/// An ICMP error quoting an IPv4 header (src → dst, `proto`) and the first 8 bytes of
/// `l4`.
fn icmp_error(ty: u8, code: u8, src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut quoted = ipv4_header(src, dst, proto, 7, 0, l4.len()).to_vec();
    quoted.extend_from_slice(&l4[..8]);
    let mut v = vec![ty, code, 0, 0, 0, 0, 0, 0];
    v.extend(quoted);
    v
}

#[test]
fn redirect_owned_takes_replies_to_source_nat_and_owned_services() {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const ICMP: u8 = 1;
    const SCTP: u8 = 132;
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
        prog.attach(ifindex, XdpMode::Auto).unwrap();

        let node = [10, 77, 0, 1];
        let other = [10, 77, 0, 9];
        let ext = [10, 77, 0, 2];
        let nat = NatConfig {
            node_ip: Ipv4Addr::from(node),
            ports: (61000, 61999),
        };
        assert_eq!(maps.nat_config().unwrap(), None, "disabled until set");
        maps.set_nat_config(Some(nat)).unwrap();
        assert_eq!(maps.nat_config().unwrap(), Some(nat));
        assert!(
            maps.set_nat_config(Some(NatConfig {
                ports: (62000, 61000),
                ..nat
            }))
            .is_err()
        );
        assert!(
            maps.set_nat_config(Some(NatConfig {
                node_ip: Ipv4Addr::UNSPECIFIED,
                ..nat
            }))
            .is_err()
        );
        assert_eq!(maps.nat_config().unwrap(), Some(nat), "refused: unchanged");
        // A NodePort for SCTP and one for TCP on the node IP.
        maps.add_owned_service(Ipv4Addr::from(node), SCTP, 30090)
            .unwrap();
        maps.add_owned_service(Ipv4Addr::from(node), TCP, 30080)
            .unwrap();
        assert!(
            maps.is_owned_service(Ipv4Addr::from(node), SCTP, 30090)
                .unwrap()
        );

        // (frame, whether the program must redirect it); the IPv4 id tags each frame.
        let mut cases: Vec<(Vec<u8>, bool, &str)> = Vec::new();
        let mut id = 100u16;
        let mut case = |proto: u8, dst: [u8; 4], frag: u16, l4: Vec<u8>, want: bool, what| {
            id += 1;
            cases.push((ip_frame(up_mac, ext, dst, proto, id, frag, &l4), want, what));
        };
        // (a) TCP/UDP/SCTP to the node IP on SNAT ports.
        case(TCP, node, 0, ports(443, 61000), true, "tcp to lo");
        case(UDP, node, 0, ports(53, 61999), true, "udp to hi");
        case(SCTP, node, 0, ports(9, 61500), true, "sctp in range");
        case(
            UDP,
            node,
            0x2000,
            ports(53, 61001),
            true,
            "first fragment (MF)",
        );
        case(UDP, node, 0, ports(53, 60999), false, "udp below range");
        case(TCP, node, 0, ports(443, 62000), false, "tcp above range");
        case(TCP, other, 0, ports(443, 61000), false, "other address");
        case(
            UDP,
            node,
            0x0010,
            ports(53, 61001),
            false,
            "non-first fragment",
        );
        // Owned services (NodePorts), SCTP included.
        case(SCTP, node, 0, ports(9, 30090), true, "sctp nodeport");
        case(TCP, node, 0, ports(5555, 30080), true, "tcp nodeport");
        case(
            UDP,
            node,
            0,
            ports(5555, 30080),
            false,
            "nodeport other proto",
        );
        // (b) echo replies with the identifier in range.
        case(
            ICMP,
            node,
            0,
            icmp(0, 0, 61234, &[0; 8]),
            true,
            "echo reply in range",
        );
        case(
            ICMP,
            node,
            0,
            icmp(0, 0, 1000, &[0; 8]),
            false,
            "echo reply id 1000",
        );
        case(
            ICMP,
            other,
            0,
            icmp(0, 0, 61234, &[0; 8]),
            false,
            "echo reply other addr",
        );
        case(
            ICMP,
            node,
            0,
            icmp(8, 0, 61234, &[0; 8]),
            false,
            "echo request: the kernel's",
        );
        // (c) errors quoting a packet from the node IP on an SNAT port / echo id.
        let q =
            |ty, code, src, proto, l4: &[u8]| icmp_error(ty, code, src, [8, 8, 8, 8], proto, l4);
        case(
            ICMP,
            node,
            0,
            q(3, 3, node, UDP, &ports(61100, 53)),
            true,
            "unreach udp",
        );
        case(
            ICMP,
            node,
            0,
            q(11, 0, node, TCP, &ports(61999, 443)),
            true,
            "ttl tcp",
        );
        case(
            ICMP,
            node,
            0,
            q(12, 0, node, SCTP, &ports(61000, 9)),
            true,
            "param sctp",
        );
        case(
            ICMP,
            node,
            0,
            q(3, 4, node, ICMP, &icmp(8, 0, 61001, &[])),
            true,
            "frag-needed echo",
        );
        case(
            ICMP,
            node,
            0,
            q(3, 3, node, TCP, &ports(30080, 5555)),
            true,
            "about a nodeport reply",
        );
        case(
            ICMP,
            node,
            0,
            q(3, 3, node, UDP, &ports(1000, 53)),
            false,
            "unreach port 1000",
        );
        case(
            ICMP,
            node,
            0,
            q(3, 3, node, ICMP, &icmp(0, 0, 61001, &[])),
            false,
            "quotes echo reply",
        );
        case(
            ICMP,
            node,
            0,
            q(3, 3, other, UDP, &ports(61100, 53)),
            false,
            "quotes other source",
        );
        case(
            ICMP,
            node,
            0,
            q(5, 0, node, UDP, &ports(61100, 53)),
            false,
            "redirect message",
        );
        case(
            ICMP,
            other,
            0,
            q(3, 3, node, UDP, &ports(61100, 53)),
            false,
            "to other address",
        );
        // Truncated: the quoted header is cut short.
        let mut short = q(3, 3, node, UDP, &ports(61100, 53));
        short.truncate(8 + 20 + 2);
        case(ICMP, node, 0, short, false, "truncated quote");

        let mut descs = [Desc::default(); 64];
        let mut drain = |io: &mut WorkerIo| -> Vec<u16> {
            let mut ids = Vec::new();
            io.service();
            let n = io.rx_burst(s, &mut descs);
            for d in &descs[..n] {
                let f = io.frame(*d).unwrap();
                ids.push(u16::from_be_bytes([f[18], f[19]]));
            }
            io.release(&descs[..n]);
            ids
        };
        let send = |frames: Vec<Vec<u8>>| {
            in_ns(&peer2, move || {
                let raw = RawSock::open("ext0");
                for f in &frames {
                    while !raw.send(f) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        };
        let run_cases = |io: &mut WorkerIo,
                         drain: &mut dyn FnMut(&mut WorkerIo) -> Vec<u16>,
                         cases: &[(Vec<u8>, bool, &str)],
                         expect_any: bool| {
            let want: Vec<u16> = cases
                .iter()
                .filter(|c| c.1 && expect_any)
                .map(|c| u16::from_be_bytes([c.0[18], c.0[19]]))
                .collect();
            send(cases.iter().map(|c| c.0.clone()).collect());
            let mut got = Vec::new();
            let end = Instant::now() + Duration::from_secs(5);
            while got.len() < want.len() && Instant::now() < end {
                got.extend(drain(io));
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(200));
            got.extend(drain(io));
            got.sort_unstable();
            let name = |id: &u16| {
                cases
                    .iter()
                    .find(|c| u16::from_be_bytes([c.0[18], c.0[19]]) == *id)
                    .map(|c| c.2)
                    .unwrap_or("?")
            };
            assert_eq!(
                got,
                want,
                "redirected {:?}, expected {:?}",
                got.iter().map(name).collect::<Vec<_>>(),
                want.iter().map(name).collect::<Vec<_>>()
            );
        };
        run_cases(&mut io, &mut drain, &cases, true);

        // NAT disabled: only the owned services are still taken.
        maps.set_nat_config(None).unwrap();
        assert_eq!(maps.nat_config().unwrap(), None);
        let nat_only: Vec<_> = cases
            .iter()
            .filter(|c| c.1 && !c.2.contains("nodeport"))
            .cloned()
            .collect();
        run_cases(&mut io, &mut drain, &nat_only, false);
        let st = io.frame_stats();
        assert_eq!(st.free + st.in_fill, st.total);
    });
}
