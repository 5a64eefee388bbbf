//! Services and NAT through `Pipeline::process`: DNAT to backends and the replies
//! un-NATed, masquerade, hairpin, NodePort, session affinity, rejects, ICMP error
//! translation, SCTP, flows surviving a new snapshot, and malformed input.
//!
//! The node is server1 of the overlay fixture (`common::overlay_snapshot`) with the
//! cluster network 10.244.0.0/16, masquerade on, and the Services of [`nat_snapshot`].
//! Checksums of every translated packet are checked against a recomputation from scratch
//! with `xdplane-wire`'s checksum helpers (SCTP: an independent bitwise CRC32c).

mod common;

use common::*;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use xdplane_pipeline::pipeline::PipelineConfig;
use xdplane_pipeline::tables::conntrack as ct;
use xdplane_pipeline::tables::conntrack::{FlowTable, FlowTableConfig};
use xdplane_pipeline::tables::services::{
    Backend, BackendSet, Frontend, FrontendKey, FrontendKind, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};
use xdplane_pipeline::*;
use xdplane_wire::*;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 53);
const VIP_EMPTY: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const VIP_AFFINITY: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
const VIP_SPREAD: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 31);
const VIP_HAIRPIN: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);
const VIP_SCTP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 50);
const NODE_PORT: u16 = 30080;
const SNAT: (u16, u16) = DEFAULT_SNAT_PORTS;
/// Ethernet (source, destination) of frames from pod A, from pod B, to pod A, and from the
/// router on the uplink.
const FROM_A: (MacAddr, MacAddr) = (MAC_A, PORT_A_MAC);
const FROM_B: (MacAddr, MacAddr) = (MAC_B, PORT_B_MAC);
const TO_A: (MacAddr, MacAddr) = (PORT_A_MAC, MAC_A);
const FROM_ROUTER: (MacAddr, MacAddr) = (ROUTER_MAC, UPLINK_MAC0);

/// Ten backends behind server3 (direct route: the translated packet leaves on the
/// uplink without encapsulation, its destination readable in place).
fn remote_backends() -> Vec<Backend> {
    (10..20)
        .map(|i| Backend {
            ip: Ipv4Addr::new(10, 244, 3, i),
            port: 8080,
            local: false,
        })
        .collect()
}

fn local_b(port: u16) -> Backend {
    Backend {
        ip: POD_B,
        port,
        local: true,
    }
}

fn frontend(name: &str, kind: FrontendKind, set: u32, service_port: u32) -> Frontend {
    Frontend {
        name: name.into(),
        kind,
        set,
        masquerade: false,
        drop_when_empty: false,
        affinity_timeout_s: 0,
        service_port,
    }
}

/// The Services: `VIP:80/tcp` → POD_B:8080; `VIP_DNS:53/udp` → POD_B:5353;
/// `VIP_EMPTY:80/tcp` and `:53/udp` without endpoints; `VIP_AFFINITY:80` (ClientIP
/// affinity) and `VIP_SPREAD:80` over the ten remote backends; `VIP_HAIRPIN:80` → POD_A
/// itself; NodePort `NODE_IP:30080/tcp` → POD_B:8080 with masquerade (eTP Cluster);
/// `VIP_SCTP:9000/sctp` → POD_B:9900.
fn services(backends: Vec<Backend>) -> Services {
    let mut s = Services::default();
    let web = s.add_set(BackendSet::new(vec![local_b(8080)]).unwrap());
    let dns = s.add_set(BackendSet::new(vec![local_b(5353)]).unwrap());
    let empty = s.add_set(BackendSet::new(Vec::new()).unwrap());
    let many = s.add_set(BackendSet::new(backends).unwrap());
    let hairpin = s.add_set(
        BackendSet::new(vec![Backend {
            ip: POD_A,
            port: 8080,
            local: true,
        }])
        .unwrap(),
    );
    let sctp = s.add_set(BackendSet::new(vec![local_b(9900)]).unwrap());
    use FrontendKind::*;
    // (ip, port, proto, name, kind, set, service port), added in this order.
    #[rustfmt::skip]
    let table = [
        (VIP, 80, PROTO_TCP, "default/web:http", ClusterIp, web, 0),
        (VIP_DNS, 53, PROTO_UDP, "kube-system/dns:dns", ClusterIp, dns, 1),
        (VIP_EMPTY, 80, PROTO_TCP, "default/empty:http", ClusterIp, empty, 2),
        (VIP_EMPTY, 53, PROTO_UDP, "default/empty:dns", ClusterIp, empty, 3),
        (VIP_AFFINITY, 80, PROTO_TCP, "default/sticky:http", ClusterIp, many, 4),
        (VIP_SPREAD, 80, PROTO_TCP, "default/spread:http", ClusterIp, many, 5),
        (VIP_HAIRPIN, 80, PROTO_TCP, "default/self:http", ClusterIp, hairpin, 6),
        (NODE_IP, NODE_PORT, PROTO_TCP, "default/web:http", NodePort, web, 0),
        (VIP_SCTP, 9000, PROTO_SCTP, "default/sctp:s", ClusterIp, sctp, 7),
    ];
    for (ip, port, proto, name, kind, set, service_port) in table {
        let mut f = frontend(name, kind, set, service_port);
        // ClientIP affinity on VIP_AFFINITY; the NodePort masquerades (eTP Cluster).
        if ip == VIP_AFFINITY {
            f.affinity_timeout_s = 10800;
        }
        f.masquerade = kind == NodePort;
        s.add_frontend(FrontendKey { ip, port, proto }, f).unwrap();
    }
    s
}

fn nat_snapshot() -> Snapshot {
    let mut s = overlay_snapshot();
    s.node.cluster_net = Ipv4Addr::new(10, 244, 0, 0);
    s.node.cluster_prefix = 16;
    s.node.masquerade = true;
    s.node.snat_ports = SNAT;
    s.services = services(remote_backends());
    s
}

/// One packet through `p` at time `now`.
fn one(p: &mut Pipeline, snap: &Snapshot, port: PortId, frame: Vec<u8>) -> (Verdict, Vec<u8>) {
    run_with(p, snap, &[(port, frame)], 1_000_000_000, HEADROOM).remove(0)
}

/// One direction of a TCP connection: Ethernet `macs`, `src → dst` (address, port).
#[derive(Clone, Copy)]
struct Way {
    macs: (MacAddr, MacAddr),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
}

fn way(macs: (MacAddr, MacAddr), src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Way {
    Way { macs, src, dst }
}

impl Way {
    /// A segment of this direction (MSS option, window 64240, TTL 64).
    fn seg(self, flags: TcpFlags, (seq, ack): (u32, u32), payload: &[u8]) -> Vec<u8> {
        let ((src, src_port), (dst, dst_port)) = (self.src, self.dst);
        let tcp = TcpRepr {
            src_port,
            dst_port,
            seq_number: seq,
            ack_number: ack,
            flags,
            window_len: 64240,
            urgent_at: 0,
            options: &[0x02, 0x04, 0x05, 0xb4],
            payload,
        };
        let mut l4 = vec![0u8; tcp.buffer_len()];
        tcp.emit(&mut l4, src, dst).unwrap();
        let ip = ipv4_repr(src, dst, IpProtocol::TCP, l4.len(), 64);
        ipv4_frame(self.macs.0, self.macs.1, ip, &l4)
    }
}

fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    way(FROM_A, (src, sport), (dst, dport)).seg(TcpFlags::SYN, (1000, 0), b"")
}

