//! Scenario `remote-pod`: pod A on node A → pod B on node B over flannel-compatible VXLAN
//! (VNI 1, UDP 8472), with the Linux kernel's flannel datapath on both nodes and with xdplane
//! on both nodes, measured side by side in one run on the same namespaces and veths,
//! alternating (kernel, xdplane, kernel, …): packets per second of 64-byte UDP (the
//! generator in pod A, the sink on pod B) for 1 and 64 flows, and TCP throughput with
//! `iperf3` (1 and 4 streams).
//!
//! ```text
//!  <p>-gen (pod A)          <p>-n1 (node A)                  <p>-n2 (node B)              <p>-sink (pod B)
//!  eth0 10.244.1.2/24 ─veth─ vetha ─┐                       ┌─ vethb ─veth─ eth0 10.244.2.2/24
//!  generator / iperf3 -c            │ kernel: cni0+flannel.1│                  sink / iperf3 -s
//!                                   │ xdplane: xdplane run  │
//!                     eth0 192.168.77.1/24 ───── veth ───── eth0 192.168.77.2/24
//! ```
//!
//! - **kernel**: each node as flanneld and the flannel CNI plugin leave it (reusing the lab's
//!   [`xdplane_lab::kernel`]): `flannel.1` (`vxlan id 1 local <node IP> dev eth0 dstport 8472
//!   nolearning`, MTU 1450, `<subnet>.0/32`), the `cni0` bridge with `<subnet>.1/24` and the
//!   pod's host veth enslaved, the peer's VtepMAC in flannel.1's FDB and neighbour table, the
//!   peer's podCIDR routed onlink via flannel.1, `ip_forward=1`. Pods are addressed as a
//!   running cluster would have learned them: a static FDB entry on cni0 and a permanent
//!   neighbour for each pod (pod B only receives, and the sink drops ARP). Generated frames
//!   go to cni0's MAC (the pod's gateway).
//! - **xdplane**: `xdplane run --node nodeX --manifests <state>/manifests --uplink eth0
//!   --workers 1 --cores <fwd-cpu>` in each node namespace, the manifests holding both Node
//!   objects with flannel's annotations (VtepMAC = the node's eth0 MAC) and the
//!   `kube-flannel-cfg` ConfigMap; each pod's host veth attached over the admin socket. The
//!   run starts once both agents have resolved each other's MAC (`neighbours` in `stats`).
//!   Generated frames go to vetha's MAC (xdplane answers ARP for the gateway with it).
//!
//! Offloads: the pods' eth0 have transmit checksum offload off (`ethtool -K eth0 tx off`,
//! what xdplane's CNI plugin does) in both datapaths; the nodes' eth0 keep the kernel's
//! defaults (both nodes are of the same kind in each run). The node-side ingress devices
//! (vetha, node A's eth0, node B's eth0, vethb) have GRO on so that they have NAPI, with
//! threaded NAPI pinned to the forwarding CPU: the same for both datapaths. In the kernel
//! runs GRO then merges TCP segments (an XDP program elides GRO, so not under xdplane);
//! [`RemotePodOpts::gro_merge`] `false` (`--no-gro-merge`) keeps NAPI but stops merging.
//!
//! CPU layout, the same for both: the generator and both iperf3 ends on `gen_cpu` (0); the
//! NAPI threads and both xdplane workers on `fwd_cpu` (1). The sink's XDP program (and pod B's
//! TCP receive) runs in the softirq of whoever transmits to pod B: `fwd_cpu` too.
use super::common::{
    StateDir, agent_bin_if, background, bench_attachment, check_cpus_and_runs,
    check_prefix_and_root, group_by, measure_window, nice_agent_threads, open_net_dev,
    parse_net_dev, rate_label, read_net_dev, run_rounds, sleep_checked, stat_of, table_head,
    write_background,
};
use crate::agent::AgentProcess;
use crate::cpu::{AutogroupNice, CpuTimes, napi_threads};
use crate::generator::{GenConfig, Generator, Limit, Rate};
use crate::netns::{Netns, fmt_mac, veth_pair};
use crate::report::{ReportHeader, Stat, save_json};
use crate::sink::{Sink, SinkCounters, SinkFilter};
use crate::sys;
use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xdplane_api::Request;
use xdplane_lab::flannel::{self, Cidr, Lease, Mode, NetConf};
use xdplane_lab::kernel::{self, KernelNode};

/// Underlay addresses of the two nodes (their eth0, on a direct veth).
pub const NODE_A_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
pub const NODE_B_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
pub const UPLINK_PREFIX_LEN: u8 = 24;
pub const POD_CIDR_A: &str = "10.244.1.0/24";
pub const POD_CIDR_B: &str = "10.244.2.0/24";
/// flannel's Network.
pub const NETWORK: &str = "10.244.0.0/16";
pub const GATEWAY_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
pub const GATEWAY_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 1);
pub const POD_A_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
pub const POD_B_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
/// The pods' MTU: the uplink's 1500 − 50 bytes of VXLAN.
pub const POD_MTU: u32 = 1450;
/// The net-conf.json both datapaths use.
pub const NET_CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
/// UDP destination port of the generated traffic (the sink matches on it).
pub const DST_PORT: u16 = 5001;
/// First UDP source port (flow i uses SRC_PORT + i).
pub const SRC_PORT: u16 = 10_000;
/// iperf3's port in pod B.
pub const IPERF_PORT: u16 = 5201;
/// Node names (the Node objects of the xdplane run; the kernel nodes' names in reports).
pub const NODE_A: &str = "node1";
pub const NODE_B: &str = "node2";

/// A datapath under test (the same on both nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Datapath {
    /// The kernel as flanneld sets it up: flannel.1 (VXLAN) and the cni0 bridge.
    Kernel,
    /// `xdplane run` on both nodes, flannel-compatible VXLAN.
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
pub struct RemotePodOpts {
    /// Namespace prefix (`<prefix>-gen`, `-n1`, `-n2`, `-sink`) and state directory name.
    pub prefix: String,
    /// Rounds: each datapath is set up and measured this many times, alternating.
    pub runs: usize,
    pub warmup: Duration,
    /// Window of each packets-per-second measurement.
    pub window: Duration,
    /// Ethernet frame size with FCS (64..=1518) of the generated frames.
    pub frame_size: u16,
    /// Flow counts of the packets-per-second measurements (empty: none).
    pub flows: Vec<u32>,
    pub rate: Rate,
    /// Parallel TCP streams of the iperf3 measurements (empty: none).
    pub streams: Vec<u32>,
    /// Length of each iperf3 test.
    pub tcp_time: Duration,
    /// Datapaths in the order they alternate.
    pub datapaths: Vec<Datapath>,
    /// CPU of the generator and of both iperf3 processes.
    pub gen_cpu: usize,
    /// CPU of the node-side work: NAPI threads and both xdplane workers.
    pub fwd_cpu: usize,
    /// Nice value of the measured tasks (generator, NAPI threads, agents, iperf3) and of
    /// this session's autogroup; `None`: left alone.
    pub nice: Option<i32>,
    pub agent_bin: Option<PathBuf>,
    /// Extra arguments for `xdplane run` (both nodes).
    pub agent_args: Vec<String>,
    /// Where the JSON report goes (`None`: not written).
    pub results_dir: Option<PathBuf>,
    /// GRO on the node-side devices may merge frames (the default). `false` sets their
    /// `gro_max_size` to 0: they keep NAPI (and their pinned threads) but every frame stays
    /// a frame, so the kernel forwards TCP segment by segment, as xdplane does (an XDP
    /// program on a device elides GRO: this changes nothing for xdplane).
    pub gro_merge: bool,
}

impl Default for RemotePodOpts {
    fn default() -> Self {
        RemotePodOpts {
            prefix: format!("rp{}", std::process::id()),
            runs: 3,
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(3),
            frame_size: 64,
            flows: vec![1, 64],
            rate: Rate::Max,
            streams: vec![1, 4],
            tcp_time: Duration::from_secs(10),
            datapaths: vec![Datapath::Kernel, Datapath::Xdplane],
            gen_cpu: 0,
            fwd_cpu: 1,
            nice: Some(-20),
            agent_bin: None,
            agent_args: Vec::new(),
            results_dir: Some(crate::scenarios::pod_pod::default_results_dir()),
            gro_merge: true,
        }
    }
}

/// One packets-per-second measurement.
#[derive(Debug, Clone, Serialize)]
pub struct PpsRun {
    pub datapath: Datapath,
    /// 1-based round.
    pub run: usize,
    pub flows: u32,
    #[serde(flatten)]
    pub window: PathWindow,
    pub reordered: u64,
    pub mean_latency_us: Option<f64>,
}

/// What one packets-per-second window over the remote-pod path measured: the part of a run
/// that `remote-pod` and `service` share (written flat into their runs' JSON).
#[derive(Debug, Clone, Serialize)]
pub struct PathWindow {
    pub window_s: f64,
    /// Frames matched by the sink on pod B per second.
    pub sink_pps: f64,
    /// Frames the generator wrote per second.
    pub offered_pps: f64,
    /// Frames vetha (node A, from pod A) received per second.
    pub node_a_rx_pps: f64,
    /// Frames node B's eth0 received (VXLAN from node A) per second.
    pub node_b_uplink_rx_pps: f64,
    /// Frames the veths dropped over the window, per hop.
    pub dropped: HopDrops,
    /// Share of the frames node A received that did not reach the sink.
    pub nodes_loss: f64,
    /// Busy share of the generator CPU and of the forwarding CPU (/proc/stat).
    pub gen_cpu_busy: f64,
    pub fwd_cpu_busy: f64,
    /// Busy ns per delivered frame on the generator CPU, the forwarding CPU, and both.
    pub ns_per_pkt_gen_cpu: f64,
    pub ns_per_pkt_fwd_cpu: f64,
    pub ns_per_pkt_both: f64,
    /// CPU ns of the datapath's own tasks (the four NAPI threads, plus both agents for
    /// xdplane) per delivered frame; misses softirq time charged to no task.
    pub ns_per_pkt_tasks: f64,
    pub delivered: u64,
}

