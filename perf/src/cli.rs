//! `xdplane bench …`: the perf lab's command line (mounted by the `xdplane` binary, also
//! available as the standalone `xdplane-perf` binary).
use crate::generator::{GenConfig, Generator, Limit, Rate};
use crate::netns::{Netns, veth_pair};
use crate::scenarios::pod_pod::{self, Datapath, PodPodOpts, PodPodReport};
use crate::scenarios::remote_pod::{self, RemotePodOpts, RemotePodReport};
use crate::scenarios::service::{self, IptablesBackend, ServiceOpts, ServiceReport};
use crate::sink::{Sink, SinkFilter};
use crate::sys;
use anyhow::{Context, Result, bail};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Benchmarks against the Linux kernel datapath (need root; everything runs in network
/// namespaces created and removed by the command).
#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// Pod → pod on one node: Linux bridge (cni0) vs xdplane, side by side, alternating.
    PodPod(PodPodArgs),
    /// The generator straight into the sink over one veth pair: the ceiling of the lab.
    GenSink(GenSinkArgs),
    /// Pod → pod on another node over VXLAN (VNI 1, UDP 8472): the kernel's flannel datapath
    /// (flannel.1 + cni0) on both nodes vs xdplane on both nodes, side by side, alternating;
    /// 64-byte UDP packets per second (1 and 64 flows) and iperf3 TCP (1 and 4 streams).
    RemotePod(RemotePodArgs),
    /// Pod → ClusterIP → pod on another node (VXLAN): the kernel's flannel datapath with the
    /// iptables rules kube-proxy would write vs xdplane on both nodes, with 1 and 10,000
    /// Services in the cluster (the measured one last in KUBE-SERVICES), side by side,
    /// alternating; 64-byte UDP packets per second.
    Service(ServiceArgs),
}

/// Traffic options shared by the subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct TrafficArgs {
    /// Ethernet frame size in bytes, FCS included (64..=1518).
    #[arg(long, default_value_t = 64)]
    pub frame_size: u16,
    /// Number of UDP flows (the source port cycles over this many values).
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    /// Offered rate: `max`, or frames per second (`500000`, `500k`, `1.5M`). A limited rate
    /// is exact on average; frames leave in ~10 ms bursts at full speed.
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    pub rate: Rate,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PodPodArgs {
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Datapaths to measure, alternating in this order.
    #[arg(long, value_delimiter = ',', default_value = "kernel,xdplane")]
    pub datapath: Vec<Datapath>,
    #[command(flatten)]
    pub run: ScenarioArgs,
}

