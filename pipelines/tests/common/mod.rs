//! Shared fixtures: a node snapshot (pod CIDR 10.244.1.0/24, gateway 10.244.1.1, two pod
//! ports and an uplink), the same node with its underlay and flannel routes
//! ([`overlay_snapshot`]), and frame builders on top of `xdplane-wire`'s reprs.
#![allow(dead_code)]

pub mod captured;

use std::net::Ipv4Addr;
use xdplane_pipeline::*;
use xdplane_wire::*;

pub const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
pub const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
pub const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
/// A pod whose port (7) is not in the snapshot.
pub const POD_GHOST: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 9);
/// In the pod CIDR, no pod.
pub const POD_NONE: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 50);
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

pub const PORT_A: PortId = 1;
pub const PORT_B: PortId = 2;
pub const PORT_UPLINK: PortId = 3;
pub const PORT_GHOST: PortId = 7;
/// A port id that is not in the snapshot.
pub const PORT_UNKNOWN: PortId = 5;

/// Host-side veth MACs (the gateway MAC pods see).
pub const PORT_A_MAC: MacAddr = MacAddr([0x02, 0xfe, 0, 0, 0, 0x01]);
pub const PORT_B_MAC: MacAddr = MacAddr([0x02, 0xfe, 0, 0, 0, 0x02]);
pub const UPLINK_MAC: MacAddr = MacAddr([0x02, 0xfe, 0, 0, 0, 0x03]);
/// Pod interface MACs.
pub const MAC_A: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x02]);
pub const MAC_B: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x03]);
pub const MAC_GHOST: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x09]);

pub fn snapshot() -> Snapshot {
    let port = |id: PortId, name: &str, mac: MacAddr, kind| PortConfig {
        id,
        name: name.to_string(),
        ifindex: 100 + u32::from(id),
        mac: mac.0,
        kind,
    };
    let mut ports = vec![None; 4];
    ports[usize::from(PORT_A)] = Some(port(PORT_A, "vethA", PORT_A_MAC, PortKind::Pod));
    ports[usize::from(PORT_B)] = Some(port(PORT_B, "vethB", PORT_B_MAC, PortKind::Pod));
    ports[usize::from(PORT_UPLINK)] = Some(port(PORT_UPLINK, "eth0", UPLINK_MAC, PortKind::Uplink));
    let mut local = LocalEndpoints::default();
    local.insert(
        POD_A,
        LocalEndpoint {
            port: PORT_A,
            mac: MAC_A.0,
        },
    );
    local.insert(
        POD_B,
        LocalEndpoint {
            port: PORT_B,
            mac: MAC_B.0,
        },
    );
    local.insert(
        POD_GHOST,
        LocalEndpoint {
            port: PORT_GHOST,
            mac: MAC_GHOST.0,
        },
    );
    // The pod CIDR is the only route: everything else has none.
    let mut fib = FibBuilder::new();
    fib.insert(Ipv4Addr::new(10, 244, 1, 0), 24, 0);
    Snapshot {
        generation: 1,
        routes: vec![Route::Local],
        fib: fib.build(),
        node: NodeTables {
            name: "node-1".into(),
            pod_net: Ipv4Addr::new(10, 244, 1, 0),
            pod_prefix: 24,
            gateway: GW,
            pod_mtu: 1500,
            ..NodeTables::default()
        },
        ports,
        local,
        ..Default::default()
    }
}

pub fn arp_frame(op: ArpOp, sha: MacAddr, spa: Ipv4Addr, tha: MacAddr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    let dst = if op == ArpOp::REQUEST {
        MacAddr::BROADCAST
    } else {
        tha
    };
    EthernetRepr {
        src_addr: sha,
        dst_addr: dst,
        ethertype: EtherType::ARP,
    }
    .emit(&mut f)
    .unwrap();
    ArpRepr {
        operation: op,
        source_hardware_addr: sha,
        source_protocol_addr: spa,
        target_hardware_addr: tha,
        target_protocol_addr: tpa,
    }
    .emit(&mut f[14..])
    .unwrap();
    f
}

pub fn arp_request(sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp_frame(ArpOp::REQUEST, sha, spa, MacAddr::ZERO, tpa)
}

