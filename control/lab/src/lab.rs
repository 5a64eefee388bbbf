//! The lab's operations: up, down, status, pods, exec, probe.

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use xdplane_api::{Client, NodeInfo, Request};
use xdplane_control::model::Protocol;

use crate::apiserver;
use crate::cni::{self, CniCall};
use crate::flannel::{self, Cidr, Mode, NetConf};
use crate::kernel::{self, KernelNode, ProgramReport};
use crate::manifests;
use crate::names;
use crate::netns;
use crate::procs::{self, ProcRecord};
use crate::state::{
    ExtState, LabState, NodeKind, NodeState, PodPort, PodState, STATE_ROOT, STATE_VERSION, StateDir,
};
use crate::testpod::{Ask, Proto};

/// Environment variable overriding where `xdplane` and `xdplane-cni` are found.
pub const BIN_DIR_ENV: &str = "XDPLANE_BIN_DIR";
/// The agent binary (which also carries `lab` and `testpod`).
pub const AGENT_BIN: &str = "xdplane";
/// How long `up` waits for an agent's admin socket by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test server may take to bind its ports.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// SIGTERM → SIGKILL grace period in `down`.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of a log shown in an error.
const TAIL_LINES: usize = 20;
/// The ports the external host's test server serves (TCP and UDP).
pub const EXT_PORTS: [u16; 2] = [80, 8080];

/// Which lab, where its state lives, where the binaries are.
#[derive(Debug, Clone)]
pub struct LabConfig {
    pub name: String,
    /// Default [`STATE_ROOT`].
    pub state_root: PathBuf,
    /// Where `xdplane` and `xdplane-cni` are; `None`: `XDPLANE_BIN_DIR`, else the
    /// directory of the current executable.
    pub bin_dir: Option<PathBuf>,
}

impl LabConfig {
    /// A lab called `name` (validated) with the default state root.
    pub fn new(name: &str) -> Result<LabConfig> {
        names::validate_lab_name(name)?;
        Ok(LabConfig {
            name: name.to_string(),
            state_root: PathBuf::from(STATE_ROOT),
            bin_dir: None,
        })
    }

    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> LabConfig {
        self.bin_dir = Some(dir.into());
        self
    }

    pub fn state_dir(&self) -> StateDir {
        StateDir::new(&self.state_root, &self.name)
    }

    /// The directory holding `xdplane` and `xdplane-cni`.
    pub fn resolve_bin_dir(&self) -> Result<PathBuf> {
        if let Some(d) = &self.bin_dir {
            return Ok(d.clone());
        }
        if let Some(d) = std::env::var_os(BIN_DIR_ENV) {
            return Ok(PathBuf::from(d));
        }
        let exe = std::env::current_exe().context("locating the current executable")?;
        exe.parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))
    }

    /// The state of the lab; an error when it does not exist.
    pub fn load(&self) -> Result<LabState> {
        self.state_dir().load()?.ok_or_else(|| {
            anyhow!(
                "lab {} does not exist (no {}); start it with `xdplane lab up --name {}`",
                self.name,
                self.state_dir().state_file().display(),
                self.name
            )
        })
    }
}

/// Checks that `bin_dir` has the agent and the CNI plugin.
pub fn check_binaries(bin_dir: &Path) -> Result<()> {
    let missing: Vec<String> = [AGENT_BIN, cni::PLUGIN]
        .iter()
        .filter(|b| !bin_dir.join(b).is_file())
        .map(|b| bin_dir.join(b).display().to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing {} (build them: `cargo build -p xdplane-agent -p xdplane-cni`, or point {BIN_DIR_ENV} at them)",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// Checks that `bin_dir` has the agent binary (which is also the test pod).
pub fn check_agent_binary(bin_dir: &Path) -> Result<()> {
    let p = bin_dir.join(AGENT_BIN);
    if !p.is_file() {
        bail!(
            "missing {} (build it: `cargo build -p xdplane-agent`, or point {BIN_DIR_ENV} at it)",
            p.display()
        );
    }
    Ok(())
}

/// Options of `up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: usize,
    /// Nodes set up as the kernel with flanneld would be, without xdplane (`server3`, …).
    pub kernel_nodes: Vec<String>,
    /// Every node a kernel flannel node (the baseline cluster).
    pub all_kernel: bool,
    /// Switch the flannel ConfigMap to this mode before anything starts (`None`: as the
    /// manifests say; vxlan when the lab generates the ConfigMap).
    pub mode: Option<Mode>,
    /// `None`: the default set ([`manifests::default_dir`]).
    pub manifests: Option<PathBuf>,
    /// Create nodes and agents only.
    pub no_pods: bool,
    pub ready_timeout: Duration,
    /// `--pod-mtu` for the agents.
    pub pod_mtu: Option<u32>,
    /// Print progress lines.
    pub verbose: bool,
}

impl Default for UpOptions {
    fn default() -> UpOptions {
        UpOptions {
            nodes: 3,
            kernel_nodes: Vec::new(),
            all_kernel: false,
            mode: None,
            manifests: None,
            no_pods: false,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            pod_mtu: None,
            verbose: false,
        }
    }
}

/// A pod to create by hand (`lab add-pod`, the demo's live pod).
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// Ports the test server listens on, TCP and UDP alike (empty: 80).
    pub ports: Vec<u16>,
    /// The pod's MTU (`None`: what the node gives pods).
    pub mtu: Option<u32>,
    /// Labels (Service selectors match them).
    pub labels: BTreeMap<String, String>,
    /// containerPorts (named ports resolve named targetPorts); `ports` is what the test
    /// server serves.
    pub container_ports: Vec<PodPort>,
    /// The workload that made the pod (`Deployment/demo2`).
    pub workload: Option<String>,
}

impl PodSpec {
    /// A pod in `default` on `node` serving `ports`, without labels.
    pub fn new(name: &str, node: &str, ports: Vec<u16>) -> PodSpec {
        PodSpec {
            namespace: "default".into(),
            name: name.into(),
            node: node.into(),
            ports,
            mtu: None,
            labels: BTreeMap::new(),
            container_ports: Vec::new(),
            workload: None,
        }
    }
}

/// The ports a pod's test server serves: every containerPort number (TCP or UDP), on both
/// protocols, so that TCP and UDP probes both have an answerer; 80 when there are none.
pub fn server_ports(ports: &[u16]) -> Vec<u16> {
    let set: BTreeSet<u16> = ports.iter().copied().filter(|p| *p != 0).collect();
    if set.is_empty() {
        vec![80]
    } else {
        set.into_iter().collect()
    }
}

fn say(verbose: bool, msg: impl AsRef<str>) {
    if verbose {
        crate::outln!("{}", msg.as_ref());
    }
}

/// Is there anything of this lab (state directory or namespaces)?
pub fn exists(cfg: &LabConfig) -> Result<bool> {
    Ok(cfg.state_dir().exists()
        || !netns::list_prefixed(&names::netns_prefix(&cfg.name))?.is_empty())
}

/// Creates the lab: fabric, nodes, agents, and (unless `no_pods`) the manifests' pods.
/// Everything created is recorded in `state.json` as it goes; on an error the lab is left
/// as it is (for its logs) and `down` removes it.
pub fn up(cfg: &LabConfig, opts: &UpOptions) -> Result<LabState> {
    if opts.nodes == 0 || opts.nodes > names::MAX_NODES {
        bail!("--nodes must be between 1 and {}", names::MAX_NODES);
    }
    let kernel_set = kernel_node_set(opts)?;
    let bin_dir = cfg.resolve_bin_dir()?;
    if kernel_set.len() == opts.nodes {
        check_agent_binary(&bin_dir)?;
    } else {
        check_binaries(&bin_dir)?;
    }
    if !kernel_set.is_empty() {
        kernel::check_plugins()?;
    }
    if exists(cfg)? {
        bail!(
            "lab {} already exists (state {} or namespaces {}*); run `xdplane lab down --name {}` first",
            cfg.name,
            cfg.state_dir().dir.display(),
            names::netns_prefix(&cfg.name),
            cfg.name
        );
    }
    let source = match &opts.manifests {
        Some(d) => d.clone(),
        None => manifests::default_dir()?,
    };
    let sd = cfg.state_dir();
    let _lock = sd.lock()?;
    let mut st = LabState {
        version: STATE_VERSION,
        name: cfg.name.clone(),
        phase: "creating".into(),
        bin_dir: bin_dir.clone(),
        manifests_source: source.clone(),
        manifests_dir: sd.manifests(),
        fabric_netns: names::fabric_netns(&cfg.name),
        nodes: Vec::new(),
        pods: Vec::new(),
        mode: opts.mode.unwrap_or_default(),
        pod_mtu_override: opts.pod_mtu,
        ext: None,
    };
    sd.save(&st)?;
    let r = up_steps(cfg, opts, &kernel_set, &sd, &mut st);
    if let Err(e) = &r {
        // Failed before creating any namespace or process: nothing to keep but files.
        let nothing_made = st.nodes.is_empty()
            && st.pods.is_empty()
            && netns::list_prefixed(&names::netns_prefix(&cfg.name)).is_ok_and(|l| l.is_empty());
        if nothing_made {
            let _ = std::fs::remove_dir_all(&sd.dir);
            return Err(anyhow!("{e:#}"));
        }
    }
    st.phase = if r.is_ok() { "ready" } else { "failed" }.into();
    let saved = sd.save(&st);
    r.with_context(|| {
        format!(
            "lab {} is incomplete (state and logs in {}); remove it with `xdplane lab down --name {}`",
            cfg.name,
            sd.dir.display(),
            cfg.name
        )
    })?;
    saved?;
    Ok(st)
}

