//! The lab's part in Services: it plays the endpointslice controller (EndpointSlices
//! written from the lab's pods into `<state>/manifests/endpointslices.yaml`), kube-proxy on
//! kernel flannel nodes, and the network outside the cluster (the external host's routes
//! towards Services' external addresses).
//!
//! [`apply`] runs after every change of the pods (`up`, `add-pod`, `del-pod`, `scale`) and
//! in `sync`; the caller then asks the agents to `reload`.

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use xdplane_control::model::{ContainerPort, Model, Pod, Protocol, Service, TrafficPolicy};

use crate::netns;
use crate::state::{LabState, PodState};

/// The file the lab writes the EndpointSlices to, in `<state>/manifests/`.
pub const SLICES_FILE: &str = "endpointslices.yaml";

/// What [`apply`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServicesReport {
    /// Where the EndpointSlices went.
    pub slices_file: Option<PathBuf>,
    /// `namespace/service` → the endpoints written for it (`IP` of each, ready ones).
    pub endpoints: BTreeMap<String, Vec<String>>,
    /// The external host's routes (`<ip>/32 via <node IP>`).
    pub ext_routes: Vec<String>,
    /// Per kernel node: what kube-proxy's rules there hold.
    pub kernel: Vec<String>,
    pub notes: Vec<String>,
}

impl ServicesReport {
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = &self.slices_file {
            out.push(format!(
                "endpointslices: {} ({} Services)",
                f.display(),
                self.endpoints.len()
            ));
        }
        for (svc, eps) in &self.endpoints {
            out.push(format!(
                "  {svc}: {}",
                if eps.is_empty() {
                    "no endpoints".to_string()
                } else {
                    eps.join(", ")
                }
            ));
        }
        for r in &self.ext_routes {
            out.push(format!("external host: route {r}"));
        }
        out.extend(self.kernel.iter().cloned());
        out.extend(self.notes.iter().map(|n| format!("note: {n}")));
        out
    }
}

