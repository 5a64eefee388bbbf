//! The traffic generator: the XDP program `bpf/xdpgen.c` run with `BPF_PROG_TEST_RUN` in
//! live-frame mode (`BPF_F_TEST_XDP_LIVE_FRAMES`), redirecting every frame it writes to one
//! interface.
//!
//! Each frame is IPv4/UDP; the program rewrites every header on every frame (live-frame
//! pages are recycled without reset): Ethernet source/destination, IPv4 addresses with a
//! correct header checksum, UDP ports (the source port cycles over `flows` values), and a
//! 16-byte payload with a sequence number and a `bpf_ktime_get_ns` timestamp. The number of
//! frames written is counted by the program itself (a per-CPU map), so [`Generator::sent`] is
//! exact even while a run is in progress or after one was interrupted.
//!
//! "Sent" means "redirected by the program": when the receiving veth's ring is full the
//! kernel drops the frame after that point; the receiving device counts those drops as
//! `rx_dropped`.
use crate::netns::in_netns;
use crate::sys;
use anyhow::{Context, Result, bail};
use aya::Ebpf;
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::Xdp;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

static XDPGEN_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdpgen.o"));

/// Smallest and largest Ethernet frame size accepted, FCS included (the usual RFC 2544
/// convention: a "64-byte frame" is 60 bytes of headers and payload plus a 4-byte FCS that
/// veth never carries).
pub const MIN_FRAME_SIZE: u16 = 64;
pub const MAX_FRAME_SIZE: u16 = 1518;
/// FCS bytes counted in a frame size but not written.
pub const FCS_LEN: u16 = 4;
/// The verdict `bpf_redirect` returns (`XDP_REDIRECT`).
pub const XDP_REDIRECT: u32 = 4;

/// `struct gen_config` of `bpf/common.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RawConfig {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    src_port: u16,
    dst_port: u16,
    flows: u32,
    ifindex: u32,
    _pad: u32,
}

/// `struct gen_state` of `bpf/common.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawState {
    seq: u64,
    flow: u32,
    _pad: u32,
}

// SAFETY: both are #[repr(C)] structs of integers and byte arrays with explicit padding
// fields, so every bit pattern is valid and there are no implicit padding bytes.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RawConfig {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RawState {}

/// What to send and where.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Namespace holding `ifname` (`/run/netns/NAME`); `None`: the caller's.
    pub netns: Option<PathBuf>,
    /// The interface frames are redirected to (they leave through it to its peer).
    pub ifname: String,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    /// First UDP source port; flow `i` (0..flows) uses `src_port + i`.
    pub src_port: u16,
    pub dst_port: u16,
    /// Number of flows (distinct source ports), at least 1.
    pub flows: u32,
    /// Ethernet frame size including FCS, [`MIN_FRAME_SIZE`]..=[`MAX_FRAME_SIZE`].
    pub frame_size: u16,
    /// CPU the sending thread is pinned to.
    pub cpu: Option<usize>,
    /// Frames per kernel batch (1..=256; 64 like a NAPI poll).
    pub batch_size: u32,
    /// Nice value of the sender threads (e.g. -20 so that other work on a shared machine
    /// barely takes the generator's CPU); `None`: inherited.
    pub nice: Option<i32>,
    /// Sender threads on `cpu` in max mode (1..=4). Every test-run call ends with an RCU
    /// grace period (~25 ms) in which its thread sleeps; with 2 threads the other one keeps
    /// the CPU sending, so the offered load has no gaps. Rate-limited mode uses one thread.
    pub threads: usize,
}

