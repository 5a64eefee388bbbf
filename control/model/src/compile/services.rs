//! Services and EndpointSlices → the snapshot's service table for one node
//! (`docs/design/services.md` §4).
//!
//! Per Service port, in (namespace, name, port) order:
//!
//! - **Backends**: the endpoints of the Service's slices (`kubernetes.io/service-name`)
//!   whose port has the Service port's name and protocol and a resolved number; an
//!   endpoint's first address (as kube-proxy). The `ready` ones; when none is ready, the
//!   `serving && terminating` ones (kube-proxy's fallback, applied to the cluster-wide set
//!   and to the node-local set separately). Duplicates (`ip:port` in two slices) count
//!   once. `local` = the endpoint's `nodeName` is this node.
//! - **Frontends**: each ClusterIP (the internal set: every backend, or the local ones with
//!   `internalTrafficPolicy: Local`); the nodePort on this node's IP; each externalIP; each
//!   LoadBalancer ingress IP (the external set: local backends only with
//!   `externalTrafficPolicy: Local`, and `masquerade` with `Cluster`).
//! - Headless and ExternalName Services produce nothing. A frontend key already taken is a
//!   [`CompileWarning::DuplicateFrontend`] naming both; the first stays.
//! - `service_port` ids are dense from 0 in that order, given to a Service port when its
//!   first frontend goes in. Backend sets with the same backends are shared (the empty set
//!   too).

use super::CompileWarning;
use crate::kubeproxy::{KpEndpoint, slice_endpoints, usable};
use crate::model::{EndpointSlice, Model, Protocol, Service, ServiceType, TrafficPolicy};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use xdplane_pipeline::tables::services::{
    Backend, BackendSet, Frontend, FrontendKey, FrontendKind, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
    Services,
};

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
        Protocol::Sctp => PROTO_SCTP,
    }
}

/// The ready backends, else the serving-and-terminating ones; sorted, each `ip:port` once.
fn choose<'a>(cands: impl Iterator<Item = &'a KpEndpoint> + Clone) -> Vec<Backend> {
    let mut v: Vec<Backend> = usable(cands)
        .into_iter()
        .map(|e| Backend {
            ip: e.ip,
            port: e.port,
            local: e.local,
        })
        .collect();
    v.sort_unstable();
    v.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
    v
}

/// Builds and shares backend sets.
struct Sets<'w> {
    services: Services,
    cache: HashMap<Vec<Backend>, u32>,
    warnings: &'w mut Vec<CompileWarning>,
}

impl Sets<'_> {
    /// The set index for `backends`; `None` (with a warning) when its Maglev table cannot be
    /// built (more backends than the largest table has slots).
    fn get(&mut self, backends: Vec<Backend>, service: &str) -> Option<u32> {
        if let Some(&i) = self.cache.get(&backends) {
            return Some(i);
        }
        match BackendSet::new(backends.clone()) {
            Ok(set) => {
                let i = self.services.add_set(set);
                self.cache.insert(backends, i);
                Some(i)
            }
            Err(e) => {
                self.warnings.push(CompileWarning::BackendSetFailed {
                    service: service.to_string(),
                    backends: backends.len(),
                    reason: e.to_string(),
                });
                None
            }
        }
    }
}