fn udp_from(
    macs: (MacAddr, MacAddr),
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    with_macs(udp_frame(src, dst, sport, dport, payload, 64), macs)
}

/// A datagram from pod A (out of its port).
fn pod_a_udp(sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    udp_from(FROM_A, POD_A, sport, dst, dport, payload)
}

/// `f` with the Ethernet (source, destination) `macs`.
fn with_macs(mut f: Vec<u8>, macs: (MacAddr, MacAddr)) -> Vec<u8> {
    f[6..12].copy_from_slice(&macs.0.0);
    f[0..6].copy_from_slice(&macs.1.0);
    f
}

fn echo(
    macs: (MacAddr, MacAddr),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    request: bool,
    ident: u16,
) -> Vec<u8> {
    let data = b"0123456789abcdef";
    let icmp = if request {
        Icmpv4Repr::EchoRequest {
            ident,
            seq_no: 7,
            data,
        }
    } else {
        Icmpv4Repr::EchoReply {
            ident,
            seq_no: 7,
            data,
        }
    };
    let mut l4 = vec![0u8; icmp.buffer_len()];
    icmp.emit(&mut l4).unwrap();
    ipv4_frame(
        macs.0,
        macs.1,
        ipv4_repr(src, dst, IpProtocol::ICMP, l4.len(), 64),
        &l4,
    )
}

/// The IPv4 packet of a frame.
fn ip(frame: &[u8]) -> Ipv4Packet<&[u8]> {
    Ipv4Packet::new_checked(&frame[14..]).unwrap()
}

/// The Ethernet destination of a frame.
fn dst_mac(frame: &[u8]) -> MacAddr {
    EthernetFrame::new_checked(frame).unwrap().dst_addr()
}

/// (source, destination) of a frame's IPv4 header.
fn addrs(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    (ip(frame).src_addr(), ip(frame).dst_addr())
}

/// (source, destination) ports of a frame's TCP header.
fn tcp_ports(frame: &[u8]) -> (u16, u16) {
    (tcp(frame).src_port(), tcp(frame).dst_port())
}

/// The ICMP message of a frame (IPv4 header without options).
fn icmp_of(frame: &[u8]) -> Icmpv4Packet<&[u8]> {
    let total = usize::from(ip(frame).total_len());
    Icmpv4Packet::new_checked(&frame[14 + 20..14 + total]).unwrap()
}

fn tcp(frame: &[u8]) -> TcpPacket<&[u8]> {
    TcpPacket::new_checked(&frame[14 + 20..]).unwrap()
}

fn udp(frame: &[u8]) -> UdpPacket<&[u8]> {
    UdpPacket::new_checked(&frame[14 + 20..]).unwrap()
}

/// A bit-at-a-time CRC32c (Castagnoli, reflected 0x82F63B78), independent of the
/// pipeline's table-driven one.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Every checksum of an IPv4 frame equals a recomputation from scratch: the header
/// checksum, TCP/UDP over the pseudo-header (a UDP 0 stays allowed), ICMP over the
/// message, SCTP's CRC32c.
fn assert_checksums(frame: &[u8]) {
    let ipp = ip(frame);
    let hl = usize::from(ipp.header_len());
    let mut hdr = frame[14..14 + hl].to_vec();
    hdr[10] = 0;
    hdr[11] = 0;
    assert_eq!(
        ipp.checksum(),
        checksum::checksum(&hdr),
        "IPv4 header checksum"
    );
    let l4 = ipp.payload();
    let (src, dst, proto) = (ipp.src_addr(), ipp.dst_addr(), ipp.protocol().0);
    let recompute = |at: usize| {
        let mut b = l4.to_vec();
        b[at] = 0;
        b[at + 1] = 0;
        let ph = checksum::pseudo_header(src, dst, proto, b.len() as u16);
        !checksum::add(ph, checksum::sum(&b))
    };
    match proto {
        6 => assert_eq!(u16::from_be_bytes([l4[16], l4[17]]), recompute(16), "TCP"),
        17 => {
            let c = u16::from_be_bytes([l4[6], l4[7]]);
            if c != 0 {
                let r = recompute(6);
                assert_eq!(c, if r == 0 { 0xffff } else { r }, "UDP");
            }
        }
        1 => {
            let mut b = l4.to_vec();
            b[2] = 0;
            b[3] = 0;
            assert_eq!(
                u16::from_be_bytes([l4[2], l4[3]]),
                checksum::checksum(&b),
                "ICMP"
            );
        }
        132 => {
            let mut b = l4.to_vec();
            b[8..12].fill(0);
            let want = crc32c_bitwise(&b);
            assert_eq!(
                u32::from_le_bytes([l4[8], l4[9], l4[10], l4[11]]),
                want,
                "SCTP"
            );
        }
        _ => {}
    }
}

fn tx_port(v: Verdict) -> PortId {
    match v {
        Verdict::Tx(p) => p,
        other => panic!("expected a transmit, got {other:?}"),
    }
}

fn in_snat(port: u16) -> bool {
    (SNAT.0..=SNAT.1).contains(&port)
}

#[test]
fn clusterip_tcp_is_dnated_and_the_reply_restored() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let (v, out) = one(&mut p, &snap, PORT_A, syn(POD_A, 43210, VIP, 80));
    assert_eq!(tx_port(v), PORT_B);
    assert_eq!(dst_mac(&out), MAC_B);
    assert_eq!(addrs(&out), (POD_A, POD_B));
    assert_eq!(ip(&out).ttl(), 63);
    assert_eq!(tcp_ports(&out), (43210, 8080));
    assert!(tcp(&out).verify_checksum(POD_A, POD_B));
    assert_checksums(&out);

    // The backend's SYN-ACK comes back from the frontend.
    let synack = way(FROM_B, (POD_B, 8080), (POD_A, 43210)).seg(
        TcpFlags::SYN | TcpFlags::ACK,
        (5000, 1001),
        b"",
    );
    let back = expect_tcp(
        &mut p,
        &snap,
        PORT_B,
        synack,
        PORT_A,
        (VIP, POD_A),
        (80, 43210),
    );
    assert_eq!(
        (tcp(&back).seq_number(), tcp(&back).ack_number()),
        (5000, 1001)
    );

    // Later packets of the flow, with data, both ways.
    let data = way(FROM_A, (POD_A, 43210), (VIP, 80)).seg(
        TcpFlags::ACK | TcpFlags::PSH,
        (1001, 5001),
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let (v, out) = one(&mut p, &snap, PORT_A, data);
    assert_eq!(tx_port(v), PORT_B);
    assert_eq!(ip(&out).dst_addr(), POD_B);
    assert_eq!(tcp(&out).payload(), b"GET / HTTP/1.1\r\n\r\n");
    assert_checksums(&out);
    assert!(p.flows().lookup(&flow(6, POD_A, VIP, 43210, 80)).is_some());
}

