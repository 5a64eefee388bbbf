//! Byte-fixture tests per stage, through `Pipeline::process`.

mod common;

use common::*;
use std::net::Ipv4Addr;
use xdplane_pipeline::*;
use xdplane_wire::*;

fn drop_of(v: Verdict) -> DropReason {
    match v {
        Verdict::Drop(r) => r,
        other => panic!("expected a drop, got {other:?}"),
    }
}

// ---- arp -------------------------------------------------------------------------------

/// Checks an ARP reply frame sent back to pod A on port A for `answered`.
fn assert_arp_reply(frame: &[u8], answered: Ipv4Addr) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.dst_addr(), MAC_A, "reply is unicast to the requester");
    assert_eq!(eth.src_addr(), PORT_A_MAC);
    assert_eq!(eth.ethertype(), EtherType::ARP);
    let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!(
        arp,
        ArpRepr {
            operation: ArpOp::REPLY,
            source_hardware_addr: PORT_A_MAC,
            source_protocol_addr: answered,
            target_hardware_addr: MAC_A,
            target_protocol_addr: POD_A,
        }
    );
}

#[test]
fn arp_for_gateway_is_answered_with_port_mac() {
    let snap = snapshot();
    let (v, f) = run1(&snap, PORT_A, arp_request(MAC_A, POD_A, GW));
    assert_eq!(v, Verdict::Tx(PORT_A));
    assert_eq!(f.len(), 42);
    assert_arp_reply(&f, GW);
}

#[test]
fn proxy_arp_for_another_pod() {
    let snap = snapshot();
    let (v, f) = run1(&snap, PORT_A, arp_request(MAC_A, POD_A, POD_B));
    assert_eq!(v, Verdict::Tx(PORT_A));
    assert_arp_reply(&f, POD_B);
    // Addresses of the CIDR without a pod are answered too (like proxy ARP on a routed
    // cni0); forwarding then drops with ip4-no-route.
    let (v, f) = run1(&snap, PORT_A, arp_request(MAC_A, POD_A, POD_NONE));
    assert_eq!(v, Verdict::Tx(PORT_A));
    assert_arp_reply(&f, POD_NONE);
}

#[test]
fn padded_arp_request_is_answered_in_place() {
    let snap = snapshot();
    let mut req = arp_request(MAC_A, POD_A, GW);
    req.resize(60, 0);
    let (v, f) = run1(&snap, PORT_A, req);
    assert_eq!(v, Verdict::Tx(PORT_A));
    assert_eq!(f.len(), 60);
    assert_arp_reply(&f[..42], GW);
}

