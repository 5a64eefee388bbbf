//! `nat`: new flows to Service frontends and masqueraded pod traffic, and the local
//! decision for everything no flow claims (services.md section 2).
//!
//! In order, for a packet `conntrack` did not find:
//!
//! 1. **Service** (TCP/UDP/SCTP with a complete header, `snap.services.lookup(dst, dport,
//!    proto)`):
//!    - empty backend set → reject: TCP (not a RST) → the segment becomes a reset from
//!      the frontend to the client in place ([`super::nat_rewrite::build_rst`]) and is
//!      sent by route (counted in `Pipeline::service_rejects`); a RST → dropped as
//!      `service-no-endpoints`; UDP/SCTP → ICMP port unreachable through `icmp-error`
//!      (`service-no-endpoints` when not sent);
//!    - backend: with `sessionAffinity: ClientIP` the client's affinity entry (kept when
//!      its backend is still in the set, touched), else Maglev over the hash of the
//!      packet's tuple (and a new affinity entry when the frontend has affinity);
//!    - source translation when the frontend masquerades (external traffic with
//!      `externalTrafficPolicy: Cluster`) or the backend is the client (hairpin): to the
//!      pod gateway when the backend is in the cluster CIDR or the node's pod CIDR (its
//!      reply comes back through the pod network), to the node IP otherwise; the source
//!      port from this worker's slice of `snat_ports` ([`snat_slice`]). A pod reaching a
//!      backend outside the cluster network that masquerade (2.) covers is masqueraded to
//!      the node IP as well (Linux's POSTROUTING after the DNAT). A backend at the node IP
//!      or the gateway (host-network endpoint on this node) → `ip4-local-unhandled`;
//!    - the flow is inserted (original tuple → translated tuple) and the packet
//!      translated, then `ip4-forward`.
//! 2. **Masquerade** (flannel's `--ip-masq`): `snap.node.masquerade`, source in the
//!    cluster CIDR, destination outside it, not multicast or broadcast, not the node IP
//!    or the gateway, routed `Gateway` or `Direct` (out of the uplink) → source = node IP,
//!    TCP/UDP/SCTP source port or ICMP echo request identifier from the worker's slice;
//!    inserted, translated, `ip4-forward`. Echo replies and other ICMP pass untranslated,
//!    and so do a first TCP SYN-ACK or RST (invalid as a first packet in Linux's
//!    conntrack; here usually the answer of a connection opened from outside to a pod,
//!    which is not tracked).
//! 3. **Local decision**: to the node IP → `ip4-local-unhandled`; to the gateway → unfragmented
//!    ICMP to `icmp-echo`, anything else `ip4-local-unhandled`; else `ip4-forward`
//!    untracked.
//!
//! Source ports: tried from a hash of the original tuple onwards through the slice (at
//! most [`SNAT_TRIES`] ports) while the table answers `ReplyTaken`; none left →
//! `snat-ports-exhausted`. Other drops: `conntrack-full`; `nat-unsupported` for
//! fragments and truncated L4 headers that would need a translation (a first fragment or
//! short header whose ports name a frontend, or masquerade traffic); `uplink-unconfigured`
//! when the node IP is needed but unknown.
//!
//! A Service flow without source translation whose reply tuple is already taken (the
//! client reused its port towards another frontend with the same backend) keeps its
//! source address and gets a source port from the worker's slice, as Linux's implicit
//! source "null binding" remaps the port of a clashing flow.

use super::nat_rewrite::{self, Ends, PROTO_ICMP, Pkt};
use super::{TxState, conntrack, egress, ip4_error};
use crate::batch::IcmpErr;
use crate::tables::conntrack::{FlowTable, InsertError, Tuple};
use crate::tables::services::{Backend, BackendSet, Frontend};
use crate::{BATCH, Batch, DropReason, FrameMem, Next, Route, Snapshot};
use std::net::Ipv4Addr;
use std::sync::Arc;
use xdplane_wire::icmpv4::unreachable;
use xdplane_wire::{IpProtocol, Ipv4Packet};

pub const NAME: &str = "nat";

/// Source ports (or ICMP identifiers) tried for one new translated flow before it is
/// dropped as `snat-ports-exhausted`.
pub const SNAT_TRIES: u32 = 64;

/// Per-worker NAT state: the shared flow table, this worker's place among the workers
/// (its slice of the SNAT ports) and counters.
#[derive(Clone)]
pub struct NatState {
    pub(crate) flows: Arc<FlowTable>,
    pub(crate) worker: u16,
    pub(crate) workers: u16,
    /// TCP resets sent for Services without endpoints.
    pub(crate) service_rejects: u64,
}