/// The service table of node `node` (its address for NodePorts: `node_ip`).
pub(super) fn build(
    model: &Model,
    node: &str,
    node_ip: Option<Ipv4Addr>,
    warnings: &mut Vec<CompileWarning>,
) -> Services {
    // Slices by the Service they belong to, in slice-name order.
    let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in model.endpoint_slices.values() {
        slices
            .entry((s.namespace.as_str(), s.service.as_str()))
            .or_default()
            .push(s);
    }
    let mut sets = Sets {
        services: Services::default(),
        cache: HashMap::new(),
        warnings,
    };
    let mut next_id: u32 = 0;
    let mut without_node_ip: Vec<String> = Vec::new();
    for svc in model.services.values() {
        if svc.service_type == ServiceType::ExternalName || svc.cluster_ips.is_empty() {
            continue;
        }
        let svc_slices = slices
            .get(&(svc.namespace.as_str(), svc.name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for port in &svc.ports {
            let name = match &port.name {
                Some(n) => format!("{}/{}:{n}", svc.namespace, svc.name),
                None => format!("{}/{}:{}", svc.namespace, svc.name, port.port),
            };
            let cands = candidates(svc_slices, port, node);
            let mut fe = Fe {
                svc,
                name: &name,
                proto: proto_number(port.protocol),
                id: None,
                next_id: &mut next_id,
            };

            // A Local policy that leaves nothing here while the Service has endpoints
            // elsewhere drops (kube-proxy's "has no local endpoints"); no endpoints at all
            // rejects.
            let anywhere = !choose_for(&cands, TrafficPolicy::Cluster).is_empty();
            let internal = choose_for(&cands, svc.internal_traffic_policy);
            let internal_policy = Policy {
                masquerade: false,
                drop_when_empty: internal.is_empty() && anywhere,
            };
            if let Some(set) = sets.get(internal, &name) {
                for ip in &svc.cluster_ips {
                    fe.add(
                        &mut sets,
                        *ip,
                        port.port,
                        FrontendKind::ClusterIp,
                        set,
                        internal_policy,
                    );
                }
            }

            let node_port = match svc.service_type {
                ServiceType::NodePort | ServiceType::LoadBalancer => port.node_port,
                _ => None,
            };
            let lb_ips: &[Ipv4Addr] = if svc.service_type == ServiceType::LoadBalancer {
                &svc.load_balancer_ips
            } else {
                &[]
            };
            if node_port.is_none() && svc.external_ips.is_empty() && lb_ips.is_empty() {
                continue;
            }
            let external = choose_for(&cands, svc.external_traffic_policy);
            let masq = Policy {
                masquerade: svc.external_traffic_policy == TrafficPolicy::Cluster,
                drop_when_empty: external.is_empty() && anywhere,
            };
            let Some(set) = sets.get(external, &name) else {
                continue;
            };
            if let Some(np) = node_port {
                match node_ip {
                    Some(ip) => fe.add(&mut sets, ip, np, FrontendKind::NodePort, set, masq),
                    None => without_node_ip.push(name.clone()),
                }
            }
            for ip in &svc.external_ips {
                fe.add(
                    &mut sets,
                    *ip,
                    port.port,
                    FrontendKind::ExternalIp,
                    set,
                    masq,
                );
            }
            for ip in lb_ips {
                fe.add(
                    &mut sets,
                    *ip,
                    port.port,
                    FrontendKind::LoadBalancer,
                    set,
                    masq,
                );
            }
        }
    }
    if !without_node_ip.is_empty() {
        sets.warnings.push(CompileWarning::NodePortsWithoutNodeIp {
            node: node.to_string(),
            count: without_node_ip.len(),
            first: without_node_ip.swap_remove(0),
        });
    }
    sets.services
}

fn choose_for(cands: &[KpEndpoint], policy: TrafficPolicy) -> Vec<Backend> {
    match policy {
        TrafficPolicy::Cluster => choose(cands.iter()),
        TrafficPolicy::Local => choose(cands.iter().filter(|c| c.local)),
    }
}

fn candidates(
    slices: &[&EndpointSlice],
    port: &crate::model::ServicePort,
    node: &str,
) -> Vec<KpEndpoint> {
    slices
        .iter()
        .flat_map(|s| slice_endpoints(s, port, node))
        .collect()
}

/// What a frontend does besides choosing a backend.
#[derive(Clone, Copy)]
struct Policy {
    masquerade: bool,
    drop_when_empty: bool,
}

/// Adds the frontends of one Service port.
struct Fe<'a> {
    svc: &'a Service,
    name: &'a str,
    proto: u8,
    /// The Service port's id, once it has a frontend.
    id: Option<u32>,
    next_id: &'a mut u32,
}

impl Fe<'_> {
    fn add(
        &mut self,
        sets: &mut Sets<'_>,
        ip: Ipv4Addr,
        port: u16,
        kind: FrontendKind,
        set: u32,
        policy: Policy,
    ) {
        let key = FrontendKey {
            ip,
            port,
            proto: self.proto,
        };
        if let Some((first, _)) = sets.services.lookup(ip, port, self.proto) {
            let kept = first.name.clone();
            sets.warnings.push(CompileWarning::DuplicateFrontend {
                frontend: fmt_key(&key),
                kept,
                skipped: self.name.to_string(),
            });
            return;
        }
        let id = *self.id.get_or_insert_with(|| {
            let id = *self.next_id;
            *self.next_id += 1;
            id
        });
        let fe = Frontend {
            name: self.name.to_string(),
            kind,
            set,
            masquerade: policy.masquerade,
            drop_when_empty: policy.drop_when_empty,
            affinity_timeout_s: self.svc.session_affinity_timeout.unwrap_or(0),
            service_port: id,
        };
        // Cannot fail: the key was just looked up.
        let _ = sets.services.add_frontend(key, fe);
    }
}

/// `ip:port/proto`, as the service table's dump writes it.
pub(super) fn fmt_key(k: &FrontendKey) -> String {
    let proto = match k.proto {
        PROTO_TCP => "tcp".to_string(),
        PROTO_UDP => "udp".to_string(),
        PROTO_SCTP => "sctp".to_string(),
        p => p.to_string(),
    };
    format!("{}:{}/{proto}", k.ip, k.port)
}
