//! The connection-tracking flow table shared by every worker of a node (services.md §3).
//!
//! # What it holds
//!
//! A flow is a connection the dataplane translates (DNAT to a Service backend, SNAT to the
//! node or pod-gateway address). Packets of the original direction carry the tuple `orig`
//! and become `rewrite`; packets of the reply direction carry `rewrite.reversed()` and
//! become `orig.reversed()`. The flow is indexed **twice**, by both tuples, each key in its
//! own slot together with the translation for its direction, so whichever worker receives
//! either direction finds it with one hash probe. ClientIP session-affinity entries
//! ([`FlowTable::insert_affinity`]) and flows whose reply tuple equals the original tuple
//! use one slot.
//!
//! # Layout
//!
//! Open addressing with linear probing over a power-of-two array of
//! `slots = max(32, next_power_of_two(⌈2 × capacity / 0.75⌉))` (two keys per flow, at most
//! 75 % of the slots used at capacity; 72 bytes per slot). A key has two probe windows of
//! [`PROBE`] slots, starting at hash bits 0–23 and 24–47 (masked): it goes into the first
//! window unless that one has no free slot, then into the second. Linear probing alone
//! clusters: with one 32-slot window, 11 of 2M keys found their window full at 50 % load
//! and 0.3 % at 75 %; with the overflow window none at 50 % and 0.007 % at 75 % (simulated
//! over 4M slots; those inserts evict a non-assured flow). A lookup scans the first window
//! until an empty slot (then it is a miss: the key would not have overflowed) and the
//! second only when the first has none. Two parallel arrays, both of `AtomicU64` words (no
//! `unsafe` anywhere):
//!
//! - `ctl[i]`, one word per slot (8 per cache line, so a probe walks a compact array):
//!   bit 0 = *writing* (the seqlock's odd state), bits 1–2 = status (empty, live, deleted),
//!   bits 8–23 = a 16-bit fingerprint of the key's hash (bits 48–63 of it), bits 24–63 =
//!   version, bumped by every publish and delete.
//! - `slots[i]`, 64 bytes, cache-line aligned: key (2 words), translation (2 words), link
//!   (peer slot index, direction, flow generation), flow word, affinity timeout, spare.
//!
//! The **flow word** of the original slot (the only slot of single-slot entries) is where
//! the flow's mutable state lives: last-seen time in ticks of 2^24 ns (≈ 16.8 ms, 32 bits,
//! compared with wrapping arithmetic, so `now_ns` may have any origin and ages up to about
//! a year are exact), state code (TCP state, UDP, ICMP, SCTP, affinity), *replied*,
//! *dying*, and a 22-bit generation that changes each time the slot starts a new flow.
//! Every packet's update ([`FlowTable::touch`]) is one compare-and-swap of that word, and
//! none at all when neither the state nor the tick changes (so a busy flow writes the
//! shared line at most ~60 times a second). Key, translation and link are written once,
//! by the inserting worker.
//!
//! # Why a reader never applies a wrong translation
//!
//! - Key and translation of a slot are read under the slot's seqlock: `ctl` is loaded
//!   (acquire), the data words are loaded, an acquire fence, `ctl` again; a writer sets the
//!   *writing* bit (compare-and-swap), issues a release fence, writes, then publishes a
//!   new version (release store). Deletion also publishes a new version. So when both
//!   loads of `ctl` are equal, live and not writing, the key and translation read belong
//!   to one incarnation of the slot, and the translation is the one inserted with that
//!   key. Otherwise the read is retried a few times, then the slot is skipped (a miss).
//! - The translation a hit returns comes from the slot whose key matched, never from the
//!   peer slot; the peer is only followed for the flow word (state), whose generation must
//!   equal the one recorded in the link, and which must not be *dying*: a reply slot whose
//!   flow is being deleted, or whose original slot was already reused, is a miss.
//! - A flow is deleted by exactly one thread: the one whose compare-and-swap sets *dying*
//!   in its flow word (expected value = the word it examined, generation included). It
//!   then deletes the reply slot, then the original slot (new version, status deleted).
//!   Slots are only ever freed by that thread, so neither slot can be reused before the
//!   flow is dying, and a stale handle ([`Hit`]) cannot modify a later flow: its
//!   compare-and-swap expects the old generation.
//!
//! # Insertion
//!
//! [`FlowTable::insert`] first looks the original tuple up (`Exists`), then claims the
//! reply tuple's slot, then the original tuple's slot. Claiming scans the key's windows
//! like a lookup: finding the key is `ReplyTaken` (reply tuple) or `Exists` (original
//! tuple); otherwise the first free slot (empty or deleted) of the first window, else of
//! the second, is taken with a compare-and-swap of its `ctl` word, so two threads never
//! take one slot. Both slots are written, then published. Empty slots never come back
//! (deletion leaves a tombstone, reused by later inserts), so a key is always reachable
//! from its home through non-empty slots, a probe may stop at the first empty one, and a
//! key is only in its second window if its first window has no empty slot. Two threads
//! inserting the same key at the same moment can both succeed (services.md §1 explains why
//! that is harmless and why SNAT ports are per worker).
//!
//! `lookup`, `touch`, `insert` and `insert_affinity` take no lock and allocate nothing;
//! the table-wide counters are touched per insert, delete and eviction, never per packet.
//!
//! # Eviction and expiry
//!
//! When neither of a key's windows has a free slot, the inserter evicts the oldest flow
//! with a slot in them that is not *assured* (TCP: not established with a reply seen; other
//! protocols: no reply seen; affinity entries are never assured), counting `evicted`, and
//! retries; with no such flow the insert fails with `Full` (`insert_failed`).
//!
//! [`FlowTable::sweep`] runs on a control thread: it examines a budget of slots from a
//! shared cursor and deletes flows idle longer than their state's timeout ([`Timeouts`],
//! Linux's nf_conntrack defaults), through the same *dying* compare-and-swap, so a packet
//! touching the flow at that moment either refreshes it first (the sweeper's CAS fails and
//! the flow lives) or finds it dying (a miss). Lookups do not check time: a flow past its
//! timeout that the sweeper has not reached yet still translates, and a touch revives it.
//!
//! Timeouts per state: TCP as Linux (an established flow that has never seen a reply —
//! picked up mid-stream — uses `tcp_unacknowledged`, 300 s, instead of 5 days); UDP `udp`
//! (30 s) until a reply is seen, then `udp_stream` (120 s); ICMP `icmp` (30 s); SCTP is not
//! state-tracked: `sctp` (30 s) until a reply is seen, then `sctp_established` (210 s,
//! Linux's HEARTBEAT_ACKED timeout; Linux gives 5 days only after tracking the SCTP
//! handshake chunks, which this table does not parse); affinity entries their own timeout.
//! Protocols other than TCP, ICMP and SCTP are tracked like UDP.