fn flow(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> ct::Tuple {
    ct::Tuple {
        proto,
        src,
        dst,
        sport,
        dport,
    }
}

/// `f` with its UDP checksum 0 (none).
fn without_udp_checksum(mut f: Vec<u8>) -> Vec<u8> {
    f[14 + 20 + 6..14 + 20 + 8].fill(0);
    f
}

#[test]
fn udp_checksum_zero_stays_zero() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let f = without_udp_checksum(pod_a_udp(5000, VIP_DNS, 53, b"query"));
    let (v, out) = one(&mut p, &snap, PORT_A, f);
    assert_eq!(tx_port(v), PORT_B);
    assert_eq!((ip(&out).dst_addr(), udp(&out).dst_port()), (POD_B, 5353));
    assert_eq!(udp(&out).checksum(), 0);
    assert_checksums(&out);
    // The reply without a checksum, too.
    let r = without_udp_checksum(udp_from(FROM_B, POD_B, 5353, POD_A, 5000, b"answer"));
    let (v, back) = one(&mut p, &snap, PORT_B, r);
    assert_eq!(tx_port(v), PORT_A);
    assert_eq!((ip(&back).src_addr(), udp(&back).src_port()), (VIP_DNS, 53));
    assert_eq!(udp(&back).checksum(), 0);
    // With a checksum: updated, never 0.
    let f = pod_a_udp(5001, VIP_DNS, 53, b"query");
    let (_, out) = one(&mut p, &snap, PORT_A, f);
    assert_ne!(udp(&out).checksum(), 0);
    assert!(udp(&out).verify_checksum(POD_A, POD_B));
    assert_checksums(&out);
}

fn from_router(f: Vec<u8>) -> Vec<u8> {
    with_macs(f, FROM_ROUTER)
}

#[test]
fn icmp_echo_is_masqueraded_and_the_reply_restored() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let (v, out) = one(
        &mut p,
        &snap,
        PORT_A,
        echo(FROM_A, POD_A, INTERNET, true, 0x1234),
    );
    assert_eq!(tx_port(v), UPLINK);
    assert_eq!(addrs(&out), (NODE_IP, INTERNET));
    let icmp = icmp_of(&out);
    let id = icmp.echo_ident();
    assert!(in_snat(id), "identifier {id} not from the SNAT range");
    assert_eq!(icmp.echo_seq_no(), 7);
    assert!(icmp.verify_checksum());
    assert_checksums(&out);
    assert_eq!(dst_mac(&out), ROUTER_MAC);

    let reply = from_router(echo(FROM_ROUTER, INTERNET, NODE_IP, false, id));
    let (v, back) = one(&mut p, &snap, UPLINK, reply);
    assert_eq!(tx_port(v), PORT_A);
    assert_eq!(addrs(&back), (INTERNET, POD_A));
    let icmp = icmp_of(&back);
    assert_eq!(icmp.echo_ident(), 0x1234);
    assert_eq!(icmp.msg_type(), Icmpv4Message::ECHO_REPLY);
    assert_checksums(&back);

    // An echo reply to the node IP with an unknown identifier is the kernel's.
    let stray = from_router(echo(
        FROM_ROUTER,
        INTERNET,
        NODE_IP,
        false,
        id.wrapping_add(1),
    ));
    assert_eq!(
        one(&mut p, &snap, UPLINK, stray).0,
        Verdict::Drop(DropReason::Ip4LocalUnhandled)
    );
}

#[test]
fn pod_traffic_to_the_outside_is_masqueraded_to_the_node_ip() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    masqueraded_round_trip(&mut p, &snap, 40000, (INTERNET, 443), (INTERNET, 443), 77);

    // Not masqueraded: to pods of other nodes (direct and VXLAN), to the pod's own node.
    for (dst, out_port) in [(REMOTE3, UPLINK), (POD_B, PORT_B)] {
        let (v, out) = one(&mut p, &snap, PORT_A, pod_a_udp(1, dst, 2, b"x"));
        assert_eq!(tx_port(v), out_port);
        assert_eq!(ip(&out).src_addr(), POD_A);
    }
    // Masquerade off: the pod's address leaves as it is.
    let mut off = nat_snapshot();
    off.node.masquerade = false;
    let (v, out) = one(
        &mut Pipeline::new(),
        &off,
        PORT_A,
        syn(POD_A, 40000, INTERNET, 443),
    );
    assert_eq!(tx_port(v), UPLINK);
    assert_eq!(ip(&out).src_addr(), POD_A);
}

#[test]
fn hairpin_is_source_natted_to_the_gateway() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let port = expect_snat(
        &mut p,
        &snap,
        PORT_A,
        syn(POD_A, 43210, VIP_HAIRPIN, 80),
        PORT_A,
        (GW, POD_A),
        8080,
    );

    let synack =
        way(FROM_A, (POD_A, 8080), (GW, port)).seg(TcpFlags::SYN | TcpFlags::ACK, (9, 1001), b"");
    expect_tcp(
        &mut p,
        &snap,
        PORT_A,
        synack,
        PORT_A,
        (VIP_HAIRPIN, POD_A),
        (80, 43210),
    );
}

#[test]
fn nodeport_with_masquerade() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let client = from_router(
        way(FROM_ROUTER, (INTERNET, 5555), (NODE_IP, NODE_PORT)).seg(TcpFlags::SYN, (1, 0), b""),
    );
    // The backend is a pod: the source becomes the pod gateway.
    let port = expect_snat(&mut p, &snap, UPLINK, client, PORT_B, (GW, POD_B), 8080);

    let synack =
        way(FROM_B, (POD_B, 8080), (GW, port)).seg(TcpFlags::SYN | TcpFlags::ACK, (3, 2), b"");
    let back = expect_tcp(
        &mut p,
        &snap,
        PORT_B,
        synack,
        UPLINK,
        (NODE_IP, INTERNET),
        (NODE_PORT, 5555),
    );
    assert_eq!(dst_mac(&back), ROUTER_MAC);
}

/// Sends `frame` in on `in_port`: it must leave on `out_port` as `addrs`, from a SNAT port
/// to `dport`, with valid checksums. Returns the SNAT port.
fn expect_snat(
    p: &mut Pipeline,
    snap: &Snapshot,
    in_port: PortId,
    frame: Vec<u8>,
    out_port: PortId,
    want: (Ipv4Addr, Ipv4Addr),
    dport: u16,
) -> u16 {
    let (v, out) = one(p, snap, in_port, frame);
    assert_eq!(tx_port(v), out_port);
    assert_eq!(addrs(&out), want);
    let port = tcp(&out).src_port();
    assert!(in_snat(port));
    assert_eq!(tcp(&out).dst_port(), dport);
    assert_checksums(&out);
    port
}

