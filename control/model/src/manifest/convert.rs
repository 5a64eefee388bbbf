//! k8s-openapi objects → model objects, with the validation Kubernetes would do on the fields
//! the model uses. Each function returns the model object or every field error of the object
//! (`; `-separated).

use super::NAMESPACE_NAME_LABEL;
use crate::hash;
use crate::model::{self, ContainerPort, Ipv4Cidr, Labels, Protocol};
use crate::validate::{self, FieldErrors, Shown};
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

pub(super) type Result<T> = std::result::Result<T, String>;

pub(super) fn done<T>(e: FieldErrors, v: T) -> Result<T> {
    if e.is_empty() {
        Ok(v)
    } else {
        Err(e.message())
    }
}

/// Name and namespace checks shared by every kind. Returns (name, namespace).
pub(super) fn meta(
    m: &ObjectMeta,
    namespaced: bool,
    name_rule: fn(&str) -> std::result::Result<(), String>,
    e: &mut FieldErrors,
) -> (String, String) {
    let name = m.name.clone().unwrap_or_default();
    if name.is_empty() {
        if m.generate_name.as_deref().is_some_and(|g| !g.is_empty()) {
            e.required(
                "metadata.name",
                "metadata.generateName is not supported here: the lab needs stable names",
            );
        } else {
            e.required("metadata.name", "");
        }
    } else {
        e.check("metadata.name", &name, name_rule);
    }
    let ns = m.namespace.clone().unwrap_or_default();
    if namespaced {
        if ns.is_empty() {
            return (name, "default".to_string());
        }
        e.check("metadata.namespace", &ns, validate::dns_label);
    } else if !ns.is_empty() {
        e.forbidden("metadata.namespace", "not allowed on this type");
    }
    (name, ns)
}

pub(super) fn labels(
    m: Option<&BTreeMap<String, String>>,
    path: &str,
    e: &mut FieldErrors,
) -> Labels {
    let Some(m) = m else {
        return Labels::new();
    };
    for (k, v) in m {
        e.check(path, k, validate::qualified_name);
        e.check(path, v, validate::label_value);
    }
    m.clone()
}

fn annotations(
    m: Option<&BTreeMap<String, String>>,
    e: &mut FieldErrors,
) -> BTreeMap<String, String> {
    let Some(m) = m else {
        return BTreeMap::new();
    };
    for k in m.keys() {
        e.check("metadata.annotations", k, validate::qualified_name);
    }
    m.clone()
}

pub(super) fn node(n: core::Node) -> Result<model::Node> {
    let mut e = FieldErrors::default();
    let (name, _) = meta(&n.metadata, false, validate::dns_subdomain, &mut e);
    let labels = labels(n.metadata.labels.as_ref(), "metadata.labels", &mut e);
    let annotations = annotations(n.metadata.annotations.as_ref(), &mut e);

    let spec = n.spec.unwrap_or_default();
    let mut pod_cidr: Option<Ipv4Cidr> = None;
    let mut check_cidr = |path: &str, s: &str, e: &mut FieldErrors| -> Option<bool> {
        // Some(true): IPv4, Some(false): IPv6, None: invalid (reported).
        match s.parse::<Ipv4Cidr>() {
            Ok(c) => {
                if pod_cidr.is_none() {
                    pod_cidr = Some(c);
                }
                Some(true)
            }
            Err(model::CidrError::Ipv6) => match validate::parse_ipv6_cidr(s) {
                Ok(()) => Some(false),
                Err(d) => {
                    e.invalid(path, Shown::Str(s), &d);
                    None
                }
            },
            Err(err) => {
                e.invalid(path, Shown::Str(s), &err.to_string());
                None
            }
        }
    };
    let single = spec.pod_cidr.as_deref().filter(|s| !s.is_empty());
    if let Some(s) = single {
        check_cidr("spec.podCIDR", s, &mut e);
    }
    let list = spec.pod_cidrs.unwrap_or_default();
    if let (Some(s), Some(first)) = (single, list.first())
        && s != first
    {
        e.invalid(
            "spec.podCIDRs[0]",
            Shown::Str(first),
            &format!("must match spec.podCIDR {s:?}"),
        );
    }
    if list.len() > 2 {
        e.invalid(
            "spec.podCIDRs",
            Shown::Raw(format!("{list:?}")),
            "may specify no more than one CIDR for each IP family",
        );
    }
    let mut families = BTreeSet::new();
    for (i, s) in list.iter().enumerate() {
        let path = format!("spec.podCIDRs[{i}]");
        if let Some(is_v4) = check_cidr(&path, s, &mut e)
            && !families.insert(is_v4)
        {
            e.invalid(
                &path,
                Shown::Str(s),
                "may specify no more than one CIDR for each IP family",
            );
        }
    }

    let mut internal_ip = None;
    for (i, a) in n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        if a.type_ != "InternalIP" && a.type_ != "ExternalIP" {
            continue;
        }
        let path = format!("status.addresses[{i}].address");
        match validate::parse_ip_any(&a.address) {
            Ok(Some(ip)) if a.type_ == "InternalIP" && internal_ip.is_none() => {
                internal_ip = Some(ip);
            }
            Ok(_) => {}
            Err(d) => e.invalid(&path, Shown::Str(&a.address), &d),
        }
    }

    done(
        e,
        model::Node {
            name,
            labels,
            pod_cidr,
            internal_ip,
            annotations,
        },
    )
}

