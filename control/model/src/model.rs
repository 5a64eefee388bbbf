//! The project's model of the cluster. No Kubernetes types past this point.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Labels of an object, sorted.
pub type Labels = BTreeMap<String, String>;

/// An IPv4 prefix (`10.244.1.0/24`), stored with host bits cleared.
///
/// The fields are public for pattern matching; build values with [`Ipv4Cidr::new`] or
/// [`str::parse`], which keep the invariant (`prefix <= 32`, no bit set past the prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// Why a string or an (address, prefix) pair is not an IPv4 subnet.
///
/// The messages follow Kubernetes' strict CIDR validation (`StrictIPCIDRValidation`,
/// `k8s.io/apimachinery/pkg/util/validation/ip.go`), so a user sees the words the API server
/// would print.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("must be a valid CIDR value, (e.g. 10.9.8.0/24)")]
    Syntax,
    #[error("must not have leading 0s in IP or prefix length")]
    LeadingZeros,
    #[error("IPv6 is not supported: an IPv4 CIDR is required")]
    Ipv6,
    #[error("prefix length {0} is out of range: must be 0..=32")]
    PrefixRange(u32),
    #[error("must not have bits set beyond the prefix length (the subnet is {0})")]
    HostBits(Ipv4Cidr),
}

impl Ipv4Cidr {
    /// The subnet `addr/prefix`; fails when `prefix > 32` or when `addr` has bits set past
    /// the prefix (an "interface address" like `10.244.1.5/24` is not a subnet).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        if prefix > 32 {
            return Err(CidrError::PrefixRange(u32::from(prefix)));
        }
        let net = Self::new_truncating(addr, prefix);
        if net.addr != addr {
            return Err(CidrError::HostBits(net));
        }
        Ok(net)
    }

    /// The subnet that contains `addr` (host bits cleared); `prefix` is capped at 32.
    pub fn new_truncating(addr: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        let mask = mask_bits(prefix);
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }
    }

    /// The netmask (`255.255.255.0` for a /24).
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_bits(self.prefix))
    }

    /// The network address (the first address of the subnet).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & mask_bits(self.prefix))
    }

    /// The last address of the subnet (the broadcast address for prefixes up to /30).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | !mask_bits(self.prefix))
    }

    /// Whether `ip` lies in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = mask_bits(self.prefix);
        u32::from(ip) & m == u32::from(self.addr) & m
    }

    /// The first usable host address: network + 1 for prefixes up to /30 (what flannel gives
    /// `cni0`), the network address itself for /31 (both addresses are hosts, RFC 3021) and
    /// /32 (the only address).
    pub fn first_host(&self) -> Ipv4Addr {
        let net = u32::from(self.network());
        if self.prefix >= 31 {
            Ipv4Addr::from(net)
        } else {
            Ipv4Addr::from(net + 1)
        }
    }

    /// Whether `ip` is usable by a host in this subnet: inside it, and neither the network
    /// nor the broadcast address when the subnet has them (prefixes up to /30).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && (self.prefix >= 31 || (ip != self.network() && ip != self.broadcast()))
    }

    /// Number of addresses in the subnet (2^(32-prefix)).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix.min(32)))
    }
}

fn mask_bits(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses `a.b.c.d/n` strictly, as Kubernetes does for subnet fields with
/// `StrictIPCIDRValidation` (the default from v1.36; v1.33 only warns): decimal octets
/// without leading zeros, a prefix length without leading zeros, no bits set past the
/// prefix. Surrounding whitespace is not accepted either.
impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (ip, len) = s.split_once('/').ok_or(CidrError::Syntax)?;
        let prefix = parse_decimal(len).ok_or(CidrError::Syntax)?;
        let addr = match crate::validate::parse_ipv4(ip) {
            Ok(a) => a,
            Err(crate::validate::IpError::LeadingZeros) => return Err(CidrError::LeadingZeros),
            Err(crate::validate::IpError::Ipv6) => return Err(CidrError::Ipv6),
            Err(crate::validate::IpError::Syntax) => return Err(CidrError::Syntax),
        };
        if len.len() > 1 && len.starts_with('0') {
            return Err(CidrError::LeadingZeros);
        }
        match u8::try_from(prefix) {
            Ok(p) if p <= 32 => Ipv4Cidr::new(addr, p),
            _ => Err(CidrError::PrefixRange(prefix)),
        }
    }
}

