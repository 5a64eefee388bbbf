//! Scenario `service`: pod A on node A → a ClusterIP → pod B on node B (over flannel-compatible
//! VXLAN), with N Services in the cluster (1 and 10,000 by default), the kernel with the
//! iptables rules kube-proxy would write vs xdplane, measured side by side in one run on the
//! same namespaces and veths, alternating (kernel, xdplane, kernel, …).
//!
//! The topology and both datapaths' node setup are `remote-pod`'s
//! ([`super::remote_pod`]); what changes is the destination and the Services:
//!
//! - The generator in pod A sends 64-byte UDP to `10.96.0.100:80`, the ClusterIP of Service
//!   `bench/target`, whose one endpoint is pod B (`10.244.2.2:5001`, on node B). The sink on
//!   pod B counts only frames that arrive DNATed (pod B's MAC, IP and port 5001).
//! - The cluster has N Services: N − 1 fillers (`bench/filler-00000` …, ClusterIPs from
//!   `10.100.0.1`, UDP 80, one endpoint each) and the target, last in model order and so
//!   last in `KUBE-SERVICES`: a new flow to it walks all N ClusterIP rules.
//! - **kernel**: both nodes as `remote-pod` sets them up (flannel.1 + cni0), plus on each
//!   node the `iptables-restore` input of [`xdplane_control::kubeproxy::iptables_restore`]
//!   for that node (cluster CIDR 10.244.0.0/16, loaded with the system's `iptables-restore`,
//!   or `iptables-legacy-restore` with [`IptablesBackend::Legacy`]).
//! - **xdplane**: `xdplane run` on both nodes as in `remote-pod`, the manifest directory also
//!   holding the same N Services and their EndpointSlices (YAML), so that the agents build
//!   the same service table.
//!
//! Both datapaths translate per connection: the kernel's nat rules run only for a flow's
//! first packet (conntrack keeps the binding), xdplane's service lookup and Maglev choice
//! only on a flow-table miss. With a fixed set of flows (64 by default) the entries are made
//! in the warm-up, and the window measures the per-packet path of established flows. Each
//! measurement uses its own range of source ports, so no entry survives from the previous
//! one. The cost per connection is measured apart: after the windows, a burst of
//! [`ServiceOpts::new_flows`] frames at [`ServiceOpts::new_flow_rate`], each from its own
//! source port, so that every frame is a new flow (for the kernel: a walk of
//! `KUBE-SERVICES` and a conntrack entry), counted as new flows delivered per second and CPU
//! of the datapath's tasks (threaded NAPI, agents) per new flow.
use super::common::{
    StateDir, agent_bin_if, background, check_cpus_and_runs, check_prefix_and_root, group_by,
    rate_label, run_rounds, sleep_checked, stat_of, table_head, write_background,
};
use super::remote_pod::{
    self, DST_PORT, DatapathGuard, Delivery, KernelFlannel, NETWORK, NODE_A, NODE_A_IP, NODE_B,
    NODE_B_IP, POD_A_IP, POD_B_IP, POD_CIDR_A, POD_CIDR_B, POD_MTU, PathWindow, RemotePodOpts,
    Topology, XdplaneNodes, measure_path_window,
};
use crate::cpu::{AutogroupNice, CpuTimes};
use crate::generator::{Generator, Limit, Rate};
use crate::netns::Netns;
use crate::report::{ReportHeader, Stat, save_json};
use crate::sink::Sink;
use crate::sys;
use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xdplane_control::kubeproxy::{self, KubeProxyOpts};
use xdplane_control::model::{
    Endpoint, EndpointPort, EndpointSlice, Model, Protocol, Service, ServicePort, ServiceType,
    TargetPort,
};

pub use super::remote_pod::Datapath;

/// Namespace of the bench's Services.
pub const NAMESPACE: &str = "bench";
/// The measured Service (sorts after every filler).
pub const TARGET: &str = "target";
/// Its ClusterIP and port (UDP); its endpoint is pod B on [`DST_PORT`].
pub const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 100);
pub const SERVICE_PORT: u16 = 80;
/// The fillers' ClusterIPs start after this address (`10.100.0.1`, …).
pub const FILLER_BASE: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 0);
/// The most Services a run may ask for (ClusterIPs `10.100.0.1` … stay inside 10.96.0.0/12).
pub const MAX_SERVICES: u32 = 500_000;
/// UDP source ports of the packets-per-second measurements, `[start, end)`.
const PPS_PORTS: (u32, u32) = (1024, 16_384);
/// UDP source ports of the new-flow bursts, `[start, end)`.
const NEW_FLOW_PORTS: (u32, u32) = (16_384, 65_536);
/// The most flows of a packets-per-second measurement.
pub const MAX_FLOWS: u32 = 8192;
/// The most flows of a new-flow burst (two bursts fit in [`NEW_FLOW_PORTS`]).
pub const MAX_NEW_FLOWS: u32 = 24_576;

/// Which `iptables-restore` loads the kube-proxy rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum IptablesBackend {
    /// The system's `iptables-restore` (Debian 12: iptables-nft, nf_tables in the kernel),
    /// which is what kube-proxy uses on such a host.
    System,
    /// `iptables-legacy-restore` (x_tables).
    Legacy,
}

impl IptablesBackend {
    fn restore(self) -> &'static str {
        match self {
            IptablesBackend::System => "iptables-restore",
            IptablesBackend::Legacy => "iptables-legacy-restore",
        }
    }
    fn iptables(self) -> &'static str {
        match self {
            IptablesBackend::System => "iptables",
            IptablesBackend::Legacy => "iptables-legacy",
        }
    }
}

/// Options of the scenario.
#[derive(Debug, Clone)]
pub struct ServiceOpts {
    /// Namespace prefix (`<prefix>-gen`, `-n1`, `-n2`, `-sink`) and state directory name.
    pub prefix: String,
    /// Rounds: each (datapath, Service count) is set up and measured this many times.
    pub runs: usize,
    pub warmup: Duration,
    pub window: Duration,
    pub frame_size: u16,
    /// Flow counts (distinct UDP source ports).
    pub flows: Vec<u32>,
    pub rate: Rate,
    /// Numbers of Services in the cluster (the target included).
    pub services: Vec<u32>,
    pub datapaths: Vec<Datapath>,
    pub gen_cpu: usize,
    pub fwd_cpu: usize,
    pub nice: Option<i32>,
    pub agent_bin: Option<PathBuf>,
    pub agent_args: Vec<String>,
    pub results_dir: Option<PathBuf>,
    pub iptables: IptablesBackend,
    /// Flows of the new-flow burst after the packets-per-second windows of each setup:
    /// exactly this many frames, each the first of its flow (0: no burst).
    pub new_flows: u32,
    /// Rate of the new-flow burst, frames (= new flows) per second.
    pub new_flow_rate: u64,
}

impl Default for ServiceOpts {
    fn default() -> Self {
        ServiceOpts {
            prefix: format!("sv{}", std::process::id()),
            runs: 3,
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(3),
            frame_size: 64,
            flows: vec![64],
            rate: Rate::Max,
            services: vec![1, 10_000],
            datapaths: vec![Datapath::Kernel, Datapath::Xdplane],
            gen_cpu: 0,
            fwd_cpu: 1,
            nice: Some(-20),
            agent_bin: None,
            agent_args: Vec::new(),
            results_dir: Some(crate::scenarios::pod_pod::default_results_dir()),
            iptables: IptablesBackend::System,
            new_flows: 8192,
            new_flow_rate: 20_000,
        }
    }
}