#[cfg(test)]
impl PathWindow {
    /// A window of `mpps` delivered at `ns` busy ns per frame (for the report tests).
    pub(crate) fn sample(mpps: f64, ns: f64) -> PathWindow {
        PathWindow {
            window_s: 3.0,
            sink_pps: mpps * 1e6,
            offered_pps: 5e6,
            node_a_rx_pps: mpps * 1e6,
            node_b_uplink_rx_pps: mpps * 1e6,
            dropped: HopDrops::default(),
            nodes_loss: 0.0,
            gen_cpu_busy: 1.0,
            fwd_cpu_busy: 1.0,
            ns_per_pkt_gen_cpu: ns,
            ns_per_pkt_fwd_cpu: ns,
            ns_per_pkt_both: 2.0 * ns,
            ns_per_pkt_tasks: ns,
            delivered: 1,
        }
    }
}

/// Runs the generator for one packets-per-second window of `opts` (rate, warm-up, window,
/// CPUs, nice) over `topo`, with the NAPI threads and `agents` as the datapath's tasks: the
/// window's figures and the sink's counters over it. No frame delivered to the sink (`dest`
/// in the error) is an error.
pub(crate) fn measure_path_window(
    opts: &RemotePodOpts,
    topo: &Topology,
    generator: &mut Generator,
    sink: &Sink,
    agents: &[i32],
    dest: &str,
) -> Result<(PathWindow, SinkCounters)> {
    let mut tasks = topo.pin_napi(opts.fwd_cpu, opts.nice)?;
    tasks.extend_from_slice(agents);
    let (a, b) = measure_window(
        generator,
        opts.rate,
        opts.warmup,
        opts.window,
        sink,
        &tasks,
        || topo.path(),
    )?;

    let secs = (b.t - a.t).as_secs_f64();
    let win_ns = secs * 1e9;
    let c = b.sink.since(&a.sink);
    let delivered = c.matched;
    let a_rx = b.path.node_a_rx.saturating_sub(a.path.node_a_rx);
    let b_rx = b.path.node_b_rx.saturating_sub(a.path.node_b_rx);
    let dropped = b.path.drops_since(&a.path);
    if delivered == 0 {
        bail!(
            "no frame reached {dest} in {secs:.1} s (generator sent {}, node A received {a_rx}, node B's eth0 received {b_rx}, veths dropped {dropped:?}; the sink saw {} frames, none matched)",
            b.sent - a.sent,
            c.packets
        );
    }
    let (gen_busy, fwd_busy, task_ns) = b.cpu_since(&a, opts.gen_cpu, opts.fwd_cpu)?;
    let d = delivered as f64;
    let w = PathWindow {
        window_s: secs,
        sink_pps: d / secs,
        offered_pps: (b.sent - a.sent) as f64 / secs,
        node_a_rx_pps: a_rx as f64 / secs,
        node_b_uplink_rx_pps: b_rx as f64 / secs,
        dropped,
        nodes_loss: if a_rx > 0 {
            (1.0 - d / a_rx as f64).max(0.0)
        } else {
            0.0
        },
        gen_cpu_busy: gen_busy / win_ns,
        fwd_cpu_busy: fwd_busy / win_ns,
        ns_per_pkt_gen_cpu: gen_busy / d,
        ns_per_pkt_fwd_cpu: fwd_busy / d,
        ns_per_pkt_both: (gen_busy + fwd_busy) / d,
        ns_per_pkt_tasks: task_ns / d,
        delivered,
    };
    Ok((w, c))
}

/// One iperf3 measurement.
#[derive(Debug, Clone, Serialize)]
pub struct TcpRun {
    pub datapath: Datapath,
    pub run: usize,
    pub streams: u32,
    /// iperf3's test length and the measured wall time around it.
    pub seconds: f64,
    /// Goodput at the receiver (pod B), and at the sender.
    pub receiver_gbps: f64,
    pub sender_gbps: f64,
    pub retransmits: u64,
    pub bytes_received: u64,
    /// Frames the veths dropped during the test, per hop: where the path lost what TCP
    /// retransmitted.
    pub dropped: HopDrops,
    pub gen_cpu_busy: f64,
    pub fwd_cpu_busy: f64,
    /// Busy µs per MB (10^6 bytes) received, on the generator CPU (both iperf3 ends) and
    /// the forwarding CPU (both nodes, pod B's receive softirq).
    pub us_per_mb_gen_cpu: f64,
    pub us_per_mb_fwd_cpu: f64,
}

/// Frames dropped by the veths of each hop: the sender's `tx_dropped` (the receiver's ring
/// was full: an skb sent into a veth) plus the receiver's `rx_dropped` (frames redirected by
/// XDP into a full ring, and the receiver's own drops).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HopDrops {
    pub pod_a_to_node_a: u64,
    pub node_a_to_node_b: u64,
    pub node_b_to_pod_b: u64,
}