pub mod tcp;

pub use tcp::TcpState;

use super::services::{PROTO_SCTP, PROTO_TCP};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

/// IP protocol number of ICMP (TCP 6, UDP 17 and SCTP 132 are in `tables::services`).
pub const PROTO_ICMP: u8 = 1;
/// Affinity pseudo-entries (ClientIP session affinity): proto = PROTO_AFFINITY.
pub const PROTO_AFFINITY: u8 = 255;

/// How many slots from each of its two homes a key may live (and a lookup looks).
pub const PROBE: usize = 32;

/// A flow key: protocol, addresses and ports. ICMP echo request/reply: `sport = dport =
/// identifier`. Affinity: see [`Tuple::affinity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

/// What a packet of one direction becomes: its tuple after translation.
pub type Rewrite = Tuple;

impl Tuple {
    pub fn new(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Tuple {
        Tuple {
            proto,
            src,
            dst,
            sport,
            dport,
        }
    }

    /// The tuple of the other direction: addresses and ports swapped.
    pub fn reversed(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }

    /// The key of a ClientIP affinity entry: `src` = client, `dst` = the high 16 bits of the
    /// Service port id, `dport` its low 16 bits, `sport` 0, `proto` [`PROTO_AFFINITY`].
    pub fn affinity(client: Ipv4Addr, service_port: u32) -> Tuple {
        Tuple {
            proto: PROTO_AFFINITY,
            src: client,
            dst: Ipv4Addr::from(service_port >> 16),
            sport: 0,
            dport: service_port as u16,
        }
    }

    /// A fixed (not seeded per process), platform-independent 64-bit hash of the tuple:
    /// two rounds of splitmix64's finalizer over the packed words. The table's slot index
    /// is its low bits, the fingerprint its high 16 bits; Maglev uses it too.
    #[inline]
    pub fn hash(&self) -> u64 {
        let (a, b) = self.words();
        fmix(a.wrapping_add(fmix(b ^ 0x9e37_79b9_7f4a_7c15)))
    }

    /// Packed form: `src << 32 | dst`, `sport << 32 | dport << 16 | proto`.
    #[inline]
    fn words(&self) -> (u64, u64) {
        let a = (u64::from(u32::from(self.src)) << 32) | u64::from(u32::from(self.dst));
        let b =
            (u64::from(self.sport) << 32) | (u64::from(self.dport) << 16) | u64::from(self.proto);
        (a, b)
    }

    #[inline]
    fn from_words(a: u64, b: u64) -> Tuple {
        Tuple {
            proto: b as u8,
            src: Ipv4Addr::from((a >> 32) as u32),
            dst: Ipv4Addr::from(a as u32),
            sport: (b >> 32) as u16,
            dport: (b >> 16) as u16,
        }
    }
}

/// splitmix64's finalizer (a bijection with full avalanche).
#[inline]
fn fmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Which direction of its flow a packet travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    Original,
    Reply,
}

/// A lookup's answer: the flow a tuple belongs to, the direction, and its translation.
///
/// Also the handle [`FlowTable::touch`] needs; it names one incarnation of the flow, so
/// using it after the flow was deleted (and its slots reused) changes nothing.
#[derive(Clone, Copy, Debug)]
pub struct Hit {
    /// The slot whose key matched (handle for `touch`, `remove`).
    pub slot: u32,
    pub dir: Dir,
    /// The packet's tuple after translation (== its tuple when nothing changes).
    pub rewrite: Tuple,
    /// Protocol state before this packet.
    pub state: FlowState,
    /// The slot holding the flow word (the original tuple's slot).
    flow: u32,
    /// The flow's generation.
    generation: u32,
}

impl Hit {
    /// The slot holding the flow's state (its original tuple's slot).
    pub fn flow_slot(&self) -> u32 {
        self.flow
    }
}

/// The protocol state of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowState {
    Tcp(TcpState),
    Udp { replied: bool },
    Icmp { replied: bool },
    Sctp { replied: bool },
    Affinity,
}

/// Idle timeouts in seconds, by state. Defaults: Linux nf_conntrack's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_close_wait: u32,
    pub tcp_last_ack: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    pub tcp_syn_sent2: u32,
    /// Established but no reply seen yet (picked up mid-stream).
    pub tcp_unacknowledged: u32,
    pub udp: u32,
    /// UDP once a reply was seen.
    pub udp_stream: u32,
    pub icmp: u32,
    /// SCTP before a reply was seen.
    pub sctp: u32,
    /// SCTP once a reply was seen (see the module documentation).
    pub sctp_established: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 432_000,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            tcp_syn_sent2: 120,
            tcp_unacknowledged: 300,
            udp: 30,
            udp_stream: 120,
            icmp: 30,
            sctp: 30,
            sctp_established: 210,
        }
    }
}