/// The bench's Services and EndpointSlices: `services − 1` fillers and the target, every one
/// UDP port 80 → `10.244.2.2:5001` (pod B, on node B), without selector (the slices are
/// given).
pub fn bench_model(services: u32) -> Result<Model> {
    if services == 0 || services > MAX_SERVICES {
        bail!("the number of Services must be 1..={MAX_SERVICES}, not {services}");
    }
    let mut m = Model::default();
    let mut add = |name: String, ip: Ipv4Addr| {
        let svc = Service {
            cluster_ips: vec![ip],
            ports: vec![ServicePort {
                name: None,
                protocol: Protocol::Udp,
                port: SERVICE_PORT,
                target_port: TargetPort::Number(DST_PORT),
                node_port: None,
            }],
            ..Service::bare(NAMESPACE.into(), name.clone(), ServiceType::ClusterIP)
        };
        let slice = EndpointSlice {
            namespace: NAMESPACE.into(),
            name: format!("{name}-1"),
            service: name.clone(),
            ports: vec![EndpointPort {
                name: None,
                protocol: Protocol::Udp,
                port: Some(DST_PORT),
            }],
            endpoints: vec![Endpoint {
                addresses: vec![POD_B_IP],
                ready: true,
                serving: true,
                terminating: false,
                node_name: Some(NODE_B.into()),
            }],
        };
        m.endpoint_slices
            .insert((NAMESPACE.into(), slice.name.clone()), slice);
        m.services.insert((NAMESPACE.into(), name), svc);
    };
    for i in 0..services - 1 {
        add(format!("filler-{i:05}"), filler_ip(i));
    }
    add(TARGET.into(), CLUSTER_IP);
    Ok(m)
}

/// ClusterIP of filler `i`.
pub fn filler_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(FILLER_BASE) + 1 + i)
}

/// The model's Services and EndpointSlices as Kubernetes manifests (one YAML stream per
/// kind, JSON-style flow documents: `bench-services.yaml`, `bench-endpointslices.yaml`, not
/// the lab's reserved `endpointslices.yaml`), plus the `bench` Namespace, into `dir`.
pub fn write_service_manifests(dir: &Path, model: &Model) -> Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ns = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE},
    });
    std::fs::write(dir.join("namespace-bench.yaml"), format!("{ns}\n"))
        .context("writing namespace-bench.yaml")?;
    let proto = |p: Protocol| match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    };
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(dir.join("bench-services.yaml"))
            .context("creating bench-services.yaml")?,
    );
    for svc in model.services.values() {
        let ports: Vec<serde_json::Value> = svc
            .ports
            .iter()
            .map(|p| {
                let target = match &p.target_port {
                    TargetPort::Number(n) => serde_json::json!(n),
                    TargetPort::Name(s) => serde_json::json!(s),
                };
                let mut v = serde_json::json!({
                    "protocol": proto(p.protocol), "port": p.port, "targetPort": target,
                });
                if let Some(n) = &p.name {
                    v["name"] = serde_json::json!(n);
                }
                v
            })
            .collect();
        let ips: Vec<String> = svc.cluster_ips.iter().map(|i| i.to_string()).collect();
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": svc.name, "namespace": svc.namespace},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": ips.first(),
                "clusterIPs": ips,
                "ports": ports,
            },
        });
        writeln!(out, "---\n{doc}").context("writing bench-services.yaml")?;
    }
    out.flush().context("writing bench-services.yaml")?;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(dir.join("bench-endpointslices.yaml"))
            .context("creating bench-endpointslices.yaml")?,
    );
    for s in model.endpoint_slices.values() {
        let ports: Vec<serde_json::Value> = s
            .ports
            .iter()
            .map(|p| {
                let mut v = serde_json::json!({"protocol": proto(p.protocol), "port": p.port});
                if let Some(n) = &p.name {
                    v["name"] = serde_json::json!(n);
                }
                v
            })
            .collect();
        let eps: Vec<serde_json::Value> = s
            .endpoints
            .iter()
            .map(|e| {
                let mut v = serde_json::json!({
                    "addresses": e.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
                });
                if let Some(n) = &e.node_name {
                    v["nodeName"] = serde_json::json!(n);
                }
                v
            })
            .collect();
        let doc = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": s.name,
                "namespace": s.namespace,
                "labels": {
                    "kubernetes.io/service-name": s.service,
                    "endpointslice.kubernetes.io/managed-by": "xdplane-perf",
                },
            },
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": eps,
        });
        writeln!(out, "---\n{doc}").context("writing bench-endpointslices.yaml")?;
    }
    out.flush().context("writing bench-endpointslices.yaml")?;
    Ok(())
}

/// kube-proxy's options for the bench: flannel's Network as the cluster CIDR.
pub fn kube_proxy_opts() -> KubeProxyOpts {
    KubeProxyOpts {
        cluster_cidr: Some(NETWORK.parse().expect("NETWORK is a CIDR")),
        ..KubeProxyOpts::default()
    }
}

/// Counts of an `iptables-restore` input: (chains, rules) per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RuleCounts {
    pub nat_chains: usize,
    pub nat_rules: usize,
    pub filter_chains: usize,
    pub filter_rules: usize,
    /// Rules in `nat KUBE-SERVICES` (one per Service port with endpoints, + the NodePort jump).
    pub kube_services_rules: usize,
}

/// Counts chains (`:X`) and rules (`-A`) per table of an `iptables-restore` input.
pub fn count_rules(text: &str) -> RuleCounts {
    let mut c = RuleCounts::default();
    let mut table = "";
    for l in text.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = if t == "nat" { "nat" } else { "filter" };
            continue;
        }
        let nat = table == "nat";
        if l.starts_with(':') {
            if nat {
                c.nat_chains += 1;
            } else {
                c.filter_chains += 1;
            }
        } else if l.starts_with("-A ") {
            if nat {
                c.nat_rules += 1;
                if l.starts_with("-A KUBE-SERVICES ") {
                    c.kube_services_rules += 1;
                }
            } else {
                c.filter_rules += 1;
            }
        }
    }
    c
}

/// The rules of one Service count, for both nodes.
#[derive(Debug, Clone)]
struct RuleSet {
    node_a: PathBuf,
    node_b: PathBuf,
    counts: RuleCounts,
}

/// One packets-per-second measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceRun {
    pub datapath: Datapath,
    pub run: usize,
    pub services: u32,
    pub flows: u32,
    /// First UDP source port of this measurement's flows.
    pub src_port: u16,
    /// The window; `sink_pps` counts the frames the sink on pod B matched (DNATed to pod
    /// B:5001).
    #[serde(flatten)]
    pub window: PathWindow,
    pub mean_latency_us: Option<f64>,
    /// Seconds the datapath took to come up with this many Services (kernel: flannel and
    /// both nodes' `iptables-restore`; xdplane: both agents ready, pods attached, peers
    /// resolved) until the first frame reached pod B.
    pub setup_s: f64,
    /// Kernel: conntrack entries in node A's namespace after the window.
    pub node_a_conntrack: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceSummary {
    pub datapath: Datapath,
    pub services: u32,
    pub flows: u32,
    pub runs: usize,
    pub sink_mpps: Stat,
    pub ns_per_pkt_fwd_cpu: Stat,
    pub ns_per_pkt_both: Stat,
    pub ns_per_pkt_tasks: Stat,
    pub nodes_loss: Stat,
    pub setup_s: Stat,
}

/// xdplane median / kernel median at one Service count.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceRatio {
    pub services: u32,
    pub flows: u32,
    pub sink_pps: f64,
    pub ns_per_pkt_fwd_cpu: f64,
}

/// One datapath's median at the largest Service count / at the smallest.
#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    pub datapath: Datapath,
    pub flows: u32,
    pub services_from: u32,
    pub services_to: u32,
    pub sink_pps: f64,
    pub ns_per_pkt_fwd_cpu: f64,
}

