//! Cross-node forwarding through `Pipeline::process`: VXLAN decapsulation (frames captured
//! from Linux's vxlan driver and built ones), encapsulation byte by byte, direct and
//! default routes with neighbours, and ICMP errors (content, suppression, rate limit).

mod common;

use common::*;
use std::net::Ipv4Addr;
use xdplane_pipeline::pipeline::PipelineConfig;
use xdplane_pipeline::*;
use xdplane_wire::icmpv4::unreachable;
use xdplane_wire::*;

fn drop_of(v: Verdict) -> DropReason {
    match v {
        Verdict::Drop(r) => r,
        other => panic!("expected a drop, got {other:?}"),
    }
}

/// Checks every outer header of a frame we encapsulated for `vtep` (outer destination MAC
/// `next_hop_mac`, inner destination MAC `vtep_mac`); returns the outer IP identification,
/// the UDP source port and the inner frame.
fn outer_of(
    out: &[u8],
    vtep: Ipv4Addr,
    next_hop_mac: MacAddr,
    vtep_mac: MacAddr,
) -> (u16, u16, &[u8]) {
    let eth = EthernetFrame::new_checked(out).unwrap();
    assert_eq!(eth.src_addr(), UPLINK_MAC0);
    assert_eq!(eth.dst_addr(), next_hop_mac);
    assert_eq!(eth.ethertype(), EtherType::IPV4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.header_len(), 20);
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (NODE_IP, vtep));
    assert_eq!(ip.protocol(), IpProtocol::UDP);
    assert_eq!(ip.ttl(), 64);
    assert!(!ip.dont_frag() && !ip.more_frags() && ip.frag_offset() == 0);
    assert_eq!(ip.dscp(), 0);
    assert_eq!(usize::from(ip.total_len()), out.len() - 14);
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(udp.dst_port(), 8472);
    assert_eq!(udp.checksum(), 0);
    assert_eq!(usize::from(udp.len()), out.len() - 34);
    assert!((32768..=60999).contains(&udp.src_port()));
    assert_eq!(
        &out[42..50],
        &[0x08, 0, 0, 0, 0, 0, 0x01, 0],
        "flags 0x08, VNI 1"
    );
    let inner = &out[50..];
    let ieth = EthernetFrame::new_checked(inner).unwrap();
    assert_eq!(ieth.src_addr(), UPLINK_MAC0, "inner source = our VtepMAC");
    assert_eq!(ieth.dst_addr(), vtep_mac);
    (ip.ident(), udp.src_port(), inner)
}

/// Checks an ICMP error frame (Ethernet onwards) and returns (type, code, rest-of-header
/// word, quoted bytes).
fn icmp_error_of(frame: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> (u8, u8, u32, Vec<u8>) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.ethertype(), EtherType::IPV4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (src, dst));
    assert_eq!(ip.protocol(), IpProtocol::ICMP);
    assert_eq!(ip.ttl(), 64);
    assert_eq!(ip.dscp(), 48, "precedence 6, internetwork control");
    assert!(!ip.dont_frag() && !ip.is_fragment());
    assert_eq!(usize::from(ip.total_len()), frame.len() - 14);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let rest = u32::from_be_bytes(ip.payload()[4..8].try_into().unwrap());
    (
        icmp.msg_type().0,
        icmp.msg_code(),
        rest,
        icmp.data().to_vec(),
    )
}

/// The RFC 792 quote of a frame: its IP header and the first 8 bytes of its payload.
fn quote_of(frame: &[u8]) -> Vec<u8> {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let tl = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    frame[14..14 + ihl + (tl - ihl).min(8)].to_vec()
}

/// Addresses a frame as the router sends it to this node on the uplink.
fn from_router(mut f: Vec<u8>) -> Vec<u8> {
    f[0..6].copy_from_slice(&UPLINK_MAC0.0);
    f[6..12].copy_from_slice(&ROUTER_MAC.0);
    f
}

/// Re-addresses a built frame as an inner frame from server2's flannel.1.
fn as_inner(mut f: Vec<u8>) -> Vec<u8> {
    f[0..6].copy_from_slice(&UPLINK_MAC0.0);
    f[6..12].copy_from_slice(&SERVER2_VTEP_MAC.0);
    f
}

/// IPv4 header bytes that may differ after forwarding: TTL and checksum.
fn same_but_ttl(a: &[u8], b: &[u8]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if !matches!(i, 8 | 10 | 11) {
            assert_eq!(x, y, "IP byte {i}");
        }
    }
}

// ---- vxlan-decap -----------------------------------------------------------------------

#[test]
fn captured_linux_vxlan_frames_reach_local_pods() {
    let snap = overlay_snapshot();
    let out = run(
        &snap,
        &[
            (UPLINK, captured::VXLAN_UDP_TO_POD_A.to_vec()),
            (UPLINK, captured::VXLAN_UDP_TO_POD_B.to_vec()),
        ],
    );
    for ((v, f), (cap, port, port_mac, mac)) in out.iter().zip([
        (captured::VXLAN_UDP_TO_POD_A, PORT_A, PORT_A_MAC, MAC_A),
        (captured::VXLAN_UDP_TO_POD_B, PORT_B, PORT_B_MAC, MAC_B),
    ]) {
        assert_eq!(*v, Verdict::Tx(port));
        assert_eq!(f.len(), cap.len() - 50, "the outer 50 bytes are gone");
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!((eth.src_addr(), eth.dst_addr()), (port_mac, mac));
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.ttl(), 63);
        assert!(ip.verify_checksum());
        let mut copy = eth.payload()[..20].to_vec();
        let mut c = Ipv4Packet::new_unchecked(&mut copy[..]);
        c.fill_checksum();
        assert_eq!(c.checksum(), ip.checksum(), "incremental == full recompute");
        same_but_ttl(&cap[64..], &f[14..]);
    }
}