/// The names of the kernel nodes `opts` asks for; an error for a name that is not one of
/// the lab's nodes.
pub fn kernel_node_set(opts: &UpOptions) -> Result<BTreeSet<String>> {
    if opts.all_kernel {
        return Ok((1..=opts.nodes).map(names::node_name).collect());
    }
    let mut out = BTreeSet::new();
    for n in &opts.kernel_nodes {
        for n in n.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match names::node_index(n) {
                Some(i) if i <= opts.nodes => {
                    out.insert(n.to_string());
                }
                _ => bail!(
                    "--kernel-nodes {n:?}: the lab's nodes are server1..server{}",
                    opts.nodes
                ),
            }
        }
    }
    Ok(out)
}

/// A kernel node's parameters from its state.
fn kernel_node(n: &NodeState) -> Result<KernelNode<'_>> {
    let cidr = n
        .pod_cidr
        .as_deref()
        .ok_or_else(|| anyhow!("node {} has no pod CIDR", n.name))?;
    Ok(KernelNode {
        name: &n.name,
        netns: &n.netns,
        ip: n.ip,
        prefix_len: n.prefix_len,
        pod_cidr: cidr
            .parse::<Cidr>()
            .with_context(|| format!("node {} pod CIDR", n.name))?,
    })
}

fn up_steps(
    cfg: &LabConfig,
    opts: &UpOptions,
    kernel_set: &BTreeSet<String>,
    sd: &StateDir,
    st: &mut LabState,
) -> Result<()> {
    let v = opts.verbose;
    let prepared = manifests::prepare(&st.manifests_source, &st.manifests_dir, opts.nodes)?;
    for w in &prepared.warnings {
        eprintln!("warning: {w}");
    }
    let (net_conf, generated_cm) = manifests::ensure_flannel_config(&st.manifests_dir, opts.mode)?;
    let mode = net_conf.mode().with_context(
        || "the lab emulates flannel's vxlan and host-gw backends; switch with --mode",
    )?;
    st.mode = mode;
    // Place the pods first: a pod pinned to a missing node stops `up` before anything exists.
    let node_names: Vec<String> = prepared.nodes.iter().map(|n| n.name.clone()).collect();
    let mut skipped = Vec::new();
    let planned = if opts.no_pods {
        Vec::new()
    } else {
        plan_pods(&prepared.model, &node_names, &mut skipped)?
    };
    for msg in &skipped {
        say(v, msg);
    }
    say(
        v,
        format!(
            "manifests: {} (+ {} generated Node objects{}) -> {}",
            st.manifests_source.display(),
            prepared.nodes.iter().filter(|n| n.generated).count(),
            if generated_cm {
                ", generated kube-flannel-cfg"
            } else {
                ""
            },
            st.manifests_dir.display()
        ),
    );
    say(
        v,
        format!(
            "flannel: network {}, mode {mode} (VNI {}, port {})",
            net_conf.network, net_conf.vni, net_conf.port
        ),
    );
    let mixed = !kernel_set.is_empty() && kernel_set.len() < prepared.nodes.len();

    // Fabric: one bridge.
    netns::add(&st.fabric_netns)?;
    netns::ip_in(&st.fabric_netns, &["link", "add", "br0", "type", "bridge"])?;
    netns::ip_in(&st.fabric_netns, &["link", "set", "br0", "up"])?;
    say(v, format!("fabric: {} with bridge br0", st.fabric_netns));

    // The external host, first: the nodes' default route points at it.
    create_ext(sd, st)?;
    say(
        v,
        format!(
            "external host: {} eth0 {}/{}, test server on {:?} tcp+udp",
            names::ext_netns(&st.name),
            names::EXT_IP,
            names::NODE_PREFIX_LEN,
            EXT_PORTS
        ),
    );

    // Nodes: eth0 in the node, its peer s<i> on the bridge.
    for n in &prepared.nodes {
        let ns = names::node_netns(&cfg.name, n.index);
        let port = names::fabric_port(n.index);
        let kind = if kernel_set.contains(&n.name) {
            NodeKind::Kernel
        } else {
            NodeKind::Xdplane
        };
        st.nodes.push(NodeState {
            name: n.name.clone(),
            index: n.index,
            netns: ns.clone(),
            ip: n.ip,
            prefix_len: names::NODE_PREFIX_LEN,
            pod_cidr: Some(n.pod_cidr.clone()),
            gateway: None,
            admin_socket: sd.socket(&n.name),
            cni_conf: sd.cni_conf(&n.name),
            ipam_dir: sd.ipam(&n.name),
            log: sd.node_log(&n.name),
            agent: None,
            kind,
            vtep_mac: None,
            vxlan_support: kind == NodeKind::Kernel,
            pod_mtu: None,
        });
        sd.save(st)?;
        netns::add(&ns)?;
        netns::ip_in(
            &ns,
            &[
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &st.fabric_netns,
            ],
        )?;
        let addr = format!("{}/{}", n.ip, names::NODE_PREFIX_LEN);
        netns::ip_in(&ns, &["addr", "add", &addr, "dev", "eth0"])?;
        netns::ip_in(&ns, &["link", "set", "eth0", "up"])?;
        // The way out of the cluster: the external host (the agent reads its uplink's
        // gateway from this route when it starts).
        let gw = names::EXT_IP.to_string();
        netns::ip_in(&ns, &["route", "add", "default", "via", &gw, "dev", "eth0"])?;
        netns::ip_in(&st.fabric_netns, &["link", "set", &port, "master", "br0"])?;
        netns::ip_in(&st.fabric_netns, &["link", "set", &port, "up"])?;
        say(
            v,
            format!(
                "node {} ({}): {ns}, eth0 {addr}, pods {}",
                n.name,
                kind.as_str(),
                n.pod_cidr
            ),
        );
    }

    // Kernel nodes: what the OS, flanneld and the flannel CNI leave on a node.
    for i in 0..st.nodes.len() {
        if !st.nodes[i].is_kernel() {
            continue;
        }
        let n = &st.nodes[i];
        let kn = kernel_node(n)?;
        let uplink_mtu = kernel::link_mtu(&n.netns, kernel::UPLINK)?;
        let pod_mtu = opts.pod_mtu.unwrap_or_else(|| mode.pod_mtu(uplink_mtu));
        kernel::setup_node(&kn, pod_mtu)?;
        if mixed {
            // A veth never completes a checksum the stack left to the "hardware"; a NIC
            // does. xdplane nodes read raw frames over AF_XDP, so this node's uplink must
            // send complete checksums, as a NIC would.
            netns::exec_in(&n.netns, "ethtool", &["-K", kernel::UPLINK, "tx", "off"])
                .context("turning off tx checksum offload on a kernel node's uplink")?;
        }
        let mac = kernel::ensure_vtep(&kn, &net_conf, mode)?;
        let gw = kn.gateway();
        say(
            v,
            format!(
                "node {}: kernel flannel node, cni0 {gw}/{} mtu {pod_mtu}{}",
                n.name,
                kn.pod_cidr.len,
                match &mac {
                    Some(m) => format!(", {} {m}", net_conf.vtep_device()),
                    None => String::new(),
                }
            ),
        );
        let n = &mut st.nodes[i];
        n.vtep_mac = mac;
        n.gateway = Some(gw.to_string());
        n.pod_mtu = Some(pod_mtu);
        sd.save(st)?;
    }

    // CNI configs (what the runtime would have in /etc/cni/net.d).
    for n in &st.nodes {
        std::fs::create_dir_all(&n.ipam_dir)?;
        if let Some(d) = n.cni_conf.parent() {
            std::fs::create_dir_all(d)?;
        }
        let conf = if n.is_kernel() {
            let kn = kernel_node(n)?;
            kernel::bridge_conf(
                net_conf.network,
                kn.pod_cidr,
                n.pod_mtu.unwrap_or(1500),
                &n.ipam_dir,
            )
        } else {
            cni::net_conf(&n.admin_socket, &n.ipam_dir)
        };
        std::fs::write(&n.cni_conf, serde_json::to_string_pretty(&conf)?)?;
        if let Some(d) = n.admin_socket.parent() {
            std::fs::create_dir_all(d)?;
        }
    }

    // Agents.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut children: Vec<(usize, Child)> = Vec::new();
    for i in 0..st.nodes.len() {
        let n = &st.nodes[i];
        if n.is_kernel() {
            continue;
        }
        let mut argv = vec![
            st.bin_dir.join(AGENT_BIN).display().to_string(),
            "run".into(),
            "--node".into(),
            n.name.clone(),
            "--manifests".into(),
            st.manifests_dir.display().to_string(),
            "--uplink".into(),
            "eth0".into(),
            "--admin-socket".into(),
            n.admin_socket.display().to_string(),
            "--workers".into(),
            "1".into(),
            "--cores".into(),
            ((n.index - 1) % cpus).to_string(),
        ];
        if let Some(mtu) = opts.pod_mtu {
            argv.extend(["--pod-mtu".into(), mtu.to_string()]);
        }
        let (child, rec) = procs::spawn_in_netns(&n.netns, &argv, &n.log)?;
        say(
            v,
            format!(
                "agent {}: pid {} (log {})",
                n.name,
                rec.pid,
                n.log.display()
            ),
        );
        st.nodes[i].agent = Some(rec);
        sd.save(st)?;
        children.push((i, child));
    }
    for (i, child) in &mut children {
        let (info, vtep) = wait_agent_ready(&st.nodes[*i], child, opts.ready_timeout)?;
        let n = &mut st.nodes[*i];
        n.vxlan_support = vtep.is_some();
        n.vtep_mac = match vtep {
            Some(m) => Some(m),
            // What the agent will use: its uplink's MAC.
            None => Some(netns::link_mac(&n.netns, "eth0")?),
        };
        say(
            v,
            format!(
                "agent {}: ready (pod CIDR {}, gateway {}, mtu {}, {})",
                n.name,
                info.pod_cidr,
                info.gateway,
                info.mtu,
                if n.vxlan_support {
                    format!("VtepMAC {}", n.vtep_mac.as_deref().unwrap_or("?"))
                } else {
                    "no VXLAN support reported".to_string()
                }
            ),
        );
        n.pod_cidr = Some(info.pod_cidr);
        n.gateway = Some(info.gateway);
        n.pod_mtu = Some(info.mtu);
    }
    sd.save(st)?;
    // The children are not waited for: they run on after `up` returns (reaped by init, or
    // by `down` when it runs in this process).
    drop(children);

    // flanneld's part: annotate every Node, program the kernel nodes, reload the agents.
    let rep = sync_locked(sd, st)?;
    for line in rep.lines() {
        say(v, line);
    }

    for spec in &planned {
        let pod = add_pod_locked(sd, st, spec)?;
        say(
            v,
            format!(
                "pod {}: {} on {}, {} mac {}",
                pod.display_name(),
                pod.netns,
                pod.node,
                pod.address.as_deref().unwrap_or("?"),
                pod.mac.as_deref().unwrap_or("?")
            ),
        );
    }
    if !planned.is_empty() {
        let up = pods_changed(sd, st, &BTreeSet::new())?;
        for line in up.lines() {
            say(v, line);
        }
    }
    Ok(())
}