impl GenConfig {
    /// A config with 64-byte frames, one flow, batches of 64, no pinning.
    pub fn new(ifname: &str) -> GenConfig {
        GenConfig {
            netns: None,
            ifname: ifname.to_string(),
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 244, 1, 2),
            dst_ip: Ipv4Addr::new(10, 244, 1, 3),
            src_port: 10_000,
            dst_port: 9,
            flows: 1,
            frame_size: MIN_FRAME_SIZE,
            cpu: None,
            batch_size: 64,
            nice: None,
            threads: 2,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&self.frame_size) {
            bail!(
                "frame size {} outside {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE} (Ethernet, FCS included)",
                self.frame_size
            );
        }
        if self.flows == 0 {
            bail!("flows must be at least 1");
        }
        if u32::from(self.src_port) + self.flows - 1 > u32::from(u16::MAX) {
            bail!(
                "{} flows from source port {} run past port 65535",
                self.flows,
                self.src_port
            );
        }
        if self.batch_size == 0 || self.batch_size > sys::MAX_LIVE_BATCH {
            bail!(
                "batch size {} outside 1..={}",
                self.batch_size,
                sys::MAX_LIVE_BATCH
            );
        }
        if let Some(n) = self.nice
            && !(-20..=19).contains(&n)
        {
            bail!("nice {n} outside -20..=19");
        }
        if !(1..=4).contains(&self.threads) {
            bail!("sender threads {} outside 1..=4", self.threads);
        }
        Ok(())
    }
}

/// How fast to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as the CPU allows.
    Max,
    /// About this many frames per second on average. Frames leave in bursts of one test-run
    /// call at full speed with sleeps in between: a burst covers at least 10 ms of the
    /// schedule and, since every call costs an RCU grace period (~25 ms), in practice about
    /// 25–35 ms. The average over a run is exact to one burst; the instantaneous rate is not
    /// shaped.
    Pps(u64),
}

/// When to stop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Exactly this many frames.
    Count(u64),
    /// For this long (or until stopped).
    Duration(Duration),
    /// Until stopped.
    Unlimited,
}

/// The outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GenReport {
    /// Frames written and redirected by the program during the run.
    pub sent: u64,
    pub elapsed: Duration,
    /// Test-run calls made.
    pub calls: u64,
}

impl GenReport {
    pub fn pps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.sent as f64 / s } else { 0.0 }
    }
}

/// The loaded generator program and its maps. See the module documentation.
pub struct Generator {
    ebpf: Ebpf,
    prog: Arc<OwnedFd>,
    state: Arc<PerCpuArray<MapData, RawState>>,
    cfg: GenConfig,
    ifindex: u32,
}

impl Generator {
    /// Loads the program and writes its configuration. Fails when the interface does not
    /// exist in the namespace or the configuration is out of range.
    pub fn new(cfg: GenConfig) -> Result<Generator> {
        cfg.validate()?;
        let name = cfg.ifname.clone();
        let ifindex = in_netns(cfg.netns.as_deref(), move || {
            Ok(sys::if_nametoindex(&name)?)
        })
        .with_context(|| format!("generator interface {}", cfg.ifname))?;
        let mut ebpf = Ebpf::load(XDPGEN_OBJ).context("loading the generator XDP program")?;
        let prog: &mut Xdp = ebpf
            .program_mut("xdpgen")
            .context("program xdpgen missing from xdpgen.o")?
            .try_into()
            .context("xdpgen is not an XDP program")?;
        prog.load().context("loading xdpgen into the kernel")?;
        let prog_fd = prog
            .fd()
            .context("xdpgen fd")?
            .as_fd()
            .try_clone_to_owned()
            .context("dup xdpgen fd")?;
        let state_map = ebpf
            .take_map("gen_state")
            .context("map gen_state missing")?;
        let state: PerCpuArray<MapData, RawState> =
            PerCpuArray::try_from(state_map).context("map gen_state")?;
        let mut g = Generator {
            ebpf,
            prog: Arc::new(prog_fd),
            state: Arc::new(state),
            cfg,
            ifindex,
        };
        g.write_config()?;
        Ok(g)
    }