#[test]
fn built_vxlan_frames_decapsulate_like_captured_ones() {
    let snap = overlay_snapshot();
    let inner = remote_udp(REMOTE2, POD_B, 64);
    let (v, f) = run1(&snap, UPLINK, vxlan_frame(Outer::from_server2(), &inner));
    assert_eq!(v, Verdict::Tx(PORT_B));
    same_but_ttl(&inner[14..], &f[14..]);
    // Ethernet padding after the outer datagram is not part of the inner frame.
    let mut padded = vxlan_frame(Outer::from_server2(), &inner);
    padded.extend_from_slice(&[0; 12]);
    let (v, f) = run1(&snap, UPLINK, padded);
    assert_eq!(v, Verdict::Tx(PORT_B));
    assert_eq!(f.len(), inner.len());
    // The IANA port is not ours (flannel uses 8472): addressed to the node IP, unhandled.
    let mut o = Outer::from_server2();
    o.dst_port = vxlan::IANA_PORT;
    let (v, _) = run1(&snap, UPLINK, vxlan_frame(o, &inner));
    assert_eq!(drop_of(v), DropReason::Ip4LocalUnhandled);
}

#[test]
fn bad_vxlan_headers_are_dropped() {
    let snap = overlay_snapshot();
    let inner = remote_udp(REMOTE2, POD_A, 64);
    let with = |vx: [u8; 8]| {
        let mut o = Outer::from_server2();
        o.vxlan = vx;
        vxlan_frame(o, &inner)
    };
    use DropReason::*;
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("VNI 2", with([0x08, 0, 0, 0, 0, 0, 2, 0]), VxlanBadVni),
        ("VNI 256", with([0x08, 0, 0, 0, 0, 1, 0, 0]), VxlanBadVni),
        ("no I flag", with([0, 0, 0, 0, 0, 0, 1, 0]), VxlanBadFlags),
        (
            "I + another flag",
            with([0x0c, 0, 0, 0, 0, 0, 1, 0]),
            VxlanBadFlags,
        ),
        (
            "GBP-style G bit",
            with([0x88, 0, 0, 0, 0, 0, 1, 0]),
            VxlanBadFlags,
        ),
        (
            "reserved after flags",
            with([0x08, 0, 0, 1, 0, 0, 1, 0]),
            VxlanBadFlags,
        ),
        (
            "reserved after VNI",
            with([0x08, 0, 0, 0, 0, 0, 1, 1]),
            VxlanBadFlags,
        ),
        (
            "header only",
            vxlan_frame(Outer::from_server2(), &[]),
            VxlanTruncated,
        ),
        (
            "inner frame of 13 bytes",
            vxlan_frame(Outer::from_server2(), &inner[..13]),
            VxlanTruncated,
        ),
        (
            "UDP length beyond the IP payload",
            {
                let mut f = vxlan_frame(Outer::from_server2(), &inner);
                let l = u16::from_be_bytes([f[38], f[39]]) + 1;
                f[38..40].copy_from_slice(&l.to_be_bytes());
                f
            },
            VxlanTruncated,
        ),
        (
            "4 bytes of VXLAN header",
            {
                let mut f = vxlan_frame(Outer::from_server2(), &[]);
                f.truncate(46);
                f[16..18].copy_from_slice(&32u16.to_be_bytes());
                f[24..26].copy_from_slice(&[0, 0]);
                let c = checksum::checksum(&f[14..34]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
                f[38..40].copy_from_slice(&12u16.to_be_bytes());
                f
            },
            VxlanTruncated,
        ),
        (
            "our own VtepMAC as inner source",
            {
                let mut i = inner.clone();
                i[6..12].copy_from_slice(&UPLINK_MAC0.0);
                vxlan_frame(Outer::from_server2(), &i)
            },
            VxlanLoop,
        ),
        (
            "ARP through the tunnel",
            vxlan_frame(
                Outer::from_server2(),
                &arp_request(SERVER2_VTEP_MAC, REMOTE2, POD_A),
            ),
            VxlanInnerUnsupported,
        ),
        (
            "IPv6 through the tunnel",
            {
                let mut i = inner.clone();
                i[12..14].copy_from_slice(&[0x86, 0xdd]);
                vxlan_frame(Outer::from_server2(), &i)
            },
            VxlanInnerUnsupported,
        ),
        (
            "outer IPv4 checksum",
            {
                let mut f = vxlan_frame(Outer::from_server2(), &inner);
                f[24] ^= 0x40;
                f
            },
            Ip4BadChecksum,
        ),
        (
            "outer fragment",
            {
                let mut f = vxlan_frame(Outer::from_server2(), &inner);
                let mut ip = Ipv4Packet::new_checked(&mut f[14..]).unwrap();
                ip.set_more_frags(true);
                ip.fill_checksum();
                f
            },
            Ip4LocalUnhandled,
        ),
        (
            "inner with a bad header checksum",
            {
                let mut i = inner.clone();
                i[24] ^= 1;
                vxlan_frame(Outer::from_server2(), &i)
            },
            Ip4BadChecksum,
        ),
    ];
    let batch: Vec<(PortId, Vec<u8>)> = cases.iter().map(|(_, f, _)| (UPLINK, f.clone())).collect();
    let out = run(&snap, &batch);
    for ((name, _, reason), (v, _)) in cases.iter().zip(&out) {
        assert_eq!(*v, Verdict::Drop(*reason), "{name}");
    }
}