/// A non-empty run of ASCII digits that fits in a u32 (no sign, no spaces).
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    pub labels: Labels,
    /// `spec.podCIDR`.
    pub pod_cidr: Option<Ipv4Cidr>,
    /// `status.addresses[type=InternalIP]`.
    pub internal_ip: Option<Ipv4Addr>,
    /// `metadata.annotations` (flannel's backend data is read from here by later issues).
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// A `containerPort` of one of the pod's containers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// `spec.nodeName`; `None` until scheduled.
    pub node_name: Option<String>,
    /// `status.podIP`, when known.
    pub ip: Option<Ipv4Addr>,
    pub ports: Vec<ContainerPort>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
}

/// A workload that stamps out pods (Deployment, or ReplicaSet/StatefulSet/DaemonSet
/// treated the same way by the lab's scheduler).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// `Deployment`, `ReplicaSet`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `spec.replicas` (default 1). For a DaemonSet it is 1: one pod on every node, see
    /// [`Workload::per_node`].
    pub replicas: u32,
    /// The pod template's labels.
    pub pod_labels: Labels,
    pub ports: Vec<ContainerPort>,
    /// The template's `spec.nodeName`, if it pins one.
    pub node_name: Option<String>,
    /// A DaemonSet: one pod per node instead of `replicas` pods.
    pub per_node: bool,
    /// The template's `spec.hostNetwork`: its pods use the node's network namespace.
    pub host_network: bool,
    /// 10 characters (`[bcdfghjklmnpqrstvwxz2456789]`) derived from the whole pod template,
    /// like the `pod-template-hash` label a Deployment gives its ReplicaSet: any change to
    /// the template (an image, a port) changes it, and with it the names of the pods.
    pub template_hash: String,
}

/// Everything the sources know, keyed for deterministic iteration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Model {
    pub nodes: BTreeMap<String, Node>,
    pub namespaces: BTreeMap<String, Namespace>,
    /// Keyed by (namespace, name).
    pub pods: BTreeMap<(String, String), Pod>,
    /// Keyed by (namespace, name).
    pub workloads: BTreeMap<(String, String), Workload>,
    /// flannel's net-conf.json from the `kube-system/kube-flannel-cfg` ConfigMap.
    pub net_conf: Option<NetConf>,
    /// Keyed by (namespace, name).
    pub services: BTreeMap<(String, String), Service>,
    /// EndpointSlices (`discovery.k8s.io/v1`, IPv4 only), keyed by (namespace, name of the
    /// slice); each names its Service in [`EndpointSlice::service`].
    pub endpoint_slices: BTreeMap<(String, String), EndpointSlice>,
}

/// `spec.type` of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
    /// A DNS alias: nothing for the dataplane to do.
    ExternalName,
}

/// `spec.externalTrafficPolicy` / `spec.internalTrafficPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TrafficPolicy {
    /// Every ready endpoint in the cluster (the default).
    Cluster,
    /// Only endpoints on the node that received the traffic.
    Local,
}

/// A Service's `targetPort`: a number, or the name of a container port resolved per
/// endpoint through the EndpointSlice's ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// One entry of a Service's `spec.ports`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    /// `name` (required by the API when there are several ports; `None` for a single
    /// unnamed port). EndpointSlice ports are matched to Service ports by this name.
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    /// Defaults to `port` when the manifest leaves it out.
    pub target_port: TargetPort,
    /// `nodePort` (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
}

