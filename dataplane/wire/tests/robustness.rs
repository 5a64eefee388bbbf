//! No input makes a checked view or any of its accessors panic.
//!
//! Feeds every truncation of the captured frames, bit-flipped variants of them and
//! pseudo-random buffers to every `new_checked`, every getter, the in-place setters of a
//! checked view, the `Repr` parsers and (for what parses) `emit`.

#[path = "common/fixtures.rs"]
mod fixtures;

use std::hint::black_box;
use std::net::Ipv4Addr;
use xdplane_wire::*;

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
}

const SRC: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const DST: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

fn ethernet(b: &[u8]) {
    if let Ok(f) = EthernetFrame::new_checked(b) {
        black_box((f.dst_addr(), f.src_addr(), f.ethertype(), f.payload().len()));
        let r = EthernetRepr::parse(&f).unwrap();
        let mut out = [0u8; 14];
        r.emit(&mut out).unwrap();
        assert_eq!(&out[..], &b[..14]);
        let mut c = b.to_vec();
        let mut f = EthernetFrame::new_checked(&mut c[..]).unwrap();
        f.set_src_addr(MacAddr::BROADCAST);
        f.set_dst_addr(MacAddr::ZERO);
        f.set_ethertype(EtherType::VLAN);
        black_box(f.payload_mut().len());
    }
}

fn arp(b: &[u8]) {
    if let Ok(p) = ArpPacket::new_checked(b) {
        black_box((
            p.hardware_type(),
            p.protocol_type(),
            p.hardware_len(),
            p.protocol_len(),
            p.operation(),
            p.is_ethernet_ipv4(),
            p.source_hardware_addr(),
            p.source_protocol_addr(),
            p.target_hardware_addr(),
            p.target_protocol_addr(),
        ));
        if let Ok(r) = ArpRepr::parse(&p) {
            let mut out = [0u8; 28];
            r.emit(&mut out).unwrap();
            assert_eq!(&out[..], &b[..28]);
        }
        let mut c = b.to_vec();
        let mut p = ArpPacket::new_checked(&mut c[..]).unwrap();
        p.set_operation(ArpOp::REPLY);
        p.set_source_hardware_addr(MacAddr::BROADCAST);
        p.set_source_protocol_addr(SRC);
        p.set_target_hardware_addr(MacAddr::ZERO);
        p.set_target_protocol_addr(DST);
    }
}

fn ipv4(b: &[u8]) {
    if let Ok(p) = Ipv4Packet::new_checked(b) {
        black_box((
            p.version(),
            p.header_len(),
            p.dscp(),
            p.ecn(),
            p.total_len(),
            p.ident(),
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.is_fragment(),
            p.ttl(),
            p.protocol(),
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
            p.options_len(),
            p.options().len(),
            p.verify_checksum(),
        ));
        let payload = p.payload();
        assert_eq!(
            payload.len(),
            usize::from(p.total_len() - u16::from(p.header_len()))
        );
        if let Ok(r) = Ipv4Repr::parse(&p) {
            let mut out = [0u8; 20];
            r.emit(&mut out).unwrap();
            assert!(Ipv4Packet::new_unchecked(&out[..]).verify_checksum());
        }
        icmp(payload);
        udp(payload, p.src_addr(), p.dst_addr());
        tcp(payload, p.src_addr(), p.dst_addr());

        let mut c = b.to_vec();
        let mut p = Ipv4Packet::new_checked(&mut c[..]).unwrap();
        black_box(p.decrement_ttl());
        p.set_src_addr(DST);
        p.set_dst_addr(SRC);
        p.set_ttl(64);
        p.fill_checksum();
        assert!(p.verify_checksum());
        black_box(p.options_mut().len());
        black_box(p.payload_mut().len());
        // Length setters may break the view's consistency; accessors must still not panic.
        p.set_header_len(60);
        p.set_total_len(u16::MAX);
        black_box((p.options().len(), p.payload().len(), p.verify_checksum()));
        p.fill_checksum();
        black_box((p.options_mut().len(), p.payload_mut().len()));
    }
}

fn icmp(b: &[u8]) {
    if let Ok(p) = Icmpv4Packet::new_checked(b) {
        black_box((
            p.msg_type(),
            p.msg_code(),
            p.checksum(),
            p.echo_ident(),
            p.echo_seq_no(),
            p.next_hop_mtu(),
            p.data().len(),
            p.verify_checksum(),
        ));
        if let Ok(r) = Icmpv4Repr::parse(&p) {
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out).unwrap();
            let q = Icmpv4Packet::new_checked(&out[..]).unwrap();
            assert_eq!(Icmpv4Repr::parse(&q), Ok(r));
        }
        let mut c = b.to_vec();
        let mut p = Icmpv4Packet::new_checked(&mut c[..]).unwrap();
        let was_valid = p.verify_checksum();
        p.set_type_code_incremental(Icmpv4Message::ECHO_REPLY, 0);
        assert_eq!(p.verify_checksum(), was_valid);
        p.set_echo_ident(1);
        p.set_echo_seq_no(2);
        p.fill_checksum();
        assert!(p.verify_checksum());
    }
}