pub(super) fn namespace(n: core::Namespace) -> Result<model::Namespace> {
    let mut e = FieldErrors::default();
    let (name, _) = meta(&n.metadata, false, validate::dns_label, &mut e);
    let mut labels = labels(n.metadata.labels.as_ref(), "metadata.labels", &mut e);
    // What the API server adds to every namespace (NamespaceDefaultLabelName, v1.21+).
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
    done(e, model::Namespace { name, labels })
}

/// What the model keeps of a pod spec.
struct SpecParts {
    ports: Vec<ContainerPort>,
    node_name: Option<String>,
    host_network: bool,
}

fn pod_spec(spec: Option<&core::PodSpec>, path: &str, e: &mut FieldErrors) -> SpecParts {
    let mut parts = SpecParts {
        ports: Vec::new(),
        node_name: None,
        host_network: false,
    };
    let Some(spec) = spec else {
        e.required(path, "");
        return parts;
    };
    parts.host_network = spec.host_network.unwrap_or(false);
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        e.check(&format!("{path}.nodeName"), n, validate::dns_subdomain);
        parts.node_name = Some(n.to_string());
    }
    if spec.containers.is_empty() {
        e.required(&format!("{path}.containers"), "");
    }
    let mut container_names = BTreeSet::new();
    let mut port_names = BTreeSet::new();
    for (ci, c) in spec.containers.iter().enumerate() {
        let cpath = format!("{path}.containers[{ci}]");
        if c.name.is_empty() {
            e.required(&format!("{cpath}.name"), "");
        } else {
            e.check(&format!("{cpath}.name"), &c.name, validate::dns_label);
            if !container_names.insert(c.name.as_str()) {
                e.duplicate(&format!("{cpath}.name"), Shown::Str(&c.name));
            }
        }
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            let ppath = format!("{cpath}.ports[{pi}]");
            let port = match u16::try_from(p.container_port) {
                Ok(v) if v >= 1 => Some(v),
                _ => {
                    e.invalid(
                        &format!("{ppath}.containerPort"),
                        Shown::Int(i64::from(p.container_port)),
                        "must be between 1 and 65535, inclusive",
                    );
                    None
                }
            };
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Some(Protocol::Tcp),
                "UDP" => Some(Protocol::Udp),
                "SCTP" => Some(Protocol::Sctp),
                other => {
                    e.unsupported(&format!("{ppath}.protocol"), other, &["SCTP", "TCP", "UDP"]);
                    None
                }
            };
            let name = p.name.clone().filter(|n| !n.is_empty());
            if let Some(n) = &name {
                e.check(&format!("{ppath}.name"), n, validate::iana_svc_name);
                if !port_names.insert(n.clone()) {
                    e.duplicate(&format!("{ppath}.name"), Shown::Str(n));
                }
            }
            if let (Some(port), Some(protocol)) = (port, protocol) {
                parts.ports.push(ContainerPort {
                    name,
                    port,
                    protocol,
                });
            }
        }
    }
    parts
}

