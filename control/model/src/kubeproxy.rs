//! The iptables rules kube-proxy (iptables mode, as of Kubernetes 1.28) would write for a
//! node, as an `iptables-restore` input: the baseline xdplane's Services are measured against
//! (the perf lab loads it into a kernel node's namespace), and a reference for what the
//! dataplane replaces.
//!
//! The layout follows `pkg/proxy/iptables/proxier.go` (`syncProxyRules`,
//! `writeServiceToEndpointRules`) rule for rule, so that the kernel does the same work per
//! packet:
//!
//! - `nat KUBE-SERVICES`: one rule per Service port with endpoints,
//!   `-m <proto> -p <proto> -d <clusterIP> --dport <port> -j KUBE-SVC-…` (or `KUBE-SVL-…` for
//!   `internalTrafficPolicy: Local`), plus externalIP / LoadBalancer IP rules to `KUBE-EXT-…`,
//!   and last the jump to `KUBE-NODEPORTS` for local destinations. A new connection to a
//!   ClusterIP walks this list linearly: the cost that grows with the number of Services.
//! - `KUBE-SVC-…` (Cluster policy endpoints) / `KUBE-SVL-…` (Local policy endpoints):
//!   optional `KUBE-MARK-MASQ` for traffic from outside the cluster CIDR, `-m recent --rcheck`
//!   rules for ClientIP affinity, then one `-m statistic --mode random --probability 1/k`
//!   rule per endpoint (the last without) jumping to its `KUBE-SEP-…`.
//! - `KUBE-SEP-…`: hairpin `-s <endpoint IP> -j KUBE-MARK-MASQ`, then `DNAT` (with
//!   `-m recent --set` under ClientIP affinity).
//! - `KUBE-EXT-…`: masquerade (eTP Cluster) or the Local short-circuits, then the policy
//!   chain. `KUBE-NODEPORTS`: NodePorts to `KUBE-EXT-…`.
//! - `KUBE-MARK-MASQ`, `KUBE-POSTROUTING` (MASQUERADE of marked traffic).
//! - `filter`: `KUBE-SERVICES` / `KUBE-EXTERNAL-SERVICES` with `REJECT` for Service ports
//!   without endpoints (`DROP` when only a Local policy has none), `KUBE-FORWARD`,
//!   `KUBE-NODEPORTS`, `KUBE-PROXY-FIREWALL`, `KUBE-FIREWALL` (the localnet rule).
//!
//! Chain names use kube-proxy's scheme: `KUBE-SVC-` + the first 16 characters of the
//! base32 of SHA-256(`"<namespace>/<name>[:<port name>]" + "<protocol in lower case>"`),
//! `KUBE-SEP-` hashes that plus `"<ip>:<port>"`. Endpoints per Service port are resolved as
//! in `docs/design/services.md` §4 (the slices of the Service whose port name and protocol
//! match; ready ones, else serving-and-terminating ones) and sorted as kube-proxy sorts
//! them (by `"ip:port"` text).
//!
//! Differences from kube-proxy, none of which changes the per-packet work: Service ports
//! come in model order (namespace, name, port order) where kube-proxy iterates a Go map
//! (arbitrary, changing order); topology-aware hints, `loadBalancerSourceRanges`
//! (`KUBE-FW-…`), health-check NodePorts and the mangle-table canary chain are not modelled.
//! With [`KubeProxyOpts::jump_rules`] the output also holds the jumps from the built-in
//! chains that kube-proxy installs separately (`iptables -I`), so that a fresh network
//! namespace gets the complete rule set from one `iptables-restore`.
use crate::model::{
    Endpoint, EndpointSlice, Ipv4Cidr, Model, Protocol, Service, ServicePort, ServiceType,
    TrafficPolicy,
};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// kube-proxy's settings that change the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeProxyOpts {
    /// `--cluster-cidr` with the default `--detect-local-mode=ClusterCIDR`: traffic to a
    /// ClusterIP from outside this CIDR is marked for masquerade, traffic from inside it
    /// short-circuits `externalTrafficPolicy: Local`. `None`: no local-traffic detector
    /// (kube-proxy started without a cluster CIDR).
    pub cluster_cidr: Option<Ipv4Cidr>,
    /// `--masquerade-all`: masquerade every ClusterIP connection.
    pub masquerade_all: bool,
    /// `--iptables-masquerade-bit` (default 14: mark `0x00004000`).
    pub masquerade_bit: u8,
    /// `MASQUERADE --random-fully` (kube-proxy adds it when iptables supports it).
    pub random_fully: bool,
    /// `--iptables-localhost-nodeports` (default true): NodePorts also on 127.0.0.0/8, and
    /// the `KUBE-FIREWALL` rule against martian localnet traffic.
    pub localhost_nodeports: bool,
    /// Also declare the built-in chains and write the jumps into kube-proxy's chains
    /// (`PREROUTING`/`OUTPUT` → `KUBE-SERVICES`, `FORWARD` → `KUBE-FORWARD`, …), in the
    /// order kube-proxy's prepends leave them. The file then replaces the whole `filter` and
    /// `nat` tables when loaded with plain `iptables-restore`. `false`: only kube-proxy's
    /// own restore input (load it with `iptables-restore --noflush`).
    pub jump_rules: bool,
}

impl Default for KubeProxyOpts {
    fn default() -> Self {
        KubeProxyOpts {
            cluster_cidr: None,
            masquerade_all: false,
            masquerade_bit: 14,
            random_fully: true,
            localhost_nodeports: true,
            jump_rules: true,
        }
    }
}

impl KubeProxyOpts {
    /// The defaults with the cluster CIDR taken from flannel's `Network` when the model has
    /// one (what a kubeadm cluster with flannel passes as `clusterCIDR`).
    pub fn for_model(model: &Model) -> Self {
        KubeProxyOpts {
            cluster_cidr: model.net_conf.as_ref().map(|c| c.network),
            ..KubeProxyOpts::default()
        }
    }

