//! Scenario `pod-pod`: UDP from pod A to pod B on the same node, through the Linux bridge
//! (what flannel's `cni0` does) and through xdplane, measured side by side in one run on the
//! same veths, alternating (kernel, xdplane, kernel, xdplane, …).
//!
//! ```text
//!  <prefix>-gen (pod A)       <prefix>-node                         <prefix>-sink (pod B)
//!  eth0 10.244.1.2/24 ─veth─ vetha ─┬─ kernel:  cni0 bridge 10.244.1.1 ─┬─ vethb ─veth─ eth0 10.244.1.3/24
//!  generator (XDP live            │  xdplane: `xdplane run` worker   │                sink (XDP_DROP,
//!  frames, redirect to eth0)      └──────────────────────────────────┘                counts)
//! ```
//!
//! Destination MAC of the generated frames: with a bridge, pods on one node talk L2 directly,
//! so pod A addresses pod B's MAC. With xdplane, pod A resolves every address of the pod
//! CIDR (gateway and, proxy-ARP style, the other pods) to the MAC of its host-side port, so
//! the frames are addressed to `vetha`'s MAC and xdplane rewrites them to pod B's.
//!
//! CPU layout, the same for both datapaths: the generator on `gen_cpu` (0); the node's
//! receive work on `fwd_cpu` (1) — threaded NAPI on `vetha` with its kthread pinned there —
//! and the xdplane worker pinned to the same CPU (`--cores 1`). The sink's XDP program runs
//! in the softirq of whoever transmits to it, i.e. on `fwd_cpu` too, for both datapaths.
//! `vetha` keeps GRO on throughout so that it has NAPI (and accepts the generator's
//! redirected frames) with or without an XDP program attached.
use super::common::{
    StateDir, agent_bin_if, background, bench_attachment, check_cpus_and_runs,
    check_prefix_and_root, group_by, measure_window, nice_agent_threads, open_net_dev,
    parse_net_dev, rate_label, read_net_dev, stat_of, table_head, write_background,
};
use crate::agent::AgentProcess;
use crate::cpu::{AutogroupNice, napi_threads};
use crate::generator::{GenConfig, Generator, Rate};
use crate::netns::{Netns, fmt_mac, veth_pair};
use crate::report::{ReportHeader, Stat, save_json};
use crate::sink::{Sink, SinkFilter};
use crate::sys;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const POD_CIDR: &str = "10.244.1.0/24";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
pub const POD_A_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
pub const POD_B_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
/// UDP destination port of the test traffic (the sink matches on it).
pub const DST_PORT: u16 = 5001;
/// First UDP source port (flow i uses SRC_PORT + i).
pub const SRC_PORT: u16 = 10_000;

/// A datapath under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Datapath {
    /// Linux bridge `cni0` in the node namespace, both host veths enslaved.
    Kernel,
    /// The xdplane agent in the node namespace, both pods attached over its admin socket.
    Xdplane,
}

impl Datapath {
    pub fn name(self) -> &'static str {
        match self {
            Datapath::Kernel => "kernel",
            Datapath::Xdplane => "xdplane",
        }
    }
}

/// Options of the scenario.
#[derive(Debug, Clone)]
pub struct PodPodOpts {
    /// Namespace name prefix (`<prefix>-gen`, `<prefix>-node`, `<prefix>-sink`).
    pub prefix: String,
    /// Runs per datapath.
    pub runs: usize,
    pub warmup: Duration,
    pub window: Duration,
    /// Ethernet frame size with FCS (64..=1518).
    pub frame_size: u16,
    pub flows: u32,
    pub rate: Rate,
    /// Datapaths in the order they alternate.
    pub datapaths: Vec<Datapath>,
    pub gen_cpu: usize,
    pub fwd_cpu: usize,
    /// Nice value given to the measured tasks — generator threads, vetha's NAPI thread, every
    /// thread of the agent — the same for both datapaths, so that other work on a shared
    /// machine barely takes their CPUs. `None`: left as they are.
    pub nice: Option<i32>,
    /// The agent binary (default: found by [`find_agent_bin`](crate::agent::find_agent_bin)).
    pub agent_bin: Option<PathBuf>,
    /// Extra arguments for `xdplane run`.
    pub agent_args: Vec<String>,
    /// Where the JSON report goes (`None`: not written).
    pub results_dir: Option<PathBuf>,
}

