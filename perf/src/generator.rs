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
    _pad: [u32; 2],
    max_seq: u64,
    rate_pps: u64,
    interval_ns: u64,
    interval_rem: u64,
    max_lag_ns: u64,
}

/// `struct gen_state` of `bpf/common.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawState {
    seq: u64,
    flow: u32,
    _pad: u32,
    next_ns: u64,
    acc: u64,
}

/// A paced schedule may fall behind (the sender was preempted) by at most this many frames
/// before it stops catching up: the largest burst a rate-limited run sends.
pub const MAX_BURST: u64 = 32;

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
    /// CPU the sender threads are pinned to (they share the program's per-CPU state).
    pub cpu: usize,
    /// Frames per kernel batch (1..=256; 64 like a NAPI poll).
    pub batch_size: u32,
    /// Nice value of the sender threads (e.g. -20 so that other work on a shared machine
    /// barely takes the generator's CPU); `None`: inherited.
    pub nice: Option<i32>,
    /// Sender threads on `cpu` (1..=4). Every test-run call ends with an RCU grace period
    /// (~25 ms) in which its thread sleeps; with 2 threads the other one keeps the CPU
    /// sending, so the offered load has no gaps.
    pub threads: usize,
}

impl GenConfig {
    /// A config with 64-byte frames, one flow, batches of 64, CPU 0, two sender threads.
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
            cpu: 0,
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
        if self.cpu >= crate::cpu::nproc() {
            bail!(
                "CPU {} does not exist ({} CPUs)",
                self.cpu,
                crate::cpu::nproc()
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
    /// This many frames per second, paced by the program itself: a frame goes out when
    /// `bpf_ktime_get_ns()` reaches its due time, earlier invocations are dropped (the
    /// generator's CPU spins at 100 % either way). Frames are spaced to within one
    /// invocation (~0.1–0.2 µs) plus the kernel's flush of a 64-frame batch (a few µs);
    /// after a stall the schedule catches up by at most [`MAX_BURST`] frames, so a rate
    /// above what the CPU can do, or a preempted sender, yields fewer frames, never a
    /// burst. The long-run rate is exact otherwise.
    Pps(u64),
}

/// When to stop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Exactly this many frames (the program stops sending at the count).
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
        g.write_config(u64::MAX, Rate::Max)?;
        Ok(g)
    }

    /// Writes the configuration map: addresses from `self.cfg`, plus the run's count limit
    /// (`max_seq`, absolute on the sending CPU) and pacing.
    fn write_config(&mut self, max_seq: u64, rate: Rate) -> Result<()> {
        let c = &self.cfg;
        let mut raw = RawConfig {
            dst_mac: c.dst_mac,
            src_mac: c.src_mac,
            src_ip: c.src_ip.octets(),
            dst_ip: c.dst_ip.octets(),
            src_port: c.src_port,
            dst_port: c.dst_port,
            flows: c.flows,
            ifindex: self.ifindex,
            max_seq,
            ..RawConfig::default()
        };
        if let Rate::Pps(pps) = rate {
            if pps == 0 {
                bail!("rate must be above 0 frames/s");
            }
            raw.rate_pps = pps;
            raw.interval_ns = 1_000_000_000 / pps;
            raw.interval_rem = 1_000_000_000 % pps;
            raw.max_lag_ns = (MAX_BURST * 1_000_000_000 / pps).max(1);
        }
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
        self.write_config(u64::MAX, Rate::Max)
    }