/// What the lab did after its pods changed.
#[derive(Debug, Clone, Serialize)]
pub struct PodsChanged {
    pub services: crate::services::ServicesReport,
    pub reloaded: Vec<(String, serde_json::Value)>,
}

impl PodsChanged {
    pub fn lines(&self) -> Vec<String> {
        let mut out = self.services.lines();
        for (node, r) in &self.reloaded {
            out.push(format!("agent {node}: reloaded ({r})"));
        }
        out
    }
}

/// The pods changed (or `leaving` ones are about to go): EndpointSlices, kernel nodes'
/// Service rules and the external host's routes follow, then every agent reloads.
fn pods_changed(
    sd: &StateDir,
    st: &mut LabState,
    leaving: &BTreeSet<(String, String)>,
) -> Result<PodsChanged> {
    let services = crate::services::apply_leaving(st, leaving)?;
    sd.save(st)?;
    let reloaded = reload_agents(st)?;
    sd.save(st)?;
    Ok(PodsChanged { services, reloaded })
}

/// Creates the external host `<lab>-ext`: `eth0` 192.168.50.254/24 on the fabric bridge
/// (port `sext`), `lo` up, and `xdplane testpod serve --name ext` on [`EXT_PORTS`] (TCP
/// and UDP), which answers `/clientip` with the address it sees. It has no route into the
/// cluster's pod network: what reaches it from pods comes from a node's address.
fn create_ext(sd: &StateDir, st: &mut LabState) -> Result<()> {
    let ns = names::ext_netns(&st.name);
    st.ext = Some(ExtState {
        netns: ns.clone(),
        ip: names::EXT_IP,
        prefix_len: names::NODE_PREFIX_LEN,
        ports: EXT_PORTS.to_vec(),
        server: None,
        log: sd.pod_log(&ns),
        routes: Vec::new(),
    });
    sd.save(st)?;
    netns::add(&ns)?;
    netns::ip_in(
        &ns,
        &[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            names::EXT_FABRIC_PORT,
            "netns",
            &st.fabric_netns,
        ],
    )?;
    let addr = format!("{}/{}", names::EXT_IP, names::NODE_PREFIX_LEN);
    netns::ip_in(&ns, &["addr", "add", &addr, "dev", "eth0"])?;
    netns::ip_in(&ns, &["link", "set", "eth0", "up"])?;
    netns::ip_in(&ns, &["link", "set", "lo", "up"])?;
    // As on a kernel node of a mixed lab: a veth never completes a checksum the stack left
    // to the "hardware", and the nodes read raw frames over AF_XDP (and rewrite them
    // incrementally); a host behind a NIC sends complete checksums.
    netns::exec_in(&ns, "ethtool", &["-K", "eth0", "tx", "off"])
        .context("turning off tx checksum offload on the external host's eth0")?;
    netns::ip_in(
        &st.fabric_netns,
        &["link", "set", names::EXT_FABRIC_PORT, "master", "br0"],
    )?;
    netns::ip_in(
        &st.fabric_netns,
        &["link", "set", names::EXT_FABRIC_PORT, "up"],
    )?;
    let log = sd.pod_log(&ns);
    let _ = std::fs::remove_file(&log);
    let mut argv = vec![
        st.bin_dir.join(AGENT_BIN).display().to_string(),
        "testpod".into(),
        "serve".into(),
        "--name".into(),
        names::EXT.into(),
        "--log-peers".into(),
    ];
    for p in EXT_PORTS {
        argv.extend(["--tcp".into(), p.to_string(), "--udp".into(), p.to_string()]);
    }
    let (mut child, rec) = procs::spawn_in_netns(&ns, &argv, &log)?;
    if let Some(e) = st.ext.as_mut() {
        e.server = Some(rec);
    }
    sd.save(st)?;
    wait_serving(names::EXT, &mut child, &log)
}

/// What [`sync`] did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub mode: Mode,
    pub net_conf: NetConf,
    /// net-conf.json as the ConfigMap now holds it.
    pub net_conf_text: String,
    /// Node → the annotations written.
    pub annotations: BTreeMap<String, BTreeMap<String, String>>,
    pub kernel: Vec<ProgramReport>,
    /// EndpointSlices written, kernel nodes' Service rules, the external host's routes.
    pub services: crate::services::ServicesReport,
    /// Agents that re-read the manifests, with their `reload` answer.
    pub reloaded: Vec<(String, serde_json::Value)>,
}

impl SyncReport {
    /// Human lines: one per node.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (node, ann) in &self.annotations {
            out.push(format!(
                "node {node}: annotated backend-type={} backend-data={} public-ip={}",
                ann.get(flannel::ANN_BACKEND_TYPE)
                    .map_or("-", String::as_str),
                ann.get(flannel::ANN_BACKEND_DATA)
                    .map_or("-", String::as_str),
                ann.get(flannel::ANN_PUBLIC_IP).map_or("-", String::as_str),
            ));
        }
        for k in &self.kernel {
            out.push(format!(
                "kernel node {}: {} routes ({}), {} changes",
                k.node,
                k.routes.len(),
                k.routes.join("; "),
                k.changes.len()
            ));
            for n in &k.notes {
                out.push(format!("kernel node {}: {n}", k.node));
            }
        }
        out.extend(self.services.lines());
        for (node, r) in &self.reloaded {
            out.push(format!("agent {node}: reloaded ({r})"));
        }
        out
    }
}