    /// The masquerade mark as kube-proxy prints it (`fmt.Sprintf("%#08x", 1<<bit)`).
    pub fn masquerade_mark(&self) -> String {
        let v: u64 = 1u64 << u32::from(self.masquerade_bit.min(31));
        format!("0x{v:08x}")
    }
}

/// When the total number of endpoints is above this, kube-proxy leaves the comments out of
/// the endpoint rules (`largeClusterEndpointsThreshold`).
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// The `iptables-restore` input kube-proxy would write on `node` for the model's Services and
/// EndpointSlices: `*filter` then `*nat`, each ending in `COMMIT`.
pub fn iptables_restore(model: &Model, node: &str, opts: &KubeProxyOpts) -> String {
    let ports = service_ports(model, node);
    let total_endpoints: usize = ports.iter().map(|p| p.all.len()).sum();
    let large = total_endpoints > LARGE_CLUSTER_ENDPOINTS;
    let mark = opts.masquerade_mark();
    let mut w = Writer::default();

    for c in [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
    ] {
        w.filter_chain(c);
    }
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        w.nat_chain(c);
    }
    w.nat(format!(
        "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN"
    ));
    w.nat(format!("-A KUBE-POSTROUTING -j MARK --xor-mark {mark}"));
    w.nat(format!(
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{}",
        if opts.random_fully {
            " --random-fully"
        } else {
            ""
        }
    ));
    w.nat(format!("-A KUBE-MARK-MASQ -j MARK --or-mark {mark}"));
    if opts.localhost_nodeports {
        w.filter_chain("KUBE-FIREWALL");
        w.filter(
            "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP".into(),
        );
    }

    for sp in &ports {
        write_service_port(&mut w, sp, opts, large);
    }

    let mut tail = String::from(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL",
    );
    if !opts.localhost_nodeports {
        tail.push_str(" ! -d 127.0.0.0/8");
    }
    tail.push_str(" -j KUBE-NODEPORTS");
    w.nat(tail);
    w.filter("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP".into());
    w.filter(format!(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
    ));
    w.filter(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
    );

    let mut out = String::with_capacity(w.len() + 4096);
    out.push_str("*filter\n");
    if opts.jump_rules {
        out.push_str(":INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    }
    out.push_str(&w.filter_chains);
    if opts.jump_rules {
        out.push_str(&filter_jumps(opts));
    }
    out.push_str(&w.filter_rules);
    out.push_str("COMMIT\n*nat\n");
    if opts.jump_rules {
        out.push_str(
            ":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n",
        );
    }
    out.push_str(&w.nat_chains);
    if opts.jump_rules {
        out.push_str(NAT_JUMPS);
    }
    out.push_str(&w.nat_rules);
    out.push_str("COMMIT\n");
    out
}

/// The jumps kube-proxy (and kubelet, for `KUBE-FIREWALL`) prepend to the built-in filter
/// chains, in the order the prepends leave them.
fn filter_jumps(opts: &KubeProxyOpts) -> String {
    const NEW: &str = "-m conntrack --ctstate NEW ";
    let fw = |chain: &str| {
        format!(
            "-A {chain} {NEW}-m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n"
        )
    };
    let mut s = String::new();
    if opts.localhost_nodeports {
        s.push_str("-A INPUT -j KUBE-FIREWALL\n");
    }
    s.push_str(&fw("INPUT"));
    s.push_str(
        "-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n",
    );
    let _ = writeln!(
        s,
        "-A INPUT {NEW}-m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"
    );
    s.push_str(&fw("FORWARD"));
    s.push_str("-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n");
    let _ = writeln!(
        s,
        "-A FORWARD {NEW}-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
    );
    let _ = writeln!(
        s,
        "-A FORWARD {NEW}-m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"
    );
    if opts.localhost_nodeports {
        s.push_str("-A OUTPUT -j KUBE-FIREWALL\n");
    }
    s.push_str(&fw("OUTPUT"));
    let _ = writeln!(
        s,
        "-A OUTPUT {NEW}-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
    );
    s
}

const NAT_JUMPS: &str = "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n";

#[derive(Default)]
struct Writer {
    filter_chains: String,
    filter_rules: String,
    nat_chains: String,
    nat_rules: String,
}

impl Writer {
    fn filter_chain(&mut self, c: &str) {
        let _ = writeln!(self.filter_chains, ":{c} - [0:0]");
    }
    fn nat_chain(&mut self, c: &str) {
        let _ = writeln!(self.nat_chains, ":{c} - [0:0]");
    }
    fn filter(&mut self, rule: String) {
        self.filter_rules.push_str(&rule);
        self.filter_rules.push('\n');
    }
    fn nat(&mut self, rule: String) {
        self.nat_rules.push_str(&rule);
        self.nat_rules.push('\n');
    }
    fn len(&self) -> usize {
        self.filter_chains.len()
            + self.filter_rules.len()
            + self.nat_chains.len()
            + self.nat_rules.len()
    }
}

/// One endpoint of a Service port as kube-proxy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KpEndpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On the node the rules are written for.
    pub local: bool,
}

impl KpEndpoint {
    /// `"ip:port"`, kube-proxy's endpoint string (hashed into the `KUBE-SEP-` name).
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// A Service port with everything its rules need.
struct SvcPort<'m> {
    svc: &'m Service,
    port: &'m ServicePort,
    cluster_ip: Ipv4Addr,
    /// `ns/name[:port]`.
    name: String,
    proto: &'static str,
    all: Vec<KpEndpoint>,
}