fn protocol(name: &str) -> Protocol {
    match name.to_ascii_uppercase().as_str() {
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

/// A lab pod as the API server would show it: scheduled, running, with its address.
pub fn model_pod(p: &PodState) -> Pod {
    Pod {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        labels: p.labels.clone(),
        node_name: Some(p.node.clone()),
        ip: p.ip(),
        ports: p
            .container_ports
            .iter()
            .map(|cp| ContainerPort {
                name: cp.name.clone(),
                port: cp.port,
                protocol: protocol(&cp.protocol),
            })
            .collect(),
        host_network: false,
    }
}

/// The model of the lab's manifests with the lab's pods as they run: every pod of the state
/// that has an address and is not in `leaving` (pods being deleted: out of the slices
/// before they stop, as a terminating pod leaves its Service first). The EndpointSlices are
/// those of the manifests, the lab's own file ([`SLICES_FILE`]) replaced by slices computed
/// from these pods (`xdplane_control::endpoints::endpoint_slices`): the model as it will
/// be once the file is written.
pub fn lab_model(st: &LabState, leaving: &BTreeSet<(String, String)>) -> Result<Model> {
    let loaded = xdplane_control::manifest::load_dir(&st.manifests_dir)
        .with_context(|| format!("loading {}", st.manifests_dir.display()))?;
    let mut model = loaded.model.clone();
    model.pods = st
        .pods
        .iter()
        .filter(|p| p.ip().is_some() && !leaving.contains(&(p.namespace.clone(), p.name.clone())))
        .map(|p| ((p.namespace.clone(), p.name.clone()), model_pod(p)))
        .collect();
    // Slices the lab wrote before are the controller's: recomputed below.
    model.endpoint_slices.retain(|(ns, name), _| {
        loaded.origin_of("EndpointSlice", ns, name).is_none_or(|o| {
            std::path::Path::new(&o.file).file_name() != Some(std::ffi::OsStr::new(SLICES_FILE))
        })
    });
    for sl in xdplane_control::endpoints::endpoint_slices(&model) {
        model
            .endpoint_slices
            .insert((sl.namespace.clone(), sl.name.clone()), sl);
    }
    Ok(model)
}

/// Writes the controller's slices of `model` (those of Services with a selector) to
/// `<manifests>/endpointslices.yaml`, atomically; the endpoints per Service go in the report.
fn write_slices(st: &LabState, model: &Model, rep: &mut ServicesReport) -> Result<()> {
    let owned: Vec<xdplane_control::model::EndpointSlice> = model
        .endpoint_slices
        .values()
        .filter(|sl| {
            model
                .services
                .get(&(sl.namespace.clone(), sl.service.clone()))
                .is_some_and(|svc| !svc.selector.is_empty())
        })
        .cloned()
        .collect();
    let path = st.manifests_dir.join(SLICES_FILE);
    let text = format!(
        "# Written by xdplane lab (the endpointslice controller's part) from the lab's pods;\n\
         # rewritten whenever the pods change.\n{}",
        xdplane_control::endpoints::endpoint_slices_yaml(&owned)
    );
    crate::apiserver::write_atomic(&path, &text)?;
    rep.slices_file = Some(path);
    for svc in model.services.values() {
        if svc.selector.is_empty() {
            continue;
        }
        let mut eps: Vec<String> = owned
            .iter()
            .filter(|sl| sl.namespace == svc.namespace && sl.service == svc.name)
            .flat_map(|sl| &sl.endpoints)
            .filter(|e| e.ready)
            .filter_map(|e| {
                e.addresses
                    .first()
                    .map(|a| format!("{a}@{}", e.node_name.as_deref().unwrap_or("?")))
            })
            .collect();
        eps.sort();
        eps.dedup();
        rep.endpoints
            .insert(format!("{}/{}", svc.namespace, svc.name), eps);
    }
    Ok(())
}

/// Whether a Service's selector picks the pod (an empty selector picks nothing: such a
/// Service's endpoints are managed by hand).
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    svc.namespace == pod.namespace
        && !svc.selector.is_empty()
        && svc
            .selector
            .iter()
            .all(|(k, v)| pod.labels.get(k) == Some(v))
}

/// The external addresses of the model's Services (externalIPs, LoadBalancer IPs), each
/// with the node the external host sends it to: for `externalTrafficPolicy: Local` the
/// first node that runs an endpoint, else the first node.
pub fn external_routes(model: &Model, st: &LabState) -> BTreeMap<Ipv4Addr, Ipv4Addr> {
    let mut out = BTreeMap::new();
    let Some(first) = st.nodes.first() else {
        return out;
    };
    for svc in model.services.values() {
        let via = if svc.external_traffic_policy == TrafficPolicy::Local {
            st.nodes
                .iter()
                .find(|n| {
                    model
                        .pods
                        .values()
                        .any(|p| p.node_name.as_deref() == Some(&n.name) && selects(svc, p))
                })
                .unwrap_or(first)
        } else {
            first
        };
        for ip in svc.external_ips.iter().chain(&svc.load_balancer_ips) {
            out.entry(*ip).or_insert(via.ip);
        }
    }
    out
}

/// Reconciles the external host's routes to `want` (address → node IP): routes the lab
/// added that are no longer wanted go, the wanted ones are `replace`d. Only inside the
/// external host's namespace.
fn program_ext_routes(st: &mut LabState, want: &BTreeMap<Ipv4Addr, Ipv4Addr>) -> Result<()> {
    let Some(ext) = st.ext.as_mut() else {
        return Ok(());
    };
    if !netns::exists(&ext.netns) {
        return Ok(());
    }
    let wanted: Vec<String> = want
        .iter()
        .map(|(ip, via)| format!("{ip}/32 via {via}"))
        .collect();
    for old in ext.routes.clone() {
        if !wanted.contains(&old) {
            let dst = old.split(' ').next().unwrap_or(&old).to_string();
            // Gone already is fine.
            let _ = netns::ip_in(&ext.netns, &["route", "del", &dst]);
            ext.routes.retain(|r| r != &old);
        }
    }
    for (ip, via) in want {
        let dst = format!("{ip}/32");
        let via = via.to_string();
        netns::ip_in(
            &ext.netns,
            &["route", "replace", &dst, "via", &via, "dev", "eth0"],
        )
        .with_context(|| format!("routing {dst} via {via} on the external host"))?;
        let r = format!("{dst} via {via}");
        if !ext.routes.contains(&r) {
            ext.routes.push(r);
        }
    }
    ext.routes.sort();
    Ok(())
}

/// The endpointslice controller's, kube-proxy's and the outside network's part after a
/// change of the pods or the manifests; `leaving` pods are left out of the slices.
pub fn apply_leaving(
    st: &mut LabState,
    leaving: &BTreeSet<(String, String)>,
) -> Result<ServicesReport> {
    let model = lab_model(st, leaving)?;
    let mut rep = ServicesReport::default();
    write_slices(st, &model, &mut rep)?;
    let kernel_nodes = st.nodes.iter().filter(|n| n.is_kernel()).count();
    let iptables = crate::kernel::have_iptables();
    if kernel_nodes > 0 && !iptables {
        let msg = format!(
            "{} not found: kernel nodes run without kube-proxy's rules (no Services there) \
             and without flanneld's ip-masq; apt-get install iptables",
            crate::kernel::IPTABLES_RESTORE
        );
        eprintln!("warning: {msg}");
        rep.notes.push(msg);
    }
    for n in st.nodes.iter().filter(|n| n.is_kernel()) {
        if !netns::exists(&n.netns) || !iptables {
            continue;
        }
        let line = crate::kernel::program_kube_proxy(n, &model)
            .with_context(|| format!("kube-proxy's rules on kernel node {}", n.name))?;
        rep.kernel.push(line);
    }
    let routes = external_routes(&model, st);
    program_ext_routes(st, &routes)?;
    rep.ext_routes = st
        .ext
        .as_ref()
        .map(|e| e.routes.clone())
        .unwrap_or_default();
    Ok(rep)
}

/// [`apply_leaving`] with every pod.
pub fn apply(st: &mut LabState) -> Result<ServicesReport> {
    apply_leaving(st, &BTreeSet::new())
}

/// Finds the workload `what` (`name` or `namespace/name`, any kind the lab stamps pods
/// out of) in the model; its (kind, namespace, name).
pub fn find_workload(model: &Model, what: &str) -> Result<(String, String, String)> {
    let (ns, name) = match what.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, what),
    };
    let hits: Vec<_> = model
        .workloads
        .values()
        .filter(|w| w.name == name && ns.is_none_or(|ns| w.namespace == ns))
        .collect();
    match hits.as_slice() {
        [w] => {
            if w.per_node {
                bail!(
                    "{} {}/{} runs one pod per node; it cannot be scaled",
                    w.kind,
                    w.namespace,
                    w.name
                );
            }
            Ok((w.kind.clone(), w.namespace.clone(), w.name.clone()))
        }
        [] => Err(anyhow!(
            "no workload {what:?} in the lab's manifests (workloads: {})",
            model
                .workloads
                .values()
                .map(|w| format!("{}/{}", w.namespace, w.name))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => bail!("workload name {what:?} is ambiguous: give namespace/name"),
    }
}

/// One Service as `lab services` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    /// `ClusterIP`, `NodePort`, `LoadBalancer`, `ExternalName`.
    pub service_type: String,
    pub cluster_ip: Option<Ipv4Addr>,
    /// `80/TCP→80`, with `:30080` (the nodePort) when there is one.
    pub ports: Vec<String>,
    pub external_ips: Vec<Ipv4Addr>,
    pub external_traffic_policy: String,
    pub session_affinity: bool,
    /// Ready endpoints: `IP@node pod`.
    pub endpoints: Vec<String>,
}