/// Does what flanneld and the API server do after a change of the flannel ConfigMap or of
/// the set of nodes: every node's flannel annotations are written onto its Node object in
/// `<state>/manifests/` (kernel nodes' VTEPs are made first, their MACs go in), every
/// kernel node is re-programmed from the annotated Nodes, and every running agent is asked
/// to `reload`.
pub fn sync(cfg: &LabConfig) -> Result<SyncReport> {
    let sd = cfg.state_dir();
    let _lock = sd.lock()?;
    let mut st = cfg.load()?;
    let r = sync_locked(&sd, &mut st);
    sd.save(&st)?;
    r
}

/// `lab mode`: rewrites net-conf.json in the `kube-flannel-cfg` ConfigMap of
/// `<state>/manifests/` to `mode`, then [`sync`]. Pods are not restarted: they keep the MTU
/// they were created with (flannel does the same: only new pods see the new MTU).
pub fn set_mode(cfg: &LabConfig, mode: Mode) -> Result<SyncReport> {
    let sd = cfg.state_dir();
    let _lock = sd.lock()?;
    let mut st = cfg.load()?;
    manifests::set_mode(&st.manifests_dir, mode)?;
    let r = sync_locked(&sd, &mut st);
    sd.save(&st)?;
    r
}

fn sync_locked(sd: &StateDir, st: &mut LabState) -> Result<SyncReport> {
    let (nc, nc_text) = manifests::read_net_conf(&st.manifests_dir)?;
    let mode = nc.mode()?;
    st.mode = mode;
    // Kernel nodes' VTEPs first (host-gw: none): their MACs go into the annotations.
    for i in 0..st.nodes.len() {
        if !st.nodes[i].is_kernel() {
            continue;
        }
        let mac = kernel::ensure_vtep(&kernel_node(&st.nodes[i])?, &nc, mode)?;
        st.nodes[i].vtep_mac = mac;
    }
    sd.save(st)?;
    let mut annotations = BTreeMap::new();
    for n in &st.nodes {
        let mac =
            if mode.is_vxlan() {
                Some(n.vtep_mac.as_deref().ok_or_else(|| {
                    anyhow!("node {} has no VtepMAC for its backend-data", n.name)
                })?)
            } else {
                None
            };
        annotations.insert(
            n.name.clone(),
            flannel::node_annotations(mode, nc.vni, mac, n.ip)?,
        );
    }
    let found = apiserver::annotate_nodes(&st.manifests_dir, &annotations)?;
    let missing: Vec<&String> = annotations.keys().filter(|n| !found.contains(n)).collect();
    if !missing.is_empty() {
        bail!(
            "no Node object for {} in {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            st.manifests_dir.display()
        );
    }

    // Kernel nodes, from the Node objects as flanneld would see them.
    let mtu_override = st.pod_mtu_override;
    let loaded = xdplane_control::manifest::load_dir(&st.manifests_dir)?;
    let mut kernel_reports = Vec::new();
    for i in 0..st.nodes.len() {
        let n = &st.nodes[i];
        if !n.is_kernel() {
            continue;
        }
        let (leases, skipped) = flannel::leases(&loaded.model, &n.name);
        let kn = kernel_node(n)?;
        let mut rep = kernel::program_kernel_node(&kn, &nc, mode, &leases)?;
        rep.notes.extend(skipped);
        // New pods get the new mode's MTU (flannel's subnet.env); cni0 keeps its own.
        let uplink_mtu = kernel::link_mtu(&n.netns, kernel::UPLINK)?;
        let pod_mtu = mode.pod_mtu(uplink_mtu);
        let n = &mut st.nodes[i];
        n.vtep_mac = rep.vtep_mac.clone();
        n.pod_mtu = Some(mtu_override.unwrap_or(pod_mtu));
        kernel_reports.push(rep);
    }
    sd.save(st)?;

    // What the endpointslice controller and kube-proxy do: slices from the pods, kernel
    // nodes' Service rules, the external host's routes to external addresses.
    let services = crate::services::apply(st)?;

    // Agents re-read the manifests.
    let reloaded = reload_agents(st)?;
    Ok(SyncReport {
        mode,
        net_conf: nc,
        net_conf_text: nc_text,
        annotations,
        kernel: kernel_reports,
        services,
        reloaded,
    })
}

/// Asks every running agent to `reload` (re-read the manifests); their answers.
pub(crate) fn reload_agents(st: &mut LabState) -> Result<Vec<(String, serde_json::Value)>> {
    let mut reloaded = Vec::new();
    for n in st.nodes.iter_mut() {
        if n.is_kernel() || !n.agent.as_ref().is_some_and(ProcRecord::alive) {
            continue;
        }
        let mut c = Client::connect(&n.admin_socket, Duration::from_secs(10))?;
        let r = c
            .call(&Request::Reload)
            .with_context(|| format!("asking the agent of {} to reload", n.name))?;
        if let Ok((info, _)) = node_info_full(&n.admin_socket, Duration::from_secs(2)) {
            n.pod_mtu = Some(info.mtu);
        }
        reloaded.push((n.name.clone(), r));
    }
    Ok(reloaded)
}

/// The pods `up` creates: the manifests' pods placed on the lab's nodes (hostNetwork pods
/// are left out, reported through `skipped`). An error when a pod is pinned to a node the
/// lab does not have.
pub fn plan_pods(
    model: &xdplane_control::model::Model,
    node_names: &[String],
    skipped: &mut Vec<String>,
) -> Result<Vec<PodSpec>> {
    let mut out = Vec::new();
    for p in xdplane_control::schedule::lab_pods(model, node_names) {
        if p.host_network {
            skipped.push(format!(
                "pod {}/{}: hostNetwork, runs in its node: skipped",
                p.namespace, p.name
            ));
            continue;
        }
        let node = p
            .node_name
            .clone()
            .ok_or_else(|| anyhow!("pod {}/{} was not scheduled", p.namespace, p.name))?;
        if !node_names.contains(&node) {
            bail!(
                "pod {}/{} is pinned to node {node}, which the lab does not have (nodes: {})",
                p.namespace,
                p.name,
                node_names.join(", ")
            );
        }
        let ports: Vec<u16> = p
            .ports
            .iter()
            .filter(|cp| matches!(cp.protocol, Protocol::Tcp | Protocol::Udp))
            .map(|cp| cp.port)
            .collect();
        let workload = model
            .workloads
            .values()
            .find(|w| {
                w.namespace == p.namespace
                    && p.name.starts_with(&format!("{}-", w.name))
                    && !w.pod_labels.is_empty()
                    && w.pod_labels.iter().all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .map(|w| format!("{}/{}", w.kind, w.name));
        out.push(PodSpec {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            node,
            ports,
            mtu: None,
            labels: p.labels.clone(),
            container_ports: p
                .ports
                .iter()
                .map(|cp| PodPort {
                    name: cp.name.clone(),
                    port: cp.port,
                    protocol: proto_name(cp.protocol).into(),
                })
                .collect(),
            workload,
        });
    }
    Ok(out)
}

/// `TCP`, `UDP`, `SCTP`.
pub fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

/// Asks the agent `node-info` once.
pub fn node_info(socket: &Path, timeout: Duration) -> Result<NodeInfo> {
    Ok(node_info_full(socket, timeout)?.0)
}

/// `node-info`, with the VtepMAC (`vtepMac`) of agents that do VXLAN.
pub fn node_info_full(socket: &Path, timeout: Duration) -> Result<(NodeInfo, Option<String>)> {
    let mut c = Client::connect(socket, timeout)?;
    let v = c.call(&Request::NodeInfo)?;
    let vtep = v
        .get("vtepMac")
        .and_then(serde_json::Value::as_str)
        .and_then(flannel::parse_mac)
        .map(flannel::fmt_mac);
    let info: NodeInfo =
        serde_json::from_value(v).context("decoding the agent's node-info answer")?;
    Ok((info, vtep))
}

fn wait_agent_ready(
    n: &NodeState,
    child: &mut Child,
    timeout: Duration,
) -> Result<(NodeInfo, Option<String>)> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the agent of {} exited ({status}) before it was ready; last lines of {}:\n{}",
                n.name,
                n.log.display(),
                procs::log_tail(&n.log, TAIL_LINES)
            );
        }
        let last_err = match node_info_full(&n.admin_socket, Duration::from_secs(1)) {
            Ok(info) => return Ok(info),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!(
                "the agent of {} did not answer node-info on {} within {}s ({last_err}); last lines of {}:\n{}",
                n.name,
                n.admin_socket.display(),
                timeout.as_secs(),
                n.log.display(),
                procs::log_tail(&n.log, TAIL_LINES)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The CNI plugin of a node: xdplane-cni, or the bridge plugin on a kernel node.
fn plugin_for(st: &LabState, node: &NodeState) -> PathBuf {
    if node.is_kernel() {
        Path::new(cni::SYSTEM_CNI_DIR).join(kernel::BRIDGE_PLUGIN)
    } else {
        st.bin_dir.join(cni::PLUGIN)
    }
}

fn cni_call<'a>(
    st: &'a LabState,
    node: &'a NodeState,
    pod: &'a PodState,
    plugin: &'a Path,
    conf: &'a serde_json::Value,
) -> CniCall<'a> {
    CniCall {
        plugin,
        bin_dir: &st.bin_dir,
        node_netns: &node.netns,
        container_id: &pod.container_id,
        pod_netns: &pod.netns,
        pod_namespace: &pod.namespace,
        pod_name: &pod.name,
        conf,
    }
}