#[test]
fn ecn_is_carried_across_decapsulation() {
    let snap = overlay_snapshot();
    let inner_with = |ecn: u8| {
        let udp = UdpRepr {
            src_port: 1,
            dst_port: 2,
            payload: b"ecn",
        };
        let mut l4 = vec![0u8; udp.buffer_len()];
        udp.emit(&mut l4, REMOTE2, POD_A).unwrap();
        let mut ip = ipv4_repr(REMOTE2, POD_A, IpProtocol::UDP, l4.len(), 64);
        ip.ecn = ecn;
        inner_from_server2(ip, &l4)
    };
    let outer_with = |ecn: u8| {
        let mut o = Outer::from_server2();
        o.ecn = ecn;
        o
    };
    // (outer, inner) → inner ECN after decapsulation (RFC 6040 section 4.2).
    for (outer, inner, expect) in [
        (0, 0, 0),
        (2, 2, 2),
        (3, 2, 3),
        (3, 1, 3),
        (3, 3, 3),
        (2, 0, 0),
        (1, 2, 2),
    ] {
        let (v, f) = run1(
            &snap,
            UPLINK,
            vxlan_frame(outer_with(outer), &inner_with(inner)),
        );
        assert_eq!(v, Verdict::Tx(PORT_A), "outer {outer} inner {inner}");
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.ecn(), expect, "outer {outer} inner {inner}");
        assert!(ip.verify_checksum());
    }
    // Congestion experienced over a packet that is not ECN-capable: dropped.
    let (v, _) = run1(&snap, UPLINK, vxlan_frame(outer_with(3), &inner_with(0)));
    assert_eq!(drop_of(v), DropReason::VxlanEcnInvalid);
}

#[test]
fn vxlan_only_on_the_uplink_and_only_to_the_node_ip() {
    let snap = overlay_snapshot();
    let frame = vxlan_frame(Outer::from_server2(), &remote_udp(REMOTE2, POD_A, 64));
    // On a pod port it is plain IPv4 to the node IP.
    let (v, _) = run1(&snap, PORT_A, frame.clone());
    assert_eq!(drop_of(v), DropReason::Ip4LocalUnhandled);
    // To another address: forwarded as is, not decapsulated.
    let mut o = Outer::from_server2();
    o.dst = Ipv4Addr::new(192, 168, 50, 99);
    let orig = vxlan_frame(o, &remote_udp(REMOTE2, POD_A, 64));
    let (v, f) = run1(&snap, UPLINK, orig.clone());
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(f.len(), orig.len());
    assert_eq!(&f[0..6], &ROUTER_MAC.0);
    // Without a node IP nothing is decapsulated.
    let mut s = overlay_snapshot();
    s.node.node_ip = None;
    let (v, f) = run1(&s, UPLINK, frame.clone());
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(f.len(), frame.len());
}

#[test]
fn traffic_to_the_node_ip_is_the_kernels() {
    let snap = overlay_snapshot();
    for f in [
        from_router(udp_frame(INTERNET, NODE_IP, 53, 5353, b"dns", 64)),
        from_router(echo_request(INTERNET, NODE_IP, 1, 1, b"ping")),
        from_router(tcp_frame(INTERNET, NODE_IP, b"", 64)),
    ] {
        assert_eq!(
            drop_of(run1(&snap, UPLINK, f).0),
            DropReason::Ip4LocalUnhandled
        );
    }
    // From a pod too: the dataplane has no way into the node's stack.
    let f = udp_frame(POD_A, NODE_IP, 53, 5353, b"dns", 64);
    assert_eq!(
        drop_of(run1(&snap, PORT_A, f).0),
        DropReason::Ip4LocalUnhandled
    );
    // ARP on the uplink is the kernel's as well.
    let mut arp = arp_request(ROUTER_MAC, ROUTER, POD_A);
    arp[6..12].copy_from_slice(&ROUTER_MAC.0);
    assert_eq!(drop_of(run1(&snap, UPLINK, arp).0), DropReason::ArpNotForUs);
}

#[test]
fn decapsulated_packets_do_not_go_back_into_the_overlay() {
    let snap = overlay_snapshot();
    let frame = vxlan_frame(Outer::from_server2(), &remote_udp(REMOTE2, REMOTE2B, 64));
    assert_eq!(drop_of(run1(&snap, UPLINK, frame).0), DropReason::VxlanLoop);
    // A direct route is fine (no loop): on to server3.
    let frame = vxlan_frame(Outer::from_server2(), &remote_udp(REMOTE2, REMOTE3, 64));
    let (v, f) = run1(&snap, UPLINK, frame);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(&f[0..12], &[SERVER3_MAC.0, UPLINK_MAC0.0].concat()[..]);
}

#[test]
fn ping_to_the_gateway_through_the_tunnel_is_answered_through_it() {
    let snap = overlay_snapshot();
    let req = as_inner(echo_request(REMOTE2, GW, 0x77, 3, b"over vxlan"));
    let (v, out) = run1(&snap, UPLINK, vxlan_frame(Outer::from_server2(), &req));
    assert_eq!(v, Verdict::Tx(UPLINK));
    let (_, _, inner) = outer_of(&out, SERVER2, SERVER2_MAC, SERVER2_VTEP_MAC);
    let ip = Ipv4Packet::new_checked(&inner[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ttl()), (GW, REMOTE2, 64));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(
        Icmpv4Repr::parse(&icmp).unwrap(),
        Icmpv4Repr::EchoReply {
            ident: 0x77,
            seq_no: 3,
            data: b"over vxlan"
        }
    );
}

// ---- vxlan-encap -----------------------------------------------------------------------

