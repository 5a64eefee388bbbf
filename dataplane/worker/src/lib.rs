//! Poll-mode workers.
//!
//! A worker is one thread, optionally pinned to a core, that owns a [`WorkerIo`] (one UMEM,
//! its AF_XDP sockets and frame pool). Its loop: apply control commands, load the published
//! snapshot if its generation changed (between batches only), then for every socket
//! rx burst → [`Pipeline::process`] → tx bursts grouped by egress socket, drops released and
//! counted; then service the rings (completions, fill, tx kicks).
//!
//! Every worker's pipeline tracks NATed flows in the node's one shared flow table
//! ([`WorkerConfig::flows`]) and allocates SNAT ports from its own slice of the range;
//! batches are stamped on the agent's clock ([`WorkerConfig::epoch`]), which the table's
//! sweeper uses too.
//!
//! Polling: `busy` spins forever; `adaptive` spins while traffic flows and sleeps in
//! `poll()` on every socket plus a wake-up socket after [`IDLE_BEFORE_SLEEP`] without work,
//! so an idle node burns no CPU.
#![forbid(unsafe_code)]

pub mod stats;

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use stats::{LocalCounters, MAX_PORTS, SharedCounters};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xdplane_pipeline::tables::conntrack::FlowTable;
use xdplane_pipeline::{
    BATCH, Batch, Desc, DropReason, Pipeline, PipelineConfig, PortId, Snapshot, Verdict,
};
use xdplane_xsk::{SockId, SocketConfig, UmemConfig, WorkerIo, XdpMaps};

/// How long an adaptive worker keeps spinning after its last packet.
pub const IDLE_BEFORE_SLEEP: Duration = Duration::from_micros(50);
/// Longest sleep in `poll()`; commands and shutdown also wake the worker at once.
pub const MAX_SLEEP: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Spin on the rings forever (lowest latency, one core at 100 %).
    Busy,
    /// Spin while traffic flows, sleep in `poll()` when idle.
    Adaptive,
}

impl std::str::FromStr for PollMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "busy" => Ok(PollMode::Busy),
            "adaptive" => Ok(PollMode::Adaptive),
            other => Err(format!("unknown poll mode {other:?} (busy|adaptive)")),
        }
    }
}

/// The snapshot as published by the control side: the pointer and its generation.
///
/// Workers compare the generation (one relaxed load per poll round) and only then load the
/// `Arc`, so steady state costs no reference-count traffic.
pub struct Published {
    generation: AtomicU64,
    snap: ArcSwap<Snapshot>,
}

impl Published {
    pub fn new(s: Snapshot) -> Published {
        Published {
            generation: AtomicU64::new(s.generation),
            snap: ArcSwap::from_pointee(s),
        }
    }
    /// Publishes a new generation; workers pick it up before their next batch.
    pub fn publish(&self, s: Snapshot) {
        let g = s.generation;
        self.snap.store(Arc::new(s));
        self.generation.store(g, Ordering::Release);
    }
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    pub fn load(&self) -> Arc<Snapshot> {
        self.snap.load_full()
    }
}

/// Commands from the control side, applied between batches.
pub enum Command {
    /// Bind a socket for `port` and make it live in the XDP program under `slot`.
    AddSocket {
        port: PortId,
        cfg: SocketConfig,
        slot: u32,
        reply: Sender<Result<(), String>>,
    },
    /// Remove every socket of `port` from the XDP maps and close them.
    RemovePort { port: PortId, reply: Sender<()> },
}

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub id: usize,
    /// How many workers the node runs: each allocates SNAT ports from its own slice
    /// (`PipelineConfig::worker` of `workers`).
    pub workers: usize,
    pub core: Option<usize>,
    pub poll: PollMode,
    pub umem: UmemConfig,
    /// Where the worker reports next hops it could not resolve (to the ARP resolver).
    pub misses: Option<Sender<std::net::Ipv4Addr>>,
    /// The node's connection-tracking table, shared by every worker: the reply of a flow
    /// may arrive on any worker's queue (services.md §1).
    pub flows: Arc<FlowTable>,
    /// The origin of the batches' clock (`Batch::now_ns`); the flow table's sweeper must
    /// use the same one, so all workers and the sweeper agree on a flow's age.
    pub epoch: Instant,
}