impl Default for PodPodOpts {
    fn default() -> Self {
        PodPodOpts {
            prefix: format!("pp{}", std::process::id()),
            runs: 3,
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(3),
            frame_size: 64,
            flows: 1,
            rate: Rate::Max,
            datapaths: vec![Datapath::Kernel, Datapath::Xdplane],
            gen_cpu: 0,
            fwd_cpu: 1,
            nice: Some(-20),
            agent_bin: None,
            agent_args: Vec::new(),
            results_dir: Some(default_results_dir()),
        }
    }
}

/// `perf/results` of the source tree this crate was built from.
pub fn default_results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results")
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub datapath: Datapath,
    /// 1-based, per datapath.
    pub run: usize,
    pub window_s: f64,
    /// Frames matched by the sink per second (the forwarded rate).
    pub sink_pps: f64,
    /// Frames the generator wrote per second.
    pub offered_pps: f64,
    /// Frames `vetha` received per second (offered minus those dropped at its full ring).
    pub node_rx_pps: f64,
    /// Frames dropped at `vetha`'s ring per second (the generator outran the node).
    pub node_rx_dropped_pps: f64,
    /// Share of the frames the node received that did not reach the sink.
    pub node_loss: f64,
    /// Busy share of the generator's CPU and of the forwarding CPU (/proc/stat).
    pub gen_cpu_busy: f64,
    pub fwd_cpu_busy: f64,
    /// Busy ns of the forwarding CPU per frame that reached the sink.
    pub ns_per_pkt_fwd_cpu: f64,
    /// CPU ns of the datapath's own tasks (vetha's NAPI thread, plus the agent process for
    /// xdplane) per frame that reached the sink: insensitive to other load on the machine,
    /// but it misses softirq time charged to no task.
    pub ns_per_pkt_tasks: f64,
    pub delivered: u64,
    pub reordered: u64,
    pub mean_latency_us: Option<f64>,
}

/// Medians (and min/max) of a datapath's runs.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub sink_mpps: Stat,
    pub offered_mpps: Stat,
    pub node_rx_mpps: Stat,
    pub fwd_cpu_busy: Stat,
    pub ns_per_pkt_fwd_cpu: Stat,
    pub ns_per_pkt_tasks: Stat,
}