/// A Service (`v1`), IPv4 only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub service_type: ServiceType,
    /// `spec.clusterIPs` (or `spec.clusterIP`) IPv4 entries; empty for a headless Service
    /// (`clusterIP: None`), which the dataplane does not load-balance.
    pub cluster_ips: Vec<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    /// `spec.selector` (empty: endpoints are managed by hand).
    pub selector: Labels,
    /// `spec.externalIPs` (IPv4 entries).
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip` (IPv4 entries).
    pub load_balancer_ips: Vec<Ipv4Addr>,
    pub external_traffic_policy: TrafficPolicy,
    pub internal_traffic_policy: TrafficPolicy,
    /// `sessionAffinity: ClientIP` with `sessionAffinityConfig.clientIP.timeoutSeconds`
    /// (default 10800); `None` for `sessionAffinity: None`.
    pub session_affinity_timeout: Option<u32>,
}

/// One port of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointPort {
    /// Matches [`ServicePort::name`] (`None` for the unnamed port).
    pub name: Option<String>,
    pub protocol: Protocol,
    /// The resolved target port; `None` when it could not be resolved (no such named port
    /// on the pods), in which case the endpoints serve nothing on it.
    pub port: Option<u16>,
}

/// One endpoint of an EndpointSlice, with its conditions (`nil` read as the API says:
/// `ready` nil = true, `serving` nil = `ready`, `terminating` nil = false).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// IPv4 addresses (the API allows several; kube-proxy uses the first).
    pub addresses: Vec<Ipv4Addr>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// `nodeName`: which node the endpoint runs on (for traffic policy Local).
    pub node_name: Option<String>,
}

/// An EndpointSlice (`discovery.k8s.io/v1`, `addressType: IPv4`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The `kubernetes.io/service-name` label: the Service it belongs to.
    pub service: String,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

/// The label that ties an EndpointSlice to its Service (`discovery.k8s.io/v1`).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The value Kubernetes' endpointslice controller writes in [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_CONTROLLER: &str = "endpointslice-controller.k8s.io";

impl Protocol {
    /// `TCP`, `UDP` or `SCTP`, as in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalName => "ExternalName",
        })
    }
}

impl fmt::Display for TrafficPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrafficPolicy::Cluster => "Cluster",
            TrafficPolicy::Local => "Local",
        })
    }
}

fn fmt_ips(ips: &[Ipv4Addr]) -> String {
    let items: Vec<String> = ips.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(","))
}

impl Service {
    /// A Service of `service_type` with no cluster IPs, ports, selector or external
    /// addresses, both traffic policies `Cluster` and no session affinity (what an
    /// `ExternalName` Service is to the dataplane).
    pub fn bare(namespace: String, name: String, service_type: ServiceType) -> Service {
        Service {
            namespace,
            name,
            service_type,
            cluster_ips: Vec::new(),
            ports: Vec::new(),
            selector: Default::default(),
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            session_affinity_timeout: None,
        }
    }

    /// Headless (`clusterIP: None`) or ExternalName: nothing for the dataplane to balance.
    pub fn is_headless(&self) -> bool {
        self.cluster_ips.is_empty()
    }

    /// One line: `service <ns>/<name> type=.. clusterIPs=[..] ports=[name:port/PROTO->target(nodePort)]
    /// selector={..} externalIPs=[..] lbIPs=[..] eTP=.. iTP=.. affinity=..`.
    pub fn summary(&self) -> String {
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|p| {
                let mut s = String::new();
                if let Some(n) = &p.name {
                    s.push_str(n);
                    s.push(':');
                }
                s.push_str(&format!("{}/{}->", p.port, p.protocol.as_str()));
                match &p.target_port {
                    TargetPort::Number(n) => s.push_str(&n.to_string()),
                    TargetPort::Name(n) => s.push_str(n),
                }
                if let Some(np) = p.node_port {
                    s.push_str(&format!("(nodePort {np})"));
                }
                s
            })
            .collect();
        let affinity = match self.session_affinity_timeout {
            Some(t) => format!("ClientIP({t}s)"),
            None => "None".to_string(),
        };
        format!(
            "service {}/{} type={} clusterIPs={} ports=[{}] selector={} externalIPs={} lbIPs={} \
             eTP={} iTP={} affinity={}",
            self.namespace,
            self.name,
            self.service_type,
            fmt_ips(&self.cluster_ips),
            ports.join(","),
            fmt_map(&self.selector),
            fmt_ips(&self.external_ips),
            fmt_ips(&self.load_balancer_ips),
            self.external_traffic_policy,
            self.internal_traffic_policy,
            affinity
        )
    }
}

impl EndpointSlice {
    /// One line: `endpointslice <ns>/<name> service=.. ports=[name:port/PROTO]
    /// endpoints=[ip@node(ready|serving|terminating)]`.
    pub fn summary(&self) -> String {
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|p| {
                let name = p
                    .name
                    .as_deref()
                    .map(|n| format!("{n}:"))
                    .unwrap_or_default();
                let port = p.port.map_or_else(|| "-".to_string(), |n| n.to_string());
                format!("{name}{port}/{}", p.protocol.as_str())
            })
            .collect();
        let eps: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| {
                let mut cond = Vec::new();
                if e.ready {
                    cond.push("ready");
                }
                if e.serving {
                    cond.push("serving");
                }
                if e.terminating {
                    cond.push("terminating");
                }
                format!(
                    "{}@{}({})",
                    fmt_ips(&e.addresses).trim_matches(['[', ']']),
                    or_dash(e.node_name.as_deref()),
                    cond.join("|")
                )
            })
            .collect();
        format!(
            "endpointslice {}/{} service={} ports=[{}] endpoints=[{}]",
            self.namespace,
            self.name,
            self.service,
            ports.join(","),
            eps.join(",")
        )
    }
}