pub(super) fn pod(p: core::Pod) -> Result<model::Pod> {
    let mut e = FieldErrors::default();
    let (name, namespace) = meta(&p.metadata, true, validate::dns_subdomain, &mut e);
    let labels = labels(p.metadata.labels.as_ref(), "metadata.labels", &mut e);
    let parts = pod_spec(p.spec.as_ref(), "spec", &mut e);

    let mut ip: Option<Ipv4Addr> = None;
    if let Some(status) = &p.status {
        let single = status.pod_ip.as_deref().filter(|s| !s.is_empty());
        if let Some(s) = single {
            match validate::parse_ip_any(s) {
                Ok(v4) => ip = v4,
                Err(d) => e.invalid("status.podIP", Shown::Str(s), &d),
            }
        }
        let list = status.pod_ips.as_deref().unwrap_or_default();
        if let (Some(s), Some(first)) = (single, list.first())
            && s != first.ip
        {
            e.invalid(
                "status.podIPs[0].ip",
                Shown::Str(&first.ip),
                &format!("must match status.podIP {s:?}"),
            );
        }
        for (i, a) in list.iter().enumerate() {
            match validate::parse_ip_any(&a.ip) {
                Ok(Some(v4)) if ip.is_none() => ip = Some(v4),
                Ok(_) => {}
                Err(d) => e.invalid(&format!("status.podIPs[{i}].ip"), Shown::Str(&a.ip), &d),
            }
        }
    }

    done(
        e,
        model::Pod {
            namespace,
            name,
            labels,
            node_name: parts.node_name,
            ip,
            ports: parts.ports,
            host_network: parts.host_network,
        },
    )
}

/// Checks a label selector; false when it is valid but does not select `labels`.
fn selector(sel: &LabelSelector, kind_lc: &str, labels: &Labels, e: &mut FieldErrors) -> bool {
    let ml = sel.match_labels.as_ref();
    let me = sel.match_expressions.as_deref().unwrap_or_default();
    if ml.is_none_or(BTreeMap::is_empty) && me.is_empty() {
        e.invalid(
            "spec.selector",
            Shown::Raw("{}".into()),
            &format!("empty selector is invalid for {kind_lc}"),
        );
        return true; // reported as an invalid selector, not as a mismatch
    }
    let errors_before = e.len();
    let mut matches = true;
    for (k, v) in ml.into_iter().flatten() {
        e.check("spec.selector.matchLabels", k, validate::qualified_name);
        e.check("spec.selector.matchLabels", v, validate::label_value);
        matches &= labels.get(k) == Some(v);
    }
    for (i, r) in me.iter().enumerate() {
        let path = format!("spec.selector.matchExpressions[{i}]");
        e.check(&format!("{path}.key"), &r.key, validate::qualified_name);
        let values = r.values.as_deref().unwrap_or_default();
        let has = labels.get(&r.key);
        match r.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    e.required(
                        &format!("{path}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    );
                }
                let inside = has.is_some_and(|v| values.contains(v));
                matches &= if r.operator == "In" { inside } else { !inside };
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    e.forbidden(
                        &format!("{path}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    );
                }
                matches &= (r.operator == "Exists") == has.is_some();
            }
            other => {
                e.unsupported(
                    &format!("{path}.operator"),
                    other,
                    &["DoesNotExist", "Exists", "In", "NotIn"],
                );
            }
        }
    }
    // A selector with errors is reported as such, not as a mismatch.
    matches || e.len() > errors_before
}

