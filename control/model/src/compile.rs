//! The compiler: model + this node's local state → one dataplane [`Snapshot`].
//!
//! Pure and deterministic: the same inputs give the same snapshot (and the same warnings in
//! the same order). Nothing here touches the system.
//!
//! Errors and warnings: what makes the whole node unusable (no node, no pod CIDR, a pod CIDR
//! too small, a bad MTU, two ports with one id) is a [`CompileError`] and nothing is built.
//! A bad attachment (an IP outside the pod CIDR, an IP another pod already has, a port that
//! does not exist) is left out of the snapshot and reported as a [`CompileWarning`]: one bad
//! pod never takes the node down. Attachments are taken in the order given, so when two
//! claim one IP (or one port) the earlier one keeps it.

mod services;

use crate::model::{
    ANN_BACKEND_DATA, ANN_PUBLIC_IP, BackendType, Ipv4Cidr, Model, VxlanBackendData,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use xdplane_pipeline::{
    Fib, FibBuilder, LocalEndpoint, LocalEndpoints, Neighbours, NodeTables, PortConfig, PortId,
    PortKind, Route, RouteId, Snapshot,
};

/// The smallest IPv4 MTU every link must carry (RFC 791).
pub const MIN_MTU: u32 = 68;
/// The largest IPv4 datagram.
pub const MAX_MTU: u32 = 65535;

/// What only the node agent knows: which node it is, and the ports and pods attached to it.
#[derive(Clone, Debug, Default)]
pub struct LocalState {
    pub node: String,
    /// Used instead of the Node's `spec.podCIDR` when set.
    pub pod_cidr_override: Option<Ipv4Cidr>,
    /// The pods' MTU; `None`: derived (uplink MTU − 50 with vxlan, the uplink MTU with
    /// host-gw, 1500 without an uplink), as flannel does.
    pub pod_mtu: Option<u32>,
    pub ports: Vec<PortConfig>,
    pub attachments: Vec<LocalAttachment>,
    /// The node's uplink, when attached.
    pub uplink: Option<UplinkInfo>,
    /// flannel's configuration, used instead of the model's ConfigMap when set.
    pub net_conf_override: Option<crate::model::NetConf>,
    /// Resolved neighbours on the uplink.
    pub neighbours: Vec<(Ipv4Addr, [u8; 6])>,
    /// Masquerade pod traffic leaving the cluster network (flannel's `--ip-masq`); `None`:
    /// on, as in kube-flannel.yml.
    pub masquerade: Option<bool>,
    /// Source ports (inclusive) for SNAT; `None`: [`xdplane_pipeline::DEFAULT_SNAT_PORTS`].
    pub snat_ports: Option<(u16, u16)>,
}

/// The node's underlay link as the agent found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkInfo {
    pub port: PortId,
    /// The node's address on it and the subnet's prefix length.
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// The default gateway on the uplink (the kernel's default route), if any.
    pub gateway: Option<Ipv4Addr>,
}

/// A pod interface attached to the dataplane (one CNI ADD).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAttachment {
    pub port: PortId,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub pod_namespace: String,
    pub pod_name: String,
    pub container_id: String,
}

/// Nothing can be built for the node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("node {node:?} is not in the model and no pod CIDR override was given")]
    UnknownNode { node: String },
    #[error(
        "node {node:?} has no pod CIDR: set spec.podCIDR on the Node or give a pod CIDR override"
    )]
    NoPodCidr { node: String },
    #[error(
        "pod CIDR {cidr} of node {node:?} is too small: it needs a gateway and at least one pod \
         (a /30 or shorter prefix)"
    )]
    PodCidrTooSmall { node: String, cidr: Ipv4Cidr },
    #[error("pod MTU {mtu} is out of range {MIN_MTU}..={MAX_MTU}")]
    BadMtu { mtu: u32 },
    #[error("SNAT port range {lo}-{hi} is empty or starts at 0")]
    BadSnatPorts { lo: u16, hi: u16 },
    #[error("port id {id} is given twice: {first:?} and {second:?}")]
    DuplicatePort {
        id: PortId,
        first: String,
        second: String,
    },
}

