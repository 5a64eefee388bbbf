//! The lab's scheduler: the pods a lab runs for a model, the way the Kubernetes controllers and
//! scheduler would create and place them, but deterministic (the same model and nodes give the
//! same pods, names and nodes, on every machine and every run).
//!
//! - Pods of the model are kept as they are; one without `spec.nodeName` is placed like a
//!   replica (below). A pod naming a node that is not in `nodes` keeps that name, so the
//!   caller can report it.
//! - Workloads stamp out pods named like their controllers do:
//!   Deployment `<name>-<template hash>-<5 chars>` with the `pod-template-hash` label;
//!   ReplicaSet `<name>-<5 chars>`; DaemonSet `<name>-<5 chars>`, one per node, with
//!   `controller-revision-hash`; StatefulSet `<name>-<ordinal>` with
//!   `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
//!   `controller-revision-hash`. The characters come from a stable hash (FNV-1a) of the
//!   namespace, name, template hash and replica index (node name for a DaemonSet), drawn from
//!   Kubernetes' own alphabet `bcdfghjklmnpqrstvwxz2456789`. As in Kubernetes, the part
//!   before the 5 random characters is cut to 58 characters.
//! - Placement: the node list is sorted and deduplicated, then one cursor goes round it for
//!   every unplaced pod in output order (pods of the model first, then workloads by
//!   namespace/name, replicas in order), so the replicas of one workload land on different
//!   nodes as long as there are enough. A template `nodeName` pins all of a workload's pods.
//!   With no nodes, unplaced pods stay unplaced (`node_name: None`).

use crate::hash;
use crate::model::{Model, Pod, Workload};
use std::collections::BTreeSet;

/// Kubernetes' `maxGeneratedNameLength` (63 - 5 random characters).
const MAX_GENERATED_BASE: usize = 58;

/// The pods of `model` placed on `nodes` (see the module docs). Output order: the model's
/// pods by namespace/name, then each workload's pods, workloads by namespace/name.
///
/// Names are unique in the output: a generated name that collides with an earlier pod is
/// drawn again (hash-derived names) or dropped with a warning (a StatefulSet pod whose
/// `<name>-<ordinal>` is also a pod of the model; the model's pod wins).
pub fn lab_pods(model: &Model, nodes: &[String]) -> Vec<Pod> {
    let mut order: Vec<&str> = nodes.iter().map(String::as_str).collect();
    order.sort_unstable();
    order.dedup();
    let mut rr = RoundRobin {
        nodes: &order,
        next: 0,
    };

    let mut out = Vec::new();
    let mut taken: BTreeSet<(String, String)> = BTreeSet::new();
    for p in model.pods.values() {
        let mut p = p.clone();
        if p.node_name.is_none() {
            p.node_name = rr.next();
        }
        taken.insert((p.namespace.clone(), p.name.clone()));
        out.push(p);
    }

    for w in model.workloads.values() {
        if w.per_node {
            let targets: Vec<String> = match &w.node_name {
                Some(n) => vec![n.clone()],
                None => order.iter().map(|s| s.to_string()).collect(),
            };
            for node in targets {
                let name = generated_name(
                    &format!("{}-", w.name),
                    &[&w.namespace, &w.name, &w.template_hash, "node", &node],
                    &w.namespace,
                    &taken,
                );
                let mut p = base_pod(w, name, Some(node));
                p.labels
                    .insert("controller-revision-hash".into(), w.template_hash.clone());
                push(&mut out, &mut taken, p);
            }
            continue;
        }
        for i in 0..w.replicas {
            let index = i.to_string();
            let name = match w.kind.as_str() {
                "StatefulSet" => {
                    let name = format!("{}-{i}", w.name);
                    if taken.contains(&(w.namespace.clone(), name.clone())) {
                        tracing::warn!(
                            "StatefulSet {}/{}: pod {name} is also a Pod of the model; the \
                             model's Pod is kept",
                            w.namespace,
                            w.name
                        );
                        continue;
                    }
                    name
                }
                "Deployment" => generated_name(
                    &format!("{}-{}-", w.name, w.template_hash),
                    &[&w.namespace, &w.name, &w.template_hash, "replica", &index],
                    &w.namespace,
                    &taken,
                ),
                _ => generated_name(
                    &format!("{}-", w.name),
                    &[&w.namespace, &w.name, &w.template_hash, "replica", &index],
                    &w.namespace,
                    &taken,
                ),
            };
            let node = w.node_name.clone().or_else(|| rr.next());
            let mut p = base_pod(w, name.clone(), node);
            match w.kind.as_str() {
                "StatefulSet" => {
                    p.labels.insert(
                        "controller-revision-hash".into(),
                        format!("{}-{}", w.name, w.template_hash),
                    );
                    p.labels
                        .insert("statefulset.kubernetes.io/pod-name".into(), name);
                    p.labels
                        .insert("apps.kubernetes.io/pod-index".into(), index);
                }
                "Deployment" => {
                    p.labels
                        .insert("pod-template-hash".into(), w.template_hash.clone());
                }
                _ => {}
            }
            push(&mut out, &mut taken, p);
        }
    }
    out
}

struct RoundRobin<'a> {
    nodes: &'a [&'a str],
    next: usize,
}

impl RoundRobin<'_> {
    fn next(&mut self) -> Option<String> {
        if self.nodes.is_empty() {
            return None;
        }
        let n = self.nodes[self.next % self.nodes.len()];
        self.next += 1;
        Some(n.to_string())
    }
}

fn push(out: &mut Vec<Pod>, taken: &mut BTreeSet<(String, String)>, p: Pod) {
    taken.insert((p.namespace.clone(), p.name.clone()));
    out.push(p);
}

