//! `xdplane run`: the node agent.
//!
//! Threads: the main thread (signals and shutdown), one admin-socket thread per client, and
//! the poll-mode workers. All control state sits in one [`Agent`] behind a mutex; packets
//! never touch it — workers only read the published snapshot and take commands between
//! batches.

use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xdplane_api::{Attachment, NodeInfo};
use xdplane_control::compile::{LocalAttachment, LocalState, UplinkInfo, compile};
use xdplane_control::model::{BackendType, Ipv4Cidr, Model, NetConf, fmt_mac};
use xdplane_pipeline::tables::conntrack::{FlowTable, FlowTableConfig, Timeouts};
use xdplane_pipeline::{PortConfig, PortId, PortKind, Snapshot};
use xdplane_worker::{Command, PollMode, Published, WorkerConfig, WorkerHandle};
use xdplane_xsk::{
    BindMode, HugepagePolicy, SocketConfig, UmemConfig, XdpMaps, XdpMode, XdpProgram,
};

/// Options of `xdplane run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOpts {
    /// This node's name (the Node object whose podCIDR the pods get).
    #[arg(long, env = "XDPLANE_NODE")]
    pub node: String,
    /// Directory of Kubernetes manifests (multi-document YAML) to load the model from.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Pod CIDR of this node, overriding the Node object's spec.podCIDR.
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// The node's uplink device; traffic to the pod CIDR arriving on it goes to the dataplane,
    /// everything else to the kernel.
    #[arg(long)]
    pub uplink: Option<String>,
    /// Admin socket path.
    #[arg(long, env = "XDPLANE_ADMIN_SOCKET", default_value = xdplane_api::DEFAULT_ADMIN_SOCKET)]
    pub admin_socket: PathBuf,
    /// Number of poll-mode workers.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Cores to pin workers to, comma separated (worker i gets the i-th); none: not pinned.
    #[arg(long, value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// Polling mode: adaptive (sleep when idle) or busy (spin).
    #[arg(long, default_value = "adaptive")]
    pub poll: PollMode,
    /// XDP attach mode: auto (native, else generic), native, generic.
    #[arg(long, default_value = "auto")]
    pub xdp_mode: String,
    /// AF_XDP bind mode: auto (zero-copy, else copy), zerocopy, copy.
    #[arg(long, default_value = "auto")]
    pub bind_mode: String,
    /// UMEM backing: auto (2 MiB hugepages, else 4 KiB pages), on (hugepages required), off.
    #[arg(long, default_value = "auto")]
    pub hugepages: String,
    /// UMEM frames per worker (4 KiB each).
    #[arg(long, default_value_t = 16384)]
    pub frames: u32,
    /// MTU given to pods (default: as flannel, the uplink MTU − 50 with vxlan, the uplink
    /// MTU with host-gw, 1500 without an uplink).
    #[arg(long)]
    pub pod_mtu: Option<u32>,
    /// flannel's net-conf.json, instead of the kube-system/kube-flannel-cfg ConfigMap.
    #[arg(long)]
    pub net_conf: Option<PathBuf>,
    /// The uplink's default gateway (default: the kernel's default route on the uplink).
    #[arg(long)]
    pub gateway: Option<Ipv4Addr>,
    /// Where the attachments are saved so that a restarted agent re-attaches running pods
    /// (default: next to the admin socket; `none` to disable).
    #[arg(long)]
    pub state: Option<String>,
    /// Source ports (inclusive) the dataplane uses when it translates a source to the node
    /// IP or the pod gateway (masquerade, Service SNAT); split between workers. Must be
    /// disjoint from the kernel's net.ipv4.ip_local_port_range and the NodePort range.
    #[arg(long, default_value = "61000-65535", value_parser = crate::nat::parse_port_range)]
    pub snat_ports: (u16, u16),
    /// Do not masquerade pod traffic that leaves the cluster network (flannel's
    /// `--ip-masq=false`). Services still masquerade where kube-proxy would.
    #[arg(long)]
    pub no_masquerade: bool,
    /// Most connections the shared connection-tracking table holds (NATed flows and
    /// session-affinity entries).
    #[arg(long, default_value_t = 262_144)]
    pub conntrack_max: usize,
}

impl RunOpts {
    fn state_file(&self) -> Option<PathBuf> {
        match self.state.as_deref() {
            Some("none") => None,
            Some(p) => Some(PathBuf::from(p)),
            None => Some(self.admin_socket.with_extension("attachments.json")),
        }
    }
}

fn parse_xdp_mode(s: &str) -> Result<XdpMode> {
    Ok(match s {
        "auto" => XdpMode::Auto,
        "native" | "drv" => XdpMode::Native,
        "generic" | "skb" => XdpMode::Generic,
        o => bail!("--xdp-mode {o:?}: expected auto, native or generic"),
    })
}

