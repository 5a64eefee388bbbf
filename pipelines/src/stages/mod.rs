//! The pipeline's stages, one file each, in the order they run.
//!
//! Every stage has a `NAME` (kebab-case, used in traces and docs) and a
//! `run(snap, batch, mem, …)` that handles exactly the packets whose `meta.next` is the
//! stage's own [`crate::Next`] variant, and leaves each of them with a later `next` or a
//! final verdict. Stages that keep state between batches take it as a last `&mut`
//! argument (owned by [`crate::Pipeline`]). Stages allocate nothing, take no locks and
//! cannot panic on any frame content: every header is read through a `new_checked` view
//! of `xdplane-wire`.
//!
//! `egress` is not a stage: it holds what several stages need to put a packet on the
//! uplink (uplink port, neighbour lookup, routing a packet the dataplane originates).
//! Neither is `nat_rewrite`: the packet editing `conntrack` and `nat` share (flow
//! identity, address/port rewrites with incremental checksums, ICMP error translation,
//! TCP resets, CRC32c).

pub mod arp;
pub mod conntrack;
pub(crate) mod egress;
pub mod eth_input;
pub mod icmp_echo;
pub mod icmp_error;
pub mod ip4_forward;
pub mod ip4_input;
pub mod nat;
pub mod nat_rewrite;
pub mod vxlan_decap;
pub mod vxlan_encap;

use crate::DropReason;
use crate::pipeline::NeighbourMisses;
use xdplane_wire::WireError;

/// Per-worker state of the stages that transmit on the uplink.
#[derive(Clone, Copy, Debug)]
pub struct TxState {
    /// Identification of the last IPv4 header the dataplane wrote (outer VXLAN headers,
    /// ICMP errors); incremented per header.
    pub(crate) ip_id: u16,
    /// Next hops found without a MAC.
    pub(crate) misses: NeighbourMisses,
}

impl TxState {
    pub fn new(ip_id: u16) -> TxState {
        TxState {
            ip_id,
            misses: NeighbourMisses::default(),
        }
    }
    /// The identification for the next IPv4 header this worker originates.
    #[inline]
    pub(crate) fn next_ip_id(&mut self) -> u16 {
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ip_id
    }
}

/// Maps an IPv4 view's length/version error to its drop reason.
#[inline]
pub(crate) fn ip4_error(e: WireError) -> DropReason {
    match e {
        WireError::Truncated => DropReason::Ip4Truncated,
        WireError::BadVersion => DropReason::Ip4BadVersion,
        WireError::BadHeaderLen => DropReason::Ip4BadIhl,
        _ => DropReason::Ip4BadLength,
    }
}