/// xdplane median / kernel median.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub sink_pps: f64,
    pub ns_per_pkt_fwd_cpu: f64,
    pub ns_per_pkt_tasks: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrNetfilter {
    /// The br_netfilter module is loaded (bridged IPv4 then goes through iptables unless
    /// `bridge-nf-call-iptables` is 0).
    pub loaded: bool,
    /// `net.bridge.bridge-nf-call-iptables` in the node namespace, when the module is loaded.
    pub call_iptables: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub generator_cpu: usize,
    pub forwarding_cpu: usize,
    pub nice: Option<i32>,
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Traffic {
    pub frame_size: u16,
    pub flows: u32,
    pub rate: String,
    pub warmup_s: f64,
    pub window_s: f64,
    pub runs_per_datapath: usize,
    pub dst_mac: BTreeMap<Datapath, String>,
}

/// The report: written as JSON, printed as a table.
#[derive(Debug, Clone, Serialize)]
pub struct PodPodReport {
    /// Scenario, date, command line and machine.
    #[serde(flatten)]
    pub header: ReportHeader,
    pub layout: Layout,
    pub traffic: Traffic,
    pub br_netfilter: BrNetfilter,
    /// Busy share of the generator and forwarding CPUs over 1 s before any traffic: load
    /// from outside the scenario that the per-CPU figures include.
    pub background_busy: [f64; 2],
    pub runs: Vec<RunResult>,
    pub summary: BTreeMap<Datapath, Summary>,
    pub ratio_xdplane_over_kernel: Option<Ratio>,
    /// Set when the scenario stopped early; `runs` then holds what was measured.
    pub error: Option<String>,
    #[serde(skip)]
    pub file_stamp: String,
}

impl PodPodReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = table_head(
            &format!(
                "pod-pod: {}-byte UDP frames, {} flow(s), rate {}, pod A → pod B on one node",
                self.traffic.frame_size, self.traffic.flows, self.traffic.rate
            ),
            &self.header.machine,
        );
        let _ = writeln!(s, "layout: {}", self.layout.description);
        let _ = writeln!(
            s,
            "br_netfilter: {}",
            match (self.br_netfilter.loaded, self.br_netfilter.call_iptables) {
                (false, _) => "not loaded (bridged frames skip iptables)".to_string(),
                (true, Some(true)) =>
                    "loaded, bridge-nf-call-iptables=1 (bridged frames go through iptables)"
                        .to_string(),
                (true, Some(false)) => "loaded, bridge-nf-call-iptables=0".to_string(),
                (true, None) => "loaded, bridge-nf-call-iptables unknown".to_string(),
            }
        );
        write_background(
            &mut s,
            self.layout.generator_cpu,
            self.layout.forwarding_cpu,
            self.background_busy,
        );
        let _ = writeln!(
            s,
            "\n{:<8} {:>3} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9}",
            "datapath",
            "run",
            "sink Mpps",
            "offered",
            "node rx",
            "node loss",
            "CPU g %",
            "CPU f %",
            "ns/pkt f",
            "ns/pkt t",
            "lat µs"
        );
        for r in &self.runs {
            let _ = writeln!(
                s,
                "{:<8} {:>3} {:>9.3} {:>9.3} {:>9.3} {:>8.1}% {:>7.1} {:>7.1} {:>9.0} {:>9.0} {:>9}",
                r.datapath.name(),
                r.run,
                r.sink_pps / 1e6,
                r.offered_pps / 1e6,
                r.node_rx_pps / 1e6,
                r.node_loss * 100.0,
                r.gen_cpu_busy * 100.0,
                r.fwd_cpu_busy * 100.0,
                r.ns_per_pkt_fwd_cpu,
                r.ns_per_pkt_tasks,
                r.mean_latency_us
                    .map_or_else(|| "-".to_string(), |l| format!("{l:.0}")),
            );
        }
        let _ = writeln!(
            s,
            "\n(f = forwarding CPU {}, g = generator CPU {}; ns/pkt f = busy ns of CPU {} per delivered frame, ns/pkt t = CPU ns of the datapath's own tasks per delivered frame)",
            self.layout.forwarding_cpu, self.layout.generator_cpu, self.layout.forwarding_cpu
        );
        let _ = writeln!(s, "\nmedian [min–max] over the runs:");
        for (dp, sm) in &self.summary {
            let _ = writeln!(
                s,
                "{:<8} sink {:.3} Mpps [{:.3}–{:.3}]   {:.0} ns/pkt on CPU {} [{:.0}–{:.0}]   {:.0} ns/pkt in its tasks",
                dp.name(),
                sm.sink_mpps.median,
                sm.sink_mpps.min,
                sm.sink_mpps.max,
                sm.ns_per_pkt_fwd_cpu.median,
                self.layout.forwarding_cpu,
                sm.ns_per_pkt_fwd_cpu.min,
                sm.ns_per_pkt_fwd_cpu.max,
                sm.ns_per_pkt_tasks.median,
            );
        }
        if let Some(r) = &self.ratio_xdplane_over_kernel {
            let _ = writeln!(
                s,
                "xdplane/kernel: throughput ×{:.2}, CPU per packet ×{:.2} (forwarding CPU), ×{:.2} (tasks)",
                r.sink_pps, r.ns_per_pkt_fwd_cpu, r.ns_per_pkt_tasks
            );
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "\nstopped early: {e}");
        }
        s
    }

    /// Writes `pod-pod-<date>.json` into `dir` and returns its path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        save_json(self, dir, "pod-pod", &self.file_stamp)
    }
}