fn parse_bind_mode(s: &str) -> Result<BindMode> {
    Ok(match s {
        "auto" => BindMode::Auto,
        "zerocopy" | "zero-copy" => BindMode::ZeroCopy,
        "copy" => BindMode::Copy,
        o => bail!("--bind-mode {o:?}: expected auto, zerocopy or copy"),
    })
}

fn parse_hugepages(s: &str) -> Result<HugepagePolicy> {
    Ok(match s {
        "auto" => HugepagePolicy::Auto,
        "on" | "require" => HugepagePolicy::Require,
        "off" | "never" => HugepagePolicy::Never,
        o => bail!("--hugepages {o:?}: expected auto, on or off"),
    })
}

/// A port the agent attached: its device, sockets and (for pods) its attachment.
struct PortState {
    cfg: PortConfig,
    /// (worker index, queue, slot) of every socket.
    sockets: Vec<(usize, u32, u32)>,
    attachment: Option<Attachment>,
}

/// All control state of the node agent.
pub struct Agent {
    opts: RunOpts,
    xdp_mode: XdpMode,
    bind_mode: BindMode,
    model: Model,
    model_errors: Vec<String>,
    /// Problems of the SNAT port range found at start (shown by `stats`).
    nat_warnings: Vec<String>,
    pod_cidr_override: Option<Ipv4Cidr>,
    ports: BTreeMap<PortId, PortState>,
    xdp: XdpProgram,
    maps: XdpMaps,
    pub workers: Vec<WorkerHandle>,
    published: Arc<Published>,
    generation: u64,
    next_slot: u32,
    free_slots: Vec<u32>,
    state_file: Option<PathBuf>,
    uplink: Option<UplinkInfo>,
    net_conf_override: Option<NetConf>,
    neighbours: Vec<(Ipv4Addr, [u8; 6])>,
    /// (address, protocol, port) the XDP program redirects on the uplink.
    owned_services: BTreeSet<(Ipv4Addr, u8, u16)>,
    /// What the XDP program's nat_config holds.
    nat_config: Option<xdplane_xsk::NatConfig>,
    /// The node's connection-tracking table (shared with the workers) and the clock origin
    /// of the workers' batches.
    flows: Arc<FlowTable>,
    epoch: Instant,
    sweeper: Option<crate::nat::Sweeper>,
    /// Every (address, port) of every backend set of the published snapshot.
    backends: BTreeSet<(Ipv4Addr, u16)>,
    /// Next hops the routes need, for the resolver.
    wanted_hops: Option<crossbeam_channel::Sender<Vec<Ipv4Addr>>>,
    pub neigh: Option<Arc<crate::neigh::Shared>>,
}

const UPLINK_PORT: PortId = 0;