/// One socket's view for stats readers.
#[derive(Clone, Debug, Serialize)]
pub struct SocketInfo {
    pub port: PortId,
    pub ifindex: u32,
    pub queue: u32,
    /// Frames on this socket's fill side and tx side.
    pub in_fill: u32,
    pub in_tx: u32,
    /// The kernel's XDP_STATISTICS for the socket.
    pub xdp: Option<XdpCounters>,
}

/// The kernel's per-socket counters (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct XdpCounters {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// Where the worker's UMEM frames are.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct FrameCounts {
    pub total: u32,
    pub free: u32,
    pub in_fill: u32,
    pub in_tx: u32,
    pub held: u32,
    pub bad_descs: u64,
}

/// What a worker shares with the control side.
pub struct WorkerShared {
    pub id: usize,
    pub counters: SharedCounters,
    pub frames: std::sync::Mutex<FrameCounts>,
    pub sockets: std::sync::Mutex<Vec<SocketInfo>>,
    pub loops: AtomicU64,
    pub sleeps: AtomicU64,
    pub batches: AtomicU64,
    pub generation: AtomicU64,
    /// TCP resets the pipeline sent to reject connections to Services without endpoints.
    pub service_rejects: AtomicU64,
    pub umem_backing: std::sync::Mutex<String>,
    pub bind_mode: std::sync::Mutex<String>,
}

pub struct WorkerHandle {
    pub shared: Arc<WorkerShared>,
    cmds: Sender<Command>,
    wake: UnixDatagram,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Sends a command and wakes the worker if it sleeps.
    pub fn send(&self, c: Command) -> Result<(), String> {
        self.cmds
            .send(c)
            .map_err(|_| format!("worker {} has stopped", self.shared.id))?;
        let _ = self.wake.send(&[1]);
        Ok(())
    }

    /// Stops the worker and waits for it (its sockets close, the UMEM is unmapped).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.send(&[1]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Errors starting a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Io(String),
}

/// Starts a worker thread. The UMEM is created on the worker's own thread (after pinning, so
/// its pages are touched there first); this returns once it exists, or its error.
pub fn spawn(
    cfg: WorkerConfig,
    published: Arc<Published>,
    maps: XdpMaps,
) -> Result<WorkerHandle, WorkerError> {
    let (ctx, crx) = crossbeam_channel::unbounded();
    let (wake_tx, wake_rx) =
        UnixDatagram::pair().map_err(|e| WorkerError::Io(format!("wake socket: {e}")))?;
    wake_rx
        .set_nonblocking(true)
        .map_err(|e| WorkerError::Io(e.to_string()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(WorkerShared {
        id: cfg.id,
        counters: SharedCounters::default(),
        frames: Default::default(),
        sockets: Default::default(),
        loops: AtomicU64::new(0),
        sleeps: AtomicU64::new(0),
        batches: AtomicU64::new(0),
        generation: AtomicU64::new(0),
        service_rejects: AtomicU64::new(0),
        umem_backing: Default::default(),
        bind_mode: Default::default(),
    });
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let t = {
        let shared = shared.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("xdplane-w{}", cfg.id))
            .spawn(move || {
                if let Some(core) = cfg.core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        tracing::warn!(worker = cfg.id, core, "could not pin worker to core");
                    } else {
                        tracing::info!(worker = cfg.id, core, "worker pinned");
                    }
                }
                let io = match WorkerIo::new(&cfg.umem) {
                    Ok(io) => io,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("worker {}: UMEM: {e}", cfg.id)));
                        return;
                    }
                };
                *shared.umem_backing.lock().unwrap() = io.backing().name().to_string();
                let _ = ready_tx.send(Ok(()));
                let mut w = Worker {
                    cfg,
                    io,
                    maps,
                    published,
                    shared,
                    cmds: crx,
                    wake: wake_rx,
                    stop,
                    socks: Vec::new(),
                    port_sock: vec![None; MAX_PORTS],
                    counters: LocalCounters::new(),
                };
                w.run();
            })
            .map_err(|e| WorkerError::Io(format!("spawn: {e}")))?
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(WorkerHandle {
            shared,
            cmds: ctx,
            wake: wake_tx,
            stop,
            thread: Some(t),
        }),
        Ok(Err(e)) => {
            let _ = t.join();
            Err(WorkerError::Io(e))
        }
        Err(_) => {
            let _ = t.join();
            Err(WorkerError::Io("worker thread died during start".into()))
        }
    }
}

