//! Packet-layer micro-benchmarks: header parsing with the `xdplane-wire` views and whole
//! batches through `Pipeline::process` (forwarding, ARP replies, ICMP echo replies, VXLAN
//! decapsulation to local pods and encapsulation to remote pods, and Services NAT: the
//! established path over a table of 1,000,000 flows and new flows through the `nat` stage).
//!
//! Every benchmark handles 64 packets per iteration and reports elements/s; criterion's
//! time per iteration ÷ 64 is the cost per packet. Frames sit in `VecFrames` chunks of
//! 2048 bytes like UMEM frames. Frames edited in place are restored inside the timed loop
//! (TTL + checksum for forwarding, the edited header bytes for ARP/ICMP); the
//! `*-restore-only` benchmarks measure that restore alone so it can be subtracted.
//!
//! Run: `cargo bench -p xdplane-perf --bench pipeline` (add `-- --quick` for a short run).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xdplane_pipeline::pipeline::PipelineConfig;
use xdplane_pipeline::tables::conntrack::{FlowTable, FlowTableConfig, Tuple};
use xdplane_pipeline::tables::services::{
    Backend, BackendSet, Frontend, FrontendKey, FrontendKind, PROTO_TCP,
};
use xdplane_pipeline::{
    BATCH, Batch, Desc, FibBuilder, LocalEndpoint, LocalEndpoints, Neighbours, NodeTables,
    Pipeline, PortConfig, PortId, PortKind, Route, Services, Snapshot, VecFrames, Verdict,
};
use xdplane_wire::{
    ArpOp, ArpRepr, EtherType, EthernetFrame, EthernetRepr, Icmpv4Repr, IpProtocol, Ipv4Packet,
    Ipv4Repr, MacAddr, TcpFlags, TcpRepr, UdpPacket, UdpRepr,
};

const CHUNK: usize = 2048;
const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
/// Pods on the node: a Kubernetes node's default maximum.
const PODS: u16 = 110;

fn pod_ip(i: u16) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 2 + i as u8)
}
fn pod_mac(i: u16) -> MacAddr {
    MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 2 + i as u8])
}
fn port_mac(port: PortId) -> MacAddr {
    MacAddr([0x02, 0xfe, 0, 0, (port >> 8) as u8, port as u8])
}

/// The uplink (port 0): this node is 192.168.50.11; server2 (192.168.50.12) serves
/// 10.244.2.0/24 over VXLAN.
const UPLINK: PortId = 0;
const UPLINK_MAC: MacAddr = MacAddr([0x02, 0x42, 0xc0, 0xa8, 0x32, 0x0b]);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 11);
const SERVER2: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 12);
const SERVER2_MAC: MacAddr = MacAddr([0x02, 0x42, 0xc0, 0xa8, 0x32, 0x0c]);
const SERVER2_VTEP_MAC: MacAddr = MacAddr([0x82, 0x1f, 0x5a, 0x6e, 0x2c, 0x02]);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);

fn remote_ip(i: u16) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 2, 2 + i as u8)
}

/// Pod `i` sits on port `i + 1`; port 0 is the uplink; routes: the pod CIDR, server2's by
/// VXLAN, a default route; every next hop resolved.
fn snapshot() -> Snapshot {
    let mut ports = vec![Some(PortConfig {
        id: UPLINK,
        name: "eth0".into(),
        ifindex: 2,
        mac: UPLINK_MAC.0,
        kind: PortKind::Uplink,
    })];
    let mut local = LocalEndpoints::default();
    for i in 0..PODS {
        let id = i + 1;
        ports.push(Some(PortConfig {
            id,
            name: format!("veth{i}"),
            ifindex: 100 + u32::from(id),
            mac: port_mac(id).0,
            kind: PortKind::Pod,
        }));
        local.insert(
            pod_ip(i),
            LocalEndpoint {
                port: id,
                mac: pod_mac(i).0,
            },
        );
    }
    let mut fib = FibBuilder::new();
    fib.insert(Ipv4Addr::new(10, 244, 1, 0), 24, 0);
    fib.insert(Ipv4Addr::new(10, 244, 2, 0), 24, 1);
    fib.insert(Ipv4Addr::UNSPECIFIED, 0, 2);
    let mut neighbours = Neighbours::default();
    neighbours.insert(SERVER2, SERVER2_MAC.0);
    neighbours.insert(ROUTER, [0x02, 0x42, 0xc0, 0xa8, 0x32, 0x01]);
    Snapshot {
        generation: 1,
        node: NodeTables {
            name: "bench".into(),
            pod_net: Ipv4Addr::new(10, 244, 1, 0),
            pod_prefix: 24,
            gateway: GW,
            pod_mtu: 1450,
            node_ip: Some(NODE_IP),
            uplink: Some(UPLINK),
            uplink_net: Ipv4Addr::new(192, 168, 50, 0),
            uplink_prefix: 24,
            uplink_mtu: 1500,
            vtep_mac: UPLINK_MAC.0,
            vxlan_port: 8472,
            vni: 1,
            ..NodeTables::default()
        },
        ports,
        local,
        routes: vec![
            Route::Local,
            Route::Vxlan {
                vtep: SERVER2,
                vtep_mac: SERVER2_VTEP_MAC.0,
                vni: 1,
            },
            Route::Gateway { next_hop: ROUTER },
        ],
        fib: fib.build(),
        neighbours,
        services: Default::default(),
    }
}

fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, l4: &[u8]) -> Vec<u8> {
    ipv4_frame_macs(pod_mac(0), port_mac(1), src, dst, protocol, l4)
}

fn ipv4_frame_macs(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    l4: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 34 + l4.len()];
    EthernetRepr {
        src_addr: src_mac,
        dst_addr: dst_mac,
        ethertype: EtherType::IPV4,
    }
    .emit(&mut f)
    .unwrap();
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol,
        payload_len: l4.len(),
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(&mut f[14..])
    .unwrap();
    f[34..].copy_from_slice(l4);
    f
}

/// A 64-byte UDP frame (60 bytes without FCS: 18 bytes of payload) from pod 0 to `dst`.
fn udp_frame(dst: Ipv4Addr) -> Vec<u8> {
    udp_frame_from(pod_ip(0), 40000, dst)
}

fn udp_frame_from(src: Ipv4Addr, src_port: u16, dst: Ipv4Addr) -> Vec<u8> {
    let udp = UdpRepr {
        src_port,
        dst_port: 8080,
        payload: &[0x5a; 18],
    };
    let mut l4 = vec![0u8; udp.buffer_len()];
    udp.emit(&mut l4, src, dst).unwrap();
    ipv4_frame(src, dst, IpProtocol::UDP, &l4)
}