#[test]
fn encapsulation_to_server2_byte_by_byte() {
    let snap = overlay_snapshot();
    let orig = pod_udp(REMOTE2, 40000, 30, 64, true);
    let (v, out) = run1(&snap, PORT_A, orig.clone());
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(out.len(), orig.len() + 50);
    let (id, sport, inner) = outer_of(&out, SERVER2, SERVER2_MAC, SERVER2_VTEP_MAC);

    let mut expect = vec![0u8; 50];
    EthernetRepr {
        src_addr: UPLINK_MAC0,
        dst_addr: SERVER2_MAC,
        ethertype: EtherType::IPV4,
    }
    .emit(&mut expect)
    .unwrap();
    Ipv4Repr {
        src_addr: NODE_IP,
        dst_addr: SERVER2,
        protocol: IpProtocol::UDP,
        payload_len: orig.len() + 16,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: id,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(&mut expect[14..])
    .unwrap();
    expect[34..36].copy_from_slice(&sport.to_be_bytes());
    expect[36..38].copy_from_slice(&8472u16.to_be_bytes());
    expect[38..40].copy_from_slice(&((orig.len() + 16) as u16).to_be_bytes());
    expect[42..50].copy_from_slice(&[0x08, 0, 0, 0, 0, 0, 0x01, 0]);
    assert_eq!(&out[..50], &expect[..]);

    // The inner packet: forwarded (TTL − 1, checksum updated), L4 untouched.
    let ip = Ipv4Packet::new_checked(&inner[14..]).unwrap();
    assert_eq!(ip.ttl(), 63);
    assert!(ip.verify_checksum());
    same_but_ttl(&orig[14..], &inner[14..]);
}

/// Our encapsulation equals what Linux's vxlan driver put on the wire for the same inner
/// packet, except the fields that are per sender: IP identification (and so the header
/// checksum), UDP source port (a flow hash) and UDP checksum (0 here, offloaded there).
#[test]
fn encapsulation_matches_the_linux_capture() {
    let cap = captured::VXLAN_UDP_TO_POD_A;
    let server1_vtep_mac = [0x6e, 0x9d, 0x2b, 0x14, 0x7a, 0x01];
    // This node plays server2 of the capture.
    let mut s = overlay_snapshot();
    if let Some(p) = s.ports[usize::from(UPLINK)].as_mut() {
        p.mac = SERVER2_MAC.0;
    }
    s.node.node_ip = Some(SERVER2);
    s.node.vtep_mac = SERVER2_VTEP_MAC.0;
    s.node.pod_net = Ipv4Addr::new(10, 244, 2, 0);
    s.node.gateway = Ipv4Addr::new(10, 244, 2, 1);
    let mut n = Neighbours::default();
    n.insert(NODE_IP, UPLINK_MAC0.0);
    s.neighbours = n;
    let s = with_routes(
        s,
        vec![
            Route::Local,
            Route::Vxlan {
                vtep: NODE_IP,
                vtep_mac: server1_vtep_mac,
                vni: 1,
            },
        ],
        &[
            (Ipv4Addr::new(10, 244, 2, 0), 24, 0),
            (Ipv4Addr::new(10, 244, 1, 0), 24, 1),
        ],
    );
    // The inner packet as a pod would send it, one hop earlier (TTL 65).
    let mut pod = cap[50..].to_vec();
    pod[0..6].copy_from_slice(&PORT_A_MAC.0);
    pod[6..12].copy_from_slice(&MAC_A.0);
    {
        let mut ip = Ipv4Packet::new_checked(&mut pod[14..]).unwrap();
        ip.set_ttl(65);
        ip.fill_checksum();
    }
    let (v, out) = run1(&s, PORT_A, pod);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(out.len(), cap.len());
    for (i, (ours, linux)) in out.iter().zip(cap).enumerate() {
        if !matches!(i, 18 | 19 | 24 | 25 | 34 | 35 | 40 | 41) {
            assert_eq!(ours, linux, "byte {i}");
        }
    }
    assert_eq!(&out[40..42], &[0, 0]);
}

#[test]
fn source_ports_follow_flows_and_ids_count_up() {
    let snap = overlay_snapshot();
    let mut p = Pipeline::new();
    // 32 flows, each twice in the batch.
    let batch: Vec<(PortId, Vec<u8>)> = (0..64u16)
        .map(|i| (PORT_A, pod_udp(REMOTE2, 40000 + i % 32, 10, 64, true)))
        .collect();
    let out = run_with(&mut p, &snap, &batch, 0, HEADROOM);
    let mut ports = Vec::new();
    let mut ids = Vec::new();
    for (v, f) in &out {
        assert_eq!(*v, Verdict::Tx(UPLINK));
        let (id, sport, _) = outer_of(f, SERVER2, SERVER2_MAC, SERVER2_VTEP_MAC);
        ports.push(sport);
        ids.push(id);
    }
    assert_eq!(ports[..32], ports[32..], "same flow, same source port");
    let mut distinct = ports[..32].to_vec();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() >= 28,
        "only {} ports for 32 flows",
        distinct.len()
    );
    for w in ids.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1));
    }
    // Another pipeline (worker) gives each flow the same port.
    let again = run(&snap, &batch[..1]);
    let (_, sport, _) = outer_of(&again[0].1, SERVER2, SERVER2_MAC, SERVER2_VTEP_MAC);
    assert_eq!(sport, ports[0]);
    // The port depends on the addresses and the protocol too.
    let other = run(&snap, &[(PORT_A, tcp_frame(POD_A, REMOTE2, b"x", 64))]);
    assert_eq!(other[0].0, Verdict::Tx(UPLINK));
}