impl std::fmt::Debug for NatState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatState")
            .field("flows_capacity", &self.flows.capacity())
            .field("worker", &self.worker)
            .field("workers", &self.workers)
            .field("service_rejects", &self.service_rejects)
            .finish()
    }
}

impl NatState {
    pub fn new(flows: Arc<FlowTable>, worker: u16, workers: u16) -> NatState {
        NatState {
            flows,
            worker,
            workers,
            service_rejects: 0,
        }
    }
}

/// Worker `worker`'s slice of the inclusive port range `ports` when `workers` workers
/// share it: with `count = hi − lo + 1` and `n = max(workers, 1)`, `w = min(worker, n − 1)`
/// gets `[lo + ⌊count·w/n⌋, lo + ⌊count·(w+1)/n⌋)` — consecutive, disjoint slices that
/// cover the range and differ in size by at most one. Returns (first port, number of
/// ports); an empty range (`lo > hi`) or more workers than ports gives empty slices.
pub fn snat_slice(ports: (u16, u16), worker: u16, workers: u16) -> (u16, u32) {
    let (lo, hi) = ports;
    if lo > hi {
        return (lo, 0);
    }
    let count = u64::from(hi - lo) + 1;
    let n = u64::from(workers.max(1));
    let w = u64::from(worker).min(n - 1);
    let a = count * w / n;
    let b = count * (w + 1) / n;
    // a < count ≤ 65536 and lo + a ≤ hi.
    (lo + a as u16, (b - a) as u32)
}

/// What to do with a packet.
enum Decision {
    /// A new flow was inserted and the packet translated: on to `ip4-forward`.
    Translated,
    Next(Next),
    /// The frame holds a reset of this many L3 bytes, to send by route.
    Rst(usize),
    Error(IcmpErr),
}

pub fn run<M: FrameMem>(
    snap: &Snapshot,
    batch: &mut Batch,
    mem: &mut M,
    nat: &mut NatState,
    tx: &mut TxState,
) {
    let n = batch.len.min(BATCH);
    let now = batch.now_ns;
    for (desc, meta) in batch.desc[..n].iter_mut().zip(&mut batch.meta[..n]) {
        if meta.next != Next::Nat {
            continue;
        }
        let l3 = usize::from(meta.l3_offset);
        let frame = mem.frame_mut(desc.addr, desc.len as usize);
        match decide(snap, nat, now, frame.get_mut(l3..).unwrap_or(&mut [])) {
            Ok(Decision::Translated) => {
                meta.translated = true;
                meta.next = Next::Ip4Forward;
            }
            Ok(Decision::Next(next)) => meta.next = next,
            Ok(Decision::Error(err)) => meta.icmp_error(err),
            Ok(Decision::Rst(len)) => {
                // len (40) ≤ the L3 bytes the frame had.
                desc.len = (l3 + len) as u32;
                match egress::send_by_route(snap, tx, mem, desc) {
                    Ok(port) => {
                        nat.service_rejects += 1;
                        meta.tx(port);
                    }
                    Err(reason) => meta.drop(reason),
                }
            }
            Err(reason) => meta.drop(reason),
        }
    }
}

#[inline]
fn decide(
    snap: &Snapshot,
    nat: &NatState,
    now: u64,
    l3: &mut [u8],
) -> Result<Decision, DropReason> {
    let (src, dst) = {
        let ip = Ipv4Packet::new_checked(&*l3).map_err(ip4_error)?;
        (ip.src_addr(), ip.dst_addr())
    };
    match nat_rewrite::classify(l3) {
        Pkt::Flow {
            proto,
            ends,
            tcp_flags,
            echo_request,
        } => {
            if proto != PROTO_ICMP
                && let Some((fe, set)) = snap.services.lookup(dst, ends.dport, proto)
            {
                return service(snap, nat, now, l3, proto, ends, tcp_flags, fe, set);
            }
            if (proto != PROTO_ICMP || echo_request)
                && !answers(tcp_flags)
                && masquerades(snap, src, dst)
            {
                return masquerade(snap, nat, now, l3, proto, ends, tcp_flags);
            }
        }
        Pkt::Opaque { proto, ports } => {
            if let Some((_, dport)) = ports
                && snap.services.lookup(dst, dport, proto).is_some()
            {
                return Err(DropReason::NatUnsupported);
            }
            if masquerades(snap, src, dst) {
                return Err(DropReason::NatUnsupported);
            }
        }
        Pkt::IcmpError | Pkt::Other => {}
    }
    local(snap, l3).map(Decision::Next)
}