/// One new-flow burst: every frame the first of its flow, so the kernel walks
/// `KUBE-SERVICES` and makes a conntrack entry (and xdplane looks the Service up, picks a
/// backend and inserts a flow) for each.
#[derive(Debug, Clone, Serialize)]
pub struct NewFlowRun {
    pub datapath: Datapath,
    pub run: usize,
    pub services: u32,
    pub new_flows: u32,
    pub src_port: u16,
    /// Seconds the generator took to send the burst.
    pub send_s: f64,
    pub sent: u64,
    /// New flows whose frame reached pod B DNATed.
    pub delivered: u64,
    /// `delivered / send_s`: new flows per second the datapath set up (what it could take
    /// when it drops part of the burst).
    pub delivered_per_s: f64,
    /// CPU ns of the datapath's own tasks (the node-side NAPI threads, plus both agents for
    /// xdplane) per delivered new flow: not disturbed by other work on the machine.
    pub ns_per_flow_tasks: f64,
    /// Busy ns of the forwarding CPU per delivered new flow (includes other work on the
    /// machine when the burst leaves the CPU idle).
    pub ns_per_flow_fwd_cpu: f64,
    pub node_a_conntrack: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewFlowSummary {
    pub datapath: Datapath,
    pub services: u32,
    pub runs: usize,
    pub delivered_per_s: Stat,
    pub ns_per_flow_tasks: Stat,
    pub ns_per_flow_fwd_cpu: Stat,
}

#[derive(Debug, Clone, Serialize)]
pub struct KubeProxyInfo {
    pub iptables_restore: String,
    pub iptables_version: String,
    pub cluster_cidr: String,
    /// Rule counts of node A's file, per Service count.
    pub rules: BTreeMap<u32, RuleCounts>,
}

/// The report: written as JSON, printed as a table.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    /// Scenario, date, command line and machine.
    #[serde(flatten)]
    pub header: ReportHeader,
    pub topology: String,
    pub layout: String,
    pub frame_size: u16,
    pub rate: String,
    pub warmup_s: f64,
    pub window_s: f64,
    pub runs_per_datapath: usize,
    pub kube_proxy: Option<KubeProxyInfo>,
    pub background_busy: [f64; 2],
    pub generator_cpu: usize,
    pub forwarding_cpu: usize,
    pub runs: Vec<ServiceRun>,
    pub summary: Vec<ServiceSummary>,
    pub ratio_xdplane_over_kernel: Vec<ServiceRatio>,
    pub scaling: Vec<Scaling>,
    /// The new-flow bursts (`new_flows` frames at `new_flow_rate`, each a new flow).
    pub new_flow_rate: u64,
    pub new_flow_runs: Vec<NewFlowRun>,
    pub new_flow_summary: Vec<NewFlowSummary>,
    pub error: Option<String>,
    #[serde(skip)]
    pub file_stamp: String,
}

impl ServiceReport {
    pub fn table(&self) -> String {
        let mut s = table_head(
            &format!(
                "service: pod A (node A) → ClusterIP {CLUSTER_IP}:{SERVICE_PORT}/UDP → pod B (node B) over VXLAN; kernel flannel + kube-proxy iptables rules vs xdplane on both nodes"
            ),
            &self.header.machine,
        );
        let _ = writeln!(s, "topology: {}", self.topology);
        let _ = writeln!(s, "layout: {}", self.layout);
        if let Some(k) = &self.kube_proxy {
            let _ = writeln!(
                s,
                "kube-proxy rules: {} ({}), cluster CIDR {}",
                k.iptables_restore, k.iptables_version, k.cluster_cidr
            );
            for (n, c) in &k.rules {
                let _ = writeln!(
                    s,
                    "  {n:>6} Services: nat {} chains / {} rules ({} in KUBE-SERVICES), filter {} chains / {} rules",
                    c.nat_chains,
                    c.nat_rules,
                    c.kube_services_rules,
                    c.filter_chains,
                    c.filter_rules
                );
            }
        }
        let (g, f) = (self.generator_cpu, self.forwarding_cpu);
        write_background(&mut s, g, f, self.background_busy);
        let _ = writeln!(
            s,
            "\n{}-byte UDP, rate {}, {:.1} s warm-up, {:.1} s windows",
            self.frame_size, self.rate, self.warmup_s, self.window_s
        );
        let _ = writeln!(
            s,
            "{:<8} {:>6} {:>5} {:>3} {:>9} {:>8} {:>8} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>7} {:>6}",
            "datapath",
            "svcs",
            "flows",
            "run",
            "sink Mpps",
            "A rx",
            "B eth0",
            "loss",
            &format!("CPU{g}%"),
            &format!("CPU{f}%"),
            &format!("ns/p c{f}"),
            "ns/p sum",
            "ns/p tsk",
            "setup s",
            "ct"
        );
        for r in &self.runs {
            let _ = writeln!(
                s,
                "{:<8} {:>6} {:>5} {:>3} {:>9.3} {:>8.3} {:>8.3} {:>6.1}% {:>6.1} {:>6.1} {:>8.0} {:>8.0} {:>8.0} {:>7.2} {:>6}",
                r.datapath.name(),
                r.services,
                r.flows,
                r.run,
                r.window.sink_pps / 1e6,
                r.window.node_a_rx_pps / 1e6,
                r.window.node_b_uplink_rx_pps / 1e6,
                r.window.nodes_loss * 100.0,
                r.window.gen_cpu_busy * 100.0,
                r.window.fwd_cpu_busy * 100.0,
                r.window.ns_per_pkt_fwd_cpu,
                r.window.ns_per_pkt_both,
                r.window.ns_per_pkt_tasks,
                r.setup_s,
                r.node_a_conntrack
                    .map_or_else(|| "-".to_string(), |c| c.to_string()),
            );
        }
        let _ = writeln!(
            s,
            "(A rx = received by vetha on node A, B eth0 = VXLAN received by node B, loss = share of A rx not delivered; ns/p = busy ns per delivered frame of CPU {f}, of both CPUs, of the datapath's tasks; setup = datapath up with that many Services until the first frame reached pod B; ct = conntrack entries in node A after the window)"
        );
        let _ = writeln!(s, "\nmedian [min–max] over the runs:");
        for m in &self.summary {
            let _ = writeln!(
                s,
                "{:<8} {:>6} Services, {:>2} flow(s): {:.3} Mpps [{:.3}–{:.3}], {:.0} ns/pkt on CPU {f} [{:.0}–{:.0}], {:.0} on both, loss {:.1} %, setup {:.2} s",
                m.datapath.name(),
                m.services,
                m.flows,
                m.sink_mpps.median,
                m.sink_mpps.min,
                m.sink_mpps.max,
                m.ns_per_pkt_fwd_cpu.median,
                m.ns_per_pkt_fwd_cpu.min,
                m.ns_per_pkt_fwd_cpu.max,
                m.ns_per_pkt_both.median,
                m.nodes_loss.median * 100.0,
                m.setup_s.median,
            );
        }
        for r in &self.ratio_xdplane_over_kernel {
            let _ = writeln!(
                s,
                "xdplane/kernel at {:>6} Services, {:>2} flow(s): throughput ×{:.2}, CPU {f} per packet ×{:.2}",
                r.services, r.flows, r.sink_pps, r.ns_per_pkt_fwd_cpu
            );
        }
        for c in &self.scaling {
            let _ = writeln!(
                s,
                "{:<8} {} → {} Services, {:>2} flow(s): throughput ×{:.3}, CPU {f} per packet ×{:.3}",
                c.datapath.name(),
                c.services_from,
                c.services_to,
                c.flows,
                c.sink_pps,
                c.ns_per_pkt_fwd_cpu
            );
        }
        if !self.new_flow_runs.is_empty() {
            let _ = writeln!(
                s,
                "\nnew flows: bursts of frames each from its own source port (a new flow) at {}/s",
                self.new_flow_rate
            );
            let _ = writeln!(
                s,
                "{:<8} {:>6} {:>3} {:>7} {:>7} {:>9} {:>11} {:>12} {:>8}",
                "datapath",
                "svcs",
                "run",
                "flows",
                "deliv",
                "flows/s",
                "ns/flow tsk",
                &format!("ns/flow c{f}"),
                "ct"
            );
            for r in &self.new_flow_runs {
                let _ = writeln!(
                    s,
                    "{:<8} {:>6} {:>3} {:>7} {:>7} {:>9.0} {:>11.0} {:>12.0} {:>8}",
                    r.datapath.name(),
                    r.services,
                    r.run,
                    r.new_flows,
                    r.delivered,
                    r.delivered_per_s,
                    r.ns_per_flow_tasks,
                    r.ns_per_flow_fwd_cpu,
                    r.node_a_conntrack
                        .map_or_else(|| "-".to_string(), |c| c.to_string()),
                );
            }
            let _ = writeln!(
                s,
                "(deliv = new flows whose frame reached pod B; flows/s = delivered per second of sending; ns/flow tsk = CPU of the datapath's tasks per delivered new flow; c{f} = busy ns of CPU {f} per delivered new flow, other work included)"
            );
            for m in &self.new_flow_summary {
                let _ = writeln!(
                    s,
                    "{:<8} {:>6} Services: {:.0} new flows/s [{:.0}–{:.0}], {:.0} ns per new flow in its tasks [{:.0}–{:.0}]",
                    m.datapath.name(),
                    m.services,
                    m.delivered_per_s.median,
                    m.delivered_per_s.min,
                    m.delivered_per_s.max,
                    m.ns_per_flow_tasks.median,
                    m.ns_per_flow_tasks.min,
                    m.ns_per_flow_tasks.max,
                );
            }
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "\nstopped early: {e}");
        }
        s
    }

    /// Writes `service-<date>.json` into `dir` and returns its path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        save_json(self, dir, "service", &self.file_stamp)
    }
}