impl Timeouts {
    /// The idle timeout of a TCP state (`replied`: a reply-direction packet was seen).
    pub fn tcp(&self, s: TcpState, replied: bool) -> u32 {
        match s {
            TcpState::None | TcpState::SynSent => self.tcp_syn_sent,
            TcpState::SynRecv => self.tcp_syn_recv,
            TcpState::Established if !replied => self.tcp_established.min(self.tcp_unacknowledged),
            TcpState::Established => self.tcp_established,
            TcpState::FinWait => self.tcp_fin_wait,
            TcpState::CloseWait => self.tcp_close_wait,
            TcpState::LastAck => self.tcp_last_ack,
            TcpState::TimeWait => self.tcp_time_wait,
            TcpState::Close => self.tcp_close,
            TcpState::SynSent2 => self.tcp_syn_sent2,
        }
    }
}

/// Table size and timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTableConfig {
    /// Flows the table is sized for: slots = max(32, next power of two of ⌈2 × capacity
    /// / 0.75⌉), so at capacity at most 75 % of the slots are used. Not a hard limit:
    /// inserts evict or fail only when a key's probe window is full. At most 2^30.
    pub capacity: usize,
    pub timeouts: Timeouts,
}

impl Default for FlowTableConfig {
    /// 65 536 flows (262 144 slots, 18 MiB).
    fn default() -> FlowTableConfig {
        FlowTableConfig {
            capacity: 1 << 16,
            timeouts: Timeouts::default(),
        }
    }
}

/// Why an insert did not happen.
#[derive(Clone, Copy, Debug)]
pub enum InsertError {
    /// Another flow already uses the reply tuple (SNAT: pick another port).
    ReplyTaken,
    /// The original tuple already has a flow (e.g. another worker created it just now).
    Exists(Hit),
    /// No free slot in the probe window and nothing evictable.
    Full,
}

impl std::fmt::Display for InsertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InsertError::ReplyTaken => f.write_str("reply tuple already tracked"),
            InsertError::Exists(_) => f.write_str("flow already tracked"),
            InsertError::Full => f.write_str("flow table full"),
        }
    }
}

impl std::error::Error for InsertError {}

/// One flow, for dumps and `remove_where`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    pub orig: Tuple,
    pub rewrite: Tuple,
    pub state: FlowState,
    /// Seconds since the last packet.
    pub age_s: u64,
    /// Seconds until the sweeper may delete it (0: expired).
    pub expires_in_s: u64,
    /// The slot of the original tuple (for `remove`).
    pub slot: u32,
}

/// Table counters (cumulative except `entries`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Flows (and affinity entries) in the table now.
    pub entries: u64,
    pub inserted: u64,
    /// Inserts that failed with `Full`.
    pub insert_failed: u64,
    pub evicted: u64,
    pub expired: u64,
    pub reply_taken: u64,
    /// Deleted by `remove` / `remove_where`.
    pub removed: u64,
}

/// What one `sweep` call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub examined: usize,
    pub expired: usize,
    /// Flows seen alive (counted at their original slot).
    pub live: usize,
}

// ---- word layouts -----------------------------------------------------------------------

const WRITING: u64 = 1;
const ST_MASK: u64 = 0b110;
const ST_EMPTY: u64 = 0;
const ST_LIVE: u64 = 0b010;
const ST_TOMB: u64 = 0b100;
const FP_SHIFT: u32 = 8;
const FP_MASK: u64 = 0xffff << FP_SHIFT;
const VERSION_ONE: u64 = 1 << 24;
const VERSION_MASK: u64 = !(VERSION_ONE - 1);

#[inline]
fn fingerprint(h: u64) -> u64 {
    (h >> 48) << FP_SHIFT
}

const TICK_SHIFT: u32 = 24;
const CODE_SHIFT: u32 = 32;
const REPLIED: u64 = 1 << 40;
const DYING: u64 = 1 << 41;
const GEN_SHIFT: u32 = 42;
const GEN_MASK: u32 = (1 << 22) - 1;

const CODE_UDP: u8 = 16;
const CODE_ICMP: u8 = 17;
const CODE_SCTP: u8 = 18;
const CODE_AFFINITY: u8 = 19;

const LINK_REPLY: u64 = 1 << 63;

#[inline]
fn tick_of(now_ns: u64) -> u32 {
    (now_ns >> TICK_SHIFT) as u32
}
#[inline]
fn w_tick(w: u64) -> u32 {
    w as u32
}
#[inline]
fn w_code(w: u64) -> u8 {
    (w >> CODE_SHIFT) as u8
}
#[inline]
fn w_gen(w: u64) -> u32 {
    (w >> GEN_SHIFT) as u32 & GEN_MASK
}
#[inline]
fn make_word(generation: u32, code: u8, tick: u32) -> u64 {
    (u64::from(generation & GEN_MASK) << GEN_SHIFT)
        | (u64::from(code) << CODE_SHIFT)
        | u64::from(tick)
}
#[inline]
fn make_link(peer: usize, generation: u32, dir: Dir) -> u64 {
    let d = if dir == Dir::Reply { LINK_REPLY } else { 0 };
    d | (u64::from(generation & GEN_MASK) << 32) | peer as u64
}
#[inline]
fn link_peer(l: u64) -> usize {
    l as u32 as usize
}
#[inline]
fn link_gen(l: u64) -> u32 {
    (l >> 32) as u32 & GEN_MASK
}
#[inline]
fn link_dir(l: u64) -> Dir {
    if l & LINK_REPLY != 0 {
        Dir::Reply
    } else {
        Dir::Original
    }
}