impl HopDrops {
    pub fn total(&self) -> u64 {
        self.pod_a_to_node_a + self.node_a_to_node_b + self.node_b_to_pod_b
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PpsSummary {
    pub datapath: Datapath,
    pub flows: u32,
    pub runs: usize,
    pub sink_mpps: Stat,
    pub offered_mpps: Stat,
    pub nodes_loss: Stat,
    pub ns_per_pkt_gen_cpu: Stat,
    pub ns_per_pkt_fwd_cpu: Stat,
    pub ns_per_pkt_both: Stat,
    pub ns_per_pkt_tasks: Stat,
}

#[derive(Debug, Clone, Serialize)]
pub struct TcpSummary {
    pub datapath: Datapath,
    pub streams: u32,
    pub runs: usize,
    pub receiver_gbps: Stat,
    pub retransmits: Stat,
    pub fwd_cpu_busy: Stat,
    pub us_per_mb_gen_cpu: Stat,
    pub us_per_mb_fwd_cpu: Stat,
}

/// xdplane median / kernel median, packets per second.
#[derive(Debug, Clone, Serialize)]
pub struct PpsRatio {
    pub flows: u32,
    pub sink_pps: f64,
    pub ns_per_pkt_fwd_cpu: f64,
    pub ns_per_pkt_both: f64,
    pub ns_per_pkt_tasks: f64,
}

/// xdplane median / kernel median, TCP.
#[derive(Debug, Clone, Serialize)]
pub struct TcpRatio {
    pub streams: u32,
    pub receiver_gbps: f64,
    pub us_per_mb_fwd_cpu: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub generator_cpu: usize,
    pub forwarding_cpu: usize,
    pub nice: Option<i32>,
    pub description: String,
    pub offloads: String,
    /// See [`RemotePodOpts::gro_merge`].
    pub gro_merge: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Traffic {
    pub frame_size: u16,
    pub flows: Vec<u32>,
    pub rate: String,
    pub warmup_s: f64,
    pub window_s: f64,
    pub tcp_streams: Vec<u32>,
    pub tcp_time_s: f64,
    pub runs_per_datapath: usize,
    /// Destination MAC of the generated frames per datapath (of the last round).
    pub dst_mac: BTreeMap<Datapath, String>,
}

/// The report: written as JSON, printed as a table.
#[derive(Debug, Clone, Serialize)]
pub struct RemotePodReport {
    /// Scenario, date, command line and machine.
    #[serde(flatten)]
    pub header: ReportHeader,
    pub topology: String,
    pub layout: Layout,
    pub traffic: Traffic,
    /// Busy share of the generator and forwarding CPUs over 1 s before any traffic.
    pub background_busy: [f64; 2],
    pub pps: Vec<PpsRun>,
    pub tcp: Vec<TcpRun>,
    pub pps_summary: Vec<PpsSummary>,
    pub tcp_summary: Vec<TcpSummary>,
    pub pps_ratio_xdplane_over_kernel: Vec<PpsRatio>,
    pub tcp_ratio_xdplane_over_kernel: Vec<TcpRatio>,
    /// Set when the scenario stopped early; the runs hold what was measured.
    pub error: Option<String>,
    #[serde(skip)]
    pub file_stamp: String,
}

impl RemotePodReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = table_head(
            "remote-pod: pod A (node A) → pod B (node B) over VXLAN (VNI 1, UDP 8472), both nodes kernel flannel vs both nodes xdplane",
            &self.header.machine,
        );
        let _ = writeln!(s, "topology: {}", self.topology);
        let _ = writeln!(s, "layout: {}", self.layout.description);
        let _ = writeln!(s, "offloads: {}", self.layout.offloads);
        write_background(
            &mut s,
            self.layout.generator_cpu,
            self.layout.forwarding_cpu,
            self.background_busy,
        );
        let g = self.layout.generator_cpu;
        let f = self.layout.forwarding_cpu;
        if !self.pps.is_empty() {
            let _ = writeln!(
                s,
                "\npackets per second: {}-byte UDP frames, rate {}, {:.1} s windows",
                self.traffic.frame_size, self.traffic.rate, self.traffic.window_s
            );
            let _ = writeln!(
                s,
                "{:<8} {:>5} {:>3} {:>9} {:>8} {:>8} {:>8} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7}",
                "datapath",
                "flows",
                "run",
                "sink Mpps",
                "offered",
                "A rx",
                "B eth0",
                "loss",
                &format!("CPU{g}%"),
                &format!("CPU{f}%"),
                &format!("ns/p c{g}"),
                &format!("ns/p c{f}"),
                "ns/p sum",
                "ns/p tsk",
                "lat µs"
            );
            for r in &self.pps {
                let _ = writeln!(
                    s,
                    "{:<8} {:>5} {:>3} {:>9.3} {:>8.3} {:>8.3} {:>8.3} {:>6.1}% {:>6.1} {:>6.1} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>7}",
                    r.datapath.name(),
                    r.flows,
                    r.run,
                    r.window.sink_pps / 1e6,
                    r.window.offered_pps / 1e6,
                    r.window.node_a_rx_pps / 1e6,
                    r.window.node_b_uplink_rx_pps / 1e6,
                    r.window.nodes_loss * 100.0,
                    r.window.gen_cpu_busy * 100.0,
                    r.window.fwd_cpu_busy * 100.0,
                    r.window.ns_per_pkt_gen_cpu,
                    r.window.ns_per_pkt_fwd_cpu,
                    r.window.ns_per_pkt_both,
                    r.window.ns_per_pkt_tasks,
                    r.mean_latency_us
                        .map_or_else(|| "-".to_string(), |l| format!("{l:.0}")),
                );
            }
            let _ = writeln!(
                s,
                "(A rx = received by vetha on node A, B eth0 = VXLAN received by node B, loss = share of A rx not delivered; ns/p = busy ns per delivered frame of CPU {g}, CPU {f}, both; tsk = CPU ns of the datapath's own tasks)"
            );
        }
        if !self.tcp.is_empty() {
            let _ = writeln!(
                s,
                "\nTCP: iperf3, {:.0} s per test, pod A → pod B",
                self.traffic.tcp_time_s
            );
            let _ = writeln!(
                s,
                "{:<8} {:>7} {:>3} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>9} {:>9}",
                "datapath",
                "streams",
                "run",
                "Gbit/s",
                "sent",
                "retrans",
                "drop a>A",
                "drop A>B",
                "drop B>b",
                &format!("CPU{g}%"),
                &format!("CPU{f}%"),
                &format!("µs/MB c{g}"),
                &format!("µs/MB c{f}"),
            );
            for r in &self.tcp {
                let _ = writeln!(
                    s,
                    "{:<8} {:>7} {:>3} {:>8.3} {:>8.3} {:>8} {:>8} {:>8} {:>8} {:>6.1} {:>6.1} {:>9.1} {:>9.1}",
                    r.datapath.name(),
                    r.streams,
                    r.run,
                    r.receiver_gbps,
                    r.sender_gbps,
                    r.retransmits,
                    r.dropped.pod_a_to_node_a,
                    r.dropped.node_a_to_node_b,
                    r.dropped.node_b_to_pod_b,
                    r.gen_cpu_busy * 100.0,
                    r.fwd_cpu_busy * 100.0,
                    r.us_per_mb_gen_cpu,
                    r.us_per_mb_fwd_cpu,
                );
            }
            let _ = writeln!(
                s,
                "(Gbit/s = received by pod B; retrans = the sender's retransmitted segments; drop = frames dropped by the veths from pod A (a) into node A, from node A into node B, from node B into pod B (b); µs/MB = busy µs of the CPU per 10^6 bytes received)"
            );
        }
        let _ = writeln!(s, "\nmedian [min–max] over the runs:");
        for p in &self.pps_summary {
            let _ = writeln!(
                s,
                "{:<8} {:>2} flow(s): {:.3} Mpps [{:.3}–{:.3}], {:.0} ns/pkt on CPU {f} [{:.0}–{:.0}], {:.0} on both CPUs, {:.0} in its tasks, loss {:.1} %",
                p.datapath.name(),
                p.flows,
                p.sink_mpps.median,
                p.sink_mpps.min,
                p.sink_mpps.max,
                p.ns_per_pkt_fwd_cpu.median,
                p.ns_per_pkt_fwd_cpu.min,
                p.ns_per_pkt_fwd_cpu.max,
                p.ns_per_pkt_both.median,
                p.ns_per_pkt_tasks.median,
                p.nodes_loss.median * 100.0,
            );
        }
        for t in &self.tcp_summary {
            let _ = writeln!(
                s,
                "{:<8} {:>2} stream(s): {:.3} Gbit/s [{:.3}–{:.3}], {:.0} retransmits, {:.1} µs/MB on CPU {f}, {:.1} on CPU {g}",
                t.datapath.name(),
                t.streams,
                t.receiver_gbps.median,
                t.receiver_gbps.min,
                t.receiver_gbps.max,
                t.retransmits.median,
                t.us_per_mb_fwd_cpu.median,
                t.us_per_mb_gen_cpu.median,
            );
        }
        for r in &self.pps_ratio_xdplane_over_kernel {
            let _ = writeln!(
                s,
                "xdplane/kernel, {:>2} flow(s): throughput ×{:.2}, CPU per packet ×{:.2} (CPU {f}), ×{:.2} (both CPUs), ×{:.2} (tasks)",
                r.flows, r.sink_pps, r.ns_per_pkt_fwd_cpu, r.ns_per_pkt_both, r.ns_per_pkt_tasks
            );
        }
        for r in &self.tcp_ratio_xdplane_over_kernel {
            let _ = writeln!(
                s,
                "xdplane/kernel, TCP {} stream(s): throughput ×{:.2}, CPU {f} per byte ×{:.2}",
                r.streams, r.receiver_gbps, r.us_per_mb_fwd_cpu
            );
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "\nstopped early: {e}");
        }
        s
    }

    /// Writes `remote-pod-<date>.json` into `dir` and returns its path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        save_json(self, dir, "remote-pod", &self.file_stamp)
    }
}

/// Runs the scenario. Everything it creates is removed before it returns, also on error or
/// SIGINT/SIGTERM (when [`sys::install_stop_handler`] was called). A failure while setting
/// up is an `Err`; a failure (or interruption) once measurements have started ends the
/// scenario with what was measured and the reason in [`RemotePodReport::error`].
pub fn run(opts: &RemotePodOpts) -> Result<RemotePodReport> {
    check_opts(opts)?;
    let (header, file_stamp) = ReportHeader::now("remote-pod");
    let _autogroup = AutogroupNice::set_opt(opts.nice)?;
    let bench = Bench::new(opts)?;
    let mut generator = bench.generator()?;
    let background_busy = background(opts.gen_cpu, opts.fwd_cpu)?;
    let n = match opts.nice {
        Some(n) => format!(
            "generator, NAPI threads, agents, iperf3 and this session's autogroup at nice {n}"
        ),
        None => "default priorities".to_string(),
    };
    let mut report = RemotePodReport {
        header,
        topology: format!(
            "pod A {POD_A_IP}/24 — veth — node A (eth0 {NODE_A_IP}/24, podCIDR {POD_CIDR_A}) — veth — node B (eth0 {NODE_B_IP}/24, podCIDR {POD_CIDR_B}) — veth — pod B {POD_B_IP}/24; pod MTU {POD_MTU}; flannel Network {NETWORK}, VXLAN VNI 1 port 8472"
        ),
        layout: Layout {
            generator_cpu: opts.gen_cpu,
            forwarding_cpu: opts.fwd_cpu,
            nice: opts.nice,
            description: format!(
                "generator (2 sender threads) and both iperf3 ends pinned to CPU {g}; threaded NAPI on vetha, node A's eth0, node B's eth0 and vethb with the kthreads pinned to CPU {f}; both xdplane workers (one per node, --workers 1 --cores {f}) on CPU {f}; the sink's XDP and pod B's receive run in the softirq of the sender to pod B (CPU {f}); the same for both datapaths; {n}",
                g = opts.gen_cpu,
                f = opts.fwd_cpu,
            ),
            offloads: format!(
                "pods' eth0: tx checksum offload off (ethtool -K eth0 tx off) in both datapaths (xdplane needs it; its CNI plugin does it); nodes' eth0: kernel defaults in both (tx off is needed only between a kernel node and an xdplane node); GRO on on vetha, vethb and both nodes' eth0 in both datapaths (NAPI, so that the receive work can be pinned); {}",
                if opts.gro_merge {
                    "GRO may merge TCP segments in the kernel runs (an XDP program elides GRO: not in the xdplane runs)"
                } else {
                    "gro_max_size 0 on those devices: no merging, the kernel forwards every frame (--no-gro-merge)"
                }
            ),
            gro_merge: opts.gro_merge,
        },
        traffic: Traffic {
            frame_size: opts.frame_size,
            flows: opts.flows.clone(),
            rate: rate_label(opts.rate),
            warmup_s: opts.warmup.as_secs_f64(),
            window_s: opts.window.as_secs_f64(),
            tcp_streams: opts.streams.clone(),
            tcp_time_s: opts.tcp_time.as_secs_f64(),
            runs_per_datapath: opts.runs,
            dst_mac: BTreeMap::new(),
        },
        background_busy,
        pps: Vec::new(),
        tcp: Vec::new(),
        pps_summary: Vec::new(),
        tcp_summary: Vec::new(),
        pps_ratio_xdplane_over_kernel: Vec::new(),
        tcp_ratio_xdplane_over_kernel: Vec::new(),
        error: None,
        file_stamp,
    };

    let error = run_rounds(
        "remote-pod",
        opts.runs,
        &opts.datapaths,
        |dp| dp.name().to_string(),
        |&dp, i| bench.round(&mut generator, dp, i, &mut report),
    );
    report.error = error;
    summarize(&mut report);
    drop(generator);
    drop(bench);
    Ok(report)
}