struct Sock {
    id: SockId,
    port: PortId,
    ifindex: u32,
    queue: u32,
    slot: u32,
}

struct Worker {
    cfg: WorkerConfig,
    io: WorkerIo,
    maps: XdpMaps,
    published: Arc<Published>,
    shared: Arc<WorkerShared>,
    cmds: Receiver<Command>,
    wake: UnixDatagram,
    stop: Arc<AtomicBool>,
    socks: Vec<Sock>,
    /// PortId → index into `socks` of the socket used to transmit on that port.
    port_sock: Vec<Option<usize>>,
    counters: LocalCounters,
}

impl Worker {
    fn run(&mut self) {
        let mut pipeline = Pipeline::with_flows(
            PipelineConfig {
                worker: self.cfg.id as u16,
                workers: self.cfg.workers.max(1) as u16,
                ..PipelineConfig::default()
            },
            self.cfg.flows.clone(),
        );
        let epoch = self.cfg.epoch;
        let mut snap = self.published.load();
        let mut generation = snap.generation;
        self.shared.generation.store(generation, Ordering::Relaxed);
        let mut batch = Batch::default();
        let mut rx = [Desc::default(); BATCH];
        let mut txq = [Desc::default(); BATCH];
        let mut dropq = [Desc::default(); BATCH];
        let mut last_work = Instant::now();
        let mut rounds: u64 = 0;
        let mut stats_at = Instant::now();
        tracing::info!(worker = self.cfg.id, poll = ?self.cfg.poll, "worker running");

        while !self.stop.load(Ordering::Acquire) {
            if !self.cmds.is_empty() {
                self.apply_commands();
            }
            let g = self.published.generation();
            if g != generation {
                snap = self.published.load();
                generation = snap.generation;
                self.shared.generation.store(generation, Ordering::Relaxed);
            }

            let mut work = 0usize;
            for si in 0..self.socks.len() {
                let (sid, in_port) = (self.socks[si].id, self.socks[si].port);
                let n = self.io.rx_burst(sid, &mut rx);
                if n == 0 {
                    continue;
                }
                work += n;
                let bytes: u64 = rx[..n].iter().map(|d| u64::from(d.len)).sum();
                self.counters.rx(in_port, n as u64, bytes);
                batch.load(in_port, &rx[..n]);
                batch.now_ns = epoch.elapsed().as_nanos() as u64;
                pipeline.process(&snap, &mut batch, &mut self.io);
                if !pipeline.neighbour_misses().is_empty() {
                    // Cold path: hand unresolved next hops to the ARP resolver.
                    match &self.cfg.misses {
                        Some(tx) => {
                            for ip in pipeline.take_neighbour_misses() {
                                let _ = tx.try_send(ip);
                            }
                        }
                        None => pipeline.clear_neighbour_misses(),
                    }
                }
                self.dispatch(&batch, &mut txq, &mut dropq);
            }
            self.io.service();
            rounds += 1;

            if work > 0 {
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
                self.counters.publish(&self.shared.counters);
                self.shared
                    .service_rejects
                    .store(pipeline.service_rejects(), Ordering::Relaxed);
                last_work = Instant::now();
            } else if self.cfg.poll == PollMode::Adaptive {
                let now = Instant::now();
                if now.duration_since(last_work) >= IDLE_BEFORE_SLEEP {
                    self.publish_slow_stats(&mut stats_at, true);
                    self.shared.loops.store(rounds, Ordering::Relaxed);
                    self.shared.sleeps.fetch_add(1, Ordering::Relaxed);
                    let _ = self.io.wait(MAX_SLEEP, Some(self.wake.as_fd()));
                    let mut buf = [0u8; 64];
                    while self.wake.recv(&mut buf).is_ok() {}
                    last_work = Instant::now();
                }
            }
            if rounds.is_multiple_of(1024) {
                self.shared.loops.store(rounds, Ordering::Relaxed);
                self.publish_slow_stats(&mut stats_at, false);
            }
        }
        self.shutdown();
    }