/// Ticks from `last` to `now` (0 when `last` is in the future).
#[inline]
fn age_ticks(now: u32, last: u32) -> u64 {
    let d = now.wrapping_sub(last) as i32;
    if d < 0 { 0 } else { d as u64 }
}

fn initial_code(proto: u8, tcp_flags: Option<u8>) -> u8 {
    match proto {
        PROTO_TCP => tcp::initial(tcp_flags) as u8,
        PROTO_ICMP => CODE_ICMP,
        PROTO_SCTP => CODE_SCTP,
        _ => CODE_UDP,
    }
}

fn decode(w: u64) -> FlowState {
    let replied = w & REPLIED != 0;
    match w_code(w) {
        CODE_UDP => FlowState::Udp { replied },
        CODE_ICMP => FlowState::Icmp { replied },
        CODE_SCTP => FlowState::Sctp { replied },
        CODE_AFFINITY => FlowState::Affinity,
        c => FlowState::Tcp(TcpState::from_code(c).unwrap_or(TcpState::None)),
    }
}

/// Assured flows are only evicted by expiry.
fn assured(w: u64) -> bool {
    let replied = w & REPLIED != 0;
    match w_code(w) {
        CODE_AFFINITY => false,
        c if c == TcpState::Established as u8 => replied,
        c if c < CODE_UDP => false,
        _ => replied,
    }
}

/// The flow word after a packet of direction `dir` at `tick` with TCP flags `flags`.
#[inline]
fn advance(w: u64, dir: Dir, flags: Option<u8>, tick: u32) -> u64 {
    let mut n = w;
    if (tick.wrapping_sub(w_tick(w)) as i32) > 0 {
        n = (n & !0xffff_ffff) | u64::from(tick);
    }
    if dir == Dir::Reply {
        n |= REPLIED;
    }
    let code = w_code(w);
    if let (Some(f), Some(s)) = (flags, TcpState::from_code(code)) {
        let s2 = tcp::next(s, dir, f);
        n = (n & !(0xff << CODE_SHIFT)) | (u64::from(s2 as u8) << CODE_SHIFT);
    }
    n
}

/// One slot's data: 8 words, one cache line.
#[repr(align(64))]
#[derive(Default)]
struct Slot {
    key_a: AtomicU64,
    key_b: AtomicU64,
    rw_a: AtomicU64,
    rw_b: AtomicU64,
    link: AtomicU64,
    flow: AtomicU64,
    /// Affinity entries: their timeout in seconds.
    aux: AtomicU64,
    _spare: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

#[repr(align(64))]
#[derive(Default)]
struct Counters {
    entries: AtomicU64,
    inserted: AtomicU64,
    insert_failed: AtomicU64,
    evicted: AtomicU64,
    expired: AtomicU64,
    reply_taken: AtomicU64,
    removed: AtomicU64,
}

/// A consistent read of one live slot.
#[derive(Clone, Copy)]
struct SlotRead {
    key_a: u64,
    key_b: u64,
    rw_a: u64,
    rw_b: u64,
    link: u64,
    aux: u64,
}

enum Probe {
    Empty,
    Next,
    Hit(Hit),
}

enum Claim {
    /// The slot index and its `ctl` word as claimed (writing).
    Slot(usize, u64),
    Found(Hit),
    Full,
}

/// How many times a reader re-reads a slot whose seqlock moved before giving up on it.
const READ_RETRIES: usize = 8;
/// How many scans an insert makes of a key's window (lost claims, evictions) at most.
const CLAIM_ATTEMPTS: usize = 4;

/// The node's flow table (see the module documentation). `Send + Sync`; share it with
/// `Arc<FlowTable>`.
pub struct FlowTable {
    ctl: Box<[AtomicU64]>,
    slots: Box<[Slot]>,
    mask: usize,
    capacity: usize,
    timeouts: Timeouts,
    counters: Counters,
    cursor: AtomicUsize,
    /// The latest `now_ns` given to a control-side call (`sweep`, `dump`), for the ages
    /// `remove_where` reports.
    clock: AtomicU64,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("capacity", &self.capacity)
            .field("slots", &self.slots.len())
            .field("counters", &self.counters())
            .finish()
    }
}

impl FlowTable {
    pub fn new(cfg: FlowTableConfig) -> FlowTable {
        let capacity = cfg.capacity.clamp(1, 1 << 30);
        // Two keys per flow at no more than 75 % of the slots (linear probing with a bounded
        // window degrades quickly above that).
        let n = (2 * capacity)
            .div_ceil(3)
            .saturating_mul(4)
            .next_power_of_two()
            .max(PROBE);
        FlowTable {
            ctl: (0..n).map(|_| AtomicU64::new(ST_EMPTY)).collect(),
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            capacity,
            timeouts: cfg.timeouts,
            counters: Counters::default(),
            cursor: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
        }
    }