fn check_opts(opts: &ServiceOpts) -> Result<()> {
    check_cpus_and_runs(opts.gen_cpu, opts.fwd_cpu, opts.runs, opts.datapaths.len())?;
    if opts.flows.is_empty() {
        bail!("nothing to measure: no flow count");
    }
    if let Some(f) = opts.flows.iter().find(|&&f| f == 0 || f > MAX_FLOWS) {
        bail!("flow count {f} out of range (1..={MAX_FLOWS})");
    }
    if opts.new_flows > MAX_NEW_FLOWS {
        bail!(
            "{} new flows per burst: at most {MAX_NEW_FLOWS}",
            opts.new_flows
        );
    }
    if opts.new_flows > 0 && !(100..=10_000_000).contains(&opts.new_flow_rate) {
        bail!("the new-flow rate must be 100..=10M per second");
    }
    if opts.services.is_empty() {
        bail!("no Service count given");
    }
    if let Some(n) = opts.services.iter().find(|&&n| n == 0 || n > MAX_SERVICES) {
        bail!("Service count {n} out of range (1..={MAX_SERVICES})");
    }
    if opts.window < Duration::from_millis(500) {
        bail!("a measuring window under 0.5 s is too short for /proc/stat (10 ms ticks)");
    }
    if opts.datapaths.contains(&Datapath::Kernel) {
        crate::netns::run(opts.iptables.restore(), &["--version"]).with_context(|| {
            format!(
                "{} is needed for the kernel datapath (apt-get install iptables)",
                opts.iptables.restore()
            )
        })?;
    }
    check_prefix_and_root("service", &opts.prefix, "1–40 letters, digits, - and _")
}

/// The first source port of measurement number `k` (0-based) of `span` flows in `region`:
/// consecutive measurements get disjoint port ranges, until the region wraps.
fn src_port_in(region: (u32, u32), k: usize, span: u32) -> u16 {
    let span = span.max(1);
    let windows = ((region.1 - region.0) / span).max(1);
    (region.0 + (k as u32 % windows) * span) as u16
}

/// The source port of packets-per-second measurement `k` with up to `max_flows` flows.
fn src_port_for(k: usize, max_flows: u32) -> u16 {
    src_port_in(PPS_PORTS, k, max_flows)
}

/// Runs the scenario; everything it creates is removed before it returns (also on error or
/// SIGINT/SIGTERM). A failure once measuring has started ends the run with what was
/// measured and the reason in [`ServiceReport::error`].
pub fn run(opts: &ServiceOpts) -> Result<ServiceReport> {
    check_opts(opts)?;
    let (header, file_stamp) = ReportHeader::now("service");
    let _autogroup = AutogroupNice::set_opt(opts.nice)?;
    let bench = Bench::new(opts)?;
    let mut generator = bench.generator()?;
    let background_busy = background(opts.gen_cpu, opts.fwd_cpu)?;
    let kube_proxy = if opts.datapaths.contains(&Datapath::Kernel) {
        Some(KubeProxyInfo {
            iptables_restore: opts.iptables.restore().into(),
            iptables_version: crate::netns::run(opts.iptables.iptables(), &["-V"])
                .map(|v| v.trim().to_string())
                .unwrap_or_default(),
            cluster_cidr: NETWORK.into(),
            rules: bench.rules.iter().map(|(n, r)| (*n, r.counts)).collect(),
        })
    } else {
        None
    };
    let nice = match opts.nice {
        Some(n) => {
            format!("; generator, NAPI threads, agents and this session's autogroup at nice {n}")
        }
        None => String::new(),
    };
    let mut report = ServiceReport {
        header,
        topology: format!(
            "pod A {POD_A_IP}/24 — veth — node A (eth0 {NODE_A_IP}/24, podCIDR {POD_CIDR_A}) — veth — node B (eth0 {NODE_B_IP}/24, podCIDR {POD_CIDR_B}) — veth — pod B {POD_B_IP}/24; pod MTU {POD_MTU}; VXLAN VNI 1 port 8472; Service {NAMESPACE}/{TARGET} {CLUSTER_IP}:{SERVICE_PORT}/UDP → {POD_B_IP}:{DST_PORT}, last of N Services (fillers from {} on, one endpoint each)",
            filler_ip(0)
        ),
        layout: format!(
            "generator (2 sender threads) on CPU {g}; threaded NAPI of vetha, both nodes' eth0 and vethb pinned to CPU {f}; both xdplane workers (--workers 1 --cores {f}) on CPU {f}; the same for both datapaths{nice}",
            g = opts.gen_cpu,
            f = opts.fwd_cpu
        ),
        frame_size: opts.frame_size,
        rate: rate_label(opts.rate),
        warmup_s: opts.warmup.as_secs_f64(),
        window_s: opts.window.as_secs_f64(),
        runs_per_datapath: opts.runs,
        kube_proxy,
        background_busy,
        generator_cpu: opts.gen_cpu,
        forwarding_cpu: opts.fwd_cpu,
        runs: Vec::new(),
        summary: Vec::new(),
        ratio_xdplane_over_kernel: Vec::new(),
        scaling: Vec::new(),
        new_flow_rate: opts.new_flow_rate,
        new_flow_runs: Vec::new(),
        new_flow_summary: Vec::new(),
        error: None,
        file_stamp,
    };
    let mut k = Counters::default();
    let setups: Vec<(Datapath, u32)> = opts
        .datapaths
        .iter()
        .flat_map(|&dp| opts.services.iter().map(move |&n| (dp, n)))
        .collect();
    let error = run_rounds(
        "service",
        opts.runs,
        &setups,
        |&(dp, n)| format!("{} with {n} Services,", dp.name()),
        |&(dp, n), i| bench.round(&mut generator, dp, n, i, &mut k, &mut report),
    );
    report.error = error;
    summarize(&mut report);
    drop(generator);
    drop(bench);
    Ok(report)
}

/// What [`deliver_count`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServiceDelivery {
    pub delivery: Delivery,
    /// Kernel: conntrack entries in node A's namespace after the send.
    pub node_a_conntrack: Option<u64>,
}

