//! The lab's state directory and `state.json`.
//!
//! ```text
//! /run/xdplane-lab/<lab>/
//!   state.json            everything created so far (written after every step)
//!   lock                  flock'd while state.json is read-modified-written
//!   manifests/            the manifests the agents read (user's set + lab Node objects)
//!   cni/<node>.conf       the CNI network config given to the plugin on stdin
//!   ipam/<node>/          the plugin's dataDir (address allocations)
//!   <node>.sock           the agents' admin sockets (and <node>.attachments.json)
//!   logs/<node>.log       agent logs; logs/pod-<netns>.log test server logs
//! ```

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::flannel::Mode;
use crate::procs::ProcRecord;

/// Where labs keep their state: `/run/xdplane-lab`.
pub const STATE_ROOT: &str = "/run/xdplane-lab";
/// Format version of `state.json`.
pub const STATE_VERSION: u32 = 1;

/// What runs a node's dataplane.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NodeKind {
    /// `xdplane run` on the uplink, pods through xdplane-cni.
    #[default]
    Xdplane,
    /// The kernel as flanneld + the flannel CNI plugin set it up (flannel.1, cni0, bridge
    /// plugin); no agent.
    Kernel,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Xdplane => "xdplane",
            NodeKind::Kernel => "kernel",
        }
    }
}

/// A node of the lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeState {
    /// `server<i>`.
    pub name: String,
    pub index: usize,
    pub netns: String,
    /// The uplink `eth0`'s address.
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    /// From the Node object the agent reads.
    pub pod_cidr: Option<String>,
    /// The pods' gateway, as the agent reports it (`node-info`).
    pub gateway: Option<String>,
    pub admin_socket: PathBuf,
    pub cni_conf: PathBuf,
    pub ipam_dir: PathBuf,
    pub log: PathBuf,
    pub agent: Option<ProcRecord>,
    #[serde(default)]
    pub kind: NodeKind,
    /// The VtepMAC in the node's flannel annotation: the agent's `vtepMac` (else its
    /// uplink's MAC), or flannel.1's MAC on a kernel node (none in host-gw mode).
    #[serde(default)]
    pub vtep_mac: Option<String>,
    /// The agent reports VXLAN support (`node-info` has `vtepMac`); always true for kernel
    /// nodes.
    #[serde(default)]
    pub vxlan_support: bool,
    /// The MTU the node gives new pods (`node-info`, or flannel's on a kernel node).
    #[serde(default)]
    pub pod_mtu: Option<u32>,
}

impl NodeState {
    pub fn is_kernel(&self) -> bool {
        self.kind == NodeKind::Kernel
    }
}

/// A pod of the lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodState {
    /// Kubernetes namespace.
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    /// The CNI container ID.
    pub container_id: String,
    /// True once the CNI ADD was attempted (DEL is sent for every such pod on teardown).
    pub cni_attempted: bool,
    /// `ips[0].address` of the CNI result (`IP/prefix`).
    pub address: Option<String>,
    /// The MAC of the pod's `eth0`.
    pub mac: Option<String>,
    /// The host-side interface in the node's namespace, when the result names it.
    pub host_ifname: Option<String>,
    /// The gateway the plugin configured.
    pub gateway: Option<String>,
    /// The whole CNI result (passed back as `prevResult` on DEL).
    pub cni_result: Option<serde_json::Value>,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    pub server: Option<ProcRecord>,
    /// The MTU asked for this pod (`None`: the node's).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The network config given to the plugin on ADD (given again on DEL).
    #[serde(default)]
    pub cni_conf: Option<serde_json::Value>,
    /// The pod's labels (a workload's template labels, `pod-template-hash` …): what
    /// Service selectors match when the lab writes EndpointSlices.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The containerPorts (names resolve named targetPorts).
    #[serde(default)]
    pub container_ports: Vec<PodPort>,
    /// The workload (same namespace) that made the pod: `Deployment/demo2`; `None` for a
    /// pod added by hand.
    #[serde(default)]
    pub workload: Option<String>,
}

/// A containerPort of a lab pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodPort {
    pub name: Option<String>,
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// The external host: a namespace on the fabric standing for the internet (or a client
/// outside the cluster). The nodes' default route points at it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExtState {
    /// `<lab>-ext`.
    pub netns: String,
    /// Its address on the fabric (192.168.50.254).
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    /// Ports its test server serves (TCP and UDP).
    pub ports: Vec<u16>,
    pub server: Option<ProcRecord>,
    pub log: PathBuf,
    /// Routes it holds towards Services' externalIPs / LoadBalancer IPs
    /// (`<ip>/32 via <node IP>`).
    #[serde(default)]
    pub routes: Vec<String>,
}

impl PodState {
    /// The pod's IPv4 address without the prefix length.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.address
            .as_deref()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
    }

    /// `name` for the default namespace, `namespace/name` otherwise.
    pub fn display_name(&self) -> String {
        if self.namespace == "default" {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }
}

/// Everything a lab has created (written as it goes, so a failed `up` can be undone).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LabState {
    pub version: u32,
    pub name: String,
    /// `creating` while `up` runs, `ready` after it, `failed` when it stopped on an error.
    pub phase: String,
    pub bin_dir: PathBuf,
    /// The manifest directory the user gave (or the default set).
    pub manifests_source: PathBuf,
    /// The generated directory the agents read.
    pub manifests_dir: PathBuf,
    pub fabric_netns: String,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    /// flannel's mode, as the net-conf ConfigMap says (`lab mode` changes it).
    #[serde(default)]
    pub mode: Mode,
    /// `up --pod-mtu`: the MTU of every pod, whatever the mode.
    #[serde(default)]
    pub pod_mtu_override: Option<u32>,
    /// The external host (labs made before it existed have none).
    #[serde(default)]
    pub ext: Option<ExtState>,
}