    /// Flows the table was sized for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of slots (each flow takes two, affinity entries one).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Bytes of table memory.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * (std::mem::size_of::<Slot>() + std::mem::size_of::<AtomicU64>())
    }

    pub fn counters(&self) -> FlowCounters {
        let c = &self.counters;
        FlowCounters {
            entries: c.entries.load(Ordering::Relaxed),
            inserted: c.inserted.load(Ordering::Relaxed),
            insert_failed: c.insert_failed.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            reply_taken: c.reply_taken.load(Ordering::Relaxed),
            removed: c.removed.load(Ordering::Relaxed),
        }
    }

    // ---- reading ------------------------------------------------------------------------

    /// Reads slot `s` under its seqlock if it is live and not being written: `None` when it
    /// is not live, or kept changing for `READ_RETRIES` reads. `fp`: only read a slot with
    /// this fingerprint (`None`: any). Returns the `ctl` word read too.
    #[inline]
    fn read_slot(&self, s: usize, fp: Option<u64>) -> Result<SlotRead, u64> {
        let ctl = &self.ctl[s];
        let slot = &self.slots[s];
        let mut c1 = ctl.load(Ordering::Acquire);
        for _ in 0..READ_RETRIES {
            if c1 & ST_MASK != ST_LIVE || fp.is_some_and(|fp| c1 & FP_MASK != fp) {
                return Err(c1);
            }
            if c1 & WRITING != 0 {
                std::hint::spin_loop();
                c1 = ctl.load(Ordering::Acquire);
                continue;
            }
            let key_a = slot.key_a.load(Ordering::Relaxed);
            let key_b = slot.key_b.load(Ordering::Relaxed);
            #[cfg(test)]
            hooks::run(self, hooks::Point::MidRead);
            let r = SlotRead {
                key_a,
                key_b,
                rw_a: slot.rw_a.load(Ordering::Relaxed),
                rw_b: slot.rw_b.load(Ordering::Relaxed),
                link: slot.link.load(Ordering::Relaxed),
                aux: slot.aux.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            let c2 = ctl.load(Ordering::Acquire);
            if c1 == c2 {
                return Ok(r);
            }
            c1 = c2;
        }
        Err(c1 | WRITING)
    }

    /// The flow slot and flow word of a consistently read slot, if its flow is alive.
    #[inline]
    fn flow_of(&self, s: usize, r: &SlotRead) -> Option<(usize, u64)> {
        #[cfg(test)]
        hooks::run(self, hooks::Point::BeforeFlow);
        let f = match link_dir(r.link) {
            Dir::Original => s,
            Dir::Reply => link_peer(r.link),
        };
        let w = self.slots.get(f)?.flow.load(Ordering::Acquire);
        (w & DYING == 0 && w_gen(w) == link_gen(r.link)).then_some((f, w))
    }

    #[inline]
    fn probe_slot(&self, s: usize, fp: u64, ka: u64, kb: u64) -> Probe {
        match self.read_slot(s, Some(fp)) {
            Err(c) if c & ST_MASK == ST_EMPTY => Probe::Empty,
            Err(_) => Probe::Next,
            Ok(r) if r.key_a != ka || r.key_b != kb => Probe::Next,
            Ok(r) => match self.flow_of(s, &r) {
                Some((f, w)) => Probe::Hit(Hit {
                    slot: s as u32,
                    dir: link_dir(r.link),
                    rewrite: Tuple::from_words(r.rw_a, r.rw_b),
                    state: decode(w),
                    flow: f as u32,
                    generation: w_gen(w),
                }),
                None => Probe::Next,
            },
        }
    }

    /// The entry the tuple belongs to (either direction). Lock-free, no allocation.
    #[inline]
    pub fn lookup(&self, t: &Tuple) -> Option<Hit> {
        self.lookup_hashed(t, t.hash())
    }

    /// [`lookup`](Self::lookup) with `hash == t.hash()` already computed (e.g. for Maglev).
    #[inline]
    pub fn lookup_hashed(&self, t: &Tuple, hash: u64) -> Option<Hit> {
        let (ka, kb) = t.words();
        let fp = fingerprint(hash);
        for home in self.homes(hash) {
            let mut s = home;
            for _ in 0..PROBE {
                match self.probe_slot(s, fp, ka, kb) {
                    // An empty slot in the first window: the key never overflowed.
                    Probe::Empty => return None,
                    Probe::Hit(h) => return Some(h),
                    Probe::Next => {}
                }
                s = (s + 1) & self.mask;
            }
        }
        None
    }

    /// The first slots of a key's two probe windows: hash bits 0–23 and 24–47 (the
    /// fingerprint is bits 48–63), independent up to 2^24 slots.
    #[inline]
    fn homes(&self, hash: u64) -> [usize; 2] {
        [hash as usize & self.mask, (hash >> 24) as usize & self.mask]
    }

    /// [`lookup`](Self::lookup) of every tuple of `tuples` into `out` (as many as the shorter
    /// of the two), with the same results.
    ///
    /// A plain loop: a variant that first loaded every tuple's control word, slot link and
    /// flow word (so that the cache misses of different tuples overlap) measured no faster
    /// at 1M flows (254 vs 250 ns per hit; the out-of-order core already overlaps
    /// independent lookups), so it was not kept.
    #[inline]
    pub fn lookup_bulk(&self, tuples: &[Tuple], out: &mut [Option<Hit>]) {
        for (t, o) in tuples.iter().zip(out.iter_mut()) {
            *o = self.lookup(t);
        }
    }

    /// Records a packet of a hit flow: last-seen = now, state machine advanced with the TCP
    /// flags (`None` for other protocols; a reply-direction packet marks the flow replied).
    /// Returns the new state. One compare-and-swap, none when nothing changed; a handle of
    /// a flow deleted since changes nothing and returns its state at lookup.
    #[inline]
    pub fn touch(&self, hit: &Hit, now_ns: u64, tcp_flags: Option<u8>) -> FlowState {
        let Some(slot) = self.slots.get(hit.flow as usize) else {
            return hit.state;
        };
        let tick = tick_of(now_ns);
        let mut w = slot.flow.load(Ordering::Acquire);
        loop {
            if w & DYING != 0 || w_gen(w) != hit.generation {
                return hit.state;
            }
            let n = advance(w, hit.dir, tcp_flags, tick);
            if n == w {
                return decode(w);
            }
            match slot
                .flow
                .compare_exchange_weak(w, n, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return decode(n),
                Err(cur) => w = cur,
            }
        }
    }

    // ---- inserting ----------------------------------------------------------------------

    /// Scans `key`'s window: the key's hit if present, else claims the first free slot
    /// (evicting when there is none).
    fn claim(&self, key: &Tuple, hash: u64, now_tick: u32) -> Claim {
        let (ka, kb) = key.words();
        let fp = fingerprint(hash);
        let homes = self.homes(hash);
        for _ in 0..CLAIM_ATTEMPTS {
            // The first free slot of the first window, else of the second; the second
            // window is only scanned (for the key and for a free slot) when the first has
            // no empty slot, exactly as lookups do.
            let mut free = None;
            'windows: for home in homes {
                let mut s = home;
                for _ in 0..PROBE {
                    let c = self.ctl[s].load(Ordering::Acquire);
                    match c & ST_MASK {
                        ST_EMPTY => {
                            free.get_or_insert((s, c));
                            break 'windows;
                        }
                        ST_TOMB => {
                            free.get_or_insert((s, c));
                        }
                        _ => {
                            if c & FP_MASK == fp
                                && let Probe::Hit(h) = self.probe_slot(s, fp, ka, kb)
                            {
                                return Claim::Found(h);
                            }
                        }
                    }
                    s = (s + 1) & self.mask;
                }
            }
            match free {
                Some((s, c)) => {
                    let claimed = (c & VERSION_MASK) | fp | ST_LIVE | WRITING;
                    if self.ctl[s]
                        .compare_exchange(c, claimed, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        fence(Ordering::Release);
                        return Claim::Slot(s, claimed);
                    }
                }
                None => {
                    if !self.evict(homes, now_tick) {
                        return Claim::Full;
                    }
                }
            }
        }
        Claim::Full
    }

    /// Deletes the oldest non-assured flow with a slot in one of the two windows. False
    /// when there is none.
    fn evict(&self, homes: [usize; 2], now_tick: u32) -> bool {
        let mut victim: Option<(usize, u64, u64)> = None;
        for i in 0..2 * PROBE {
            let s = (homes[i / PROBE] + i % PROBE) & self.mask;
            if let Ok(r) = self.read_slot(s, None)
                && let Some((f, w)) = self.flow_of(s, &r)
                && !assured(w)
            {
                let age = age_ticks(now_tick, w_tick(w));
                if victim.is_none_or(|(_, _, a)| age > a) {
                    victim = Some((f, w, age));
                }
            }
        }
        let Some((f, w, _)) = victim else {
            return false;
        };
        if self.kill(f, w) {
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Publishes a claimed slot.
    #[inline]
    fn publish(&self, s: usize, claimed: u64) {
        self.ctl[s].store((claimed & !WRITING) + VERSION_ONE, Ordering::Release);
    }

    /// Gives a claimed slot back (as deleted: an inserter may have probed past it).
    fn release(&self, s: usize, claimed: u64) {
        self.ctl[s].store(
            ((claimed & VERSION_MASK) + VERSION_ONE) | ST_TOMB,
            Ordering::Release,
        );
    }

    /// Marks a live slot deleted. Only the thread that made its flow dying calls this.
    fn tombstone(&self, s: usize) {
        let c = self.ctl[s].load(Ordering::Relaxed);
        self.ctl[s].store(
            ((c & VERSION_MASK) + VERSION_ONE) | ST_TOMB,
            Ordering::Release,
        );
    }

    /// Deletes the flow whose flow word (in slot `f`) is `w`: false when the word changed.
    fn kill(&self, f: usize, w: u64) -> bool {
        let slot = &self.slots[f];
        if slot
            .flow
            .compare_exchange(w, w | DYING, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let peer = link_peer(slot.link.load(Ordering::Acquire));
        if peer != f && peer < self.slots.len() {
            self.tombstone(peer);
        }
        self.tombstone(f);
        self.counters.entries.fetch_sub(1, Ordering::Relaxed);
        true
    }

    #[inline]
    fn write_slot(&self, s: usize, key: &Tuple, rw: &Tuple, link: u64) {
        let (ka, kb) = key.words();
        let (ra, rb) = rw.words();
        let slot = &self.slots[s];
        slot.key_a.store(ka, Ordering::Relaxed);
        slot.key_b.store(kb, Ordering::Relaxed);
        slot.rw_a.store(ra, Ordering::Relaxed);
        slot.rw_b.store(rb, Ordering::Relaxed);
        slot.link.store(link, Ordering::Relaxed);
    }

    /// The next generation for a flow starting in slot `s` (never 0).
    #[inline]
    fn next_generation(&self, s: usize) -> u32 {
        let g = (w_gen(self.slots[s].flow.load(Ordering::Relaxed)) + 1) & GEN_MASK;
        g.max(1)
    }

    fn full(&self) -> InsertError {
        self.counters.insert_failed.fetch_add(1, Ordering::Relaxed);
        InsertError::Full
    }

    /// Claims and writes a one-slot entry.
    fn insert_single(
        &self,
        key: &Tuple,
        hash: u64,
        rw: &Tuple,
        code: u8,
        aux: u64,
        now_ns: u64,
    ) -> Result<Hit, InsertError> {
        let tick = tick_of(now_ns);
        let (s, claimed) = match self.claim(key, hash, tick) {
            Claim::Slot(s, c) => (s, c),
            Claim::Found(h) => return Err(InsertError::Exists(h)),
            Claim::Full => return Err(self.full()),
        };
        let generation = self.next_generation(s);
        self.write_slot(s, key, rw, make_link(s, generation, Dir::Original));
        let w = make_word(generation, code, tick);
        self.slots[s].flow.store(w, Ordering::Relaxed);
        self.slots[s].aux.store(aux, Ordering::Relaxed);
        // Counted before publishing, so a concurrent delete never takes `entries` below 0.
        self.counters.inserted.fetch_add(1, Ordering::Relaxed);
        self.counters.entries.fetch_add(1, Ordering::Relaxed);
        self.publish(s, claimed);
        Ok(Hit {
            slot: s as u32,
            dir: Dir::Original,
            rewrite: *rw,
            state: decode(w),
            flow: s as u32,
            generation,
        })
    }

    /// Inserts a flow whose original-direction packets (tuple `orig`) become `rewrite`; the
    /// reply tuple is `rewrite.reversed()`, whose packets become `orig.reversed()`.
    /// The first packet's TCP flags initialize the state ([`tcp::initial`]: a non-SYN first
    /// TCP packet is picked up as established, as Linux's tcp_loose=1).
    ///
    /// Errors: `Exists` when `orig` is tracked already, `ReplyTaken` when the reply tuple
    /// belongs to another flow, `Full`. No lock, no allocation.
    pub fn insert(
        &self,
        orig: &Tuple,
        rewrite: &Tuple,
        now_ns: u64,
        tcp_flags: Option<u8>,
    ) -> Result<Hit, InsertError> {
        let code = initial_code(orig.proto, tcp_flags);
        let ho = orig.hash();
        if let Some(h) = self.lookup_hashed(orig, ho) {
            return Err(InsertError::Exists(h));
        }
        let reply = rewrite.reversed();
        if reply == *orig {
            return self.insert_single(orig, ho, rewrite, code, 0, now_ns);
        }
        let tick = tick_of(now_ns);
        let (r, rc) = match self.claim(&reply, reply.hash(), tick) {
            Claim::Slot(s, c) => (s, c),
            Claim::Found(_) => {
                self.counters.reply_taken.fetch_add(1, Ordering::Relaxed);
                return Err(InsertError::ReplyTaken);
            }
            Claim::Full => return Err(self.full()),
        };
        let (o, oc) = match self.claim(orig, ho, tick) {
            Claim::Slot(s, c) => (s, c),
            Claim::Found(h) => {
                self.release(r, rc);
                return Err(InsertError::Exists(h));
            }
            Claim::Full => {
                self.release(r, rc);
                return Err(self.full());
            }
        };
        let generation = self.next_generation(o);
        self.write_slot(
            r,
            &reply,
            &orig.reversed(),
            make_link(o, generation, Dir::Reply),
        );
        self.write_slot(o, orig, rewrite, make_link(r, generation, Dir::Original));
        let w = make_word(generation, code, tick);
        self.slots[o].flow.store(w, Ordering::Relaxed);
        self.slots[o].aux.store(0, Ordering::Relaxed);
        self.counters.inserted.fetch_add(1, Ordering::Relaxed);
        self.counters.entries.fetch_add(1, Ordering::Relaxed);
        self.publish(o, oc);
        self.publish(r, rc);
        Ok(Hit {
            slot: o as u32,
            dir: Dir::Original,
            rewrite: *rewrite,
            state: decode(w),
            flow: o as u32,
            generation,
        })
    }

    /// ClientIP affinity: remember `backend` (ip, port) for `key` for `timeout_s` seconds
    /// after the last use; lookup() of an affinity key returns it as `rewrite.dst/dport`
    /// (`rewrite.src` = `key.src`). One slot; `Exists` when the key has an entry already.
    pub fn insert_affinity(
        &self,
        key: &Tuple,
        backend: (Ipv4Addr, u16),
        now_ns: u64,
        timeout_s: u32,
    ) -> Result<Hit, InsertError> {
        let rw = Tuple {
            proto: key.proto,
            src: key.src,
            dst: backend.0,
            sport: 0,
            dport: backend.1,
        };
        self.insert_single(
            key,
            key.hash(),
            &rw,
            CODE_AFFINITY,
            u64::from(timeout_s),
            now_ns,
        )
    }

    // ---- deleting -----------------------------------------------------------------------

    /// The flow slot and word of the flow using slot `s`, if it is alive.
    fn live_flow_at(&self, s: usize) -> Option<(usize, u64, SlotRead)> {
        let r = self.read_slot(s, None).ok()?;
        let (f, w) = self.flow_of(s, &r)?;
        Some((f, w, r))
    }

    /// Deletes the flow using slot `slot` now (either of its slots; both keys go).
    /// False when the slot holds no live flow. Control side, or a worker right after its
    /// lookup; see [`remove_hit`](Self::remove_hit) to delete one specific incarnation.
    pub fn remove(&self, slot: u32) -> bool {
        let s = slot as usize;
        if s >= self.slots.len() {
            return false;
        }
        for _ in 0..CLAIM_ATTEMPTS {
            let Some((f, w, _)) = self.live_flow_at(s) else {
                return false;
            };
            if self.kill(f, w) {
                self.counters.removed.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Deletes the flow `hit` was found in, unless it was deleted already.
    pub fn remove_hit(&self, hit: &Hit) -> bool {
        let Some(slot) = self.slots.get(hit.flow as usize) else {
            return false;
        };
        loop {
            let w = slot.flow.load(Ordering::Acquire);
            if w & DYING != 0 || w_gen(w) != hit.generation {
                return false;
            }
            if self.kill(hit.flow as usize, w) {
                self.counters.removed.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
    }

    /// The idle timeout of a flow word, in seconds.
    fn timeout_s(&self, w: u64, aux: u64) -> u64 {
        let t = &self.timeouts;
        let replied = w & REPLIED != 0;
        u64::from(match w_code(w) {
            CODE_AFFINITY => return aux,
            CODE_UDP if replied => t.udp_stream,
            CODE_UDP => t.udp,
            CODE_ICMP => t.icmp,
            CODE_SCTP if replied => t.sctp_established,
            CODE_SCTP => t.sctp,
            c => t.tcp(TcpState::from_code(c).unwrap_or(TcpState::None), replied),
        })
    }

    /// (age, time left) in ns of a flow word at `now_ns`.
    fn age_left(&self, w: u64, aux: u64, now_ns: u64) -> (u64, u64) {
        // The last-seen tick is truncated: measure from its start (a flow may expire up to
        // one tick early, never late).
        let ticks = age_ticks(tick_of(now_ns), w_tick(w));
        let age = (ticks << TICK_SHIFT) + (now_ns & ((1 << TICK_SHIFT) - 1));
        let timeout = self.timeout_s(w, aux).saturating_mul(1_000_000_000);
        (age, timeout.saturating_sub(age))
    }

    /// The entry of an original (or single) slot, with its flow word.
    fn entry_at(&self, s: usize, now_ns: u64) -> Option<(FlowEntry, usize, u64)> {
        let (f, w, r) = self.live_flow_at(s)?;
        if f != s {
            return None;
        }
        let (age, left) = self.age_left(w, r.aux, now_ns);
        let e = FlowEntry {
            orig: Tuple::from_words(r.key_a, r.key_b),
            rewrite: Tuple::from_words(r.rw_a, r.rw_b),
            state: decode(w),
            age_s: age / 1_000_000_000,
            expires_in_s: left.div_ceil(1_000_000_000),
            slot: s as u32,
        };
        Some((e, f, w))
    }

    /// Deletes every flow for which `f` is true (control side, scans the whole table);
    /// returns how many. Ages in the entries are relative to the latest `now_ns` given to
    /// `sweep` or `dump`.
    pub fn remove_where(&self, f: impl Fn(&FlowEntry) -> bool) -> usize {
        let now = self.clock.load(Ordering::Relaxed);
        let mut n = 0;
        for s in 0..self.slots.len() {
            for _ in 0..CLAIM_ATTEMPTS {
                let Some((e, fs, w)) = self.entry_at(s, now) else {
                    break;
                };
                if !f(&e) {
                    break;
                }
                if self.kill(fs, w) {
                    self.counters.removed.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                    break;
                }
            }
        }
        n
    }

    /// Expires flows: examines up to `budget` slots (at most the whole table) from an
    /// internal cursor that wraps, deleting flows idle longer than their timeout. Control
    /// side; safe while workers look up, touch and insert.
    pub fn sweep(&self, now_ns: u64, budget: usize) -> SweepStats {
        self.clock.fetch_max(now_ns, Ordering::Relaxed);
        let budget = budget.min(self.slots.len());
        let start = self.cursor.fetch_add(budget, Ordering::Relaxed);
        let mut st = SweepStats {
            examined: budget,
            ..SweepStats::default()
        };
        for i in 0..budget {
            let s = start.wrapping_add(i) & self.mask;
            for _ in 0..CLAIM_ATTEMPTS {
                let Some((f, w, r)) = self.live_flow_at(s) else {
                    break;
                };
                if f != s {
                    break; // a reply slot: its flow is examined at its original slot
                }
                let (_, left) = self.age_left(w, r.aux, now_ns);
                if left > 0 {
                    st.live += 1;
                    break;
                }
                if self.kill(f, w) {
                    self.counters.expired.fetch_add(1, Ordering::Relaxed);
                    st.expired += 1;
                    break;
                }
                // Touched or deleted meanwhile: look again.
            }
        }
        st
    }

    /// Up to `max` live flows for `xdplane conntrack` (control side, not fast).
    pub fn dump(&self, now_ns: u64, max: usize) -> Vec<FlowEntry> {
        self.clock.fetch_max(now_ns, Ordering::Relaxed);
        let mut v = Vec::new();
        for s in 0..self.slots.len() {
            if v.len() >= max {
                break;
            }
            if let Some((e, _, _)) = self.entry_at(s, now_ns) {
                v.push(e);
            }
        }
        v
    }
}

/// Test-only interleavings: code run by the reading thread at a point of a slot read, as
/// if another thread had run it there.
#[cfg(test)]
mod hooks {
    use super::FlowTable;
    use std::cell::RefCell;

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Point {
        /// After the key words, before the translation words.
        MidRead,
        /// After a validated read of a matching slot, before its flow word.
        BeforeFlow,
    }

    type Hook = (Point, Box<dyn FnOnce(&FlowTable)>);

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Runs `f` once, the next time this thread reaches `at`.
    pub fn set(at: Point, f: impl FnOnce(&FlowTable) + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some((at, Box::new(f))));
    }

    pub fn pending() -> bool {
        HOOK.with(|h| h.borrow().is_some())
    }

    pub fn run(t: &FlowTable, at: Point) {
        let hook = HOOK.with(|h| {
            let mut h = h.borrow_mut();
            if h.as_ref().is_some_and(|(p, _)| *p == at) {
                h.take()
            } else {
                None
            }
        });
        if let Some((_, f)) = hook {
            f(t);
        }
    }
}

#[cfg(test)]
mod tests;
