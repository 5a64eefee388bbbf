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

/// xorshift32 (Marsaglia): deterministic, no dependency.
struct Rng(u32);
impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n
    }
}

fn valid_frames() -> Vec<Vec<u8>> {
    vec![
        arp_request(MAC_A, POD_A, GW),
        arp_request(MAC_A, POD_A, POD_B),
        arp_frame(ArpOp::REPLY, MAC_A, POD_A, PORT_A_MAC, GW),
        echo_request(POD_A, GW, 1, 2, b"abcdefgh"),
        udp_frame(POD_A, POD_B, 1, 2, b"hello", 64),
        udp_frame(POD_A, POD_NONE, 1, 2, b"hello", 64),
        udp_frame(POD_A, POD_GHOST, 1, 2, b"hello", 64),
        tcp_frame(POD_A, POD_B, b"data", 2),
        tcp_frame(POD_A, GW, b"", 64),
    ]
}

/// Random bytes, truncations and bit flips of valid frames, and frames that only look
/// like IPv4, in random batch sizes on random ports (known and unknown).
#[test]
fn random_frames_always_get_a_final_verdict() {
    let snap = snapshot();
    let valid = valid_frames();
    let mut rng = Rng(0x2545_f491);
    let mut mem = VecFrames::new(BATCH, 2048);
    let mut batch = Batch::default();
    let mut tx = 0usize;
    let mut drops = [0usize; DropReason::COUNT];
    for _round in 0..600 {
        let n = 1 + rng.below(BATCH);
        let mut descs = Vec::with_capacity(n);
        for i in 0..n {
            let mut f = match rng.below(4) {
                0 => (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
                1 => {
                    let v = &valid[rng.below(valid.len())];
                    v[..rng.below(v.len() + 1)].to_vec()
                }
                2 => {
                    let mut v = valid[rng.below(valid.len())].clone();
                    for _ in 0..=rng.below(3) {
                        let at = rng.below(v.len());
                        v[at] ^= 1 << rng.below(8);
                    }
                    v
                }
                _ => {
                    // Ethernet + IPv4-looking header with random fields.
                    let mut v: Vec<u8> =
                        (0..14 + rng.below(120)).map(|_| rng.next() as u8).collect();
                    v[12] = 0x08;
                    v[13] = if rng.below(4) == 0 { 0x06 } else { 0x00 };
                    if v.len() > 14 {
                        v[14] = 0x40 | (rng.next() as u8 & 0x0f);
                    }
                    v
                }
            };
            f.truncate(2048);
            descs.push(mem.put(i, 0, &f));
        }
        batch.load(0, &descs);
        for m in &mut batch.meta[..n] {
            m.in_port = rng.below(6) as PortId;
        }
        Pipeline.process(&snap, &mut batch, &mut mem);
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
                    // and, if IPv4, a valid header checksum.
                    let cfg = snap.port(port).expect("tx only to known ports");
                    let out = mem.get(batch.desc[i]);
                    assert!(batch.desc[i].len <= rx.len);
                    let eth = EthernetFrame::new_checked(out).unwrap();
                    assert_eq!(eth.src_addr(), MacAddr(cfg.mac));
                    if eth.ethertype() == EtherType::IPV4 {
                        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
                        assert!(ip.verify_checksum());
                    }
                }
            }
        }
    }
    // The generator reaches the interesting paths, not just eth-truncated.
    assert!(tx > 100, "only {tx} transmitted");
    for r in [
        DropReason::EthUnsupportedType,
        DropReason::ArpMalformed,
        DropReason::Ip4BadChecksum,
        DropReason::Ip4BadIhl,
        DropReason::Ip4BadLength,
        DropReason::PortDown,
    ] {
        assert!(drops[r as usize] > 0, "{} never hit", r.name());
    }
}