#[test]
fn arp_not_answered() {
    let snap = snapshot();
    let cases = [
        // Outside the pod CIDR.
        (
            PORT_A,
            arp_request(MAC_A, POD_A, OUTSIDE),
            DropReason::ArpNotForUs,
        ),
        (
            PORT_A,
            arp_request(MAC_A, POD_A, Ipv4Addr::new(10, 244, 2, 1)),
            DropReason::ArpNotForUs,
        ),
        // Gratuitous ARP: target == sender.
        (
            PORT_A,
            arp_request(MAC_A, POD_A, POD_A),
            DropReason::ArpNotForUs,
        ),
        // RFC 5227 probe for the asker's own address.
        (
            PORT_A,
            arp_request(MAC_A, Ipv4Addr::UNSPECIFIED, POD_A),
            DropReason::ArpNotForUs,
        ),
        // Replies and other operations.
        (
            PORT_A,
            arp_frame(ArpOp::REPLY, MAC_A, POD_A, PORT_A_MAC, GW),
            DropReason::ArpReply,
        ),
        (
            PORT_A,
            arp_frame(ArpOp(3), MAC_A, POD_A, MAC_A, GW),
            DropReason::ArpReply,
        ),
        // Unknown ingress port.
        (
            PORT_UNKNOWN,
            arp_request(MAC_A, POD_A, GW),
            DropReason::PortDown,
        ),
    ];
    for (port, frame, reason) in cases {
        let (v, _) = run1(&snap, port, frame);
        assert_eq!(drop_of(v), reason);
    }
    // A probe for another pod's address is answered: that address is in use.
    let (v, f) = run1(
        &snap,
        PORT_A,
        arp_request(MAC_A, Ipv4Addr::UNSPECIFIED, POD_B),
    );
    assert_eq!(v, Verdict::Tx(PORT_A));
    let arp = ArpPacket::new_checked(&f[14..]).unwrap();
    assert_eq!(arp.target_protocol_addr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(arp.source_protocol_addr(), POD_B);
}

// ---- icmp-echo -------------------------------------------------------------------------

#[test]
fn ping_to_gateway_is_answered() {
    let snap = snapshot();
    let data: Vec<u8> = (0..56u8).collect();
    let req = echo_request(POD_A, GW, 0x1f87, 7, &data);
    let (v, f) = run1(&snap, PORT_A, req.clone());
    assert_eq!(v, Verdict::Tx(PORT_A));
    assert_eq!(f.len(), req.len());

    let eth = EthernetFrame::new_checked(&f[..]).unwrap();
    assert_eq!(eth.dst_addr(), MAC_A);
    assert_eq!(eth.src_addr(), PORT_A_MAC);
    assert_eq!(eth.ethertype(), EtherType::IPV4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    let r = Ipv4Repr::parse(&ip).unwrap();
    assert_eq!(
        (r.src_addr, r.dst_addr, r.ttl, r.protocol),
        (GW, POD_A, 64, IpProtocol::ICMP)
    );
    assert_eq!(r.payload_len, 64);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(
        Icmpv4Repr::parse(&icmp).unwrap(),
        Icmpv4Repr::EchoReply {
            ident: 0x1f87,
            seq_no: 7,
            data: &data
        }
    );
    // The incremental ICMP checksum equals a full recompute.
    let mut copy = ip.payload().to_vec();
    let mut c = Icmpv4Packet::new_checked(&mut copy[..]).unwrap();
    let incremental = c.checksum();
    c.fill_checksum();
    assert_eq!(c.checksum(), incremental);
}

#[test]
fn ping_variants_and_other_icmp() {
    let snap = snapshot();
    // Odd data length and an empty echo.
    for data in [&b"x"[..], &[][..], &[0xff; 1001][..]] {
        let (v, f) = run1(&snap, PORT_A, echo_request(POD_A, GW, 1, 2, data));
        assert_eq!(v, Verdict::Tx(PORT_A));
        let icmp = Icmpv4Packet::new_checked(&f[34..]).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.msg_type(), Icmpv4Message::ECHO_REPLY);
    }

    // Bad ICMP checksum.
    let mut f = echo_request(POD_A, GW, 1, 2, b"abcd");
    f[40] ^= 0x80;
    assert_eq!(drop_of(run1(&snap, PORT_A, f).0), DropReason::IcmpMalformed);

    // ICMP shorter than its 8-byte header (total length 24).
    let ip = ipv4_repr(POD_A, GW, IpProtocol::ICMP, 4, 64);
    let f = ipv4_frame(MAC_A, PORT_A_MAC, ip, &[8, 0, 0xf7, 0xff]);
    assert_eq!(drop_of(run1(&snap, PORT_A, f).0), DropReason::IcmpMalformed);

    // A valid ICMP message that is not an echo request (an echo reply, a timestamp).
    let reply = Icmpv4Repr::EchoReply {
        ident: 1,
        seq_no: 1,
        data: b"zz",
    };
    let mut l4 = vec![0u8; reply.buffer_len()];
    reply.emit(&mut l4).unwrap();
    let f = ipv4_frame(
        MAC_A,
        PORT_A_MAC,
        ipv4_repr(POD_A, GW, IpProtocol::ICMP, l4.len(), 64),
        &l4,
    );
    assert_eq!(drop_of(run1(&snap, PORT_A, f).0), DropReason::IcmpNotEcho);
    let mut l4 = [
        13u8, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let c = checksum::checksum(&l4);
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    let f = ipv4_frame(
        MAC_A,
        PORT_A_MAC,
        ipv4_repr(POD_A, GW, IpProtocol::ICMP, l4.len(), 64),
        &l4,
    );
    assert_eq!(drop_of(run1(&snap, PORT_A, f).0), DropReason::IcmpNotEcho);

    // Unknown ingress port.
    let f = echo_request(POD_A, GW, 1, 2, b"abcd");
    assert_eq!(
        drop_of(run1(&snap, PORT_UNKNOWN, f).0),
        DropReason::PortDown
    );
}

#[test]
fn gateway_other_protocols_and_fragments_are_local_unhandled() {
    let snap = snapshot();
    let f = udp_frame(POD_A, GW, 5353, 53, b"query", 64);
    assert_eq!(
        drop_of(run1(&snap, PORT_A, f).0),
        DropReason::Ip4LocalUnhandled
    );
    let f = tcp_frame(POD_A, GW, b"", 64);
    assert_eq!(
        drop_of(run1(&snap, PORT_A, f).0),
        DropReason::Ip4LocalUnhandled
    );
    // First fragment of an echo request: no reassembly.
    let mut f = echo_request(POD_A, GW, 1, 2, &[7; 64]);
    let mut ip = Ipv4Packet::new_checked(&mut f[14..]).unwrap();
    ip.set_more_frags(true);
    ip.set_dont_frag(false);
    ip.fill_checksum();
    assert_eq!(
        drop_of(run1(&snap, PORT_A, f).0),
        DropReason::Ip4LocalUnhandled
    );
}

// ---- ip4-forward -----------------------------------------------------------------------

/// Checks a frame forwarded from pod A to pod B: MACs, TTL − 1, a valid IPv4 checksum that
/// equals a full recompute, and everything else byte-identical.
fn assert_forwarded_to_b(orig: &[u8], out: &[u8]) {
    assert_eq!(out.len(), orig.len());
    let eth = EthernetFrame::new_checked(out).unwrap();
    assert_eq!(eth.src_addr(), PORT_B_MAC);
    assert_eq!(eth.dst_addr(), MAC_B);
    assert_eq!(eth.ethertype(), EtherType::IPV4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    let before = Ipv4Packet::new_checked(&orig[14..]).unwrap();
    assert_eq!(ip.ttl(), before.ttl() - 1);
    assert!(ip.verify_checksum());
    let mut copy = eth.payload()[..20].to_vec();
    let mut c = Ipv4Packet::new_unchecked(&mut copy[..]);
    c.fill_checksum();
    assert_eq!(
        c.checksum(),
        ip.checksum(),
        "incremental checksum == full recompute"
    );
    // Only TTL and checksum changed in the IP header; L4 untouched.
    for (i, (a, b)) in orig[14..].iter().zip(&out[14..]).enumerate() {
        if !matches!(i, 8 | 10 | 11) {
            assert_eq!(a, b, "IP byte {i} changed");
        }
    }
}

#[test]
fn pod_to_pod_udp_is_forwarded() {
    let snap = snapshot();
    let orig = udp_frame(POD_A, POD_B, 40000, 8080, b"hello pod b", 64);
    let (v, out) = run1(&snap, PORT_A, orig.clone());
    assert_eq!(v, Verdict::Tx(PORT_B));
    assert_forwarded_to_b(&orig, &out);
    let ip = Ipv4Packet::new_checked(&out[14..]).unwrap();
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(udp.verify_checksum(POD_A, POD_B));
    assert_eq!(udp.payload(), b"hello pod b");
}

#[test]
fn pod_to_pod_tcp_is_forwarded() {
    let snap = snapshot();
    for ttl in [2, 64, 255] {
        let orig = tcp_frame(POD_A, POD_B, b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", ttl);
        let (v, out) = run1(&snap, PORT_A, orig.clone());
        assert_eq!(v, Verdict::Tx(PORT_B));
        assert_forwarded_to_b(&orig, &out);
        let ip = Ipv4Packet::new_checked(&out[14..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(POD_A, POD_B));
        assert_eq!(tcp.flags(), TcpFlags::ACK | TcpFlags::PSH);
    }
}

#[test]
fn ethernet_padding_is_trimmed() {
    let snap = snapshot();
    // 14 + 20 + 8 + 2 = 44 bytes; veth/NICs pad to 60.
    let orig = udp_frame(POD_A, POD_B, 1, 2, b"hi", 64);
    let mut padded = orig.clone();
    padded.resize(60, 0);
    let (v, out) = run1(&snap, PORT_A, padded);
    assert_eq!(v, Verdict::Tx(PORT_B));
    assert_eq!(out.len(), 44);
    assert_forwarded_to_b(&orig, &out);
}

#[test]
fn forwarding_drops() {
    let snap = snapshot();
    let cases = [
        (
            udp_frame(POD_A, POD_GHOST, 1, 2, b"x", 64),
            DropReason::PortDown,
        ),
        // No route, and no ICMP error about a broadcast destination (RFC 1122 3.2.2).
        (
            udp_frame(POD_A, Ipv4Addr::BROADCAST, 1, 2, b"x", 64),
            DropReason::Ip4NoRoute,
        ),
        // The pod CIDR's directed broadcast: no pod, and no error either.
        (
            udp_frame(POD_A, Ipv4Addr::new(10, 244, 1, 255), 1, 2, b"x", 64),
            DropReason::Ip4HostUnreachable,
        ),
    ];
    for (frame, reason) in cases {
        assert_eq!(drop_of(run1(&snap, PORT_A, frame).0), reason);
    }
    // TTL 2 still goes out, with TTL 1.
    let (v, out) = run1(&snap, PORT_A, udp_frame(POD_A, POD_B, 1, 2, b"x", 2));
    assert_eq!(v, Verdict::Tx(PORT_B));
    assert_eq!(out[22], 1);
}

#[test]
fn forwarding_failures_are_answered_with_icmp_errors() {
    let snap = snapshot();
    let cases = [
        // In the pod CIDR, no pod: host unreachable.
        (udp_frame(POD_A, POD_NONE, 1, 2, b"x", 64), 3, 1),
        // No route at all: net unreachable.
        (udp_frame(POD_A, OUTSIDE, 1, 2, b"x", 64), 3, 0),
        // TTL would reach zero: time exceeded in transit.
        (udp_frame(POD_A, POD_B, 1, 2, b"x", 1), 11, 0),
        (udp_frame(POD_A, POD_B, 1, 2, b"x", 0), 11, 0),
        (tcp_frame(POD_A, POD_B, b"", 1), 11, 0),
    ];
    for (frame, msg_type, code) in cases {
        let (v, out) = run1(&snap, PORT_A, frame.clone());
        assert_eq!(v, Verdict::Tx(PORT_A));
        let eth = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!((eth.dst_addr(), eth.src_addr()), (MAC_A, PORT_A_MAC));
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (GW, POD_A));
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!((icmp.msg_type().0, icmp.msg_code()), (msg_type, code));
        // The offending header and 8 bytes of its payload, as received.
        assert_eq!(icmp.data(), &frame[14..14 + 28]);
    }
}

// ---- whole batches ---------------------------------------------------------------------

#[test]
fn mixed_batch_gets_per_packet_verdicts() {
    let snap = snapshot();
    let packets = vec![
        (PORT_A, arp_request(MAC_A, POD_A, GW)),
        (PORT_A, udp_frame(POD_A, POD_B, 1, 2, b"one", 64)),
        (PORT_A, echo_request(POD_A, GW, 9, 9, b"ping")),
        (PORT_A, udp_frame(POD_A, OUTSIDE, 1, 2, b"x", 64)),
        (PORT_B, arp_request(MAC_B, POD_B, POD_A)),
        (PORT_A, vec![0u8; 10]),
        (PORT_A, tcp_frame(POD_A, POD_B, b"two", 64)),
    ];
    let out = run(&snap, &packets);
    let verdicts: Vec<Verdict> = out.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        verdicts,
        vec![
            Verdict::Tx(PORT_A),
            Verdict::Tx(PORT_B),
            Verdict::Tx(PORT_A),
            // No route: ICMP net unreachable back to pod A.
            Verdict::Tx(PORT_A),
            Verdict::Tx(PORT_B),
            Verdict::Drop(DropReason::EthTruncated),
            Verdict::Tx(PORT_B),
        ]
    );
    // The ARP answer on port B carries port B's MAC.
    let arp = ArpPacket::new_checked(&out[4].1[14..]).unwrap();
    assert_eq!(arp.source_hardware_addr(), PORT_B_MAC);
    assert_eq!(arp.target_hardware_addr(), MAC_B);
}

#[test]
fn full_batch_and_oversized_len() {
    let snap = snapshot();
    let frame = udp_frame(POD_A, POD_B, 1, 2, b"x", 64);
    let mut mem = VecFrames::new(BATCH, 2048);
    let descs: Vec<Desc> = (0..BATCH).map(|i| mem.put(i, 0, &frame)).collect();
    let mut batch = Batch::default();
    batch.load(PORT_A, &descs);
    // A corrupt len larger than the arrays is clamped, not a panic.
    batch.len = BATCH + 36;
    Pipeline::new().process(&snap, &mut batch, &mut mem);
    assert!(batch.meta.iter().all(|m| m.verdict == Verdict::Tx(PORT_B)));
}

#[test]
fn packets_without_a_stage_get_no_verdict() {
    let snap = snapshot();
    let mut mem = VecFrames::new(2, 2048);
    let d = mem.put(0, 0, &udp_frame(POD_A, POD_B, 1, 2, b"x", 64));
    let mut batch = Batch::default();
    batch.load(PORT_A, &[d, d]);
    batch.meta[0].next = Next::Done;
    Pipeline::new().process(&snap, &mut batch, &mut mem);
    assert_eq!(batch.meta[0].verdict, Verdict::Drop(DropReason::NoVerdict));
    assert_eq!(batch.meta[1].verdict, Verdict::Tx(PORT_B));
}

#[test]
fn stage_names() {
    assert_eq!(
        Pipeline::STAGES,
        [
            "vxlan-decap",
            "eth-input",
            "arp",
            "ip4-input",
            "conntrack",
            "nat",
            "icmp-echo",
            "ip4-forward",
            "vxlan-encap",
            "icmp-error"
        ]
    );
    let order = [
        Next::VxlanDecap,
        Next::EthInput,
        Next::Arp,
        Next::Ip4Input,
        Next::Conntrack,
        Next::Nat,
        Next::IcmpEcho,
        Next::Ip4Forward,
        Next::VxlanEncap,
        Next::IcmpError,
    ];
    for (next, name) in order.iter().zip(Pipeline::STAGES) {
        assert_eq!(stage_name(*next), name);
    }
    // `Next` is ordered as the stages run.
    assert!(order.windows(2).all(|w| (w[0] as u8) < (w[1] as u8)));
    assert!((Next::IcmpError as u8) < (Next::Done as u8));
    assert_eq!(stage_name(Next::Done), "done");
}