/// The decision `ip4-input` made before NAT existed: the dataplane's own addresses or
/// forwarding.
#[inline]
fn local(snap: &Snapshot, l3: &[u8]) -> Result<Next, DropReason> {
    let ip = Ipv4Packet::new_checked(l3).map_err(ip4_error)?;
    let dst = ip.dst_addr();
    if snap.node.node_ip == Some(dst) {
        return Err(DropReason::Ip4LocalUnhandled);
    }
    if dst == snap.node.gateway {
        if ip.protocol() == IpProtocol::ICMP && !ip.is_fragment() {
            Ok(Next::IcmpEcho)
        } else {
            Err(DropReason::Ip4LocalUnhandled)
        }
    } else {
        Ok(Next::Ip4Forward)
    }
}

/// A TCP segment that cannot open a connection: a SYN-ACK or a RST. Linux's conntrack
/// finds these invalid as first packets, so they never start a masqueraded flow; here they
/// pass untranslated (the reply of a connection opened from outside to a pod, which this
/// dataplane does not track, keeps the pod's address).
#[inline]
fn answers(tcp_flags: Option<u8>) -> bool {
    use crate::tables::conntrack::tcp::{ACK, RST, SYN};
    tcp_flags.is_some_and(|f| f & (SYN | ACK) == SYN | ACK || f & RST != 0)
}

