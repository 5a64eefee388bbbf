//! The project's model of the cluster. No Kubernetes types past this point.

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Labels of an object, sorted.
pub type Labels = BTreeMap<String, String>;

/// An IPv4 prefix (`10.244.1.0/24`), stored with host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
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
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub replicas: u32,
    /// The pod template's labels.
    pub pod_labels: Labels,
    pub ports: Vec<ContainerPort>,
    /// The template's `spec.nodeName`, if it pins one.
    pub node_name: Option<String>,
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
}