pub fn ipv4_repr(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    payload_len: usize,
    ttl: u8,
) -> Ipv4Repr {
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol,
        payload_len,
        ttl,
        dscp: 0,
        ecn: 0,
        ident: 0x1c46,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    }
}

/// Ethernet + IPv4 + the given L4 bytes.
pub fn ipv4_frame(src_mac: MacAddr, dst_mac: MacAddr, ip: Ipv4Repr, l4: &[u8]) -> Vec<u8> {
    assert_eq!(ip.payload_len, l4.len());
    let mut f = vec![0u8; 34 + l4.len()];
    EthernetRepr {
        src_addr: src_mac,
        dst_addr: dst_mac,
        ethertype: EtherType::IPV4,
    }
    .emit(&mut f)
    .unwrap();
    ip.emit(&mut f[14..]).unwrap();
    f[34..].copy_from_slice(l4);
    f
}

pub fn udp_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
    ttl: u8,
) -> Vec<u8> {
    let udp = UdpRepr {
        src_port: sport,
        dst_port: dport,
        payload,
    };
    let mut l4 = vec![0u8; udp.buffer_len()];
    udp.emit(&mut l4, src, dst).unwrap();
    ipv4_frame(
        MAC_A,
        PORT_A_MAC,
        ipv4_repr(src, dst, IpProtocol::UDP, l4.len(), ttl),
        &l4,
    )
}

pub fn tcp_frame(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8], ttl: u8) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: 43210,
        dst_port: 80,
        seq_number: 0x0102_0304,
        ack_number: 0x0a0b_0c0d,
        flags: TcpFlags::ACK | TcpFlags::PSH,
        window_len: 502,
        urgent_at: 0,
        options: &[0x01, 0x01, 0x08, 0x0a, 0, 0, 0, 1, 0, 0, 0, 2],
        payload,
    };
    let mut l4 = vec![0u8; tcp.buffer_len()];
    tcp.emit(&mut l4, src, dst).unwrap();
    ipv4_frame(
        MAC_A,
        PORT_A_MAC,
        ipv4_repr(src, dst, IpProtocol::TCP, l4.len(), ttl),
        &l4,
    )
}

pub fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    let mut l4 = vec![0u8; icmp.buffer_len()];
    icmp.emit(&mut l4).unwrap();
    ipv4_frame(
        MAC_A,
        PORT_A_MAC,
        ipv4_repr(src, dst, IpProtocol::ICMP, l4.len(), 64),
        &l4,
    )
}

/// Headroom the test frames get in their chunk (AF_XDP copy mode leaves 256 too).
pub const HEADROOM: usize = 256;

/// Runs one batch of `(in_port, frame)` through a new pipeline; returns per packet the
/// verdict and the frame bytes as the descriptor now delimits them.
pub fn run(snap: &Snapshot, packets: &[(PortId, Vec<u8>)]) -> Vec<(Verdict, Vec<u8>)> {
    run_with(&mut Pipeline::new(), snap, packets, 0, HEADROOM)
}

/// One batch through `pipeline` at time `now_ns`, frames placed `headroom` bytes into
/// their 4096-byte chunks.
pub fn run_with(
    pipeline: &mut Pipeline,
    snap: &Snapshot,
    packets: &[(PortId, Vec<u8>)],
    now_ns: u64,
    headroom: usize,
) -> Vec<(Verdict, Vec<u8>)> {
    assert!(packets.len() <= BATCH);
    let mut mem = VecFrames::new(BATCH, 4096);
    let descs: Vec<Desc> = packets
        .iter()
        .enumerate()
        .map(|(i, (_, f))| mem.put(i, headroom, f))
        .collect();
    let mut batch = Batch::default();
    batch.load(0, &descs);
    batch.now_ns = now_ns;
    for (m, (port, _)) in batch.meta.iter_mut().zip(packets) {
        m.in_port = *port;
    }
    pipeline.process(snap, &mut batch, &mut mem);
    (0..batch.len)
        .map(|i| {
            assert_eq!(batch.meta[i].next, Next::Done);
            (batch.meta[i].verdict, mem.get(batch.desc[i]).to_vec())
        })
        .collect()
}