#[test]
fn ecn_is_copied_to_the_outer_header() {
    let snap = overlay_snapshot();
    // inner → outer (RFC 6040 section 4.1: CE is sent as ECT(0)).
    for (inner, outer) in [(0, 0), (1, 1), (2, 2), (3, 2)] {
        let mut f = pod_udp(REMOTE2, 1, 10, 64, true);
        {
            let mut ip = Ipv4Packet::new_checked(&mut f[14..]).unwrap();
            ip.set_ecn(inner);
            ip.fill_checksum();
        }
        let (v, out) = run1(&snap, PORT_A, f);
        assert_eq!(v, Verdict::Tx(UPLINK));
        let ip = Ipv4Packet::new_checked(&out[14..]).unwrap();
        assert_eq!((ip.dscp(), ip.ecn()), (0, outer));
        assert!(ip.verify_checksum());
        let inner_ip = Ipv4Packet::new_checked(&out[64..]).unwrap();
        assert_eq!(inner_ip.ecn(), inner);
    }
}

#[test]
fn vtep_off_the_uplink_subnet_goes_through_the_gateway() {
    let far = Ipv4Addr::new(192, 168, 60, 12);
    let base = overlay_snapshot();
    let routes = vec![
        Route::Local,
        Route::Vxlan {
            vtep: far,
            vtep_mac: SERVER2_VTEP_MAC.0,
            vni: 1,
        },
        Route::Gateway { next_hop: ROUTER },
    ];
    let s = with_routes(
        base.clone(),
        routes.clone(),
        &[
            (Ipv4Addr::new(10, 244, 1, 0), 24, 0),
            (Ipv4Addr::new(10, 244, 2, 0), 24, 1),
            (Ipv4Addr::UNSPECIFIED, 0, 2),
        ],
    );
    let (v, out) = run1(&s, PORT_A, pod_udp(REMOTE2, 1, 10, 64, true));
    assert_eq!(v, Verdict::Tx(UPLINK));
    outer_of(&out, far, ROUTER_MAC, SERVER2_VTEP_MAC);
    // Without a route to it the VTEP is unreachable.
    let s = with_routes(
        base,
        routes,
        &[
            (Ipv4Addr::new(10, 244, 1, 0), 24, 0),
            (Ipv4Addr::new(10, 244, 2, 0), 24, 1),
        ],
    );
    let (v, _) = run1(&s, PORT_A, pod_udp(REMOTE2, 1, 10, 64, true));
    assert_eq!(drop_of(v), DropReason::VxlanVtepUnreachable);
}

#[test]
fn encapsulation_needs_an_uplink_and_headroom() {
    let snap = overlay_snapshot();
    let f = pod_udp(REMOTE2, 1, 10, 64, true);
    let mut s = overlay_snapshot();
    s.node.uplink = None;
    assert_eq!(
        drop_of(run1(&s, PORT_A, f.clone()).0),
        DropReason::UplinkUnconfigured
    );
    let mut s = overlay_snapshot();
    s.node.node_ip = None;
    assert_eq!(
        drop_of(run1(&s, PORT_A, f.clone()).0),
        DropReason::UplinkUnconfigured
    );
    let mut s = overlay_snapshot();
    s.ports[usize::from(UPLINK)] = None;
    assert_eq!(drop_of(run1(&s, PORT_A, f.clone()).0), DropReason::PortDown);
    for (headroom, ok) in [(0, false), (49, false), (50, true), (64, true)] {
        let out = run_with(
            &mut Pipeline::new(),
            &snap,
            &[(PORT_A, f.clone())],
            0,
            headroom,
        );
        if ok {
            assert_eq!(out[0].0, Verdict::Tx(UPLINK), "headroom {headroom}");
            assert_eq!(out[0].1.len(), f.len() + 50);
        } else {
            assert_eq!(
                out[0].0,
                Verdict::Drop(DropReason::VxlanNoHeadroom),
                "headroom {headroom}"
            );
        }
    }
}

// ---- direct and default routes, neighbours -----------------------------------------------

#[test]
fn direct_route_to_server3_and_default_route_via_the_router() {
    let snap = overlay_snapshot();
    for (dst, mac) in [(REMOTE3, SERVER3_MAC), (INTERNET, ROUTER_MAC)] {
        let orig = pod_udp(dst, 1234, 40, 64, true);
        let (v, out) = run1(&snap, PORT_A, orig.clone());
        assert_eq!(v, Verdict::Tx(UPLINK), "{dst}");
        assert_eq!(out.len(), orig.len(), "not encapsulated");
        let eth = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!((eth.src_addr(), eth.dst_addr()), (UPLINK_MAC0, mac));
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.ttl(), 63);
        assert!(ip.verify_checksum());
        same_but_ttl(&orig[14..], &out[14..]);
    }
    // From the uplink to a local pod (direct routing by a peer): delivered.
    let (v, out) = run1(
        &snap,
        UPLINK,
        from_router(udp_frame(REMOTE3, POD_B, 1, 2, b"direct", 64)),
    );
    assert_eq!(v, Verdict::Tx(PORT_B));
    assert_eq!(&out[0..12], &[MAC_B.0, PORT_B_MAC.0].concat()[..]);
}

