//! `v1 Service` and `discovery.k8s.io/v1 EndpointSlice` → model, with the API server's
//! defaults and the validation Kubernetes does on the fields the dataplane uses.
//!
//! Allocation (a clusterIP for a Service written without one, nodePorts for NodePort and
//! LoadBalancer ports without one) is not done here but in [`super::allocate`], once every
//! file is loaded: it depends on all Services at once.

use super::convert::{Result, done, labels, meta, spec_required};
use crate::model::{
    self, Endpoint, EndpointPort, Protocol, SERVICE_NAME_LABEL, ServicePort, ServiceType,
    TargetPort, TrafficPolicy,
};
use crate::validate::{self, FieldErrors, Shown};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// `sessionAffinityConfig.clientIP.timeoutSeconds` when left out (3 hours, the API default).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// The largest ClientIP affinity timeout the API accepts (one day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86400;

/// A converted Service and what the loader still has to do for it.
#[derive(Debug)]
pub(super) struct ServiceIn {
    pub service: model::Service,
    /// No clusterIP given (and not headless, not ExternalName): allocate one.
    pub wants_cluster_ip: bool,
    /// Ports without a nodePort get one (NodePort, and LoadBalancer unless
    /// `allocateLoadBalancerNodePorts: false`).
    pub wants_node_ports: bool,
    /// What was left out of an object that was loaded (IPv6 addresses, ...).
    pub notes: Vec<String>,
}

fn protocol(v: Option<&str>, path: &str, e: &mut FieldErrors) -> Option<Protocol> {
    match v.filter(|s| !s.is_empty()).unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        other => {
            e.unsupported(path, other, &["SCTP", "TCP", "UDP"]);
            None
        }
    }
}

fn port_number(v: i32, path: &str, e: &mut FieldErrors) -> Option<u16> {
    match u16::try_from(v) {
        Ok(p) if p >= 1 => Some(p),
        _ => {
            e.invalid(
                path,
                Shown::Int(i64::from(v)),
                "must be between 1 and 65535, inclusive",
            );
            None
        }
    }
}

fn policy(v: Option<&str>, path: &str, e: &mut FieldErrors) -> TrafficPolicy {
    match v.filter(|s| !s.is_empty()) {
        None | Some("Cluster") => TrafficPolicy::Cluster,
        Some("Local") => TrafficPolicy::Local,
        Some(other) => {
            e.unsupported(path, other, &["Cluster", "Local"]);
            TrafficPolicy::Cluster
        }
    }
}

/// An IPv4 address usable as an external IP (`ValidateNonSpecialIP`): not unspecified,
/// loopback, link-local or multicast.
fn special_ip(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("may not be unspecified (0.0.0.0)")
    } else if ip.is_loopback() {
        Some("may not be in the loopback range (127.0.0.0/8)")
    } else if ip.is_link_local() {
        Some("may not be in the link-local range (169.254.0.0/16)")
    } else if ip.is_multicast() {
        Some("may not be in the multicast range (224.0.0.0/4)")
    } else {
        None
    }
}

fn type_name(t: ServiceType) -> &'static str {
    match t {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
        ServiceType::ExternalName => "ExternalName",
    }
}

