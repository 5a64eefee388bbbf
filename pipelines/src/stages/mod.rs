//! The pipeline's stages, one file each, in the order they run.
//!
//! Every stage has a `NAME` (kebab-case, used in traces and docs) and a
//! `run(snap, batch, mem)` that handles exactly the packets whose `meta.next` is the
//! stage's own [`crate::Next`] variant, and leaves each of them with a later `next` or a
//! final verdict. Stages allocate nothing, take no locks and cannot panic on any frame
//! content: every header is read through a `new_checked` view of `xdplane-wire`.

pub mod arp;
pub mod eth_input;
pub mod icmp_echo;
pub mod ip4_forward;
pub mod ip4_input;

use crate::DropReason;
use xdplane_wire::WireError;

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