/// Something left out of the snapshot, or a choice made, that the operator should know about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "warning", rename_all = "kebab-case")]
pub enum CompileWarning {
    /// The node's pod CIDR is not inside flannel's Network.
    PodCidrOutsideNetwork {
        node: String,
        pod_cidr: Ipv4Cidr,
        network: Ipv4Cidr,
    },
    /// A peer's pod CIDR overlaps ours; no route to it.
    PeerCidrOverlaps {
        node: String,
        pod_cidr: Ipv4Cidr,
        own: Ipv4Cidr,
    },
    /// A peer has neither flannel's public-ip annotation nor an InternalIP.
    PeerWithoutAddress { node: String },
    /// vxlan: a peer has no usable VtepMAC (yet).
    PeerWithoutVtep { node: String, reason: String },
    /// host-gw: a peer is not on the uplink's subnet, so it cannot be a next hop.
    PeerNotOnSubnet { node: String, peer_ip: Ipv4Addr },
    /// The node is not in the model; the override CIDR is used.
    NodeNotInModel { node: String, pod_cidr: Ipv4Cidr },
    /// The override differs from the Node's `spec.podCIDR`; the override is used.
    PodCidrOverridden {
        node: String,
        model: Ipv4Cidr,
        using: Ipv4Cidr,
    },
    /// The attachment's port is not among the ports.
    UnknownPort {
        pod: String,
        container_id: String,
        port: PortId,
    },
    /// The attachment's port is an uplink.
    NotAPodPort {
        pod: String,
        container_id: String,
        port: PortId,
        port_name: String,
    },
    /// The attachment's IP is outside the node's pod CIDR.
    OutsidePodCidr {
        pod: String,
        container_id: String,
        ip: Ipv4Addr,
        pod_cidr: Ipv4Cidr,
    },
    /// The attachment's IP is the gateway, the network or the broadcast address.
    ReservedIp {
        pod: String,
        container_id: String,
        ip: Ipv4Addr,
        what: &'static str,
    },
    /// Two attachments claim one IP; the first keeps it.
    DuplicateIp {
        ip: Ipv4Addr,
        kept: String,
        kept_container_id: String,
        skipped: String,
        skipped_container_id: String,
    },
    /// Two attachments claim one port; the first keeps it.
    PortTaken {
        port: PortId,
        kept: String,
        kept_container_id: String,
        skipped: String,
        skipped_container_id: String,
    },
    /// Two Service ports claim one frontend (`ip:port/proto`); the first keeps it.
    DuplicateFrontend {
        frontend: String,
        kept: String,
        skipped: String,
    },
    /// NodePorts exist but the node has no address (no uplink, no InternalIP): they are
    /// not served here. `first` names one of the `count` Service ports.
    NodePortsWithoutNodeIp {
        node: String,
        count: usize,
        first: String,
    },
    /// A Service port's backends do not fit a Maglev table; its frontends are left out.
    BackendSetFailed {
        service: String,
        backends: usize,
        reason: String,
    },
}

impl fmt::Display for CompileWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |id: &str| id.chars().take(12).collect::<String>();
        match self {
            CompileWarning::PodCidrOutsideNetwork {
                node,
                pod_cidr,
                network,
            } => write!(
                f,
                "node {node:?}: pod CIDR {pod_cidr} is outside flannel's Network {network}"
            ),
            CompileWarning::PeerCidrOverlaps {
                node,
                pod_cidr,
                own,
            } => write!(
                f,
                "node {node:?}: pod CIDR {pod_cidr} overlaps this node's {own}; no route to it"
            ),
            CompileWarning::PeerWithoutAddress { node } => write!(
                f,
                "node {node:?}: no {ANN_PUBLIC_IP} annotation and no InternalIP; its pods are unreachable"
            ),
            CompileWarning::PeerWithoutVtep { node, reason } => write!(
                f,
                "node {node:?}: {reason}; its pods are unreachable until it publishes its VTEP"
            ),
            CompileWarning::PeerNotOnSubnet { node, peer_ip } => write!(
                f,
                "node {node:?}: {peer_ip} is not on the uplink's subnet, host-gw cannot reach it"
            ),
            CompileWarning::NodeNotInModel { node, pod_cidr } => write!(
                f,
                "node {node:?} is not in the model; using the pod CIDR override {pod_cidr}"
            ),
            CompileWarning::PodCidrOverridden { node, model, using } => write!(
                f,
                "node {node:?}: spec.podCIDR is {model}, using the override {using}"
            ),
            CompileWarning::UnknownPort {
                pod,
                container_id,
                port,
            } => write!(
                f,
                "pod {pod} (container {}): port {port} does not exist; pod left out",
                short(container_id)
            ),
            CompileWarning::NotAPodPort {
                pod,
                container_id,
                port,
                port_name,
            } => write!(
                f,
                "pod {pod} (container {}): port {port} ({port_name}) is an uplink, not a pod \
                 port; pod left out",
                short(container_id)
            ),
            CompileWarning::OutsidePodCidr {
                pod,
                container_id,
                ip,
                pod_cidr,
            } => write!(
                f,
                "pod {pod} (container {}): IP {ip} is outside the node's pod CIDR {pod_cidr}; \
                 pod left out",
                short(container_id)
            ),
            CompileWarning::ReservedIp {
                pod,
                container_id,
                ip,
                what,
            } => write!(
                f,
                "pod {pod} (container {}): IP {ip} is {what}; pod left out",
                short(container_id)
            ),
            CompileWarning::DuplicateIp {
                ip,
                kept,
                kept_container_id,
                skipped,
                skipped_container_id,
            } => write!(
                f,
                "IP {ip} is claimed by pod {kept} (container {}) and pod {skipped} (container \
                 {}); the first keeps it, the second is left out",
                short(kept_container_id),
                short(skipped_container_id)
            ),
            CompileWarning::PortTaken {
                port,
                kept,
                kept_container_id,
                skipped,
                skipped_container_id,
            } => write!(
                f,
                "port {port} is claimed by pod {kept} (container {}) and pod {skipped} \
                 (container {}); the first keeps it, the second is left out",
                short(kept_container_id),
                short(skipped_container_id)
            ),
            CompileWarning::DuplicateFrontend {
                frontend,
                kept,
                skipped,
            } => write!(
                f,
                "frontend {frontend} is claimed by Service port {kept} and Service port \
                 {skipped}; the first keeps it, the second is left out there"
            ),
            CompileWarning::NodePortsWithoutNodeIp { node, count, first } => write!(
                f,
                "node {node:?} has no address (no uplink, no InternalIP): {count} NodePort(s) \
                 (first: {first}) are not served here"
            ),
            CompileWarning::BackendSetFailed {
                service,
                backends,
                reason,
            } => write!(
                f,
                "Service port {service}: {backends} backends: {reason}; its frontends are left out"
            ),
        }
    }
}