/// Builds the topology and `dp` with `services` Services, sends exactly `count` frames from
/// pod A to the ClusterIP at `rate` over `flows` new flows (after a probe flow has reached
/// pod B, so that the nodes have resolved each other), counts what reaches pod B DNATed,
/// and removes everything (also on error): the correctness check behind the measurements.
pub fn deliver_count(
    opts: &ServiceOpts,
    dp: Datapath,
    services: u32,
    flows: u32,
    count: u64,
    rate: Rate,
) -> Result<ServiceDelivery> {
    let mut o = opts.clone();
    o.datapaths = vec![dp];
    o.services = vec![services];
    o.flows = vec![flows];
    check_opts(&o)?;
    if count == 0 {
        bail!("count must be at least 1");
    }
    let _autogroup = AutogroupNice::set_opt(o.nice)?;
    let bench = Bench::new(&o)?;
    let mut generator = bench.generator()?;
    let up = bench.datapath_up(dp, services)?;
    let r = (|| {
        let topo = &bench.topo;
        topo.flush_pod_neighbours()?;
        let sink = topo.attach_sink()?;
        generator.update(|c| {
            c.dst_mac = up.guard().dst_mac();
            c.flows = flows;
            c.src_port = src_port_for(0, flows);
        })?;
        topo.pin_napi(o.fwd_cpu, o.nice)?;
        // A probe flow first: the nodes resolve each other's underlay address (ARP) on it,
        // so the count measures the Service path (the counted flows are still new).
        bench.wait_delivering(&sink, &mut generator, Duration::from_secs(30))?;
        sleep_checked(Duration::from_millis(100))?;
        let (path0, sink0) = (topo.path()?, sink.counters()?);
        let sent0 = generator.sent()?;
        let rep = generator.start(Limit::Count(count), rate)?.wait()?;
        sleep_checked(Duration::from_millis(500))?;
        let (path1, sink1) = (topo.path()?, sink.counters()?);
        let sent = generator.sent()? - sent0;
        if sent != rep.sent {
            bail!(
                "generator counters disagree: {sent} by the map, {} by the run",
                rep.sent
            );
        }
        Ok(ServiceDelivery {
            delivery: Delivery {
                sent,
                sink: sink1.since(&sink0),
                node_a_rx: path1.node_a_rx.saturating_sub(path0.node_a_rx),
                node_b_uplink_rx: path1.node_b_rx.saturating_sub(path0.node_b_rx),
                dropped: path1.drops_since(&path0),
            },
            node_a_conntrack: up.conntrack_count(&topo.n1),
        })
    })();
    let stopped = up.stop();
    let d = r?;
    stopped?;
    drop(generator);
    drop(bench);
    Ok(d)
}

/// Everything a run keeps from start to end. Field order is drop order: the namespaces go
/// before the state directory.
struct Bench<'o> {
    topo: Topology,
    state: StateDir,
    opts: &'o ServiceOpts,
    agent_bin: Option<PathBuf>,
    /// Manifest directory per Service count (xdplane).
    manifests: BTreeMap<u32, PathBuf>,
    /// Rule files per Service count (kernel).
    rules: BTreeMap<u32, RuleSet>,
    /// `remote-pod`'s options for its node setup (CPU, nice, agent arguments).
    rp: RemotePodOpts,
    /// Datapath setups so far (names the agents' sockets and logs).
    setups: std::cell::Cell<usize>,
}

/// A datapath up with some Services; torn down by [`DatapathUp::stop`] (or on drop).
struct DatapathUp<'a> {
    /// Kernel: the node namespaces whose kube-proxy rules are flushed on stop.
    rules_in: Vec<&'a Netns>,
    backend: IptablesBackend,
    /// `None` once stopped.
    guard: Option<DatapathGuard<'a>>,
}

impl<'a> DatapathUp<'a> {
    fn guard(&self) -> &DatapathGuard<'a> {
        self.guard
            .as_ref()
            .expect("a running datapath has its guard")
    }

    fn flush_rules(&mut self) -> Result<()> {
        let mut errs = Vec::new();
        for ns in self.rules_in.drain(..) {
            for table in ["nat", "filter"] {
                for op in ["-F", "-X"] {
                    if let Err(e) = ns.exec(self.backend.iptables(), &["-w", "-t", table, op]) {
                        errs.push(format!("{} {table} {op}: {e:#}", ns.name()));
                    }
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(
                "flushing the kube-proxy rules: {}",
                errs.join("; ")
            ))
        }
    }

    fn stop(mut self) -> Result<()> {
        let flushed = self.flush_rules();
        let stopped = match self.guard.take() {
            Some(g) => g.stop(),
            None => Ok(()),
        };
        flushed?;
        stopped
    }

    /// Conntrack entries in `ns` (kernel datapath only).
    fn conntrack_count(&self, ns: &Netns) -> Option<u64> {
        if !matches!(self.guard, Some(DatapathGuard::Kernel(_))) {
            return None;
        }
        ns.read_file("/proc/sys/net/netfilter/nf_conntrack_count")
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

impl Drop for DatapathUp<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.flush_rules() {
            eprintln!("warning: {e:#}");
        }
    }
}

impl<'o> Bench<'o> {
    fn new(opts: &'o ServiceOpts) -> Result<Bench<'o>> {
        let agent_bin = agent_bin_if(
            opts.datapaths.contains(&Datapath::Xdplane),
            opts.agent_bin.as_deref(),
        )?;
        let state = StateDir::create(&opts.prefix)?;
        let topo = Topology::build(&opts.prefix, true)?;
        let mut manifests = BTreeMap::new();
        let mut rules = BTreeMap::new();
        let kp = kube_proxy_opts();
        for &n in &opts.services {
            let model = bench_model(n)?;
            if opts.datapaths.contains(&Datapath::Xdplane) {
                let dir = state.path.join(format!("manifests-{n}"));
                remote_pod::write_manifests(&dir, topo.mac_uplink_a, topo.mac_uplink_b)?;
                write_service_manifests(&dir, &model)?;
                manifests.insert(n, dir);
            }
            if opts.datapaths.contains(&Datapath::Kernel) {
                let a = kubeproxy::iptables_restore(&model, NODE_A, &kp);
                let b = kubeproxy::iptables_restore(&model, NODE_B, &kp);
                let counts = count_rules(&a);
                let (pa, pb) = (
                    state.path.join(format!("kube-proxy-{NODE_A}-{n}.rules")),
                    state.path.join(format!("kube-proxy-{NODE_B}-{n}.rules")),
                );
                std::fs::write(&pa, a).with_context(|| format!("writing {}", pa.display()))?;
                std::fs::write(&pb, b).with_context(|| format!("writing {}", pb.display()))?;
                rules.insert(
                    n,
                    RuleSet {
                        node_a: pa,
                        node_b: pb,
                        counts,
                    },
                );
            }
        }
        let rp = RemotePodOpts {
            prefix: opts.prefix.clone(),
            runs: opts.runs,
            gen_cpu: opts.gen_cpu,
            fwd_cpu: opts.fwd_cpu,
            nice: opts.nice,
            rate: opts.rate,
            warmup: opts.warmup,
            window: opts.window,
            frame_size: opts.frame_size,
            agent_bin: agent_bin.clone(),
            agent_args: opts.agent_args.clone(),
            results_dir: None,
            ..RemotePodOpts::default()
        };
        Ok(Bench {
            topo,
            state,
            opts,
            agent_bin,
            manifests,
            rules,
            rp,
            setups: std::cell::Cell::new(1),
        })
    }

    fn generator(&self) -> Result<Generator> {
        self.topo
            .pod_a_generator(&self.rp, (CLUSTER_IP, SERVICE_PORT), PPS_PORTS.0 as u16, 1)
    }

    /// Sets up `dp` with `n` Services on both nodes.
    fn datapath_up(&self, dp: Datapath, n: u32) -> Result<DatapathUp<'_>> {
        match dp {
            Datapath::Kernel => {
                let rs = self
                    .rules
                    .get(&n)
                    .context("no rules for this Service count")?;
                let mut up = DatapathUp {
                    rules_in: Vec::new(),
                    backend: self.opts.iptables,
                    guard: Some(DatapathGuard::Kernel(KernelFlannel::up(&self.topo)?)),
                };
                for (ns, file) in [(&self.topo.n1, &rs.node_a), (&self.topo.n2, &rs.node_b)] {
                    // Registered first: a half-loaded table is flushed too.
                    up.rules_in.push(ns);
                    let f = file.display().to_string();
                    ns.exec(self.opts.iptables.restore(), &["--wait=10", &f])
                        .with_context(|| {
                            format!("loading the kube-proxy rules into {}", ns.name())
                        })?;
                }
                Ok(up)
            }
            Datapath::Xdplane => {
                let dir = self
                    .manifests
                    .get(&n)
                    .context("no manifests for this Service count")?;
                Ok(DatapathUp {
                    rules_in: Vec::new(),
                    backend: self.opts.iptables,
                    guard: Some(DatapathGuard::Xdplane(XdplaneNodes::up(
                        &self.topo,
                        self.agent_bin.as_deref().context("no agent binary")?,
                        dir,
                        &self.state.path,
                        &self.rp,
                        // A fresh socket and log per setup.
                        self.setups.replace(self.setups.get() + 1),
                    )?)),
                })
            }
        }
    }