/// What [`deliver_count`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Frames the generator sent (exactly the count asked for, unless interrupted).
    pub sent: u64,
    /// Sink counters over the send (matched = the generator's frames that reached pod B
    /// with pod B's MAC, IP and port).
    pub sink: SinkCounters,
    /// Frames vetha received from pod A.
    pub node_a_rx: u64,
    /// Frames node B's eth0 received from node A.
    pub node_b_uplink_rx: u64,
    /// Frames the veths dropped, per hop.
    pub dropped: HopDrops,
}

/// Builds the topology and `dp` (on both nodes), sends exactly `count` frames from pod A at
/// `rate` and counts what reaches pod B, then removes everything (also on error). The
/// correctness check of the datapath setup behind the measurements.
pub fn deliver_count(
    opts: &RemotePodOpts,
    dp: Datapath,
    count: u64,
    rate: Rate,
) -> Result<Delivery> {
    let mut o = opts.clone();
    o.datapaths = vec![dp];
    o.streams.clear();
    check_opts(&o)?;
    if count == 0 {
        bail!("count must be at least 1");
    }
    let _autogroup = AutogroupNice::set_opt(o.nice)?;
    let bench = Bench::new(&o)?;
    let mut generator = bench.generator()?;
    let guard = bench.datapath_up(dp, 1)?;
    bench.topo.flush_pod_neighbours()?;
    let sink = bench.topo.attach_sink()?;
    generator.set_dst_mac(guard.dst_mac())?;
    bench.topo.pin_napi(o.fwd_cpu, o.nice)?;
    let (path0, sink0) = (bench.topo.path()?, sink.counters()?);
    let sent0 = generator.sent()?;
    let rep = generator.start(Limit::Count(count), rate)?.wait()?;
    // Frames in flight land.
    sleep_checked(Duration::from_millis(500))?;
    let (path1, sink1) = (bench.topo.path()?, sink.counters()?);
    let sent = generator.sent()? - sent0;
    if sent != rep.sent {
        bail!(
            "generator counters disagree: {sent} by the map, {} by the run",
            rep.sent
        );
    }
    let d = Delivery {
        sent,
        sink: sink1.since(&sink0),
        node_a_rx: path1.node_a_rx.saturating_sub(path0.node_a_rx),
        node_b_uplink_rx: path1.node_b_rx.saturating_sub(path0.node_b_rx),
        dropped: path1.drops_since(&path0),
    };
    drop(sink);
    guard.stop()?;
    drop(generator);
    drop(bench);
    Ok(d)
}

fn check_opts(opts: &RemotePodOpts) -> Result<()> {
    check_cpus_and_runs(opts.gen_cpu, opts.fwd_cpu, opts.runs, opts.datapaths.len())?;
    if opts.flows.is_empty() && opts.streams.is_empty() {
        bail!("nothing to measure: no flow count and no TCP stream count");
    }
    if let Some(f) = opts.flows.iter().find(|&&f| f == 0 || f > 65_535) {
        bail!("flow count {f} out of range (1..=65535)");
    }
    if let Some(s) = opts.streams.iter().find(|&&s| s == 0 || s > 128) {
        bail!("TCP stream count {s} out of range (1..=128)");
    }
    if !opts.flows.is_empty() && opts.window < Duration::from_millis(500) {
        bail!("a measuring window under 0.5 s is too short for /proc/stat (10 ms ticks)");
    }
    if !opts.streams.is_empty() {
        if opts.tcp_time < Duration::from_secs(1) || opts.tcp_time > Duration::from_secs(3600) {
            bail!("the TCP test length must be 1..=3600 s");
        }
        if opts.tcp_time.subsec_nanos() != 0 {
            bail!("the TCP test length must be whole seconds (iperf3 -t)");
        }
        if crate::netns::run("iperf3", &["--version"]).is_err() {
            bail!(
                "iperf3 is not installed (apt-get install iperf3, or scripts/install-deps.sh); or measure packets per second only (--no-tcp)"
            );
        }
    }
    check_prefix_and_root("remote-pod", &opts.prefix, "1–40 letters, digits, - and _")
}

/// Everything a run keeps from start to end. Field order is drop order: the namespaces go
/// before the state directory.
struct Bench<'o> {
    topo: Topology,
    state: StateDir,
    opts: &'o RemotePodOpts,
    agent_bin: Option<PathBuf>,
    manifests: PathBuf,
}

impl<'o> Bench<'o> {
    fn new(opts: &'o RemotePodOpts) -> Result<Bench<'o>> {
        let agent_bin = agent_bin_if(
            opts.datapaths.contains(&Datapath::Xdplane),
            opts.agent_bin.as_deref(),
        )?;
        let state = StateDir::create(&opts.prefix)?;
        let topo = Topology::build(&opts.prefix, opts.gro_merge)?;
        let manifests = state.path.join("manifests");
        write_manifests(&manifests, topo.mac_uplink_a, topo.mac_uplink_b)?;
        Ok(Bench {
            topo,
            state,
            opts,
            agent_bin,
            manifests,
        })
    }

    fn generator(&self) -> Result<Generator> {
        let flows = self.opts.flows.first().copied().unwrap_or(1);
        self.topo
            .pod_a_generator(self.opts, (POD_B_IP, DST_PORT), SRC_PORT, flows)
    }

    fn datapath_up(&self, dp: Datapath, round: usize) -> Result<DatapathGuard<'_>> {
        Ok(match dp {
            Datapath::Kernel => DatapathGuard::Kernel(KernelFlannel::up(&self.topo)?),
            Datapath::Xdplane => DatapathGuard::Xdplane(XdplaneNodes::up(
                &self.topo,
                self.agent_bin.as_deref().context("no agent binary")?,
                &self.manifests,
                &self.state.path,
                self.opts,
                round,
            )?),
        })
    }

    /// One round of one datapath: set up, packets per second for every flow count, TCP for
    /// every stream count, torn down.
    fn round(
        &self,
        generator: &mut Generator,
        dp: Datapath,
        i: usize,
        report: &mut RemotePodReport,
    ) -> Result<()> {
        let guard = self.datapath_up(dp, i)?;
        let r = self.measure_round(&guard, generator, dp, i, report);
        let r = r.map_err(|e| {
            let logs = guard.log_tails();
            if logs.is_empty() || sys::stop_requested() {
                e
            } else {
                anyhow!("{e:#}\n{logs}")
            }
        });
        let stopped = guard.stop();
        r?;
        stopped
    }

    fn measure_round(
        &self,
        guard: &DatapathGuard<'_>,
        generator: &mut Generator,
        dp: Datapath,
        i: usize,
        report: &mut RemotePodReport,
    ) -> Result<()> {
        let opts = self.opts;
        self.topo.flush_pod_neighbours()?;
        let agents = guard.agent_pids();
        if !opts.flows.is_empty() {
            let dst = guard.dst_mac();
            report.traffic.dst_mac.insert(dp, fmt_mac(&dst));
            let sink = self.topo.attach_sink()?;
            for &flows in &opts.flows {
                generator.update(|c| {
                    c.flows = flows;
                    c.dst_mac = dst;
                })?;
                let r = self.measure_pps(&sink, generator, dp, i, flows, &agents)?;
                eprintln!(
                    "remote-pod: {} round {i}, {flows} flow(s): {:.3} Mpps delivered, {:.0} ns/pkt on CPU {}",
                    dp.name(),
                    r.window.sink_pps / 1e6,
                    r.window.ns_per_pkt_fwd_cpu,
                    opts.fwd_cpu
                );
                report.pps.push(r);
            }
        }
        for &streams in &opts.streams {
            let r = self.measure_tcp(dp, i, streams)?;
            eprintln!(
                "remote-pod: {} round {i}, TCP {streams} stream(s): {:.3} Gbit/s, {} retransmits",
                dp.name(),
                r.receiver_gbps,
                r.retransmits
            );
            report.tcp.push(r);
        }
        Ok(())
    }

    fn measure_pps(
        &self,
        sink: &Sink,
        generator: &mut Generator,
        dp: Datapath,
        i: usize,
        flows: u32,
        agents: &[i32],
    ) -> Result<PpsRun> {
        let (window, c) =
            measure_path_window(self.opts, &self.topo, generator, sink, agents, "the sink")?;
        Ok(PpsRun {
            datapath: dp,
            run: i,
            flows,
            window,
            reordered: c.reordered,
            mean_latency_us: c.mean_latency_ns().map(|n| n / 1e3),
        })
    }