#[test]
fn neighbour_misses_are_recorded_once_per_next_hop() {
    let mut s = overlay_snapshot();
    let mut n = Neighbours::default();
    n.insert(ROUTER, ROUTER_MAC.0);
    s.neighbours = n;
    let mut p = Pipeline::new();
    let batch = vec![
        (PORT_A, pod_udp(REMOTE3, 1, 10, 64, true)),
        (PORT_A, pod_udp(REMOTE2, 2, 10, 64, true)),
        (PORT_A, pod_udp(REMOTE3, 3, 10, 64, true)),
        (PORT_A, pod_udp(INTERNET, 4, 10, 64, true)),
        (PORT_B, pod_udp(REMOTE3, 5, 10, 64, true)),
        (PORT_A, pod_udp(REMOTE2, 6, 10, 64, true)),
    ];
    let out = run_with(&mut p, &s, &batch, 0, HEADROOM);
    let verdicts: Vec<Verdict> = out.iter().map(|(v, _)| *v).collect();
    let miss = Verdict::Drop(DropReason::NeighbourUnresolved);
    assert_eq!(
        verdicts,
        vec![miss, miss, miss, Verdict::Tx(UPLINK), miss, miss]
    );
    assert_eq!(p.neighbour_misses(), &[SERVER3, SERVER2]);
    let taken: Vec<Ipv4Addr> = p.take_neighbour_misses().collect();
    assert_eq!(taken, vec![SERVER3, SERVER2]);
    assert!(p.neighbour_misses().is_empty());
    // The next batch records them again.
    run_with(&mut p, &s, &batch[..2], 0, HEADROOM);
    assert_eq!(p.neighbour_misses(), &[SERVER3, SERVER2]);
    p.clear_neighbour_misses();
    assert!(p.neighbour_misses().is_empty());
    assert_eq!(p.neighbour_misses_lost(), 0);
    // Resolved: no miss.
    run_with(&mut p, &overlay_snapshot(), &batch, 0, HEADROOM);
    assert!(p.neighbour_misses().is_empty());
}

// ---- icmp-error --------------------------------------------------------------------------

#[test]
fn ttl_expiry_is_answered_with_time_exceeded() {
    let snap = overlay_snapshot();
    // From a pod: sent back on its port, from the gateway.
    let orig = pod_udp(REMOTE2, 33434, 24, 1, true);
    let (v, out) = run1(&snap, PORT_A, orig.clone());
    assert_eq!(v, Verdict::Tx(PORT_A));
    assert_eq!(out.len(), 14 + 20 + 8 + 28);
    assert_eq!(&out[0..12], &[MAC_A.0, PORT_A_MAC.0].concat()[..]);
    let (t, c, rest, quote) = icmp_error_of(&out, GW, POD_A);
    assert_eq!((t, c, rest), (11, 0, 0));
    assert_eq!(quote, quote_of(&orig));
    assert_eq!(quote[8], 1, "the quoted header is the one received");

    // From the uplink: sent back to the router, from the node IP.
    let orig = from_router(udp_frame(INTERNET, POD_A, 53, 33434, b"traceroute", 1));
    let (v, out) = run1(&snap, UPLINK, orig.clone());
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(&out[0..12], &[ROUTER_MAC.0, UPLINK_MAC0.0].concat()[..]);
    let (t, c, _, quote) = icmp_error_of(&out, NODE_IP, INTERNET);
    assert_eq!((t, c), (11, 0));
    assert_eq!(quote, quote_of(&orig));
    // With no node IP there is nothing to answer from.
    let mut s = overlay_snapshot();
    s.node.node_ip = None;
    assert_eq!(drop_of(run1(&s, UPLINK, orig).0), DropReason::Ip4TtlExpired);

    // From the overlay: answered through the tunnel, from the gateway.
    let inner = remote_udp(REMOTE2, POD_B, 1);
    let (v, out) = run1(&snap, UPLINK, vxlan_frame(Outer::from_server2(), &inner));
    assert_eq!(v, Verdict::Tx(UPLINK));
    let (_, _, err) = outer_of(&out, SERVER2, SERVER2_MAC, SERVER2_VTEP_MAC);
    let (t, c, _, quote) = icmp_error_of(err, GW, REMOTE2);
    assert_eq!((t, c), (11, 0));
    assert_eq!(quote, quote_of(&inner));
}

#[test]
fn unreachable_destinations_are_answered() {
    let base = overlay_snapshot();
    // No default route: net unreachable (code 0).
    let no_default = with_routes(
        base.clone(),
        base.routes.clone(),
        &[
            (Ipv4Addr::new(10, 244, 1, 0), 24, ROUTE_LOCAL),
            (Ipv4Addr::new(10, 244, 2, 0), 24, ROUTE_SERVER2),
        ],
    );
    let orig = pod_udp(INTERNET, 5, 100, 64, true);
    let (v, out) = run1(&no_default, PORT_A, orig.clone());
    assert_eq!(v, Verdict::Tx(PORT_A));
    let (t, c, _, quote) = icmp_error_of(&out, GW, POD_A);
    assert_eq!((t, c), (3, unreachable::NET));
    assert_eq!(quote, quote_of(&orig));
    assert_eq!(quote.len(), 28);

    // In our pod CIDR without a pod: host unreachable (code 1).
    let orig = pod_udp(POD_NONE, 5, 3, 64, true);
    let (v, out) = run1(&base, PORT_A, orig.clone());
    assert_eq!(v, Verdict::Tx(PORT_A));
    let (t, c, _, quote) = icmp_error_of(&out, GW, POD_A);
    assert_eq!((t, c), (3, unreachable::HOST));
    assert_eq!(quote, quote_of(&orig));

    // The captured ping to 10.244.1.0 (no pod there): answered through the tunnel.
    let cap = captured::VXLAN_PING_TO_NET_ADDR;
    let (v, out) = run1(&base, UPLINK, cap.to_vec());
    assert_eq!(v, Verdict::Tx(UPLINK));
    let (_, _, err) = outer_of(&out, SERVER2, SERVER2_MAC, SERVER2_VTEP_MAC);
    let (t, c, _, quote) = icmp_error_of(err, GW, Ipv4Addr::new(10, 244, 2, 0));
    assert_eq!((t, c), (3, unreachable::HOST));
    assert_eq!(quote, &cap[64..64 + 28]);

    // A route marked unreachable (the cluster network): host unreachable.
    let mut routes = base.routes.clone();
    routes.push(Route::Unreachable);
    let cluster = with_routes(
        base.clone(),
        routes,
        &[
            (Ipv4Addr::new(10, 244, 1, 0), 24, ROUTE_LOCAL),
            (Ipv4Addr::new(10, 244, 0, 0), 16, 4),
            (Ipv4Addr::UNSPECIFIED, 0, ROUTE_DEFAULT),
        ],
    );
    let (v, out) = run1(
        &cluster,
        PORT_A,
        pod_udp(Ipv4Addr::new(10, 244, 9, 9), 5, 3, 64, true),
    );
    assert_eq!(v, Verdict::Tx(PORT_A));
    assert_eq!(icmp_error_of(&out, GW, POD_A).1, unreachable::HOST);
}