    fn write_config(&mut self) -> Result<()> {
        let c = &self.cfg;
        let raw = RawConfig {
            dst_mac: c.dst_mac,
            src_mac: c.src_mac,
            src_ip: c.src_ip.octets(),
            dst_ip: c.dst_ip.octets(),
            src_port: c.src_port,
            dst_port: c.dst_port,
            flows: c.flows,
            ifindex: self.ifindex,
            _pad: 0,
        };
        let map = self
            .ebpf
            .map_mut("gen_config")
            .context("map gen_config missing")?;
        let mut arr: Array<&mut MapData, RawConfig> =
            Array::try_from(map).context("map gen_config")?;
        arr.set(0, raw, 0).context("writing gen_config")?;
        Ok(())
    }

    /// The current configuration.
    pub fn config(&self) -> &GenConfig {
        &self.cfg
    }

    /// Changes the destination MAC of the frames (takes effect on the next frame).
    pub fn set_dst_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        self.update(|c| c.dst_mac = mac)
    }

    /// Changes the configuration between runs (addresses, ports, flows, frame size, CPU,
    /// batch size). The interface and namespace are fixed at [`Generator::new`].
    pub fn update(&mut self, f: impl FnOnce(&mut GenConfig)) -> Result<()> {
        let mut c = self.cfg.clone();
        f(&mut c);
        c.validate()?;
        if c.ifname != self.cfg.ifname || c.netns != self.cfg.netns {
            bail!("the generator's interface and namespace cannot change; make a new Generator");
        }
        self.cfg = c;
        self.write_config()
    }

    /// Runs the program once without sending and returns its verdict and the frame it wrote
    /// (one sequence number and one flow step are used up, as for a sent frame).
    pub fn render_frame(&self) -> Result<(u32, Vec<u8>)> {
        let input = vec![0u8; usize::from(self.cfg.frame_size - FCS_LEN)];
        let mut out = vec![0u8; input.len()];
        let (verdict, len) = sys::prog_test_run_once(self.prog.as_fd(), &input, &mut out)
            .context("BPF_PROG_TEST_RUN (one frame)")?;
        out.truncate(len);
        Ok((verdict, out))
    }

    /// Frames written by the program since it was loaded (all CPUs). Exact, and readable
    /// while a run is in progress.
    pub fn sent(&self) -> Result<u64> {
        total_sent(&self.state)
    }

    /// Runs on the calling thread's behalf and returns when `limit` is reached or `stop` is
    /// set (or SIGINT/SIGTERM arrived after [`sys::install_stop_handler`]).
    pub fn run(&self, limit: Limit, rate: Rate, stop: &AtomicBool) -> Result<GenReport> {
        let job = self.job(limit, rate)?;
        in_netns(self.cfg.netns.as_deref(), || job.run(stop))
    }

    /// Starts a run on a background thread.
    pub fn start(&self, limit: Limit, rate: Rate) -> Result<RunningGen> {
        let job = self.job(limit, rate)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let netns = self.cfg.netns.clone();
        let handle = std::thread::Builder::new()
            .name("xdpgen".into())
            .spawn(move || {
                if let Some(p) = &netns {
                    sys::setns_net(p)?;
                }
                job.run(&stop2)
            })
            .context("spawning the generator thread")?;
        Ok(RunningGen {
            stop,
            handle: Some(handle),
        })
    }

    fn job(&self, limit: Limit, rate: Rate) -> Result<Job> {
        if let Rate::Pps(0) = rate {
            bail!("rate must be above 0 frames/s");
        }
        Ok(Job {
            prog: self.prog.clone(),
            state: self.state.clone(),
            frame: vec![0u8; usize::from(self.cfg.frame_size - FCS_LEN)],
            batch_size: self.cfg.batch_size,
            cpu: self.cfg.cpu,
            threads: self.cfg.threads,
            nice: self.cfg.nice,
            limit,
            rate,
        })
    }
}

fn total_sent(state: &PerCpuArray<MapData, RawState>) -> Result<u64> {
    let v = state.get(&0, 0).context("reading gen_state")?;
    Ok(v.iter().map(|s| s.seq).sum())
}

/// A run in progress on a background thread.
pub struct RunningGen {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<GenReport>>>,
}