    /// Sends short bursts until a frame reaches pod B through the ClusterIP (at most
    /// `timeout`): the datapath has the Services. The probe uses the source port just
    /// below the measurement's, so its flow is not one of the measured.
    fn wait_delivering(
        &self,
        sink: &Sink,
        generator: &mut Generator,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let measured = generator.config().clone();
        generator.update(|c| {
            c.flows = 1;
            c.src_port = measured.src_port.saturating_sub(1).max(1);
        })?;
        let r = (|| loop {
            let before = sink.counters()?.matched;
            generator
                .start(Limit::Count(100), Rate::Pps(10_000))?
                .wait()?;
            sleep_checked(Duration::from_millis(100))?;
            if sink.counters()?.matched > before {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("no frame sent to the ClusterIP reached pod B within {timeout:?}");
            }
        })();
        generator.update(|c| {
            c.flows = measured.flows;
            c.src_port = measured.src_port;
        })?;
        r
    }

    fn round(
        &self,
        generator: &mut Generator,
        dp: Datapath,
        n: u32,
        i: usize,
        k: &mut Counters,
        report: &mut ServiceReport,
    ) -> Result<()> {
        let t0 = Instant::now();
        let up = self.datapath_up(dp, n)?;
        let r = self.measure_round(&up, generator, dp, n, i, k, t0, report);
        let r = r.map_err(|e| {
            let logs = up.guard().log_tails();
            if logs.is_empty() || sys::stop_requested() {
                e
            } else {
                anyhow!("{e:#}\n{logs}")
            }
        });
        let stopped = up.stop();
        r?;
        stopped
    }

    #[allow(clippy::too_many_arguments)]
    fn measure_round(
        &self,
        up: &DatapathUp<'_>,
        generator: &mut Generator,
        dp: Datapath,
        n: u32,
        i: usize,
        k: &mut Counters,
        t0: Instant,
        report: &mut ServiceReport,
    ) -> Result<()> {
        let opts = self.opts;
        let topo = &self.topo;
        topo.flush_pod_neighbours()?;
        let sink = topo.attach_sink()?;
        let max_flows = opts.flows.iter().copied().max().unwrap_or(1);
        let dst = up.guard().dst_mac();
        generator.update(|c| {
            c.dst_mac = dst;
            c.src_port = src_port_for(k.pps, max_flows);
        })?;
        self.wait_delivering(&sink, generator, Duration::from_secs(30))?;
        let setup_s = t0.elapsed().as_secs_f64();
        let agents = up.guard().agent_pids();
        for &flows in &opts.flows {
            let src_port = src_port_for(k.pps, max_flows);
            k.pps += 1;
            generator.update(|c| {
                c.flows = flows;
                c.src_port = src_port;
            })?;
            let (window, c) =
                measure_path_window(&self.rp, topo, generator, &sink, &agents, "pod B")?;
            let r = ServiceRun {
                datapath: dp,
                run: i,
                services: n,
                flows,
                src_port,
                window,
                mean_latency_us: c.mean_latency_ns().map(|l| l / 1e3),
                setup_s,
                node_a_conntrack: up.conntrack_count(&topo.n1),
            };
            eprintln!(
                "service: {} with {n} Services, round {i}, {flows} flow(s): {:.3} Mpps delivered, {:.0} ns/pkt on CPU {}",
                dp.name(),
                r.window.sink_pps / 1e6,
                r.window.ns_per_pkt_fwd_cpu,
                opts.fwd_cpu
            );
            report.runs.push(r);
        }
        if opts.new_flows > 0 {
            let r = self.new_flow_burst(up, generator, &sink, dp, n, i, k, &agents)?;
            eprintln!(
                "service: {} with {n} Services, round {i}, {} new flows at {}/s: {} delivered, {:.0} new flows/s, {:.0} ns per new flow in the datapath's tasks",
                dp.name(),
                r.new_flows,
                opts.new_flow_rate,
                r.delivered,
                r.delivered_per_s,
                r.ns_per_flow_tasks
            );
            report.new_flow_runs.push(r);
        }
        Ok(())
    }

    /// Sends `new_flows` frames at `new_flow_rate`, each from its own source port (a new
    /// flow), and measures what the datapath did with them.
    #[allow(clippy::too_many_arguments)]
    fn new_flow_burst(
        &self,
        up: &DatapathUp<'_>,
        generator: &mut Generator,
        sink: &Sink,
        dp: Datapath,
        n: u32,
        i: usize,
        k: &mut Counters,
        agents: &[i32],
    ) -> Result<NewFlowRun> {
        let opts = self.opts;
        let topo = &self.topo;
        // Kernel bursts get disjoint port ranges: the node namespaces (and their conntrack
        // tables) live for the whole run. xdplane's flow tables are new with every setup.
        let src_port = src_port_in(NEW_FLOW_PORTS, k.kernel_new_flows, opts.new_flows);
        if dp == Datapath::Kernel {
            k.kernel_new_flows += 1;
        }
        generator.update(|c| {
            c.flows = opts.new_flows;
            c.src_port = src_port;
        })?;
        let mut tasks = topo.pin_napi(opts.fwd_cpu, opts.nice)?;
        tasks.extend_from_slice(agents);
        // Frames still queued from the windows before (full rings) land first: the sink
        // must have seen nothing new for 300 ms.
        let quiet_by = Instant::now() + Duration::from_secs(10);
        let mut last = sink.counters()?.packets;
        loop {
            sleep_checked(Duration::from_millis(300))?;
            let now = sink.counters()?.packets;
            if now == last {
                break;
            }
            if Instant::now() > quiet_by {
                bail!("pod B still receives frames 10 s after the generator stopped");
            }
            last = now;
        }
        let task_ns = |tasks: &[i32]| -> Result<u64> {
            let mut t = 0;
            for &p in tasks {
                t += crate::cpu::task_cpu_ns(p)?;
            }
            Ok(t)
        };
        let (sink0, cpu0, task0) = (sink.counters()?, CpuTimes::read()?, task_ns(&tasks)?);
        let rep = generator
            .start(
                Limit::Count(u64::from(opts.new_flows)),
                Rate::Pps(opts.new_flow_rate),
            )?
            .wait()?;
        // What is still in the rings lands.
        sleep_checked(Duration::from_millis(300))?;
        let (sink1, cpu1, task1) = (sink.counters()?, CpuTimes::read()?, task_ns(&tasks)?);
        let delivered = sink1.since(&sink0).matched;
        if delivered == 0 {
            bail!("no frame of the new-flow burst reached pod B");
        }
        let d = delivered as f64;
        let send_s = rep.elapsed.as_secs_f64();
        Ok(NewFlowRun {
            datapath: dp,
            run: i,
            services: n,
            new_flows: opts.new_flows,
            src_port,
            send_s,
            sent: rep.sent,
            delivered,
            delivered_per_s: d / send_s.max(1e-9),
            ns_per_flow_tasks: task1.saturating_sub(task0) as f64 / d,
            ns_per_flow_fwd_cpu: cpu1.busy_ns_since(&cpu0, opts.fwd_cpu)? as f64 / d,
            node_a_conntrack: up.conntrack_count(&topo.n1),
        })
    }
}

