//! Packet-layer micro-benchmarks: header parsing with the `xdplane-wire` views and whole
//! batches through `Pipeline::process` (forwarding, ARP replies, ICMP echo replies).
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
use xdplane_pipeline::{
    BATCH, Batch, Desc, LocalEndpoint, LocalEndpoints, NodeTables, Pipeline, PortConfig, PortId,
    PortKind, Snapshot, VecFrames, Verdict,
};
use xdplane_wire::{
    ArpOp, ArpRepr, EtherType, EthernetFrame, EthernetRepr, Icmpv4Repr, IpProtocol, Ipv4Packet,
    Ipv4Repr, MacAddr, UdpPacket, UdpRepr,
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

/// Pod `i` sits on port `i + 1`.
fn snapshot() -> Snapshot {
    let mut ports = vec![None];
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
    Snapshot {
        generation: 1,
        node: NodeTables {
            name: "bench".into(),
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

fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 34 + l4.len()];
    EthernetRepr {
        src_addr: pod_mac(0),
        dst_addr: port_mac(1),
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
    let udp = UdpRepr {
        src_port: 40000,
        dst_port: 8080,
        payload: &[0x5a; 18],
    };
    let mut l4 = vec![0u8; udp.buffer_len()];
    udp.emit(&mut l4, pod_ip(0), dst).unwrap();
    ipv4_frame(pod_ip(0), dst, IpProtocol::UDP, &l4)
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
    let pipeline = Pipeline;
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
    let pipeline = Pipeline;
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

criterion_group!(benches, bench_parse, bench_forward, bench_arp, bench_icmp);
criterion_main!(benches);