/// Options shared by the side-by-side scenarios (pod-pod, remote-pod).
#[derive(Debug, Clone, clap::Args)]
pub struct ScenarioArgs {
    /// Rounds per datapath (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds of traffic before each (packets-per-second) measuring window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds of each (packets-per-second) measuring window.
    #[arg(long, default_value_t = 3.0)]
    pub window: f64,
    /// CPU of the generator (and, in remote-pod, of both iperf3 ends).
    #[arg(long, default_value_t = 0)]
    pub gen_cpu: usize,
    /// CPU of the node-side forwarding work (NAPI threads of the node-side devices, the
    /// xdplane workers).
    #[arg(long, default_value_t = 1)]
    pub fwd_cpu: usize,
    /// Nice value of the measured tasks (generator, NAPI threads, agents, iperf3) and of
    /// this session's autogroup, the same for both datapaths, so that other work on a shared
    /// machine barely disturbs them; `none` to leave priorities alone.
    #[arg(long, default_value = "-20", value_parser = parse_nice, allow_hyphen_values = true)]
    pub nice: Nice,
    /// Namespace prefix (default: pp<PID> for pod-pod, rp<PID> for remote-pod, sv<PID> for
    /// service).
    #[arg(long)]
    pub prefix: Option<String>,
    /// The xdplane agent binary (default: $XDPLANE_BIN_DIR/xdplane, else next to this
    /// executable).
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Extra argument for `xdplane run` on every node (repeatable), e.g.
    /// `--agent-arg=--poll=busy`.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,
    /// Directory for the JSON report (default: perf/results of the source tree).
    #[arg(long)]
    pub results_dir: Option<PathBuf>,
    /// Do not write the JSON report.
    #[arg(long)]
    pub no_save: bool,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl ScenarioArgs {
    /// Where the JSON report goes: nowhere with `--no-save`, else `--results-dir`, else
    /// `default`.
    pub fn results_dir(&self, default: Option<PathBuf>) -> Option<PathBuf> {
        if self.no_save {
            None
        } else {
            self.results_dir.clone().or(default)
        }
    }

    /// Prints the report: JSON with `--json`, else `table`.
    fn print<T: serde::Serialize>(&self, report: &T, table: impl FnOnce() -> String) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(report)?);
        } else {
            print!("{}", table());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct RemotePodArgs {
    /// Ethernet frame size of the generated frames in bytes, FCS included (64..=1518).
    #[arg(long, default_value_t = 64)]
    pub frame_size: u16,
    /// Flow counts of the packets-per-second measurements (the UDP source port cycles over
    /// this many values).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub flows: Vec<u32>,
    /// Offered rate of the generator: `max`, or frames per second (`500k`, `1.5M`).
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    pub rate: Rate,
    /// Parallel streams of the iperf3 TCP measurements.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub streams: Vec<u32>,
    /// Seconds of each iperf3 test (whole seconds).
    #[arg(long, default_value_t = 10)]
    pub tcp_time: u64,
    /// Skip the packets-per-second measurements.
    #[arg(long)]
    pub no_pps: bool,
    /// Skip the TCP measurements (no iperf3 needed).
    #[arg(long)]
    pub no_tcp: bool,
    /// Stop GRO on the node-side devices from merging frames (gro_max_size 0; they keep
    /// NAPI): the kernel then forwards TCP frame by frame, as xdplane does.
    #[arg(long)]
    pub no_gro_merge: bool,
    /// Datapaths to measure, alternating in this order.
    #[arg(long, value_delimiter = ',', default_value = "kernel,xdplane")]
    pub datapath: Vec<remote_pod::Datapath>,
    #[command(flatten)]
    pub run: ScenarioArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Ethernet frame size of the generated frames in bytes, FCS included (64..=1518).
    #[arg(long, default_value_t = 64)]
    pub frame_size: u16,
    /// Flow counts (the UDP source port cycles over this many values; each measurement
    /// uses ports no earlier measurement used).
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub flows: Vec<u32>,
    /// Numbers of Services in the cluster (the measured one included, last in
    /// KUBE-SERVICES).
    #[arg(long, value_delimiter = ',', default_value = "1,10000")]
    pub services: Vec<u32>,
    /// Offered rate of the generator: `max`, or frames per second (`500k`, `1.5M`).
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    pub rate: Rate,
    /// Which iptables loads the kube-proxy rules in the kernel runs: the system's
    /// `iptables-restore` (nf_tables on Debian 12) or `iptables-legacy-restore`.
    #[arg(long, default_value = "system")]
    pub iptables: IptablesBackend,
    /// Frames of the new-flow burst after each setup's packets-per-second windows, each
    /// from its own source port (a new flow: the kernel walks KUBE-SERVICES for each);
    /// 0 for none.
    #[arg(long, default_value_t = 8192)]
    pub new_flows: u32,
    /// Rate of the new-flow burst (new flows per second: `20k`, …).
    #[arg(long, default_value = "20k", value_parser = parse_rate)]
    pub new_flow_rate: Rate,
    /// Datapaths to measure, alternating in this order.
    #[arg(long, value_delimiter = ',', default_value = "kernel,xdplane")]
    pub datapath: Vec<remote_pod::Datapath>,
    #[command(flatten)]
    pub run: ScenarioArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GenSinkArgs {
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Seconds to send (ignored with --count).
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Send exactly this many frames.
    #[arg(long)]
    pub count: Option<u64>,
    /// CPU of the generator.
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
    /// Nice value of the generator threads and of this session's autogroup (see pod-pod);
    /// `none` to leave priorities alone.
    #[arg(long, default_value = "-20", value_parser = parse_nice, allow_hyphen_values = true)]
    pub nice: Nice,
    /// Run the sink's receive work in a NAPI thread pinned to this CPU (default: in the
    /// generator's softirq, on the generator's CPU).
    #[arg(long)]
    pub sink_cpu: Option<usize>,
}

/// A nice value or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nice(pub Option<i32>);

/// Parses `none` or a nice value in -20..=19.
pub fn parse_nice(s: &str) -> Result<Nice, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Nice(None));
    }
    match s.parse::<i32>() {
        Ok(n) if (-20..=19).contains(&n) => Ok(Nice(Some(n))),
        _ => Err(format!("bad nice value {s:?}: expected -20..=19 or none")),
    }
}

