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

use crate::model::{Ipv4Cidr, Model};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use xdplane_pipeline::{
    LocalEndpoint, LocalEndpoints, NodeTables, PortConfig, PortId, PortKind, Snapshot,
};

/// The smallest IPv4 MTU every link must carry (RFC 791).
pub const MIN_MTU: u32 = 68;
/// The largest IPv4 datagram.
pub const MAX_MTU: u32 = 65535;

/// What only the node agent knows: which node it is, and the ports and pods attached to it.
#[derive(Clone, Debug)]
pub struct LocalState {
    pub node: String,
    /// Used instead of the Node's `spec.podCIDR` when set.
    pub pod_cidr_override: Option<Ipv4Cidr>,
    pub pod_mtu: u32,
    pub ports: Vec<PortConfig>,
    pub attachments: Vec<LocalAttachment>,
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
}

impl fmt::Display for CompileWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |id: &str| id.chars().take(12).collect::<String>();
        match self {
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
        }
    }
}

/// Compiles the snapshot of generation `generation` for node `local.node`.
///
/// Node tables come from the model's Node named `local.node`: its `spec.podCIDR` (or
/// `local.pod_cidr_override`, which wins), the gateway at the CIDR's first host address (like
/// flannel's `cni0`), `local.pod_mtu`. Ports are indexed by id. Local endpoints come from the
/// attachments that pass the checks (see the module docs); the others become warnings.
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
    if !(MIN_MTU..=MAX_MTU).contains(&local.pod_mtu) {
        return Err(CompileError::BadMtu { mtu: local.pod_mtu });
    }
    let gateway = cidr.first_host();

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

    let snap = Snapshot {
        generation,
        node: NodeTables {
            name: local.node.clone(),
            pod_net: cidr.network(),
            pod_prefix: cidr.prefix,
            gateway,
            pod_mtu: local.pod_mtu,
            ..NodeTables::default()
        },
        ports,
        local: endpoints,
        ..Default::default()
    };
    Ok((snap, warnings))
}