pub(super) fn service(s: core::Service) -> Result<ServiceIn> {
    let mut e = FieldErrors::default();
    let mut notes = Vec::new();
    let (name, namespace) = meta(&s.metadata, true, validate::dns1035_label, &mut e);
    labels(s.metadata.labels.as_ref(), "metadata.labels", &mut e);
    let spec = spec_required(s.spec)?;

    let service_type = match spec.type_.as_deref().filter(|t| !t.is_empty()) {
        None | Some("ClusterIP") => ServiceType::ClusterIP,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => ServiceType::ExternalName,
        Some(other) => {
            e.unsupported(
                "spec.type",
                other,
                &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
            );
            return Err(e.message());
        }
    };
    let tname = type_name(service_type);
    let external_name = service_type == ServiceType::ExternalName;

    // clusterIP / clusterIPs.
    let single = spec.cluster_ip.as_deref().filter(|s| !s.is_empty());
    let list = spec.cluster_ips.clone().unwrap_or_default();
    if let (Some(s), Some(first)) = (single, list.first())
        && s != first
    {
        e.invalid(
            "spec.clusterIPs[0]",
            Shown::Str(first),
            &format!("must match `clusterIP` {s:?}"),
        );
    }
    let entries: Vec<(String, String)> = if list.is_empty() {
        single
            .map(|s| vec![("spec.clusterIP".to_string(), s.to_string())])
            .unwrap_or_default()
    } else {
        list.iter()
            .enumerate()
            .map(|(i, s)| (format!("spec.clusterIPs[{i}]"), s.clone()))
            .collect()
    };
    let headless = entries.first().is_some_and(|(_, s)| s == "None");
    let mut cluster_ips = Vec::new();
    if external_name {
        if !entries.is_empty() {
            e.forbidden("spec.clusterIP", "may not be set for ExternalName services");
        }
        match spec.external_name.as_deref().filter(|n| !n.is_empty()) {
            None => e.required("spec.externalName", ""),
            Some(n) => e.check(
                "spec.externalName",
                n.strip_suffix('.').unwrap_or(n),
                validate::dns_subdomain,
            ),
        }
    } else if headless {
        if entries.len() > 1 {
            e.invalid(
                &entries[1].0,
                Shown::Str(&entries[1].1),
                "must not be set when `clusterIP` is 'None'",
            );
        }
        if service_type != ServiceType::ClusterIP {
            e.invalid(
                &entries[0].0,
                Shown::Str("None"),
                &format!("may not be set to 'None' for {tname} services"),
            );
        }
    } else {
        let mut v6 = 0;
        for (path, s) in &entries {
            match validate::parse_ip_any(s) {
                Ok(Some(ip)) => {
                    if !cluster_ips.is_empty() {
                        e.invalid(
                            path,
                            Shown::Str(s),
                            "may specify no more than one IP for each IP family",
                        );
                    }
                    cluster_ips.push(ip);
                }
                Ok(None) => {
                    v6 += 1;
                    notes.push(format!(
                        "{path}: IPv6 address {s:?} skipped (xdplane carries IPv4 only)"
                    ));
                }
                Err(d) => e.invalid(path, Shown::Str(s), &d),
            }
        }
        if v6 > 1 {
            e.invalid(
                "spec.clusterIPs",
                Shown::Raw(format!("{list:?}")),
                "may specify no more than one IP for each IP family",
            );
        }
        if v6 > 0 && cluster_ips.is_empty() {
            e.invalid(
                "spec.clusterIPs",
                Shown::Raw(format!(
                    "{:?}",
                    entries.iter().map(|x| &x.1).collect::<Vec<_>>()
                )),
                "an IPv6-only Service is not supported: xdplane carries IPv4 only",
            );
        }
    }
    let families = spec.ip_families.clone().unwrap_or_default();
    for (i, f) in families.iter().enumerate() {
        if f != "IPv4" && f != "IPv6" {
            e.unsupported(&format!("spec.ipFamilies[{i}]"), f, &["IPv4", "IPv6"]);
        }
    }
    if !external_name
        && !headless
        && entries.is_empty()
        && !families.is_empty()
        && !families.iter().any(|f| f == "IPv4")
    {
        e.invalid(
            "spec.ipFamilies",
            Shown::Raw(format!("{families:?}")),
            "an IPv6-only Service is not supported: xdplane carries IPv4 only",
        );
    }

    // Ports.
    let ports_in = spec.ports.clone().unwrap_or_default();
    if ports_in.is_empty() && !headless && !external_name {
        e.required("spec.ports", "");
    }
    let multi = ports_in.len() > 1;
    let mut names = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut node_keys = BTreeSet::new();
    let mut ports = Vec::new();
    for (i, p) in ports_in.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let pname = p.name.clone().filter(|n| !n.is_empty());
        match &pname {
            None if multi => e.required(&format!("{path}.name"), ""),
            None => {}
            Some(n) => {
                e.check(&format!("{path}.name"), n, validate::dns_label);
                if !names.insert(n.clone()) {
                    e.duplicate(&format!("{path}.name"), Shown::Str(n));
                }
            }
        }
        let port = port_number(p.port, &format!("{path}.port"), &mut e);
        let proto = protocol(p.protocol.as_deref(), &format!("{path}.protocol"), &mut e);
        if let (Some(port), Some(proto)) = (port, proto)
            && !keys.insert((port, proto))
        {
            e.duplicate(&path, Shown::Raw(format!("{port}/{}", proto.as_str())));
        }
        let target_port = match &p.target_port {
            None => port.map(TargetPort::Number),
            Some(IntOrString::Int(0)) => port.map(TargetPort::Number),
            Some(IntOrString::Int(n)) => {
                port_number(*n, &format!("{path}.targetPort"), &mut e).map(TargetPort::Number)
            }
            Some(IntOrString::String(s)) if s.is_empty() => port.map(TargetPort::Number),
            Some(IntOrString::String(s)) => {
                e.check(&format!("{path}.targetPort"), s, validate::iana_svc_name);
                Some(TargetPort::Name(s.clone()))
            }
        };
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(n) => {
                if matches!(
                    service_type,
                    ServiceType::ClusterIP | ServiceType::ExternalName
                ) {
                    e.forbidden(
                        &format!("{path}.nodePort"),
                        &format!("may not be used when `type` is '{tname}'"),
                    );
                }
                let np = port_number(n, &format!("{path}.nodePort"), &mut e);
                if let (Some(np), Some(proto)) = (np, proto)
                    && !node_keys.insert((np, proto))
                {
                    e.duplicate(&format!("{path}.nodePort"), Shown::Int(i64::from(np)));
                }
                np
            }
        };
        if let (Some(port), Some(protocol), Some(target_port)) = (port, proto, target_port) {
            ports.push(ServicePort {
                name: pname,
                protocol,
                port,
                target_port,
                node_port,
            });
        }
    }

    let selector = labels(spec.selector.as_ref(), "spec.selector", &mut e);

    // externalIPs.
    let mut external_ips = Vec::new();
    for (i, s) in spec.external_ips.iter().flatten().enumerate() {
        let path = format!("spec.externalIPs[{i}]");
        match validate::parse_ip_any(s) {
            Ok(Some(ip)) => match special_ip(ip) {
                Some(why) => e.invalid(&path, Shown::Str(s), why),
                None if external_ips.contains(&ip) => e.duplicate(&path, Shown::Str(s)),
                None => external_ips.push(ip),
            },
            Ok(None) => notes.push(format!(
                "{path}: IPv6 address {s:?} skipped (xdplane carries IPv4 only)"
            )),
            Err(d) => e.invalid(&path, Shown::Str(s), &d),
        }
    }

    // Traffic policies.
    let externally_accessible = matches!(
        service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    ) || !external_ips.is_empty();
    let etp_raw = spec
        .external_traffic_policy
        .as_deref()
        .filter(|s| !s.is_empty());
    if etp_raw.is_some() && !externally_accessible {
        e.invalid(
            "spec.externalTrafficPolicy",
            Shown::Str(etp_raw.unwrap_or_default()),
            "may only be set for externally-accessible services",
        );
    }
    let external_traffic_policy = policy(etp_raw, "spec.externalTrafficPolicy", &mut e);
    let internal_traffic_policy = policy(
        spec.internal_traffic_policy.as_deref(),
        "spec.internalTrafficPolicy",
        &mut e,
    );

    // Session affinity.
    let timeout_cfg = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref());
    let session_affinity_timeout = match spec.session_affinity.as_deref().filter(|s| !s.is_empty())
    {
        None | Some("None") => {
            if timeout_cfg.is_some() {
                e.forbidden(
                    "spec.sessionAffinityConfig",
                    "must not be set when session affinity is None",
                );
            }
            None
        }
        Some("ClientIP") => match timeout_cfg.and_then(|c| c.timeout_seconds) {
            None => Some(DEFAULT_AFFINITY_TIMEOUT),
            Some(t) => match u32::try_from(t) {
                Ok(t) if (1..=MAX_AFFINITY_TIMEOUT).contains(&t) => Some(t),
                _ => {
                    e.invalid(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        Shown::Int(i64::from(t)),
                        &format!("must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT}"),
                    );
                    None
                }
            },
        },
        Some(other) => {
            e.unsupported("spec.sessionAffinity", other, &["ClientIP", "None"]);
            None
        }
    };

    // allocateLoadBalancerNodePorts.
    let lb = service_type == ServiceType::LoadBalancer;
    if spec.allocate_load_balancer_node_ports.is_some() && !lb {
        e.forbidden(
            "spec.allocateLoadBalancerNodePorts",
            "may only be used when `type` is 'LoadBalancer'",
        );
    }
    let wants_node_ports = service_type == ServiceType::NodePort
        || (lb && spec.allocate_load_balancer_node_ports != Some(false));

    // status.loadBalancer.ingress.
    let mut load_balancer_ips = Vec::new();
    let ingress = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref());
    for (i, ing) in ingress.into_iter().flatten().enumerate() {
        let path = format!("status.loadBalancer.ingress[{i}].ip");
        let Some(ipstr) = ing.ip.as_deref().filter(|s| !s.is_empty()) else {
            continue; // a hostname-only ingress: nothing to bind
        };
        match validate::parse_ip_any(ipstr) {
            Ok(Some(ip)) => {
                if !lb {
                    notes.push(format!(
                        "{path}: {ipstr} ignored: only LoadBalancer Services have ingress IPs"
                    ));
                } else if ing.ip_mode.as_deref() == Some("Proxy") {
                    notes.push(format!(
                        "{path}: {ipstr} ignored: ipMode Proxy (the load balancer delivers to \
                         the nodes, as kube-proxy does not bind it)"
                    ));
                } else if let Some(why) = special_ip(ip) {
                    e.invalid(&path, Shown::Str(ipstr), why);
                } else if !load_balancer_ips.contains(&ip) {
                    load_balancer_ips.push(ip);
                }
            }
            Ok(None) => notes.push(format!(
                "{path}: IPv6 address {ipstr:?} skipped (xdplane carries IPv4 only)"
            )),
            Err(d) => e.invalid(&path, Shown::Str(ipstr), &d),
        }
    }

    let wants_cluster_ip = !external_name && !headless && cluster_ips.is_empty();
    let service = if external_name {
        // A DNS alias: nothing for the dataplane (kube-proxy ignores it too).
        model::Service::bare(namespace, name, service_type)
    } else {
        model::Service {
            namespace,
            name,
            service_type,
            cluster_ips,
            ports,
            selector,
            external_ips,
            load_balancer_ips,
            external_traffic_policy,
            internal_traffic_policy,
            session_affinity_timeout,
        }
    };
    done(
        e,
        ServiceIn {
            service,
            wants_cluster_ip,
            wants_node_ports,
            notes,
        },
    )
}