/// Parses `max`, `N`, `Nk`, `NM` (frames per second).
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1e3),
        Some((i, 'm' | 'M')) => (&s[..i], 1e6),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().map_err(|_| {
        format!("bad rate {s:?}: expected max, or frames/s like 500000, 500k, 1.5M")
    })?;
    let pps = v * mult;
    if !(1.0..=1e9).contains(&pps) {
        return Err(format!("rate {s:?} out of range (1 ..= 1G frames/s)"));
    }
    Ok(Rate::Pps(pps as u64))
}

fn secs(v: f64, what: &str) -> Result<Duration> {
    if !(0.0..=3600.0).contains(&v) {
        bail!("--{what} {v}: expected 0..=3600 seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

/// Runs a bench subcommand; returns the process exit code.
pub fn run_bench(cmd: BenchCmd) -> Result<i32> {
    sys::install_stop_handler().context("installing the SIGINT handler")?;
    match cmd {
        BenchCmd::PodPod(a) => pod_pod_cmd(a),
        BenchCmd::GenSink(a) => gen_sink_cmd(a),
        BenchCmd::RemotePod(a) => remote_pod_cmd(a),
        BenchCmd::Service(a) => service_cmd(a),
    }
}

/// The options of scenario type `$ty` from the [`ScenarioArgs`] `$r` and the datapaths
/// `$datapaths`, with the scenario's own fields (`$field: $value`) and defaults for the rest.
macro_rules! scenario_opts {
    ($ty:ident, $r:expr, $datapaths:expr, { $($field:ident: $value:expr),* $(,)? }) => {
        $ty {
            runs: $r.runs,
            warmup: secs($r.warmup, "warmup")?,
            window: secs($r.window, "window")?,
            datapaths: $datapaths,
            gen_cpu: $r.gen_cpu,
            fwd_cpu: $r.fwd_cpu,
            nice: $r.nice.0,
            agent_bin: $r.agent_bin.clone(),
            agent_args: $r.agent_args.clone(),
            $($field: $value,)*
            ..$ty::default()
        }
    };
}

/// What the CLI does with a scenario's report.
trait ScenarioReport: serde::Serialize {
    fn table(&self) -> String;
    fn save(&self, dir: &Path) -> Result<PathBuf>;
    /// Something was measured (worth saving).
    fn measured(&self) -> bool;
    /// The scenario stopped early.
    fn failed(&self) -> bool;
}

macro_rules! scenario_report {
    ($ty:ty, |$s:ident| $measured:expr) => {
        impl ScenarioReport for $ty {
            fn table(&self) -> String {
                <$ty>::table(self)
            }
            fn save(&self, dir: &Path) -> Result<PathBuf> {
                <$ty>::save(self, dir)
            }
            fn measured(&self) -> bool {
                let $s = self;
                $measured
            }
            fn failed(&self) -> bool {
                self.error.is_some()
            }
        }
    };
}

scenario_report!(ServiceReport, |r| !r.runs.is_empty());
scenario_report!(RemotePodReport, |r| !(r.pps.is_empty() && r.tcp.is_empty()));
scenario_report!(PodPodReport, |r| !r.runs.is_empty());

impl ScenarioArgs {
    /// `--prefix` and the results directory into a scenario's options.
    fn apply(&self, prefix: &mut String, results_dir: &mut Option<PathBuf>) {
        if let Some(p) = &self.prefix {
            prefix.clone_from(p);
        }
        *results_dir = self.results_dir(results_dir.take());
    }

    /// Prints `report`, saves it in `dir` when it measured something; the exit code: 1 when
    /// the scenario stopped early.
    fn finish(&self, report: &impl ScenarioReport, dir: Option<&Path>) -> Result<i32> {
        self.print(report, || report.table())?;
        if let Some(dir) = dir
            && report.measured()
        {
            let path = report.save(dir)?;
            eprintln!("report written to {}", path.display());
        }
        Ok(if report.failed() { 1 } else { 0 })
    }
}

fn service_cmd(a: ServiceArgs) -> Result<i32> {
    let r = a.run;
    let mut opts = scenario_opts!(ServiceOpts, r, a.datapath, {
        frame_size: a.frame_size,
        flows: a.flows,
        rate: a.rate,
        services: a.services,
        iptables: a.iptables,
        new_flows: a.new_flows,
        new_flow_rate: match a.new_flow_rate {
            Rate::Pps(p) => p,
            Rate::Max => bail!("--new-flow-rate needs a number of flows per second"),
        },
    });
    r.apply(&mut opts.prefix, &mut opts.results_dir);
    let report = service::run(&opts)?;
    r.finish(&report, opts.results_dir.as_deref())
}

fn remote_pod_cmd(a: RemotePodArgs) -> Result<i32> {
    let r = a.run;
    let mut opts = scenario_opts!(RemotePodOpts, r, a.datapath, {
        frame_size: a.frame_size,
        flows: if a.no_pps { Vec::new() } else { a.flows },
        rate: a.rate,
        streams: if a.no_tcp { Vec::new() } else { a.streams },
        tcp_time: Duration::from_secs(a.tcp_time),
        gro_merge: !a.no_gro_merge,
    });
    r.apply(&mut opts.prefix, &mut opts.results_dir);
    let report = remote_pod::run(&opts)?;
    r.finish(&report, opts.results_dir.as_deref())
}

fn pod_pod_cmd(a: PodPodArgs) -> Result<i32> {
    let r = a.run;
    let mut opts = scenario_opts!(PodPodOpts, r, a.datapath, {
        frame_size: a.traffic.frame_size,
        flows: a.traffic.flows,
        rate: a.traffic.rate,
    });
    r.apply(&mut opts.prefix, &mut opts.results_dir);
    let report = pod_pod::run(&opts)?;
    r.finish(&report, opts.results_dir.as_deref())
}

fn gen_sink_cmd(a: GenSinkArgs) -> Result<i32> {
    let limit = match a.count {
        Some(0) => bail!("--count must be at least 1"),
        Some(n) => Limit::Count(n),
        None => Limit::Duration(secs(a.duration, "duration")?),
    };
    let _autogroup = crate::cpu::AutogroupNice::set_opt(a.nice.0)?;
    let pfx = format!("gs{}", std::process::id());
    let ns_a = Netns::create(&format!("{pfx}-a"))?;
    let ns_b = Netns::create(&format!("{pfx}-b"))?;
    veth_pair(&ns_a, "eth0", &ns_b, "eth0")?;
    let mac_b = ns_b.mac("eth0")?;
    let dst_ip = Ipv4Addr::new(10, 99, 0, 2);
    let sink = Sink::attach(
        Some(&ns_b.path()),
        "eth0",
        SinkFilter {
            mac: Some(mac_b),
            ip: Some(dst_ip),
            dst_port: Some(9),
        },
    )?;
    if let Some(cpu) = a.sink_cpu {
        let before = crate::cpu::napi_threads("eth0")?;
        ns_b.write_file("/sys/class/net/eth0/threaded", "1")?;
        let ours: Vec<i32> = crate::cpu::napi_threads("eth0")?
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if ours.is_empty() {
            bail!("no NAPI thread appeared for the sink's eth0");
        }
        for p in ours {
            sys::pin_to_cpu(p, cpu)?;
            if let Some(n) = a.nice.0 {
                sys::set_nice(p, n).with_context(|| format!("nice {n} on NAPI thread {p}"))?;
            }
        }
    }
    let mut cfg = GenConfig::new("eth0");
    cfg.netns = Some(ns_a.path());
    cfg.src_mac = ns_a.mac("eth0")?;
    cfg.dst_mac = mac_b;
    cfg.src_ip = Ipv4Addr::new(10, 99, 0, 1);
    cfg.dst_ip = dst_ip;
    cfg.dst_port = 9;
    cfg.flows = a.traffic.flows;
    cfg.frame_size = a.traffic.frame_size;
    cfg.cpu = a.cpu;
    cfg.nice = a.nice.0;
    let mut generator = Generator::new(cfg)?;
    let before = sink.counters()?;
    let rep = generator.run(limit, a.traffic.rate, &AtomicBool::new(false))?;
    // Let frames in flight land.
    std::thread::sleep(Duration::from_millis(200));
    let c = sink.counters()?.since(&before);
    let secs = rep.elapsed.as_secs_f64();
    println!(
        "generator: {} frames of {} bytes in {:.3} s = {:.3} Mpps ({} test-run calls, CPU {}; sink {})",
        rep.sent,
        a.traffic.frame_size,
        secs,
        rep.pps() / 1e6,
        rep.calls,
        a.cpu,
        a.sink_cpu.map_or_else(
            || "in the generator's softirq".to_string(),
            |c| format!("NAPI thread on CPU {c}")
        ),
    );
    println!(
        "sink: {} matched ({:.3} Mpps over the generator's time), {} missing, {} other frames, {} reordered, mean latency {}",
        c.matched,
        c.matched as f64 / secs.max(1e-9) / 1e6,
        rep.sent.saturating_sub(c.matched),
        c.packets - c.matched,
        c.reordered,
        c.mean_latency_ns()
            .map_or_else(|| "-".into(), |l| format!("{:.1} µs", l / 1e3)),
    );
    drop(sink);
    Ok(if sys::stop_requested() { 130 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("MAX"), Ok(Rate::Max));
        assert_eq!(parse_rate("500000"), Ok(Rate::Pps(500_000)));
        assert_eq!(parse_rate("500k"), Ok(Rate::Pps(500_000)));
        assert_eq!(parse_rate("1.5M"), Ok(Rate::Pps(1_500_000)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-3k").is_err());
    }

    #[test]
    fn nice_values() {
        assert_eq!(parse_nice("-20"), Ok(Nice(Some(-20))));
        assert_eq!(parse_nice("none"), Ok(Nice(None)));
        assert!(parse_nice("-21").is_err());
        assert!(parse_nice("x").is_err());
    }

    #[test]
    fn command_line_parses() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Top {
            #[command(subcommand)]
            cmd: BenchCmd,
        }
        let t = Top::try_parse_from([
            "bench",
            "pod-pod",
            "--runs",
            "1",
            "--datapath",
            "kernel",
            "--frame-size",
            "128",
            "--agent-arg=--poll=busy",
        ])
        .unwrap();
        match t.cmd {
            BenchCmd::PodPod(a) => {
                assert_eq!(a.run.runs, 1);
                assert_eq!(a.datapath, vec![Datapath::Kernel]);
                assert_eq!(a.traffic.frame_size, 128);
                assert_eq!(a.run.agent_args, vec!["--poll=busy".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Top::try_parse_from(["bench", "pod-pod", "--datapath", "ovs"]).is_err());
    }

    #[test]
    fn remote_pod_command_line() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Top {
            #[command(subcommand)]
            cmd: BenchCmd,
        }
        let t = Top::try_parse_from(["bench", "remote-pod"]).unwrap();
        match t.cmd {
            BenchCmd::RemotePod(a) => {
                assert_eq!(a.flows, vec![1, 64]);
                assert_eq!(a.streams, vec![1, 4]);
                assert_eq!(a.tcp_time, 10);
                assert_eq!(a.run.runs, 3);
                assert_eq!(
                    a.datapath,
                    vec![remote_pod::Datapath::Kernel, remote_pod::Datapath::Xdplane]
                );
                assert_eq!(a.run.nice, Nice(Some(-20)));
            }
            other => panic!("{other:?}"),
        }
        let t = Top::try_parse_from([
            "bench",
            "remote-pod",
            "--flows",
            "8",
            "--streams",
            "2,16",
            "--tcp-time",
            "3",
            "--no-pps",
            "--datapath",
            "xdplane",
            "--agent-arg=--poll=busy",
        ])
        .unwrap();
        match t.cmd {
            BenchCmd::RemotePod(a) => {
                assert_eq!(a.flows, vec![8]);
                assert!(a.no_pps && !a.no_tcp);
                assert_eq!(a.streams, vec![2, 16]);
                assert_eq!(a.tcp_time, 3);
                assert_eq!(a.datapath, vec![remote_pod::Datapath::Xdplane]);
                assert_eq!(a.run.agent_args, vec!["--poll=busy".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Top::try_parse_from(["bench", "remote-pod", "--datapath", "ovs"]).is_err());
    }

    #[test]
    fn service_command_line() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Top {
            #[command(subcommand)]
            cmd: BenchCmd,
        }
        match Top::try_parse_from(["bench", "service"]).unwrap().cmd {
            BenchCmd::Service(a) => {
                assert_eq!(a.services, vec![1, 10_000]);
                assert_eq!(a.flows, vec![64]);
                assert_eq!(a.iptables, IptablesBackend::System);
                assert_eq!(a.new_flows, 8192);
                assert_eq!(a.new_flow_rate, Rate::Pps(20_000));
                assert_eq!(a.run.runs, 3);
                assert_eq!(
                    a.datapath,
                    vec![remote_pod::Datapath::Kernel, remote_pod::Datapath::Xdplane]
                );
            }
            other => panic!("{other:?}"),
        }
        match Top::try_parse_from([
            "bench",
            "service",
            "--services",
            "1,100,10000",
            "--flows",
            "1,64",
            "--iptables",
            "legacy",
            "--datapath",
            "kernel",
            "--runs",
            "1",
        ])
        .unwrap()
        .cmd
        {
            BenchCmd::Service(a) => {
                assert_eq!(a.services, vec![1, 100, 10_000]);
                assert_eq!(a.flows, vec![1, 64]);
                assert_eq!(a.iptables, IptablesBackend::Legacy);
                assert_eq!(a.datapath, vec![remote_pod::Datapath::Kernel]);
                assert_eq!(a.run.runs, 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(Top::try_parse_from(["bench", "service", "--iptables", "ebpf"]).is_err());
    }
}