    fn measure_tcp(&self, dp: Datapath, i: usize, streams: u32) -> Result<TcpRun> {
        let opts = self.opts;
        let topo = &self.topo;
        topo.pin_napi(opts.fwd_cpu, opts.nice)?;
        let tag = format!("{}-{i}-{streams}", dp.name());
        let _server = Iperf3Server::start(
            &topo.pod_b,
            opts.gen_cpu,
            opts.nice,
            &self.state.path.join(format!("iperf3-server-{tag}.log")),
        )?;
        let secs = opts.tcp_time.as_secs();
        let path0 = topo.path()?;
        let c0 = CpuTimes::read()?;
        let t0 = Instant::now();
        let out = run_iperf3_client(
            &topo.pod_a,
            opts.gen_cpu,
            opts.nice,
            secs,
            streams,
            &self.state.path.join(format!("iperf3-client-{tag}.json")),
        )?;
        let wall = t0.elapsed().as_secs_f64();
        let c1 = CpuTimes::read()?;
        let path1 = topo.path()?;
        let res = parse_iperf3(&out)?;
        if res.bytes_received == 0 {
            bail!("iperf3 moved no data from pod A to pod B");
        }
        let gen_busy = c1.busy_ns_since(&c0, opts.gen_cpu)? as f64;
        let fwd_busy = c1.busy_ns_since(&c0, opts.fwd_cpu)? as f64;
        let mb = res.bytes_received as f64 / 1e6;
        Ok(TcpRun {
            datapath: dp,
            run: i,
            streams,
            seconds: wall,
            receiver_gbps: res.receiver_bps / 1e9,
            sender_gbps: res.sender_bps / 1e9,
            retransmits: res.retransmits,
            bytes_received: res.bytes_received,
            dropped: path1.drops_since(&path0),
            gen_cpu_busy: gen_busy / (wall * 1e9),
            fwd_cpu_busy: fwd_busy / (wall * 1e9),
            us_per_mb_gen_cpu: gen_busy / 1e3 / mb,
            us_per_mb_fwd_cpu: fwd_busy / 1e3 / mb,
        })
    }
}

/// The two Node objects (podCIDR, InternalIP, flannel's annotations with the eth0 MACs as
/// VtepMACs) and the `kube-flannel-cfg` ConfigMap, for `xdplane run --manifests`.
pub(crate) fn write_manifests(dir: &Path, mac_a: [u8; 6], mac_b: [u8; 6]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut docs = Vec::new();
    for (name, ip, cidr, mac) in [
        (NODE_A, NODE_A_IP, POD_CIDR_A, mac_a),
        (NODE_B, NODE_B_IP, POD_CIDR_B, mac_b),
    ] {
        let ann =
            flannel::node_annotations(Mode::Vxlan, flannel::DEFAULT_VNI, Some(&fmt_mac(&mac)), ip)?;
        let node = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
                "annotations": ann,
            },
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": ip.to_string()},
                {"type": "Hostname", "address": name},
            ]},
        });
        docs.push(serde_json::to_string_pretty(&node)?);
    }
    std::fs::write(dir.join("nodes.yaml"), docs.join("\n---\n") + "\n")
        .context("writing nodes.yaml")?;
    std::fs::write(
        dir.join("kube-flannel-cfg.yaml"),
        flannel::configmap_yaml(NET_CONF),
    )
    .context("writing kube-flannel-cfg.yaml")?;
    Ok(())
}

/// The four namespaces and their veths (kept for the whole run; the datapaths come and go).
/// Field order is drop order.
pub(crate) struct Topology {
    pub(crate) pod_a: Netns,
    pub(crate) n1: Netns,
    pub(crate) n2: Netns,
    pub(crate) pod_b: Netns,
    pub(crate) mac_a: [u8; 6],
    pub(crate) mac_b: [u8; 6],
    pub(crate) mac_vetha: [u8; 6],
    pub(crate) mac_uplink_a: [u8; 6],
    pub(crate) mac_uplink_b: [u8; 6],
    /// `/proc/thread-self/net/dev` opened inside pod A, node A, node B and pod B: each read
    /// from offset 0 is fresh and shows that namespace's devices.
    net_dev: [File; 4],
    /// NAPI threads named like ours (`napi/vetha-`, `napi/vethb-`, `napi/eth0-`) that
    /// existed before ours: other namespaces' devices, never touched.
    foreign_napi: HashSet<i32>,
}

/// Node-side devices with threaded NAPI: (node, device).
const NAPI_DEVS: [&str; 3] = ["vetha", "vethb", "eth0"];

impl Topology {
    /// The generator in pod A, through node A's vetha, to `dst` (IP, port) from `flows`
    /// source ports at `src_port`, with the frame size, CPU and nice of `opts`.
    pub(crate) fn pod_a_generator(
        &self,
        opts: &RemotePodOpts,
        dst: (Ipv4Addr, u16),
        src_port: u16,
        flows: u32,
    ) -> Result<Generator> {
        Generator::new(GenConfig {
            netns: Some(self.pod_a.path()),
            ifname: "eth0".into(),
            src_mac: self.mac_a,
            dst_mac: self.mac_vetha,
            src_ip: POD_A_IP,
            dst_ip: dst.0,
            src_port,
            dst_port: dst.1,
            flows,
            frame_size: opts.frame_size,
            cpu: opts.gen_cpu,
            batch_size: 64,
            nice: opts.nice,
            threads: 2,
        })
    }

    pub(crate) fn build(prefix: &str, gro_merge: bool) -> Result<Topology> {
        let pod_a = Netns::create(&format!("{prefix}-gen"))?;
        let n1 = Netns::create(&format!("{prefix}-n1"))?;
        let n2 = Netns::create(&format!("{prefix}-n2"))?;
        let pod_b = Netns::create(&format!("{prefix}-sink"))?;
        veth_pair(&n1, "eth0", &n2, "eth0")?;
        veth_pair(&n1, "vetha", &pod_a, "eth0")?;
        veth_pair(&n2, "vethb", &pod_b, "eth0")?;
        for (node, ip) in [(&n1, NODE_A_IP), (&n2, NODE_B_IP)] {
            node.ip(&[
                "addr",
                "add",
                &format!("{ip}/{UPLINK_PREFIX_LEN}"),
                "dev",
                "eth0",
            ])?;
        }
        let mtu = POD_MTU.to_string();
        for (node, dev) in [(&n1, "vetha"), (&n2, "vethb")] {
            node.ip(&["link", "set", dev, "mtu", &mtu])?;
        }
        // Pods as the bridge plugin (flannel's delegate) leaves them: address, MTU, default
        // route and the flannel Network via the gateway; plus tx checksum offload off.
        for (pod, ip, gw) in [(&pod_a, POD_A_IP, GATEWAY_A), (&pod_b, POD_B_IP, GATEWAY_B)] {
            pod.ip(&["link", "set", "eth0", "mtu", &mtu])?;
            pod.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            pod.ip(&["route", "add", "default", "via", &gw.to_string()])?;
            pod.ip(&["route", "add", NETWORK, "via", &gw.to_string()])?;
            pod.exec("ethtool", &["-K", "eth0", "tx", "off"])?;
        }
        // NAPI on the node-side ingress devices whatever is attached (vetha needs it for the
        // generator's redirected frames), threaded so that the receive work runs on a CPU we
        // choose.
        let mut foreign_napi = HashSet::new();
        for dev in NAPI_DEVS {
            foreign_napi.extend(napi_threads(dev)?);
        }
        for (node, dev) in [(&n1, "vetha"), (&n1, "eth0"), (&n2, "eth0"), (&n2, "vethb")] {
            node.exec("ethtool", &["-K", dev, "gro", "on"])?;
            if !gro_merge {
                node.ip(&["link", "set", "dev", dev, "gro_max_size", "0"])?;
            }
            node.write_file(&format!("/sys/class/net/{dev}/threaded"), "1")?;
        }
        let open = |ns: &Netns| open_net_dev(ns, "opening a node's /proc/net/dev");
        let net_dev = [open(&pod_a)?, open(&n1)?, open(&n2)?, open(&pod_b)?];
        Ok(Topology {
            mac_a: pod_a.mac("eth0")?,
            mac_b: pod_b.mac("eth0")?,
            mac_vetha: n1.mac("vetha")?,
            mac_uplink_a: n1.mac("eth0")?,
            mac_uplink_b: n2.mac("eth0")?,
            pod_a,
            n1,
            n2,
            pod_b,
            net_dev,
            foreign_napi,
        })
    }

    /// The sink on pod B's eth0, matching the generator's frames to pod B.
    pub(crate) fn attach_sink(&self) -> Result<Sink> {
        Sink::attach(
            Some(&self.pod_b.path()),
            "eth0",
            SinkFilter {
                mac: Some(self.mac_b),
                ip: Some(POD_B_IP),
                dst_port: Some(DST_PORT),
            },
        )
    }

    /// Forgets what the pods learned under the previous datapath (the gateway's MAC).
    pub(crate) fn flush_pod_neighbours(&self) -> Result<()> {
        for pod in [&self.pod_a, &self.pod_b] {
            pod.ip(&["neigh", "flush", "dev", "eth0"])?;
        }
        Ok(())
    }

    /// Pins our NAPI threads to `cpu` (and sets their nice value); returns their PIDs.
    pub(crate) fn pin_napi(&self, cpu: usize, nice: Option<i32>) -> Result<Vec<i32>> {
        let mut ours = Vec::new();
        for dev in NAPI_DEVS {
            ours.extend(
                napi_threads(dev)?
                    .into_iter()
                    .filter(|p| !self.foreign_napi.contains(p)),
            );
        }
        // vetha, vethb and two eth0: at least one thread each.
        if ours.len() < 4 {
            bail!(
                "expected NAPI threads for vetha, vethb and both nodes' eth0, found {} (threaded NAPI did not take effect?)",
                ours.len()
            );
        }
        for &p in &ours {
            sys::pin_to_cpu(p, cpu).with_context(|| format!("pinning NAPI thread {p}"))?;
            if let Some(n) = nice {
                sys::set_nice(p, n).with_context(|| format!("nice {n} on NAPI thread {p}"))?;
            }
        }
        Ok(ours)
    }