fn node_conf(node: &NodeState) -> Result<serde_json::Value> {
    if node.is_kernel() {
        let text = std::fs::read_to_string(&node.cni_conf)
            .with_context(|| format!("reading {}", node.cni_conf.display()))?;
        return serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", node.cni_conf.display()));
    }
    Ok(cni::net_conf(&node.admin_socket, &node.ipam_dir))
}

/// The network config a pod was added with (given again on DEL).
fn pod_conf(node: &NodeState, pod: &PodState) -> Result<serde_json::Value> {
    match &pod.cni_conf {
        Some(c) => Ok(c.clone()),
        None => node_conf(node),
    }
}

/// The network config for a new pod on `node`: the node's, with the pod's MTU.
fn new_pod_conf(st: &LabState, node: &NodeState, mtu: Option<u32>) -> Result<serde_json::Value> {
    if node.is_kernel() {
        let kn = kernel_node(node)?;
        let (nc, _) = manifests::read_net_conf(&st.manifests_dir)?;
        let mtu = match mtu.or(node.pod_mtu) {
            Some(m) => m,
            None => nc
                .mode()?
                .pod_mtu(kernel::link_mtu(&node.netns, kernel::UPLINK)?),
        };
        return Ok(kernel::bridge_conf(
            nc.network,
            kn.pod_cidr,
            mtu,
            &node.ipam_dir,
        ));
    }
    let mut c = node_conf(node)?;
    if let (Some(m), Some(obj)) = (mtu, c.as_object_mut()) {
        obj.insert("mtu".into(), m.into());
    }
    Ok(c)
}

/// Adds one pod to a running lab: its namespace, CNI ADD through the plugin (the agent
/// attaches it live), and its test server; then the Services it belongs to get it as an
/// endpoint (EndpointSlices rewritten, agents reloaded).
pub fn add_pod(cfg: &LabConfig, spec: &PodSpec) -> Result<PodState> {
    let sd = cfg.state_dir();
    let _lock = sd.lock()?;
    let mut st = cfg.load()?;
    let pod = add_pod_locked(&sd, &mut st, spec)?;
    pods_changed(&sd, &mut st, &BTreeSet::new())?;
    Ok(pod)
}

fn add_pod_locked(sd: &StateDir, st: &mut LabState, spec: &PodSpec) -> Result<PodState> {
    let node = st
        .node(&spec.node)
        .cloned()
        .ok_or_else(|| anyhow!("lab {} has no node {}", st.name, spec.node))?;
    if st
        .pods
        .iter()
        .any(|p| p.namespace == spec.namespace && p.name == spec.name)
    {
        bail!(
            "pod {}/{} already exists in lab {}",
            spec.namespace,
            spec.name,
            st.name
        );
    }
    let mut taken: BTreeSet<String> = st.pods.iter().map(|p| p.netns.clone()).collect();
    taken.extend(netns::list_prefixed(&names::netns_prefix(&st.name))?);
    let ns = names::pod_netns(&st.name, &spec.namespace, &spec.name, &taken);
    let ports = server_ports(&spec.ports);
    let mut pod = PodState {
        namespace: spec.namespace.clone(),
        name: spec.name.clone(),
        node: node.name.clone(),
        netns: ns.clone(),
        // Unique per lab (the namespace name is) and valid as a CNI container ID.
        container_id: ns.clone(),
        cni_attempted: false,
        address: None,
        mac: None,
        host_ifname: None,
        gateway: None,
        cni_result: None,
        tcp_ports: ports.clone(),
        udp_ports: ports.clone(),
        server: None,
        mtu: spec.mtu,
        cni_conf: Some(new_pod_conf(st, &node, spec.mtu)?),
        labels: spec.labels.clone(),
        container_ports: spec.container_ports.clone(),
        workload: spec.workload.clone(),
    };
    st.pods.push(pod.clone());
    let idx = st.pods.len() - 1;
    sd.save(st)?;

    netns::add(&ns)?;
    st.pods[idx].cni_attempted = true;
    sd.save(st)?;
    let conf = pod_conf(&node, &pod)?;
    let plugin = plugin_for(st, &node);
    let res = cni::add(&cni_call(st, &node, &pod, &plugin, &conf))?;
    pod.cni_attempted = true;
    pod.address = Some(res.address.clone());
    pod.gateway = res.gateway.clone();
    pod.host_ifname = res.host_ifname.clone();
    pod.mac = match res.mac.clone() {
        Some(m) => Some(m),
        None => netns::link_mac(&ns, "eth0").ok(),
    };
    pod.cni_result = Some(res.raw.clone());
    st.pods[idx] = pod.clone();
    sd.save(st)?;

    let log = sd.pod_log(&ns);
    let _ = std::fs::remove_file(&log);
    let mut argv = vec![
        st.bin_dir.join(AGENT_BIN).display().to_string(),
        "testpod".into(),
        "serve".into(),
        "--name".into(),
        spec.name.clone(),
    ];
    for p in &ports {
        argv.extend(["--tcp".into(), p.to_string()]);
    }
    for p in &ports {
        argv.extend(["--udp".into(), p.to_string()]);
    }
    let (mut child, rec) = procs::spawn_in_netns(&ns, &argv, &log)?;
    pod.server = Some(rec);
    st.pods[idx] = pod.clone();
    sd.save(st)?;
    wait_server_ready(&pod, &mut child, &log)?;
    Ok(pod)
}

fn wait_server_ready(pod: &PodState, child: &mut Child, log: &Path) -> Result<()> {
    wait_serving(&pod.display_name(), child, log)
        .with_context(|| format!("pod {}", pod.display_name()))
}

/// Waits for `testpod NAME: serving` in a test server's log.
fn wait_serving(label: &str, child: &mut Child, log: &Path) -> Result<()> {
    let name = label.rsplit('/').next().unwrap_or(label);
    let want = format!("testpod {name}: serving");
    let deadline = Instant::now() + SERVER_READY_TIMEOUT;
    loop {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains(&want)) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the test server of {label} exited ({status}); last lines of {}:\n{}",
                log.display(),
                procs::log_tail(log, TAIL_LINES)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "the test server of {label} did not start within {}s; last lines of {}:\n{}",
                SERVER_READY_TIMEOUT.as_secs(),
                log.display(),
                procs::log_tail(log, TAIL_LINES)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes one pod as Kubernetes does: out of its Services' endpoints first (slices
/// rewritten, agents reloaded), then its server, CNI DEL, its namespace.
pub fn del_pod(cfg: &LabConfig, what: &str) -> Result<PodState> {
    let sd = cfg.state_dir();
    let _lock = sd.lock()?;
    let mut st = cfg.load()?;
    let pod = st.find_pod(what)?.clone();
    let leaving = BTreeSet::from([(pod.namespace.clone(), pod.name.clone())]);
    pods_changed(&sd, &mut st, &leaving)?;
    remove_pod_locked(&sd, &mut st, &pod)?;
    Ok(pod)
}

/// Stops a pod's server, CNI DEL, deletes its namespace, forgets it.
fn remove_pod_locked(sd: &StateDir, st: &mut LabState, pod: &PodState) -> Result<()> {
    if let Some(rec) = &pod.server {
        procs::stop_all(std::slice::from_ref(rec), STOP_GRACE);
    }
    let node = st
        .node(&pod.node)
        .cloned()
        .ok_or_else(|| anyhow!("pod {} is on unknown node {}", pod.display_name(), pod.node))?;
    if pod.cni_attempted {
        let conf = pod_conf(&node, pod)?;
        let plugin = plugin_for(st, &node);
        cni::del(
            &cni_call(st, &node, pod, &plugin, &conf),
            pod.cni_result.as_ref(),
        )?;
    }
    if netns::exists(&pod.netns) {
        netns::del(&pod.netns)?;
    }
    st.pods
        .retain(|p| !(p.namespace == pod.namespace && p.name == pod.name));
    sd.save(st)?;
    Ok(())
}

/// What [`scale`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// `Deployment/default/demo2`.
    pub workload: String,
    pub replicas: u32,
    pub added: Vec<PodState>,
    pub removed: Vec<PodState>,
    pub after: PodsChanged,
}