impl Agent {
    /// Loads the model, the XDP program and the workers, and attaches the uplink.
    pub fn start(
        opts: RunOpts,
        misses: Option<crossbeam_channel::Sender<Ipv4Addr>>,
    ) -> Result<Agent> {
        let xdp_mode = parse_xdp_mode(&opts.xdp_mode)?;
        let bind_mode = parse_bind_mode(&opts.bind_mode)?;
        let hugepages = parse_hugepages(&opts.hugepages)?;
        if opts.workers == 0 {
            bail!("--workers must be at least 1");
        }
        if opts.workers > usize::from(opts.snat_ports.1 - opts.snat_ports.0) + 1 {
            bail!(
                "--snat-ports {}-{} has fewer ports than --workers {}",
                opts.snat_ports.0,
                opts.snat_ports.1,
                opts.workers
            );
        }
        if opts.conntrack_max == 0 {
            bail!("--conntrack-max must be at least 1");
        }
        let kernel_ports =
            match crate::nat::read_local_port_range(Path::new(crate::nat::LOCAL_PORT_RANGE)) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!("cannot check the SNAT range against the kernel's: {e}");
                    None
                }
            };
        let nat_warnings =
            crate::nat::snat_range_warnings(opts.snat_ports, kernel_ports, opts.workers);
        for w in &nat_warnings {
            tracing::warn!("{w}");
        }
        let pod_cidr_override = match &opts.pod_cidr {
            Some(s) => Some(
                s.parse::<Ipv4Cidr>()
                    .map_err(|e| anyhow!("--pod-cidr {s:?}: {e}"))?,
            ),
            None => None,
        };
        let (model, model_errors) = load_model(&opts)?;
        let net_conf_override = match &opts.net_conf {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading --net-conf {}", p.display()))?;
                Some(
                    NetConf::parse(&text)
                        .map_err(|e| anyhow!("--net-conf {}: {e}", p.display()))?,
                )
            }
            None => None,
        };
        let xdp = XdpProgram::load().context("loading the XDP program")?;
        let maps = xdp.maps();

        // Generation 0: node tables only, so workers start with a valid snapshot.
        let local = LocalState {
            node: opts.node.clone(),
            pod_cidr_override,
            pod_mtu: opts.pod_mtu,
            net_conf_override: net_conf_override.clone(),
            masquerade: Some(!opts.no_masquerade),
            snat_ports: Some(opts.snat_ports),
            ..Default::default()
        };
        let first = compile_checked(&model, &local, 0)?;
        let published = Arc::new(Published::new(first));

        // One flow table for the node: every worker looks flows up in it (a reply may
        // arrive on any worker), the sweeper expires them. One clock origin for all.
        let flows = Arc::new(FlowTable::new(FlowTableConfig {
            capacity: opts.conntrack_max,
            timeouts: Timeouts::default(),
        }));
        let epoch = Instant::now();
        tracing::info!(
            capacity = flows.capacity(),
            slots = flows.slots(),
            mib = flows.memory_bytes() >> 20,
            "connection-tracking table allocated"
        );

        let mut workers = Vec::new();
        for i in 0..opts.workers {
            let cfg = WorkerConfig {
                id: i,
                workers: opts.workers,
                flows: flows.clone(),
                epoch,
                core: opts.cores.get(i).copied(),
                poll: opts.poll,
                umem: UmemConfig {
                    frame_count: opts.frames,
                    hugepages,
                },
                misses: misses.clone(),
            };
            workers.push(
                xdplane_worker::spawn(cfg, published.clone(), maps.clone())
                    .with_context(|| format!("starting worker {i}"))?,
            );
        }
        let sweeper = crate::nat::Sweeper::start(flows.clone(), epoch)
            .context("starting the flow table's sweeper")?;
        let mut agent = Agent {
            flows,
            epoch,
            sweeper: Some(sweeper),
            backends: BTreeSet::new(),
            opts,
            xdp_mode,
            bind_mode,
            model,
            model_errors,
            nat_warnings,
            pod_cidr_override,
            ports: BTreeMap::new(),
            xdp,
            maps,
            workers,
            published,
            generation: 0,
            next_slot: 0,
            free_slots: vec![],
            state_file: None,
            uplink: None,
            net_conf_override,
            neighbours: vec![],
            owned_services: BTreeSet::new(),
            nat_config: None,
            wanted_hops: None,
            neigh: None,
        };
        agent.state_file = agent.opts.state_file();
        if let Some(up) = agent.opts.uplink.clone() {
            agent
                .attach_uplink(&up)
                .with_context(|| format!("attaching the uplink {up}"))?;
        }
        agent.publish()?;
        agent.restore_state();
        Ok(agent)
    }

    fn local_state(&self) -> LocalState {
        let mut attachments = vec![];
        for (id, p) in &self.ports {
            if let Some(a) = &p.attachment {
                // Validated on attach: the IP and MAC parse.
                if let (Ok(ip), Some(mac)) = (a.ip.parse::<Ipv4Addr>(), parse_mac(&a.mac)) {
                    attachments.push(LocalAttachment {
                        port: *id,
                        ip,
                        mac,
                        pod_namespace: a.pod_namespace.clone(),
                        pod_name: a.pod_name.clone(),
                        container_id: a.container_id.clone(),
                    });
                }
            }
        }
        LocalState {
            node: self.opts.node.clone(),
            pod_cidr_override: self.pod_cidr_override,
            pod_mtu: self.opts.pod_mtu,
            ports: self.ports.values().map(|p| p.cfg.clone()).collect(),
            attachments,
            uplink: self.uplink.clone(),
            net_conf_override: self.net_conf_override.clone(),
            neighbours: self.neighbours.clone(),
            masquerade: Some(!self.opts.no_masquerade),
            snat_ports: Some(self.opts.snat_ports),
        }
    }

    /// Compiles the model and local state into a new generation and publishes it.
    fn publish(&mut self) -> Result<()> {
        let snap = compile_checked(&self.model, &self.local_state(), self.generation + 1)?;
        self.generation += 1;
        tracing::info!(
            generation = self.generation,
            ports = self.ports.len(),
            endpoints = snap.local.len(),
            "published tables"
        );
        let hops = next_hops(&snap);
        // Tables first, then the XDP program steers the new frontends' traffic to them.
        self.published.publish(snap);
        let snap = self.published.load();
        self.reconcile_owned_services(&snap);
        self.flush_gone_backends(&snap);
        if let Some(tx) = &self.wanted_hops {
            let _ = tx.send(hops);
        }
        Ok(())
    }

    /// flannel's configuration in force: `--net-conf`, else the ConfigMap.
    fn net_conf(&self) -> Option<NetConf> {
        self.net_conf_override
            .clone()
            .or_else(|| self.model.net_conf.clone())
    }

    /// Makes the XDP program own exactly the uplink services the snapshot needs (VXLAN's UDP
    /// port on the node's address in vxlan mode; NodePorts, externalIPs, LoadBalancer IPs)
    /// and take the replies to source-NATed flows (`nat_config`: node IP, SNAT ports).
    fn reconcile_owned_services(&mut self, snap: &Snapshot) {
        let vxlan = match (&self.uplink, self.net_conf()) {
            (Some(u), Some(nc)) if nc.backend == BackendType::Vxlan => Some((u.ip, nc.port)),
            _ => None,
        };
        let want = crate::nat::wanted_owned_services(snap, vxlan);
        let (remove, add) = crate::nat::diff_owned(&self.owned_services, &want);
        for gone in remove {
            match self.maps.remove_owned_service(gone.0, gone.1, gone.2) {
                Ok(_) => {
                    self.owned_services.remove(&gone);
                    tracing::info!(addr = %gone.0, proto = %crate::nat::proto_name(gone.1), port = gone.2, "uplink: service given back to the kernel");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "giving {}:{} back to the kernel", gone.0, gone.2)
                }
            }
        }
        for s in add {
            match self.maps.add_owned_service(s.0, s.1, s.2) {
                Ok(()) => {
                    self.owned_services.insert(s);
                    tracing::info!(addr = %s.0, proto = %crate::nat::proto_name(s.1), port = s.2, "uplink: service owned");
                }
                Err(e) => tracing::warn!(error = %e, "owning {}:{}", s.0, s.2),
            }
        }
        // Replies to the node IP on SNAT ports: only with an uplink (the node IP is its
        // address) — the XDP program only looks at them on REDIRECT_OWNED ports anyway.
        let nat = match (self.uplink.is_some(), snap.node.node_ip) {
            (true, Some(ip)) => Some(xdplane_xsk::NatConfig {
                node_ip: ip,
                ports: snap.node.snat_ports,
            }),
            _ => None,
        };
        if nat != self.nat_config {
            match self.maps.set_nat_config(nat) {
                Ok(()) => {
                    tracing::info!(?nat, "uplink: source-NAT replies");
                    self.nat_config = nat;
                }
                Err(e) => tracing::warn!(error = %e, "setting the XDP nat_config"),
            }
        }
    }

    /// Removes the UDP flows whose backend is in no backend set any more (kube-proxy
    /// flushes those conntrack entries too; TCP flows are left alone).
    fn flush_gone_backends(&mut self, snap: &Snapshot) {
        let now = crate::nat::all_backends(snap);
        let gone: BTreeSet<(Ipv4Addr, u16)> = self.backends.difference(&now).copied().collect();
        self.backends = now;
        if gone.is_empty() {
            return;
        }
        let n = self
            .flows
            .remove_where(|e| crate::nat::udp_flow_to(e, &gone));
        tracing::info!(
            backends = gone.len(),
            flows = n,
            "UDP flows of removed backends flushed"
        );
    }

    /// Up to `max` live flows and the table's counters, for `xdplane conntrack`.
    pub fn conntrack(&self, max: usize) -> xdplane_api::ConntrackDump {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut flows = self.flows.dump(now, max.saturating_add(1));
        let truncated = flows.len() > max;
        flows.truncate(max);
        xdplane_api::ConntrackDump {
            counters: crate::nat::flow_counters(&self.flows),
            truncated,
            flows: flows.iter().map(crate::nat::flow_info).collect(),
        }
    }

    /// Replaces the resolved neighbours; publishes when they changed.
    pub fn set_neighbours(&mut self, list: Vec<(Ipv4Addr, [u8; 6])>) -> Result<()> {
        if list == self.neighbours {
            return Ok(());
        }
        tracing::info!(count = list.len(), "neighbours changed");
        self.neighbours = list;
        self.publish()
    }

    /// Lets the resolver receive the next hops of every publish.
    pub fn set_wanted_hops(&mut self, tx: crossbeam_channel::Sender<Vec<Ipv4Addr>>) {
        let _ = tx.send(next_hops(&self.published.load()));
        self.wanted_hops = Some(tx);
    }

    /// The uplink's identity, when attached.
    pub fn uplink_identity(&self) -> Option<crate::neigh::Identity> {
        let u = self.uplink.as_ref()?;
        let ifindex = self.ports.get(&u.port)?.cfg.ifindex;
        Some(crate::neigh::Identity {
            ifindex,
            ip: u.ip,
            prefix: u.prefix,
            mac: u.mac,
        })
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.load()
    }

    pub fn node_info(&self) -> NodeInfo {
        let s = self.published.load();
        let nc = self.net_conf();
        let vxlan = nc.as_ref().is_some_and(|n| n.backend == BackendType::Vxlan);
        NodeInfo {
            node: self.opts.node.clone(),
            pod_cidr: format!("{}/{}", s.node.pod_net, s.node.pod_prefix),
            gateway: s.node.gateway.to_string(),
            mtu: s.node.pod_mtu,
            backend: nc.as_ref().map(|n| match n.backend {
                BackendType::Vxlan => "vxlan".to_string(),
                BackendType::HostGw => "host-gw".to_string(),
            }),
            vtep_mac: self
                .uplink
                .as_ref()
                .filter(|_| vxlan)
                .map(|u| fmt_mac(u.mac)),
            public_ip: self.uplink.as_ref().map(|u| u.ip.to_string()),
            vni: nc.as_ref().filter(|_| vxlan).map(|n| n.vni),
        }
    }

    fn alloc_port(&self) -> Result<PortId> {
        (1..xdplane_worker::stats::MAX_PORTS as u16)
            .find(|id| !self.ports.contains_key(id))
            .ok_or_else(|| {
                anyhow!(
                    "no free port id (limit {})",
                    xdplane_worker::stats::MAX_PORTS
                )
            })
    }

    fn alloc_slot(&mut self) -> u32 {
        self.free_slots.pop().unwrap_or_else(|| {
            self.next_slot += 1;
            self.next_slot - 1
        })
    }

    /// Binds a socket on every rx queue of `ifname`, spread over the workers.
    fn bind_sockets(
        &mut self,
        port: PortId,
        ifname: &str,
        ifindex: u32,
    ) -> Result<Vec<(usize, u32, u32)>> {
        let queues = xdplane_xsk::rx_queue_count(ifname).unwrap_or(1).max(1);
        let mut done: Vec<(usize, u32, u32)> = vec![];
        for q in 0..queues {
            let w = q as usize % self.workers.len();
            let slot = self.alloc_slot();
            let (tx, rx) = crossbeam_channel::bounded(1);
            let mut cfg = SocketConfig::new(ifindex, q);
            cfg.bind_mode = self.bind_mode;
            let sent = self.workers[w].send(Command::AddSocket {
                port,
                cfg,
                slot,
                reply: tx,
            });
            let res = sent.map_err(|e| anyhow!(e)).and_then(|_| {
                rx.recv_timeout(Duration::from_secs(10))
                    .map_err(|_| anyhow!("worker {w} did not answer"))?
                    .map_err(|e| anyhow!(e))
            });
            match res {
                Ok(()) => done.push((w, q, slot)),
                Err(e) => {
                    self.free_slots.push(slot);
                    self.unbind_sockets(port, &done);
                    return Err(e.context(format!("{ifname} queue {q}")));
                }
            }
        }
        Ok(done)
    }

    fn unbind_sockets(&mut self, port: PortId, sockets: &[(usize, u32, u32)]) {
        let mut workers: Vec<usize> = sockets.iter().map(|s| s.0).collect();
        workers.sort_unstable();
        workers.dedup();
        for w in workers {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if self.workers[w]
                .send(Command::RemovePort { port, reply: tx })
                .is_ok()
            {
                let _ = rx.recv_timeout(Duration::from_secs(10));
            }
        }
        for s in sockets {
            self.free_slots.push(s.2);
        }
    }

    fn attach_uplink(&mut self, ifname: &str) -> Result<()> {
        let ifindex = xdplane_xsk::ifindex_of(ifname)?;
        let mac = xdplane_xsk::mac_of(ifname)?;
        let (ip, prefix) = crate::netinfo::ipv4_of(ifname)?;
        let mtu = crate::netinfo::mtu_of(ifname)?;
        let gateway = match self.opts.gateway {
            Some(g) => Some(g),
            None => crate::netinfo::default_gateway(ifname)?,
        };
        tracing::info!(ifname, %ip, prefix, mtu, gateway = ?gateway, "uplink addressing");
        self.uplink = Some(UplinkInfo {
            port: UPLINK_PORT,
            ip,
            prefix,
            mac,
            mtu,
            gateway,
        });
        let snap = self.published.load();
        let cfg = PortConfig {
            id: UPLINK_PORT,
            name: ifname.to_string(),
            ifindex,
            mac,
            kind: PortKind::Uplink,
        };
        self.maps
            .set_port_policy(ifindex, xdplane_xsk::PORT_REDIRECT_OWNED)?;
        self.maps
            .add_owned_prefix(snap.node.pod_net, snap.node.pod_prefix)?;
        let mode = self.xdp.attach(ifindex, self.xdp_mode)?;
        tracing::info!(
            ifname,
            ifindex,
            ?mode,
            "uplink attached (traffic to the pod CIDR is owned)"
        );
        self.ports.insert(
            UPLINK_PORT,
            PortState {
                cfg,
                sockets: vec![],
                attachment: None,
            },
        );
        self.publish()?;
        let socks = self.bind_sockets(UPLINK_PORT, ifname, ifindex)?;
        if let Some(p) = self.ports.get_mut(&UPLINK_PORT) {
            p.sockets = socks;
        }
        Ok(())
    }

    /// Attaches a pod's host-side interface: tables first, then sockets, then XDP.
    pub fn attach(&mut self, a: Attachment) -> Result<PortId> {
        let ip: Ipv4Addr =
            a.ip.parse()
                .map_err(|_| anyhow!("attach {}: bad IP {:?}", a.container_id, a.ip))?;
        parse_mac(&a.mac)
            .ok_or_else(|| anyhow!("attach {}: bad MAC {:?}", a.container_id, a.mac))?;
        self.prune_stale()?;
        let snap = self.published.load();
        if !snap.node.in_pod_cidr(ip) {
            bail!(
                "attach {}/{}: IP {ip} is outside this node's pod CIDR {}/{}",
                a.pod_namespace,
                a.pod_name,
                snap.node.pod_net,
                snap.node.pod_prefix
            );
        }
        if let Some((id, _)) = self.find_container(&a.container_id) {
            let existing = self.ports[&id].attachment.clone();
            if existing.as_ref() == Some(&a) {
                return Ok(id); // the same ADD again: nothing to do
            }
            bail!(
                "container {} is already attached as port {id}",
                a.container_id
            );
        }
        for p in self.ports.values() {
            if let Some(o) = &p.attachment {
                if o.ip == a.ip {
                    bail!(
                        "IP {ip} is already used by {}/{} (container {})",
                        o.pod_namespace,
                        o.pod_name,
                        o.container_id
                    );
                }
                if o.ifname == a.ifname {
                    bail!(
                        "interface {} is already attached for {}",
                        a.ifname,
                        o.container_id
                    );
                }
            }
        }
        let ifindex = xdplane_xsk::ifindex_of(&a.ifname)?;
        let mac = xdplane_xsk::mac_of(&a.ifname)?;
        let id = self.alloc_port()?;
        self.ports.insert(
            id,
            PortState {
                cfg: PortConfig {
                    id,
                    name: a.ifname.clone(),
                    ifindex,
                    mac,
                    kind: PortKind::Pod,
                },
                sockets: vec![],
                attachment: Some(a.clone()),
            },
        );
        let result = (|| -> Result<Vec<(usize, u32, u32)>> {
            self.publish()?;
            self.maps
                .set_port_policy(ifindex, xdplane_xsk::PORT_REDIRECT_ALL)?;
            let socks = self.bind_sockets(id, &a.ifname, ifindex)?;
            match self.xdp.attach(ifindex, self.xdp_mode) {
                Ok(mode) => tracing::info!(ifname = %a.ifname, ?mode, "XDP attached"),
                Err(e) => {
                    self.unbind_sockets(id, &socks);
                    return Err(e.into());
                }
            }
            Ok(socks)
        })();
        match result {
            Ok(socks) => {
                if let Some(p) = self.ports.get_mut(&id) {
                    p.sockets = socks;
                }
                tracing::info!(
                    pod = %format!("{}/{}", a.pod_namespace, a.pod_name),
                    ifname = %a.ifname, %ip, port = id, "pod attached"
                );
                self.save_state();
                Ok(id)
            }
            Err(e) => {
                self.ports.remove(&id);
                let _ = self.maps.clear_port_policy(ifindex);
                let _ = self.publish();
                Err(e)
            }
        }
    }

    fn find_container(&self, container_id: &str) -> Option<(PortId, &PortState)> {
        self.ports
            .iter()
            .find(|(_, p)| {
                p.attachment
                    .as_ref()
                    .is_some_and(|a| a.container_id == container_id)
            })
            .map(|(id, p)| (*id, p))
    }

    /// Detaches a container's port; `Ok(false)` when nothing was attached.
    pub fn detach(&mut self, container_id: &str) -> Result<bool> {
        let Some((id, _)) = self.find_container(container_id) else {
            return Ok(false);
        };
        let Some(p) = self.ports.remove(&id) else {
            return Ok(false);
        };
        self.publish()?;
        self.unbind_sockets(id, &p.sockets);
        let ifindex = p.cfg.ifindex;
        if !self.xdp.detach(ifindex) {
            tracing::debug!(ifindex, "XDP was not attached (device may be gone)");
        }
        let _ = self.maps.clear_port_policy(ifindex);
        tracing::info!(container_id, port = id, "pod detached");
        self.save_state();
        Ok(true)
    }

    /// The stored attachment of a container, when its device is still there.
    pub fn check(&self, container_id: &str) -> Result<Attachment> {
        let (_, p) = self
            .find_container(container_id)
            .ok_or_else(|| anyhow!("container {container_id} is not attached to this node"))?;
        // The device must still be there with the same index.
        let now = xdplane_xsk::ifindex_of(&p.cfg.name).ok();
        if now != Some(p.cfg.ifindex) {
            bail!(
                "container {container_id}: interface {} (ifindex {}) is gone",
                p.cfg.name,
                p.cfg.ifindex
            );
        }
        p.attachment
            .clone()
            .ok_or_else(|| anyhow!("container {container_id} has no attachment"))
    }

    /// Detaches pods whose host device is gone or was replaced (a DEL the agent missed).
    fn prune_stale(&mut self) -> Result<()> {
        let stale: Vec<String> = self
            .ports
            .values()
            .filter_map(|p| {
                let a = p.attachment.as_ref()?;
                let now = xdplane_xsk::ifindex_of(&p.cfg.name).ok();
                (now != Some(p.cfg.ifindex)).then(|| a.container_id.clone())
            })
            .collect();
        for c in stale {
            tracing::warn!(container_id = %c, "device gone: dropping stale attachment");
            self.detach(&c)?;
        }
        Ok(())
    }

    /// Saves the attachments so a restarted agent re-attaches running pods.
    fn save_state(&self) {
        let Some(path) = &self.state_file else { return };
        let list: Vec<&Attachment> = self
            .ports
            .values()
            .filter_map(|p| p.attachment.as_ref())
            .collect();
        let tmp = path.with_extension("tmp");
        let r = serde_json::to_vec_pretty(&list)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            tracing::warn!(path = %path.display(), error = %e, "saving attachments");
        }
    }

    /// Re-attaches the pods of a previous run whose devices still exist.
    fn restore_state(&mut self) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        let list: Vec<Attachment> = match serde_json::from_slice(&bytes) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable attachment state");
                return;
            }
        };
        for a in list {
            if xdplane_xsk::ifindex_of(&a.ifname).is_err() {
                tracing::info!(container_id = %a.container_id, ifname = %a.ifname, "not restoring: device gone");
                continue;
            }
            let who = format!("{}/{}", a.pod_namespace, a.pod_name);
            match self.attach(a) {
                Ok(port) => tracing::info!(pod = %who, port, "restored attachment"),
                Err(e) => {
                    tracing::warn!(pod = %who, error = %format!("{e:#}"), "could not restore attachment")
                }
            }
        }
        self.save_state();
    }

    /// Re-reads the manifest directory; the old model stays when the directory is unreadable.
    pub fn reload(&mut self) -> Result<serde_json::Value> {
        let (model, errors) = load_model(&self.opts)?;
        // Compile first: a model that cannot compile is not applied.
        compile_checked(&model, &self.local_state(), self.generation + 1)?;
        self.model = model;
        self.model_errors = errors.clone();
        self.publish()?;
        Ok(serde_json::json!({"generation": self.generation, "errors": errors}))
    }

    pub fn stats(&self) -> serde_json::Value {
        let snap = self.published.load();
        let mut workers = vec![];
        for w in &self.workers {
            let s = &w.shared;
            workers.push(serde_json::json!({
                "id": s.id,
                "core": self.opts.cores.get(s.id),
                "poll": self.opts.poll,
                "umem": *s.umem_backing.lock().unwrap(),
                "bindMode": *s.bind_mode.lock().unwrap(),
                "generation": s.generation.load(Ordering::Relaxed),
                "serviceRejects": s.service_rejects.load(Ordering::Relaxed),
                "loops": s.loops.load(Ordering::Relaxed),
                "busyRounds": s.batches.load(Ordering::Relaxed),
                "sleeps": s.sleeps.load(Ordering::Relaxed),
                "frames": *s.frames.lock().unwrap(),
                "sockets": *s.sockets.lock().unwrap(),
            }));
        }
        let mut ports = vec![];
        for (id, p) in &self.ports {
            let mut total = xdplane_worker::stats::PortCounters::default();
            let mut per_worker = vec![];
            for w in &self.workers {
                let c = w.shared.counters.port(*id);
                total.rx_packets += c.rx_packets;
                total.rx_bytes += c.rx_bytes;
                total.tx_packets += c.tx_packets;
                total.tx_bytes += c.tx_bytes;
                for (k, v) in &c.drops {
                    *total.drops.entry(k).or_default() += v;
                }
                per_worker.push(serde_json::json!({"worker": w.shared.id, "counters": c}));
            }
            ports.push(serde_json::json!({
                "id": id,
                "name": p.cfg.name,
                "kind": p.cfg.kind,
                "ifindex": p.cfg.ifindex,
                "pod": p.attachment.as_ref().map(|a| format!("{}/{}", a.pod_namespace, a.pod_name)),
                "ip": p.attachment.as_ref().map(|a| a.ip.clone()),
                "queues": p.sockets.len(),
                "counters": total,
                "perWorker": per_worker,
            }));
        }
        serde_json::json!({
            "node": self.opts.node,
            "generation": snap.generation,
            "workers": workers,
            "ports": ports,
            "modelErrors": self.model_errors,
            "natWarnings": self.nat_warnings,
            "neighbours": snap.neighbours.sorted().iter().map(|(ip, mac)| serde_json::json!({"ip": ip, "mac": fmt_mac(*mac)})).collect::<Vec<_>>(),
            "resolver": self.neigh.as_ref().map(|n| n.stats.lock().unwrap().clone()),
            "conntrack": crate::nat::flow_counters(&self.flows),
            "sweeper": self.sweeper.as_ref().map(|s| s.stats()),
        })
    }

    /// Detaches everything and stops the workers (XDP links go with the program).
    pub fn shutdown(mut self) {
        let ids: Vec<PortId> = self.ports.keys().copied().collect();
        for id in ids {
            if let Some(p) = self.ports.remove(&id) {
                self.unbind_sockets(id, &p.sockets);
                let _ = self.xdp.detach(p.cfg.ifindex);
            }
        }
        for w in self.workers.drain(..) {
            w.stop();
        }
        if let Some(s) = self.sweeper.take() {
            s.stop();
        }
        drop(self.xdp);
        tracing::info!("agent stopped: workers joined, XDP detached");
    }
}

