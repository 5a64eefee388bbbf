//! Malformed frames are dropped with the right reason, and no input makes the pipeline
//! panic or leave a packet without a final verdict.

mod common;

use common::*;
use std::net::Ipv4Addr;
use xdplane_pipeline::*;
use xdplane_wire::*;

fn verdict(frame: Vec<u8>) -> Verdict {
    run1(&snapshot(), PORT_A, frame).0
}

/// A valid pod→pod UDP frame with one IPv4 header byte replaced, checksum refreshed
/// unless `keep_checksum`.
fn with_ip_byte(at: usize, value: u8, keep_checksum: bool) -> Vec<u8> {
    let mut f = udp_frame(POD_A, POD_B, 1000, 2000, b"payload!", 64);
    f[14 + at] = value;
    if !keep_checksum {
        // Recompute over 20 bytes whatever the IHL says, so only the intended field is bad.
        f[24] = 0;
        f[25] = 0;
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
    f
}

#[test]
fn malformed_frames_are_dropped_with_their_reason() {
    use DropReason::*;
    let arp = arp_request(MAC_A, POD_A, GW);
    let udp = udp_frame(POD_A, POD_B, 1000, 2000, b"payload!", 64);
    let arp_field = |at: usize, v: u8| {
        let mut f = arp.clone();
        f[14 + at] = v;
        f
    };
    let mut cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty frame", vec![], EthTruncated),
        ("13-byte frame", udp[..13].to_vec(), EthTruncated),
        (
            "VLAN tag",
            {
                let mut f = udp.clone();
                f[12..14].copy_from_slice(&[0x81, 0x00]);
                f
            },
            EthUnsupportedType,
        ),
        (
            "IPv6",
            {
                let mut f = udp.clone();
                f[12..14].copy_from_slice(&[0x86, 0xdd]);
                f
            },
            EthUnsupportedType,
        ),
        (
            "802.3 length",
            {
                let mut f = udp.clone();
                f[12..14].copy_from_slice(&[0x00, 0x2e]);
                f
            },
            EthUnsupportedType,
        ),
        ("ARP header only", arp[..14].to_vec(), ArpMalformed),
        ("ARP truncated", arp[..14 + 27].to_vec(), ArpMalformed),
        ("ARP htype 6", arp_field(1, 6), ArpMalformed),
        (
            "ARP ptype IPv6",
            {
                let mut f = arp_field(2, 0x86);
                f[17] = 0xdd;
                f
            },
            ArpMalformed,
        ),
        ("ARP hlen 8", arp_field(4, 8), ArpMalformed),
        ("ARP plen 16", arp_field(5, 16), ArpMalformed),
        ("ARP multicast sender MAC", arp_field(8, 0x01), ArpMalformed),
        (
            "ARP broadcast sender MAC",
            arp_request(MacAddr::BROADCAST, POD_A, GW),
            ArpMalformed,
        ),
        (
            "IPv4 header only Ethernet",
            udp[..14].to_vec(),
            Ip4Truncated,
        ),
        ("IPv4 truncated at 10", udp[..24].to_vec(), Ip4Truncated),
        ("IPv4 truncated at 19", udp[..33].to_vec(), Ip4Truncated),
        (
            "version 6 in 0x0800",
            with_ip_byte(0, 0x65, false),
            Ip4BadVersion,
        ),
        ("version 0", with_ip_byte(0, 0x05, false), Ip4BadVersion),
        ("IHL 3", with_ip_byte(0, 0x43, false), Ip4BadIhl),
        ("IHL 0", with_ip_byte(0, 0x40, false), Ip4BadIhl),
        (
            "IHL 15 beyond frame",
            with_ip_byte(0, 0x4f, false),
            Ip4BadIhl,
        ),
        (
            "total length > frame",
            with_ip_byte(3, 80, false),
            Ip4BadLength,
        ),
        (
            "total length < IHL*4",
            with_ip_byte(3, 19, false),
            Ip4BadLength,
        ),
        ("total length 0", with_ip_byte(3, 0, false), Ip4BadLength),
        ("bad checksum", with_ip_byte(10, 0xde, true), Ip4BadChecksum),
        (
            "bad checksum (TTL changed)",
            with_ip_byte(8, 63, true),
            Ip4BadChecksum,
        ),
        (
            "source broadcast",
            udp_frame(Ipv4Addr::BROADCAST, POD_B, 1, 2, b"x", 64),
            Ip4BadSource,
        ),
        (
            "source multicast",
            udp_frame(Ipv4Addr::new(224, 0, 0, 251), POD_B, 1, 2, b"x", 64),
            Ip4BadSource,
        ),
        (
            "source unspecified",
            udp_frame(Ipv4Addr::UNSPECIFIED, POD_B, 1, 2, b"x", 64),
            Ip4BadSource,
        ),
    ];
    // Total length shorter than the datagram but ≥ header: valid, trimmed, forwarded.
    let trimmed = with_ip_byte(3, 28, false);
    assert_eq!(verdict(trimmed), Verdict::Tx(PORT_B));
    // IHL 15 with a long enough frame and a correct checksum is a valid header (options).
    let mut opts = udp.clone();
    opts.resize(14 + 60 + 8, 0);
    opts[14] = 0x4f;
    opts[16..18].copy_from_slice(&68u16.to_be_bytes());
    opts[24] = 0;
    opts[25] = 0;
    let c = checksum::checksum(&opts[14..74]);
    opts[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(verdict(opts), Verdict::Tx(PORT_B));

    // All at once in one batch, too.
    let batch: Vec<(PortId, Vec<u8>)> = cases.iter().map(|(_, f, _)| (PORT_A, f.clone())).collect();
    let out = run(&snapshot(), &batch);
    for ((name, _, reason), (v, _)) in cases.iter().zip(&out) {
        assert_eq!(*v, Verdict::Drop(*reason), "{name} (in a batch)");
    }
    for (name, frame, reason) in cases.drain(..) {
        assert_eq!(verdict(frame), Verdict::Drop(reason), "{name}");
    }
}

fn valid_frames() -> Vec<(PortId, Vec<u8>)> {
    let pod = |f: Vec<u8>| (PORT_A, f);
    let up = |f: Vec<u8>| (UPLINK, f);
    let from_router = |mut f: Vec<u8>| {
        f[6..12].copy_from_slice(&ROUTER_MAC.0);
        f[0..6].copy_from_slice(&UPLINK_MAC0.0);
        (UPLINK, f)
    };
    let mut ecn_ce = Outer::from_server2();
    ecn_ce.ecn = 3;
    vec![
        pod(arp_request(MAC_A, POD_A, GW)),
        pod(arp_request(MAC_A, POD_A, POD_B)),
        pod(arp_frame(ArpOp::REPLY, MAC_A, POD_A, PORT_A_MAC, GW)),
        pod(echo_request(POD_A, GW, 1, 2, b"abcdefgh")),
        pod(udp_frame(POD_A, POD_B, 1, 2, b"hello", 64)),
        pod(udp_frame(POD_A, POD_NONE, 1, 2, b"hello", 64)),
        pod(udp_frame(POD_A, POD_GHOST, 1, 2, b"hello", 64)),
        pod(tcp_frame(POD_A, POD_B, b"data", 2)),
        pod(tcp_frame(POD_A, GW, b"", 64)),
        // Overlay and underlay paths.
        pod(pod_udp(REMOTE2, 40000, 30, 64, true)),
        pod(pod_udp(REMOTE2, 40001, 1460, 64, true)),
        pod(pod_udp(REMOTE2, 40001, 1460, 64, false)),
        pod(pod_udp(REMOTE3, 40002, 30, 64, true)),
        pod(pod_udp(INTERNET, 40003, 30, 1, true)),
        pod(pod_udp(INTERNET, 40003, 30, 64, true)),
        up(captured::VXLAN_UDP_TO_POD_A.to_vec()),
        up(captured::VXLAN_UDP_TO_POD_B.to_vec()),
        up(captured::VXLAN_PING_TO_NET_ADDR.to_vec()),
        up(vxlan_frame(
            Outer::from_server2(),
            &remote_udp(REMOTE2, POD_B, 1),
        )),
        up(vxlan_frame(
            Outer::from_server2(),
            &remote_udp(REMOTE2, REMOTE2B, 64),
        )),
        up(vxlan_frame(ecn_ce, &remote_udp(REMOTE2, POD_A, 64))),
        from_router(udp_frame(INTERNET, POD_A, 53, 5353, b"from outside", 1)),
        from_router(udp_frame(INTERNET, POD_B, 53, 5353, b"from outside", 64)),
        from_router(udp_frame(INTERNET, NODE_IP, 53, 5353, b"to the node", 64)),
    ]
}

/// Random bytes, truncations and bit flips of valid frames, and frames that only look
/// like IPv4, in random batch sizes on random ports (known and unknown, the uplink
/// included), through the overlay snapshot.
#[test]
fn random_frames_always_get_a_final_verdict() {
    let snap = overlay_snapshot();
    let valid = valid_frames();
    let mut rng = Rng(0x2545_f491);
    let mut mem = VecFrames::new(BATCH, 4096);
    let mut batch = Batch::default();
    let mut pipeline = Pipeline::new();
    let (mut tx, mut encapsulated, mut errors, mut decapped) = (0usize, 0usize, 0usize, 0usize);
    let mut drops = [0usize; DropReason::COUNT];
    for round in 0..600u64 {
        let n = 1 + rng.below(BATCH);
        let mut descs = Vec::with_capacity(n);
        let mut ports = Vec::with_capacity(n);
        for i in 0..n {
            let (mut port, mut f) = {
                let (p, v) = &valid[rng.below(valid.len())];
                (*p, v.clone())
            };
            match rng.below(5) {
                0 => f = (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
                1 => f.truncate(rng.below(f.len() + 1)),
                2 | 3 => {
                    for _ in 0..=rng.below(3) {
                        let at = rng.below(f.len());
                        f[at] ^= 1 << rng.below(8);
                    }
                }
                _ => {
                    // Ethernet + IPv4-looking header with random fields.
                    f = (0..14 + rng.below(120)).map(|_| rng.next() as u8).collect();
                    f[12] = 0x08;
                    f[13] = if rng.below(4) == 0 { 0x06 } else { 0x00 };
                    if f.len() > 14 {
                        f[14] = 0x40 | (rng.next() as u8 & 0x0f);
                    }
                }
            }
            if rng.below(4) == 0 {
                port = rng.below(6) as PortId;
            }
            f.truncate(4096 - HEADROOM);
            descs.push(mem.put(i, HEADROOM, &f));
            ports.push(port);
        }
        batch.load(0, &descs);
        // Time advances 1 ms every 20 batches: the ICMP error budget runs out at times.
        batch.now_ns = round / 20 * 1_000_000;
        for (m, p) in batch.meta[..n].iter_mut().zip(&ports) {
            m.in_port = *p;
        }
        pipeline.process(&snap, &mut batch, &mut mem);
        for (i, rx) in descs.iter().enumerate() {
            let m = batch.meta[i];
            assert_eq!(m.next, Next::Done);
            match m.verdict {
                Verdict::Pending => panic!("packet {i} left pending"),
                Verdict::Drop(r) => {
                    assert_ne!(r, DropReason::NoVerdict);
                    drops[r as usize] += 1;
                }
                Verdict::Tx(port) => {
                    tx += 1;
                    // Every transmitted frame leaves with its egress port's MAC as source
                    // and, if IPv4, a valid header checksum; it stays in its chunk and
                    // grows by at most the 50 bytes of VXLAN headers.
                    let cfg = snap.port(port).expect("tx only to known ports");
                    let d = batch.desc[i];
                    assert!(d.len <= rx.len + 50 && d.len >= 14);
                    assert_eq!(d.addr / 4096, rx.addr / 4096);
                    let out = mem.get(d);
                    let eth = EthernetFrame::new_checked(out).unwrap();
                    assert_eq!(eth.src_addr(), MacAddr(cfg.mac));
                    if eth.ethertype() != EtherType::IPV4 {
                        continue;
                    }
                    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
                    assert!(ip.verify_checksum());
                    if port != UPLINK && ports[i] == UPLINK {
                        decapped += 1;
                    }
                    let mut inner_ip = ip;
                    if port == UPLINK
                        && ip.src_addr() == NODE_IP
                        && ip.protocol() == IpProtocol::UDP
                        && UdpPacket::new_checked(ip.payload()).unwrap().dst_port() == 8472
                    {
                        // An encapsulation of ours: plain VXLAN around an IPv4 frame from
                        // our VtepMAC with a valid header.
                        encapsulated += 1;
                        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                        assert_eq!(udp.checksum(), 0);
                        let vx = VxlanHeader::new_checked(udp.payload()).unwrap();
                        assert!(vx.is_plain() && vx.vni() == 1);
                        let inner = EthernetFrame::new_checked(vx.payload()).unwrap();
                        assert_eq!(inner.src_addr(), UPLINK_MAC0);
                        let at = usize::from(ip.header_len()) + 8 + 8 + 14;
                        inner_ip = Ipv4Packet::new_checked(&eth.payload()[at..]).unwrap();
                        assert!(inner_ip.verify_checksum());
                    }
                    let own = [GW, NODE_IP].contains(&inner_ip.src_addr());
                    if own && inner_ip.protocol() == IpProtocol::ICMP {
                        let icmp = Icmpv4Packet::new_checked(inner_ip.payload()).unwrap();
                        assert!(icmp.verify_checksum());
                        if matches!(icmp.msg_type().0, 3 | 11) {
                            errors += 1;
                        }
                    }
                }
            }
        }
    }
    // The generator reaches the interesting paths, not just eth-truncated.
    assert!(tx > 1000, "only {tx} transmitted");
    assert!(encapsulated > 100, "only {encapsulated} encapsulated");
    assert!(errors > 100, "only {errors} ICMP errors");
    assert!(decapped > 100, "only {decapped} decapsulated to pods");
    for r in [
        DropReason::EthUnsupportedType,
        DropReason::ArpMalformed,
        DropReason::Ip4BadChecksum,
        DropReason::Ip4BadIhl,
        DropReason::Ip4BadLength,
        DropReason::PortDown,
        DropReason::VxlanBadFlags,
        DropReason::VxlanBadVni,
        DropReason::VxlanLoop,
        DropReason::Ip4LocalUnhandled,
        DropReason::IcmpErrorRateLimited,
    ] {
        assert!(drops[r as usize] > 0, "{} never hit", r.name());
    }
}
