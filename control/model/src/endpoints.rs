//! What Kubernetes' endpointslice controller would write for the model's Services with a
//! selector, computed from pods — the lab's stand-in for the controller — and the YAML that
//! puts those slices into a manifest directory, where [`crate::manifest`] reads them back.
//!
//! The rules, as the controller (`pkg/controller/endpointslice`, v1.33) applies them:
//!
//! - Services with an empty selector (endpoints managed by hand) and ExternalName Services
//!   get nothing; headless Services get slices like any other.
//! - A pod is an endpoint of a Service when it is in the Service's namespace, its labels
//!   contain every `key=value` of the selector, it has an IP and it is not `hostNetwork`
//!   (a choice of this project: host-network pods share the node's address, which the
//!   dataplane does not balance to).
//! - Each Service port's `targetPort` is resolved per pod: a number is used as is; a name
//!   is looked up in the pod's container ports (same name and protocol, `FindPort`). A pod
//!   whose name does not resolve is left out of that port (it still serves the others).
//!   Pods are grouped by their resolved port list; each group gets its own slices, at most
//!   100 endpoints each (`--max-endpoints-per-slice`).
//! - The model has no readiness: a pod with an IP is `ready` and `serving`, not
//!   `terminating`. `nodeName` is the pod's node.
//! - A Service that selects no pod gets one empty placeholder slice (no ports, no
//!   endpoints), as the controller writes.
//! - Slice names are `<service>-<5 characters>` (the prefix cut to 58 characters, like
//!   `generateName`), the characters from an FNV-1a hash of the namespace, the Service, the
//!   port list and the chunk index, so the same model gives the same names on every run.
//!   Names of hand-written slices in the model (of Services without a selector) are
//!   avoided; the model's slices of selector Services (a previous run's output) are not
//!   looked at, so they get the same names again.

use crate::hash::{encode, fnv1a};
use crate::model::{
    Endpoint, EndpointPort, EndpointSlice as Slice, MANAGED_BY_CONTROLLER, MANAGED_BY_LABEL, Model,
    Pod, SERVICE_NAME_LABEL, Service, ServiceType, TargetPort,
};
use std::collections::{BTreeMap, BTreeSet};

/// The controller's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The slices for every Service with a selector, from the model's pods (see the module
/// docs). Sorted by (namespace, Service, port list, chunk).
pub fn endpoint_slices(model: &Model) -> Vec<Slice> {
    let pods: Vec<&Pod> = model.pods.values().collect();
    slices(model, &pods)
}

/// Like [`endpoint_slices`], with `pods` (for instance the lab's scheduled pods with the
/// addresses they got) instead of the model's. Pods are taken in (namespace, name) order
/// whatever order they are given in.
pub fn endpoint_slices_with_pods(model: &Model, pods: &[Pod]) -> Vec<Slice> {
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    pods.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
    slices(model, &pods)
}

/// Whether `labels` contains every `key=value` of `selector`.
fn selects(selector: &crate::model::Labels, pod: &Pod) -> bool {
    selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
}

/// The resolved ports of one pod for a Service, in Service port order.
fn resolve(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    svc.ports
        .iter()
        .filter_map(|sp| {
            let port = match &sp.target_port {
                TargetPort::Number(n) => Some(*n),
                TargetPort::Name(name) => pod
                    .ports
                    .iter()
                    .find(|cp| cp.name.as_deref() == Some(name) && cp.protocol == sp.protocol)
                    .map(|cp| cp.port),
            }?;
            Some(EndpointPort {
                name: sp.name.clone(),
                protocol: sp.protocol,
                port: Some(port),
            })
        })
        .collect()
}

fn port_key(ports: &[EndpointPort]) -> String {
    let items: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}:{}/{}",
                p.name.as_deref().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.as_str()
            )
        })
        .collect();
    items.join(",")
}

/// Names of the model's slices that the controller does not manage (their Service has no
/// selector, or is not in the model): generated names must not take them. Slices of
/// Services with a selector are the controller's own (a previous run's) and are replaced.
fn hand_written(model: &Model) -> BTreeSet<(String, String)> {
    model
        .endpoint_slices
        .values()
        .filter(|s| {
            model
                .services
                .get(&(s.namespace.clone(), s.service.clone()))
                .is_none_or(|svc| svc.selector.is_empty())
        })
        .map(|s| (s.namespace.clone(), s.name.clone()))
        .collect()
}