/// Sends `frame` in on `in_port`: it must leave on `out_port` as `addrs` and TCP `ports`,
/// with valid checksums. Returns it.
fn expect_tcp(
    p: &mut Pipeline,
    snap: &Snapshot,
    in_port: PortId,
    frame: Vec<u8>,
    out_port: PortId,
    want: (Ipv4Addr, Ipv4Addr),
    ports: (u16, u16),
) -> Vec<u8> {
    let (v, out) = one(p, snap, in_port, frame);
    assert_eq!(tx_port(v), out_port);
    assert_eq!(addrs(&out), want);
    assert_eq!(tcp_ports(&out), ports);
    assert_checksums(&out);
    out
}

/// Pod A's SYN from `sport` to `dst` leaves the uplink masqueraded to the node IP, sent
/// to `server`; the server's SYN-ACK (sequence number `seq`) reaches the pod from `dst`.
fn masqueraded_round_trip(
    p: &mut Pipeline,
    snap: &Snapshot,
    sport: u16,
    dst: (Ipv4Addr, u16),
    server: (Ipv4Addr, u16),
    seq: u32,
) {
    let out = syn(POD_A, sport, dst.0, dst.1);
    let port = expect_snat(p, snap, PORT_A, out, UPLINK, (NODE_IP, server.0), server.1);
    let synack = way(FROM_ROUTER, server, (NODE_IP, port)).seg(
        TcpFlags::SYN | TcpFlags::ACK,
        (seq, 1001),
        b"",
    );
    let back = (dst.0, POD_A);
    expect_tcp(
        p,
        snap,
        UPLINK,
        from_router(synack),
        PORT_A,
        back,
        (dst.1, sport),
    );
}

/// The backend a SYN to `vip` from `client:sport` was sent to.
fn backend_of(
    p: &mut Pipeline,
    snap: &Snapshot,
    client: Ipv4Addr,
    sport: u16,
    vip: Ipv4Addr,
) -> Ipv4Addr {
    let (v, out) = one(p, snap, PORT_A, syn(client, sport, vip, 80));
    assert_eq!(tx_port(v), UPLINK);
    assert_eq!(ip(&out).src_addr(), client);
    assert_checksums(&out);
    ip(&out).dst_addr()
}

#[test]
fn session_affinity_keeps_a_client_on_its_backend() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let first = backend_of(&mut p, &snap, POD_A, 30000, VIP_AFFINITY);
    for sport in 30001..30030 {
        assert_eq!(backend_of(&mut p, &snap, POD_A, sport, VIP_AFFINITY), first);
    }
    // Other clients spread over the backends.
    let mut seen = HashSet::new();
    for i in 0..60u8 {
        let client = Ipv4Addr::new(10, 244, 1, 100 + i);
        let b = backend_of(&mut p, &snap, client, 40000, VIP_AFFINITY);
        // …and each stays with its own.
        assert_eq!(backend_of(&mut p, &snap, client, 40001, VIP_AFFINITY), b);
        seen.insert(b);
    }
    assert!(seen.len() >= 6, "60 clients on {} backends", seen.len());
    // Without affinity the same client's flows spread.
    let spread: HashSet<_> = (30000..30040)
        .map(|sport| backend_of(&mut p, &snap, POD_A, sport, VIP_SPREAD))
        .collect();
    assert!(spread.len() >= 4, "40 flows on {} backends", spread.len());

    // The remembered backend leaves the set: the client gets another one, and keeps it.
    let mut gone = nat_snapshot();
    let rest: Vec<Backend> = remote_backends()
        .into_iter()
        .filter(|b| b.ip != first)
        .collect();
    gone.services = services(rest);
    let next = backend_of(&mut p, &gone, POD_A, 31000, VIP_AFFINITY);
    assert_ne!(next, first);
    assert_eq!(backend_of(&mut p, &gone, POD_A, 31001, VIP_AFFINITY), next);
}

#[test]
fn established_flows_keep_their_backend_across_snapshots() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let b = backend_of(&mut p, &snap, POD_A, 33333, VIP_SPREAD);
    // New generation: that backend is gone from the set.
    let mut next = nat_snapshot();
    next.generation = 2;
    next.services = services(
        remote_backends()
            .into_iter()
            .filter(|x| x.ip != b)
            .collect(),
    );
    let ack = way(FROM_A, (POD_A, 33333), (VIP_SPREAD, 80)).seg(TcpFlags::ACK, (1001, 1), b"more");
    let (v, out) = one(&mut p, &next, PORT_A, ack);
    assert_eq!(tx_port(v), UPLINK);
    assert_eq!(ip(&out).dst_addr(), b);
    assert_checksums(&out);
    // A new flow only gets the remaining backends.
    for sport in 20000..20050 {
        assert_ne!(backend_of(&mut p, &next, POD_A, sport, VIP_SPREAD), b);
    }
    // Another worker sharing the table finds the flow too.
    let mut other = Pipeline::with_flows(
        PipelineConfig {
            worker: 1,
            workers: 2,
            ..PipelineConfig::default()
        },
        Arc::clone(p.flows()),
    );
    let ack = way(FROM_A, (POD_A, 33333), (VIP_SPREAD, 80)).seg(TcpFlags::ACK, (1005, 1), b"");
    let (_, out) = one(&mut other, &next, PORT_A, ack);
    assert_eq!(ip(&out).dst_addr(), b);
}

#[test]
fn local_policy_without_local_endpoints_drops_silently() {
    let mut snap = nat_snapshot();
    let (key, mut fe) = {
        let (k, f) = snap
            .services
            .sorted()
            .into_iter()
            .find(|(k, _)| k.ip == VIP_EMPTY && k.proto == PROTO_TCP)
            .unwrap();
        (k, f.clone())
    };
    fe.drop_when_empty = true;
    let mut services = Services::default();
    let empty = services.add_set(BackendSet::new(Vec::new()).unwrap());
    services
        .add_frontend(key, Frontend { set: empty, ..fe })
        .unwrap();
    snap.services = services;
    let mut p = Pipeline::new();
    let (v, _) = one(&mut p, &snap, PORT_A, syn(POD_A, 43210, VIP_EMPTY, 80));
    assert_eq!(v, Verdict::Drop(DropReason::ServiceNoLocalEndpoints));
    assert_eq!(p.service_rejects(), 0);
}

