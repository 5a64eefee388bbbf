//! What the API server's allocators do for Services written without a clusterIP or a
//! nodePort, done deterministically so every agent, the lab and the perf scenarios compute
//! the same values from the same manifest directory.
//!
//! The rules (see [`allocate`]):
//!
//! 1. **Explicit values first.** Every Service's own clusterIPs, then its own nodePorts, are
//!    reserved in (namespace, name) order. A value outside the range, or one an earlier
//!    Service (in that order) already holds, rejects the Service whole, with the API
//!    server's words ("provided IP is already allocated").
//! 2. **Then the missing ones**, Service by Service in (namespace, name) order: the search
//!    starts at a point derived from an FNV-1a hash of the Service's namespace and name (and
//!    the port's name, number and protocol for a nodePort) and probes upwards, wrapping,
//!    to the first free value. Like Kubernetes' allocators, the lower part of each range
//!    (1/16 of the service CIDR, at least 16 and at most 256 addresses; 1/32 of the
//!    nodePort range, at least 16 and at most 128 ports) is kept for explicit values and
//!    used only when the upper part is full.
//! 3. The service CIDR's first host address (`10.96.0.1`) belongs to `default/kubernetes`
//!    (the API server's own Service): no other Service gets it, explicitly or not.
//! 4. Within one Service, ports with the same `port` number (TCP and UDP of a DNS Service)
//!    share one nodePort, as Kubernetes does.
//!
//! A Service's value depends only on its own name and on the Services whose probes land
//! near it: adding one Service rarely moves another.

use super::{LoadResult, ObjectError};
use crate::hash::fnv1a;
use crate::model::{Ipv4Cidr, Service, ServiceType};
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

/// Ranges the allocators draw from (kube-apiserver's `--service-cluster-ip-range` and
/// `--service-node-port-range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Default `10.96.0.0/12` (kubeadm's default).
    pub service_cidr: Ipv4Cidr,
    /// Inclusive; default `30000–32767`.
    pub node_ports: (u16, u16),
}

impl Default for Allocation {
    fn default() -> Self {
        Allocation {
            service_cidr: Ipv4Cidr::new_truncating(Ipv4Addr::new(10, 96, 0, 0), 12),
            node_ports: (30000, 32767),
        }
    }
}

/// The namespace/name of the API server's own Service, which gets the first address.
pub const KUBERNETES_SERVICE: (&str, &str) = ("default", "kubernetes");

/// Kubernetes' split of a range into a static band (low, for explicit values) and a dynamic
/// one: `clamp(size / div, 16, max)`, no band for ranges smaller than 16.
fn static_band(size: u64, div: u64, max: u64) -> u64 {
    if size < 16 {
        0
    } else {
        (size / div).clamp(16, max)
    }
}

/// First free value probing upwards from `start` over `[lo, hi)`, wrapping.
fn probe(lo: u64, hi: u64, start_hash: u64, taken: &impl Fn(u64) -> bool) -> Option<u64> {
    if hi <= lo {
        return None;
    }
    let n = hi - lo;
    let start = start_hash % n;
    (0..n).map(|i| lo + (start + i) % n).find(|v| !taken(*v))
}