/// A flannel VXLAN frame from server2 around a 60-byte UDP frame from a server2 pod to
/// local pod `dst` (110 bytes on the wire without FCS).
fn vxlan_frame(dst: u16) -> Vec<u8> {
    let mut inner = udp_frame_from(remote_ip(dst % 8), 36036, pod_ip(dst));
    inner[0..6].copy_from_slice(&UPLINK_MAC.0);
    inner[6..12].copy_from_slice(&SERVER2_VTEP_MAC.0);
    let mut l4 = vec![0u8; 16 + inner.len()];
    l4[0..2].copy_from_slice(&(32768 + dst).to_be_bytes());
    l4[2..4].copy_from_slice(&8472u16.to_be_bytes());
    let udp_len = l4.len() as u16;
    l4[4..6].copy_from_slice(&udp_len.to_be_bytes());
    l4[8] = 0x08;
    l4[14] = 1;
    l4[16..].copy_from_slice(&inner);
    let mut f = ipv4_frame_macs(
        SERVER2_MAC,
        UPLINK_MAC,
        SERVER2,
        NODE_IP,
        IpProtocol::UDP,
        &l4,
    );
    f[20] = 0; // no DF, as Linux's vxlan driver sends
    let c = xdplane_wire::checksum::checksum(&{
        let mut h = f[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    EthernetRepr {
        src_addr: pod_mac(0),
        dst_addr: MacAddr::BROADCAST,
        ethertype: EtherType::ARP,
    }
    .emit(&mut f)
    .unwrap();
    ArpRepr {
        operation: ArpOp::REQUEST,
        source_hardware_addr: pod_mac(0),
        source_protocol_addr: pod_ip(0),
        target_hardware_addr: MacAddr::ZERO,
        target_protocol_addr: target,
    }
    .emit(&mut f[14..])
    .unwrap();
    f
}

/// `ping -s 56` to the gateway.
fn echo_request() -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 0x1f87,
        seq_no: 1,
        data: &[0x61; 56],
    };
    let mut l4 = vec![0u8; icmp.buffer_len()];
    icmp.emit(&mut l4).unwrap();
    ipv4_frame(pod_ip(0), GW, IpProtocol::ICMP, &l4)
}

/// 64 frames in frame memory, one per chunk.
fn load(frames: &[Vec<u8>]) -> (VecFrames, Vec<Desc>) {
    let mut mem = VecFrames::new(BATCH, CHUNK);
    let descs = frames
        .iter()
        .enumerate()
        .map(|(i, f)| mem.put(i, 256, f))
        .collect();
    (mem, descs)
}

fn bench_parse(c: &mut Criterion) {
    let frames: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| udp_frame(pod_ip(1 + i as u16 % 8)))
        .collect();
    let (mem, descs) = load(&frames);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("eth+ipv4+udp/64", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for d in &descs {
                let f = mem.get(*d);
                let Ok(eth) = EthernetFrame::new_checked(f) else {
                    continue;
                };
                if eth.ethertype() != EtherType::IPV4 {
                    continue;
                }
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    continue;
                };
                let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                    continue;
                };
                acc = acc
                    .wrapping_add(u32::from(ip.dst_addr()))
                    .wrapping_add(u32::from(udp.dst_port()))
                    .wrapping_add(u32::from(udp.src_port()));
            }
            black_box(acc)
        })
    });
    g.bench_function("eth+ipv4+udp+ip-checksum/64", |b| {
        b.iter(|| {
            let mut ok = 0u32;
            for d in &descs {
                let f = mem.get(*d);
                let Ok(eth) = EthernetFrame::new_checked(f) else {
                    continue;
                };
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    continue;
                };
                let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                    continue;
                };
                ok += u32::from(ip.verify_checksum()) + u32::from(udp.dst_port() == 8080);
            }
            black_box(ok)
        })
    });
    g.finish();
}

/// Forwarding: TTL and checksum are restored in the loop so every iteration takes the
/// steady forwarding path.
fn bench_forward(c: &mut Criterion) {
    let snap = snapshot();
    let mut pipeline = Pipeline::new();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, dst_of) in [
        ("forward-udp/64/one-dst", (|_| 1) as fn(usize) -> u16),
        ("forward-udp/64/64-dsts", |i| 1 + (i as u16 % (PODS - 1))),
    ] {
        let frames: Vec<Vec<u8>> = (0..BATCH).map(|i| udp_frame(pod_ip(dst_of(i)))).collect();
        let ttl_csum: Vec<[u8; 4]> = frames
            .iter()
            .map(|f| [f[22], f[23], f[24], f[25]])
            .collect();
        let (mut mem, descs) = load(&frames);
        let mut batch = Batch::default();
        // Check once that this is the forwarding path.
        batch.load(1, &descs);
        pipeline.process(&snap, &mut batch, &mut mem);
        for (i, m) in batch.meta.iter().enumerate() {
            assert_eq!(m.verdict, Verdict::Tx(dst_of(i) + 1));
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                for (d, saved) in descs.iter().zip(&ttl_csum) {
                    let f = xdplane_pipeline::FrameMem::frame_mut(&mut mem, d.addr + 22, 4);
                    f.copy_from_slice(saved);
                }
                batch.load(1, &descs);
                pipeline.process(&snap, &mut batch, &mut mem);
                black_box(&batch.meta[0].verdict);
            })
        });
        g.bench_function(format!("{name}/restore-only"), |b| {
            b.iter(|| {
                for (d, saved) in descs.iter().zip(&ttl_csum) {
                    let f = xdplane_pipeline::FrameMem::frame_mut(&mut mem, d.addr + 22, 4);
                    f.copy_from_slice(saved);
                }
                batch.load(1, &descs);
                black_box(&batch.meta[0].verdict);
            })
        });
    }
    g.finish();
}