#[test]
fn services_without_endpoints_reject() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    // A SYN: RST|ACK, seq 0, ack = seq + 1.
    let (v, rst) = one(&mut p, &snap, PORT_A, syn(POD_A, 43210, VIP_EMPTY, 80));
    assert_eq!(tx_port(v), PORT_A);
    let eth = EthernetFrame::new_checked(&rst[..]).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), TO_A);
    assert_eq!(rst.len(), 14 + 40);
    let r = ip(&rst);
    assert_eq!((r.src_addr(), r.dst_addr()), (VIP_EMPTY, POD_A));
    assert_eq!(
        (r.ttl(), r.dont_frag(), r.ident(), r.dscp()),
        (64, true, 0, 0)
    );
    assert_eq!(r.protocol(), IpProtocol::TCP);
    assert_eq!(r.total_len(), 40);
    let t = tcp(&rst);
    assert_eq!((t.src_port(), t.dst_port()), (80, 43210));
    assert_eq!((t.seq_number(), t.ack_number()), (0, 1001));
    assert_eq!(t.flags(), TcpFlags::RST | TcpFlags::ACK);
    assert_eq!((t.window_len(), t.header_len()), (0, 20));
    assert_checksums(&rst);
    // Data with ACK: RST with seq = its ack, no ACK flag.
    let data = way(FROM_A, (POD_A, 43211), (VIP_EMPTY, 80)).seg(
        TcpFlags::ACK | TcpFlags::PSH,
        (5000, 0xdead_beef),
        b"hello",
    );
    let (_, rst) = one(&mut p, &snap, PORT_A, data);
    let t = tcp(&rst);
    assert_eq!((t.seq_number(), t.ack_number()), (0xdead_beef, 0));
    assert_eq!(t.flags(), TcpFlags::RST);
    assert_checksums(&rst);
    // FIN without ACK, with payload: ack = seq + 3 + FIN.
    let fin =
        way(FROM_A, (POD_A, 43212), (VIP_EMPTY, 80)).seg(TcpFlags::FIN, (u32::MAX, 0), b"abc");
    let (_, rst) = one(&mut p, &snap, PORT_A, fin);
    assert_eq!(tcp(&rst).ack_number(), 3);
    assert_eq!(p.service_rejects(), 3);
    // A RST is not answered.
    let reset = way(FROM_A, (POD_A, 43213), (VIP_EMPTY, 80)).seg(TcpFlags::RST, (1, 0), b"");
    assert_eq!(
        one(&mut p, &snap, PORT_A, reset).0,
        Verdict::Drop(DropReason::ServiceNoEndpoints)
    );
    assert_eq!(p.service_rejects(), 3);

    // UDP: ICMP port unreachable from the gateway, quoting the datagram.
    let q = pod_a_udp(5000, VIP_EMPTY, 53, b"query");
    let (v, err) = one(&mut p, &snap, PORT_A, q.clone());
    assert_eq!(tx_port(v), PORT_A);
    let e = ip(&err);
    assert_eq!((e.src_addr(), e.dst_addr()), (GW, POD_A));
    let icmp = Icmpv4Packet::new_checked(e.payload()).unwrap();
    assert_eq!((icmp.msg_type().0, icmp.msg_code()), (3, 3));
    assert_eq!(icmp.data(), &q[14..14 + 28]);
    assert_checksums(&err);
    // Without a budget for ICMP errors: counted as service-no-endpoints.
    let mut quiet = Pipeline::with_config(PipelineConfig {
        icmp_errors_burst: 0,
        ..PipelineConfig::default()
    });
    assert_eq!(
        one(&mut quiet, &snap, PORT_A, q).0,
        Verdict::Drop(DropReason::IcmpErrorRateLimited)
    );
    // An ICMP error about a broadcast source is not sent: service-no-endpoints.
    let mut bcast = pod_a_udp(5000, VIP_EMPTY, 53, b"query");
    bcast[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    assert_eq!(
        one(&mut p, &snap, PORT_A, bcast).0,
        Verdict::Drop(DropReason::ServiceNoEndpoints)
    );
}

/// An ICMP error frame: Ethernet `macs`, IPv4 `src → dst` (TTL 64, DF off), ICMP
/// `typ/code` quoting `quote` (an IPv4 header and the start of its payload).
fn icmp_error_frame(
    macs: (MacAddr, MacAddr),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    typ: u8,
    code: u8,
    quote: &[u8],
) -> Vec<u8> {
    let mut l4 = vec![0u8; 8 + quote.len()];
    l4[0] = typ;
    l4[1] = code;
    l4[8..].copy_from_slice(quote);
    let c = checksum::checksum(&l4);
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    let mut r = ipv4_repr(src, dst, IpProtocol::ICMP, l4.len(), 64);
    r.dont_frag = false;
    ipv4_frame(macs.0, macs.1, r, &l4)
}

/// The first `20 + n` bytes of a frame's IPv4 packet, with the header's TTL set to `ttl`
/// (checksum refreshed): what a router quotes.
fn quote_of(frame: &[u8], n: usize, ttl: u8) -> Vec<u8> {
    let mut q = frame[14..14 + 20 + n].to_vec();
    q[8] = ttl;
    q[10] = 0;
    q[11] = 0;
    let c = checksum::checksum(&q[..20]);
    q[10..12].copy_from_slice(&c.to_be_bytes());
    q
}

/// Refreshes the IPv4 header checksum of a frame (a 20-byte header).
fn refresh_ip_checksum(f: &mut [u8]) {
    f[24] = 0;
    f[25] = 0;
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Sets the IPv4 TTL of a frame, header checksum refreshed.
fn set_ttl(f: &mut [u8], ttl: u8) {
    f[14 + 8] = ttl;
    refresh_ip_checksum(f);
}

/// A router's ICMP error (`typ/code`, from `src` to the node IP) quoting `quote`, as it
/// arrives on the uplink.
fn router_error(src: Ipv4Addr, typ: u8, code: u8, quote: &[u8]) -> Vec<u8> {
    from_router(icmp_error_frame(
        FROM_ROUTER,
        src,
        NODE_IP,
        typ,
        code,
        quote,
    ))
}

/// A router reports `typ/code` about `sent` (what the masquerade sent, seen with TTL
/// `ttl`): the pod gets it byte for byte as from the router (kept) to the pod, quoting its
/// own `original` packet with that TTL, forwarded once. Returns the frame.
#[allow(clippy::too_many_arguments)]
fn assert_router_error_reaches_pod(
    p: &mut Pipeline,
    snap: &Snapshot,
    sent: &[u8],
    original: &[u8],
    typ: u8,
    code: u8,
    ttl: u8,
) -> Vec<u8> {
    let err = router_error(ROUTER, typ, code, &quote_of(sent, 8, ttl));
    let (v, got) = one(p, snap, UPLINK, err);
    assert_eq!(tx_port(v), PORT_A);
    let mut want = icmp_error_frame(TO_A, ROUTER, POD_A, typ, code, &quote_of(original, 8, ttl));
    set_ttl(&mut want, 63);
    assert_eq!(got, want);
    assert_checksums(&got);
    got
}

#[test]
fn icmp_errors_about_dnat_flows_are_translated() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let client_syn = syn(POD_A, 43210, VIP, 80);
    let (_, sent) = one(&mut p, &snap, PORT_A, client_syn.clone());

    // (a) The backend answers the translated SYN (POD_A → POD_B:8080) with port
    // unreachable. The client must see it from the frontend, about its own SYN to the
    // frontend.
    let err = icmp_error_frame(FROM_B, POD_B, POD_A, 3, 3, &quote_of(&sent, 8, 63));
    let (v, got) = one(&mut p, &snap, PORT_B, err);
    assert_eq!(tx_port(v), PORT_A);
    let mut want = icmp_error_frame(TO_A, VIP, POD_A, 3, 3, &quote_of(&client_syn, 8, 63));
    // Byte for byte but the TTL (decremented by forwarding) and so the header checksum.
    set_ttl(&mut want, 63);
    assert_eq!(got, want);
    assert_checksums(&got);

    // The backend's reply reached the client as VIP:80 → POD_A:43210; the client answers
    // it with port unreachable: the backend must see it about its own reply.
    let synack = way(FROM_B, (POD_B, 8080), (POD_A, 43210)).seg(
        TcpFlags::SYN | TcpFlags::ACK,
        (5000, 1001),
        b"",
    );
    let (_, reply_sent) = one(&mut p, &snap, PORT_B, synack.clone());
    let err = icmp_error_frame(FROM_A, POD_A, VIP, 3, 3, &quote_of(&reply_sent, 8, 63));
    let (v, got) = one(&mut p, &snap, PORT_A, err);
    assert_eq!(tx_port(v), PORT_B);
    let e = ip(&got);
    assert_eq!((e.src_addr(), e.dst_addr()), (POD_A, POD_B));
    let icmp = Icmpv4Packet::new_checked(e.payload()).unwrap();
    assert_eq!(icmp.data(), &quote_of(&synack, 8, 63)[..]);
    assert_checksums(&got);

    // A full quote (the whole segment): the quoted TCP checksum is translated too.
    let err = icmp_error_frame(FROM_B, POD_B, POD_A, 3, 3, &sent[14..]);
    let (_, got) = one(&mut p, &snap, PORT_B, err);
    let icmp = icmp_of(&got);
    let quoted = Ipv4Packet::new_checked(icmp.data()).unwrap();
    assert_eq!((quoted.src_addr(), quoted.dst_addr()), (POD_A, VIP));
    assert!(quoted.verify_checksum());
    let qt = TcpPacket::new_checked(quoted.payload()).unwrap();
    assert_eq!((qt.src_port(), qt.dst_port()), (43210, 80));
    assert!(qt.verify_checksum(POD_A, VIP));
}