fn udp(b: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    if let Ok(p) = UdpPacket::new_checked(b) {
        black_box((
            p.src_port(),
            p.dst_port(),
            p.len(),
            p.is_empty(),
            p.checksum(),
            p.payload().len(),
            p.verify_checksum(src, dst),
        ));
        if let Ok(r) = UdpRepr::parse(&p, src, dst) {
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out, src, dst).unwrap();
            assert!(
                UdpPacket::new_checked(&out[..])
                    .unwrap()
                    .verify_checksum(src, dst)
            );
        }
        let mut c = b.to_vec();
        let mut p = UdpPacket::new_checked(&mut c[..]).unwrap();
        p.fill_checksum(src, dst);
        assert!(p.verify_checksum(src, dst));
        p.set_len(u16::MAX);
        black_box((p.payload().len(), p.verify_checksum(src, dst)));
        p.fill_checksum(src, dst);
        black_box(p.payload_mut().len());
    }
}

fn tcp(b: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    if let Ok(p) = TcpPacket::new_checked(b) {
        black_box((
            p.src_port(),
            p.dst_port(),
            p.seq_number(),
            p.ack_number(),
            p.header_len(),
            p.flags(),
            p.window_len(),
            p.checksum(),
            p.urgent_at(),
            p.options().len(),
            p.payload().len(),
            p.verify_checksum(src, dst),
        ));
        if let Ok(r) = TcpRepr::parse(&p, src, dst) {
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out, src, dst).unwrap();
            let q = TcpPacket::new_checked(&out[..]).unwrap();
            assert_eq!(TcpRepr::parse(&q, src, dst), Ok(r));
        }
        let mut c = b.to_vec();
        let mut p = TcpPacket::new_checked(&mut c[..]).unwrap();
        p.set_flags(TcpFlags::RST);
        p.fill_checksum(src, dst);
        assert!(p.verify_checksum(src, dst));
        p.set_header_len(60);
        black_box((p.options().len(), p.payload().len()));
        black_box((p.options_mut().len(), p.payload_mut().len()));
    }
}

/// Every view at every offset a parser could reach it.
fn vxlan(b: &[u8]) {
    if let Ok(h) = VxlanHeader::new_checked(b) {
        black_box((
            h.flags(),
            h.has_vni(),
            h.vni(),
            h.reserved0(),
            h.reserved1(),
            h.is_plain(),
            h.payload().len(),
        ));
        if let Ok(r) = VxlanRepr::parse(&h) {
            let mut out = [0u8; 8];
            r.emit(&mut out).unwrap();
            assert_eq!(&out[..], &b[..8]);
        }
        let mut c = b.to_vec();
        let mut h = VxlanHeader::new_checked(&mut c[..]).unwrap();
        h.set_flags(0xff);
        h.set_vni(u32::MAX);
        h.clear_reserved();
        black_box(h.payload_mut().len());
    }
}

fn everything(b: &[u8]) {
    ethernet(b);
    if let Some(rest) = b.get(42..) {
        vxlan(rest);
    }
    for off in [0, 14, 34, 50, 64, 84] {
        if let Some(rest) = b.get(off..) {
            arp(rest);
            ipv4(rest);
            icmp(rest);
            udp(rest, SRC, DST);
            tcp(rest, SRC, DST);
        }
    }
}

const FRAMES: &[&[u8]] = &[
    fixtures::ARP_REQUEST,
    fixtures::ARP_REPLY,
    fixtures::ICMP_ECHO_REQUEST,
    fixtures::ICMP_ECHO_REPLY,
    fixtures::UDP_OFFLOADED,
    fixtures::TCP_SYN_OFFLOADED,
    fixtures::TCP_SYNACK_OFFLOADED,
    fixtures::TCP_ACK_OFFLOADED,
    fixtures::IPV6_NEIGHBOR_SOLICIT,
    fixtures::VXLAN_UDP,
];

#[test]
fn every_truncation_of_captured_frames() {
    for frame in FRAMES {
        for n in 0..=frame.len() {
            everything(&frame[..n]);
        }
    }
}

#[test]
fn bit_flips_of_captured_frames() {
    let mut rng = Rng(0x5eed_1234);
    for frame in FRAMES {
        for _ in 0..2000 {
            let mut b = frame.to_vec();
            for _ in 0..=(rng.next() % 4) {
                let at = rng.next() as usize % b.len();
                b[at] ^= 1 << (rng.next() % 8);
            }
            let n = if rng.next().is_multiple_of(4) {
                rng.next() as usize % (b.len() + 1)
            } else {
                b.len()
            };
            everything(&b[..n]);
        }
    }
}

#[test]
fn pseudo_random_buffers() {
    let mut rng = Rng(0xdead_beef);
    for _ in 0..20_000 {
        let len = rng.next() as usize % 130;
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Make some of them look like IPv4 so the deeper views are reached.
        if len > 14 && rng.next().is_multiple_of(2) {
            b[12] = 0x08;
            b[13] = 0x00;
            b[14] = 0x40 | (rng.next() as u8 & 0x0f);
            if len > 17 {
                let tl = (rng.next() as usize % (len - 13)) as u16;
                b[16..18].copy_from_slice(&tl.to_be_bytes());
            }
        }
        everything(&b);
    }
}