fn slices(model: &Model, pods: &[&Pod]) -> Vec<Slice> {
    let services = model.services.values();
    // Pods by namespace, so a Service looks at its own namespace only.
    let mut by_ns: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for p in pods {
        if p.ip.is_some() && !p.host_network {
            by_ns.entry(p.namespace.as_str()).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    let mut names = hand_written(model);
    for svc in services {
        if svc.selector.is_empty() || svc.service_type == ServiceType::ExternalName {
            continue;
        }
        // Resolved port list → pods, in port-list order.
        let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<&Pod>)> = BTreeMap::new();
        for pod in by_ns.get(svc.namespace.as_str()).into_iter().flatten() {
            if !selects(&svc.selector, pod) {
                continue;
            }
            let ports = resolve(svc, pod);
            groups
                .entry(port_key(&ports))
                .or_insert_with(|| (ports, Vec::new()))
                .1
                .push(pod);
        }
        if groups.is_empty() {
            // The controller's placeholder: one slice, no ports, no endpoints.
            groups.insert(String::new(), (Vec::new(), Vec::new()));
        }
        for (key, (ports, members)) in groups {
            let chunks: Vec<&[&Pod]> = if members.is_empty() {
                vec![&[]]
            } else {
                members.chunks(MAX_ENDPOINTS_PER_SLICE).collect()
            };
            for (i, chunk) in chunks.into_iter().enumerate() {
                let name = slice_name(svc, &key, i, &mut names);
                out.push(Slice {
                    namespace: svc.namespace.clone(),
                    name,
                    service: svc.name.clone(),
                    ports: ports.clone(),
                    endpoints: chunk
                        .iter()
                        .filter_map(|p| {
                            Some(Endpoint {
                                addresses: vec![p.ip?],
                                ready: true,
                                serving: true,
                                terminating: false,
                                node_name: p.node_name.clone(),
                            })
                        })
                        .collect(),
                });
            }
        }
    }
    out
}

/// `<service>-<5 characters>`, unique in the namespace.
fn slice_name(
    svc: &Service,
    key: &str,
    chunk: usize,
    taken: &mut BTreeSet<(String, String)>,
) -> String {
    let mut base = format!("{}-", svc.name);
    base.truncate(58); // names are ASCII (validated), so this cuts at a character boundary
    let mut attempt = 0u64;
    loop {
        let h = fnv1a(&[
            svc.namespace.as_bytes(),
            svc.name.as_bytes(),
            key.as_bytes(),
            &(chunk as u64).to_be_bytes(),
            &attempt.to_be_bytes(),
        ]);
        let name = format!("{base}{}", encode(h, 5));
        if taken.insert((svc.namespace.clone(), name.clone())) {
            return name;
        }
        attempt += 1;
    }
}

/// The slices as a YAML stream of `discovery.k8s.io/v1 EndpointSlice` manifests (one
/// `---` document each, with the labels the controller sets), which
/// [`crate::manifest::load_str`] reads back into the same slices.
pub fn endpoint_slices_yaml(slices: &[Slice]) -> String {
    use k8s_openapi::api::discovery::v1 as discovery;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let mut out = String::from(
        "# EndpointSlices written by xdplane's endpointslice controller stand-in \
         (control/model/src/endpoints.rs).\n",
    );
    for s in slices {
        let mut labels = BTreeMap::new();
        labels.insert(SERVICE_NAME_LABEL.to_string(), s.service.clone());
        labels.insert(
            MANAGED_BY_LABEL.to_string(),
            MANAGED_BY_CONTROLLER.to_string(),
        );
        let obj = discovery::EndpointSlice {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                namespace: Some(s.namespace.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: (!s.ports.is_empty()).then(|| {
                s.ports
                    .iter()
                    .map(|p| discovery::EndpointPort {
                        name: p.name.clone(),
                        protocol: Some(p.protocol.as_str().to_string()),
                        port: p.port.map(i32::from),
                        app_protocol: None,
                    })
                    .collect()
            }),
            endpoints: s
                .endpoints
                .iter()
                .map(|e| discovery::Endpoint {
                    addresses: e.addresses.iter().map(ToString::to_string).collect(),
                    conditions: Some(discovery::EndpointConditions {
                        ready: Some(e.ready),
                        serving: Some(e.serving),
                        terminating: Some(e.terminating),
                    }),
                    node_name: e.node_name.clone(),
                    ..Default::default()
                })
                .collect(),
        };
        out.push_str("---\n");
        match serde_norway::to_string(&obj) {
            Ok(y) => out.push_str(&y),
            // k8s-openapi types always serialize; keep the stream readable if one did not.
            Err(e) => out.push_str(&format!(
                "# {}/{}: not rendered: {e}\n",
                s.namespace, s.name
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{LoadResult, load_str};
    use crate::model::{ContainerPort, Labels, Protocol, ServicePort, TrafficPolicy};
    use std::net::Ipv4Addr;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Pod `a` on server1, serving `http` on 8080.
    fn web_pod_a() -> Pod {
        pod(
            "a",
            Some([10, 244, 1, 2]),
            "server1",
            &[("http", 8080, Protocol::Tcp)],
        )
    }

    fn pod(name: &str, ip: Option<[u8; 4]>, node: &str, ports: &[(&str, u16, Protocol)]) -> Pod {
        Pod {
            namespace: "default".into(),
            name: name.into(),
            labels: labels(&[("app", "web")]),
            node_name: Some(node.into()),
            ip: ip.map(Ipv4Addr::from),
            ports: ports
                .iter()
                .map(|(n, p, proto)| ContainerPort {
                    name: Some(n.to_string()).filter(|n| !n.is_empty()),
                    port: *p,
                    protocol: *proto,
                })
                .collect(),
            host_network: false,
        }
    }

    fn web_service() -> Service {
        Service {
            namespace: "default".into(),
            name: "web".into(),
            service_type: ServiceType::ClusterIP,
            cluster_ips: vec![Ipv4Addr::new(10, 96, 0, 20)],
            ports: vec![
                ServicePort {
                    name: Some("http".into()),
                    protocol: Protocol::Tcp,
                    port: 80,
                    target_port: TargetPort::Name("http".into()),
                    node_port: None,
                },
                ServicePort {
                    name: Some("metrics".into()),
                    protocol: Protocol::Tcp,
                    port: 9100,
                    target_port: TargetPort::Number(9100),
                    node_port: None,
                },
            ],
            selector: labels(&[("app", "web")]),
            external_ips: vec![],
            load_balancer_ips: vec![],
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            session_affinity_timeout: None,
        }
    }

    fn model(services: Vec<Service>, pods: Vec<Pod>) -> Model {
        let mut m = Model::default();
        for s in services {
            m.services.insert((s.namespace.clone(), s.name.clone()), s);
        }
        for p in pods {
            m.pods.insert((p.namespace.clone(), p.name.clone()), p);
        }
        m
    }

    fn ports(s: &Slice) -> Vec<(Option<&str>, Option<u16>)> {
        s.ports
            .iter()
            .map(|p| (p.name.as_deref(), p.port))
            .collect()
    }

    fn ips(s: &Slice) -> Vec<String> {
        s.endpoints
            .iter()
            .map(|e| e.addresses[0].to_string())
            .collect()
    }

    #[test]
    fn named_ports_resolve_per_pod() {
        let tcp = Protocol::Tcp;
        let m = model(
            vec![web_service()],
            vec![
                web_pod_a(),
                pod(
                    "b",
                    Some([10, 244, 2, 2]),
                    "server2",
                    &[("http", 9090, tcp)],
                ),
                // No port named http: serves metrics only.
                pod("c", Some([10, 244, 3, 2]), "server3", &[("web", 8080, tcp)]),
                // A UDP port named http does not resolve a TCP Service port.
                pod(
                    "d",
                    Some([10, 244, 1, 3]),
                    "server1",
                    &[("http", 8080, Protocol::Udp)],
                ),
                pod(
                    "e",
                    Some([10, 244, 2, 3]),
                    "server2",
                    &[("http", 8080, tcp)],
                ),
            ],
        );
        let slices = endpoint_slices(&m);
        assert_eq!(slices.len(), 3, "{slices:#?}");
        let by_ports: Vec<_> = slices.iter().map(|s| (ports(s), ips(s))).collect();
        assert_eq!(
            by_ports,
            [
                (
                    vec![(Some("http"), Some(8080)), (Some("metrics"), Some(9100))],
                    vec!["10.244.1.2".to_string(), "10.244.2.3".to_string()]
                ),
                (
                    vec![(Some("http"), Some(9090)), (Some("metrics"), Some(9100))],
                    vec!["10.244.2.2".to_string()]
                ),
                (
                    vec![(Some("metrics"), Some(9100))],
                    vec!["10.244.3.2".to_string(), "10.244.1.3".to_string()]
                ),
            ]
        );
        for s in &slices {
            assert_eq!(s.service, "web");
            assert!(
                s.name.starts_with("web-") && s.name.len() == 9,
                "{}",
                s.name
            );
            for e in &s.endpoints {
                assert!(e.ready && e.serving && !e.terminating);
            }
        }
        assert_eq!(slices[0].endpoints[0].node_name.as_deref(), Some("server1"));
        // Unique, stable names.
        let names: BTreeSet<_> = slices.iter().map(|s| s.name.clone()).collect();
        assert_eq!(names.len(), 3);
        assert_eq!(endpoint_slices(&m), slices);
    }

    #[test]
    fn who_is_an_endpoint() {
        let tcp = Protocol::Tcp;
        let mut host = pod(
            "host",
            Some([192, 168, 50, 11]),
            "server1",
            &[("http", 80, tcp)],
        );
        host.host_network = true;
        let no_ip = pod("pending", None, "server1", &[("http", 80, tcp)]);
        let mut other_ns = pod(
            "other",
            Some([10, 244, 1, 9]),
            "server1",
            &[("http", 80, tcp)],
        );
        other_ns.namespace = "demo".into();
        let mut other_app = pod("db", Some([10, 244, 1, 8]), "server1", &[("http", 80, tcp)]);
        other_app.labels = labels(&[("app", "db")]);
        let mut extra_labels = pod("x", Some([10, 244, 1, 7]), "server1", &[("http", 80, tcp)]);
        extra_labels.labels.insert("tier".into(), "front".into());
        let m = model(
            vec![web_service()],
            vec![host, no_ip, other_ns, other_app, extra_labels],
        );
        let slices = endpoint_slices(&m);
        assert_eq!(slices.len(), 1);
        assert_eq!(ips(&slices[0]), ["10.244.1.7"]);

        // Nothing selected: one placeholder slice without ports or endpoints.
        let mut m2 = model(vec![web_service()], vec![]);
        let s = endpoint_slices(&m2);
        assert_eq!(s.len(), 1);
        assert!(s[0].ports.is_empty() && s[0].endpoints.is_empty());
        // No selector, or ExternalName: no slices at all.
        let svc = m2.services.values_mut().next().unwrap();
        svc.selector.clear();
        assert!(endpoint_slices(&m2).is_empty());
        let svc = m2.services.values_mut().next().unwrap();
        svc.selector = labels(&[("app", "web")]);
        svc.service_type = ServiceType::ExternalName;
        assert!(endpoint_slices(&m2).is_empty());
    }

    #[test]
    fn large_services_are_chunked() {
        let pods: Vec<Pod> = (0..250u16)
            .map(|i| {
                let [hi, lo] = i.to_be_bytes();
                pod(
                    &format!("p{i:03}"),
                    Some([10, 244, hi, lo]),
                    "server1",
                    &[("http", 80, Protocol::Tcp)],
                )
            })
            .collect();
        let m = model(vec![web_service()], vec![]);
        let slices = endpoint_slices_with_pods(&m, &pods);
        let sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        // Order given does not matter.
        let mut rev = pods.clone();
        rev.reverse();
        assert_eq!(endpoint_slices_with_pods(&m, &rev), slices);
    }

    #[test]
    fn names_avoid_hand_written_slices_and_are_stable_across_runs() {
        let mut m = model(vec![web_service()], vec![web_pod_a()]);
        let first = endpoint_slices(&m);
        assert_eq!(first.len(), 1);
        // A previous run's output in the model does not change the names.
        for s in &first {
            m.endpoint_slices
                .insert((s.namespace.clone(), s.name.clone()), s.clone());
        }
        assert_eq!(endpoint_slices(&m), first);
        // A hand-written slice (of a Service without a selector) with that very name: the
        // generated one moves aside.
        let mut manual = web_service();
        manual.name = "manual".into();
        manual.selector.clear();
        m.services
            .insert(("default".into(), "manual".into()), manual);
        m.endpoint_slices.clear();
        let mut hand = first[0].clone();
        hand.service = "manual".into();
        m.endpoint_slices
            .insert((hand.namespace.clone(), hand.name.clone()), hand);
        let moved = endpoint_slices(&m);
        assert_eq!(moved.len(), 1);
        assert_ne!(moved[0].name, first[0].name);
        assert!(moved[0].name.starts_with("web-"));
    }

    #[test]
    fn yaml_round_trip() {
        let m = model(
            vec![web_service()],
            vec![web_pod_a(), pod("c", Some([10, 244, 3, 2]), "server3", &[])],
        );
        let mut slices = endpoint_slices(&m);
        // Conditions and unresolved ports survive too.
        slices[0].endpoints[0].ready = false;
        slices[0].endpoints[0].terminating = true;
        slices[1].ports.push(EndpointPort {
            name: Some("gone".into()),
            protocol: Protocol::Sctp,
            port: None,
        });
        let mut empty = endpoint_slices(&model(vec![web_service()], vec![]));
        empty[0].name = "web-empty".into();
        slices.extend(empty);
        let yaml = endpoint_slices_yaml(&slices);
        assert!(yaml.contains("kubernetes.io/service-name: web"), "{yaml}");
        assert!(
            yaml.contains("endpointslice.kubernetes.io/managed-by"),
            "{yaml}"
        );
        let mut r = LoadResult::default();
        load_str("slices.yaml", &yaml, &mut r);
        assert!(r.errors.is_empty(), "{:?}\n{yaml}", r.errors);
        let back: Vec<Slice> = r.model.endpoint_slices.values().cloned().collect();
        let mut want = slices.clone();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(back, want);
    }
}