#[test]
fn icmp_errors_about_masqueraded_flows_are_translated() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let pod_dgram = pod_a_udp(40000, INTERNET, 53, b"who is there?");
    let (v, sent) = one(&mut p, &snap, PORT_A, pod_dgram.clone());
    assert_eq!(tx_port(v), UPLINK);
    let port = udp(&sent).src_port();
    assert!(in_snat(port));

    // (b) A router on the way reports time exceeded to the node IP, quoting what we sent.
    // Hand-built expectation: from the router (kept) to the pod, quoting the pod's own
    // datagram (its UDP checksum included) with the TTL the router saw.
    let got = assert_router_error_reaches_pod(&mut p, &snap, &sent, &pod_dgram, 11, 0, 1);
    // The quoted UDP checksum is the pod's original one.
    assert_eq!(
        &got[14 + 28 + 20 + 6..14 + 28 + 20 + 8],
        &pod_dgram[14 + 20 + 6..14 + 20 + 8]
    );

    // The destination itself reports port unreachable: its address stays the source.
    let err = router_error(INTERNET, 3, 3, &quote_of(&sent, 8, 60));
    let (v, got) = one(&mut p, &snap, UPLINK, err);
    assert_eq!(tx_port(v), PORT_A);
    assert_eq!(addrs(&got), (INTERNET, POD_A));
    assert_checksums(&got);

    // An error about an unknown port on the node IP is the kernel's.
    let mut other = quote_of(&sent, 8, 60);
    other[20..22].copy_from_slice(&(port ^ 1).to_be_bytes());
    let err = router_error(INTERNET, 3, 3, &other);
    assert_eq!(
        one(&mut p, &snap, UPLINK, err).0,
        Verdict::Drop(DropReason::Ip4LocalUnhandled)
    );
}

fn sctp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    // Common header + an INIT chunk (type 1, 20 bytes).
    let mut l4 = vec![0u8; 12 + 20];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[12] = 1;
    l4[14..16].copy_from_slice(&20u16.to_be_bytes());
    l4[16..20].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    l4[20..24].copy_from_slice(&65535u32.to_be_bytes());
    l4[24..26].copy_from_slice(&10u16.to_be_bytes());
    l4[26..28].copy_from_slice(&10u16.to_be_bytes());
    l4[28..32].copy_from_slice(&1u32.to_be_bytes());
    let c = crc32c_bitwise(&l4);
    l4[8..12].copy_from_slice(&c.to_le_bytes());
    ipv4_frame(
        MAC_A,
        PORT_A_MAC,
        ipv4_repr(src, dst, IpProtocol(132), l4.len(), 64),
        &l4,
    )
}

#[test]
fn sctp_ports_are_rewritten_with_the_crc32c() {
    // The bitwise reference against RFC 3720 B.4's vector.
    assert_eq!(crc32c_bitwise(&[0; 32]), 0x8a91_36aa);
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let f = sctp_frame(POD_A, 5000, VIP_SCTP, 9000);
    assert_checksums(&f);
    let (v, out) = one(&mut p, &snap, PORT_A, f);
    assert_eq!(tx_port(v), PORT_B);
    assert_eq!(ip(&out).dst_addr(), POD_B);
    assert_eq!(&out[14 + 20 + 2..14 + 20 + 4], &9900u16.to_be_bytes());
    assert_checksums(&out);
    // The reply.
    let mut r = sctp_frame(POD_B, 9900, POD_A, 5000);
    r[6..12].copy_from_slice(&MAC_B.0);
    let (v, back) = one(&mut p, &snap, PORT_B, r);
    assert_eq!(tx_port(v), PORT_A);
    assert_eq!(ip(&back).src_addr(), VIP_SCTP);
    assert_eq!(&back[14 + 20..14 + 20 + 2], &9000u16.to_be_bytes());
    assert_checksums(&back);
}

#[test]
fn snat_ports_come_from_the_workers_slice_and_run_out() {
    let mut snap = nat_snapshot();
    snap.node.snat_ports = (61000, 61003);
    // Worker 1 of 2 owns 61002-61003.
    let mut p = Pipeline::with_config(PipelineConfig {
        worker: 1,
        workers: 2,
        ..PipelineConfig::default()
    });
    let mut ports = HashSet::new();
    for sport in 1..=2 {
        let (v, out) = one(&mut p, &snap, PORT_A, pod_a_udp(sport, INTERNET, 53, b"q"));
        assert_eq!(tx_port(v), UPLINK);
        ports.insert(udp(&out).src_port());
    }
    assert_eq!(ports, HashSet::from([61002, 61003]));
    // Same destination, a third source port: no reply tuple left.
    let (v, _) = one(&mut p, &snap, PORT_A, pod_a_udp(3, INTERNET, 53, b"q"));
    assert_eq!(v, Verdict::Drop(DropReason::SnatPortsExhausted));
    // Another destination has its own reply tuples.
    let (v, _) = one(&mut p, &snap, PORT_A, pod_a_udp(3, INTERNET, 54, b"q"));
    assert_eq!(tx_port(v), UPLINK);
}