#[test]
fn too_big_with_df_gets_fragmentation_needed() {
    let snap = overlay_snapshot();
    // 1500-byte IP packets (1472 bytes of UDP payload) to server2.
    let df = pod_udp(REMOTE2, 7, 1472, 64, true);
    let (v, out) = run1(&snap, PORT_A, df.clone());
    assert_eq!(v, Verdict::Tx(PORT_A));
    let (t, c, rest, quote) = icmp_error_of(&out, GW, POD_A);
    assert_eq!((t, c), (3, unreachable::FRAG_NEEDED));
    assert_eq!(rest, 1450, "next-hop MTU = 1500 − 50 (RFC 1191)");
    assert_eq!(quote, quote_of(&df));
    assert_eq!(quote[8], 64, "TTL as received");
    // Without DF: encapsulated (the dataplane does not fragment).
    let (v, out) = run1(&snap, PORT_A, pod_udp(REMOTE2, 7, 1472, 64, false));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(out.len(), 1514 + 50);
    // Exactly 1450 fits; 1451 does not.
    let (v, out) = run1(&snap, PORT_A, pod_udp(REMOTE2, 7, 1422, 64, true));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(out.len(), 1464 + 50);
    let (v, _) = run1(&snap, PORT_A, pod_udp(REMOTE2, 7, 1423, 64, true));
    assert_eq!(v, Verdict::Tx(PORT_A));
    // Direct routes use the uplink MTU itself.
    let (v, _) = run1(&snap, PORT_A, df.clone());
    assert_eq!(v, Verdict::Tx(PORT_A));
    let (v, _) = run1(&snap, PORT_A, pod_udp(REMOTE3, 7, 1472, 64, true));
    assert_eq!(v, Verdict::Tx(UPLINK));
    let mut small = overlay_snapshot();
    small.node.uplink_mtu = 1400;
    let (v, out) = run1(&small, PORT_A, pod_udp(REMOTE3, 7, 1472, 64, true));
    assert_eq!(v, Verdict::Tx(PORT_A));
    assert_eq!(icmp_error_of(&out, GW, POD_A).2, 1400);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let snap = overlay_snapshot();
    let mut p = Pipeline::new();
    let expiring: Vec<(PortId, Vec<u8>)> = (0..64u16)
        .map(|i| (PORT_A, pod_udp(REMOTE2, 40000 + i, 8, 1, true)))
        .collect();
    let sent = |out: &[(Verdict, Vec<u8>)]| {
        for (v, _) in out {
            assert!(matches!(
                v,
                Verdict::Tx(PORT_A) | Verdict::Drop(DropReason::IcmpErrorRateLimited)
            ));
        }
        out.iter()
            .filter(|(v, _)| *v == Verdict::Tx(PORT_A))
            .count()
    };
    let t0 = 7_000_000_000;
    // The burst, then nothing while time stands still.
    let out = run_with(&mut p, &snap, &expiring, t0, HEADROOM);
    assert_eq!(sent(&out), 50);
    assert!(
        out[50..]
            .iter()
            .all(|(v, _)| *v == Verdict::Drop(DropReason::IcmpErrorRateLimited))
    );
    assert_eq!(sent(&run_with(&mut p, &snap, &expiring, t0, HEADROOM)), 0);
    // Path MTU discovery is never limited.
    let big = vec![(PORT_A, pod_udp(REMOTE2, 7, 1472, 64, true)); 3];
    assert_eq!(sent(&run_with(&mut p, &snap, &big, t0, HEADROOM)), 3);
    // 10 ms at 1000/s: 10 more.
    assert_eq!(
        sent(&run_with(
            &mut p,
            &snap,
            &expiring,
            t0 + 10_000_000,
            HEADROOM
        )),
        10
    );
    // A long pause refills to the burst only.
    assert_eq!(
        sent(&run_with(
            &mut p,
            &snap,
            &expiring,
            t0 + 60_000_000_000,
            HEADROOM
        )),
        50
    );
    // Each worker has its own bucket.
    assert_eq!(
        sent(&run_with(
            &mut Pipeline::new(),
            &snap,
            &expiring,
            t0,
            HEADROOM
        )),
        50
    );
    // Configurable.
    let mut slow = Pipeline::with_config(PipelineConfig {
        icmp_errors_per_sec: 10,
        icmp_errors_burst: 2,
        ..PipelineConfig::default()
    });
    assert_eq!(
        sent(&run_with(&mut slow, &snap, &expiring, t0, HEADROOM)),
        2
    );
    assert_eq!(
        sent(&run_with(
            &mut slow,
            &snap,
            &expiring,
            t0 + 100_000_000,
            HEADROOM
        )),
        1
    );
    let mut off = Pipeline::with_config(PipelineConfig {
        icmp_errors_per_sec: 1000,
        icmp_errors_burst: 0,
        ..PipelineConfig::default()
    });
    assert_eq!(sent(&run_with(&mut off, &snap, &expiring, t0, HEADROOM)), 0);
}