/// Gives every Service loaded into `r` without a clusterIP one from `cfg.service_cidr`, and
/// every NodePort/LoadBalancer port without a nodePort one from `cfg.node_ports` (see the
/// module docs for the rules). Services whose explicit values are out of range or already
/// taken are removed from the model and reported in `r.errors`; so is a Service for which
/// no value is left. Deterministic: the result depends only on the set of Services, not on
/// file order or the machine. Calling it again allocates nothing new.
pub fn allocate(r: &mut LoadResult, cfg: &Allocation) {
    let cidr = Ipv4Cidr::new_truncating(cfg.service_cidr.addr, cfg.service_cidr.prefix);
    let net = u64::from(u32::from(cidr.network()));
    let size = cidr.size();
    // Host offsets 1..size-1 (no network or broadcast address) for prefixes up to /30.
    let (host_lo, host_hi) = if size >= 4 { (1, size - 1) } else { (0, size) };
    let kube_offset = host_lo;
    let (np_lo, np_hi) = (
        u64::from(cfg.node_ports.0.min(cfg.node_ports.1)),
        u64::from(cfg.node_ports.0.max(cfg.node_ports.1)) + 1,
    );

    // Offsets in the service CIDR → owner.
    let mut ip_owner: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut port_owner: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut rejected: Vec<((String, String), String)> = Vec::new();

    // 1. Explicit clusterIPs, then explicit nodePorts, in (namespace, name) order.
    for (key, svc) in &r.model.services {
        let is_kube = key.0 == KUBERNETES_SERVICE.0 && key.1 == KUBERNETES_SERVICE.1;
        let mut errs = Vec::new();
        let mut mine = Vec::new();
        for (i, ip) in svc.cluster_ips.iter().enumerate() {
            let v = u64::from(u32::from(*ip));
            let off = v.wrapping_sub(net);
            if !cidr.contains(*ip) || off < host_lo || off >= host_hi {
                errs.push(format!(
                    "spec.clusterIPs[{i}]: Invalid value: \"{ip}\": failed to allocate IP {ip}: \
                     provided IP is not in the valid range. The range of valid IPs is {cidr}"
                ));
            } else if off == kube_offset && !is_kube {
                errs.push(format!(
                    "spec.clusterIPs[{i}]: Invalid value: \"{ip}\": failed to allocate IP {ip}: \
                     provided IP is already allocated (reserved for the Service {}/{})",
                    KUBERNETES_SERVICE.0, KUBERNETES_SERVICE.1
                ));
            } else if let Some(o) = ip_owner.get(&off) {
                errs.push(format!(
                    "spec.clusterIPs[{i}]: Invalid value: \"{ip}\": failed to allocate IP {ip}: \
                     provided IP is already allocated (to {}/{})",
                    o.0, o.1
                ));
            } else {
                mine.push(off);
            }
        }
        settle(&mut ip_owner, key, mine, &errs, &mut rejected);
    }
    reject(r, &mut rejected);
    for (key, svc) in &r.model.services {
        let mut errs = Vec::new();
        let mut mine = Vec::new();
        for (i, p) in svc.ports.iter().enumerate() {
            let Some(np) = p.node_port else { continue };
            let v = u64::from(np);
            if v < np_lo || v >= np_hi {
                errs.push(format!(
                    "spec.ports[{i}].nodePort: Invalid value: {np}: provided port is not in the \
                     valid range. The range of valid ports is {}-{}",
                    np_lo,
                    np_hi - 1
                ));
            } else if let Some(o) = port_owner.get(&v) {
                errs.push(format!(
                    "spec.ports[{i}].nodePort: Invalid value: {np}: provided port is already \
                     allocated (to {}/{})",
                    o.0, o.1
                ));
            } else {
                mine.push(v);
            }
        }
        settle(&mut port_owner, key, mine, &errs, &mut rejected);
    }
    // A Service rejected for its nodePorts gives its clusterIPs back.
    for (key, _) in &rejected {
        ip_owner.retain(|_, o| o != key);
    }
    reject(r, &mut rejected);

    // 2. The missing clusterIPs.
    let ip_band = static_band(host_hi - host_lo, 16, 256);
    let pending: Vec<(String, String)> = std::mem::take(&mut r.pending_cluster_ip)
        .into_iter()
        .collect();
    let mut ips_taken: HashSet<u64> = ip_owner.keys().copied().collect();
    for key in pending {
        let Some(svc) = r.model.services.get_mut(&key) else {
            continue;
        };
        if !svc.cluster_ips.is_empty() || svc.service_type == ServiceType::ExternalName {
            continue;
        }
        let is_kube = key.0 == KUBERNETES_SERVICE.0 && key.1 == KUBERNETES_SERVICE.1;
        let off = if is_kube {
            (!ips_taken.contains(&kube_offset)).then_some(kube_offset)
        } else {
            let h = fnv1a(&[b"clusterIP", key.0.as_bytes(), key.1.as_bytes()]);
            let taken = |o: u64| o == kube_offset || ips_taken.contains(&o);
            // Dynamic band first, then the static one.
            probe(host_lo + ip_band, host_hi, h, &taken)
                .or_else(|| probe(host_lo, host_lo + ip_band, h, &taken))
        };
        match off {
            Some(o) => {
                ips_taken.insert(o);
                // o < size <= 2^32, and net + o stays inside the CIDR.
                let ip = Ipv4Addr::from(u32::try_from(net + o).unwrap_or(0));
                svc.cluster_ips.push(ip);
            }
            None => rejected.push((
                key,
                format!(
                    "spec.clusterIPs: Internal error: failed to allocate a serviceIP: range is \
                     full ({cidr})"
                ),
            )),
        }
    }
    reject(r, &mut rejected);

    // 3. The missing nodePorts.
    let np_band = static_band(np_hi - np_lo, 32, 128);
    let pending: Vec<(String, String)> = std::mem::take(&mut r.pending_node_ports)
        .into_iter()
        .collect();
    let mut ports_taken: HashSet<u64> = port_owner.keys().copied().collect();
    for key in pending {
        let Some(svc) = r.model.services.get_mut(&key) else {
            continue;
        };
        if !matches!(
            svc.service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        ) {
            continue;
        }
        let mut got = Vec::new();
        let mut full = false;
        for i in 0..svc.ports.len() {
            if svc.ports[i].node_port.is_some() {
                continue;
            }
            let p = &svc.ports[i];
            // Same port number, other protocol, in this Service: share its nodePort.
            let shared = svc
                .ports
                .iter()
                .find(|q| q.port == p.port && q.node_port.is_some())
                .and_then(|q| q.node_port);
            let np = match shared {
                Some(np) => np,
                None => {
                    let h = fnv1a(&[
                        b"nodePort",
                        key.0.as_bytes(),
                        key.1.as_bytes(),
                        p.name.as_deref().unwrap_or_default().as_bytes(),
                        &p.port.to_be_bytes(),
                        p.protocol.as_str().as_bytes(),
                    ]);
                    let taken = |v: u64| ports_taken.contains(&v);
                    match probe(np_lo + np_band, np_hi, h, &taken)
                        .or_else(|| probe(np_lo, np_lo + np_band, h, &taken))
                    {
                        Some(v) => {
                            ports_taken.insert(v);
                            got.push(v);
                            u16::try_from(v).unwrap_or(0)
                        }
                        None => {
                            full = true;
                            break;
                        }
                    }
                }
            };
            svc.ports[i].node_port = Some(np);
        }
        if full {
            for v in got {
                ports_taken.remove(&v);
            }
            rejected.push((
                key,
                format!(
                    "spec.ports: Internal error: failed to allocate a nodePort: range is full \
                     ({}-{})",
                    np_lo,
                    np_hi - 1
                ),
            ));
        }
    }
    reject(r, &mut rejected);
}