fn compile_checked(model: &Model, local: &LocalState, generation: u64) -> Result<Snapshot> {
    let (snap, warnings) = compile(model, local, generation).map_err(|e| anyhow!("{e}"))?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(snap)
}

fn load_model(opts: &RunOpts) -> Result<(Model, Vec<String>)> {
    let Some(dir) = &opts.manifests else {
        return Ok((Model::default(), vec![]));
    };
    let r = xdplane_control::manifest::load_dir(dir)
        .with_context(|| format!("reading manifests from {}", dir.display()))?;
    let errors: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
    for e in &errors {
        tracing::warn!("manifest skipped: {e}");
    }
    Ok((r.model, errors))
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Runs the agent until SIGINT/SIGTERM.
pub fn run(opts: RunOpts) -> Result<i32> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let sock_path = opts.admin_socket.clone();
    let (miss_tx, miss_rx) = crossbeam_channel::bounded(4096);
    let agent = Agent::start(opts, Some(miss_tx))?;
    let identity = agent.uplink_identity();
    let agent = Arc::new(Mutex::new(agent));
    let resolver = match identity {
        Some(id) => {
            let (wtx, wrx) = crossbeam_channel::unbounded();
            let r = crate::neigh::Resolver::start(id, agent.clone(), wrx, miss_rx)
                .context("starting the ARP resolver on the uplink")?;
            let mut a = agent.lock().unwrap_or_else(|p| p.into_inner());
            a.neigh = Some(r.shared.clone());
            a.set_wanted_hops(wtx);
            Some(r)
        }
        None => None,
    };
    let server = crate::admin::serve(&sock_path, agent.clone(), stop.clone())
        .with_context(|| format!("admin socket {}", sock_path.display()))?;
    tracing::info!(socket = %sock_path.display(), "ready");
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("shutting down");
    server.stop();
    if let Some(r) = resolver {
        r.stop();
    }
    let agent = match Arc::try_unwrap(agent) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(arc) => {
            // A client thread still holds a reference: take the state out under the lock.
            let mut g = arc.lock().unwrap_or_else(|p| p.into_inner());
            let ids: Vec<_> = g.ports.keys().copied().collect();
            for id in ids {
                if let Some(p) = g.ports.remove(&id) {
                    g.unbind_sockets(id, &p.sockets);
                    let _ = g.xdp.detach(p.cfg.ifindex);
                }
            }
            for w in g.workers.drain(..) {
                w.stop();
            }
            if let Some(s) = g.sweeper.take() {
                s.stop();
            }
            return Ok(0);
        }
    };
    agent.shutdown();
    Ok(0)
}