/// Which port ranges the measurements so far have used.
#[derive(Debug, Default)]
struct Counters {
    /// Packets-per-second measurements.
    pps: usize,
    /// Kernel new-flow bursts.
    kernel_new_flows: usize,
}

fn summarize(report: &mut ServiceReport) {
    let groups = group_by(&report.runs, |r| (r.services, r.flows, r.datapath));
    report.summary.clear();
    for ((services, flows, dp), rs) in &groups {
        report.summary.push(ServiceSummary {
            datapath: *dp,
            services: *services,
            flows: *flows,
            runs: rs.len(),
            sink_mpps: stat_of(rs, |r| r.window.sink_pps / 1e6),
            ns_per_pkt_fwd_cpu: stat_of(rs, |r| r.window.ns_per_pkt_fwd_cpu),
            ns_per_pkt_both: stat_of(rs, |r| r.window.ns_per_pkt_both),
            ns_per_pkt_tasks: stat_of(rs, |r| r.window.ns_per_pkt_tasks),
            nodes_loss: stat_of(rs, |r| r.window.nodes_loss),
            setup_s: stat_of(rs, |r| r.setup_s),
        });
    }
    let find = |services: u32, flows: u32, dp: Datapath| {
        report
            .summary
            .iter()
            .find(|s| s.services == services && s.flows == flows && s.datapath == dp)
    };
    let mut ratios = Vec::new();
    for s in report
        .summary
        .iter()
        .filter(|s| s.datapath == Datapath::Kernel)
    {
        if let Some(x) = find(s.services, s.flows, Datapath::Xdplane) {
            ratios.push(ServiceRatio {
                services: s.services,
                flows: s.flows,
                sink_pps: x.sink_mpps.median / s.sink_mpps.median,
                ns_per_pkt_fwd_cpu: x.ns_per_pkt_fwd_cpu.median / s.ns_per_pkt_fwd_cpu.median,
            });
        }
    }
    let mut scaling = Vec::new();
    let mut keys: Vec<(Datapath, u32)> = report
        .summary
        .iter()
        .map(|s| (s.datapath, s.flows))
        .collect();
    keys.sort();
    keys.dedup();
    for (dp, flows) in keys {
        let mine: Vec<&ServiceSummary> = report
            .summary
            .iter()
            .filter(|s| s.datapath == dp && s.flows == flows)
            .collect();
        let (Some(lo), Some(hi)) = (
            mine.iter().min_by_key(|s| s.services),
            mine.iter().max_by_key(|s| s.services),
        ) else {
            continue;
        };
        if lo.services == hi.services {
            continue;
        }
        scaling.push(Scaling {
            datapath: dp,
            flows,
            services_from: lo.services,
            services_to: hi.services,
            sink_pps: hi.sink_mpps.median / lo.sink_mpps.median,
            ns_per_pkt_fwd_cpu: hi.ns_per_pkt_fwd_cpu.median / lo.ns_per_pkt_fwd_cpu.median,
        });
    }
    report.ratio_xdplane_over_kernel = ratios;
    report.scaling = scaling;
    let nf = group_by(&report.new_flow_runs, |r| (r.services, r.datapath));
    report.new_flow_summary = nf
        .iter()
        .map(|((services, dp), rs)| NewFlowSummary {
            datapath: *dp,
            services: *services,
            runs: rs.len(),
            delivered_per_s: stat_of(rs, |r| r.delivered_per_s),
            ns_per_flow_tasks: stat_of(rs, |r| r.ns_per_flow_tasks),
            ns_per_flow_fwd_cpu: stat_of(rs, |r| r.ns_per_flow_fwd_cpu),
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_model_puts_the_target_last() {
        let m = bench_model(3).unwrap();
        let names: Vec<&str> = m.services.values().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["filler-00000", "filler-00001", "target"]);
        assert_eq!(m.endpoint_slices.len(), 3);
        assert_eq!(
            m.services[&(NAMESPACE.to_string(), TARGET.to_string())].cluster_ips,
            vec![CLUSTER_IP]
        );
        assert_eq!(filler_ip(0), Ipv4Addr::new(10, 100, 0, 1));
        assert_eq!(filler_ip(9_998), Ipv4Addr::new(10, 100, 39, 15));
        assert!(bench_model(0).is_err());
        assert!(bench_model(MAX_SERVICES + 1).is_err());
        // The last filler of the largest run is still inside the service range 10.96.0.0/12.
        let last = u32::from(filler_ip(MAX_SERVICES - 2));
        assert_eq!(last >> 20, u32::from(Ipv4Addr::new(10, 96, 0, 0)) >> 20);
    }

    #[test]
    fn kube_proxy_rules_walk_every_service_before_the_target() {
        let m = bench_model(10_000).unwrap();
        let text = kubeproxy::iptables_restore(&m, NODE_A, &kube_proxy_opts());
        let c = count_rules(&text);
        // 10,000 ClusterIP rules, then the NodePort jump.
        assert_eq!(c.kube_services_rules, 10_001);
        let svc: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .collect();
        assert!(
            svc[9_999].contains(&format!("-d {CLUSTER_IP} --dport {SERVICE_PORT} ")),
            "{}",
            svc[9_999]
        );
        assert!(svc[10_000].ends_with("-j KUBE-NODEPORTS"));
        // Per Service: SVC (masquerade from outside the cluster + 1 endpoint), SEP (2).
        assert_eq!(c.nat_rules, 10_001 + 4 * 10_000 + 4 + 3);
        assert!(text.contains(&format!("-j DNAT --to-destination {POD_B_IP}:{DST_PORT}")));
    }

    #[test]
    fn rule_counts() {
        let t = "*filter\n:A - [0:0]\n-A A -j DROP\nCOMMIT\n*nat\n:KUBE-SERVICES - [0:0]\n:B - [0:0]\n-A KUBE-SERVICES -j B\n-A B -j RETURN\nCOMMIT\n";
        assert_eq!(
            count_rules(t),
            RuleCounts {
                nat_chains: 2,
                nat_rules: 2,
                filter_chains: 1,
                filter_rules: 1,
                kube_services_rules: 1,
            }
        );
    }

    #[test]
    fn source_ports_do_not_repeat_between_measurements() {
        assert_eq!(src_port_for(0, 64), 1024);
        assert_eq!(src_port_for(1, 64), 1088);
        // 240 measurements of 64 flows before the range wraps.
        assert_eq!(src_port_for(240, 64), 1024);
        for k in 0..900 {
            let p = u32::from(src_port_for(k, 64));
            assert!(p >= PPS_PORTS.0 && p + 64 <= PPS_PORTS.1, "{k}: {p}");
            let p = u32::from(src_port_for(k, MAX_FLOWS));
            assert!(p >= PPS_PORTS.0 && p + MAX_FLOWS <= PPS_PORTS.1, "{k}: {p}");
        }
        // New-flow bursts: 6 disjoint ranges of 8192, two of the largest.
        let starts: Vec<u16> = (0..7)
            .map(|k| src_port_in(NEW_FLOW_PORTS, k, 8192))
            .collect();
        assert_eq!(
            starts,
            [16_384, 24_576, 32_768, 40_960, 49_152, 57_344, 16_384]
        );
        assert_eq!(src_port_in(NEW_FLOW_PORTS, 1, MAX_NEW_FLOWS), 40_960);
        const { assert!(40_960 + MAX_NEW_FLOWS <= 65_536) };
    }

    #[test]
    fn manifests_hold_every_service_and_slice() {
        let dir = std::env::temp_dir().join(format!("sv-manifests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let m = bench_model(5).unwrap();
        write_service_manifests(&dir, &m).unwrap();
        let svcs = std::fs::read_to_string(dir.join("bench-services.yaml")).unwrap();
        let slices = std::fs::read_to_string(dir.join("bench-endpointslices.yaml")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let docs: Vec<serde_json::Value> = svcs
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 5);
        let t = &docs[4];
        assert_eq!(t["metadata"]["name"], TARGET);
        assert_eq!(t["spec"]["clusterIP"], CLUSTER_IP.to_string());
        assert_eq!(t["spec"]["ports"][0]["protocol"], "UDP");
        assert_eq!(t["spec"]["ports"][0]["targetPort"], DST_PORT);
        let docs: Vec<serde_json::Value> = slices
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 5);
        assert_eq!(
            docs[4]["metadata"]["labels"]["kubernetes.io/service-name"],
            TARGET
        );
        assert_eq!(
            docs[4]["endpoints"][0]["addresses"][0],
            POD_B_IP.to_string()
        );
        assert_eq!(docs[4]["endpoints"][0]["nodeName"], NODE_B);
        assert_eq!(docs[4]["ports"][0]["port"], DST_PORT);
    }

    #[test]
    fn the_agents_loader_reads_the_same_services_back() {
        let dir = std::env::temp_dir().join(format!("sv-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let m = bench_model(50).unwrap();
        remote_pod::write_manifests(&dir, [2, 0, 0, 0, 0, 0xa1], [2, 0, 0, 0, 0, 0xb2]).unwrap();
        write_service_manifests(&dir, &m).unwrap();
        let loaded = xdplane_control::manifest::load_dir(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let loaded = loaded.unwrap();
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(loaded.model.services, m.services);
        assert_eq!(loaded.model.endpoint_slices, m.endpoint_slices);
        // So the kernel's rules and the agents' tables come from the same Services.
        assert_eq!(
            kubeproxy::iptables_restore(&loaded.model, NODE_A, &kube_proxy_opts()),
            kubeproxy::iptables_restore(&m, NODE_A, &kube_proxy_opts())
        );
    }

    fn nf(dp: Datapath, services: u32, per_s: f64, ns: f64) -> NewFlowRun {
        NewFlowRun {
            datapath: dp,
            run: 1,
            services,
            new_flows: 8192,
            src_port: 16_384,
            send_s: 0.4,
            sent: 8192,
            delivered: 8000,
            delivered_per_s: per_s,
            ns_per_flow_tasks: ns,
            ns_per_flow_fwd_cpu: ns,
            node_a_conntrack: Some(8192),
        }
    }

    fn run(dp: Datapath, services: u32, mpps: f64, ns: f64) -> ServiceRun {
        ServiceRun {
            datapath: dp,
            run: 1,
            services,
            flows: 64,
            src_port: 1024,
            window: PathWindow::sample(mpps, ns),
            mean_latency_us: None,
            setup_s: 1.0,
            node_a_conntrack: None,
        }
    }

    /// Service runs and the report are flat in the JSON, in the order they always had.
    #[test]
    fn runs_and_report_are_flat_in_the_json() {
        let j = serde_json::to_string(&run(Datapath::Xdplane, 10, 1.0, 100.0)).unwrap();
        assert!(!j.contains("\"window\""), "{j}");
        let mut keys = vec!["datapath", "run", "services", "flows", "src_port"];
        keys.extend(crate::scenarios::remote_pod::tests::PATH_WINDOW_KEYS);
        keys.extend(["mean_latency_us", "setup_s", "node_a_conntrack"]);
        crate::scenarios::common::assert_key_order(&j, &keys);
    }

    #[test]
    fn summary_ratios_and_scaling() {
        let mut rep = ServiceReport {
            header: ReportHeader::for_tests("service"),
            topology: String::new(),
            layout: String::new(),
            frame_size: 64,
            rate: "max".into(),
            warmup_s: 1.0,
            window_s: 3.0,
            runs_per_datapath: 2,
            kube_proxy: None,
            background_busy: [0.0, 0.0],
            generator_cpu: 0,
            forwarding_cpu: 1,
            runs: vec![
                run(Datapath::Kernel, 1, 0.20, 5000.0),
                run(Datapath::Kernel, 1, 0.22, 4500.0),
                run(Datapath::Kernel, 10_000, 0.10, 10_000.0),
                run(Datapath::Xdplane, 1, 0.10, 10_000.0),
                run(Datapath::Xdplane, 10_000, 0.10, 10_000.0),
            ],
            summary: Vec::new(),
            ratio_xdplane_over_kernel: Vec::new(),
            scaling: Vec::new(),
            new_flow_rate: 20_000,
            new_flow_runs: vec![
                nf(Datapath::Kernel, 1, 20_000.0, 8_000.0),
                nf(Datapath::Kernel, 10_000, 5_000.0, 60_000.0),
                nf(Datapath::Kernel, 10_000, 6_000.0, 50_000.0),
            ],
            new_flow_summary: Vec::new(),
            error: None,
            file_stamp: "x".into(),
        };
        crate::scenarios::common::assert_key_order(
            &serde_json::to_string(&rep).unwrap(),
            &[
                "scenario", "date_utc", "command", "machine", "topology", "layout",
            ],
        );
        summarize(&mut rep);
        assert_eq!(rep.new_flow_summary.len(), 2);
        let big = &rep.new_flow_summary[1];
        assert_eq!((big.services, big.runs), (10_000, 2));
        assert_eq!(big.ns_per_flow_tasks.median, 55_000.0);
        assert!(rep.table().contains("new flows: bursts"));
        assert_eq!(rep.summary.len(), 4);
        let k1 = rep
            .summary
            .iter()
            .find(|s| s.datapath == Datapath::Kernel && s.services == 1)
            .unwrap();
        assert_eq!(k1.runs, 2);
        assert!((k1.sink_mpps.median - 0.21).abs() < 1e-12);
        let r1 = rep
            .ratio_xdplane_over_kernel
            .iter()
            .find(|r| r.services == 1)
            .unwrap();
        assert!((r1.sink_pps - 0.10 / 0.21).abs() < 1e-9);
        let r2 = rep
            .ratio_xdplane_over_kernel
            .iter()
            .find(|r| r.services == 10_000)
            .unwrap();
        assert!((r2.sink_pps - 1.0).abs() < 1e-9);
        let ks = rep
            .scaling
            .iter()
            .find(|s| s.datapath == Datapath::Kernel)
            .unwrap();
        assert_eq!((ks.services_from, ks.services_to), (1, 10_000));
        assert!((ks.sink_pps - 0.10 / 0.21).abs() < 1e-9);
        let xs = rep
            .scaling
            .iter()
            .find(|s| s.datapath == Datapath::Xdplane)
            .unwrap();
        assert!((xs.sink_pps - 1.0).abs() < 1e-9);
        let table = rep.table();
        assert!(
            table.contains("xdplane/kernel at  10000 Services, 64 flow(s): throughput ×1.00"),
            "{table}"
        );
        let j = serde_json::to_value(&rep).unwrap();
        assert_eq!(j["runs"][0]["datapath"], "kernel");
        assert_eq!(j["scenario"], "service");
    }
}