/// The API's limits on one EndpointSlice.
const MAX_SLICE_PORTS: usize = 100;
const MAX_SLICE_ENDPOINTS: usize = 1000;
const MAX_ENDPOINT_ADDRESSES: usize = 100;

pub(super) fn endpoint_slice(s: discovery::EndpointSlice) -> Result<model::EndpointSlice> {
    let mut e = FieldErrors::default();
    let (name, namespace) = meta(&s.metadata, true, validate::dns_subdomain, &mut e);
    let l = labels(s.metadata.labels.as_ref(), "metadata.labels", &mut e);
    let service = match l.get(SERVICE_NAME_LABEL).filter(|v| !v.is_empty()) {
        Some(v) => v.clone(),
        None => {
            e.required(
                &format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                "the Service the slice belongs to (kube-proxy ignores slices without it)",
            );
            String::new()
        }
    };
    match s.address_type.as_str() {
        "IPv4" => {}
        "IPv6" | "FQDN" => e.invalid(
            "addressType",
            Shown::Str(&s.address_type),
            "only IPv4 EndpointSlices are supported: xdplane carries IPv4 only",
        ),
        other => e.unsupported("addressType", other, &["FQDN", "IPv4", "IPv6"]),
    }

    let ports_in = s.ports.as_deref().unwrap_or_default();
    if ports_in.len() > MAX_SLICE_PORTS {
        e.invalid(
            "ports",
            Shown::Int(ports_in.len() as i64),
            &format!("must have at most {MAX_SLICE_PORTS} items"),
        );
    }
    let mut names = BTreeSet::new();
    let mut ports = Vec::new();
    for (i, p) in ports_in.iter().enumerate() {
        let path = format!("ports[{i}]");
        let pname = p.name.clone().filter(|n| !n.is_empty());
        if let Some(n) = &pname {
            e.check(&format!("{path}.name"), n, validate::dns_label);
        }
        if !names.insert(pname.clone()) {
            e.duplicate(
                &format!("{path}.name"),
                Shown::Str(pname.as_deref().unwrap_or_default()),
            );
        }
        let proto = protocol(p.protocol.as_deref(), &format!("{path}.protocol"), &mut e);
        let port = match p.port {
            None => Some(None),
            Some(n) => port_number(n, &format!("{path}.port"), &mut e).map(Some),
        };
        if let (Some(protocol), Some(port)) = (proto, port) {
            ports.push(EndpointPort {
                name: pname,
                protocol,
                port,
            });
        }
    }

    if s.endpoints.len() > MAX_SLICE_ENDPOINTS {
        e.invalid(
            "endpoints",
            Shown::Int(s.endpoints.len() as i64),
            &format!("must have at most {MAX_SLICE_ENDPOINTS} items"),
        );
    }
    let mut endpoints = Vec::new();
    for (i, ep) in s.endpoints.iter().enumerate() {
        let path = format!("endpoints[{i}]");
        if ep.addresses.is_empty() {
            e.required(
                &format!("{path}.addresses"),
                "must contain at least 1 address",
            );
        }
        if ep.addresses.len() > MAX_ENDPOINT_ADDRESSES {
            e.invalid(
                &format!("{path}.addresses"),
                Shown::Int(ep.addresses.len() as i64),
                &format!("must have at most {MAX_ENDPOINT_ADDRESSES} items"),
            );
        }
        let mut addresses = Vec::new();
        for (j, a) in ep.addresses.iter().enumerate() {
            match validate::parse_ipv4(a) {
                Ok(ip) => addresses.push(ip),
                Err(validate::IpError::LeadingZeros) => e.invalid(
                    &format!("{path}.addresses[{j}]"),
                    Shown::Str(a),
                    "must not have leading 0s",
                ),
                Err(_) => e.invalid(
                    &format!("{path}.addresses[{j}]"),
                    Shown::Str(a),
                    "must be a valid IPv4 address",
                ),
            }
        }
        let c = ep.conditions.clone().unwrap_or_default();
        let ready = c.ready.unwrap_or(true);
        let node_name = ep.node_name.clone().filter(|n| !n.is_empty());
        if let Some(n) = &node_name {
            e.check(&format!("{path}.nodeName"), n, validate::dns_subdomain);
        }
        endpoints.push(Endpoint {
            addresses,
            ready,
            serving: c.serving.unwrap_or(ready),
            terminating: c.terminating.unwrap_or(false),
            node_name,
        });
    }
    done(
        e,
        model::EndpointSlice {
            namespace,
            name,
            service,
            ports,
            endpoints,
        },
    )
}
