//! Batches, descriptors and per-packet metadata.

use crate::drop::DropReason;
use crate::snapshot::RouteId;
use xdplane_wire::Icmpv4Message;
use xdplane_wire::icmpv4::{time_exceeded, unreachable};

/// Identifies a dataplane port (a device the dataplane is attached to). Assigned by the
/// control side, stable for the life of the port, an index into [`crate::Snapshot::ports`].
pub type PortId = u16;

/// Packets per batch: what one rx burst hands to the pipeline.
pub const BATCH: usize = 64;

/// Where a frame lives: an address in frame memory (UMEM offset) and a length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
}

/// Frame memory: the UMEM in production, [`VecFrames`] in tests and benchmarks.
pub trait FrameMem {
    /// The `len` bytes of the frame that starts at `addr`. Implementations bounds-check:
    /// an `addr`/`len` that does not lie inside one frame chunk panics, because only
    /// descriptors the implementation handed out (or their in-chunk edits) are valid.
    fn frame_mut(&mut self, addr: u64, len: usize) -> &mut [u8];
    /// Bytes available in the chunk before `addr` (room to prepend headers).
    fn headroom(&self, addr: u64) -> usize;
    /// Bytes available in the chunk from `addr` to the chunk's end.
    fn room(&self, addr: u64) -> usize;
}

/// The final outcome for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet (no stage has finished with the packet).
    Pending,
    /// Transmit on this port.
    Tx(PortId),
    /// Drop, counting the reason.
    Drop(DropReason),
}

/// The stage that handles a packet next. Stages run in this order; a stage only hands
/// packets to stages after itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Next {
    /// Where every packet enters ([`Meta::new`]); frames from other ports than the uplink
    /// pass straight on to `EthInput`.
    VxlanDecap,
    EthInput,
    Arp,
    Ip4Input,
    /// Translate packets of tracked (NATed) flows, and ICMP errors about them.
    Conntrack,
    /// New flows to Service frontends and masqueraded traffic; the local decision for
    /// the rest.
    Nat,
    IcmpEcho,
    Ip4Forward,
    VxlanEncap,
    /// Turn the packet into the ICMP error [`Meta::icmp`] describes.
    IcmpError,
    /// The packet has its final verdict.
    Done,
}

/// An ICMP error a stage asks `icmp-error` to send in answer to the packet (RFC 792,
/// RFC 1812 section 4.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpErr {
    /// Why the packet was not forwarded: the drop counted when no error is sent for it
    /// (ICMP errors are never sent about ICMP errors, fragments, broadcasts, …).
    pub reason: DropReason,
    /// ICMP type (3 destination unreachable, 11 time exceeded).
    pub msg_type: u8,
    pub code: u8,
    /// Next-hop MTU of a "fragmentation needed" error (RFC 1191), else 0.
    pub mtu: u16,
}

impl IcmpErr {
    /// Time exceeded in transit (RFC 792): the TTL would reach zero.
    pub const fn time_exceeded() -> IcmpErr {
        IcmpErr {
            reason: DropReason::Ip4TtlExpired,
            msg_type: Icmpv4Message::TIME_EXCEEDED.0,
            code: time_exceeded::TTL_IN_TRANSIT,
            mtu: 0,
        }
    }
    /// Destination unreachable with `code` (RFC 792, RFC 1812 section 5.2.7.1).
    pub const fn unreachable(reason: DropReason, code: u8) -> IcmpErr {
        IcmpErr {
            reason,
            msg_type: Icmpv4Message::DST_UNREACHABLE.0,
            code,
            mtu: 0,
        }
    }
    /// Fragmentation needed and DF set, with the next-hop MTU (RFC 1191 section 4).
    pub const fn frag_needed(mtu: u16) -> IcmpErr {
        IcmpErr {
            reason: DropReason::Ip4FragNeeded,
            msg_type: Icmpv4Message::DST_UNREACHABLE.0,
            code: unreachable::FRAG_NEEDED,
            mtu,
        }
    }
}