/// kube-proxy's lower-case protocol name.
pub fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// kube-proxy's `ServicePortName.String()`: `namespace/name`, plus `:port` when the port is
/// named.
pub fn service_port_name(svc: &Service, port: &ServicePort) -> String {
    match port.name.as_deref() {
        Some(n) if !n.is_empty() => format!("{}/{}:{n}", svc.namespace, svc.name),
        _ => format!("{}/{}", svc.namespace, svc.name),
    }
}

/// kube-proxy's `portProtoHash`: the first 16 characters of the base32 (RFC 4648 alphabet) of
/// SHA-256(`service_port_name + protocol`).
pub fn port_proto_hash(service_port_name: &str, protocol: &str) -> String {
    let mut data = Vec::with_capacity(service_port_name.len() + protocol.len());
    data.extend_from_slice(service_port_name.as_bytes());
    data.extend_from_slice(protocol.as_bytes());
    base32_prefix16(&sha256(&data))
}

/// `KUBE-SVC-<hash>`.
pub fn svc_chain(service_port_name: &str, protocol: &str) -> String {
    format!("KUBE-SVC-{}", port_proto_hash(service_port_name, protocol))
}

/// `KUBE-SEP-<hash>` of one endpoint (`"ip:port"`) of a Service port.
pub fn sep_chain(service_port_name: &str, protocol: &str, endpoint: &str) -> String {
    let data = format!("{service_port_name}{protocol}{endpoint}");
    format!("KUBE-SEP-{}", base32_prefix16(&sha256(data.as_bytes())))
}

/// The Service ports kube-proxy programs (Services with a ClusterIP, not ExternalName), in
/// model order, with their endpoints.
fn service_ports<'m>(model: &'m Model, node: &str) -> Vec<SvcPort<'m>> {
    let mut out = Vec::new();
    for svc in model.services.values() {
        if svc.service_type == ServiceType::ExternalName {
            continue;
        }
        let Some(&cluster_ip) = svc.cluster_ips.first() else {
            continue; // headless
        };
        for port in &svc.ports {
            out.push(SvcPort {
                svc,
                port,
                cluster_ip,
                name: service_port_name(svc, port),
                proto: protocol_name(port.protocol),
                all: endpoints(model, svc, port, node),
            });
        }
    }
    out
}

/// Every endpoint of the Service's slices for this port (matched by port name and
/// protocol, with a resolved port and an address), deduplicated and sorted by `"ip:port"`
/// text as kube-proxy does; conditions kept for [`categorize`].
pub fn endpoints(model: &Model, svc: &Service, port: &ServicePort, node: &str) -> Vec<KpEndpoint> {
    let mut seen = BTreeSet::new();
    let mut out: Vec<(String, KpEndpoint)> = Vec::new();
    for slice in model.endpoint_slices.values() {
        if slice.namespace != svc.namespace || slice.service != svc.name {
            continue;
        }
        for kp in slice_endpoints(slice, port, node) {
            let key = kp.endpoint();
            if seen.insert(key.clone()) {
                out.push((key, kp));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, e)| e).collect()
}

/// The endpoints one slice gives a Service port: none when the slice has no resolved port
/// of that name and protocol; each endpoint with an address, in the slice's order.
pub(crate) fn slice_endpoints<'s>(
    slice: &'s EndpointSlice,
    port: &ServicePort,
    node: &'s str,
) -> impl Iterator<Item = KpEndpoint> + 's {
    let target = slice
        .ports
        .iter()
        .find(|p| p.name == port.name && p.protocol == port.protocol)
        .and_then(|p| p.port);
    target.into_iter().flat_map(move |t| {
        slice
            .endpoints
            .iter()
            .filter_map(move |ep| kp_endpoint(ep, t, node))
    })
}

/// kube-proxy's choice among `eps`: the ready ones, else the serving-and-terminating ones.
pub(crate) fn usable<'a>(eps: impl Iterator<Item = &'a KpEndpoint> + Clone) -> Vec<&'a KpEndpoint> {
    let ready: Vec<_> = eps.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving && e.terminating).collect()
}

fn kp_endpoint(ep: &Endpoint, port: u16, node: &str) -> Option<KpEndpoint> {
    let ip = *ep.addresses.first()?;
    Some(KpEndpoint {
        ip,
        port,
        ready: ep.ready,
        serving: ep.serving,
        terminating: ep.terminating,
        local: ep.node_name.as_deref() == Some(node),
    })
}

/// What [`categorize`] returns: kube-proxy's `CategorizeEndpoints`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categorized {
    /// Endpoints for Cluster traffic policy (ready, else serving-terminating).
    pub cluster: Vec<KpEndpoint>,
    /// This node's endpoints for Local traffic policy (ready, else serving-terminating).
    pub local: Vec<KpEndpoint>,
    /// Union of both: the `KUBE-SEP-` chains written.
    pub reachable: Vec<KpEndpoint>,
    /// Some usable endpoint exists anywhere in the cluster.
    pub has_any: bool,
}

fn externally_accessible(svc: &Service, port: &ServicePort) -> bool {
    port.node_port.is_some() || !svc.external_ips.is_empty() || !svc.load_balancer_ips.is_empty()
}

fn internal_local(svc: &Service) -> bool {
    svc.internal_traffic_policy == TrafficPolicy::Local
}

fn external_local(svc: &Service, port: &ServicePort) -> bool {
    externally_accessible(svc, port) && svc.external_traffic_policy == TrafficPolicy::Local
}

fn uses_cluster(svc: &Service, port: &ServicePort) -> bool {
    !internal_local(svc) || (externally_accessible(svc, port) && !external_local(svc, port))
}

fn uses_local(svc: &Service, port: &ServicePort) -> bool {
    internal_local(svc) || external_local(svc, port)
}