impl RunningGen {
    /// Asks the run to end (it ends within one test-run call: ≤ ~0.5 s in max mode) and
    /// waits for it.
    pub fn stop(mut self) -> Result<GenReport> {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    /// Waits for the run to reach its limit.
    pub fn wait(mut self) -> Result<GenReport> {
        self.join()
    }

    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    fn join(&mut self) -> Result<GenReport> {
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("generator thread panicked"))?,
            None => bail!("generator run already joined"),
        }
    }
}

impl Drop for RunningGen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Everything the sending thread needs.
struct Job {
    prog: Arc<OwnedFd>,
    state: Arc<PerCpuArray<MapData, RawState>>,
    frame: Vec<u8>,
    batch_size: u32,
    cpu: Option<usize>,
    threads: usize,
    nice: Option<i32>,
    limit: Limit,
    rate: Rate,
}

/// Target duration of one test-run call in max mode. Every call ends with an RCU grace
/// period (the kernel tears down the call's page pool: ~25 ms here) during which that thread
/// sends nothing; long calls amortise it, and a second sender thread on the same CPU covers
/// it (see [`GenConfig::threads`]).
const CALL_TARGET: Duration = Duration::from_millis(500);
/// Shortest burst in rate-limited mode.
const RATE_BURST: Duration = Duration::from_millis(10);

