//! The generator and sink checked against each other through a plain veth pair in
//! namespaces this test creates (needs root, like everything in the perf lab).
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use xdplane_perf::generator::{GenConfig, Generator, Limit, Rate, XDP_REDIRECT};
use xdplane_perf::netns::{Netns, veth_pair};
use xdplane_perf::sink::{Sink, SinkCounters, SinkFilter};
use xdplane_wire::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet, UdpPacket};

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let euid = uid_line.split_whitespace().nth(2).unwrap();
    assert_eq!(
        euid, "0",
        "the generator/sink test needs root (namespaces, BPF); run it with sudo"
    );
}

/// Two namespaces joined by a veth pair: `a` sends, `b` (sink attached) receives.
struct Pair {
    // Field order = drop order: the sink detaches before its namespace goes.
    sink: Sink,
    a: Netns,
    b: Netns,
    mac_b: [u8; 6],
}

const IP_B: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const PORT: u16 = 7777;

fn pair(tag: &str) -> (Pair, Generator) {
    require_root();
    let pfx = format!("xpt{}{tag}", std::process::id());
    let a = Netns::create(&format!("{pfx}-a")).unwrap();
    let b = Netns::create(&format!("{pfx}-b")).unwrap();
    veth_pair(&a, "eth0", &b, "eth0").unwrap();
    let mac_a = a.mac("eth0").unwrap();
    let mac_b = b.mac("eth0").unwrap();
    // The sink's XDP program gives b's eth0 the NAPI that redirected frames need.
    let sink = Sink::attach(
        Some(&b.path()),
        "eth0",
        SinkFilter {
            mac: Some(mac_b),
            ip: Some(IP_B),
            dst_port: Some(PORT),
        },
    )
    .unwrap();
    let mut cfg = GenConfig::new("eth0");
    cfg.netns = Some(a.path());
    cfg.src_mac = mac_a;
    cfg.dst_mac = mac_b;
    cfg.src_ip = Ipv4Addr::new(10, 99, 0, 1);
    cfg.dst_ip = IP_B;
    cfg.dst_port = PORT;
    let generator = Generator::new(cfg).unwrap();
    (Pair { sink, a, b, mac_b }, generator)
}

/// Sink counters once they stop moving (frames in flight have landed).
fn settled(sink: &Sink) -> SinkCounters {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = sink.counters().unwrap();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = sink.counters().unwrap();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[test]
fn every_frame_sent_is_counted_by_the_sink() {
    let (p, mut generator) = pair("c");
    let stop = AtomicBool::new(false);
    let before = generator.sent().unwrap();
    let r = generator
        .run(Limit::Count(200_000), Rate::Max, &stop)
        .unwrap();
    assert_eq!(r.sent, 200_000);
    assert_eq!(generator.sent().unwrap() - before, 200_000);
    let c = settled(&p.sink);
    assert_eq!(c.matched, 200_000, "sink counters: {c:?}");
    assert_eq!(c.packets, 200_000, "sink counters: {c:?}");
    assert_eq!(
        c.matched_bytes,
        200_000 * 60,
        "64-byte frames are 60 bytes without FCS"
    );
    assert_eq!(c.reordered, 0);
    assert!(c.lat_sum_ns > 0 && c.lat_max_ns > 0);
    let _ = (&p.a, &p.b);
}

#[test]
fn frames_to_a_wrong_destination_are_missing() {
    let (p, mut generator) = pair("w");
    let stop = AtomicBool::new(false);
    generator
        .run(Limit::Count(50_000), Rate::Max, &stop)
        .unwrap();
    // The same frames to another MAC: they still reach the sink's device, but are not its.
    generator.set_dst_mac([0x02, 0xde, 0xad, 0, 0, 1]).unwrap();
    generator
        .run(Limit::Count(30_000), Rate::Max, &stop)
        .unwrap();
    // And to another IP, right MAC.
    generator.set_dst_mac(p.mac_b).unwrap();
    generator
        .update(|c| c.dst_ip = Ipv4Addr::new(10, 99, 0, 3))
        .unwrap();
    generator
        .run(Limit::Count(20_000), Rate::Max, &stop)
        .unwrap();
    let c = settled(&p.sink);
    assert_eq!(c.packets, 100_000, "{c:?}");
    assert_eq!(c.matched, 50_000, "{c:?}");
    let missing = 100_000 - c.matched;
    assert_eq!(missing, 50_000);

    // A sink that accepts any destination matches them all.
    let mut sink = p.sink;
    sink.set_filter(SinkFilter::default()).unwrap();
    let before = sink.counters().unwrap();
    generator
        .run(Limit::Count(10_000), Rate::Max, &stop)
        .unwrap();
    let c = settled(&sink).since(&before);
    assert_eq!((c.packets, c.matched), (10_000, 10_000));
    drop(sink);
}

#[test]
fn rate_limited_run_keeps_its_average() {
    let (p, mut generator) = pair("r");
    let stop = AtomicBool::new(false);
    let t = Instant::now();
    let r = generator
        .run(Limit::Count(100_000), Rate::Pps(200_000), &stop)
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r.sent, 100_000);
    // 0.5 s at 200 kpps, paced by the program: never early (at most a 32-frame burst at the
    // start), late only by the last call's RCU grace period or on a loaded machine.
    assert!((0.49..1.5).contains(&secs), "took {secs} s");
    assert_eq!(settled(&p.sink).matched, 100_000);
}

#[test]
fn frames_have_the_configured_headers() {
    let (_p, mut generator) = pair("f");
    generator
        .update(|c| {
            c.flows = 3;
            c.src_port = 40_000;
            c.frame_size = 128;
        })
        .unwrap();
    let mut seqs = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..4 {
        let (verdict, f) = generator.render_frame().unwrap();
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(f.len(), 124);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.dst_addr().0, generator.config().dst_mac);
        assert_eq!(eth.src_addr().0, generator.config().src_mac);
        assert_eq!(eth.ethertype(), EtherType::IPV4);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum(), "IPv4 checksum");
        assert_eq!(ip.total_len(), 110);
        assert_eq!(ip.protocol(), IpProtocol::UDP);
        assert_eq!(ip.src_addr(), generator.config().src_ip);
        assert_eq!(ip.dst_addr(), IP_B);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(udp.dst_port(), PORT);
        assert_eq!(udp.len(), 90);
        ports.push(udp.src_port());
        let pl = &ip.payload()[8..];
        seqs.push(u64::from_ne_bytes(pl[..8].try_into().unwrap()));
        assert_ne!(u64::from_ne_bytes(pl[8..16].try_into().unwrap()), 0);
    }
    assert_eq!(ports, [40_000, 40_001, 40_002, 40_000]);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}