/// kube-proxy's `CategorizeEndpoints` (without topology hints).
pub fn categorize(all: &[KpEndpoint], svc: &Service, port: &ServicePort) -> Categorized {
    let mut c = Categorized::default();
    if uses_cluster(svc, port) {
        c.cluster = usable(all.iter()).into_iter().cloned().collect();
        c.has_any = !c.cluster.is_empty();
    }
    if !uses_local(svc, port) {
        c.reachable = c.cluster.clone();
        return c;
    }
    c.has_any |= all.iter().any(|e| e.ready || (e.serving && e.terminating));
    c.local = usable(all.iter().filter(|e| e.local))
        .into_iter()
        .cloned()
        .collect();
    if !uses_cluster(svc, port) {
        c.reachable = c.local.clone();
        return c;
    }
    c.reachable = c.cluster.clone();
    for e in &c.local {
        if !c.reachable.contains(e) {
            c.reachable.push(e.clone());
        }
    }
    c
}

fn write_service_port(w: &mut Writer, sp: &SvcPort<'_>, opts: &KubeProxyOpts, large: bool) {
    let (svc, port, proto, spn) = (sp.svc, sp.port, sp.proto, sp.name.as_str());
    let cat = categorize(&sp.all, svc, port);
    let hash = port_proto_hash(spn, proto);
    let cluster_chain = format!("KUBE-SVC-{hash}");
    let local_chain = format!("KUBE-SVL-{hash}");
    let ext_chain = format!("KUBE-EXT-{hash}");
    let uses_cluster_chain = !cat.cluster.is_empty() && uses_cluster(svc, port);
    let uses_local_chain = !cat.local.is_empty() && uses_local(svc, port);

    let (internal_chain, has_internal) = if internal_local(svc) {
        (&local_chain, cat.has_any && !cat.local.is_empty())
    } else {
        (&cluster_chain, cat.has_any)
    };
    let (external_policy_chain, has_external) = if external_local(svc, port) {
        (&local_chain, cat.has_any && !cat.local.is_empty())
    } else {
        (&cluster_chain, cat.has_any)
    };
    let uses_ext_chain = cat.has_any && externally_accessible(svc, port);

    let (int_target, int_comment, ext_target, ext_comment) = if !cat.has_any {
        let c = format!("\"{spn} has no endpoints\"");
        ("REJECT", c.clone(), "REJECT", c)
    } else {
        let c = format!("\"{spn} has no local endpoints\"");
        ("DROP", c.clone(), "DROP", c)
    };
    let m = format!("-m {proto} -p {proto}");
    let cip = sp.cluster_ip;
    let p = port.port;

    // Capture the ClusterIP.
    if has_internal {
        w.nat(format!(
            "-A KUBE-SERVICES -m comment --comment \"{spn} cluster IP\" {m} -d {cip} --dport {p} -j {internal_chain}"
        ));
    } else {
        w.filter(format!(
            "-A KUBE-SERVICES -m comment --comment {int_comment} {m} -d {cip} --dport {p} -j {int_target}"
        ));
    }
    // externalIPs, then LoadBalancer IPs (nat and filter rules are written apart, so each
    // table keeps that order).
    let external_ips = svc.external_ips.iter().map(|ip| (ip, "external IP"));
    let lb_ips = svc
        .load_balancer_ips
        .iter()
        .map(|ip| (ip, "loadbalancer IP"));
    for (ip, what) in external_ips.chain(lb_ips) {
        if cat.has_any {
            w.nat(format!(
                "-A KUBE-SERVICES -m comment --comment \"{spn} {what}\" {m} -d {ip} --dport {p} -j {ext_chain}"
            ));
        }
        if !has_external {
            w.filter(format!(
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} {m} -d {ip} --dport {p} -j {ext_target}"
            ));
        }
    }
    // NodePort.
    if let Some(np) = port.node_port {
        if cat.has_any {
            w.nat(format!(
                "-A KUBE-NODEPORTS -m comment --comment {spn} {m} --dport {np} -j {ext_chain}"
            ));
        }
        if !has_external {
            w.filter(format!(
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} -m addrtype --dst-type LOCAL {m} --dport {np} -j {ext_target}"
            ));
        }
    }

    // Internal traffic: masquerade what does not come from the cluster.
    if has_internal {
        let head = format!(
            "-A {internal_chain} -m comment --comment \"{spn} cluster IP\" {m} -d {cip} --dport {p}"
        );
        if opts.masquerade_all {
            w.nat(format!("{head} -j KUBE-MARK-MASQ"));
        } else if let Some(cidr) = opts.cluster_cidr {
            w.nat(format!("{head} ! -s {cidr} -j KUBE-MARK-MASQ"));
        }
    }
    // External traffic.
    if uses_ext_chain {
        w.nat_chain(&ext_chain);
        if !external_local(svc, port) {
            w.nat(format!(
                "-A {ext_chain} -m comment --comment \"masquerade traffic for {spn} external destinations\" -j KUBE-MARK-MASQ"
            ));
        } else {
            if let Some(cidr) = opts.cluster_cidr {
                w.nat(format!(
                    "-A {ext_chain} -m comment --comment \"pod traffic for {spn} external destinations\" -s {cidr} -j {cluster_chain}"
                ));
            }
            w.nat(format!(
                "-A {ext_chain} -m comment --comment \"masquerade LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
            ));
            w.nat(format!(
                "-A {ext_chain} -m comment --comment \"route LOCAL traffic for {spn} external destinations\" -m addrtype --src-type LOCAL -j {cluster_chain}"
            ));
        }
        if has_external {
            w.nat(format!("-A {ext_chain} -j {external_policy_chain}"));
        }
    }
    if uses_cluster_chain {
        w.nat_chain(&cluster_chain);
        service_to_endpoint_rules(w, spn, proto, svc, &cluster_chain, &cat.cluster, large);
    }
    if uses_local_chain {
        w.nat_chain(&local_chain);
        service_to_endpoint_rules(w, spn, proto, svc, &local_chain, &cat.local, large);
    }
    for ep in &cat.reachable {
        let e = ep.endpoint();
        let chain = sep_chain(spn, proto, &e);
        w.nat_chain(&chain);
        let comment = if large {
            String::new()
        } else {
            format!(" -m comment --comment {spn}")
        };
        w.nat(format!(
            "-A {chain}{comment} -s {} -j KUBE-MARK-MASQ",
            ep.ip
        ));
        let recent = if svc.session_affinity_timeout.is_some() {
            format!(" -m recent --name {chain} --set")
        } else {
            String::new()
        };
        w.nat(format!(
            "-A {chain}{comment}{recent} {m} -j DNAT --to-destination {e}"
        ));
    }
}

