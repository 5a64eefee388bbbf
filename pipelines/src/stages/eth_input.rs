//! `eth-input`: parses the Ethernet II header and dispatches on the EtherType.
//!
//! ARP → [`Next::Arp`], IPv4 → [`Next::Ip4Input`] (with `meta.l3_offset` set); anything
//! else, VLAN-tagged frames and IPv6 included, is dropped as `eth-unsupported-type`; a
//! frame shorter than 14 bytes as `eth-truncated`. A decapsulated frame must be IPv4:
//! anything else (ARP included: flannel's peers never ARP through the tunnel, their
//! neighbour entries are static) is `vxlan-inner-unsupported`.

use crate::{BATCH, Batch, DropReason, FrameMem, Next, Snapshot};
use xdplane_wire::{EtherType, EthernetFrame};

pub const NAME: &str = "eth-input";

/// Offset of the L3 header after an untagged Ethernet II header.
const L3_OFFSET: u16 = 14;

pub fn run<M: FrameMem>(_snap: &Snapshot, batch: &mut Batch, mem: &mut M) {
    let n = batch.len.min(BATCH);
    for (desc, meta) in batch.desc[..n].iter().zip(&mut batch.meta[..n]) {
        if meta.next != Next::EthInput {
            continue;
        }
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        match classify(frame, meta.decapped) {
            Ok(next) => {
                meta.l3_offset = L3_OFFSET;
                meta.next = next;
            }
            Err(reason) => meta.drop(reason),
        }
    }
}

#[inline]
fn classify(frame: &[u8], decapped: bool) -> Result<Next, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::EthTruncated)?;
    match eth.ethertype() {
        EtherType::IPV4 => Ok(Next::Ip4Input),
        _ if decapped => Err(DropReason::VxlanInnerUnsupported),
        EtherType::ARP => Ok(Next::Arp),
        _ => Err(DropReason::EthUnsupportedType),
    }
}