/// Runs the scenario. Everything it creates is removed before it returns, also on error or
/// SIGINT/SIGTERM (when [`sys::install_stop_handler`] was called). A failure while setting
/// up is an `Err`; a failure (or interruption) once runs have started ends the scenario
/// with the runs measured so far and the reason in [`PodPodReport::error`].
pub fn run(opts: &PodPodOpts) -> Result<PodPodReport> {
    check_opts(opts)?;
    let agent_bin = agent_bin_if(
        opts.datapaths.contains(&Datapath::Xdplane),
        opts.agent_bin.as_deref(),
    )?;
    let (header, file_stamp) = ReportHeader::now("pod-pod");
    let _autogroup = AutogroupNice::set_opt(opts.nice)?;
    let state = StateDir::create(&opts.prefix)?;
    let topo = Topology::build(&opts.prefix)?;
    let mut generator = Generator::new(GenConfig {
        netns: Some(topo.gen_ns.path()),
        ifname: "eth0".into(),
        src_mac: topo.mac_a,
        dst_mac: topo.mac_b,
        src_ip: POD_A_IP,
        dst_ip: POD_B_IP,
        src_port: SRC_PORT,
        dst_port: DST_PORT,
        flows: opts.flows,
        frame_size: opts.frame_size,
        cpu: opts.gen_cpu,
        batch_size: 64,
        nice: opts.nice,
        threads: 2,
    })?;

    let br_netfilter = br_netfilter_state(&topo.node);
    let background_busy = background(opts.gen_cpu, opts.fwd_cpu)?;
    let dst_mac_for = |dp: Datapath| match dp {
        Datapath::Kernel => topo.mac_b,
        Datapath::Xdplane => topo.mac_vetha,
    };
    let mut report = PodPodReport {
        header,
        layout: Layout {
            generator_cpu: opts.gen_cpu,
            forwarding_cpu: opts.fwd_cpu,
            nice: opts.nice,
            description: format!(
                "generator pinned to CPU {g}; threaded NAPI on vetha with its kthread pinned to CPU {f}; xdplane worker pinned to CPU {f}; the sink's XDP runs in the sender's softirq (CPU {f}); {n}",
                g = opts.gen_cpu,
                f = opts.fwd_cpu,
                n = match opts.nice {
                    Some(n) => format!(
                        "generator, NAPI thread, agent and this session's autogroup at nice {n}"
                    ),
                    None => "default priorities".to_string(),
                }
            ),
        },
        traffic: Traffic {
            frame_size: opts.frame_size,
            flows: opts.flows,
            rate: rate_label(opts.rate),
            warmup_s: opts.warmup.as_secs_f64(),
            window_s: opts.window.as_secs_f64(),
            runs_per_datapath: opts.runs,
            dst_mac: opts
                .datapaths
                .iter()
                .map(|&dp| (dp, fmt_mac(&dst_mac_for(dp))))
                .collect(),
        },
        br_netfilter,
        background_busy,
        runs: Vec::new(),
        summary: BTreeMap::new(),
        ratio_xdplane_over_kernel: None,
        error: None,
        file_stamp,
    };

    'outer: for i in 1..=opts.runs {
        for &dp in &opts.datapaths {
            eprintln!("pod-pod: {} run {i}/{} …", dp.name(), opts.runs);
            let r = generator
                .set_dst_mac(dst_mac_for(dp))
                .and_then(|()| match dp {
                    Datapath::Kernel => run_kernel(&topo, &mut generator, opts, i),
                    Datapath::Xdplane => run_xdplane(
                        &topo,
                        &state,
                        agent_bin.as_deref().context("no agent binary")?,
                        &mut generator,
                        opts,
                        i,
                    ),
                });
            match r {
                Ok(r) => {
                    eprintln!(
                        "pod-pod: {} run {i}: {:.3} Mpps delivered, {:.0} ns/pkt on CPU {}",
                        dp.name(),
                        r.sink_pps / 1e6,
                        r.ns_per_pkt_fwd_cpu,
                        opts.fwd_cpu
                    );
                    report.runs.push(r);
                }
                Err(e) => {
                    report.error = Some(format!("{} run {i}: {e:#}", dp.name()));
                    break 'outer;
                }
            }
        }
    }
    summarize(&mut report);
    drop(generator);
    drop(topo);
    drop(state);
    Ok(report)
}

fn check_opts(opts: &PodPodOpts) -> Result<()> {
    check_cpus_and_runs(opts.gen_cpu, opts.fwd_cpu, opts.runs, opts.datapaths.len())?;
    if opts.window < Duration::from_millis(500) {
        bail!("a measuring window under 0.5 s is too short for /proc/stat (10 ms ticks)");
    }
    check_prefix_and_root("pod-pod", &opts.prefix, "letters, digits, - and _ only")
}

/// The namespaces, veths and the sink. Field order is drop order: the sink detaches before
/// the namespaces (and their veths) are deleted.
struct Topology {
    sink: Sink,
    gen_ns: Netns,
    node: Netns,
    /// Held for its `Drop` (pod B's namespace).
    _sink_ns: Netns,
    mac_a: [u8; 6],
    mac_b: [u8; 6],
    mac_vetha: [u8; 6],
    /// `/proc/thread-self/net/dev` opened by a thread inside the node namespace: the open
    /// file stays bound to that namespace, and each read from offset 0 is fresh.
    node_net_dev: File,
    /// NAPI threads named like ours that existed before we made ours (other namespaces).
    foreign_napi: HashSet<i32>,
}

