//! `vxlan-decap`: takes the inner frame out of VXLAN packets for this node (RFC 7348),
//! as Linux's vxlan driver on flannel's `flannel.1` does.
//!
//! Every packet enters here. Packets from other ports than the snapshot's uplink go
//! straight on to `eth-input`. On the uplink, a frame is VXLAN for us when it is
//! Ethernet/IPv4 with a valid header (checksum included), an unfragmented UDP datagram
//! from a unicast source to `node_ip`, destination port `vxlan_port`. Anything else
//! continues to `eth-input` unchanged (whose checks then drop what is malformed, and
//! `ip4-input` what is addressed to the node IP).
//!
//! A VXLAN datagram is then checked:
//! - UDP length field beyond the IP payload, fewer than 8 bytes of VXLAN header, or an
//!   inner frame shorter than an Ethernet header → `vxlan-truncated`;
//! - flags other than exactly the I flag, or reserved bits set → `vxlan-bad-flags`
//!   (RFC 7348 section 5 says to ignore reserved bits; Linux drops such packets unless an
//!   extension is configured, and flannel configures none);
//! - VNI other than the node's → `vxlan-bad-vni`;
//! - inner source MAC equal to our VtepMAC (our own packet came back) → `vxlan-loop`
//!   (Linux's `vxlan_set_mac` drops these too);
//! - outer ECN CE over an inner IPv4 packet that is not ECN-capable → `vxlan-ecn-invalid`;
//!   over an ECN-capable one, the inner header is marked CE (RFC 6040 section 4.2, with an
//!   RFC 1624 checksum update), as Linux's `INET_ECN_decapsulate`.
//!
//! The outer UDP checksum is not verified: RFC 7348 senders SHOULD send zero, and Linux
//! senders on a veth leave a partial (offloaded) checksum that AF_XDP hands over as is;
//! the inner headers carry their own checksums.
//!
//! The descriptor then points at the inner frame (`addr` advanced past the outer headers,
//! `len` = the inner frame as the UDP length delimits it), `meta.decapped` is set, and the
//! frame continues at `eth-input`.

use crate::{BATCH, Batch, DropReason, FrameMem, Next, Snapshot};
use xdplane_wire::checksum;
use xdplane_wire::{
    EtherType, EthernetFrame, IpProtocol, Ipv4Packet, MacAddr, UdpPacket, VxlanHeader,
};

pub const NAME: &str = "vxlan-decap";

/// IPv4 ECN codepoints (RFC 3168 section 5).
const ECN_NOT_ECT: u8 = 0b00;
const ECN_CE: u8 = 0b11;

pub fn run<M: FrameMem>(snap: &Snapshot, batch: &mut Batch, mem: &mut M) {
    let n = batch.len.min(BATCH);
    for (desc, meta) in batch.desc[..n].iter_mut().zip(&mut batch.meta[..n]) {
        if meta.next != Next::VxlanDecap {
            continue;
        }
        if snap.node.uplink != Some(meta.in_port) {
            meta.next = Next::EthInput;
            continue;
        }
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        match decap(snap, frame) {
            Ok(Some((skip, len))) => {
                // skip + len ≤ desc.len (a u32): both fit.
                desc.addr += skip as u64;
                desc.len = len as u32;
                meta.decapped = true;
                meta.next = Next::EthInput;
            }
            Ok(None) => meta.next = Next::EthInput,
            Err(reason) => meta.drop(reason),
        }
    }
}

/// `Ok(Some((offset of the inner frame, its length)))` for a VXLAN packet to us,
/// `Ok(None)` for other traffic.
#[inline]
fn decap(snap: &Snapshot, frame: &mut [u8]) -> Result<Option<(usize, usize)>, DropReason> {
    let Some(node_ip) = snap.node.node_ip else {
        return Ok(None);
    };
    let (skip, len, outer_ecn) = {
        let Ok(eth) = EthernetFrame::new_checked(&*frame) else {
            return Ok(None);
        };
        if eth.ethertype() != EtherType::IPV4 {
            return Ok(None);
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return Ok(None);
        };
        let src = ip.src_addr();
        if ip.protocol() != IpProtocol::UDP
            || ip.dst_addr() != node_ip
            || ip.is_fragment()
            || src.is_multicast()
            || src.is_broadcast()
            || src.is_unspecified()
            || !ip.verify_checksum()
        {
            return Ok(None);
        }
        let payload = ip.payload();
        let dst_port = match payload.get(2..4) {
            Some(p) => u16::from_be_bytes([p[0], p[1]]),
            None => return Ok(None),
        };
        if dst_port != snap.node.vxlan_port {
            return Ok(None);
        }
        let udp = UdpPacket::new_checked(payload).map_err(|_| DropReason::VxlanTruncated)?;
        let vx = VxlanHeader::new_checked(udp.payload()).map_err(|_| DropReason::VxlanTruncated)?;
        if !vx.is_plain() {
            return Err(DropReason::VxlanBadFlags);
        }
        if vx.vni() != snap.node.vni {
            return Err(DropReason::VxlanBadVni);
        }
        let inner =
            EthernetFrame::new_checked(vx.payload()).map_err(|_| DropReason::VxlanTruncated)?;
        if inner.src_addr() == MacAddr(snap.node.vtep_mac) {
            return Err(DropReason::VxlanLoop);
        }
        // Ethernet + IP header + UDP + VXLAN headers.
        let skip = EthernetFrame::<&[u8]>::HEADER_LEN + usize::from(ip.header_len()) + 16;
        (skip, vx.payload().len(), ip.ecn())
    };
    if outer_ecn == ECN_CE {
        let inner = frame
            .get_mut(skip..skip + len)
            .ok_or(DropReason::VxlanTruncated)?;
        mark_ce(inner)?;
    }
    Ok(Some((skip, len)))
}

/// RFC 6040 section 4.2 for an outer CE mark: the inner IPv4 header gets CE, or the packet
/// is dropped when it is not ECN-capable. Inner frames that are not IPv4 are left for
/// `eth-input`/`ip4-input` to judge.
#[inline]
fn mark_ce(inner: &mut [u8]) -> Result<(), DropReason> {
    let mut eth = EthernetFrame::new_unchecked(inner);
    if eth.ethertype() != EtherType::IPV4 {
        return Ok(());
    }
    let Ok(mut ip) = Ipv4Packet::new_checked(eth.payload_mut()) else {
        return Ok(());
    };
    let ecn = ip.ecn();
    if ecn == ECN_NOT_ECT {
        return Err(DropReason::VxlanEcnInvalid);
    }
    if ecn != ECN_CE {
        // The version/IHL + DSCP/ECN word changes: RFC 1624 eqn. 3.
        let tos = (ip.dscp() << 2) | ecn;
        let vihl = (ip.version() << 4) | (ip.header_len() / 4);
        let old = u16::from_be_bytes([vihl, tos]);
        let new = u16::from_be_bytes([vihl, tos | ECN_CE]);
        let c = checksum::update_u16(ip.checksum(), old, new);
        ip.set_ecn(ECN_CE);
        ip.set_checksum(c);
    }
    Ok(())
}