/// `writeServiceToEndpointRules`: affinity checks, then one probabilistic jump per endpoint.
fn service_to_endpoint_rules(
    w: &mut Writer,
    spn: &str,
    proto: &str,
    svc: &Service,
    chain: &str,
    eps: &[KpEndpoint],
    large: bool,
) {
    let comment = |e: &str| {
        if large {
            String::new()
        } else {
            format!(" -m comment --comment \"{spn} -> {e}\"")
        }
    };
    if let Some(timeout) = svc.session_affinity_timeout {
        for ep in eps {
            let e = ep.endpoint();
            let sep = sep_chain(spn, proto, &e);
            w.nat(format!(
                "-A {chain}{} -m recent --name {sep} --rcheck --seconds {timeout} --reap -j {sep}",
                comment(&e)
            ));
        }
    }
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let e = ep.endpoint();
        let sep = sep_chain(spn, proto, &e);
        let stat = if i + 1 < n {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / (n - i) as f64
            )
        } else {
            String::new()
        };
        w.nat(format!("-A {chain}{}{stat} -j {sep}", comment(&e)));
    }
}

/// RFC 4648 base32 (`base32.StdEncoding`) of a 32-byte digest, first 16 characters
/// (10 bytes encode to exactly 16 characters, so no padding is involved).
fn base32_prefix16(digest: &[u8; 32]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut acc: u128 = 0;
    for &b in &digest[..10] {
        acc = (acc << 8) | u128::from(b);
    }
    let mut out = String::with_capacity(16);
    for i in (0..16u32).rev() {
        out.push(ALPHABET[((acc >> (i * 5)) & 31) as usize] as char);
    }
    out
}