impl Topology {
    fn build(prefix: &str) -> Result<Topology> {
        let gen_ns = Netns::create(&format!("{prefix}-gen"))?;
        let node = Netns::create(&format!("{prefix}-node"))?;
        let sink_ns = Netns::create(&format!("{prefix}-sink"))?;
        veth_pair(&node, "vetha", &gen_ns, "eth0")?;
        veth_pair(&node, "vethb", &sink_ns, "eth0")?;
        for (ns, ip) in [(&gen_ns, POD_A_IP), (&sink_ns, POD_B_IP)] {
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            ns.ip(&["route", "add", "default", "via", &GATEWAY.to_string()])?;
        }
        // NAPI on vetha whatever is attached (the generator's redirected frames need it),
        // then threaded NAPI so that the node's receive work runs on a CPU we choose.
        let foreign_napi: HashSet<i32> = napi_threads("vetha")?.into_iter().collect();
        node.exec("ethtool", &["-K", "vetha", "gro", "on"])?;
        node.write_file("/sys/class/net/vetha/threaded", "1")?;
        let mac_a = gen_ns.mac("eth0")?;
        let mac_b = sink_ns.mac("eth0")?;
        let mac_vetha = node.mac("vetha")?;
        let node_net_dev = open_net_dev(&node, "opening the node's /proc/net/dev")?;
        let sink = Sink::attach(
            Some(&sink_ns.path()),
            "eth0",
            SinkFilter {
                mac: Some(mac_b),
                ip: Some(POD_B_IP),
                dst_port: Some(DST_PORT),
            },
        )?;
        Ok(Topology {
            sink,
            gen_ns,
            node,
            _sink_ns: sink_ns,
            mac_a,
            mac_b,
            mac_vetha,
            node_net_dev,
            foreign_napi,
        })
    }

    /// Pins vetha's NAPI thread(s) to `cpu` (and sets their nice value) and returns their
    /// PIDs.
    fn pin_napi(&self, cpu: usize, nice: Option<i32>) -> Result<Vec<i32>> {
        let ours: Vec<i32> = napi_threads("vetha")?
            .into_iter()
            .filter(|p| !self.foreign_napi.contains(p))
            .collect();
        if ours.is_empty() {
            bail!("no NAPI thread for vetha (threaded NAPI did not take effect)");
        }
        for &p in &ours {
            sys::pin_to_cpu(p, cpu)?;
            if let Some(n) = nice {
                sys::set_nice(p, n).with_context(|| format!("nice {n} on NAPI thread {p}"))?;
            }
        }
        Ok(ours)
    }

    /// Frames received and dropped (ring full) by vetha, from the node namespace's
    /// `/proc/net/dev` (read in the middle of a measurement: no process, no thread).
    fn vetha_rx(&self) -> Result<(u64, u64)> {
        let vetha = parse_net_dev(&read_net_dev(&self.node_net_dev)?, "vetha")?;
        Ok((vetha.rx_packets, vetha.rx_dropped))
    }
}

fn br_netfilter_state(node: &Netns) -> BrNetfilter {
    let loaded = Path::new("/sys/module/br_netfilter").exists();
    let call_iptables = if loaded {
        node.read_file("/proc/sys/net/bridge/bridge-nf-call-iptables")
            .ok()
            .map(|v| v.trim() != "0")
    } else {
        None
    };
    BrNetfilter {
        loaded,
        call_iptables,
    }
}

/// The Linux bridge `cni0` with both host veths enslaved; removed on drop.
struct Bridge<'a> {
    node: &'a Netns,
}

impl<'a> Bridge<'a> {
    fn up(node: &'a Netns, mac_b: [u8; 6]) -> Result<Bridge<'a>> {
        node.ip(&["link", "add", "name", "cni0", "type", "bridge"])?;
        let br = Bridge { node };
        node.ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", "cni0"])?;
        node.ip(&["link", "set", "cni0", "up"])?;
        node.ip(&["link", "set", "vetha", "master", "cni0"])?;
        node.ip(&["link", "set", "vethb", "master", "cni0"])?;
        // Pod B only receives: give the bridge its MAC as a running cluster's would have
        // learned it, so that frames are forwarded, not flooded.
        node.exec(
            "bridge",
            &[
                "fdb",
                "replace",
                &fmt_mac(&mac_b),
                "dev",
                "vethb",
                "master",
                "static",
            ],
        )?;
        Ok(br)
    }
}

impl Drop for Bridge<'_> {
    fn drop(&mut self) {
        for dev in ["vetha", "vethb"] {
            let _ = self.node.ip(&["link", "set", dev, "nomaster"]);
        }
        if let Err(e) = self.node.ip(&["link", "del", "cni0"]) {
            eprintln!("warning: removing the bridge: {e:#}");
        }
    }
}