/// The parts every workload kind shares.
fn workload(
    kind: &str,
    m: &ObjectMeta,
    name_rule: fn(&str) -> std::result::Result<(), String>,
    replicas: Option<i32>,
    sel: &LabelSelector,
    template: Option<&core::PodTemplateSpec>,
) -> Result<model::Workload> {
    let mut e = FieldErrors::default();
    let (name, namespace) = meta(m, true, name_rule, &mut e);
    let replicas = match replicas {
        None => 1,
        Some(r) => u32::try_from(r).unwrap_or_else(|_| {
            e.invalid(
                "spec.replicas",
                Shown::Int(i64::from(r)),
                "must be greater than or equal to 0",
            );
            0
        }),
    };
    let Some(template) = template else {
        e.required("spec.template", "");
        return Err(e.message());
    };
    let tmeta = template.metadata.clone().unwrap_or_default();
    let pod_labels = labels(
        tmeta.labels.as_ref(),
        "spec.template.metadata.labels",
        &mut e,
    );
    if !selector(sel, &kind.to_ascii_lowercase(), &pod_labels, &mut e) {
        let shown = serde_json::to_string(&pod_labels).unwrap_or_default();
        e.invalid(
            "spec.template.metadata.labels",
            Shown::Raw(shown),
            "`selector` does not match template `labels`",
        );
    }
    let parts = pod_spec(template.spec.as_ref(), "spec.template.spec", &mut e);
    // The whole template, serialized by k8s-openapi (fixed field order, sorted maps), so any
    // change to it changes the hash, like a Deployment's pod-template-hash.
    let bytes = serde_json::to_vec(template).map_err(|err| format!("spec.template: {err}"))?;
    let template_hash = hash::encode(hash::fnv1a(&[&bytes]), 10);
    let per_node = kind == "DaemonSet";
    done(
        e,
        model::Workload {
            kind: kind.to_string(),
            namespace,
            name,
            replicas: if per_node { 1 } else { replicas },
            pod_labels,
            ports: parts.ports,
            node_name: parts.node_name,
            per_node,
            host_network: parts.host_network,
            template_hash,
        },
    )
}

pub(super) fn spec_required<T>(spec: Option<T>) -> Result<T> {
    spec.ok_or_else(|| "spec: Required value".to_string())
}

pub(super) fn deployment(d: apps::Deployment) -> Result<model::Workload> {
    let s = spec_required(d.spec)?;
    workload(
        "Deployment",
        &d.metadata,
        validate::dns_subdomain,
        s.replicas,
        &s.selector,
        Some(&s.template),
    )
}

pub(super) fn replica_set(r: apps::ReplicaSet) -> Result<model::Workload> {
    let s = spec_required(r.spec)?;
    workload(
        "ReplicaSet",
        &r.metadata,
        validate::dns_subdomain,
        s.replicas,
        &s.selector,
        s.template.as_ref(),
    )
}

pub(super) fn stateful_set(r: apps::StatefulSet) -> Result<model::Workload> {
    let s = spec_required(r.spec)?;
    // StatefulSet names are DNS labels: they become pod hostnames (`<name>-<ordinal>`).
    workload(
        "StatefulSet",
        &r.metadata,
        validate::dns_label,
        s.replicas,
        &s.selector,
        Some(&s.template),
    )
}

pub(super) fn daemon_set(r: apps::DaemonSet) -> Result<model::Workload> {
    let s = spec_required(r.spec)?;
    workload(
        "DaemonSet",
        &r.metadata,
        validate::dns_subdomain,
        None,
        &s.selector,
        Some(&s.template),
    )
}

/// flannel's `kube-system/kube-flannel-cfg`: the `net-conf.json` key.
pub(super) fn flannel_config(c: core::ConfigMap) -> Result<crate::model::NetConf> {
    let data = c.data.unwrap_or_default();
    let text = data.get("net-conf.json").ok_or_else(|| {
        "data[net-conf.json]: Required value: flannel's configuration".to_string()
    })?;
    crate::model::NetConf::parse(text).map_err(|e| format!("data[net-conf.json]: {e}"))
}