#[test]
fn untranslatable_packets_are_dropped_with_a_reason() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    // A TCP header cut short by the IPv4 total length, to a ClusterIP.
    let mut short = syn(POD_A, 43210, VIP, 80);
    short.truncate(14 + 20 + 12);
    short[16..18].copy_from_slice(&32u16.to_be_bytes());
    refresh_ip_checksum(&mut short);
    assert_eq!(
        one(&mut p, &snap, PORT_A, short).0,
        Verdict::Drop(DropReason::NatUnsupported)
    );
    // A first fragment to a ClusterIP.
    let mut frag = pod_a_udp(5000, VIP_DNS, 53, b"query");
    frag[20] = 0x20; // MF, DF off
    refresh_ip_checksum(&mut frag);
    assert_eq!(
        one(&mut p, &snap, PORT_A, frag).0,
        Verdict::Drop(DropReason::NatUnsupported)
    );
    // A fragment due for masquerade.
    let mut frag = pod_a_udp(5000, INTERNET, 53, b"query");
    frag[20] = 0x00;
    frag[21] = 0x10;
    refresh_ip_checksum(&mut frag);
    assert_eq!(
        one(&mut p, &snap, PORT_A, frag).0,
        Verdict::Drop(DropReason::NatUnsupported)
    );
    // Pod to pod, untracked, is forwarded as before even when its L4 header is short.
    let mut pp = pod_a_udp(5000, POD_B, 53, b"query");
    pp[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&200u16.to_be_bytes());
    assert_eq!(tx_port(one(&mut p, &snap, PORT_A, pp).0), PORT_B);
}

#[test]
fn random_nat_traffic_never_panics_and_always_gets_a_verdict() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let mut base: Vec<(PortId, Vec<u8>)> = vec![
        (PORT_A, syn(POD_A, 43210, VIP, 80)),
        (PORT_A, syn(POD_A, 43211, VIP_AFFINITY, 80)),
        (PORT_A, syn(POD_A, 43212, VIP_EMPTY, 80)),
        (PORT_A, syn(POD_A, 43213, VIP_HAIRPIN, 80)),
        (PORT_A, syn(POD_A, 43214, INTERNET, 443)),
        (PORT_A, pod_a_udp(1, VIP_DNS, 53, b"q")),
        (PORT_A, pod_a_udp(1, VIP_EMPTY, 53, b"q")),
        (PORT_A, echo(FROM_A, POD_A, INTERNET, true, 9)),
        (PORT_A, sctp_frame(POD_A, 5000, VIP_SCTP, 9000)),
    ];
    // Replies and errors that hit the flows above.
    let (_, sent) = one(&mut p, &snap, PORT_A, syn(POD_A, 43210, VIP, 80));
    base.push((
        PORT_B,
        icmp_error_frame(FROM_B, POD_B, POD_A, 3, 3, &quote_of(&sent, 8, 63)),
    ));
    base.push((
        PORT_B,
        way(FROM_B, (POD_B, 8080), (POD_A, 43210)).seg(
            TcpFlags::SYN | TcpFlags::ACK,
            (1, 1001),
            b"",
        ),
    ));
    let mut rng = Rng(0x9e37_79b9);
    let mut mem = VecFrames::new(BATCH, 4096);
    let mut batch = Batch::default();
    let (mut tx, mut drops) = (0usize, 0usize);
    for round in 0..2000u64 {
        let n = 1 + rng.below(BATCH);
        let mut descs = Vec::with_capacity(n);
        let mut ports = Vec::with_capacity(n);
        for i in 0..n {
            let (port, mut f) = base[rng.below(base.len())].clone();
            match rng.below(4) {
                0 => f.truncate(rng.below(f.len() + 1)),
                1 | 2 => {
                    // Flip bits past the IPv4 header (and refresh its checksum now and
                    // then, so the damage reaches the L4 code).
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(f.len());
                        f[at] ^= 1 << rng.below(8);
                    }
                    if rng.below(2) == 0 && f.len() >= 34 {
                        refresh_ip_checksum(&mut f);
                    }
                }
                _ => {}
            }
            descs.push(mem.put(i, HEADROOM, &f));
            ports.push(port);
        }
        batch.load(0, &descs);
        batch.now_ns = round * 1_000_000;
        for (m, port) in batch.meta[..n].iter_mut().zip(&ports) {
            m.in_port = *port;
        }
        p.process(&snap, &mut batch, &mut mem);
        for m in &batch.meta[..n] {
            assert_eq!(m.next, Next::Done);
            match m.verdict {
                Verdict::Tx(_) => tx += 1,
                Verdict::Drop(r) => {
                    assert_ne!(r, DropReason::NoVerdict);
                    drops += 1;
                }
                Verdict::Pending => panic!("pending"),
            }
        }
        for (i, d) in batch.desc[..n].iter().enumerate() {
            if let Verdict::Tx(_) = batch.meta[i].verdict {
                let out = mem.get(*d);
                if let Ok(eth) = EthernetFrame::new_checked(out)
                    && eth.ethertype() == EtherType::IPV4
                {
                    assert!(
                        Ipv4Packet::new_checked(eth.payload())
                            .unwrap()
                            .verify_checksum()
                    );
                }
            }
        }
    }
    assert!(tx > 10_000 && drops > 1000, "tx {tx} drops {drops}");
}

#[test]
fn errors_the_dataplane_sends_about_translated_packets_quote_what_was_sent() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    // TTL 1 to a ClusterIP: time exceeded from the gateway, quoting the SYN to the
    // frontend (not the translated one to the backend).
    let mut s = syn(POD_A, 43210, VIP, 80);
    set_ttl(&mut s, 1);
    let (v, err) = one(&mut p, &snap, PORT_A, s.clone());
    assert_eq!(tx_port(v), PORT_A);
    let e = ip(&err);
    assert_eq!((e.src_addr(), e.dst_addr()), (GW, POD_A));
    let icmp = icmp_of(&err);
    assert_eq!((icmp.msg_type().0, icmp.msg_code()), (11, 0));
    assert_eq!(icmp.data(), &s[14..14 + 28]);
    assert_checksums(&err);

    // Masqueraded: the error goes to the pod (not the node IP), about the pod's packet.
    let mut u = pod_a_udp(40000, INTERNET, 33434, b"trace");
    set_ttl(&mut u, 1);
    let (v, err) = one(&mut p, &snap, PORT_A, u.clone());
    assert_eq!(tx_port(v), PORT_A);
    let e = ip(&err);
    assert_eq!((e.src_addr(), e.dst_addr()), (GW, POD_A));
    assert_eq!(dst_mac(&err), MAC_A);
    assert_eq!(icmp_of(&err).data(), &u[14..14 + 28]);
    assert_checksums(&err);
}

#[test]
fn a_syn_on_a_closed_flow_starts_a_new_one() {
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let b = backend_of(&mut p, &snap, POD_A, 44444, VIP_SPREAD);
    // The client resets the connection: the flow is in CLOSE.
    let rst = way(FROM_A, (POD_A, 44444), (VIP_SPREAD, 80)).seg(TcpFlags::RST, (1001, 0), b"");
    let (v, out) = one(&mut p, &snap, PORT_A, rst);
    assert_eq!(tx_port(v), UPLINK);
    assert_eq!(ip(&out).dst_addr(), b);
    // The backend leaves; the client reuses its port: a new decision, not the old backend.
    let mut next = nat_snapshot();
    next.services = services(
        remote_backends()
            .into_iter()
            .filter(|x| x.ip != b)
            .collect(),
    );
    let again = backend_of(&mut p, &next, POD_A, 44444, VIP_SPREAD);
    assert_ne!(again, b);
    // A flow that is not closed keeps its backend for a repeated SYN.
    let c = backend_of(&mut p, &next, POD_A, 44445, VIP_SPREAD);
    let ack = way(FROM_A, (POD_A, 44445), (VIP_SPREAD, 80)).seg(TcpFlags::ACK, (1001, 1), b"");
    one(&mut p, &next, PORT_A, ack);
    assert_eq!(backend_of(&mut p, &next, POD_A, 44445, VIP_SPREAD), c);
}