    /// The veth counters along the path, read from the four namespaces' /proc/net/dev (no
    /// process, no thread: cheap enough for the middle of a measurement).
    pub(crate) fn path(&self) -> Result<PathCounters> {
        let [pod_a, n1, n2, pod_b] = &self.net_dev;
        let (pod_a, n1, n2, pod_b) = (
            read_net_dev(pod_a)?,
            read_net_dev(n1)?,
            read_net_dev(n2)?,
            read_net_dev(pod_b)?,
        );
        let a_eth0 = parse_net_dev(&pod_a, "eth0")?;
        let vetha = parse_net_dev(&n1, "vetha")?;
        let n1_eth0 = parse_net_dev(&n1, "eth0")?;
        let n2_eth0 = parse_net_dev(&n2, "eth0")?;
        let vethb = parse_net_dev(&n2, "vethb")?;
        let b_eth0 = parse_net_dev(&pod_b, "eth0")?;
        Ok(PathCounters {
            node_a_rx: vetha.rx_packets,
            node_b_rx: n2_eth0.rx_packets,
            drops: HopDrops {
                pod_a_to_node_a: a_eth0.tx_dropped + vetha.rx_dropped,
                node_a_to_node_b: n1_eth0.tx_dropped + n2_eth0.rx_dropped,
                node_b_to_pod_b: vethb.tx_dropped + b_eth0.rx_dropped,
            },
        })
    }
}

/// Veth counters along the path at one instant (totals since the devices were made).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathCounters {
    /// Frames vetha received from pod A.
    pub(crate) node_a_rx: u64,
    /// Frames node B's eth0 received from node A.
    pub(crate) node_b_rx: u64,
    pub(crate) drops: HopDrops,
}

impl PathCounters {
    pub(crate) fn drops_since(&self, earlier: &PathCounters) -> HopDrops {
        HopDrops {
            pod_a_to_node_a: self
                .drops
                .pod_a_to_node_a
                .saturating_sub(earlier.drops.pod_a_to_node_a),
            node_a_to_node_b: self
                .drops
                .node_a_to_node_b
                .saturating_sub(earlier.drops.node_a_to_node_b),
            node_b_to_pod_b: self
                .drops
                .node_b_to_pod_b
                .saturating_sub(earlier.drops.node_b_to_pod_b),
        }
    }
}

/// A datapath set up on both nodes; torn down on drop.
pub(crate) enum DatapathGuard<'a> {
    Kernel(KernelFlannel<'a>),
    Xdplane(XdplaneNodes),
}

impl DatapathGuard<'_> {
    /// Where pod A's frames to another node go: the gateway's MAC.
    pub(crate) fn dst_mac(&self) -> [u8; 6] {
        match self {
            DatapathGuard::Kernel(k) => k.cni0_mac_a,
            DatapathGuard::Xdplane(x) => x.vetha_mac,
        }
    }

    pub(crate) fn agent_pids(&self) -> Vec<i32> {
        match self {
            DatapathGuard::Kernel(_) => Vec::new(),
            DatapathGuard::Xdplane(x) => x.agents.iter().map(|(_, a)| a.pid()).collect(),
        }
    }

    pub(crate) fn log_tails(&self) -> String {
        match self {
            DatapathGuard::Kernel(_) => String::new(),
            DatapathGuard::Xdplane(x) => x.log_tails(),
        }
    }

    /// Tears down now, reporting what went wrong (drop only warns).
    pub(crate) fn stop(self) -> Result<()> {
        match self {
            DatapathGuard::Kernel(k) => {
                drop(k);
                Ok(())
            }
            DatapathGuard::Xdplane(x) => x.stop(),
        }
    }
}

/// Both nodes as flanneld (vxlan backend) and the flannel CNI plugin set up the kernel.
pub(crate) struct KernelFlannel<'a> {
    topo: &'a Topology,
    cni0_mac_a: [u8; 6],
}

impl<'a> KernelFlannel<'a> {
    pub(crate) fn up(topo: &'a Topology) -> Result<KernelFlannel<'a>> {
        // The guard exists before the first change, so a half-made setup is removed too.
        let mut g = KernelFlannel {
            topo,
            cni0_mac_a: [0; 6],
        };
        // An agent of the previous round must have left nothing attached.
        for (ns, dev) in [
            (&topo.n1, "eth0"),
            (&topo.n1, "vetha"),
            (&topo.n2, "eth0"),
            (&topo.n2, "vethb"),
        ] {
            let j = ns.ip(&["-j", "link", "show", "dev", dev])?;
            let v: serde_json::Value = serde_json::from_str(&j).context("parsing ip -j link")?;
            if v.get(0).and_then(|l| l.get("xdp")).is_some() {
                bail!("an XDP program is still attached to {dev} in {}", ns.name());
            }
        }
        let conf = NetConf::parse(NET_CONF)?;
        let nodes = [
            kernel_node(NODE_A, &topo.n1, NODE_A_IP, POD_CIDR_A)?,
            kernel_node(NODE_B, &topo.n2, NODE_B_IP, POD_CIDR_B)?,
        ];
        let mut vtep_macs = Vec::new();
        for node in &nodes {
            kernel::setup_node(node, POD_MTU)?;
            let mac =
                kernel::ensure_vtep(node, &conf, Mode::Vxlan)?.context("no VTEP in vxlan mode")?;
            vtep_macs.push(mac);
        }
        for (k, node) in nodes.iter().enumerate() {
            let peer = &nodes[1 - k];
            let lease = Lease {
                node: peer.name.to_string(),
                public_ip: peer.ip,
                pod_cidr: peer.pod_cidr,
                backend_type: "vxlan".into(),
                backend_data: format!(r#"{{"VNI":{},"VtepMAC":"{}"}}"#, conf.vni, vtep_macs[1 - k]),
            };
            let rep = kernel::program_kernel_node(node, &conf, Mode::Vxlan, &[lease])?;
            if !rep.notes.is_empty() {
                bail!(
                    "flannel programming of {} left peers out: {}",
                    node.name,
                    rep.notes.join("; ")
                );
            }
        }
        for (node, dev, mac, ip) in [
            (&topo.n1, "vetha", topo.mac_a, POD_A_IP),
            (&topo.n2, "vethb", topo.mac_b, POD_B_IP),
        ] {
            node.ip(&["link", "set", dev, "master", kernel::BRIDGE])?;
            // What a running cluster's bridge and node would have learned about the pod
            // (pod B only receives, and the sink drops ARP).
            node.exec(
                "bridge",
                &[
                    "fdb",
                    "replace",
                    &fmt_mac(&mac),
                    "dev",
                    dev,
                    "master",
                    "static",
                ],
            )?;
            node.ip(&[
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &fmt_mac(&mac),
                "dev",
                kernel::BRIDGE,
                "nud",
                "permanent",
            ])?;
        }
        g.cni0_mac_a = topo.n1.mac(kernel::BRIDGE)?;
        Ok(g)
    }
}

fn kernel_node<'n>(
    name: &'n str,
    ns: &'n Netns,
    ip: Ipv4Addr,
    cidr: &str,
) -> Result<KernelNode<'n>> {
    Ok(KernelNode {
        name,
        netns: ns.name(),
        ip,
        prefix_len: UPLINK_PREFIX_LEN,
        pod_cidr: cidr
            .parse::<Cidr>()
            .with_context(|| format!("pod CIDR {cidr}"))?,
    })
}

impl Drop for KernelFlannel<'_> {
    fn drop(&mut self) {
        for (node, dev) in [(&self.topo.n1, "vetha"), (&self.topo.n2, "vethb")] {
            let exists = |d: &str| node.ip(&["link", "show", "dev", d]).is_ok();
            if exists(kernel::BRIDGE) {
                let _ = node.ip(&["link", "set", dev, "nomaster"]);
                if let Err(e) = node.ip(&["link", "del", kernel::BRIDGE]) {
                    eprintln!("warning: removing cni0 in {}: {e:#}", node.name());
                }
            }
            if exists("flannel.1")
                && let Err(e) = node.ip(&["link", "del", "flannel.1"])
            {
                eprintln!("warning: removing flannel.1 in {}: {e:#}", node.name());
            }
            if let Err(e) = node.sysctl("net.ipv4.ip_forward", "0") {
                eprintln!("warning: ip_forward=0 in {}: {e:#}", node.name());
            }
        }
    }
}