    /// Sends `Tx` packets grouped by egress socket, releases and counts drops.
    fn dispatch(&mut self, batch: &Batch, txq: &mut [Desc; BATCH], dropq: &mut [Desc; BATCH]) {
        let n = batch.len;
        let in_port = batch.meta.first().map(|m| m.in_port).unwrap_or(0);
        // Pass 1: drops, and the distinct egress ports (a batch rarely has more than a few).
        let mut ports = [0 as PortId; BATCH];
        let mut nports = 0usize;
        let mut ndrop = 0usize;
        for (d, m) in batch.desc[..n].iter().zip(&batch.meta[..n]) {
            match m.verdict {
                Verdict::Tx(port) => {
                    if !ports[..nports].contains(&port) {
                        ports[nports] = port;
                        nports += 1;
                    }
                }
                Verdict::Drop(reason) => {
                    self.counters.drop(in_port, reason);
                    dropq[ndrop] = *d;
                    ndrop += 1;
                }
                Verdict::Pending => {
                    // The pipeline guarantees a final verdict; count defensively.
                    self.counters.drop(in_port, DropReason::NoVerdict);
                    dropq[ndrop] = *d;
                    ndrop += 1;
                }
            }
        }
        if ndrop > 0 {
            self.io.release(&dropq[..ndrop]);
        }
        // Pass 2: one tx burst per egress port, in arrival order.
        for &port in &ports[..nports] {
            let mut k = 0usize;
            let mut bytes = 0u64;
            for (d, m) in batch.desc[..n].iter().zip(&batch.meta[..n]) {
                if m.verdict == Verdict::Tx(port) {
                    txq[k] = *d;
                    bytes += u64::from(d.len);
                    k += 1;
                }
            }
            let sock = self.port_sock.get(usize::from(port)).copied().flatten();
            let sent = match sock {
                Some(si) => self.io.tx_burst(self.socks[si].id, &txq[..k]),
                None => 0,
            };
            if sent > 0 {
                let sent_bytes: u64 = if sent == k {
                    bytes
                } else {
                    txq[..sent].iter().map(|d| u64::from(d.len)).sum()
                };
                self.counters.tx(port, sent as u64, sent_bytes);
            }
            if sent < k {
                let reason = if sock.is_some() {
                    DropReason::TxRingFull
                } else {
                    DropReason::PortDown
                };
                for _ in sent..k {
                    self.counters.drop(in_port, reason);
                }
                self.io.release(&txq[sent..k]);
            }
        }
    }

    fn apply_commands(&mut self) {
        while let Ok(c) = self.cmds.try_recv() {
            match c {
                Command::AddSocket {
                    port,
                    cfg,
                    slot,
                    reply,
                } => {
                    let r = self.add_socket(port, cfg, slot);
                    let _ = reply.send(r);
                }
                Command::RemovePort { port, reply } => {
                    self.remove_port(port);
                    let _ = reply.send(());
                }
            }
        }
        self.refresh_socket_list();
    }