/// Answers edited in place: the first `restore` bytes of every frame are restored in the
/// loop (the bytes the stage rewrites).
fn bench_answer(c: &mut Criterion, name: &str, frame: Vec<u8>, restore: usize, expect: Verdict) {
    let snap = snapshot();
    let mut pipeline = Pipeline::new();
    let frames: Vec<Vec<u8>> = (0..BATCH).map(|_| frame.clone()).collect();
    let (mut mem, descs) = load(&frames);
    let mut batch = Batch::default();
    batch.load(1, &descs);
    pipeline.process(&snap, &mut batch, &mut mem);
    assert!(batch.meta.iter().all(|m| m.verdict == expect));
    let pristine = &frame[..restore];
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(name, |b| {
        b.iter(|| {
            for d in &descs {
                xdplane_pipeline::FrameMem::frame_mut(&mut mem, d.addr, restore)
                    .copy_from_slice(pristine);
            }
            batch.load(1, &descs);
            pipeline.process(&snap, &mut batch, &mut mem);
            black_box(&batch.meta[0].verdict);
        })
    });
    g.bench_function(format!("{name}/restore-only"), |b| {
        b.iter(|| {
            for d in &descs {
                xdplane_pipeline::FrameMem::frame_mut(&mut mem, d.addr, restore)
                    .copy_from_slice(pristine);
            }
            batch.load(1, &descs);
            black_box(&batch.meta[0].verdict);
        })
    });
    g.finish();
}

fn bench_arp(c: &mut Criterion) {
    // Proxy ARP for another pod; the whole 42-byte frame is rewritten.
    bench_answer(
        c,
        "arp-reply/64",
        arp_request(pod_ip(1)),
        42,
        Verdict::Tx(1),
    );
}

fn bench_icmp(c: &mut Criterion) {
    // Ethernet + IPv4 header + ICMP type/code/checksum: the bytes the reply rewrites.
    bench_answer(c, "icmp-echo/64", echo_request(), 38, Verdict::Tx(1));
}

/// Whole batches whose frames differ: the first `restore` bytes of each frame are restored
/// from its own pristine copy in the loop (the bytes the stages rewrite), and the
/// descriptors reloaded (decapsulation and encapsulation move them).
fn bench_frames(
    c: &mut Criterion,
    name: &str,
    frames: Vec<Vec<u8>>,
    in_port: PortId,
    restore: usize,
    expect: impl Fn(usize) -> Verdict,
) {
    let snap = snapshot();
    let mut pipeline = Pipeline::new();
    let (mut mem, descs) = load(&frames);
    let mut batch = Batch::default();
    batch.load(in_port, &descs);
    pipeline.process(&snap, &mut batch, &mut mem);
    for (i, m) in batch.meta.iter().enumerate() {
        assert_eq!(m.verdict, expect(i), "{name}: packet {i}");
    }
    let pristine: Vec<&[u8]> = frames.iter().map(|f| &f[..restore]).collect();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(name, |b| {
        b.iter(|| {
            for (d, p) in descs.iter().zip(&pristine) {
                xdplane_pipeline::FrameMem::frame_mut(&mut mem, d.addr, restore).copy_from_slice(p);
            }
            batch.load(in_port, &descs);
            pipeline.process(&snap, &mut batch, &mut mem);
            black_box(&batch.meta[0].verdict);
        })
    });
    g.bench_function(format!("{name}/restore-only"), |b| {
        b.iter(|| {
            for (d, p) in descs.iter().zip(&pristine) {
                xdplane_pipeline::FrameMem::frame_mut(&mut mem, d.addr, restore).copy_from_slice(p);
            }
            batch.load(in_port, &descs);
            black_box(&batch.meta[0].verdict);
        })
    });
    g.finish();
}

fn bench_vxlan(c: &mut Criterion) {
    // Decapsulation: 64 VXLAN frames from server2 to 64 local pods. The stages rewrite the
    // inner MACs, TTL and checksum (bytes 50..76).
    let frames: Vec<Vec<u8>> = (0..BATCH as u16).map(vxlan_frame).collect();
    bench_frames(c, "vxlan-decap/64", frames, UPLINK, 76, |i| {
        Verdict::Tx(i as PortId + 1)
    });
    // Encapsulation: pod 0 → 64 pods on server2 (64 flows: source ports differ). The outer
    // headers land in the headroom; the frame's MACs, TTL and checksum are rewritten.
    let frames: Vec<Vec<u8>> = (0..BATCH as u16)
        .map(|i| udp_frame_from(pod_ip(0), 40000 + i, remote_ip(i)))
        .collect();
    bench_frames(c, "vxlan-encap/64", frames, 1, 26, |_| Verdict::Tx(UPLINK));
}