/// The underlay next hops the routes need resolved: direct next hops, gateways, and VTEPs
/// (the resolver keeps those on the uplink's subnet).
fn next_hops(s: &Snapshot) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = s
        .routes
        .iter()
        .filter_map(|r| match r {
            xdplane_pipeline::Route::Direct { next_hop } => Some(*next_hop),
            xdplane_pipeline::Route::Gateway { next_hop } => Some(*next_hop),
            xdplane_pipeline::Route::Vxlan { vtep, .. } => Some(*vtep),
            _ => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::{RunOpts, parse_mac};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunOpts,
    }

    #[test]
    fn nat_flags_and_their_defaults() {
        let d = Cli::try_parse_from(["x", "--node", "n1"]).unwrap().run;
        assert_eq!(d.snat_ports, (61000, 65535));
        assert!(!d.no_masquerade);
        assert_eq!(d.conntrack_max, 262_144);
        let o = Cli::try_parse_from([
            "x",
            "--node",
            "n1",
            "--snat-ports",
            "40000-40999",
            "--no-masquerade",
            "--conntrack-max",
            "1000",
        ])
        .unwrap()
        .run;
        assert_eq!(o.snat_ports, (40000, 40999));
        assert!(o.no_masquerade);
        assert_eq!(o.conntrack_max, 1000);
        for bad in ["65535-61000", "61000", "0-5", "1-70000"] {
            let e = Cli::try_parse_from(["x", "--node", "n1", "--snat-ports", bad]);
            assert!(e.is_err(), "--snat-ports {bad} accepted");
        }
    }
    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:aB:00:00:00:ff"),
            Some([2, 0xab, 0, 0, 0, 0xff])
        );
        assert_eq!(parse_mac("02:ab:00:00:00"), None);
        assert_eq!(parse_mac("02:ab:00:00:00:00:01"), None);
        assert_eq!(parse_mac("zz:ab:00:00:00:00"), None);
    }
}