impl ServiceView {
    /// `externalTrafficPolicy: Local`.
    pub fn is_local(&self) -> bool {
        self.external_traffic_policy == "Local"
    }
}

/// The lab's Services with their allocated addresses and their endpoints (from the
/// EndpointSlices the lab keeps), in (namespace, name) order.
pub fn list(st: &LabState) -> Result<Vec<ServiceView>> {
    let model = lab_model(st, &BTreeSet::new())?;
    let pod_of = |ip: Ipv4Addr| {
        st.pods
            .iter()
            .find(|p| p.ip() == Some(ip))
            .map(|p| p.display_name())
            .unwrap_or_else(|| "?".into())
    };
    Ok(model
        .services
        .values()
        .map(|svc| {
            let mut endpoints: Vec<String> = model
                .endpoint_slices
                .values()
                .filter(|sl| sl.namespace == svc.namespace && sl.service == svc.name)
                .flat_map(|sl| &sl.endpoints)
                .filter(|e| e.ready)
                .filter_map(|e| {
                    e.addresses.first().map(|a| {
                        format!(
                            "{a}@{} {}",
                            e.node_name.as_deref().unwrap_or("?"),
                            pod_of(*a)
                        )
                    })
                })
                .collect();
            endpoints.sort();
            endpoints.dedup();
            ServiceView {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                service_type: format!("{:?}", svc.service_type),
                cluster_ip: svc.cluster_ips.first().copied(),
                ports: svc
                    .ports
                    .iter()
                    .map(|p| {
                        let target = match &p.target_port {
                            xdplane_control::model::TargetPort::Number(n) => n.to_string(),
                            xdplane_control::model::TargetPort::Name(n) => n.clone(),
                        };
                        format!(
                            "{}/{}→{target}{}",
                            p.port,
                            crate::lab::proto_name(p.protocol),
                            p.node_port
                                .map(|n| format!(" nodePort {n}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect(),
                external_ips: svc
                    .external_ips
                    .iter()
                    .chain(&svc.load_balancer_ips)
                    .copied()
                    .collect(),
                external_traffic_policy: format!("{:?}", svc.external_traffic_policy),
                session_affinity: svc.session_affinity_timeout.is_some(),
                endpoints,
            }
        })
        .collect())
}

/// The human form of [`list`].
pub fn render(views: &[ServiceView]) -> String {
    let mut out = String::new();
    for v in views {
        out.push_str(&format!(
            "{}/{}  {}  clusterIP {}  {}{}{}{}\n",
            v.namespace,
            v.name,
            v.service_type,
            v.cluster_ip.map_or("-".to_string(), |i| i.to_string()),
            v.ports.join(", "),
            if v.external_ips.is_empty() {
                String::new()
            } else {
                format!(
                    "  external {}",
                    v.external_ips
                        .iter()
                        .map(Ipv4Addr::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            },
            if v.service_type == "NodePort" || v.service_type == "LoadBalancer" {
                format!("  externalTrafficPolicy {}", v.external_traffic_policy)
            } else {
                String::new()
            },
            if v.session_affinity {
                "  sessionAffinity ClientIP"
            } else {
                ""
            }
        ));
        if v.endpoints.is_empty() {
            out.push_str("    no endpoints\n");
        }
        for e in &v.endpoints {
            out.push_str(&format!("    → {e}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ExtState, NodeKind, NodeState, PodPort};
    use std::path::PathBuf;

    const SET: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  selector:\n    app: x\n  externalIPs: [203.0.113.1]\n  ports:\n  - port: 80\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: l\nspec:\n  type: NodePort\n  externalTrafficPolicy: Local\n  selector:\n    app: y\n  externalIPs: [203.0.113.2]\n  ports:\n  - port: 81\n    targetPort: web\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: manual\nspec:\n  ports:\n  - port: 82\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: x\n  template:\n    metadata:\n      labels:\n        app: x\n    spec:\n      containers:\n      - name: c\n        image: i\n";

    fn node(i: usize) -> NodeState {
        NodeState {
            name: format!("server{i}"),
            index: i,
            netns: format!("nope-server{i}"),
            ip: Ipv4Addr::new(192, 168, 50, 10 + i as u8),
            prefix_len: 24,
            pod_cidr: Some(format!("10.244.{i}.0/24")),
            gateway: None,
            admin_socket: PathBuf::from("/nonexistent"),
            cni_conf: PathBuf::from("/nonexistent"),
            ipam_dir: PathBuf::from("/nonexistent"),
            log: PathBuf::from("/nonexistent"),
            agent: None,
            kind: NodeKind::Xdplane,
            vtep_mac: None,
            vxlan_support: true,
            pod_mtu: None,
        }
    }

    fn pod(name: &str, node: usize, ip: &str, app: &str) -> PodState {
        PodState {
            namespace: "default".into(),
            name: name.into(),
            node: format!("server{node}"),
            netns: format!("nope-{name}"),
            container_id: name.into(),
            cni_attempted: true,
            address: Some(format!("{ip}/24")),
            mac: None,
            host_ifname: None,
            gateway: None,
            cni_result: None,
            tcp_ports: vec![80],
            udp_ports: vec![80],
            server: None,
            mtu: None,
            cni_conf: None,
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            container_ports: vec![PodPort {
                name: Some("web".into()),
                port: 8080,
                protocol: "TCP".into(),
            }],
            workload: None,
        }
    }

    fn state(dir: &std::path::Path) -> LabState {
        LabState {
            version: 1,
            name: "t".into(),
            phase: "ready".into(),
            bin_dir: "/nonexistent".into(),
            manifests_source: dir.to_path_buf(),
            manifests_dir: dir.to_path_buf(),
            fabric_netns: "nope-fabric".into(),
            nodes: vec![node(1), node(2), node(3)],
            pods: vec![
                pod("x1", 1, "10.244.1.2", "x"),
                pod("x2", 2, "10.244.2.2", "x"),
                pod("y3", 3, "10.244.3.2", "y"),
            ],
            mode: Default::default(),
            pod_mtu_override: None,
            ext: Some(ExtState {
                netns: "nope-ext".into(),
                ip: Ipv4Addr::new(192, 168, 50, 254),
                prefix_len: 24,
                ports: vec![80],
                server: None,
                log: PathBuf::from("/nonexistent"),
                routes: vec![],
            }),
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xdplane-lab-svc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("set.yaml"), SET).unwrap();
        d
    }

    #[test]
    fn model_with_the_lab_pods_and_their_slices() {
        let d = dir("model");
        let mut st = state(&d);
        let m = lab_model(&st, &BTreeSet::new()).unwrap();
        assert_eq!(m.pods.len(), 3);
        let eps = |m: &Model, svc: &str| -> Vec<(Ipv4Addr, Option<u16>)> {
            let mut v: Vec<_> = m
                .endpoint_slices
                .values()
                .filter(|s| s.service == svc)
                .flat_map(|s| {
                    let port = s.ports.first().and_then(|p| p.port);
                    s.endpoints.iter().map(move |e| (e.addresses[0], port))
                })
                .collect();
            v.sort();
            v
        };
        let x1: Ipv4Addr = "10.244.1.2".parse().unwrap();
        let x2: Ipv4Addr = "10.244.2.2".parse().unwrap();
        assert_eq!(eps(&m, "a"), vec![(x1, Some(80)), (x2, Some(80))]);
        // The named targetPort resolves through the pod's containerPort.
        assert_eq!(
            eps(&m, "l"),
            vec![("10.244.3.2".parse().unwrap(), Some(8080))]
        );
        assert!(eps(&m, "manual").is_empty(), "no selector: no slices");
        // A leaving pod is out of the slices.
        let leaving = BTreeSet::from([("default".to_string(), "x1".to_string())]);
        let m2 = lab_model(&st, &leaving).unwrap();
        assert_eq!(eps(&m2, "a"), vec![(x2, Some(80))]);

        // The file the agents read holds the same slices; reading it back and recomputing
        // replaces them (no duplicates), and a slice written by hand elsewhere stays.
        let mut rep = ServicesReport::default();
        write_slices(&st, &m2, &mut rep).unwrap();
        assert_eq!(rep.endpoints["default/a"], vec!["10.244.2.2@server2"]);
        std::fs::write(
            d.join("manual.yaml"),
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: manual-1\n  labels:\n    kubernetes.io/service-name: manual\naddressType: IPv4\nports:\n- port: 82\nendpoints:\n- addresses: [10.244.9.9]\n",
        )
        .unwrap();
        let back = xdplane_control::manifest::load_dir(&d).unwrap().model;
        assert_eq!(eps(&back, "a"), vec![(x2, Some(80))]);
        st.pods.push(pod("x3", 3, "10.244.3.3", "x"));
        let m3 = lab_model(&st, &BTreeSet::new()).unwrap();
        assert_eq!(eps(&m3, "a").len(), 3);
        assert_eq!(
            eps(&m3, "manual"),
            vec![("10.244.9.9".parse().unwrap(), Some(82))]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn external_addresses_go_to_a_node_with_an_endpoint_for_local() {
        let d = dir("routes");
        let st = state(&d);
        let m = lab_model(&st, &BTreeSet::new()).unwrap();
        let r = external_routes(&m, &st);
        let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
        // Cluster policy: the first node; Local: server3, the only node with a `y` pod.
        assert_eq!(r[&ip("203.0.113.1")], ip("192.168.50.11"));
        assert_eq!(r[&ip("203.0.113.2")], ip("192.168.50.13"));
        assert_eq!(r.len(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn workloads_by_name() {
        let d = dir("wl");
        let m = xdplane_control::manifest::load_dir(&d).unwrap().model;
        assert_eq!(
            find_workload(&m, "d").unwrap(),
            ("Deployment".into(), "default".into(), "d".into())
        );
        assert!(find_workload(&m, "default/d").is_ok());
        let e = find_workload(&m, "nope").unwrap_err().to_string();
        assert!(e.contains("default/d"), "{e}");
        assert!(find_workload(&m, "prod/d").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn listing_shows_ports_policies_and_endpoints() {
        let d = dir("list");
        let st = state(&d);
        let v = list(&st).unwrap();
        let l = v.iter().find(|s| s.name == "l").unwrap();
        assert!(l.is_local());
        assert_eq!(l.service_type, "NodePort");
        assert_eq!(l.endpoints, vec!["10.244.3.2@server3 y3"]);
        assert!(
            l.ports[0].starts_with("81/TCP→web nodePort "),
            "{:?}",
            l.ports
        );
        let text = render(&v);
        assert!(text.contains("default/manual  ClusterIP"), "{text}");
        assert!(text.contains("    no endpoints\n"), "{text}");
        assert!(text.contains("externalTrafficPolicy Local"), "{text}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