// ---- Services NAT ---------------------------------------------------------------------

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Flows in the table for the established-path benchmark.
const FLOWS: usize = 1_000_000;
/// Backends of the ClusterIP: pods 1..=10 (port `i + 1`), port 8080.
const BACKENDS: u16 = 10;

/// [`snapshot`] with the cluster network 10.244.0.0/16, masquerade on, and the ClusterIP
/// `VIP:80/tcp` over ten local backends.
fn nat_snapshot() -> Snapshot {
    let mut s = snapshot();
    s.node.cluster_net = Ipv4Addr::new(10, 244, 0, 0);
    s.node.cluster_prefix = 16;
    s.node.masquerade = true;
    let mut services = Services::default();
    let set = services.add_set(
        BackendSet::new(
            (1..=BACKENDS)
                .map(|i| Backend {
                    ip: pod_ip(i),
                    port: 8080,
                    local: true,
                })
                .collect(),
        )
        .unwrap(),
    );
    services
        .add_frontend(
            FrontendKey {
                ip: VIP,
                port: 80,
                proto: PROTO_TCP,
            },
            Frontend {
                name: "default/web:http".into(),
                kind: FrontendKind::ClusterIp,
                set,
                masquerade: false,
                drop_when_empty: false,
                affinity_timeout_s: 0,
                service_port: 0,
            },
        )
        .unwrap();
    s.services = services;
    s
}

/// A 60-byte TCP segment (no options, no payload) from `client:sport` to `VIP:80`.
fn tcp_to_vip(client: Ipv4Addr, sport: u16, flags: TcpFlags) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: sport,
        dst_port: 80,
        seq_number: 1000,
        ack_number: if flags.contains(TcpFlags::ACK) { 1 } else { 0 },
        flags,
        window_len: 64240,
        urgent_at: 0,
        options: &[],
        payload: &[],
    };
    let mut l4 = vec![0u8; tcp.buffer_len()];
    tcp.emit(&mut l4, client, VIP).unwrap();
    ipv4_frame(client, VIP, IpProtocol::TCP, &l4)
}

/// Flow `i` of the pre-filled table: one of pods 0..100 as client, a source port, the
/// backend of its Maglev choice's stand-in (i mod 10).
fn nat_flow(i: usize) -> (Tuple, Tuple) {
    let client = pod_ip((i % 100) as u16);
    let sport = 1024 + (i / 100) as u16;
    let orig = Tuple::new(PROTO_TCP, client, VIP, sport, 80);
    let backend = pod_ip(1 + (i % BACKENDS as usize) as u16);
    let rewrite = Tuple::new(PROTO_TCP, client, backend, sport, 8080);
    (orig, rewrite)
}

/// Copies `frames` into the batch's chunks (outside the timed region) and loads the batch.
fn put_all(mem: &mut VecFrames, frames: &[Vec<u8>], descs: &mut Vec<Desc>) {
    descs.clear();
    for (i, f) in frames.iter().enumerate() {
        descs.push(mem.put(i, 256, f));
    }
}

/// The established path: 1,000,000 flows in the shared table (inserted through its API),
/// batches of 64 ACKs of random flows (conntrack hit → DNAT rewrite → forward to the
/// backend pod). Frames are rewritten in place, so each batch is copied in before the
/// timed `process` call (`iter_custom`: only `Batch::load` + `process` are timed). The
/// same with 10,000 flows (a table that fits the caches) separates the code's cost from
/// the memory latency of a big table.
fn bench_nat_established(c: &mut Criterion) {
    bench_nat_established_with(c, FLOWS, "nat+conntrack/64/established-1M-flows");
    bench_nat_established_with(c, 10_000, "nat+conntrack/64/established-10k-flows");
}