#[test]
fn no_icmp_error_about_icmp_errors_fragments_or_broadcasts() {
    let base = overlay_snapshot();
    let snap = with_routes(
        base.clone(),
        base.routes.clone(),
        &[(Ipv4Addr::new(10, 244, 1, 0), 24, ROUTE_LOCAL)],
    );
    let icmp_frame = |msg: &[u8]| {
        let mut l4 = msg.to_vec();
        l4[2..4].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&l4);
        l4[2..4].copy_from_slice(&c.to_be_bytes());
        ipv4_frame(
            MAC_A,
            PORT_A_MAC,
            ipv4_repr(POD_A, INTERNET, IpProtocol::ICMP, l4.len(), 64),
            &l4,
        )
    };
    let quoted = quote_of(&udp_frame(INTERNET, POD_A, 1, 2, b"whatever", 64));
    let error = |t: u8, c: u8| {
        let mut m = vec![t, c, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&quoted);
        icmp_frame(&m)
    };
    let no_route = DropReason::Ip4NoRoute;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("destination unreachable", error(3, 3)),
        ("time exceeded", error(11, 0)),
        ("parameter problem", error(12, 0)),
        ("redirect", error(5, 1)),
        ("source quench", error(4, 0)),
        ("unknown type 42", error(42, 0)),
        ("ICMP without a header", {
            let ip = ipv4_repr(POD_A, INTERNET, IpProtocol::ICMP, 0, 64);
            ipv4_frame(MAC_A, PORT_A_MAC, ip, &[])
        }),
        ("non-first fragment", {
            let mut f = pod_udp(INTERNET, 1, 16, 64, false);
            let mut ip = Ipv4Packet::new_checked(&mut f[14..]).unwrap();
            ip.set_frag_offset(1480);
            ip.fill_checksum();
            f
        }),
        ("link-layer broadcast", {
            let mut f = pod_udp(INTERNET, 1, 16, 64, true);
            f[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
            f
        }),
        ("link-layer multicast", {
            let mut f = pod_udp(INTERNET, 1, 16, 64, true);
            f[0..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 0xfb]);
            f
        }),
        ("multicast destination", {
            udp_frame(POD_A, Ipv4Addr::new(239, 1, 2, 3), 1, 2, b"m", 64)
        }),
        ("loopback source", {
            udp_frame(Ipv4Addr::LOCALHOST, INTERNET, 1, 2, b"x", 64)
        }),
        ("class E source", {
            udp_frame(Ipv4Addr::new(240, 0, 0, 1), INTERNET, 1, 2, b"x", 64)
        }),
        ("directed broadcast source", {
            udp_frame(Ipv4Addr::new(10, 244, 1, 255), INTERNET, 1, 2, b"x", 64)
        }),
    ];
    let batch: Vec<(PortId, Vec<u8>)> = cases.iter().map(|(_, f)| (PORT_A, f.clone())).collect();
    let out = run(&snap, &batch);
    for ((name, _), (v, _)) in cases.iter().zip(&out) {
        assert_eq!(*v, Verdict::Drop(no_route), "{name}");
    }
    // Informational ICMP and first fragments are answered.
    for f in [
        echo_request(POD_A, INTERNET, 1, 1, b"ping"),
        icmp_frame(&[13, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        {
            let mut f = pod_udp(INTERNET, 1, 16, 64, false);
            let mut ip = Ipv4Packet::new_checked(&mut f[14..]).unwrap();
            ip.set_more_frags(true);
            ip.fill_checksum();
            f
        },
    ] {
        let (v, out) = run1(&snap, PORT_A, f.clone());
        assert_eq!(v, Verdict::Tx(PORT_A));
        let (t, c, _, quote) = icmp_error_of(&out, GW, POD_A);
        assert_eq!((t, c), (3, unreachable::NET));
        assert_eq!(quote, quote_of(&f));
    }
}

#[test]
fn one_batch_of_everything() {
    let snap = overlay_snapshot();
    let packets = vec![
        (UPLINK, captured::VXLAN_UDP_TO_POD_A.to_vec()),
        (PORT_A, pod_udp(REMOTE2, 1, 10, 64, true)),
        (PORT_B, udp_frame(POD_B, POD_A, 1, 2, b"local", 64)),
        (PORT_A, pod_udp(REMOTE3, 1, 10, 64, true)),
        (PORT_A, pod_udp(REMOTE2, 1, 10, 1, true)),
        (PORT_A, pod_udp(INTERNET, 1, 10, 64, true)),
        (UPLINK, captured::VXLAN_PING_TO_NET_ADDR.to_vec()),
        (PORT_A, arp_request(MAC_A, POD_A, GW)),
        (UPLINK, captured::VXLAN_UDP_TO_POD_B.to_vec()),
        (PORT_A, pod_udp(REMOTE2, 1, 1472, 64, true)),
    ];
    let verdicts: Vec<Verdict> = run(&snap, &packets).into_iter().map(|(v, _)| v).collect();
    assert_eq!(
        verdicts,
        vec![
            Verdict::Tx(PORT_A),
            Verdict::Tx(UPLINK),
            Verdict::Tx(PORT_A),
            Verdict::Tx(UPLINK),
            Verdict::Tx(PORT_A),
            Verdict::Tx(UPLINK),
            Verdict::Tx(UPLINK),
            Verdict::Tx(PORT_A),
            Verdict::Tx(PORT_B),
            Verdict::Tx(PORT_A),
        ]
    );
}