/// `xdplane run` on both nodes, both pods attached; the agents are stopped on drop.
pub(crate) struct XdplaneNodes {
    /// (node name, agent).
    agents: Vec<(&'static str, AgentProcess)>,
    vetha_mac: [u8; 6],
}

impl XdplaneNodes {
    pub(crate) fn up(
        topo: &Topology,
        bin: &Path,
        manifests: &Path,
        state: &Path,
        opts: &RemotePodOpts,
        round: usize,
    ) -> Result<XdplaneNodes> {
        let mut x = XdplaneNodes {
            agents: Vec::new(),
            vetha_mac: topo.mac_vetha,
        };
        for (name, ns) in [(NODE_A, &topo.n1), (NODE_B, &topo.n2)] {
            let mut args: Vec<String> = vec![
                "--node".into(),
                name.into(),
                "--manifests".into(),
                manifests.display().to_string(),
                "--uplink".into(),
                "eth0".into(),
                "--workers".into(),
                "1".into(),
                "--cores".into(),
                opts.fwd_cpu.to_string(),
            ];
            args.extend(opts.agent_args.iter().cloned());
            // A fresh socket (and state file next to it) per round: every round starts
            // from nothing.
            let socket = state.join(format!("{name}-{round}.sock"));
            let log = state.join(format!("{name}-{round}.log"));
            let agent = AgentProcess::start(bin, ns, &args, &socket, &log)?;
            x.agents.push((name, agent));
        }
        for (_, a) in &mut x.agents {
            a.wait_ready(Duration::from_secs(30))?;
        }
        for (k, (pod, ifname, ip, mac)) in [
            ("pod-a", "vetha", POD_A_IP, topo.mac_a),
            ("pod-b", "vethb", POD_B_IP, topo.mac_b),
        ]
        .into_iter()
        .enumerate()
        {
            x.agents[k]
                .1
                .attach(bench_attachment(pod, ifname, ip, mac))?;
        }
        x.wait_neighbours(Duration::from_secs(10))?;
        if let Some(n) = opts.nice {
            for (_, a) in &x.agents {
                nice_agent_threads(a.pid(), n)?;
            }
        }
        Ok(x)
    }

    /// Waits until each agent has resolved the other node's MAC (its ARP resolver runs on
    /// its own once the route to the peer's pod CIDR exists).
    fn wait_neighbours(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for (k, (name, a)) in self.agents.iter().enumerate() {
            let peer = if k == 0 { NODE_B_IP } else { NODE_A_IP };
            loop {
                let st = a.call(&Request::Stats)?;
                if neighbour_known(&st, peer) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the agent of {name} did not resolve {peer} within {timeout:?} (stats neighbours: {})",
                        st.get("neighbours").map_or("-".into(), |v| v.to_string())
                    );
                }
                sleep_checked(Duration::from_millis(100))?;
            }
        }
        Ok(())
    }

    fn log_tails(&self) -> String {
        let mut s = String::new();
        for (name, a) in &self.agents {
            let _ = writeln!(
                s,
                "last lines of the agent log of {name}:\n{}",
                a.log_tail(12)
            );
        }
        s
    }

    fn stop(mut self) -> Result<()> {
        let mut notes = Vec::new();
        for (name, a) in self.agents.drain(..) {
            let st = a.stop()?;
            if !st.success() {
                notes.push(format!("{name}: {st}"));
            }
        }
        if !notes.is_empty() {
            eprintln!(
                "note: agents exited uncleanly after SIGTERM: {}",
                notes.join(", ")
            );
        }
        Ok(())
    }
}

/// Whether a `stats` reply lists `ip` among the agent's neighbours.
fn neighbour_known(stats: &serde_json::Value, ip: Ipv4Addr) -> bool {
    let ip = ip.to_string();
    stats
        .get("neighbours")
        .and_then(|n| n.as_array())
        .is_some_and(|n| {
            n.iter().any(|e| {
                e.get("ip").and_then(|v| v.as_str()) == Some(ip.as_str())
                    && e.get("mac")
                        .and_then(|v| v.as_str())
                        .is_some_and(|m| !m.is_empty())
            })
        })
}

/// `[nice -n N] taskset -c CPU iperf3 ARGS…` inside `ns` (each program execs the next: the
/// child's PID is iperf3's).
fn iperf3_command(ns: &Netns, cpu: usize, nice: Option<i32>, args: &[String]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns.name()]);
    if let Some(n) = nice {
        c.args(["nice", "-n", &n.to_string()]);
    }
    c.args(["taskset", "-c", &cpu.to_string(), "iperf3"]);
    c.args(args);
    c.stdin(Stdio::null());
    c
}

/// `iperf3 -s -1` in pod B; killed (its PID only) on drop if it is still running.
struct Iperf3Server {
    child: Child,
}

