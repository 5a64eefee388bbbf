//! `conntrack`: finds the flow a packet belongs to in the shared flow table and applies
//! its translation (services.md section 2).
//!
//! The packet's tuple: protocol, addresses and TCP/UDP/SCTP ports, or for an ICMP echo
//! request or reply the identifier as both ports. Fragments, truncated L4 headers, other
//! protocols and other ICMP messages are not tracked and go on to `nat` (whose local
//! decision handles them).
//!
//! A hit (either direction, one lock-free lookup): the packet becomes the hit's rewrite —
//! addresses with the IPv4 header checksum, ports or echo identifier with the L4
//! checksum (RFC 1624 incremental updates; a UDP checksum of 0 stays 0; SCTP's CRC32c
//! recomputed when a port changes) — the flow's last-seen time and TCP state advance
//! (`FlowTable::touch` with the batch clock and the TCP flags), and it goes to
//! `ip4-forward`. A SYN in the original direction of a TCP flow in TIME_WAIT or CLOSE
//! reopens it: the old entry is removed and `nat` decides anew (Linux does the same, so a
//! reused client port does not stick to a backend that may be gone).
//!
//! An ICMP error (destination unreachable, time exceeded, parameter problem) quotes a
//! packet the dataplane sent: the *reversed* quoted tuple is looked up (the error travels
//! the other way). On a hit the error is translated back to what the endpoint that sent
//! the quoted packet knows — see [`super::nat_rewrite::translate_icmp_error`] — and goes
//! to `ip4-forward` (the flow is not touched, like Linux). For a Service flow
//! (client C → frontend F, backend B):
//! - the backend side (B or a router on its way) reports about `C → B`: the quote becomes
//!   `C → F` with the frontend port, the outer source B (if it was B) becomes F, the
//!   outer destination stays C;
//! - the client side reports about `F → C`: the quote becomes `B → C`, the outer
//!   destination F becomes B.
//!
//! For a masqueraded flow (pod P → outside X, sent as node N:port): an error from the
//! internet to N quoting `N:port → X` becomes one to P quoting `P:pport → X`; a router's
//! source address is kept.
//!
//! Everything else (misses, untracked packets, errors about unknown flows) → `nat`.
//! Drops: `nat-unsupported` when a hit's translation cannot be applied (an ICMP error
//! whose quote is too short to translate).

use super::nat_rewrite::{self, Ends, Pkt};
use crate::tables::conntrack::{Dir, FlowState, FlowTable, Hit, TcpState, Tuple, tcp};
use crate::{BATCH, Batch, DropReason, FrameMem, Next, Snapshot};
use std::net::Ipv4Addr;

pub const NAME: &str = "conntrack";

/// What the first pass found out about a packet.
#[derive(Clone, Copy)]
enum Work {
    /// Not for this stage, or not trackable: on to `nat`.
    Skip,
    Flow {
        proto: u8,
        ends: Ends,
        tcp_flags: Option<u8>,
    },
    /// An ICMP error quoting `q` (a packet travelling the other way).
    Error { proto: u8, q: Ends },
}