    fn add_socket(&mut self, port: PortId, cfg: SocketConfig, slot: u32) -> Result<(), String> {
        if usize::from(port) >= MAX_PORTS {
            return Err(format!(
                "port id {port} beyond the worker's limit {MAX_PORTS}"
            ));
        }
        let (ifindex, queue) = (cfg.ifindex, cfg.queue_id);
        let id = self
            .io
            .add_socket(&cfg)
            .map_err(|e| format!("AF_XDP socket on ifindex {ifindex} queue {queue}: {e}"))?;
        // Fill rings are stocked by add_socket; only now steer traffic to it.
        if let Err(e) = self
            .maps
            .set_slot(ifindex, queue, slot, self.io.socket_fd(id))
        {
            self.io.remove_socket(id);
            return Err(format!(
                "XDP map update for ifindex {ifindex} queue {queue}: {e}"
            ));
        }
        if let Some(m) = self.io.mode() {
            *self.shared.bind_mode.lock().unwrap() = format!("{m:?}").to_lowercase();
        }
        let fresh = !self.socks.iter().any(|s| s.port == port);
        if fresh {
            self.counters.reset_port(port, &self.shared.counters);
        }
        self.socks.push(Sock {
            id,
            port,
            ifindex,
            queue,
            slot,
        });
        if self.port_sock[usize::from(port)].is_none() {
            self.port_sock[usize::from(port)] = Some(self.socks.len() - 1);
        }
        tracing::info!(
            worker = self.cfg.id,
            port,
            ifindex,
            queue,
            slot,
            "socket added"
        );
        Ok(())
    }

    fn remove_port(&mut self, port: PortId) {
        let mut i = 0;
        while i < self.socks.len() {
            if self.socks[i].port == port {
                let s = self.socks.swap_remove(i);
                if let Err(e) = self.maps.clear_slot(s.ifindex, s.queue, s.slot) {
                    tracing::debug!(port, error = %e, "clearing XDP slot (device may be gone)");
                }
                self.io.remove_socket(s.id);
                tracing::info!(
                    worker = self.cfg.id,
                    port,
                    queue = s.queue,
                    "socket removed"
                );
            } else {
                i += 1;
            }
        }
        // Rebuild the port → socket index (swap_remove moved entries).
        for p in self.port_sock.iter_mut() {
            *p = None;
        }
        for (idx, s) in self.socks.iter().enumerate() {
            let e = &mut self.port_sock[usize::from(s.port)];
            if e.is_none() {
                *e = Some(idx);
            }
        }
    }

    fn refresh_socket_list(&mut self) {
        let list = self
            .socks
            .iter()
            .map(|s| {
                let (in_fill, in_tx) = self.io.socket_frames(s.id).unwrap_or((0, 0));
                SocketInfo {
                    port: s.port,
                    ifindex: s.ifindex,
                    queue: s.queue,
                    in_fill,
                    in_tx,
                    xdp: self.io.xdp_stats(s.id).ok().map(|x| XdpCounters {
                        rx_dropped: x.rx_dropped,
                        rx_invalid_descs: x.rx_invalid_descs,
                        tx_invalid_descs: x.tx_invalid_descs,
                        rx_ring_full: x.rx_ring_full,
                        rx_fill_ring_empty_descs: x.rx_fill_ring_empty_descs,
                        tx_ring_empty_descs: x.tx_ring_empty_descs,
                    }),
                }
            })
            .collect();
        *self.shared.sockets.lock().unwrap() = list;
        let f = self.io.frame_stats();
        *self.shared.frames.lock().unwrap() = FrameCounts {
            total: f.total,
            free: f.free,
            in_fill: f.in_fill,
            in_tx: f.in_tx,
            held: f.held,
            bad_descs: f.bad_descs,
        };
    }

    /// Frame and XDP statistics, at most every 250 ms (these take a lock / syscalls).
    fn publish_slow_stats(&mut self, at: &mut Instant, force: bool) {
        if force || at.elapsed() >= Duration::from_millis(250) {
            *at = Instant::now();
            self.counters.publish(&self.shared.counters);
            self.refresh_socket_list();
        }
    }

    fn shutdown(&mut self) {
        let ports: Vec<PortId> = self.socks.iter().map(|s| s.port).collect();
        for p in ports {
            self.remove_port(p);
        }
        self.counters.publish(&self.shared.counters);
        self.refresh_socket_list();
        tracing::info!(worker = self.cfg.id, "worker stopped");
    }
}