impl Job {
    fn run(&self, stop: &AtomicBool) -> Result<GenReport> {
        if let Some(cpu) = self.cpu {
            // Threads spawned below inherit the affinity (and the network namespace).
            sys::pin_to_cpu(0, cpu)?;
        }
        if let Some(n) = self.nice {
            sys::set_nice(0, n)?;
        }
        let start_sent = total_sent(&self.state)?;
        let start = Instant::now();
        let calls = match self.rate {
            Rate::Pps(pps) => self.run_rate(pps, start, start_sent, stop)?,
            Rate::Max => {
                // Frames still to hand out, for a count limit.
                let budget = AtomicU64::new(match self.limit {
                    Limit::Count(c) => c,
                    _ => u64::MAX,
                });
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..self.threads)
                        .map(|_| s.spawn(|| self.run_max(start, &budget, stop)))
                        .collect();
                    let mut calls = 0;
                    let mut first_err = None;
                    for h in handles {
                        match h.join() {
                            Ok(Ok(c)) => calls += c,
                            Ok(Err(e)) => {
                                // Stop the other senders too.
                                budget.store(0, Ordering::SeqCst);
                                first_err.get_or_insert(e);
                            }
                            Err(_) => {
                                first_err.get_or_insert(anyhow::anyhow!("sender thread panicked"));
                            }
                        }
                    }
                    match first_err {
                        Some(e) => Err(e),
                        None => Ok(calls),
                    }
                })?
            }
        };
        let elapsed = start.elapsed();
        let sent = total_sent(&self.state)? - start_sent;
        Ok(GenReport {
            sent,
            elapsed,
            calls,
        })
    }

    fn call(&self, repeat: u32) -> Result<()> {
        match sys::prog_test_run_live(self.prog.as_fd(), &self.frame, repeat, self.batch_size) {
            Ok(()) => Ok(()),
            // A signal: the caller's loop looks at the stop flags.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context("BPF_PROG_TEST_RUN (live frames)")),
        }
    }

    /// One sender thread of max mode; returns its number of calls.
    fn run_max(&self, start: Instant, budget: &AtomicU64, stop: &AtomicBool) -> Result<u64> {
        let mut calls = 0u64;
        let mut chunk: u64 = 1 << 16;
        let mut per_sec: Option<f64> = None;
        loop {
            if stop.load(Ordering::Relaxed) || sys::stop_requested() {
                break;
            }
            let mut n = chunk;
            if let Limit::Duration(d) = self.limit {
                let elapsed = start.elapsed();
                if elapsed >= d {
                    break;
                }
                if let Some(r) = per_sec {
                    n = n.min(((d - elapsed).as_secs_f64() * r) as u64 + 1);
                }
            }
            // Claim n frames of the budget (all of them when there is no count limit).
            let claimed = budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                (b > 0).then(|| b - n.min(b))
            });
            let n = match claimed {
                Ok(before) => n.min(before),
                Err(_) => break, // budget exhausted
            };
            let repeat = u32::try_from(n).unwrap_or(u32::MAX);
            let t0 = Instant::now();
            self.call(repeat)?;
            calls += 1;
            let took = t0.elapsed().as_secs_f64();
            if took > 0.0 {
                let r = f64::from(repeat) / took;
                per_sec = Some(r);
                chunk = ((r * CALL_TARGET.as_secs_f64()) as u64).clamp(4096, 1 << 26);
            }
        }
        Ok(calls)
    }

    /// Rate-limited mode, one thread: each call sends what the schedule allows up to the end
    /// of the next call (at least [`RATE_BURST`] ahead, more when calls take longer).
    fn run_rate(
        &self,
        pps: u64,
        start: Instant,
        start_sent: u64,
        stop: &AtomicBool,
    ) -> Result<u64> {
        let pps = pps as f64;
        let mut calls = 0u64;
        let mut lookahead = RATE_BURST;
        loop {
            if stop.load(Ordering::Relaxed) || sys::stop_requested() {
                break;
            }
            let sent = total_sent(&self.state)? - start_sent;
            let elapsed = start.elapsed();
            let mut horizon = elapsed + lookahead;
            match self.limit {
                Limit::Count(c) if sent >= c => break,
                Limit::Duration(d) if elapsed >= d => break,
                Limit::Duration(d) => horizon = horizon.min(d),
                _ => {}
            }
            let due = (pps * horizon.as_secs_f64()) as u64;
            let mut n = due.saturating_sub(sent);
            if let Limit::Count(c) = self.limit {
                n = n.min(c - sent);
            }
            let last_frames = matches!(self.limit, Limit::Count(c) if n == c - sent);
            if n < u64::from(self.batch_size) && !last_frames {
                // Wait until a batch is due.
                let next = (sent + u64::from(self.batch_size)) as f64 / pps;
                let wait =
                    Duration::from_secs_f64(next).saturating_sub(start.elapsed() + lookahead);
                std::thread::sleep(
                    wait.clamp(Duration::from_micros(100), Duration::from_millis(100)),
                );
                continue;
            }
            if n == 0 {
                continue;
            }
            let repeat = u32::try_from(n).unwrap_or(u32::MAX);
            let t0 = Instant::now();
            self.call(repeat)?;
            calls += 1;
            lookahead = t0.elapsed().max(RATE_BURST);
        }
        Ok(calls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_common_h() {
        // struct gen_config: 6 + 6 + 4 + 4 + 2 + 2 + 4 + 4 + 4
        assert_eq!(std::mem::size_of::<RawConfig>(), 36);
        assert_eq!(std::mem::offset_of!(RawConfig, src_ip), 12);
        assert_eq!(std::mem::offset_of!(RawConfig, src_port), 20);
        assert_eq!(std::mem::offset_of!(RawConfig, flows), 24);
        assert_eq!(std::mem::offset_of!(RawConfig, ifindex), 28);
        assert_eq!(std::mem::size_of::<RawState>(), 16);
    }

    #[test]
    fn config_validation() {
        let mut c = GenConfig::new("eth0");
        assert!(c.validate().is_ok());
        c.frame_size = 63;
        assert!(c.validate().is_err());
        c.frame_size = 1519;
        assert!(c.validate().is_err());
        c.frame_size = 1518;
        assert!(c.validate().is_ok());
        c.flows = 0;
        assert!(c.validate().is_err());
        c.flows = 65536 - 10_000;
        assert!(c.validate().is_ok());
        c.flows += 1;
        assert!(c.validate().is_err());
        c.flows = 1;
        c.batch_size = 257;
        assert!(c.validate().is_err());
        c.batch_size = 256;
        c.threads = 0;
        assert!(c.validate().is_err());
        c.threads = 4;
        assert!(c.validate().is_ok());
        c.threads = 5;
        assert!(c.validate().is_err());
    }
}