    /// Runs the program once without sending and returns its verdict and the frame it wrote
    /// (one sequence number and one flow step are used up, as for a sent frame).
    pub fn render_frame(&mut self) -> Result<(u32, Vec<u8>)> {
        self.write_config(u64::MAX, Rate::Max)?;
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
    pub fn run(&mut self, limit: Limit, rate: Rate, stop: &AtomicBool) -> Result<GenReport> {
        let job = self.job(limit, rate)?;
        in_netns(self.cfg.netns.as_deref(), || job.run(stop))
    }

    /// Starts a run on a background thread.
    pub fn start(&mut self, limit: Limit, rate: Rate) -> Result<RunningGen> {
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

    /// Prepares a run: writes its count limit and pacing into the program's configuration.
    fn job(&mut self, limit: Limit, rate: Rate) -> Result<Job> {
        let max_seq = match limit {
            Limit::Count(n) => {
                let v = self.state.get(&0, 0).context("reading gen_state")?;
                let seq = v.get(self.cfg.cpu).map_or(0, |s| s.seq);
                seq.saturating_add(n)
            }
            _ => u64::MAX,
        };
        self.write_config(max_seq, rate)?;
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

/// Everything the sending threads need.
struct Job {
    prog: Arc<OwnedFd>,
    state: Arc<PerCpuArray<MapData, RawState>>,
    frame: Vec<u8>,
    batch_size: u32,
    cpu: usize,
    threads: usize,
    nice: Option<i32>,
    limit: Limit,
    rate: Rate,
}

/// Target duration of one test-run call. Every call ends with an RCU grace period (the
/// kernel tears down the call's page pool: ~25 ms here) during which that thread sends
/// nothing; long calls amortise it, and a second sender thread on the same CPU covers it
/// (see [`GenConfig::threads`]). A stop request waits for the current call.
const CALL_TARGET: Duration = Duration::from_millis(500);

impl Job {
    fn run(&self, stop: &AtomicBool) -> Result<GenReport> {
        // Threads spawned below inherit the affinity, the nice value and the namespace.
        sys::pin_to_cpu(0, self.cpu)?;
        if let Some(n) = self.nice {
            sys::set_nice(0, n).with_context(|| format!("nice {n} on the generator"))?;
        }
        let start_sent = total_sent(&self.state)?;
        let start = Instant::now();
        let calls = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..self.threads)
                .map(|_| {
                    s.spawn(|| {
                        let r = self.sender(start, start_sent, stop, &failed, &calls);
                        if r.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        r
                    })
                })
                .collect();
            let mut first_err = None;
            for h in handles {
                match h.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    Err(_) => {
                        first_err.get_or_insert(anyhow::anyhow!("sender thread panicked"));
                    }
                }
            }
            first_err.map_or(Ok(()), Err)
        })?;
        let elapsed = start.elapsed();
        let sent = total_sent(&self.state)? - start_sent;
        Ok(GenReport {
            sent,
            elapsed,
            calls: calls.load(Ordering::SeqCst),
        })
    }

    /// One sender thread: test-run calls until the limit or a stop.
    fn sender(
        &self,
        start: Instant,
        start_sent: u64,
        stop: &AtomicBool,
        failed: &AtomicBool,
        calls: &AtomicU64,
    ) -> Result<()> {
        // Program invocations per second on this thread (sent or, when pacing, dropped);
        // a first guess, then measured.
        let mut inv_per_sec = 1e6;
        loop {
            if stop.load(Ordering::Relaxed)
                || failed.load(Ordering::Relaxed)
                || sys::stop_requested()
            {
                return Ok(());
            }
            let mut want = CALL_TARGET.as_secs_f64();
            match self.limit {
                Limit::Count(c) => {
                    let sent = total_sent(&self.state)? - start_sent;
                    if sent >= c {
                        return Ok(());
                    }
                    // The program stops at the count; keep the call about that long.
                    let send_rate = match self.rate {
                        Rate::Pps(p) => p as f64,
                        Rate::Max => inv_per_sec,
                    };
                    want = want.min((c - sent) as f64 / send_rate);
                }
                Limit::Duration(d) => {
                    let elapsed = start.elapsed();
                    if elapsed >= d {
                        return Ok(());
                    }
                    want = want.min((d - elapsed).as_secs_f64());
                }
                Limit::Unlimited => {}
            }
            let repeat =
                (inv_per_sec * want).clamp(f64::from(self.batch_size), (1u64 << 26) as f64) as u32;
            let t0 = Instant::now();
            match sys::prog_test_run_live(self.prog.as_fd(), &self.frame, repeat, self.batch_size) {
                Ok(()) => {}
                // A signal: the loop looks at the stop flags.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e).context("BPF_PROG_TEST_RUN (live frames)"));
                }
            }
            calls.fetch_add(1, Ordering::Relaxed);
            let took = t0.elapsed().as_secs_f64();
            if took > 0.0 {
                inv_per_sec = f64::from(repeat) / took;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_common_h() {
        // struct gen_config: 6 + 6 + 4 + 4 + 2 + 2 + 4 + 4 + 2 × 4, then 5 × u64
        assert_eq!(std::mem::size_of::<RawConfig>(), 80);
        assert_eq!(std::mem::offset_of!(RawConfig, max_seq), 40);
        assert_eq!(std::mem::offset_of!(RawConfig, src_ip), 12);
        assert_eq!(std::mem::offset_of!(RawConfig, src_port), 20);
        assert_eq!(std::mem::offset_of!(RawConfig, flows), 24);
        assert_eq!(std::mem::offset_of!(RawConfig, ifindex), 28);
        assert_eq!(std::mem::size_of::<RawState>(), 32);
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
        c.cpu = 4096;
        assert!(c.validate().is_err());
        c.cpu = 0;
        c.threads = 0;
        assert!(c.validate().is_err());
        c.threads = 4;
        assert!(c.validate().is_ok());
        c.threads = 5;
        assert!(c.validate().is_err());
    }
}