fn bench_nat_established_with(c: &mut Criterion, count: usize, name: &str) {
    let snap = nat_snapshot();
    let flows = Arc::new(FlowTable::new(FlowTableConfig {
        capacity: count + count / 4,
        ..FlowTableConfig::default()
    }));
    for i in 0..count {
        let (o, r) = nat_flow(i);
        flows
            .insert(&o, &r, 0, Some(TcpFlags::ACK.0 as u8))
            .expect("pre-fill");
    }
    let mut pipeline = Pipeline::with_flows(PipelineConfig::default(), Arc::clone(&flows));
    // 256 batches of 64 random flows (xorshift), cycled.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let sets: Vec<Vec<Vec<u8>>> = (0..256)
        .map(|_| {
            (0..BATCH)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let (o, _) = nat_flow(x as usize % count);
                    tcp_to_vip(o.src, o.sport, TcpFlags::ACK)
                })
                .collect()
        })
        .collect();
    let mut mem = VecFrames::new(BATCH, CHUNK);
    let mut descs = Vec::with_capacity(BATCH);
    let mut batch = Batch::default();
    // Check once: every packet hits its flow and goes to its backend's pod port.
    put_all(&mut mem, &sets[0], &mut descs);
    batch.load(1, &descs);
    pipeline.process(&snap, &mut batch, &mut mem);
    for (m, d) in batch.meta.iter().zip(&descs) {
        let f = mem.get(*d);
        let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
        let pod = u16::from(dst.octets()[3]) - 2;
        assert_eq!(m.verdict, Verdict::Tx(pod + 1));
        assert!((1..=BACKENDS).contains(&pod));
    }
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(name, |b| {
        let mut k = 0usize;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                put_all(&mut mem, &sets[k % sets.len()], &mut descs);
                k += 1;
                let t = Instant::now();
                batch.load(1, &descs);
                pipeline.process(&snap, &mut batch, &mut mem);
                total += t.elapsed();
                black_box(&batch.meta[0].verdict);
            }
            total
        })
    });
    g.finish();
    drop(pipeline);
    drop(flows);
}

/// New flows: batches of 64 SYNs to the ClusterIP, each a new flow (client pod and source
/// port from a counter): conntrack miss → service lookup → Maglev → insert → DNAT →
/// forward. The table (1,000,000 flows) is replaced, outside the timing, when it holds
/// 500,000.
fn bench_nat_new_flows(c: &mut Criterion) {
    let snap = nat_snapshot();
    let cfg = FlowTableConfig {
        capacity: FLOWS,
        ..FlowTableConfig::default()
    };
    let mut pipeline =
        Pipeline::with_flows(PipelineConfig::default(), Arc::new(FlowTable::new(cfg)));
    let template = tcp_to_vip(pod_ip(0), 1024, TcpFlags::SYN);
    let mut frames = vec![template; BATCH];
    let mut mem = VecFrames::new(BATCH, CHUNK);
    let mut descs = Vec::with_capacity(BATCH);
    let mut batch = Batch::default();
    let mut n: u64 = 0;
    // Client pod (of 100) and source port of new flow `n`, written into a SYN with the
    // TCP checksum refreshed.
    let mut next_batch = |frames: &mut Vec<Vec<u8>>| {
        for f in frames.iter_mut() {
            let client = pod_ip((n % 100) as u16);
            let sport = 1024 + ((n / 100) % 64000) as u16;
            *f = tcp_to_vip(client, sport, TcpFlags::SYN);
            n += 1;
        }
    };
    next_batch(&mut frames);
    put_all(&mut mem, &frames, &mut descs);
    batch.load(1, &descs);
    pipeline.process(&snap, &mut batch, &mut mem);
    assert!(
        batch
            .meta
            .iter()
            .all(|m| matches!(m.verdict, Verdict::Tx(p) if (2..=BACKENDS + 1).contains(&p)))
    );
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("nat/64/new-flows-clusterip-10-backends", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if pipeline.flows().counters().entries >= (FLOWS / 2) as u64 {
                    pipeline = Pipeline::with_flows(
                        PipelineConfig::default(),
                        Arc::new(FlowTable::new(cfg)),
                    );
                }
                next_batch(&mut frames);
                put_all(&mut mem, &frames, &mut descs);
                let t = Instant::now();
                batch.load(1, &descs);
                pipeline.process(&snap, &mut batch, &mut mem);
                total += t.elapsed();
                black_box(&batch.meta[0].verdict);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_parse,
    bench_forward,
    bench_arp,
    bench_icmp,
    bench_vxlan,
    bench_nat_established,
    bench_nat_new_flows
);
criterion_main!(benches);