/// One packet through the pipeline.
pub fn run1(snap: &Snapshot, in_port: PortId, frame: Vec<u8>) -> (Verdict, Vec<u8>) {
    run(snap, &[(in_port, frame)]).remove(0)
}

// ---- the overlay: this node as server1 of a three-node flannel cluster -----------------

/// The uplink's port id in [`overlay_snapshot`].
pub const UPLINK: PortId = 0;
/// server1's uplink MAC (also its VtepMAC); the MAC the captured frames were sent to.
pub const UPLINK_MAC0: MacAddr = MacAddr([0x02, 0x42, 0xc0, 0xa8, 0x32, 0x0b]);
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 11);
/// The fabric's router (default gateway of the uplink).
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
pub const ROUTER_MAC: MacAddr = MacAddr([0x02, 0x42, 0xc0, 0xa8, 0x32, 0x01]);
/// server2: VXLAN peer (pod CIDR 10.244.2.0/24).
pub const SERVER2: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 12);
pub const SERVER2_MAC: MacAddr = MacAddr([0x02, 0x42, 0xc0, 0xa8, 0x32, 0x0c]);
/// server2's VtepMAC (its flannel.1 MAC in the capture).
pub const SERVER2_VTEP_MAC: MacAddr = MacAddr([0x82, 0x1f, 0x5a, 0x6e, 0x2c, 0x02]);
/// server3: direct-routed peer (pod CIDR 10.244.3.0/24).
pub const SERVER3: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 13);
pub const SERVER3_MAC: MacAddr = MacAddr([0x02, 0x42, 0xc0, 0xa8, 0x32, 0x0d]);
/// Pods on the other nodes.
pub const REMOTE2: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 5);
pub const REMOTE2B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 6);
pub const REMOTE3: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 5);
/// Beyond the default gateway.
pub const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// Route ids of [`overlay_snapshot`].
pub const ROUTE_LOCAL: RouteId = 0;
pub const ROUTE_SERVER2: RouteId = 1;
pub const ROUTE_SERVER3: RouteId = 2;
pub const ROUTE_DEFAULT: RouteId = 3;

/// [`snapshot`] plus the underlay: uplink on port 0 (node IP 192.168.50.11/24, MTU 1500,
/// VtepMAC = uplink MAC, VXLAN port 8472, VNI 1) and flannel's routes: 10.244.1.0/24 local,
/// 10.244.2.0/24 by VXLAN to server2, 10.244.3.0/24 directly to server3, the default route
/// via 192.168.50.1, with every next hop resolved.
pub fn overlay_snapshot() -> Snapshot {
    let mut s = snapshot();
    s.ports[usize::from(PORT_UPLINK)] = None;
    s.ports[usize::from(UPLINK)] = Some(PortConfig {
        id: UPLINK,
        name: "eth0".into(),
        ifindex: 2,
        mac: UPLINK_MAC0.0,
        kind: PortKind::Uplink,
    });
    s.node.node_ip = Some(NODE_IP);
    s.node.uplink = Some(UPLINK);
    s.node.uplink_net = Ipv4Addr::new(192, 168, 50, 0);
    s.node.uplink_prefix = 24;
    s.node.uplink_mtu = 1500;
    s.node.vtep_mac = UPLINK_MAC0.0;
    s.node.vxlan_port = 8472;
    s.node.vni = 1;
    s.node.pod_mtu = 1450;
    s.routes = vec![
        Route::Local,
        Route::Vxlan {
            vtep: SERVER2,
            vtep_mac: SERVER2_VTEP_MAC.0,
            vni: 1,
        },
        Route::Direct { next_hop: SERVER3 },
        Route::Gateway { next_hop: ROUTER },
    ];
    let mut fib = FibBuilder::new();
    fib.insert(Ipv4Addr::new(10, 244, 1, 0), 24, ROUTE_LOCAL);
    fib.insert(Ipv4Addr::new(10, 244, 2, 0), 24, ROUTE_SERVER2);
    fib.insert(Ipv4Addr::new(10, 244, 3, 0), 24, ROUTE_SERVER3);
    fib.insert(Ipv4Addr::UNSPECIFIED, 0, ROUTE_DEFAULT);
    s.fib = fib.build();
    let mut n = Neighbours::default();
    n.insert(SERVER2, SERVER2_MAC.0);
    n.insert(SERVER3, SERVER3_MAC.0);
    n.insert(ROUTER, ROUTER_MAC.0);
    s.neighbours = n;
    s
}