/// Compiles the snapshot of generation `generation` for node `local.node`.
///
/// Node tables come from the model's Node named `local.node`: its `spec.podCIDR` (or
/// `local.pod_cidr_override`, which wins), the gateway at the CIDR's first host address (like
/// flannel's `cni0`), `local.pod_mtu`. Ports are indexed by id. Local endpoints come from the
/// attachments that pass the checks (see the module docs); the others become warnings.
/// The service table comes from the model's Services and EndpointSlices as this node sees
/// them (traffic policies applied; see `compile/services.rs`), with the NAT fields of the
/// node tables (cluster network, masquerade, SNAT ports).
pub fn compile(
    model: &Model,
    local: &LocalState,
    generation: u64,
) -> Result<(Snapshot, Vec<CompileWarning>), CompileError> {
    let mut warnings = Vec::new();
    let node = model.nodes.get(&local.node);
    let cidr = match (node, local.pod_cidr_override) {
        (None, None) => {
            return Err(CompileError::UnknownNode {
                node: local.node.clone(),
            });
        }
        (None, Some(o)) => {
            warnings.push(CompileWarning::NodeNotInModel {
                node: local.node.clone(),
                pod_cidr: o,
            });
            o
        }
        (Some(n), Some(o)) => {
            if let Some(m) = n.pod_cidr
                && m != o
            {
                warnings.push(CompileWarning::PodCidrOverridden {
                    node: local.node.clone(),
                    model: m,
                    using: o,
                });
            }
            o
        }
        (Some(n), None) => n.pod_cidr.ok_or_else(|| CompileError::NoPodCidr {
            node: local.node.clone(),
        })?,
    };
    // Re-normalize: the fields of Ipv4Cidr are public, so do not trust host bits to be clear.
    let cidr = Ipv4Cidr::new_truncating(cidr.addr, cidr.prefix);
    if cidr.prefix > 30 {
        return Err(CompileError::PodCidrTooSmall {
            node: local.node.clone(),
            cidr,
        });
    }
    let net_conf = local
        .net_conf_override
        .clone()
        .or_else(|| model.net_conf.clone());
    let uplink_mtu = local.uplink.as_ref().map(|u| u.mtu);
    let pod_mtu = match (local.pod_mtu, &net_conf, uplink_mtu) {
        (Some(m), _, _) => m,
        (None, Some(nc), Some(u)) if nc.backend == BackendType::Vxlan => {
            u.saturating_sub(VXLAN_OVERHEAD)
        }
        (None, _, Some(u)) => u,
        (None, _, None) => 1500,
    };
    if !(MIN_MTU..=MAX_MTU).contains(&pod_mtu) {
        return Err(CompileError::BadMtu { mtu: pod_mtu });
    }
    let gateway = cidr.first_host();
    let snat_ports = local
        .snat_ports
        .unwrap_or(xdplane_pipeline::DEFAULT_SNAT_PORTS);
    if snat_ports.0 == 0 || snat_ports.0 > snat_ports.1 {
        return Err(CompileError::BadSnatPorts {
            lo: snat_ports.0,
            hi: snat_ports.1,
        });
    }

    // Ports, indexed by id.
    let mut ports: Vec<Option<PortConfig>> = Vec::new();
    for p in &local.ports {
        let i = usize::from(p.id);
        if ports.len() <= i {
            ports.resize(i + 1, None);
        }
        if let Some(first) = &ports[i] {
            return Err(CompileError::DuplicatePort {
                id: p.id,
                first: first.name.clone(),
                second: p.name.clone(),
            });
        }
        ports[i] = Some(p.clone());
    }

    // Local endpoints.
    let mut endpoints = LocalEndpoints::default();
    let mut by_ip: BTreeMap<Ipv4Addr, &LocalAttachment> = BTreeMap::new();
    let mut by_port: BTreeMap<PortId, &LocalAttachment> = BTreeMap::new();
    for a in &local.attachments {
        let pod = format!("{}/{}", a.pod_namespace, a.pod_name);
        let cid = a.container_id.clone();
        let port = ports.get(usize::from(a.port)).and_then(Option::as_ref);
        let Some(port) = port else {
            warnings.push(CompileWarning::UnknownPort {
                pod,
                container_id: cid,
                port: a.port,
            });
            continue;
        };
        if port.kind != PortKind::Pod {
            warnings.push(CompileWarning::NotAPodPort {
                pod,
                container_id: cid,
                port: a.port,
                port_name: port.name.clone(),
            });
            continue;
        }
        if !cidr.contains(a.ip) {
            warnings.push(CompileWarning::OutsidePodCidr {
                pod,
                container_id: cid,
                ip: a.ip,
                pod_cidr: cidr,
            });
            continue;
        }
        let reserved = if a.ip == gateway {
            Some("the gateway address")
        } else if a.ip == cidr.network() {
            Some("the network address of the pod CIDR")
        } else if a.ip == cidr.broadcast() {
            Some("the broadcast address of the pod CIDR")
        } else {
            None
        };
        if let Some(what) = reserved {
            warnings.push(CompileWarning::ReservedIp {
                pod,
                container_id: cid,
                ip: a.ip,
                what,
            });
            continue;
        }
        if let Some(first) = by_ip.get(&a.ip) {
            warnings.push(CompileWarning::DuplicateIp {
                ip: a.ip,
                kept: format!("{}/{}", first.pod_namespace, first.pod_name),
                kept_container_id: first.container_id.clone(),
                skipped: pod,
                skipped_container_id: cid,
            });
            continue;
        }
        if let Some(first) = by_port.get(&a.port) {
            warnings.push(CompileWarning::PortTaken {
                port: a.port,
                kept: format!("{}/{}", first.pod_namespace, first.pod_name),
                kept_container_id: first.container_id.clone(),
                skipped: pod,
                skipped_container_id: cid,
            });
            continue;
        }
        by_ip.insert(a.ip, a);
        by_port.insert(a.port, a);
        endpoints.insert(
            a.ip,
            LocalEndpoint {
                port: a.port,
                mac: a.mac,
            },
        );
    }

    let (routes, fib) = routes(model, local, cidr, net_conf.as_ref(), &mut warnings);
    let mut neighbours = Neighbours::default();
    for (ip, mac) in &local.neighbours {
        neighbours.insert(*ip, *mac);
    }
    let mut node = NodeTables {
        name: local.node.clone(),
        pod_net: cidr.network(),
        pod_prefix: cidr.prefix,
        gateway,
        pod_mtu,
        ..NodeTables::default()
    };
    if let Some(u) = &local.uplink {
        let net = Ipv4Cidr::new_truncating(u.ip, u.prefix);
        node.node_ip = Some(u.ip);
        node.uplink = Some(u.port);
        node.uplink_net = net.network();
        node.uplink_prefix = u.prefix;
        node.uplink_mtu = u.mtu;
        node.vtep_mac = u.mac;
    }
    if let Some(nc) = &net_conf {
        node.vxlan_port = nc.port;
        node.vni = nc.vni;
        let net = Ipv4Cidr::new_truncating(nc.network.addr, nc.network.prefix);
        node.cluster_net = net.network();
        node.cluster_prefix = net.prefix;
    }
    node.masquerade = local.masquerade.unwrap_or(true);
    node.snat_ports = snat_ports;
    // NodePorts answer on the uplink's address, else on the Node's InternalIP.
    let node_ip = local
        .uplink
        .as_ref()
        .map(|u| u.ip)
        .or_else(|| model.nodes.get(&local.node).and_then(|n| n.internal_ip));
    let services = services::build(model, &local.node, node_ip, &mut warnings);
    let snap = Snapshot {
        generation,
        node,
        ports,
        local: endpoints,
        routes,
        fib,
        neighbours,
        services,
    };
    Ok((snap, warnings))
}