impl Iperf3Server {
    fn start(ns: &Netns, cpu: usize, nice: Option<i32>, log: &Path) -> Result<Iperf3Server> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let args: Vec<String> = [
            "-s",
            "-1",
            "-B",
            &POD_B_IP.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let child = iperf3_command(ns, cpu, nice, &args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting iperf3 -s")?;
        let mut s = Iperf3Server { child };
        let deadline = Instant::now() + Duration::from_secs(5);
        let filter = format!("sport = :{IPERF_PORT}");
        loop {
            if let Some(st) = s.child.try_wait()? {
                bail!(
                    "iperf3 -s exited ({st}): {}",
                    std::fs::read_to_string(log).unwrap_or_default().trim()
                );
            }
            if !ns.exec("ss", &["-Hltn", &filter])?.trim().is_empty() {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("iperf3 -s did not listen within 5 s");
            }
            sleep_checked(Duration::from_millis(50))?;
        }
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        // With -1 it exits after its test; give it a moment, then stop it.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        // Not reaped yet, so the PID is still our child's.
        let _ = sys::kill(self.child.id() as i32, libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(300));
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `iperf3 -c pod B -t SECS -P STREAMS -J` in pod A, its output into `out` (and its
/// stderr next to it), and returns the JSON report.
fn run_iperf3_client(
    ns: &Netns,
    cpu: usize,
    nice: Option<i32>,
    secs: u64,
    streams: u32,
    out: &Path,
) -> Result<String> {
    let args: Vec<String> = [
        "-c",
        &POD_B_IP.to_string(),
        "-p",
        &IPERF_PORT.to_string(),
        "-t",
        &secs.to_string(),
        "-P",
        &streams.to_string(),
        "--connect-timeout",
        "3000",
        "-J",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let err_path = out.with_extension("stderr");
    let stdout = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let stderr =
        File::create(&err_path).with_context(|| format!("creating {}", err_path.display()))?;
    let mut child = iperf3_command(ns, cpu, nice, &args)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .context("starting iperf3 -c")?;
    let limit = secs + 20;
    let deadline = Instant::now() + Duration::from_secs(limit);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if sys::stop_requested() || Instant::now() > deadline {
            // Not reaped yet, so the PID is still our child's.
            let _ = sys::kill(child.id() as i32, libc::SIGTERM);
            std::thread::sleep(Duration::from_millis(300));
            let _ = child.kill();
            let _ = child.wait();
            if sys::stop_requested() {
                bail!("interrupted");
            }
            bail!("iperf3 -c did not finish within {limit} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(out).unwrap_or_default();
    if !status.success() {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| std::fs::read_to_string(&err_path).unwrap_or_default());
        bail!("iperf3 -c failed ({status}): {}", msg.trim());
    }
    Ok(text)
}

/// The figures of an iperf3 client's `-J` report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Iperf3Result {
    pub sender_bps: f64,
    pub receiver_bps: f64,
    pub retransmits: u64,
    pub bytes_received: u64,
}

/// Parses `iperf3 -c … -J` output (`end.sum_sent`, `end.sum_received`).
pub fn parse_iperf3(text: &str) -> Result<Iperf3Result> {
    let v: serde_json::Value = serde_json::from_str(text).context("iperf3's output is not JSON")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    let end = v.get("end").context("iperf3's report has no `end`")?;
    let num = |sec: &str, key: &str| -> Result<f64> {
        end.get(sec)
            .and_then(|s| s.get(key))
            .and_then(|x| x.as_f64())
            .with_context(|| format!("iperf3's report has no end.{sec}.{key}"))
    };
    Ok(Iperf3Result {
        sender_bps: num("sum_sent", "bits_per_second")?,
        receiver_bps: num("sum_received", "bits_per_second")?,
        retransmits: num("sum_sent", "retransmits")? as u64,
        bytes_received: num("sum_received", "bytes")? as u64,
    })
}

fn summarize(report: &mut RemotePodReport) {
    let pps = group_by(&report.pps, |r| (r.flows, r.datapath));
    for ((flows, dp), rs) in &pps {
        report.pps_summary.push(PpsSummary {
            datapath: *dp,
            flows: *flows,
            runs: rs.len(),
            sink_mpps: stat_of(rs, |r| r.window.sink_pps / 1e6),
            offered_mpps: stat_of(rs, |r| r.window.offered_pps / 1e6),
            nodes_loss: stat_of(rs, |r| r.window.nodes_loss),
            ns_per_pkt_gen_cpu: stat_of(rs, |r| r.window.ns_per_pkt_gen_cpu),
            ns_per_pkt_fwd_cpu: stat_of(rs, |r| r.window.ns_per_pkt_fwd_cpu),
            ns_per_pkt_both: stat_of(rs, |r| r.window.ns_per_pkt_both),
            ns_per_pkt_tasks: stat_of(rs, |r| r.window.ns_per_pkt_tasks),
        });
    }
    let tcp = group_by(&report.tcp, |r| (r.streams, r.datapath));
    for ((streams, dp), rs) in &tcp {
        report.tcp_summary.push(TcpSummary {
            datapath: *dp,
            streams: *streams,
            runs: rs.len(),
            receiver_gbps: stat_of(rs, |r| r.receiver_gbps),
            retransmits: stat_of(rs, |r| r.retransmits as f64),
            fwd_cpu_busy: stat_of(rs, |r| r.fwd_cpu_busy),
            us_per_mb_gen_cpu: stat_of(rs, |r| r.us_per_mb_gen_cpu),
            us_per_mb_fwd_cpu: stat_of(rs, |r| r.us_per_mb_fwd_cpu),
        });
    }
    let find_p = |flows: u32, dp: Datapath| {
        report
            .pps_summary
            .iter()
            .find(|s| s.flows == flows && s.datapath == dp)
    };
    let mut pps_ratio = Vec::new();
    for s in &report.pps_summary {
        if s.datapath != Datapath::Kernel {
            continue;
        }
        if let Some(x) = find_p(s.flows, Datapath::Xdplane) {
            pps_ratio.push(PpsRatio {
                flows: s.flows,
                sink_pps: x.sink_mpps.median / s.sink_mpps.median,
                ns_per_pkt_fwd_cpu: x.ns_per_pkt_fwd_cpu.median / s.ns_per_pkt_fwd_cpu.median,
                ns_per_pkt_both: x.ns_per_pkt_both.median / s.ns_per_pkt_both.median,
                ns_per_pkt_tasks: x.ns_per_pkt_tasks.median / s.ns_per_pkt_tasks.median,
            });
        }
    }
    let find_t = |streams: u32, dp: Datapath| {
        report
            .tcp_summary
            .iter()
            .find(|s| s.streams == streams && s.datapath == dp)
    };
    let mut tcp_ratio = Vec::new();
    for s in &report.tcp_summary {
        if s.datapath != Datapath::Kernel {
            continue;
        }
        if let Some(x) = find_t(s.streams, Datapath::Xdplane) {
            tcp_ratio.push(TcpRatio {
                streams: s.streams,
                receiver_gbps: x.receiver_gbps.median / s.receiver_gbps.median,
                us_per_mb_fwd_cpu: x.us_per_mb_fwd_cpu.median / s.us_per_mb_fwd_cpu.median,
            });
        }
    }
    report.pps_ratio_xdplane_over_kernel = pps_ratio;
    report.tcp_ratio_xdplane_over_kernel = tcp_ratio;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn iperf3_report() {
        let j = r#"{"start":{},"intervals":[],"end":{"streams":[],
            "sum_sent":{"start":0,"end":10.0,"seconds":10.0,"bytes":2500000000,"bits_per_second":2.0e9,"retransmits":17,"sender":true},
            "sum_received":{"start":0,"end":10.0,"seconds":10.0,"bytes":2499000000,"bits_per_second":1.9992e9,"sender":true}}}"#;
        let r = parse_iperf3(j).unwrap();
        assert_eq!(r.retransmits, 17);
        assert_eq!(r.bytes_received, 2_499_000_000);
        assert!((r.receiver_bps - 1.9992e9).abs() < 1.0);
        assert!((r.sender_bps - 2.0e9).abs() < 1.0);
        let e = parse_iperf3(r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}"#)
            .unwrap_err();
        assert!(format!("{e:#}").contains("Connection refused"), "{e:#}");
        assert!(parse_iperf3("iperf3: error").is_err());
        assert!(parse_iperf3(r#"{"end":{"sum_sent":{}}}"#).is_err());
    }

    #[test]
    fn neighbours_in_stats() {
        let st =
            serde_json::json!({"neighbours": [{"ip": "192.168.77.2", "mac": "aa:02:b9:4c:61:af"}]});
        assert!(neighbour_known(&st, NODE_B_IP));
        assert!(!neighbour_known(&st, NODE_A_IP));
        assert!(!neighbour_known(&serde_json::json!({}), NODE_B_IP));
    }

    #[test]
    fn manifests_are_what_the_agent_and_the_lab_read() {
        let dir = std::env::temp_dir().join(format!("rp-manifests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_manifests(&dir, [2, 0, 0, 0, 0, 0xa1], [2, 0, 0, 0, 0, 0xb2]).unwrap();
        let loaded = xdplane_control::manifest::load_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let loaded = loaded.unwrap();
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let (leases, skipped) = flannel::leases(&loaded.model, NODE_A);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].node, NODE_B);
        assert_eq!(leases[0].public_ip, NODE_B_IP);
        assert_eq!(leases[0].pod_cidr.to_string(), POD_CIDR_B);
        assert_eq!(leases[0].vtep_mac().unwrap(), [2, 0, 0, 0, 0, 0xb2]);
    }

    /// The JSON of a run is what it was before the window had its own struct: flat, in the
    /// same order.
    #[test]
    fn pps_runs_are_flat_in_the_json() {
        let j = serde_json::to_string(&pps(Datapath::Kernel, 4, 1.0, 100.0)).unwrap();
        assert!(!j.contains("\"window\""), "{j}");
        let mut keys = vec!["datapath", "run", "flows"];
        keys.extend(PATH_WINDOW_KEYS);
        keys.extend(["reordered", "mean_latency_us"]);
        crate::scenarios::common::assert_key_order(&j, &keys);
    }

    /// The JSON keys of a [`PathWindow`], in order.
    pub(crate) const PATH_WINDOW_KEYS: [&str; 14] = [
        "window_s",
        "sink_pps",
        "offered_pps",
        "node_a_rx_pps",
        "node_b_uplink_rx_pps",
        "dropped",
        "nodes_loss",
        "gen_cpu_busy",
        "fwd_cpu_busy",
        "ns_per_pkt_gen_cpu",
        "ns_per_pkt_fwd_cpu",
        "ns_per_pkt_both",
        "ns_per_pkt_tasks",
        "delivered",
    ];

    fn pps(dp: Datapath, flows: u32, mpps: f64, ns: f64) -> PpsRun {
        PpsRun {
            datapath: dp,
            run: 1,
            flows,
            window: PathWindow::sample(mpps, ns),
            reordered: 0,
            mean_latency_us: None,
        }
    }

    fn tcp(dp: Datapath, streams: u32, gbps: f64) -> TcpRun {
        TcpRun {
            datapath: dp,
            run: 1,
            streams,
            seconds: 10.0,
            receiver_gbps: gbps,
            sender_gbps: gbps,
            retransmits: 3,
            bytes_received: 1,
            dropped: HopDrops::default(),
            gen_cpu_busy: 0.5,
            fwd_cpu_busy: 1.0,
            us_per_mb_gen_cpu: 100.0,
            us_per_mb_fwd_cpu: 1000.0 / gbps,
        }
    }

    #[test]
    fn summary_takes_medians_and_ratios_per_flow_count() {
        let mut rep = RemotePodReport {
            header: ReportHeader::for_tests("remote-pod"),
            topology: String::new(),
            layout: Layout {
                generator_cpu: 0,
                forwarding_cpu: 1,
                nice: None,
                description: String::new(),
                offloads: String::new(),
                gro_merge: true,
            },
            traffic: Traffic {
                frame_size: 64,
                flows: vec![1, 64],
                rate: "max".into(),
                warmup_s: 1.0,
                window_s: 3.0,
                tcp_streams: vec![1],
                tcp_time_s: 10.0,
                runs_per_datapath: 3,
                dst_mac: BTreeMap::new(),
            },
            background_busy: [0.0, 0.0],
            pps: vec![
                pps(Datapath::Kernel, 1, 0.30, 3000.0),
                pps(Datapath::Xdplane, 1, 0.60, 1500.0),
                pps(Datapath::Kernel, 1, 0.40, 2500.0),
                pps(Datapath::Xdplane, 1, 0.80, 1250.0),
                pps(Datapath::Kernel, 1, 0.35, 2800.0),
                pps(Datapath::Xdplane, 1, 0.70, 1400.0),
                pps(Datapath::Kernel, 64, 0.20, 5000.0),
            ],
            tcp: vec![
                tcp(Datapath::Kernel, 1, 4.0),
                tcp(Datapath::Xdplane, 1, 2.0),
            ],
            pps_summary: Vec::new(),
            tcp_summary: Vec::new(),
            pps_ratio_xdplane_over_kernel: Vec::new(),
            tcp_ratio_xdplane_over_kernel: Vec::new(),
            error: None,
            file_stamp: "x".into(),
        };
        summarize(&mut rep);
        let k1 = rep
            .pps_summary
            .iter()
            .find(|s| s.flows == 1 && s.datapath == Datapath::Kernel)
            .unwrap();
        assert_eq!(k1.runs, 3);
        assert!((k1.sink_mpps.median - 0.35).abs() < 1e-12);
        assert_eq!(k1.ns_per_pkt_fwd_cpu.median, 2800.0);
        // 64 flows has no xdplane run: no ratio for it.
        assert_eq!(rep.pps_ratio_xdplane_over_kernel.len(), 1);
        let r = &rep.pps_ratio_xdplane_over_kernel[0];
        assert_eq!(r.flows, 1);
        assert!((r.sink_pps - 2.0).abs() < 1e-9);
        assert!((r.ns_per_pkt_fwd_cpu - 0.5).abs() < 1e-9);
        let t = &rep.tcp_ratio_xdplane_over_kernel[0];
        assert!((t.receiver_gbps - 0.5).abs() < 1e-9);
        assert!((t.us_per_mb_fwd_cpu - 2.0).abs() < 1e-9);
        let table = rep.table();
        assert!(
            table.contains("xdplane/kernel,  1 flow(s): throughput ×2.00"),
            "{table}"
        );
        assert!(
            table.contains("TCP 1 stream(s): throughput ×0.50"),
            "{table}"
        );
        let j = serde_json::to_value(&rep).unwrap();
        assert_eq!(j["pps_summary"][0]["datapath"], "kernel");
        assert_eq!(j["tcp"][1]["datapath"], "xdplane");
    }
}