/// Rebuilds a snapshot's FIB from `(prefix, len, route)` entries, replacing its routes.
pub fn with_routes(
    mut s: Snapshot,
    routes: Vec<Route>,
    prefixes: &[(Ipv4Addr, u8, RouteId)],
) -> Snapshot {
    let mut fib = FibBuilder::new();
    for (p, l, r) in prefixes {
        fib.insert(*p, *l, *r);
    }
    s.routes = routes;
    s.fib = fib.build();
    s
}

/// A UDP frame from pod A (on port A) with the given IP header fields.
pub fn pod_udp(dst: Ipv4Addr, sport: u16, payload_len: usize, ttl: u8, df: bool) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let udp = UdpRepr {
        src_port: sport,
        dst_port: 8080,
        payload: &payload,
    };
    let mut l4 = vec![0u8; udp.buffer_len()];
    udp.emit(&mut l4, POD_A, dst).unwrap();
    let mut ip = ipv4_repr(POD_A, dst, IpProtocol::UDP, l4.len(), ttl);
    ip.dont_frag = df;
    ipv4_frame(MAC_A, PORT_A_MAC, ip, &l4)
}

/// VXLAN header fields for [`vxlan_frame`].
#[derive(Clone, Copy, Debug)]
pub struct Outer {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// The 8 VXLAN header bytes.
    pub vxlan: [u8; 8],
    pub ecn: u8,
}

impl Outer {
    /// As server2's kernel sends to this node: VNI 1, flags 0x08.
    pub fn from_server2() -> Outer {
        Outer {
            src_mac: SERVER2_MAC,
            dst_mac: UPLINK_MAC0,
            src: SERVER2,
            dst: NODE_IP,
            src_port: 38645,
            dst_port: 8472,
            vxlan: [0x08, 0, 0, 0, 0, 0, 1, 0],
            ecn: 0,
        }
    }
}

/// Outer Ethernet + IPv4 + UDP (checksum 0) + VXLAN around `inner` (an Ethernet frame).
pub fn vxlan_frame(o: Outer, inner: &[u8]) -> Vec<u8> {
    let mut udp_payload = o.vxlan.to_vec();
    udp_payload.extend_from_slice(inner);
    let udp_len = 8 + udp_payload.len();
    let mut l4 = vec![0u8; udp_len];
    l4[0..2].copy_from_slice(&o.src_port.to_be_bytes());
    l4[2..4].copy_from_slice(&o.dst_port.to_be_bytes());
    l4[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    l4[8..].copy_from_slice(&udp_payload);
    let mut ip = ipv4_repr(o.src, o.dst, IpProtocol::UDP, udp_len, 64);
    ip.dont_frag = false;
    ip.ecn = o.ecn;
    ip.ident = 0xd4ad;
    ipv4_frame(o.src_mac, o.dst_mac, ip, &l4)
}

/// An inner frame as server2's flannel.1 sends it: from server2's VtepMAC to ours.
pub fn inner_from_server2(ip: Ipv4Repr, l4: &[u8]) -> Vec<u8> {
    ipv4_frame(SERVER2_VTEP_MAC, UPLINK_MAC0, ip, l4)
}

/// A UDP datagram from a pod on server2, as an inner frame.
pub fn remote_udp(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    let udp = UdpRepr {
        src_port: 36036,
        dst_port: 8080,
        payload: b"from server2",
    };
    let mut l4 = vec![0u8; udp.buffer_len()];
    udp.emit(&mut l4, src, dst).unwrap();
    inner_from_server2(ipv4_repr(src, dst, IpProtocol::UDP, l4.len(), ttl), &l4)
}

/// The frame behind a VXLAN frame's 50 bytes of outer headers.
pub fn inner_of(frame: &[u8]) -> &[u8] {
    &frame[50..]
}

/// xorshift32 (Marsaglia): deterministic random bytes for the fuzz-style tests, no
/// dependency (the same seed gives the same stream on every machine).
pub struct Rng(pub u32);

impl Rng {
    pub fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n
    }
}