/// Whether pod traffic from `src` to `dst` is masqueraded to the node IP.
#[inline]
fn masquerades(snap: &Snapshot, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
    let n = &snap.node;
    n.masquerade
        && n.node_ip.is_some()
        && n.in_cluster_cidr(src)
        && !n.in_cluster_cidr(dst)
        && !dst.is_multicast()
        && !dst.is_broadcast()
        && n.node_ip != Some(dst)
        && dst != n.gateway
        && matches!(
            snap.route(dst),
            Some(Route::Gateway { .. } | Route::Direct { .. })
        )
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn service(
    snap: &Snapshot,
    nat: &NatState,
    now: u64,
    l3: &mut [u8],
    proto: u8,
    e: Ends,
    tcp_flags: Option<u8>,
    fe: &Frontend,
    set: &BackendSet,
) -> Result<Decision, DropReason> {
    if set.backends.is_empty() {
        if fe.drop_when_empty {
            return Err(DropReason::ServiceNoLocalEndpoints);
        }
        if tcp_flags.is_some() {
            return nat_rewrite::build_rst(l3).map(Decision::Rst);
        }
        return Ok(Decision::Error(IcmpErr::unreachable(
            DropReason::ServiceNoEndpoints,
            unreachable::PORT,
        )));
    }
    let flows = &*nat.flows;
    let orig = conntrack::tuple(proto, e);
    let backend = choose(flows, now, fe, set, &orig).ok_or(DropReason::ServiceNoEndpoints)?;
    let mut rewrite = Tuple {
        dst: backend.ip,
        dport: backend.port,
        ..orig
    };
    if snap.node.node_ip == Some(backend.ip) || backend.ip == snap.node.gateway {
        // An endpoint on the node's own stack (host network): the dataplane has no path
        // into it yet, like any packet from a pod to the node IP.
        return Err(DropReason::Ip4LocalUnhandled);
    }
    let snat_to = if fe.masquerade || backend.ip == e.src {
        let to = if snap.node.in_cluster_cidr(backend.ip) || snap.node.in_pod_cidr(backend.ip) {
            snap.node.gateway
        } else {
            snap.node.node_ip.ok_or(DropReason::UplinkUnconfigured)?
        };
        if to.is_unspecified() {
            return Err(DropReason::UplinkUnconfigured);
        }
        Some(to)
    } else if masquerades(snap, e.src, backend.ip) {
        // A pod reaching a backend outside the cluster network (a node's host-network
        // endpoint, an external endpoint): flannel's masquerade applies after the DNAT,
        // as in Linux's POSTROUTING.
        snap.node.node_ip
    } else {
        None
    };
    let done = match snat_to {
        Some(src) => {
            rewrite.src = src;
            insert_snat(snap, nat, now, &orig, rewrite, tcp_flags)?
        }
        None => match flows.insert(&orig, &rewrite, now, tcp_flags) {
            Ok(hit) | Err(InsertError::Exists(hit)) => hit.rewrite,
            // Another flow has the reply tuple (the client used this port towards
            // another frontend with the same backend): keep the source address, take a
            // port from the worker's slice, as Linux's null binding does.
            Err(InsertError::ReplyTaken) => insert_snat(snap, nat, now, &orig, rewrite, tcp_flags)?,
            Err(InsertError::Full) => return Err(DropReason::ConntrackFull),
        },
    };
    nat_rewrite::rewrite_packet(l3, proto, e, conntrack::ends(&done))?;
    Ok(Decision::Translated)
}

/// The backend for a new flow: the client's affinity entry when the frontend has one and
/// its backend is still in the set, else Maglev over the tuple's hash (remembered for the
/// client when the frontend has affinity).
#[inline]
fn choose(
    flows: &FlowTable,
    now: u64,
    fe: &Frontend,
    set: &BackendSet,
    orig: &Tuple,
) -> Option<Backend> {
    if fe.affinity_timeout_s == 0 {
        return set.pick(orig.hash()).copied();
    }
    let key = Tuple::affinity(orig.src, fe.service_port);
    if let Some(hit) = flows.lookup(&key) {
        let (ip, port) = (hit.rewrite.dst, hit.rewrite.dport);
        if let Some(b) = set.backends.iter().find(|b| b.ip == ip && b.port == port) {
            flows.touch(&hit, now, None);
            return Some(*b);
        }
        // The remembered backend is gone: forget it, choose again.
        flows.remove_hit(&hit);
    }
    let b = *set.pick(orig.hash())?;
    // A full table only costs the affinity, not the flow.
    let _ = flows.insert_affinity(&key, (b.ip, b.port), now, fe.affinity_timeout_s);
    Some(b)
}

/// Inserts a flow whose source is translated to `rewrite.src` with a port (ICMP:
/// identifier) from this worker's slice, trying ports from a hash of the tuple onwards.
/// Returns the translated tuple.
#[inline]
fn insert_snat(
    snap: &Snapshot,
    nat: &NatState,
    now: u64,
    orig: &Tuple,
    mut rewrite: Tuple,
    tcp_flags: Option<u8>,
) -> Result<Tuple, DropReason> {
    let (first, count) = snat_slice(snap.node.snat_ports, nat.worker, nat.workers);
    if count == 0 {
        return Err(DropReason::SnatPortsExhausted);
    }
    let start = (orig.hash() % u64::from(count)) as u32;
    for i in 0..SNAT_TRIES.min(count) {
        // start + i < 2 × 65536; the offset < count ≤ 65536 - first.
        let port = first.wrapping_add(((start + i) % count) as u16);
        rewrite.sport = port;
        if orig.proto == PROTO_ICMP {
            rewrite.dport = port;
        }
        match nat.flows.insert(orig, &rewrite, now, tcp_flags) {
            Ok(hit) | Err(InsertError::Exists(hit)) => return Ok(hit.rewrite),
            Err(InsertError::ReplyTaken) => continue,
            Err(InsertError::Full) => return Err(DropReason::ConntrackFull),
        }
    }
    Err(DropReason::SnatPortsExhausted)
}

/// Masquerade: the source becomes the node IP with a port (identifier) from the slice.
#[inline]
fn masquerade(
    snap: &Snapshot,
    nat: &NatState,
    now: u64,
    l3: &mut [u8],
    proto: u8,
    e: Ends,
    tcp_flags: Option<u8>,
) -> Result<Decision, DropReason> {
    let node_ip = snap.node.node_ip.ok_or(DropReason::UplinkUnconfigured)?;
    let orig = conntrack::tuple(proto, e);
    let rewrite = Tuple {
        src: node_ip,
        ..orig
    };
    let done = insert_snat(snap, nat, now, &orig, rewrite, tcp_flags)?;
    nat_rewrite::rewrite_packet(l3, proto, e, conntrack::ends(&done))?;
    Ok(Decision::Translated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_disjoint_and_cover_the_range() {
        for (range, workers) in [
            ((61000u16, 65535u16), 1u16),
            ((61000, 65535), 2),
            ((61000, 65535), 3),
            ((61000, 65535), 7),
            ((1, 65535), 4),
            ((0, 65535), 3),
            ((100, 102), 5),
        ] {
            let mut next = range.0 as u32;
            let mut total = 0;
            for w in 0..workers {
                let (first, count) = snat_slice(range, w, workers);
                if count > 0 {
                    assert_eq!(u32::from(first), next, "{range:?} {w}/{workers}");
                }
                next = u32::from(first) + count;
                total += count;
            }
            assert_eq!(total, u32::from(range.1 - range.0) + 1);
        }
        assert_eq!(snat_slice((61000, 65535), 0, 2), (61000, 2268));
        assert_eq!(snat_slice((61000, 65535), 1, 2), (63268, 2268));
        // Out-of-range worker index: the last slice. Empty range: nothing.
        assert_eq!(snat_slice((61000, 65535), 9, 2), (63268, 2268));
        assert_eq!(snat_slice((10, 9), 0, 1).1, 0);
        assert_eq!(snat_slice((100, 102), 0, 5).1, 0);
    }
}