/// `kubectl scale`: sets the workload's `spec.replicas` in the lab's manifests and makes
/// the pods follow, as the ReplicaSet controller would: the pods the scheduler now places
/// (see [`xdplane_control::schedule::lab_pods`]: replica i keeps its name) are created,
/// the others go — first out of the EndpointSlices (agents reloaded), then stopped and
/// deleted. Established connections to the pods that stay are not touched.
pub fn scale(cfg: &LabConfig, what: &str, replicas: u32) -> Result<ScaleReport> {
    let sd = cfg.state_dir();
    let _lock = sd.lock()?;
    let mut st = cfg.load()?;
    let loaded = xdplane_control::manifest::load_dir(&st.manifests_dir)?;
    let (kind, ns, name) = crate::services::find_workload(&loaded.model, what)?;
    if !apiserver::set_replicas(&st.manifests_dir, &kind, &ns, &name, replicas)? {
        bail!(
            "{kind} {ns}/{name} is not declared in {}",
            st.manifests_dir.display()
        );
    }
    let owner = format!("{kind}/{name}");
    let loaded = xdplane_control::manifest::load_dir(&st.manifests_dir)?;
    let node_names: Vec<String> = st.nodes.iter().map(|n| n.name.clone()).collect();
    let mut skipped = Vec::new();
    let planned: Vec<PodSpec> = plan_pods(&loaded.model, &node_names, &mut skipped)?
        .into_iter()
        .filter(|p| p.namespace == ns && p.workload.as_deref() == Some(owner.as_str()))
        .collect();
    let existing: Vec<PodState> = st
        .pods
        .iter()
        .filter(|p| p.namespace == ns && p.workload.as_deref() == Some(owner.as_str()))
        .cloned()
        .collect();
    let removed: Vec<PodState> = existing
        .iter()
        .filter(|p| !planned.iter().any(|s| s.name == p.name))
        .cloned()
        .collect();
    let to_add: Vec<&PodSpec> = planned
        .iter()
        .filter(|s| !existing.iter().any(|p| p.name == s.name))
        .collect();
    if !removed.is_empty() {
        let leaving: BTreeSet<(String, String)> = removed
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        pods_changed(&sd, &mut st, &leaving)?;
        for p in &removed {
            remove_pod_locked(&sd, &mut st, p)?;
        }
    }
    let mut added = Vec::new();
    for spec in to_add {
        added.push(add_pod_locked(&sd, &mut st, spec)?);
    }
    let after = pods_changed(&sd, &mut st, &BTreeSet::new())?;
    Ok(ScaleReport {
        workload: format!("{kind}/{ns}/{name}"),
        replicas,
        added,
        removed,
        after,
    })
}

/// What `down` did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DownReport {
    pub had_state: bool,
    pub processes_stopped: usize,
    pub cni_deleted: usize,
    pub cni_errors: Vec<String>,
    pub netns_deleted: Vec<String>,
    pub netns_errors: Vec<String>,
}

impl DownReport {
    pub fn nothing_to_do(&self) -> bool {
        !self.had_state && self.netns_deleted.is_empty() && self.netns_errors.is_empty()
    }
}

/// Removes the lab, whatever state it is in: stops the recorded test servers, CNI DEL for
/// every recorded pod while its agent still runs, stops the agents, deletes every namespace
/// `<lab>-*` and the state directory. Safe to run again.
pub fn down(cfg: &LabConfig) -> Result<DownReport> {
    let sd = cfg.state_dir();
    let mut rep = DownReport::default();
    let st = match sd.load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: {e:#}; removing the namespaces only");
            None
        }
    };
    if let Some(st) = &st {
        rep.had_state = true;
        let mut servers: Vec<ProcRecord> =
            st.pods.iter().filter_map(|p| p.server.clone()).collect();
        servers.extend(st.ext.as_ref().and_then(|e| e.server.clone()));
        let r = procs::stop_all(&servers, STOP_GRACE);
        rep.processes_stopped += r.terminated + r.killed;
        for pod in st.pods.iter().filter(|p| p.cni_attempted) {
            let Some(node) = st.node(&pod.node) else {
                continue;
            };
            let agent_up = node.agent.as_ref().is_some_and(ProcRecord::alive);
            if !(agent_up || node.is_kernel()) || !netns::exists(&node.netns) {
                continue;
            }
            let plugin = plugin_for(st, node);
            let del = pod_conf(node, pod).and_then(|conf| {
                cni::del(
                    &cni_call(st, node, pod, &plugin, &conf),
                    pod.cni_result.as_ref(),
                )
            });
            match del {
                Ok(()) => rep.cni_deleted += 1,
                Err(e) => rep
                    .cni_errors
                    .push(format!("{}: {e:#}", pod.display_name())),
            }
        }
        let agents: Vec<ProcRecord> = st.nodes.iter().filter_map(|n| n.agent.clone()).collect();
        let r = procs::stop_all(&agents, STOP_GRACE);
        rep.processes_stopped += r.terminated + r.killed;
    } else if sd.exists() {
        rep.had_state = true;
    }
    for ns in netns::list_prefixed(&names::netns_prefix(&cfg.name))? {
        match netns::del(&ns) {
            Ok(()) => rep.netns_deleted.push(ns),
            Err(e) => rep.netns_errors.push(format!("{e:#}")),
        }
    }
    if sd.exists() {
        std::fs::remove_dir_all(&sd.dir)
            .with_context(|| format!("removing {}", sd.dir.display()))?;
    }
    if !rep.netns_errors.is_empty() {
        bail!(
            "could not delete every namespace: {}",
            rep.netns_errors.join("; ")
        );
    }
    Ok(rep)
}

/// A node as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    #[serde(flatten)]
    pub node: NodeState,
    pub agent_running: bool,
    /// The `node-info` answer.
    pub admin: Option<NodeInfo>,
    /// Why there is no `node-info` answer.
    pub admin_error: Option<String>,
    /// A kernel node's flannel state.
    pub kernel: Option<KernelStatus>,
}

/// A kernel node as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KernelStatus {
    /// `flannel.<VNI>` and its MAC, when there is one.
    pub vtep: Option<(String, String)>,
    pub bridge: bool,
    /// flanneld's routes: those into the flannel network other than the node's own.
    pub routes: Vec<String>,
    pub error: Option<String>,
}

impl KernelStatus {
    fn read(n: &NodeState, nc: Option<&NetConf>) -> KernelStatus {
        let r = (|| -> Result<KernelStatus> {
            let links = netns::ip_in_output(&n.netns, &["-j", "-d", "link", "show"])?;
            let vtep = kernel::parse_vteps(&links)?
                .into_iter()
                .next()
                .map(|v| (v.name, v.mac));
            let bridge =
                netns::ip_in_output(&n.netns, &["-o", "link", "show", "dev", kernel::BRIDGE])
                    .is_ok();
            let routes = kernel::parse_routes(&netns::ip_in_output(
                &n.netns,
                &["-j", "-4", "route", "show", "table", "main"],
            )?)?;
            let own: Option<Cidr> = n.pod_cidr.as_deref().and_then(|c| c.parse().ok());
            let routes = routes
                .into_iter()
                .filter(|r| Some(r.dst) != own && nc.is_some_and(|nc| nc.network.covers(&r.dst)))
                .map(|r| {
                    format!(
                        "{} via {} dev {}{}",
                        r.dst,
                        r.gateway.map_or("-".to_string(), |g| g.to_string()),
                        r.dev,
                        if r.onlink { " onlink" } else { "" }
                    )
                })
                .collect();
            Ok(KernelStatus {
                vtep,
                bridge,
                routes,
                error: None,
            })
        })();
        r.unwrap_or_else(|e| KernelStatus {
            vtep: None,
            bridge: false,
            routes: vec![],
            error: Some(format!("{e:#}")),
        })
    }
}

/// A pod as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PodStatus {
    #[serde(flatten)]
    pub pod: PodState,
    pub netns_exists: bool,
    pub server_running: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub name: String,
    pub phase: String,
    /// flannel's mode (the net-conf ConfigMap's).
    pub mode: Mode,
    pub state_dir: PathBuf,
    pub fabric_netns: String,
    pub nodes: Vec<NodeStatus>,
    pub pods: Vec<PodStatus>,
    /// The external host and whether its test server runs.
    pub ext: Option<ExtStatus>,
}

/// The external host as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ExtStatus {
    #[serde(flatten)]
    pub ext: ExtState,
    pub netns_exists: bool,
    pub server_running: bool,
}