fn run_kernel(
    topo: &Topology,
    generator: &mut Generator,
    opts: &PodPodOpts,
    i: usize,
) -> Result<RunResult> {
    let _br = Bridge::up(&topo.node, topo.mac_b)?;
    measure(topo, generator, opts, Datapath::Kernel, i, &[])
}

fn run_xdplane(
    topo: &Topology,
    state: &StateDir,
    bin: &Path,
    generator: &mut Generator,
    opts: &PodPodOpts,
    i: usize,
) -> Result<RunResult> {
    let mut args: Vec<String> = [
        "--node",
        "bench",
        "--pod-cidr",
        POD_CIDR,
        "--workers",
        "1",
        "--cores",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(opts.fwd_cpu.to_string());
    args.extend(opts.agent_args.iter().cloned());
    // A fresh socket (and state file next to it) per run: every run starts from nothing.
    let socket = state.path.join(format!("admin-{i}.sock"));
    let log = state.path.join(format!("agent-{i}.log"));
    let mut agent = AgentProcess::start(bin, &topo.node, &args, &socket, &log)?;
    agent.wait_ready(Duration::from_secs(30))?;
    for (name, ifname, ip, mac) in [
        ("pod-a", "vetha", POD_A_IP, topo.mac_a),
        ("pod-b", "vethb", POD_B_IP, topo.mac_b),
    ] {
        agent.attach(bench_attachment(name, ifname, ip, mac))?;
    }
    if let Some(n) = opts.nice {
        nice_agent_threads(agent.pid(), n)?;
    }
    let r = measure(topo, generator, opts, Datapath::Xdplane, i, &[agent.pid()]);
    let r = r.map_err(|e| {
        if sys::stop_requested() {
            e
        } else {
            anyhow::anyhow!(
                "{e:#}\nlast lines of the agent's log:\n{}",
                agent.log_tail(15)
            )
        }
    });
    let st = agent.stop()?;
    if !st.success() {
        eprintln!("note: the agent exited with {st} after SIGTERM");
    }
    r
}

fn measure(
    topo: &Topology,
    generator: &mut Generator,
    opts: &PodPodOpts,
    dp: Datapath,
    i: usize,
    extra_tasks: &[i32],
) -> Result<RunResult> {
    let mut tasks = topo.pin_napi(opts.fwd_cpu, opts.nice)?;
    tasks.extend_from_slice(extra_tasks);
    let (a, b) = measure_window(
        generator,
        opts.rate,
        opts.warmup,
        opts.window,
        &topo.sink,
        &tasks,
        || topo.vetha_rx(),
    )?;

    let secs = (b.t - a.t).as_secs_f64();
    let win_ns = secs * 1e9;
    let sink = b.sink.since(&a.sink);
    let delivered = sink.matched;
    let node_rx = b.path.0.saturating_sub(a.path.0);
    let node_drop = b.path.1.saturating_sub(a.path.1);
    if delivered == 0 {
        bail!(
            "no frame reached the sink in {secs:.1} s (generator sent {}, vetha received {node_rx}, dropped {node_drop}; sink saw {} frames, none matched)",
            b.sent - a.sent,
            sink.packets
        );
    }
    let (gen_busy, fwd_busy, task_ns) = b.cpu_since(&a, opts.gen_cpu, opts.fwd_cpu)?;
    let d = delivered as f64;
    Ok(RunResult {
        datapath: dp,
        run: i,
        window_s: secs,
        sink_pps: d / secs,
        offered_pps: (b.sent - a.sent) as f64 / secs,
        node_rx_pps: node_rx as f64 / secs,
        node_rx_dropped_pps: node_drop as f64 / secs,
        node_loss: if node_rx > 0 {
            (1.0 - d / node_rx as f64).max(0.0)
        } else {
            0.0
        },
        gen_cpu_busy: gen_busy / win_ns,
        fwd_cpu_busy: fwd_busy / win_ns,
        ns_per_pkt_fwd_cpu: fwd_busy / d,
        ns_per_pkt_tasks: task_ns / d,
        delivered,
        reordered: sink.reordered,
        mean_latency_us: sink.mean_latency_ns().map(|n| n / 1e3),
    })
}

fn summarize(report: &mut PodPodReport) {
    let by = group_by(&report.runs, |r| r.datapath);
    for (dp, rs) in by {
        report.summary.insert(
            dp,
            Summary {
                runs: rs.len(),
                sink_mpps: stat_of(&rs, |r| r.sink_pps / 1e6),
                offered_mpps: stat_of(&rs, |r| r.offered_pps / 1e6),
                node_rx_mpps: stat_of(&rs, |r| r.node_rx_pps / 1e6),
                fwd_cpu_busy: stat_of(&rs, |r| r.fwd_cpu_busy),
                ns_per_pkt_fwd_cpu: stat_of(&rs, |r| r.ns_per_pkt_fwd_cpu),
                ns_per_pkt_tasks: stat_of(&rs, |r| r.ns_per_pkt_tasks),
            },
        );
    }
    if let (Some(k), Some(x)) = (
        report.summary.get(&Datapath::Kernel),
        report.summary.get(&Datapath::Xdplane),
    ) {
        report.ratio_xdplane_over_kernel = Some(Ratio {
            sink_pps: x.sink_mpps.median / k.sink_mpps.median,
            ns_per_pkt_fwd_cpu: x.ns_per_pkt_fwd_cpu.median / k.ns_per_pkt_fwd_cpu.median,
            ns_per_pkt_tasks: x.ns_per_pkt_tasks.median / k.ns_per_pkt_tasks.median,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(dp: Datapath, pps: f64, ns: f64) -> RunResult {
        RunResult {
            datapath: dp,
            run: 1,
            window_s: 3.0,
            sink_pps: pps,
            offered_pps: 10e6,
            node_rx_pps: pps,
            node_rx_dropped_pps: 0.0,
            node_loss: 0.0,
            gen_cpu_busy: 1.0,
            fwd_cpu_busy: 1.0,
            ns_per_pkt_fwd_cpu: ns,
            ns_per_pkt_tasks: ns,
            delivered: 1,
            reordered: 0,
            mean_latency_us: None,
        }
    }

    #[test]
    fn summary_takes_medians_and_ratio() {
        let mut rep = PodPodReport {
            header: ReportHeader::for_tests("pod-pod"),
            layout: Layout {
                generator_cpu: 0,
                forwarding_cpu: 1,
                nice: Some(-20),
                description: String::new(),
            },
            traffic: Traffic {
                frame_size: 64,
                flows: 1,
                rate: "max".into(),
                warmup_s: 1.0,
                window_s: 3.0,
                runs_per_datapath: 3,
                dst_mac: BTreeMap::new(),
            },
            br_netfilter: BrNetfilter {
                loaded: false,
                call_iptables: None,
            },
            background_busy: [0.0, 0.0],
            runs: vec![
                result(Datapath::Kernel, 0.70e6, 1400.0),
                result(Datapath::Xdplane, 1.4e6, 700.0),
                result(Datapath::Kernel, 0.80e6, 1250.0),
                result(Datapath::Xdplane, 1.6e6, 600.0),
                result(Datapath::Kernel, 0.75e6, 1300.0),
                result(Datapath::Xdplane, 1.5e6, 650.0),
            ],
            summary: BTreeMap::new(),
            ratio_xdplane_over_kernel: None,
            error: None,
            file_stamp: "x".into(),
        };
        summarize(&mut rep);
        let k = &rep.summary[&Datapath::Kernel];
        assert_eq!(k.sink_mpps.median, 0.75);
        assert_eq!(k.sink_mpps.min, 0.70);
        assert_eq!(k.ns_per_pkt_fwd_cpu.median, 1300.0);
        let r = rep.ratio_xdplane_over_kernel.as_ref().unwrap();
        assert!((r.sink_pps - 2.0).abs() < 1e-9);
        assert!((r.ns_per_pkt_fwd_cpu - 0.5).abs() < 1e-9);
        let t = rep.table();
        assert!(t.contains("xdplane/kernel: throughput ×2.00"), "{t}");
        let j = serde_json::to_value(&rep).unwrap();
        assert_eq!(j["summary"]["kernel"]["sink_mpps"]["median"], 0.75);
        assert_eq!(j["runs"][1]["datapath"], "xdplane");
    }
}
