//! The lab's operations: up, down, status, pods, exec, probe.

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use xdplane_api::{Client, NodeInfo, Request};
use xdplane_control::model::Protocol;

use crate::cni::{self, CniCall};
use crate::manifests;
use crate::names;
use crate::netns;
use crate::procs::{self, ProcRecord};
use crate::state::{LabState, NodeState, PodState, STATE_ROOT, STATE_VERSION, StateDir};
use crate::testpod::Proto;

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

/// Options of `up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: usize,
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
            manifests: None,
            no_pods: false,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            pod_mtu: None,
            verbose: false,
        }
    }
}

/// A pod to create by hand (`lab add-pod`, the demo's live pod).
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// Ports the test server listens on, TCP and UDP alike (empty: 80).
    pub ports: Vec<u16>,
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
    let bin_dir = cfg.resolve_bin_dir()?;
    check_binaries(&bin_dir)?;
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
    };
    sd.save(&st)?;
    let r = up_steps(cfg, opts, &sd, &mut st);
    if let Err(e) = &r {
        // Failed before creating any namespace or process: nothing to keep but files.
        let nothing_made = st.nodes.iter().all(|n| n.agent.is_none())
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

fn up_steps(cfg: &LabConfig, opts: &UpOptions, sd: &StateDir, st: &mut LabState) -> Result<()> {
    let v = opts.verbose;
    let prepared = manifests::prepare(&st.manifests_source, &st.manifests_dir, opts.nodes)?;
    for w in &prepared.warnings {
        eprintln!("warning: {w}");
    }
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
            "manifests: {} (+ {} generated Node objects) -> {}",
            st.manifests_source.display(),
            prepared.nodes.iter().filter(|n| n.generated).count(),
            st.manifests_dir.display()
        ),
    );

    // Fabric: one bridge.
    netns::add(&st.fabric_netns)?;
    netns::ip_in(&st.fabric_netns, &["link", "add", "br0", "type", "bridge"])?;
    netns::ip_in(&st.fabric_netns, &["link", "set", "br0", "up"])?;
    say(v, format!("fabric: {} with bridge br0", st.fabric_netns));

    // Nodes: eth0 in the node, its peer s<i> on the bridge.
    for n in &prepared.nodes {
        let ns = names::node_netns(&cfg.name, n.index);
        let port = names::fabric_port(n.index);
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
        netns::ip_in(&st.fabric_netns, &["link", "set", &port, "master", "br0"])?;
        netns::ip_in(&st.fabric_netns, &["link", "set", &port, "up"])?;
        say(
            v,
            format!("node {}: {ns}, eth0 {addr}, pods {}", n.name, n.pod_cidr),
        );
    }

    // CNI configs (what the runtime would have in /etc/cni/net.d).
    for n in &st.nodes {
        std::fs::create_dir_all(&n.ipam_dir)?;
        if let Some(d) = n.cni_conf.parent() {
            std::fs::create_dir_all(d)?;
        }
        let conf = cni::net_conf(&n.admin_socket, &n.ipam_dir);
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
        let info = wait_agent_ready(&st.nodes[*i], child, opts.ready_timeout)?;
        let n = &mut st.nodes[*i];
        say(
            v,
            format!(
                "agent {}: ready (pod CIDR {}, gateway {}, mtu {})",
                n.name, info.pod_cidr, info.gateway, info.mtu
            ),
        );
        n.pod_cidr = Some(info.pod_cidr);
        n.gateway = Some(info.gateway);
    }
    sd.save(st)?;
    // The children are not waited for: they run on after `up` returns (reaped by init, or
    // by `down` when it runs in this process).
    drop(children);

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
    Ok(())
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
        out.push(PodSpec {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            node,
            ports,
        });
    }
    Ok(out)
}

/// Asks the agent `node-info` once.
pub fn node_info(socket: &Path, timeout: Duration) -> Result<NodeInfo> {
    let mut c = Client::connect(socket, timeout)?;
    Ok(c.call_as::<NodeInfo>(&Request::NodeInfo)?)
}

fn wait_agent_ready(n: &NodeState, child: &mut Child, timeout: Duration) -> Result<NodeInfo> {
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
        let last_err = match node_info(&n.admin_socket, Duration::from_secs(1)) {
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

fn cni_call<'a>(
    st: &'a LabState,
    node: &'a NodeState,
    pod: &'a PodState,
    conf: &'a serde_json::Value,
) -> CniCall<'a> {
    CniCall {
        bin_dir: &st.bin_dir,
        node_netns: &node.netns,
        container_id: &pod.container_id,
        pod_netns: &pod.netns,
        pod_namespace: &pod.namespace,
        pod_name: &pod.name,
        conf,
    }
}

fn node_conf(node: &NodeState) -> serde_json::Value {
    cni::net_conf(&node.admin_socket, &node.ipam_dir)
}

/// Adds one pod to a running lab: its namespace, CNI ADD through the plugin (the agent
/// attaches it live), and its test server.
pub fn add_pod(cfg: &LabConfig, spec: &PodSpec) -> Result<PodState> {
    let sd = cfg.state_dir();
    let _lock = sd.lock()?;
    let mut st = cfg.load()?;
    add_pod_locked(&sd, &mut st, spec)
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
    };
    st.pods.push(pod.clone());
    let idx = st.pods.len() - 1;
    sd.save(st)?;

    netns::add(&ns)?;
    st.pods[idx].cni_attempted = true;
    sd.save(st)?;
    let conf = node_conf(&node);
    let res = cni::add(&cni_call(st, &node, &pod, &conf))?;
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
    let want = format!("testpod {}: serving", pod.name);
    let deadline = Instant::now() + SERVER_READY_TIMEOUT;
    loop {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains(&want)) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the test server of pod {} exited ({status}); last lines of {}:\n{}",
                pod.display_name(),
                log.display(),
                procs::log_tail(log, TAIL_LINES)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "the test server of pod {} did not start within {}s; last lines of {}:\n{}",
                pod.display_name(),
                SERVER_READY_TIMEOUT.as_secs(),
                log.display(),
                procs::log_tail(log, TAIL_LINES)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes one pod: its server, CNI DEL, its namespace.