impl LabState {
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Finds a pod by `name` or `namespace/name`; an error when unknown or ambiguous.
    pub fn find_pod(&self, what: &str) -> Result<&PodState> {
        let hits: Vec<&PodState> = match what.split_once('/') {
            Some((ns, name)) => self
                .pods
                .iter()
                .filter(|p| p.namespace == ns && p.name == name)
                .collect(),
            None => self.pods.iter().filter(|p| p.name == what).collect(),
        };
        match hits.as_slice() {
            [one] => Ok(one),
            [] => anyhow::bail!(
                "no pod {what:?} in lab {} (pods: {})",
                self.name,
                self.pods
                    .iter()
                    .map(PodState::display_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            many => anyhow::bail!(
                "pod name {what:?} is ambiguous in lab {}: use one of {}",
                self.name,
                many.iter()
                    .map(|p| format!("{}/{}", p.namespace, p.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The paths of one lab's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn new(root: &Path, lab: &str) -> StateDir {
        StateDir {
            dir: root.join(lab),
        }
    }
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }
    pub fn cni_conf(&self, node: &str) -> PathBuf {
        self.dir.join("cni").join(format!("{node}.conf"))
    }
    pub fn ipam(&self, node: &str) -> PathBuf {
        self.dir.join("ipam").join(node)
    }
    pub fn socket(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.sock"))
    }
    pub fn node_log(&self, node: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{node}.log"))
    }
    pub fn pod_log(&self, netns: &str) -> PathBuf {
        self.dir.join("logs").join(format!("pod-{netns}.log"))
    }
    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    /// Takes the lab's lock (blocking) for a read-modify-write of `state.json`.
    pub fn lock(&self) -> Result<File> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join("lock"))
            .with_context(|| format!("opening the lock of {}", self.dir.display()))?;
        f.lock()
            .with_context(|| format!("locking {}", self.dir.display()))?;
        Ok(f)
    }

    /// Reads `state.json`; `Ok(None)` when there is none.
    pub fn load(&self) -> Result<Option<LabState>> {
        let p = self.state_file();
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        let st = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        Ok(Some(st))
    }

    /// Writes `state.json` atomically (temporary file, then rename).
    pub fn save(&self, st: &LabState) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let tmp = self.dir.join("state.json.tmp");
        let text = serde_json::to_string_pretty(st)?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, self.state_file())
            .with_context(|| format!("writing {}", self.state_file().display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str) -> PodState {
        PodState {
            namespace: ns.into(),
            name: name.into(),
            node: "server1".into(),
            netns: format!("xl-{name}"),
            container_id: format!("xdplane-lab-xl-{name}"),
            cni_attempted: true,
            address: Some("10.244.1.5/24".into()),
            mac: None,
            host_ifname: None,
            gateway: None,
            cni_result: None,
            tcp_ports: vec![80],
            udp_ports: vec![80],
            server: None,
            mtu: None,
            cni_conf: None,
            labels: BTreeMap::new(),
            container_ports: vec![],
            workload: None,
        }
    }

    #[test]
    fn round_trip_and_lookup() {
        let root = std::env::temp_dir().join(format!("xdplane-lab-state-{}", std::process::id()));
        let sd = StateDir::new(&root, "xl");
        assert!(sd.load().unwrap().is_none());
        let st = LabState {
            version: STATE_VERSION,
            name: "xl".into(),
            phase: "creating".into(),
            bin_dir: "/bin".into(),
            manifests_source: "/src".into(),
            manifests_dir: sd.manifests(),
            fabric_netns: "xl-fabric".into(),
            nodes: vec![],
            pods: vec![pod("default", "a"), pod("prod", "a"), pod("default", "b")],
            mode: Mode::HostGw,
            pod_mtu_override: None,
            ext: None,
        };
        let _l = sd.lock().unwrap();
        sd.save(&st).unwrap();
        let back = sd.load().unwrap().unwrap();
        assert_eq!(back, st);
        assert_eq!(back.pods[0].ip(), Some(Ipv4Addr::new(10, 244, 1, 5)));
        assert!(back.find_pod("a").is_err(), "ambiguous");
        assert_eq!(back.find_pod("prod/a").unwrap().namespace, "prod");
        assert_eq!(back.find_pod("b").unwrap().name, "b");
        assert!(back.find_pod("zzz").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn old_state_files_still_load() {
        // state.json written before kernel nodes and modes existed.
        let old = r#"{"version":1,"name":"xl","phase":"ready","bin_dir":"/b","manifests_source":"/s",
            "manifests_dir":"/m","fabric_netns":"xl-fabric","nodes":[{"name":"server1","index":1,
            "netns":"xl-server1","ip":"192.168.50.11","prefix_len":24,"pod_cidr":"10.244.1.0/24",
            "gateway":null,"admin_socket":"/a","cni_conf":"/c","ipam_dir":"/i","log":"/l","agent":null}],
            "pods":[]}"#;
        let st: LabState = serde_json::from_str(old).unwrap();
        assert_eq!(st.mode, Mode::Vxlan);
        assert_eq!(st.nodes[0].kind, NodeKind::Xdplane);
        assert!(!st.nodes[0].vxlan_support);
    }
}
