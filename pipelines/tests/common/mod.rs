//! Shared fixtures: a node snapshot (pod CIDR 10.244.1.0/24, gateway 10.244.1.1, two pod
//! ports and an uplink) and frame builders on top of `xdplane-wire`'s reprs.
#![allow(dead_code)]

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
    Snapshot {
        generation: 1,
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

/// Runs one batch of `(in_port, frame)` through the pipeline; returns per packet the
/// verdict and the frame bytes as the descriptor now delimits them.
pub fn run(snap: &Snapshot, packets: &[(PortId, Vec<u8>)]) -> Vec<(Verdict, Vec<u8>)> {
    assert!(packets.len() <= BATCH);
    let mut mem = VecFrames::new(BATCH, 4096);
    let descs: Vec<Desc> = packets
        .iter()
        .enumerate()
        .map(|(i, (_, f))| mem.put(i, 256, f))
        .collect();
    let mut batch = Batch::default();
    batch.load(0, &descs);
    for (m, (port, _)) in batch.meta.iter_mut().zip(packets) {
        m.in_port = *port;
    }
    Pipeline.process(snap, &mut batch, &mut mem);
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