fn fmt_map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", items.join(","))
}

fn fmt_ports(ports: &[ContainerPort]) -> String {
    let items: Vec<String> = ports
        .iter()
        .map(|p| {
            let proto = match p.protocol {
                Protocol::Tcp => "TCP",
                Protocol::Udp => "UDP",
                Protocol::Sctp => "SCTP",
            };
            match &p.name {
                Some(n) => format!("{}/{proto}({n})", p.port),
                None => format!("{}/{proto}", p.port),
            }
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn or_dash<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

impl Node {
    /// One line: `node <name> podCIDR=.. internalIP=.. labels={..} annotations={..}`.
    pub fn summary(&self) -> String {
        format!(
            "node {} podCIDR={} internalIP={} labels={} annotations={}",
            self.name,
            or_dash(self.pod_cidr),
            or_dash(self.internal_ip),
            fmt_map(&self.labels),
            fmt_map(&self.annotations)
        )
    }
}

impl Namespace {
    /// One line: `namespace <name> labels={..}`.
    pub fn summary(&self) -> String {
        format!("namespace {} labels={}", self.name, fmt_map(&self.labels))
    }
}

impl Pod {
    /// One line: `pod <ns>/<name> node=.. ip=.. hostNetwork=.. ports=[..] labels={..}`.
    pub fn summary(&self) -> String {
        format!(
            "pod {}/{} node={} ip={} hostNetwork={} ports={} labels={}",
            self.namespace,
            self.name,
            or_dash(self.node_name.as_deref()),
            or_dash(self.ip),
            self.host_network,
            fmt_ports(&self.ports),
            fmt_map(&self.labels)
        )
    }
}

impl Workload {
    /// One line: `<kind> <ns>/<name> replicas=.. perNode=.. ...`.
    pub fn summary(&self) -> String {
        format!(
            "{} {}/{} replicas={} perNode={} node={} hostNetwork={} templateHash={} ports={} \
             labels={}",
            self.kind,
            self.namespace,
            self.name,
            self.replicas,
            self.per_node,
            or_dash(self.node_name.as_deref()),
            self.host_network,
            self.template_hash,
            fmt_ports(&self.ports),
            fmt_map(&self.pod_labels)
        )
    }
}

impl Model {
    /// Every object, one line each, in a fixed order (nodes, namespaces, pods, workloads,
    /// services, endpoint slices;
    /// each sorted by key): for logs, the CLI and golden tests.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let lines = self
            .nodes
            .values()
            .map(Node::summary)
            .chain(self.namespaces.values().map(Namespace::summary))
            .chain(self.pods.values().map(Pod::summary))
            .chain(self.workloads.values().map(Workload::summary))
            .chain(self.services.values().map(Service::summary))
            .chain(self.endpoint_slices.values().map(EndpointSlice::summary));
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Result<Ipv4Cidr, CidrError> {
        s.parse()
    }

    #[test]
    fn parse_and_display() {
        let n = c("10.244.1.0/24").unwrap();
        assert_eq!(n.addr, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(n.prefix, 24);
        assert_eq!(n.to_string(), "10.244.1.0/24");
        assert_eq!(c("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(c("10.1.2.3/32").unwrap().prefix, 32);
    }

    #[test]
    fn strict_like_kubernetes() {
        assert_eq!(
            c("10.244.1.5/24"),
            Err(CidrError::HostBits(c("10.244.1.0/24").unwrap()))
        );
        assert_eq!(
            c("10.244.1.5/24").unwrap_err().to_string(),
            "must not have bits set beyond the prefix length (the subnet is 10.244.1.0/24)"
        );
        assert_eq!(c("010.244.1.0/24"), Err(CidrError::LeadingZeros));
        assert_eq!(c("10.244.1.0/024"), Err(CidrError::LeadingZeros));
        assert_eq!(c("10.244.1.0/33"), Err(CidrError::PrefixRange(33)));
        assert_eq!(c("fd00::/64"), Err(CidrError::Ipv6));
        for bad in [
            "",
            "10.244.1.0",
            "10.244.1.0/",
            "/24",
            "10.244.1.0/+24",
            "10.244.1.0/ 24",
            " 10.244.1.0/24",
            "10.244.1/24",
            "10.244.1.0/24/1",
            "10.244.1.0/99999999999",
        ] {
            assert!(c(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn helpers() {
        let n = c("10.244.1.0/24").unwrap();
        assert_eq!(n.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(n.first_host(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(n.network(), Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert_eq!(n.size(), 256);
        assert!(n.contains(Ipv4Addr::new(10, 244, 1, 200)));
        assert!(!n.contains(Ipv4Addr::new(10, 244, 2, 1)));
        assert!(n.is_host(Ipv4Addr::new(10, 244, 1, 254)));
        assert!(!n.is_host(Ipv4Addr::new(10, 244, 1, 255)));
        assert!(!n.is_host(Ipv4Addr::new(10, 244, 1, 0)));
        let all = c("0.0.0.0/0").unwrap();
        assert_eq!(all.mask(), Ipv4Addr::UNSPECIFIED);
        assert!(all.contains(Ipv4Addr::new(203, 0, 113, 9)));
        assert_eq!(all.size(), 1 << 32);
        let p2p = c("10.0.0.0/31").unwrap();
        assert_eq!(p2p.first_host(), Ipv4Addr::new(10, 0, 0, 0));
        assert!(p2p.is_host(Ipv4Addr::new(10, 0, 0, 1)));
        let one = c("10.0.0.7/32").unwrap();
        assert_eq!(one.first_host(), Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(one.mask(), Ipv4Addr::BROADCAST);
        assert_eq!(
            Ipv4Cidr::new_truncating(Ipv4Addr::new(10, 244, 1, 77), 24),
            n
        );
        assert_eq!(
            Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 40),
            Err(CidrError::PrefixRange(40))
        );
    }
}

/// flannel's backend types that xdplane implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendType {
    Vxlan,
    HostGw,
}

/// flannel's `net-conf.json` (the `kube-flannel-cfg` ConfigMap), as xdplane reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetConf {
    /// The cluster's pod network (`Network`).
    pub network: Ipv4Cidr,
    pub backend: BackendType,
    /// `Backend.VNI` (vxlan), default 1.
    pub vni: u32,
    /// `Backend.Port` (vxlan), default 8472 (the Linux default flannel relies on).
    pub port: u16,
    /// `Backend.DirectRouting` (vxlan): direct routes to peers on the same subnet.
    pub direct_routing: bool,
}

/// The ConfigMap flannel reads its configuration from.
pub const FLANNEL_CONFIGMAP: (&str, &str) = ("kube-system", "kube-flannel-cfg");
/// flannel's Node annotations.
pub const ANN_BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const ANN_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const ANN_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const ANN_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// Looks a key up the way Go's encoding/json matches struct fields: exact first, then
/// case-insensitively (so the seed's `"Directrouting"` means `DirectRouting`).
fn go_get<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<&'a serde_json::Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

impl NetConf {
    /// Parses `net-conf.json` with flannel's defaults and field matching.
    pub fn parse(text: &str) -> Result<NetConf, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let obj = v.as_object().ok_or("must be a JSON object")?;
        let network = match go_get(obj, "Network") {
            Some(serde_json::Value::String(s)) => s
                .parse::<Ipv4Cidr>()
                .map_err(|e| format!("Network: {s:?}: {e}"))?,
            Some(_) => return Err("Network: must be a string".into()),
            None => {
                return Err("Network: required (flannel needs the cluster pod network)".into());
            }
        };
        let empty = serde_json::Map::new();
        let backend = match go_get(obj, "Backend") {
            None | Some(serde_json::Value::Null) => &empty,
            Some(serde_json::Value::Object(b)) => b,
            Some(_) => return Err("Backend: must be an object".into()),
        };
        // flannel's default backend is "udp", which xdplane does not implement.
        let ty = match go_get(backend, "Type") {
            Some(serde_json::Value::String(s)) => s.to_ascii_lowercase(),
            None => "udp".into(),
            Some(_) => return Err("Backend.Type: must be a string".into()),
        };
        let backend_type = match ty.as_str() {
            "vxlan" => BackendType::Vxlan,
            "host-gw" => BackendType::HostGw,
            other => {
                return Err(format!(
                    "Backend.Type: {other:?} is not supported (xdplane implements vxlan and host-gw)"
                ));
            }
        };
        let num = |key: &str, default: u64, max: u64| -> Result<u64, String> {
            match go_get(backend, key) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(v) => match v.as_u64() {
                    Some(0) => Ok(default), // flannel treats 0 as "use the default"
                    Some(n) if n <= max => Ok(n),
                    _ => Err(format!("Backend.{key}: {v} is not a number in 0..={max}")),
                },
            }
        };
        let vni = num("VNI", 1, 0xff_ffff)? as u32;
        let port = num("Port", 8472, 65535)? as u16;
        let direct_routing = match go_get(backend, "DirectRouting") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(v) => return Err(format!("Backend.DirectRouting: {v} is not a boolean")),
        };
        Ok(NetConf {
            network,
            backend: backend_type,
            vni,
            port,
            direct_routing,
        })
    }
}

/// flannel's `backend-data` annotation for vxlan: `{"VNI":1,"VtepMAC":"..."}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VxlanBackendData {
    pub vni: u32,
    pub vtep_mac: [u8; 6],
}

impl VxlanBackendData {
    pub fn parse(text: &str) -> Result<VxlanBackendData, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let obj = v.as_object().ok_or("must be a JSON object")?;
        let vni = match go_get(obj, "VNI") {
            None => 1,
            Some(n) => n
                .as_u64()
                .filter(|n| *n <= 0xff_ffff)
                .ok_or_else(|| format!("VNI: {n} is not a VNI"))? as u32,
        };
        let mac = go_get(obj, "VtepMAC")
            .and_then(|m| m.as_str())
            .ok_or("VtepMAC: required")?;
        let vtep_mac =
            parse_mac(mac).ok_or_else(|| format!("VtepMAC: {mac:?} is not a MAC address"))?;
        Ok(VxlanBackendData { vni, vtep_mac })
    }

    /// The annotation value flanneld writes.
    pub fn to_annotation(&self) -> String {
        format!(
            r#"{{"VNI":{},"VtepMAC":"{}"}}"#,
            self.vni,
            fmt_mac(self.vtep_mac)
        )
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod netconf_tests {
    use super::*;

    #[test]
    fn seed_net_conf_with_go_style_keys() {
        let n = NetConf::parse(
            r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "Directrouting": true}}"#,
        )
        .unwrap();
        assert_eq!(n.network.to_string(), "10.244.0.0/16");
        assert_eq!(n.backend, BackendType::Vxlan);
        assert!(n.direct_routing);
        assert_eq!((n.vni, n.port), (1, 8472));
        let h =
            NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#).unwrap();
        assert_eq!(h.backend, BackendType::HostGw);
        let p = NetConf::parse(
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4096,"Port":4789}}"#,
        )
        .unwrap();
        assert_eq!((p.vni, p.port), (4096, 4789));
    }

    #[test]
    fn net_conf_errors_are_clear() {
        let e = |s: &str| NetConf::parse(s).unwrap_err();
        assert!(e("{").contains("not valid JSON"));
        assert!(e(r#"{"Backend":{"Type":"vxlan"}}"#).contains("Network: required"));
        assert!(e(r#"{"Network":"10.244.0.0/16"}"#).contains(r#""udp" is not supported"#));
        assert!(e(r#"{"Network":"10.244.0.1/16","Backend":{"Type":"vxlan"}}"#).contains("Network"));
        assert!(
            e(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}"#)
                .contains("wireguard")
        );
        assert!(
            e(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":"x"}}"#)
                .contains("VNI")
        );
    }

    #[test]
    fn backend_data_round_trip() {
        let d = VxlanBackendData::parse(r#"{"VNI":1,"VtepMAC":"9a:5c:1e:0b:44:01"}"#).unwrap();
        assert_eq!(d.vtep_mac, [0x9a, 0x5c, 0x1e, 0x0b, 0x44, 0x01]);
        assert_eq!(VxlanBackendData::parse(&d.to_annotation()).unwrap(), d);
        assert!(VxlanBackendData::parse(r#"{"VNI":1}"#).is_err());
        assert!(VxlanBackendData::parse(r#"{"VNI":1,"VtepMAC":"9a:5c"}"#).is_err());
    }
}