/// SHA-256 (FIPS 180-4). Small and only used for chain names, so no dependency.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointPort, EndpointSlice, NetConf, TargetPort};

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_known_answers() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Two blocks (56 bytes: the padding spills into a second block).
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn chain_names_are_kube_proxys() {
        // Chain names seen on real clusters and in kube-proxy's own tests.
        assert_eq!(
            svc_chain("default/kubernetes:https", "tcp"),
            "KUBE-SVC-NPX46M4PTMTKRN6Y"
        );
        assert_eq!(
            svc_chain("kube-system/kube-dns:dns", "udp"),
            "KUBE-SVC-TCOU7JCQXEZGVUNU"
        );
        assert_eq!(
            svc_chain("kube-system/kube-dns:dns-tcp", "tcp"),
            "KUBE-SVC-ERIFXISQEP7F7OF4"
        );
        assert_eq!(
            svc_chain("kube-system/kube-dns:metrics", "tcp"),
            "KUBE-SVC-JD5MR3NA4I4DYORP"
        );
        assert_eq!(
            svc_chain("ns1/svc1:p80", "tcp"),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
    }

    fn service(ns: &str, name: &str, ip: [u8; 4], port: ServicePort) -> Service {
        Service {
            cluster_ips: vec![Ipv4Addr::from(ip)],
            ports: vec![port],
            ..Service::bare(ns.into(), name.into(), ServiceType::ClusterIP)
        }
    }

    fn port(name: Option<&str>, proto: Protocol, p: u16) -> ServicePort {
        ServicePort {
            name: name.map(str::to_string),
            protocol: proto,
            port: p,
            target_port: TargetPort::Number(p),
            node_port: None,
        }
    }

    fn ep(ip: [u8; 4], node: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            addresses: vec![Ipv4Addr::from(ip)],
            ready,
            serving,
            terminating,
            node_name: Some(node.into()),
        }
    }

    /// A slice of `svc` for its first port (same name and protocol), resolved to `target`.
    fn slice(svc: &Service, suffix: &str, target: u16, eps: Vec<Endpoint>) -> EndpointSlice {
        let sp = &svc.ports[0];
        EndpointSlice {
            namespace: svc.namespace.clone(),
            name: format!("{}-{suffix}", svc.name),
            service: svc.name.clone(),
            ports: vec![EndpointPort {
                name: sp.name.clone(),
                protocol: sp.protocol,
                port: Some(target),
            }],
            endpoints: eps,
        }
    }

    fn model_of(items: Vec<(Service, Vec<EndpointSlice>)>) -> Model {
        let mut m = Model::default();
        for (svc, slices) in items {
            for s in slices {
                m.endpoint_slices
                    .insert((s.namespace.clone(), s.name.clone()), s);
            }
            m.services
                .insert((svc.namespace.clone(), svc.name.clone()), svc);
        }
        m
    }

    fn one_service_two_endpoints() -> Model {
        let svc = service(
            "default",
            "web",
            [10, 96, 0, 10],
            port(Some("http"), Protocol::Tcp, 80),
        );
        let s = slice(
            &svc,
            "abcde",
            8080,
            vec![
                ep([10, 244, 2, 7], "node2", true, true, false),
                ep([10, 244, 1, 5], "node1", true, true, false),
            ],
        );
        model_of(vec![(svc, vec![s])])
    }

    #[test]
    fn one_service_with_two_endpoints_golden() {
        let m = one_service_two_endpoints();
        let opts = KubeProxyOpts {
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            jump_rules: false,
            ..KubeProxyOpts::default()
        };
        let svc = svc_chain("default/web:http", "tcp");
        let sep1 = sep_chain("default/web:http", "tcp", "10.244.1.5:8080");
        let sep2 = sep_chain("default/web:http", "tcp", "10.244.2.7:8080");
        let expected = format!(
            r#"*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-FIREWALL - [0:0]
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:{svc} - [0:0]
:{sep1} - [0:0]
:{sep2} - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
-A KUBE-SERVICES -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j {svc}
-A {svc} -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A {svc} -m comment --comment "default/web:http -> 10.244.1.5:8080" -m statistic --mode random --probability 0.5000000000 -j {sep1}
-A {svc} -m comment --comment "default/web:http -> 10.244.2.7:8080" -j {sep2}
-A {sep1} -m comment --comment default/web:http -s 10.244.1.5 -j KUBE-MARK-MASQ
-A {sep1} -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
-A {sep2} -m comment --comment default/web:http -s 10.244.2.7 -j KUBE-MARK-MASQ
-A {sep2} -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.2.7:8080
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"#
        );
        let got = iptables_restore(&m, "node1", &opts);
        assert_eq!(got, expected, "got:\n{got}");
        // The chain names are 25 characters (iptables allows 28), base32 after the prefix.
        for c in [&svc, &sep1, &sep2] {
            assert_eq!(c.len(), 25, "{c}");
            assert!(
                c[9..]
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
            );
        }
        assert_ne!(sep1, sep2);
    }

    #[test]
    fn jump_rules_declare_builtin_chains_and_hook_kube_proxys() {
        let m = one_service_two_endpoints();
        let got = iptables_restore(&m, "node1", &KubeProxyOpts::default());
        let (filter, nat) = got.split_once("COMMIT\n*nat\n").unwrap();
        assert!(filter.starts_with(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        ));
        let forward: Vec<&str> = filter
            .lines()
            .filter(|l| l.starts_with("-A FORWARD "))
            .collect();
        assert_eq!(forward.len(), 4);
        assert!(forward[0].ends_with("-j KUBE-PROXY-FIREWALL"));
        assert!(forward[1].ends_with("-j KUBE-FORWARD"));
        assert!(forward[2].contains("--ctstate NEW") && forward[2].ends_with("-j KUBE-SERVICES"));
        assert!(forward[3].ends_with("-j KUBE-EXTERNAL-SERVICES"));
        assert!(nat.starts_with(":PREROUTING ACCEPT [0:0]\n"));
        assert!(nat.contains(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
        ));
        assert!(nat.contains("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n"));
        assert!(got.ends_with("COMMIT\n"));
        // Without a cluster CIDR there is no masquerade rule in the service chain.
        assert!(!got.contains("! -s 10.244.0.0/16"));
    }

    #[test]
    fn for_model_takes_flannels_network() {
        let mut m = Model::default();
        assert_eq!(KubeProxyOpts::for_model(&m).cluster_cidr, None);
        m.net_conf = Some(NetConf {
            network: "10.244.0.0/16".parse().unwrap(),
            backend: crate::model::BackendType::Vxlan,
            vni: 1,
            port: 8472,
            direct_routing: false,
        });
        assert_eq!(
            KubeProxyOpts::for_model(&m).cluster_cidr,
            Some("10.244.0.0/16".parse().unwrap())
        );
        assert_eq!(KubeProxyOpts::default().masquerade_mark(), "0x00004000");
    }

    #[test]
    fn no_endpoints_rejects_in_filter_and_writes_no_nat_chains() {
        let mut svc = service("ns", "empty", [10, 96, 1, 1], port(None, Protocol::Udp, 53));
        svc.external_ips = vec![Ipv4Addr::new(192, 0, 2, 9)];
        svc.ports[0].node_port = Some(30053);
        // Only a not-ready, not-serving endpoint: nothing usable.
        let s = slice(
            &svc,
            "x",
            53,
            vec![ep([10, 244, 1, 9], "node1", false, false, false)],
        );
        let m = model_of(vec![(svc, vec![s])]);
        let got = iptables_restore(&m, "node1", &KubeProxyOpts::default());
        assert!(got.contains(
            "-A KUBE-SERVICES -m comment --comment \"ns/empty has no endpoints\" -m udp -p udp -d 10.96.1.1 --dport 53 -j REJECT\n"
        ), "{got}");
        assert!(got.contains(
            "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns/empty has no endpoints\" -m udp -p udp -d 192.0.2.9 --dport 53 -j REJECT\n"
        ), "{got}");
        assert!(got.contains(
            "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns/empty has no endpoints\" -m addrtype --dst-type LOCAL -m udp -p udp --dport 30053 -j REJECT\n"
        ), "{got}");
        assert!(
            !got.contains("KUBE-SVC-") && !got.contains("KUBE-SEP-") && !got.contains("KUBE-EXT-"),
            "{got}"
        );
    }

    #[test]
    fn serving_terminating_endpoints_are_the_fallback() {
        let svc = service("ns", "s", [10, 96, 1, 2], port(None, Protocol::Tcp, 80));
        let p = svc.ports[0].clone();
        let s = slice(
            &svc,
            "x",
            80,
            vec![
                ep([10, 244, 1, 3], "node1", false, true, true),
                ep([10, 244, 1, 4], "node1", false, false, true),
            ],
        );
        let m = model_of(vec![(svc.clone(), vec![s.clone()])]);
        let all = endpoints(&m, &svc, &p, "node1");
        assert_eq!(all.len(), 2);
        let c = categorize(&all, &svc, &p);
        assert!(c.has_any);
        assert_eq!(c.cluster.len(), 1);
        assert_eq!(c.cluster[0].ip, Ipv4Addr::new(10, 244, 1, 3));
        // A ready endpoint wins over the terminating one.
        let mut s2 = s;
        s2.endpoints
            .push(ep([10, 244, 2, 3], "node2", true, true, false));
        let m = model_of(vec![(svc.clone(), vec![s2])]);
        let c = categorize(&endpoints(&m, &svc, &p, "node1"), &svc, &p);
        assert_eq!(c.cluster.len(), 1);
        assert_eq!(c.cluster[0].ip, Ipv4Addr::new(10, 244, 2, 3));
    }

    #[test]
    fn slices_match_by_port_name_and_protocol_and_deduplicate() {
        let svc = service(
            "ns",
            "s",
            [10, 96, 1, 3],
            port(Some("dns"), Protocol::Udp, 53),
        );
        let p = svc.ports[0].clone();
        let a = slice(
            &svc,
            "a",
            5353,
            vec![
                ep([10, 244, 1, 10], "node1", true, true, false),
                ep([10, 244, 1, 9], "node1", true, true, false),
            ],
        );
        let b = slice(
            &svc,
            "b",
            5353,
            vec![ep([10, 244, 1, 10], "node1", true, true, false)],
        );
        let mut wrong_proto = slice(
            &svc,
            "c",
            5353,
            vec![ep([10, 244, 1, 11], "node1", true, true, false)],
        );
        wrong_proto.ports[0].protocol = Protocol::Tcp;
        let mut wrong_name = slice(
            &svc,
            "d",
            9153,
            vec![ep([10, 244, 1, 12], "node1", true, true, false)],
        );
        wrong_name.ports[0].name = Some("metrics".into());
        let mut other = slice(
            &svc,
            "e",
            5353,
            vec![ep([10, 244, 1, 13], "node1", true, true, false)],
        );
        other.service = "other".into();
        let m = model_of(vec![(
            svc.clone(),
            vec![a, b, wrong_proto, wrong_name, other],
        )]);
        let eps: Vec<String> = endpoints(&m, &svc, &p, "node1")
            .iter()
            .map(KpEndpoint::endpoint)
            .collect();
        // Sorted as text, as kube-proxy sorts them.
        assert_eq!(eps, vec!["10.244.1.10:5353", "10.244.1.9:5353"]);
    }

    #[test]
    fn external_and_load_balancer_ips_are_captured_in_that_order() {
        // Endpoints only elsewhere, external policy Local: captured in nat (endpoints
        // exist), dropped in filter (none for the external policy here).
        let mut svc = service("ns", "ext", [10, 96, 1, 6], port(None, Protocol::Tcp, 80));
        svc.external_ips = vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];
        svc.load_balancer_ips = vec![Ipv4Addr::new(198, 51, 100, 1)];
        svc.external_traffic_policy = TrafficPolicy::Local;
        let s = slice(
            &svc,
            "x",
            8080,
            vec![ep([10, 244, 2, 7], "node2", true, true, false)],
        );
        let m = model_of(vec![(svc, vec![s])]);
        let got = iptables_restore(&m, "node1", &KubeProxyOpts::default());
        let captured: Vec<&str> = got
            .lines()
            .filter(|l| l.contains("external IP\"") || l.contains("loadbalancer IP\""))
            .filter_map(|l| l.split_once(" -d ")?.1.split_once(' '))
            .map(|(ip, _)| ip)
            .collect();
        let ips = vec!["192.0.2.1", "192.0.2.2", "198.51.100.1"];
        assert_eq!(captured, ips, "{got}");
        let dropped: Vec<&str> = got
            .lines()
            .filter(|l| l.starts_with("-A KUBE-EXTERNAL-SERVICES") && l.ends_with("-j DROP"))
            .filter_map(|l| l.split_once(" -d ")?.1.split_once(' '))
            .map(|(ip, _)| ip)
            .collect();
        assert_eq!(
            dropped,
            vec!["192.0.2.1", "192.0.2.2", "198.51.100.1"],
            "{got}"
        );
    }

    #[test]
    fn probabilities_split_evenly() {
        let svc = service("ns", "three", [10, 96, 1, 4], port(None, Protocol::Tcp, 80));
        let s = slice(
            &svc,
            "x",
            80,
            (1..=3)
                .map(|i| ep([10, 244, 2, i], "node2", true, true, false))
                .collect(),
        );
        let m = model_of(vec![(svc, vec![s])]);
        let got = iptables_restore(&m, "node1", &KubeProxyOpts::default());
        let svc_rules: Vec<&str> = got
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SVC-"))
            .collect();
        assert_eq!(svc_rules.len(), 3, "{got}");
        assert!(svc_rules[0].contains("--probability 0.3333333333 "));
        assert!(svc_rules[1].contains("--probability 0.5000000000 "));
        assert!(!svc_rules[2].contains("statistic"));
    }

    #[test]
    fn client_ip_affinity_uses_the_recent_module() {
        let mut svc = service(
            "ns",
            "sticky",
            [10, 96, 1, 5],
            port(None, Protocol::Tcp, 80),
        );
        svc.session_affinity_timeout = Some(10800);
        let s = slice(
            &svc,
            "x",
            80,
            vec![
                ep([10, 244, 2, 1], "node2", true, true, false),
                ep([10, 244, 2, 2], "node2", true, true, false),
            ],
        );
        let m = model_of(vec![(svc, vec![s])]);
        let got = iptables_restore(&m, "node1", &KubeProxyOpts::default());
        let svc_chain = svc_chain("ns/sticky", "tcp");
        let sep = sep_chain("ns/sticky", "tcp", "10.244.2.1:80");
        assert!(got.contains(&format!(
            "-A {svc_chain} -m comment --comment \"ns/sticky -> 10.244.2.1:80\" -m recent --name {sep} --rcheck --seconds 10800 --reap -j {sep}\n"
        )), "{got}");
        assert!(got.contains(&format!(
            "-A {sep} -m comment --comment ns/sticky -m recent --name {sep} --set -m tcp -p tcp -j DNAT --to-destination 10.244.2.1:80\n"
        )), "{got}");
        // The affinity checks come before the random choice.
        let first_stat = got.find("--mode random").unwrap();
        assert!(got.rfind("--rcheck").unwrap() < first_stat);
    }

    #[test]
    fn local_policies_use_svl_and_ext_chains() {
        let mut svc = service(
            "ns",
            "lb",
            [10, 96, 1, 6],
            port(Some("http"), Protocol::Tcp, 80),
        );
        svc.service_type = ServiceType::NodePort;
        svc.ports[0].node_port = Some(30080);
        svc.external_traffic_policy = TrafficPolicy::Local;
        let s = slice(
            &svc,
            "x",
            8080,
            vec![
                ep([10, 244, 1, 20], "node1", true, true, false),
                ep([10, 244, 2, 20], "node2", true, true, false),
            ],
        );
        let m = model_of(vec![(svc, vec![s])]);
        let opts = KubeProxyOpts {
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            ..KubeProxyOpts::default()
        };
        let h = port_proto_hash("ns/lb:http", "tcp");
        // On node1 (a local endpoint): NodePort → EXT → SVL with the local endpoint only;
        // pod traffic short-circuits to SVC.
        let got = iptables_restore(&m, "node1", &opts);
        assert!(got.contains(&format!("-A KUBE-NODEPORTS -m comment --comment ns/lb:http -m tcp -p tcp --dport 30080 -j KUBE-EXT-{h}\n")), "{got}");
        assert!(got.contains(&format!("-A KUBE-EXT-{h} -m comment --comment \"pod traffic for ns/lb:http external destinations\" -s 10.244.0.0/16 -j KUBE-SVC-{h}\n")), "{got}");
        assert!(
            got.contains(&format!("-A KUBE-EXT-{h} -j KUBE-SVL-{h}\n")),
            "{got}"
        );
        let svl: Vec<&str> = got
            .lines()
            .filter(|l| l.starts_with(&format!("-A KUBE-SVL-{h} ")))
            .collect();
        assert_eq!(svl.len(), 1, "{got}");
        assert!(svl[0].contains("10.244.1.20:8080"));
        // ClusterIP still goes to SVC (internal policy Cluster) with both endpoints.
        assert!(got.contains(&format!("--dport 80 -j KUBE-SVC-{h}\n")));
        // On node3 (no local endpoint): no SVL chain, external traffic dropped in filter.
        let got = iptables_restore(&m, "node3", &opts);
        assert!(!got.contains(&format!(":KUBE-SVL-{h}")), "{got}");
        assert!(!got.contains(&format!("-A KUBE-EXT-{h} -j ")), "{got}");
        assert!(got.contains("-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns/lb:http has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j DROP\n"), "{got}");
    }

    #[test]
    fn internal_policy_local_without_local_endpoints_drops() {
        let mut svc = service("ns", "itp", [10, 96, 1, 7], port(None, Protocol::Tcp, 80));
        svc.internal_traffic_policy = TrafficPolicy::Local;
        let s = slice(
            &svc,
            "x",
            80,
            vec![ep([10, 244, 2, 30], "node2", true, true, false)],
        );
        let m = model_of(vec![(svc, vec![s])]);
        let h = port_proto_hash("ns/itp", "tcp");
        let on1 = iptables_restore(&m, "node1", &KubeProxyOpts::default());
        assert!(on1.contains("-A KUBE-SERVICES -m comment --comment \"ns/itp has no local endpoints\" -m tcp -p tcp -d 10.96.1.7 --dport 80 -j DROP\n"), "{on1}");
        let on2 = iptables_restore(&m, "node2", &KubeProxyOpts::default());
        assert!(
            on2.contains(&format!("--dport 80 -j KUBE-SVL-{h}\n")),
            "{on2}"
        );
        assert!(!on2.contains(&format!(":KUBE-SVC-{h}")), "{on2}");
    }

    #[test]
    fn headless_and_external_name_services_are_skipped() {
        let mut headless = service(
            "ns",
            "headless",
            [0, 0, 0, 0],
            port(None, Protocol::Tcp, 80),
        );
        headless.cluster_ips.clear();
        let mut ext = service("ns", "ext", [10, 96, 1, 8], port(None, Protocol::Tcp, 80));
        ext.service_type = ServiceType::ExternalName;
        let m = model_of(vec![(headless, vec![]), (ext, vec![])]);
        let got = iptables_restore(&m, "node1", &KubeProxyOpts::default());
        assert!(!got.contains("ns/"), "{got}");
    }

    #[test]
    fn large_clusters_drop_endpoint_comments_and_keep_the_services_order() {
        let items: Vec<(Service, Vec<EndpointSlice>)> = (0..1001u32)
            .map(|i| {
                let ip = [10, 96, (i >> 8) as u8, i as u8];
                let svc = service(
                    "bulk",
                    &format!("svc-{i:05}"),
                    ip,
                    port(None, Protocol::Udp, 5001),
                );
                let s = slice(
                    &svc,
                    "x",
                    5001,
                    vec![ep([10, 244, 2, 2], "node2", true, true, false)],
                );
                (svc, vec![s])
            })
            .collect();
        let m = model_of(items);
        let got = iptables_restore(&m, "node1", &KubeProxyOpts::default());
        let services: Vec<&str> = got
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .collect();
        // 1001 ClusterIP rules, then the NodePort jump last.
        assert_eq!(services.len(), 1002);
        assert!(services[0].contains("bulk/svc-00000 cluster IP"));
        assert!(services[1000].contains("bulk/svc-01000 cluster IP"));
        assert!(services[1001].ends_with("-j KUBE-NODEPORTS"));
        let sep: Vec<&str> = got
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SEP-"))
            .collect();
        assert_eq!(sep.len(), 2002);
        assert!(sep.iter().all(|l| !l.contains("--comment")), "{}", sep[0]);
    }
}