impl StatusReport {
    /// Every agent answers, every kernel node has its bridge (and its VTEP in a vxlan
    /// mode), and every pod's server runs.
    pub fn healthy(&self) -> bool {
        self.phase == "ready"
            && self.nodes.iter().all(|n| match &n.kernel {
                Some(k) => {
                    k.error.is_none() && k.bridge && (k.vtep.is_some() || !self.mode.is_vxlan())
                }
                None => n.agent_running && n.admin.is_some(),
            })
            && self.pods.iter().all(|p| p.server_running && p.netns_exists)
            && self
                .ext
                .as_ref()
                .is_none_or(|e| e.server_running && e.netns_exists)
    }
}

pub fn status(cfg: &LabConfig) -> Result<StatusReport> {
    let st = cfg.load()?;
    let nc = manifests::read_net_conf(&st.manifests_dir)
        .ok()
        .map(|x| x.0);
    let nodes = st
        .nodes
        .iter()
        .map(|n| {
            if n.is_kernel() {
                return NodeStatus {
                    node: n.clone(),
                    agent_running: false,
                    admin: None,
                    admin_error: None,
                    kernel: Some(KernelStatus::read(n, nc.as_ref())),
                };
            }
            // Generous: an agent on a loaded machine can take a while to answer.
            let info = node_info(&n.admin_socket, Duration::from_secs(3));
            NodeStatus {
                node: n.clone(),
                agent_running: n.agent.as_ref().is_some_and(ProcRecord::alive),
                admin_error: info.as_ref().err().map(|e| format!("{e:#}")),
                admin: info.ok(),
                kernel: None,
            }
        })
        .collect();
    let pods = st
        .pods
        .iter()
        .map(|p| PodStatus {
            pod: p.clone(),
            netns_exists: netns::exists(&p.netns),
            server_running: p.server.as_ref().is_some_and(ProcRecord::alive),
        })
        .collect();
    Ok(StatusReport {
        name: st.name.clone(),
        phase: st.phase.clone(),
        mode: st.mode,
        state_dir: cfg.state_dir().dir,
        fabric_netns: st.fabric_netns.clone(),
        nodes,
        pods,
        ext: st.ext.as_ref().map(|e| ExtStatus {
            ext: e.clone(),
            netns_exists: netns::exists(&e.netns),
            server_running: e.server.as_ref().is_some_and(ProcRecord::alive),
        }),
    })
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 < r.len() {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

impl StatusReport {
    /// The human form: one table of nodes, one of pods.
    pub fn render(&self) -> String {
        let mut out = format!(
            "lab {} ({}), flannel mode {}, state {}, fabric {} (br0)\n\n",
            self.name,
            self.phase,
            self.mode,
            self.state_dir.display(),
            self.fabric_netns
        );
        let mut rows = vec![
            [
                "NODE",
                "KIND",
                "NETNS",
                "IP",
                "POD CIDR",
                "AGENT",
                "ADMIN SOCKET / KERNEL",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for n in &self.nodes {
            let (agent, admin) = match &n.kernel {
                Some(k) => (
                    "- (kernel datapath)".to_string(),
                    match &k.error {
                        Some(e) => format!("ERROR {e}"),
                        None => format!(
                            "{}{}, {} flannel routes",
                            match &k.vtep {
                                Some((name, mac)) => format!("{name} {mac}"),
                                None => "no VTEP".to_string(),
                            },
                            if k.bridge { ", cni0" } else { ", NO cni0" },
                            k.routes.len()
                        ),
                    },
                ),
                None => (
                    match &n.node.agent {
                        Some(a) if n.agent_running => format!("pid {} running", a.pid),
                        Some(a) => format!("pid {} DEAD", a.pid),
                        None => "not started".into(),
                    },
                    match &n.admin {
                        Some(i) => format!(
                            "answers (gateway {}, mtu {}{})",
                            i.gateway,
                            i.mtu,
                            if n.node.vxlan_support { ", vxlan" } else { "" }
                        ),
                        None => "NOT ANSWERING".into(),
                    },
                ),
            };
            rows.push(vec![
                n.node.name.clone(),
                n.node.kind.as_str().to_string(),
                n.node.netns.clone(),
                format!("{}/{}", n.node.ip, n.node.prefix_len),
                n.node.pod_cidr.clone().unwrap_or_else(|| "-".into()),
                agent,
                admin,
            ]);
        }
        out.push_str(&table(&rows));
        out.push('\n');
        if let Some(e) = &self.ext {
            out.push_str(&format!(
                "external host: {}{} eth0 {}/{}, test server {} on {} tcp+udp{}\n\n",
                e.ext.netns,
                if e.netns_exists { "" } else { " (GONE)" },
                e.ext.ip,
                e.ext.prefix_len,
                match &e.ext.server {
                    Some(s) if e.server_running => format!("pid {} running", s.pid),
                    Some(s) => format!("pid {} DEAD", s.pid),
                    None => "not started".into(),
                },
                e.ext
                    .ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                if e.ext.routes.is_empty() {
                    String::new()
                } else {
                    format!("; routes {}", e.ext.routes.join(", "))
                }
            ));
        }
        if self.pods.is_empty() {
            out.push_str("no pods\n");
            return out;
        }
        let mut rows = vec![
            ["POD", "NODE", "NETNS", "IP", "MAC", "PORTS", "SERVER"]
                .map(String::from)
                .to_vec(),
        ];
        for p in &self.pods {
            let server = match &p.pod.server {
                Some(s) if p.server_running => format!("pid {} running", s.pid),
                Some(s) => format!("pid {} DEAD", s.pid),
                None => "not started".into(),
            };
            let ports = p
                .pod
                .tcp_ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            rows.push(vec![
                p.pod.display_name(),
                p.pod.node.clone(),
                if p.netns_exists {
                    p.pod.netns.clone()
                } else {
                    format!("{} (GONE)", p.pod.netns)
                },
                p.pod.address.clone().unwrap_or_else(|| "-".into()),
                p.pod.mac.clone().unwrap_or_else(|| "-".into()),
                format!("{ports} tcp+udp"),
                server,
            ]);
        }
        out.push_str(&table(&rows));
        out
    }
}

/// Where a command of `exec`/`probe` runs or goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Node(NodeState),
    Pod(PodState),
    Fabric(String),
    /// The external host.
    Ext(ExtState),
}

impl Target {
    pub fn netns(&self) -> &str {
        match self {
            Target::Node(n) => &n.netns,
            Target::Pod(p) => &p.netns,
            Target::Fabric(ns) => ns,
            Target::Ext(e) => &e.netns,
        }
    }
    /// The address traffic to this target goes to.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        match self {
            Target::Node(n) => Some(n.ip),
            Target::Pod(p) => p.ip(),
            Target::Fabric(_) => None,
            Target::Ext(e) => Some(e.ip),
        }
    }
    pub fn label(&self) -> String {
        match self {
            Target::Node(n) => n.name.clone(),
            Target::Pod(p) => p.display_name(),
            Target::Fabric(_) => "fabric".into(),
            Target::Ext(_) => names::EXT.into(),
        }
    }
}

/// A node (`server1`), `fabric`, `ext` (the external host), or a pod (`name` or
/// `namespace/name`).
pub fn resolve_target(st: &LabState, what: &str) -> Result<Target> {
    if let Some(n) = st.node(what) {
        return Ok(Target::Node(n.clone()));
    }
    if what == "fabric" {
        return Ok(Target::Fabric(st.fabric_netns.clone()));
    }
    if what == names::EXT {
        return st.ext.clone().map(Target::Ext).ok_or_else(|| {
            anyhow!(
                "lab {} has no external host (made before it existed; recreate the lab)",
                st.name
            )
        });
    }
    Ok(Target::Pod(st.find_pod(what)?.clone()))
}

/// Runs `cmd` inside the target's namespace with the terminal's stdio; its exit code
/// (128 + signal when it was killed).
pub fn exec(cfg: &LabConfig, what: &str, cmd: &[String]) -> Result<i32> {
    if cmd.is_empty() {
        bail!("no command given (usage: xdplane lab exec POD -- CMD ...)");
    }
    let st = cfg.load()?;
    let t = resolve_target(&st, what)?;
    let status = Command::new(netns::ip_bin())
        .args(["netns", "exec", t.netns()])
        .args(cmd)
        .status()
        .with_context(|| format!("running {} in {}", cmd.join(" "), t.netns()))?;
    Ok(exit_code(status))
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Runs `cmd` in the target's namespace and captures its output.
pub fn exec_capture(st: &LabState, what: &str, cmd: &[String]) -> Result<(i32, String)> {
    let t = resolve_target(st, what)?;
    let out = Command::new(netns::ip_bin())
        .args(["netns", "exec", t.netns()])
        .args(cmd)
        .output()
        .with_context(|| format!("running {} in {}", cmd.join(" "), t.netns()))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((exit_code(out.status), text))
}

/// `PORT`, `PORT/tcp` or `PORT/udp`.
pub fn parse_port(s: &str) -> Result<(u16, Proto)> {
    let (p, proto) = match s.split_once('/') {
        Some((p, proto)) => (p, proto.parse()?),
        None => (s, Proto::Tcp),
    };
    let port: u16 = p
        .parse()
        .with_context(|| format!("invalid port {s:?} (PORT[/tcp|/udp])"))?;
    if port == 0 {
        bail!("port 0 cannot be probed");
    }
    Ok((port, proto))
}

/// The result of `lab probe`.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub from: String,
    pub to: String,
    pub addr: String,
    pub proto: String,
    pub ok: bool,
    /// What `testpod probe` printed.
    pub output: String,
}

impl ProbeReport {
    pub fn line(&self) -> String {
        format!(
            "{} {} -> {} ({} {}): {}",
            if self.ok { "✓" } else { "✗" },
            self.from,
            self.to,
            self.proto,
            self.addr,
            self.output
        )
    }
}

/// Probes `to` (pod, node or IP) on `port` from inside `from`'s namespace, with
/// `xdplane testpod probe`.
pub fn probe(
    cfg: &LabConfig,
    from: &str,
    to: &str,
    port: u16,
    proto: Proto,
    timeout: Duration,
) -> Result<ProbeReport> {
    let st = cfg.load()?;
    probe_in(&st, from, to, port, proto, timeout)
}

/// [`probe`] with a loaded state.
pub fn probe_in(
    st: &LabState,
    from: &str,
    to: &str,
    port: u16,
    proto: Proto,
    timeout: Duration,
) -> Result<ProbeReport> {
    probe_cmd(st, from, to, port, proto, timeout, Extra::default())
}

/// [`probe_in`] asking `ask` (`clientip`: the address the server saw, after any NAT).
pub fn probe_ask_in(
    st: &LabState,
    from: &str,
    to: &str,
    port: u16,
    proto: Proto,
    ask: Ask,
    timeout: Duration,
) -> Result<ProbeReport> {
    probe_cmd(
        st,
        from,
        to,
        port,
        proto,
        timeout,
        Extra {
            ask,
            ..Extra::default()
        },
    )
}

/// What a probe does besides connecting.
#[derive(Debug, Clone, Copy, Default)]
struct Extra {
    ask: Ask,
    bytes: Option<u64>,
    rate: Option<u64>,
}

/// A bulk TCP transfer: `bytes` bytes from `from` to the test server of `to` on `port` and
/// back (`testpod probe --bytes`), checked byte for byte, within `timeout`.
pub fn transfer_in(
    st: &LabState,
    from: &str,
    to: &str,
    port: u16,
    bytes: u64,
    timeout: Duration,
) -> Result<ProbeReport> {
    transfer_paced_in(st, from, to, port, bytes, None, timeout)
}

/// [`transfer_in`] at most `rate` bytes per second (so that it lasts a known time).
pub fn transfer_paced_in(
    st: &LabState,
    from: &str,
    to: &str,
    port: u16,
    bytes: u64,
    rate: Option<u64>,
    timeout: Duration,
) -> Result<ProbeReport> {
    probe_cmd(
        st,
        from,
        to,
        port,
        Proto::Tcp,
        timeout,
        Extra {
            bytes: Some(bytes),
            rate,
            ..Extra::default()
        },
    )
}

/// The command line of `xdplane testpod probe` from the lab's binary directory (what
/// [`probe_in`] and [`transfer_paced_in`] run in FROM's namespace).
pub fn probe_argv(
    st: &LabState,
    to: SocketAddrV4,
    proto: Proto,
    ask: Ask,
    bytes: Option<u64>,
    rate: Option<u64>,
    timeout: Duration,
) -> Vec<String> {
    let mut cmd = vec![
        st.bin_dir.join(AGENT_BIN).display().to_string(),
        "testpod".into(),
        "probe".into(),
        "--to".into(),
        to.to_string(),
        "--proto".into(),
        proto.as_str().into(),
        "--timeout".into(),
        format!("{}ms", timeout.as_millis()),
    ];
    if ask != Ask::Hostname {
        cmd.extend(["--ask".into(), ask.as_str().into()]);
    }
    if let Some(n) = bytes {
        cmd.extend(["--bytes".into(), n.to_string()]);
        if let Some(r) = rate {
            cmd.extend(["--rate".into(), r.to_string()]);
        }
    }
    cmd
}

fn probe_cmd(
    st: &LabState,
    from: &str,
    to: &str,
    port: u16,
    proto: Proto,
    timeout: Duration,
    extra: Extra,
) -> Result<ProbeReport> {
    let src = resolve_target(st, from)?;
    let (to_label, ip) = match to.parse::<Ipv4Addr>() {
        Ok(ip) => (ip.to_string(), ip),
        Err(_) => {
            let t = resolve_target(st, to)?;
            let ip = t
                .ip()
                .ok_or_else(|| anyhow!("{} has no address to probe", t.label()))?;
            (t.label(), ip)
        }
    };
    let addr = SocketAddrV4::new(ip, port);
    let cmd = probe_argv(st, addr, proto, extra.ask, extra.bytes, extra.rate, timeout);
    let (code, out) = exec_capture(st, from, &cmd)?;
    Ok(ProbeReport {
        from: src.label(),
        to: to_label,
        addr: addr.to_string(),
        proto: proto.as_str().into(),
        ok: code == 0,
        output: out.trim().lines().collect::<Vec<_>>().join(" | "),
    })
}

/// What [`capture_fabric`] saw.
#[derive(Debug, Clone)]
pub struct Capture {
    /// tcpdump's packet lines.
    pub packets: String,
    /// How many packets tcpdump says it captured.
    pub captured: usize,
    /// tcpdump's stderr (its summary).
    pub summary: String,
}

/// Runs `tcpdump -i br0 -nn -T vxlan -c COUNT FILTER` in the fabric's namespace (under
/// `timeout`), runs `traffic` once tcpdump listens, and returns what it captured with
/// `traffic`'s result. `-T vxlan` makes tcpdump decode port 8472 as VXLAN (it would print it
/// as OTV otherwise, 4789 being VXLAN's IANA port).
pub fn capture_fabric<R>(
    st: &LabState,
    filter: &str,
    count: usize,
    timeout: Duration,
    traffic: impl FnOnce() -> R,
) -> Result<(Capture, R)> {
    use std::io::{BufRead, BufReader, Read};
    let secs = timeout.as_secs().max(1).to_string();
    let mut args: Vec<String> = [
        "netns",
        "exec",
        &st.fabric_netns,
        "timeout",
        &secs,
        "tcpdump",
    ]
    .map(String::from)
    .to_vec();
    args.extend(["-i", "br0", "-nn", "-l", "-T", "vxlan", "-c"].map(String::from));
    args.push(count.to_string());
    args.extend(filter.split_whitespace().map(String::from));
    let mut child = Command::new(netns::ip_bin())
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting tcpdump in the fabric namespace")?;
    let mut stdout = child.stdout.take().context("tcpdump stdout")?;
    let stderr = child.stderr.take().context("tcpdump stderr")?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let err_reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut r = BufReader::new(stderr);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            line.clear();
        }
        all
    });
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    if rx.recv_timeout(Duration::from_secs(5)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        let err = err_reader.join().unwrap_or_default();
        bail!(
            "tcpdump did not start in {}: {}",
            st.fabric_netns,
            err.trim()
        );
    }
    let r = traffic();
    let _ = child.wait();
    let packets = out_reader.join().unwrap_or_default();
    let summary = err_reader.join().unwrap_or_default();
    let captured = summary
        .lines()
        .find_map(|l| {
            l.strip_suffix(" packets captured")
                .or(l.strip_suffix(" packet captured"))
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Ok((
        Capture {
            packets,
            captured,
            summary,
        },
        r,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port("80").unwrap(), (80, Proto::Tcp));
        assert_eq!(parse_port("53/udp").unwrap(), (53, Proto::Udp));
        assert_eq!(parse_port("443/TCP").unwrap(), (443, Proto::Tcp));
        assert!(parse_port("0").is_err());
        assert!(parse_port("80/sctp").is_err());
        assert!(parse_port("x/tcp").is_err());
        assert_eq!(server_ports(&[]), vec![80]);
        assert_eq!(server_ports(&[8080, 80, 80]), vec![80, 8080]);
    }

    #[test]
    fn tables_align() {
        let t = table(&[
            vec!["A".into(), "BB".into(), "C".into()],
            vec!["long".into(), "x".into(), "y".into()],
        ]);
        assert_eq!(t, "A     BB  C\nlong  x   y\n");
    }

    #[test]
    fn missing_binaries_are_named() {
        let e = check_binaries(Path::new("/nonexistent-dir"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent-dir/xdplane and /nonexistent-dir/xdplane-cni"),
            "{e}"
        );
        assert!(
            e.contains("cargo build -p xdplane-agent -p xdplane-cni"),
            "{e}"
        );
    }
}