fn base_pod(w: &Workload, name: String, node_name: Option<String>) -> Pod {
    Pod {
        namespace: w.namespace.clone(),
        name,
        labels: w.pod_labels.clone(),
        node_name,
        ip: None,
        ports: w.ports.clone(),
        host_network: w.host_network,
    }
}

/// `base` (cut to 58 bytes) + 5 characters from the hash of `seed`; drawn again with an
/// attempt counter while the name is taken in `namespace`.
fn generated_name(
    base: &str,
    seed: &[&str],
    namespace: &str,
    taken: &BTreeSet<(String, String)>,
) -> String {
    // Names are ASCII (validated DNS names and the hash alphabet); the boundary walk only
    // keeps the cut safe should that ever change.
    let mut cut = base.len().min(MAX_GENERATED_BASE);
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    let base = &base[..cut];
    for attempt in 0u32.. {
        let a = attempt.to_string();
        let mut parts: Vec<&[u8]> = seed.iter().map(|s| s.as_bytes()).collect();
        if attempt > 0 {
            parts.push(a.as_bytes());
        }
        let name = format!("{base}{}", hash::encode(hash::fnv1a(&parts), 5));
        if !taken.contains(&(namespace.to_string(), name.clone())) {
            return name;
        }
    }
    unreachable!("a u32 worth of attempts cannot all collide in a finite set")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;

    fn workload(kind: &str, name: &str, replicas: u32) -> Workload {
        let mut labels = Labels::new();
        labels.insert("app".into(), name.into());
        Workload {
            kind: kind.into(),
            namespace: "default".into(),
            name: name.into(),
            replicas,
            pod_labels: labels,
            ports: vec![],
            node_name: None,
            per_node: kind == "DaemonSet",
            host_network: false,
            template_hash: "5d59d67564".into(),
        }
    }

    fn nodes(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn deployment_pods_are_named_and_spread() {
        let mut m = Model::default();
        let w = workload("Deployment", "web", 3);
        m.workloads.insert(("default".into(), "web".into()), w);
        let pods = lab_pods(&m, &nodes(&["server2", "server1", "server2"]));
        assert_eq!(pods.len(), 3);
        let placed: Vec<_> = pods.iter().map(|p| p.node_name.clone().unwrap()).collect();
        assert_eq!(placed, ["server1", "server2", "server1"]);
        for p in &pods {
            assert!(p.name.starts_with("web-5d59d67564-"), "{}", p.name);
            assert_eq!(p.name.len(), "web-5d59d67564-".len() + 5);
            assert_eq!(p.labels["pod-template-hash"], "5d59d67564");
            assert_eq!(p.labels["app"], "web");
        }
        let names: BTreeSet<_> = pods.iter().map(|p| &p.name).collect();
        assert_eq!(names.len(), 3);
        // Deterministic.
        assert_eq!(pods, lab_pods(&m, &nodes(&["server1", "server2"])));
    }

    #[test]
    fn daemonset_one_per_node_and_statefulset_ordinals() {
        let mut m = Model::default();
        m.workloads.insert(
            ("default".into(), "agent".into()),
            workload("DaemonSet", "agent", 1),
        );
        m.workloads.insert(
            ("default".into(), "db".into()),
            workload("StatefulSet", "db", 2),
        );
        let pods = lab_pods(&m, &nodes(&["b", "a"]));
        let got: Vec<_> = pods
            .iter()
            .map(|p| (p.name.len(), p.node_name.as_deref().unwrap()))
            .collect();
        assert_eq!(got, [(11, "a"), (11, "b"), (4, "a"), (4, "b")]);
        assert_eq!(pods[2].name, "db-0");
        assert_eq!(pods[3].labels["apps.kubernetes.io/pod-index"], "1");
        assert_eq!(pods[3].labels["statefulset.kubernetes.io/pod-name"], "db-1");
        assert_eq!(pods[0].labels["controller-revision-hash"], "5d59d67564");
    }

    #[test]
    fn model_pods_keep_their_node_and_unplaced_ones_are_placed() {
        let mut m = Model::default();
        let pod = |name: &str, node: Option<&str>| Pod {
            namespace: "default".into(),
            name: name.into(),
            labels: Labels::new(),
            node_name: node.map(str::to_string),
            ip: None,
            ports: vec![],
            host_network: false,
        };
        m.pods
            .insert(("default".into(), "a".into()), pod("a", Some("elsewhere")));
        m.pods
            .insert(("default".into(), "b".into()), pod("b", None));
        m.pods
            .insert(("default".into(), "db-0".into()), pod("db-0", None));
        m.workloads.insert(
            ("default".into(), "db".into()),
            workload("StatefulSet", "db", 2),
        );
        let pods = lab_pods(&m, &nodes(&["n1", "n2"]));
        let got: Vec<_> = pods
            .iter()
            .map(|p| (p.name.as_str(), p.node_name.as_deref()))
            .collect();
        // db-0 of the StatefulSet collides with the model's Pod db-0: the Pod is kept.
        assert_eq!(
            got,
            [
                ("a", Some("elsewhere")),
                ("b", Some("n1")),
                ("db-0", Some("n2")),
                ("db-1", Some("n1"))
            ]
        );
        let none = lab_pods(&m, &[]);
        assert_eq!(none[1].node_name, None);
    }

    #[test]
    fn long_names_are_cut_like_kubernetes() {
        let mut m = Model::default();
        let long = "a".repeat(60);
        m.workloads.insert(
            ("default".into(), long.clone()),
            workload("Deployment", &long, 1),
        );
        let pods = lab_pods(&m, &nodes(&["n"]));
        assert_eq!(pods[0].name.len(), 63);
        assert!(pods[0].name.starts_with(&"a".repeat(58)));
    }
}