/// Removes the rejected Services from the model and reports them where they were declared.
/// A Service's allocations: recorded as `key`'s when there was no error, else the Service
/// is rejected with all of its errors.
fn settle(
    owner: &mut BTreeMap<u64, (String, String)>,
    key: &(String, String),
    mine: Vec<u64>,
    errs: &[String],
    rejected: &mut Vec<((String, String), String)>,
) {
    if errs.is_empty() {
        for v in mine {
            owner.insert(v, key.clone());
        }
    } else {
        rejected.push((key.clone(), errs.join("; ")));
    }
}

fn reject(r: &mut LoadResult, rejected: &mut Vec<((String, String), String)>) {
    for (key, message) in rejected.drain(..) {
        let svc: Option<Service> = r.model.services.remove(&key);
        if svc.is_none() {
            continue;
        }
        r.pending_cluster_ip.remove(&key);
        r.pending_node_ports.remove(&key);
        let origin = r
            .origins
            .remove(&("Service", key.0.clone(), key.1.clone()))
            .map(|(_, o)| o);
        let (file, doc, item) =
            origin.map_or((String::new(), 0, None), |o| (o.file, o.doc, o.item));
        r.errors.push(ObjectError {
            file,
            doc,
            item,
            kind: Some("Service".into()),
            namespace: Some(key.0),
            name: Some(key.1),
            message,
        });
    }
}