pub fn del_pod(cfg: &LabConfig, what: &str) -> Result<PodState> {
    let sd = cfg.state_dir();
    let _lock = sd.lock()?;
    let mut st = cfg.load()?;
    let pod = st.find_pod(what)?.clone();
    if let Some(rec) = &pod.server {
        procs::stop_all(std::slice::from_ref(rec), STOP_GRACE);
    }
    let node = st
        .node(&pod.node)
        .cloned()
        .ok_or_else(|| anyhow!("pod {} is on unknown node {}", pod.display_name(), pod.node))?;
    if pod.cni_attempted {
        let conf = node_conf(&node);
        cni::del(&cni_call(&st, &node, &pod, &conf), pod.cni_result.as_ref())?;
    }
    if netns::exists(&pod.netns) {
        netns::del(&pod.netns)?;
    }
    st.pods
        .retain(|p| !(p.namespace == pod.namespace && p.name == pod.name));
    sd.save(&st)?;
    Ok(pod)
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
        let servers: Vec<ProcRecord> = st.pods.iter().filter_map(|p| p.server.clone()).collect();
        let r = procs::stop_all(&servers, STOP_GRACE);
        rep.processes_stopped += r.terminated + r.killed;
        for pod in st.pods.iter().filter(|p| p.cni_attempted) {
            let Some(node) = st.node(&pod.node) else {
                continue;
            };
            let agent_up = node.agent.as_ref().is_some_and(ProcRecord::alive);
            if !agent_up || !netns::exists(&node.netns) {
                continue;
            }
            let conf = node_conf(node);
            match cni::del(&cni_call(st, node, pod, &conf), pod.cni_result.as_ref()) {
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
    pub state_dir: PathBuf,
    pub fabric_netns: String,
    pub nodes: Vec<NodeStatus>,
    pub pods: Vec<PodStatus>,
}

impl StatusReport {
    /// Every agent answers and every pod's server runs.
    pub fn healthy(&self) -> bool {
        self.phase == "ready"
            && self
                .nodes
                .iter()
                .all(|n| n.agent_running && n.admin.is_some())
            && self.pods.iter().all(|p| p.server_running && p.netns_exists)
    }
}

pub fn status(cfg: &LabConfig) -> Result<StatusReport> {
    let st = cfg.load()?;
    let nodes = st
        .nodes
        .iter()
        .map(|n| {
            let info = node_info(&n.admin_socket, Duration::from_secs(1));
            NodeStatus {
                node: n.clone(),
                agent_running: n.agent.as_ref().is_some_and(ProcRecord::alive),
                admin_error: info.as_ref().err().map(|e| format!("{e:#}")),
                admin: info.ok(),
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
        state_dir: cfg.state_dir().dir,
        fabric_netns: st.fabric_netns.clone(),
        nodes,
        pods,
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
            "lab {} ({}), state {}, fabric {} (br0)\n\n",
            self.name,
            self.phase,
            self.state_dir.display(),
            self.fabric_netns
        );
        let mut rows = vec![
            ["NODE", "NETNS", "IP", "POD CIDR", "AGENT", "ADMIN SOCKET"]
                .map(String::from)
                .to_vec(),
        ];
        for n in &self.nodes {
            let agent = match &n.node.agent {
                Some(a) if n.agent_running => format!("pid {} running", a.pid),
                Some(a) => format!("pid {} DEAD", a.pid),
                None => "not started".into(),
            };
            let admin = match &n.admin {
                Some(i) => format!("answers (gateway {}, mtu {})", i.gateway, i.mtu),
                None => "NOT ANSWERING".into(),
            };
            rows.push(vec![
                n.node.name.clone(),
                n.node.netns.clone(),
                format!("{}/{}", n.node.ip, n.node.prefix_len),
                n.node.pod_cidr.clone().unwrap_or_else(|| "-".into()),
                agent,
                admin,
            ]);
        }
        out.push_str(&table(&rows));
        out.push('\n');
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
}

impl Target {
    pub fn netns(&self) -> &str {
        match self {
            Target::Node(n) => &n.netns,
            Target::Pod(p) => &p.netns,
            Target::Fabric(ns) => ns,
        }
    }
    /// The address traffic to this target goes to.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        match self {
            Target::Node(n) => Some(n.ip),
            Target::Pod(p) => p.ip(),
            Target::Fabric(_) => None,
        }
    }
    pub fn label(&self) -> String {
        match self {
            Target::Node(n) => n.name.clone(),
            Target::Pod(p) => p.display_name(),
            Target::Fabric(_) => "fabric".into(),
        }
    }
}

/// A node (`server1`), `fabric`, or a pod (`name` or `namespace/name`).
pub fn resolve_target(st: &LabState, what: &str) -> Result<Target> {
    if let Some(n) = st.node(what) {
        return Ok(Target::Node(n.clone()));
    }
    if what == "fabric" {
        return Ok(Target::Fabric(st.fabric_netns.clone()));
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
    let cmd = vec![
        st.bin_dir.join(AGENT_BIN).display().to_string(),
        "testpod".into(),
        "probe".into(),
        "--to".into(),
        addr.to_string(),
        "--proto".into(),
        proto.as_str().into(),
        "--timeout".into(),
        format!("{}ms", timeout.as_millis()),
    ];
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