#[test]
fn a_client_port_reused_towards_another_frontend_gets_its_own_reply_tuple() {
    // Two frontends with the same single backend; the client uses one source port for
    // both. The second flow's reply tuple would be the first one's: its source port is
    // remapped from the SNAT range, its address kept, and the reply restores both.
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let (_, first) = one(&mut p, &snap, PORT_A, syn(POD_A, 50000, VIP, 80));
    assert_eq!(tcp(&first).src_port(), 50000);
    let mut s2 = nat_snapshot();
    let web = s2.services.lookup(VIP, 80, PROTO_TCP).unwrap().0.set;
    s2.services
        .add_frontend(
            FrontendKey {
                ip: Ipv4Addr::new(10, 96, 0, 11),
                port: 80,
                proto: PROTO_TCP,
            },
            frontend("default/web2:http", FrontendKind::ClusterIp, web, 9),
        )
        .unwrap();
    let (v, second) = one(
        &mut p,
        &s2,
        PORT_A,
        syn(POD_A, 50000, Ipv4Addr::new(10, 96, 0, 11), 80),
    );
    assert_eq!(tx_port(v), PORT_B);
    assert_eq!(ip(&second).src_addr(), POD_A);
    let port = tcp(&second).src_port();
    assert!(in_snat(port));
    assert_checksums(&second);
    let synack = way(FROM_B, (POD_B, 8080), (POD_A, port)).seg(
        TcpFlags::SYN | TcpFlags::ACK,
        (1, 1001),
        b"",
    );
    let (v, back) = one(&mut p, &s2, PORT_B, synack);
    assert_eq!(tx_port(v), PORT_A);
    assert_eq!(ip(&back).src_addr(), Ipv4Addr::new(10, 96, 0, 11));
    assert_eq!(tcp(&back).dst_port(), 50000);
    assert_checksums(&back);
}

#[test]
fn answers_from_pods_are_not_masqueraded_as_new_flows() {
    // A connection opened from outside to a pod (not tracked): the pod's SYN-ACK and RST
    // leave with the pod's address, they do not start masqueraded flows.
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    for flags in [TcpFlags::SYN | TcpFlags::ACK, TcpFlags::RST | TcpFlags::ACK] {
        let f = way(FROM_A, (POD_A, 8080), (INTERNET, 5555)).seg(flags, (1, 2), b"");
        let (v, out) = one(&mut p, &snap, PORT_A, f);
        assert_eq!(tx_port(v), UPLINK);
        assert_eq!((ip(&out).src_addr(), tcp(&out).src_port()), (POD_A, 8080));
    }
    assert_eq!(p.flows().counters().entries, 0);
}

#[test]
fn icmp_errors_about_masqueraded_pings_are_translated() {
    // traceroute -I: a router answers the masqueraded echo request with time exceeded.
    let snap = nat_snapshot();
    let mut p = Pipeline::new();
    let request = echo(FROM_A, POD_A, INTERNET, true, 0x4242);
    let (_, sent) = one(&mut p, &snap, PORT_A, request.clone());
    // The quoted echo carries the pod's identifier and its original ICMP checksum.
    assert_router_error_reaches_pod(&mut p, &snap, &sent, &request, 11, 0, 1);
}

#[test]
fn a_full_flow_table_drops_new_flows() {
    // A table of 32 slots filled with assured (replied, established) flows: nothing to
    // evict, so a new Service flow is dropped as conntrack-full; established ones pass.
    let flows = Arc::new(FlowTable::new(FlowTableConfig {
        capacity: 1,
        ..FlowTableConfig::default()
    }));
    let ack = Some(TcpFlags::ACK.0 as u8);
    let mut inserted = 0;
    for i in 0..64u8 {
        let o = ct::Tuple::new(PROTO_TCP, Ipv4Addr::new(10, 244, 9, i), VIP, 1000, 80);
        let r = ct::Tuple::new(PROTO_TCP, o.src, POD_B, 1000, 8080);
        match flows.insert(&o, &r, 0, ack) {
            Ok(_) => {
                let reply = flows.lookup(&r.reversed()).unwrap();
                flows.touch(&reply, 0, ack);
                inserted += 1;
            }
            Err(ct::InsertError::Full) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(inserted >= 8, "{inserted}");
    let snap = nat_snapshot();
    let mut p = Pipeline::with_flows(PipelineConfig::default(), Arc::clone(&flows));
    assert_eq!(
        one(&mut p, &snap, PORT_A, syn(POD_A, 43210, VIP, 80)).0,
        Verdict::Drop(DropReason::ConntrackFull)
    );
    let known = way(FROM_A, (Ipv4Addr::new(10, 244, 9, 0), 1000), (VIP, 80)).seg(
        TcpFlags::ACK,
        (1, 1),
        b"",
    );
    let (v, out) = one(&mut p, &snap, PORT_A, known);
    assert_eq!(tx_port(v), PORT_B);
    assert_eq!(ip(&out).dst_addr(), POD_B);
}

#[test]
fn backends_outside_the_cluster_network_are_masqueraded() {
    // `kubernetes.default`-like: a ClusterIP whose endpoint is another node's host network
    // (192.168.50.20:6443, behind the default route). A pod's flow is DNATed and then
    // masqueraded to the node IP, as Linux's POSTROUTING does after the DNAT.
    const API: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
    const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 20);
    let mut snap = nat_snapshot();
    // API:443 → HOST:6443 (elsewhere); API:444 → this node's own IP.
    let apis = [
        (443, HOST, false, "default/kubernetes:https", 10),
        (444, NODE_IP, true, "default/own:https", 11),
    ];
    for (port, ip, local, name, service_port) in apis {
        let b = Backend {
            ip,
            port: 6443,
            local,
        };
        let set = snap.services.add_set(BackendSet::new(vec![b]).unwrap());
        let f = frontend(name, FrontendKind::ClusterIp, set, service_port);
        let key = FrontendKey {
            ip: API,
            port,
            proto: PROTO_TCP,
        };
        snap.services.add_frontend(key, f).unwrap();
    }
    let mut p = Pipeline::new();
    masqueraded_round_trip(&mut p, &snap, 43210, (API, 443), (HOST, 6443), 1);
    // An endpoint on this node's own host network: no path into the node's stack yet.
    assert_eq!(
        one(&mut p, &snap, PORT_A, syn(POD_A, 43211, API, 444)).0,
        Verdict::Drop(DropReason::Ip4LocalUnhandled)
    );
}