/// Per-packet metadata carried between stages.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub in_port: PortId,
    pub next: Next,
    pub verdict: Verdict,
    /// Offset of the L3 header in the frame (set by eth-input).
    pub l3_offset: u16,
    /// The frame is the inner frame of a VXLAN packet received on the uplink (set by
    /// vxlan-decap; the descriptor then points past the outer headers).
    pub decapped: bool,
    /// The route ip4-forward chose, for vxlan-encap.
    pub route: RouteId,
    /// The error `icmp-error` is to send (set with `next == IcmpError`).
    pub icmp: Option<IcmpErr>,
    /// `conntrack` or `nat` translated the packet (an ICMP error about it is translated
    /// back, so its sender recognizes the packet it sent).
    pub translated: bool,
}

impl Meta {
    pub const fn new(in_port: PortId) -> Meta {
        Meta {
            in_port,
            next: Next::VxlanDecap,
            verdict: Verdict::Pending,
            l3_offset: 0,
            decapped: false,
            route: 0,
            icmp: None,
            translated: false,
        }
    }
    /// Hands the packet to `icmp-error`, which answers with `err` (or drops with
    /// `err.reason` when RFC 1812 forbids an answer).
    #[inline]
    pub fn icmp_error(&mut self, err: IcmpErr) {
        self.icmp = Some(err);
        self.next = Next::IcmpError;
    }
    /// Ends processing of this packet with a drop.
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.verdict = Verdict::Drop(reason);
        self.next = Next::Done;
    }
    /// Ends processing of this packet with a transmit.
    #[inline]
    pub fn tx(&mut self, port: PortId) {
        self.verdict = Verdict::Tx(port);
        self.next = Next::Done;
    }
}

/// Up to [`BATCH`] packets: descriptors and metadata side by side. No allocation.
pub struct Batch {
    pub len: usize,
    pub desc: [Desc; BATCH],
    pub meta: [Meta; BATCH],
    /// Monotonic time in nanoseconds, read once per batch by the worker (any fixed origin).
    /// The ICMP error rate limiter runs on it; [`Batch::load`] leaves it alone.
    pub now_ns: u64,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            len: 0,
            desc: [Desc::default(); BATCH],
            meta: [Meta::new(0); BATCH],
            now_ns: 0,
        }
    }
}

impl Batch {
    /// Resets the batch to `n` packets received on `in_port` with the given descriptors,
    /// each entering at [`Next::VxlanDecap`].
    pub fn load(&mut self, in_port: PortId, descs: &[Desc]) {
        let n = descs.len().min(BATCH);
        self.desc[..n].copy_from_slice(&descs[..n]);
        for m in &mut self.meta[..n] {
            *m = Meta::new(in_port);
        }
        self.len = n;
    }
}

/// Frame memory on the heap, for tests and benchmarks: `count` chunks of `chunk` bytes.
pub struct VecFrames {
    buf: Vec<u8>,
    chunk: usize,
}

impl VecFrames {
    pub fn new(count: usize, chunk: usize) -> VecFrames {
        assert!(chunk.is_power_of_two(), "chunk size must be a power of two");
        VecFrames {
            buf: vec![0; count * chunk],
            chunk,
        }
    }
    /// Copies `bytes` into chunk `i` at `offset` and returns its descriptor.
    pub fn put(&mut self, i: usize, offset: usize, bytes: &[u8]) -> Desc {
        let addr = i * self.chunk + offset;
        assert!(
            offset + bytes.len() <= self.chunk,
            "frame does not fit the chunk"
        );
        self.buf[addr..addr + bytes.len()].copy_from_slice(bytes);
        Desc {
            addr: addr as u64,
            len: bytes.len() as u32,
        }
    }
    /// The bytes a descriptor points at.
    pub fn get(&self, d: Desc) -> &[u8] {
        &self.buf[d.addr as usize..d.addr as usize + d.len as usize]
    }
}

impl FrameMem for VecFrames {
    fn frame_mut(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let a = addr as usize;
        // `chunk` is a power of two (checked in `new`): mask instead of dividing.
        let chunk_end = (a | (self.chunk - 1)) + 1;
        assert!(a + len <= chunk_end, "frame crosses its chunk");
        &mut self.buf[a..a + len]
    }
    fn headroom(&self, addr: u64) -> usize {
        addr as usize & (self.chunk - 1)
    }
    fn room(&self, addr: u64) -> usize {
        self.chunk - (addr as usize & (self.chunk - 1))
    }
}