/// Three passes over the batch: classify every packet and hash its key, look all keys up
/// back to back (independent table probes, so the CPU overlaps their cache misses), then
/// translate.
pub fn run<M: FrameMem>(_snap: &Snapshot, batch: &mut Batch, mem: &mut M, flows: &FlowTable) {
    let n = batch.len.min(BATCH);
    let now = batch.now_ns;
    let mut work = [Work::Skip; BATCH];
    let mut keys = [(
        Tuple::new(0, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, 0, 0),
        0u64,
    ); BATCH];
    for (i, (desc, meta)) in batch.desc[..n].iter().zip(&mut batch.meta[..n]).enumerate() {
        if meta.next != Next::Conntrack {
            continue;
        }
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        let Some(l3) = frame.get(usize::from(meta.l3_offset)..) else {
            meta.drop(DropReason::Ip4Truncated);
            continue;
        };
        let (w, key) = match nat_rewrite::classify(l3) {
            Pkt::Flow {
                proto,
                ends: e,
                tcp_flags,
                ..
            } => (
                Work::Flow {
                    proto,
                    ends: e,
                    tcp_flags,
                },
                tuple(proto, e),
            ),
            Pkt::IcmpError => match nat_rewrite::quoted_flow(l3) {
                Some((proto, q)) => (Work::Error { proto, q }, tuple(proto, q.reversed())),
                None => (Work::Skip, keys[i].0),
            },
            Pkt::Opaque { .. } | Pkt::Other => (Work::Skip, keys[i].0),
        };
        work[i] = w;
        keys[i] = (key, key.hash());
    }
    let mut hits: [Option<Hit>; BATCH] = [None; BATCH];
    for ((w, (key, hash)), hit) in work[..n].iter().zip(&keys[..n]).zip(&mut hits[..n]) {
        if !matches!(w, Work::Skip) {
            *hit = flows.lookup_hashed(key, *hash);
        }
    }
    for (((desc, meta), w), hit) in batch.desc[..n]
        .iter()
        .zip(&mut batch.meta[..n])
        .zip(&work[..n])
        .zip(&hits[..n])
    {
        if meta.next != Next::Conntrack {
            continue;
        }
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        let l3 = frame
            .get_mut(usize::from(meta.l3_offset)..)
            .unwrap_or(&mut []);
        match apply(flows, now, l3, *w, *hit) {
            Ok(true) => {
                meta.translated = true;
                meta.next = Next::Ip4Forward;
            }
            Ok(false) => meta.next = Next::Nat,
            Err(reason) => meta.drop(reason),
        }
    }
}

/// The table's tuple for a packet identity.
#[inline]
pub(crate) fn tuple(proto: u8, e: Ends) -> Tuple {
    Tuple {
        proto,
        src: e.src,
        dst: e.dst,
        sport: e.sport,
        dport: e.dport,
    }
}

/// A tuple's packet identity.
#[inline]
pub(crate) fn ends(t: &Tuple) -> Ends {
    Ends {
        src: t.src,
        dst: t.dst,
        sport: t.sport,
        dport: t.dport,
    }
}

/// A SYN (without ACK or RST) in the original direction of a TCP flow in TIME_WAIT or
/// CLOSE: the client reuses the port for a new connection (Linux's "reopen" in
/// `nf_conntrack_tcp_packet`).
#[inline]
fn reopens(hit: &Hit, tcp_flags: Option<u8>) -> bool {
    let syn_only = tcp_flags.is_some_and(|f| f & (tcp::SYN | tcp::ACK | tcp::RST) == tcp::SYN);
    syn_only
        && hit.dir == Dir::Original
        && matches!(
            hit.state,
            FlowState::Tcp(TcpState::TimeWait | TcpState::Close)
        )
}

/// Translates a packet whose flow was found: whether it was (`false`: on to `nat`).
#[inline]
fn apply(
    flows: &FlowTable,
    now: u64,
    l3: &mut [u8],
    work: Work,
    hit: Option<Hit>,
) -> Result<bool, DropReason> {
    let Some(hit) = hit else {
        return Ok(false);
    };
    match work {
        Work::Flow {
            proto,
            ends: e,
            tcp_flags,
        } => {
            if reopens(&hit, tcp_flags) {
                // A new connection on the tuple of a closed one: a new NAT decision (the
                // old backend may be gone), as Linux kills and re-creates the conntrack.
                flows.remove_hit(&hit);
                return Ok(false);
            }
            nat_rewrite::rewrite_packet(l3, proto, e, ends(&hit.rewrite))?;
            flows.touch(&hit, now, tcp_flags);
            Ok(true)
        }
        Work::Error { proto, q } => {
            nat_rewrite::translate_icmp_error(l3, proto, q, ends(&hit.rewrite))?;
            Ok(true)
        }
        Work::Skip => Ok(false),
    }
}