/// Bytes VXLAN adds: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 (flannel's MTU − 50).
pub const VXLAN_OVERHEAD: u32 = 50;

/// The routes of the node: its pod CIDR, one per remote node as the flannel mode says, the
/// cluster network as unreachable (so unknown pod addresses are answered, not sent to the
/// default gateway), and the default route via the uplink's gateway.
fn routes(
    model: &Model,
    local: &LocalState,
    own: Ipv4Cidr,
    net_conf: Option<&crate::model::NetConf>,
    warnings: &mut Vec<CompileWarning>,
) -> (Vec<Route>, Fib) {
    let mut routes = vec![Route::Local];
    let mut fib = FibBuilder::new();
    fib.insert(own.network(), own.prefix, 0);
    let add = |routes: &mut Vec<Route>, fib: &mut FibBuilder, c: Ipv4Cidr, r: Route| {
        let id = routes.len() as RouteId;
        routes.push(r);
        fib.insert(c.network(), c.prefix, id);
    };
    if let Some(nc) = net_conf {
        if nc.network.prefix <= own.prefix && nc.network.contains(own.network()) {
            add(&mut routes, &mut fib, nc.network, Route::Unreachable);
        } else {
            warnings.push(CompileWarning::PodCidrOutsideNetwork {
                node: local.node.clone(),
                pod_cidr: own,
                network: nc.network,
            });
        }
        let uplink_net = local
            .uplink
            .as_ref()
            .map(|u| Ipv4Cidr::new_truncating(u.ip, u.prefix));
        for (name, peer) in &model.nodes {
            if *name == local.node {
                continue;
            }
            let Some(pc) = peer.pod_cidr else { continue };
            let pc = Ipv4Cidr::new_truncating(pc.addr, pc.prefix);
            if pc.contains(own.network()) || own.contains(pc.network()) {
                warnings.push(CompileWarning::PeerCidrOverlaps {
                    node: name.clone(),
                    pod_cidr: pc,
                    own,
                });
                continue;
            }
            let public_ip = peer
                .annotations
                .get(ANN_PUBLIC_IP)
                .and_then(|s| s.parse::<Ipv4Addr>().ok());
            let Some(peer_ip) = public_ip.or(peer.internal_ip) else {
                warnings.push(CompileWarning::PeerWithoutAddress { node: name.clone() });
                add(&mut routes, &mut fib, pc, Route::Unreachable);
                continue;
            };
            let same_subnet = uplink_net.is_some_and(|n| n.contains(peer_ip));
            let route = match nc.backend {
                BackendType::HostGw if same_subnet => Route::Direct { next_hop: peer_ip },
                BackendType::HostGw => {
                    warnings.push(CompileWarning::PeerNotOnSubnet {
                        node: name.clone(),
                        peer_ip,
                    });
                    Route::Unreachable
                }
                BackendType::Vxlan if nc.direct_routing && same_subnet => {
                    Route::Direct { next_hop: peer_ip }
                }
                BackendType::Vxlan => match peer.annotations.get(ANN_BACKEND_DATA) {
                    Some(data) => match VxlanBackendData::parse(data) {
                        Ok(d) => Route::Vxlan {
                            vtep: peer_ip,
                            vtep_mac: d.vtep_mac,
                            vni: nc.vni,
                        },
                        Err(reason) => {
                            warnings.push(CompileWarning::PeerWithoutVtep {
                                node: name.clone(),
                                reason: format!("{ANN_BACKEND_DATA}: {reason}"),
                            });
                            Route::Unreachable
                        }
                    },
                    None => {
                        warnings.push(CompileWarning::PeerWithoutVtep {
                            node: name.clone(),
                            reason: format!("no {ANN_BACKEND_DATA} annotation yet"),
                        });
                        Route::Unreachable
                    }
                },
            };
            add(&mut routes, &mut fib, pc, route);
        }
    }
    if let Some(gw) = local.uplink.as_ref().and_then(|u| u.gateway) {
        let default = Ipv4Cidr::new_truncating(Ipv4Addr::UNSPECIFIED, 0);
        add(
            &mut routes,
            &mut fib,
            default,
            Route::Gateway { next_hop: gw },
        );
    }
    (routes, fib.build())
}
