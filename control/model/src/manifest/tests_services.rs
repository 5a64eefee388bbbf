//! Loader tests for Services and EndpointSlices, and the allocators.

use super::*;
use crate::model::{Protocol, ServiceType, TargetPort, TrafficPolicy};
use std::net::Ipv4Addr;

/// Loads `text` and runs the allocators, as `load_dir` does.
fn load(text: &str) -> LoadResult {
    let mut r = LoadResult::default();
    load_str("t.yaml", text, &mut r);
    allocate(&mut r, &Allocation::default());
    r
}

fn errors(r: &LoadResult) -> Vec<String> {
    r.errors.iter().map(ToString::to_string).collect()
}

fn key(ns: &str, n: &str) -> (String, String) {
    (ns.to_string(), n.to_string())
}

/// A one-port Service document with `extra` lines under `spec:` (indented by 2).
fn svc(name: &str, spec_extra: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    \
         app: {name}\n{spec_extra}"
    )
}

fn one_error(r: &LoadResult) -> String {
    assert_eq!(r.errors.len(), 1, "{:#?}", errors(r));
    r.errors[0].to_string()
}

#[test]
fn service_defaults_as_the_api_server() {
    let r = load(&svc("web", "  ports:\n  - port: 80\n"));
    assert!(r.errors.is_empty(), "{:?}", errors(&r));
    let s = &r.model.services[&key("default", "web")];
    assert_eq!(s.service_type, ServiceType::ClusterIP);
    assert_eq!(s.ports.len(), 1);
    let p = &s.ports[0];
    assert_eq!(p.protocol, Protocol::Tcp);
    assert_eq!(p.target_port, TargetPort::Number(80));
    assert_eq!(p.node_port, None);
    assert_eq!(p.name, None);
    assert_eq!(s.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(s.internal_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(s.session_affinity_timeout, None);
    // A clusterIP from 10.96.0.0/12, not the kubernetes Service's .1.
    assert_eq!(s.cluster_ips.len(), 1);
    let cidr: crate::model::Ipv4Cidr = "10.96.0.0/12".parse().unwrap();
    assert!(cidr.contains(s.cluster_ips[0]));
    assert_ne!(s.cluster_ips[0], Ipv4Addr::new(10, 96, 0, 1));
    assert!(r.model.namespaces.contains_key("default"));
}

#[test]
fn service_fields() {
    let text = "apiVersion: v1
kind: Service
metadata:
  name: dns
  namespace: kube-system
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, 'fd00::a']
  ipFamilies: [IPv4, IPv6]
  selector: {k8s-app: kube-dns}
  externalIPs: [203.0.113.7, '2001:db8::7']
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53, nodePort: 30053}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: dns-tcp}
  - {name: metrics, port: 9153, protocol: SCTP, targetPort: 0}
status:
  loadBalancer:
    ingress:
    - ip: 198.51.100.10
    - ip: 198.51.100.11
      ipMode: Proxy
    - hostname: lb.example.com
    - ip: '2001:db8::10'
";
    let r = load(text);
    assert!(r.errors.is_empty(), "{:?}", errors(&r));
    let s = &r.model.services[&key("kube-system", "dns")];
    assert_eq!(s.service_type, ServiceType::LoadBalancer);
    assert_eq!(s.cluster_ips, [Ipv4Addr::new(10, 96, 0, 10)]);
    assert_eq!(s.external_ips, [Ipv4Addr::new(203, 0, 113, 7)]);
    assert_eq!(s.load_balancer_ips, [Ipv4Addr::new(198, 51, 100, 10)]);
    assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(s.internal_traffic_policy, TrafficPolicy::Local);
    assert_eq!(s.session_affinity_timeout, Some(60));
    assert_eq!(s.ports[0].node_port, Some(30053));
    assert_eq!(s.ports[0].protocol, Protocol::Udp);
    // TCP 53 shares UDP 53's nodePort (same port number in one Service).
    assert_eq!(s.ports[1].node_port, Some(30053));
    assert_eq!(s.ports[1].target_port, TargetPort::Name("dns-tcp".into()));
    assert_eq!(s.ports[2].target_port, TargetPort::Number(9153));
    assert_eq!(s.ports[2].protocol, Protocol::Sctp);
    let np = s.ports[2].node_port.unwrap();
    assert!((30000..=32767).contains(&np) && np != 30053);
    let notes: Vec<String> = r.notes.iter().map(ToString::to_string).collect();
    assert_eq!(notes.len(), 4, "{notes:#?}");
    assert!(notes[0].starts_with("t.yaml#1 Service kube-system/dns: spec.clusterIPs[1]: IPv6"));
    assert!(notes.iter().any(|n| n.contains("ipMode Proxy")));
    assert!(notes.iter().any(|n| n.contains("spec.externalIPs[1]")));
    assert!(
        notes
            .iter()
            .any(|n| n.contains("status.loadBalancer.ingress[3]"))
    );

    // ClientIP without a config: the default timeout.
    let r = load(&svc(
        "sticky",
        "  sessionAffinity: ClientIP\n  ports:\n  - port: 80\n",
    ));
    assert_eq!(
        r.model.services[&key("default", "sticky")].session_affinity_timeout,
        Some(DEFAULT_AFFINITY_TIMEOUT)
    );
}

#[test]
fn headless_and_external_name_services() {
    let r = load(&format!(
        "{}{}",
        svc("db", "  clusterIP: None\n"),
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec:\n  type: \
         ExternalName\n  externalName: db.example.com.\n  ports: [{port: 5432}]\n"
    ));
    assert!(r.errors.is_empty(), "{:?}", errors(&r));
    let db = &r.model.services[&key("default", "db")];
    assert!(db.cluster_ips.is_empty() && db.is_headless());
    assert!(db.ports.is_empty());
    let ext = &r.model.services[&key("default", "ext")];
    assert_eq!(ext.service_type, ServiceType::ExternalName);
    assert!(ext.cluster_ips.is_empty() && ext.ports.is_empty());
}

#[test]
fn bad_services_are_reported_whole() {
    let cases: &[(&str, &str)] = &[
        (
            "  clusterIP: 10.96.0.300\n  ports: [{port: 80}]\n",
            "spec.clusterIP: Invalid value: \"10.96.0.300\": must be a valid IP address",
        ),
        (
            "  ports: [{port: 0}]\n",
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        ),
        (
            "  ports: [{port: 80, protocol: tcp}]\n",
            "spec.ports[0].protocol: Unsupported value: \"tcp\": supported values: \"SCTP\", \
             \"TCP\", \"UDP\"",
        ),
        (
            "  ports: [{name: a, port: 80}, {name: a, port: 81}]\n",
            "spec.ports[1].name: Duplicate value: \"a\"",
        ),
        (
            "  ports: [{port: 80}, {port: 81}]\n",
            "spec.ports[0].name: Required value; spec.ports[1].name: Required value",
        ),
        (
            "  ports: [{name: a, port: 80}, {name: b, port: 80}]\n",
            "spec.ports[1]: Duplicate value: 80/TCP",
        ),
        (
            "  type: NodePort\n  ports: [{port: 80, nodePort: 80}]\n",
            "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid \
             range. The range of valid ports is 30000-32767",
        ),
        (
            "  ports: [{port: 80, nodePort: 30080}]\n",
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
        ),
        (
            "  ports: [{port: 80, targetPort: '8080'}]\n",
            "spec.ports[0].targetPort: Invalid value: \"8080\": must contain at least one letter",
        ),
        (
            "  ports: [{port: 80, targetPort: 70000}]\n",
            "spec.ports[0].targetPort: Invalid value: 70000",
        ),
        (
            "  type: Magic\n  ports: [{port: 80}]\n",
            "spec.type: Unsupported value: \"Magic\"",
        ),
        ("  ports: []\n", "spec.ports: Required value"),
        (
            "  externalTrafficPolicy: Local\n  ports: [{port: 80}]\n",
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for \
             externally-accessible services",
        ),
        (
            "  type: NodePort\n  externalTrafficPolicy: Nearest\n  ports: [{port: 80}]\n",
            "spec.externalTrafficPolicy: Unsupported value: \"Nearest\"",
        ),
        (
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: \
             0}}\n  ports: [{port: 80}]\n",
            "timeoutSeconds: Invalid value: 0: must be greater than 0 and less than 86400",
        ),
        (
            "  sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}\n  ports: [{port: 80}]\n",
            "spec.sessionAffinityConfig: Forbidden",
        ),
        (
            "  externalIPs: [127.0.0.1]\n  ports: [{port: 80}]\n",
            "spec.externalIPs[0]: Invalid value: \"127.0.0.1\": may not be in the loopback",
        ),
        (
            "  clusterIPs: ['fd00::1']\n  ports: [{port: 80}]\n",
            "an IPv6-only Service is not supported",
        ),
        (
            "  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n",
            "spec.ipFamilies: Invalid value",
        ),
        (
            "  type: NodePort\n  clusterIP: None\n  ports: [{port: 80}]\n",
            "spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for NodePort",
        ),
        (
            "  clusterIP: 10.96.0.5\n  clusterIPs: [10.96.0.6]\n  ports: [{port: 80}]\n",
            "spec.clusterIPs[0]: Invalid value: \"10.96.0.6\": must match `clusterIP`",
        ),
        (
            "  clusterIP: 10.200.0.5\n  ports: [{port: 80}]\n",
            "spec.clusterIPs[0]: Invalid value: \"10.200.0.5\": failed to allocate IP \
             10.200.0.5: provided IP is not in the valid range. The range of valid IPs is \
             10.96.0.0/12",
        ),
        (
            "  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n",
            "provided IP is already allocated (reserved for the Service default/kubernetes)",
        ),
        (
            "  allocateLoadBalancerNodePorts: false\n  ports: [{port: 80}]\n",
            "spec.allocateLoadBalancerNodePorts: Forbidden",
        ),
    ];
    for (extra, want) in cases {
        let r = load(&svc("bad", extra));
        let e = one_error(&r);
        assert!(e.starts_with("t.yaml#1 Service default/bad: "), "{e}");
        assert!(e.contains(want), "{extra}\n  got: {e}\n  want: {want}");
        assert!(r.model.services.is_empty(), "{extra}: half-applied");
    }
    // A name that is not a DNS-1035 label (starts with a digit).
    let r = load(&svc("1web", "  ports: [{port: 80}]\n"));
    assert!(one_error(&r).contains("metadata.name: Invalid value: \"1web\""));
    // ExternalName needs its name.
    let r =
        load("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {type: ExternalName}\n");
    assert!(one_error(&r).contains("spec.externalName: Required value"));
    // A wrong apiVersion and a wrongly typed field.
    let r = load("apiVersion: v2\nkind: Service\nmetadata: {name: x}\nspec: {}\n");
    assert!(one_error(&r).contains("apiVersion: Unsupported value: \"v2\""));
    let r = load(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: eighty}]}\n",
    );
    assert!(one_error(&r).contains("spec.ports[0].port: invalid type"));
}

#[test]
fn allocation_is_deterministic_and_collision_free() {
    // 300 Services without clusterIP, 20 NodePorts, plus explicit ones in the middle of the
    // dynamic band; loaded in two different file orders.
    let mut docs = Vec::new();
    for i in 0..300 {
        docs.push(svc(&format!("s{i}"), "  ports: [{port: 80}]\n"));
    }
    for i in 0..20 {
        docs.push(svc(
            &format!("np{i}"),
            "  type: NodePort\n  ports: [{name: a, port: 80}, {name: b, port: 81, protocol: UDP}]\n",
        ));
    }
    docs.push(svc(
        "fixed",
        "  clusterIP: 10.100.0.7\n  ports: [{port: 80}]\n",
    ));
    docs.push(svc(
        "fixed-np",
        "  type: NodePort\n  ports: [{port: 80, nodePort: 31000}]\n",
    ));
    docs.push(
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: kubernetes}\nspec:\n  ports: \
         [{name: https, port: 443, targetPort: 6443}]\n"
            .to_string(),
    );
    let a = load(&docs.concat());
    docs.reverse();
    let b = load(&docs.concat());
    assert!(a.errors.is_empty(), "{:?}", errors(&a));
    assert_eq!(a.model.services, b.model.services);

    let mut ips = std::collections::BTreeSet::new();
    let mut ports = std::collections::BTreeSet::new();
    for s in a.model.services.values() {
        assert_eq!(s.cluster_ips.len(), 1, "{}", s.name);
        assert!(ips.insert(s.cluster_ips[0]), "{} reuses an IP", s.name);
        for p in &s.ports {
            if let Some(np) = p.node_port {
                assert!((30000..=32767).contains(&np));
                assert!(ports.insert(np), "{} reuses nodePort {np}", s.name);
            }
        }
    }
    assert_eq!(ips.len(), 323);
    assert_eq!(ports.len(), 41);
    let s = |n: &str| &a.model.services[&key("default", n)];
    assert_eq!(s("kubernetes").cluster_ips, [Ipv4Addr::new(10, 96, 0, 1)]);
    assert_eq!(s("fixed").cluster_ips, [Ipv4Addr::new(10, 100, 0, 7)]);
    assert_eq!(s("fixed-np").ports[0].node_port, Some(31000));
    // Dynamic values come from the upper band (past the first 256 addresses, past 30085).
    for svc in a.model.services.values() {
        let ip = u32::from(svc.cluster_ips[0]);
        if !["kubernetes", "fixed"].contains(&svc.name.as_str()) {
            assert!(ip > u32::from(Ipv4Addr::new(10, 96, 1, 0)), "{}", svc.name);
        }
        for p in &svc.ports {
            if svc.name.starts_with("np") {
                assert!(p.node_port.unwrap() >= 30086);
            }
        }
    }
    // Adding a Service moves no other one (no collision on its way).
    let mut more = docs.clone();
    more.push(svc("newcomer", "  ports: [{port: 80}]\n"));
    let c = load(&more.concat());
    for (k, v) in &a.model.services {
        assert_eq!(&c.model.services[k], v);
    }
    // Allocating again changes nothing.
    let mut again = a.clone();
    allocate(&mut again, &Allocation::default());
    assert_eq!(again.model.services, a.model.services);
}

#[test]
fn explicit_collisions_keep_the_first_by_name() {
    let r = load(&format!(
        "{}{}{}{}",
        svc("b", "  clusterIP: 10.96.5.5\n  ports: [{port: 80}]\n"),
        svc("a", "  clusterIP: 10.96.5.5\n  ports: [{port: 80}]\n"),
        svc(
            "d",
            "  type: NodePort\n  ports: [{port: 80, nodePort: 30500}]\n"
        ),
        svc(
            "c",
            "  type: NodePort\n  ports: [{port: 80, nodePort: 30500}]\n"
        ),
    ));
    let e = errors(&r);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].starts_with("t.yaml#1 Service default/b: spec.clusterIPs[0]"));
    assert!(e[0].ends_with("provided IP is already allocated (to default/a)"));
    assert!(e[1].starts_with("t.yaml#3 Service default/d: spec.ports[0].nodePort"));
    assert!(e[1].ends_with("provided port is already allocated (to default/c)"));
    assert!(r.model.services.contains_key(&key("default", "a")));
    assert!(!r.model.services.contains_key(&key("default", "b")));
    // A dynamic IP never lands on an explicit one.
    assert!(
        r.model
            .services
            .values()
            .all(|s| s.name == "a" || s.cluster_ips[0] != Ipv4Addr::new(10, 96, 5, 5))
    );
}

#[test]
fn small_ranges_fill_up_and_report() {
    let mut r = LoadResult::default();
    let mut text = String::new();
    for i in 0..4 {
        text.push_str(&svc(&format!("s{i}"), "  ports: [{port: 80}]\n"));
    }
    text.push_str(&svc(
        "fixed",
        "  clusterIP: 10.0.0.4\n  ports: [{port: 80}]\n",
    ));
    load_str("t.yaml", &text, &mut r);
    // A /29: hosts .1-.6, .1 reserved for kubernetes: 5 left, all used, the explicit .4
    // by its owner only.
    let cfg = Allocation {
        service_cidr: "10.0.0.0/29".parse().unwrap(),
        node_ports: (30000, 30001),
    };
    allocate(&mut r, &cfg);
    assert!(r.errors.is_empty(), "{:?}", errors(&r));
    let mut got: Vec<Ipv4Addr> = r
        .model
        .services
        .values()
        .map(|s| s.cluster_ips[0])
        .collect();
    got.sort();
    assert_eq!(
        got,
        (2..=6)
            .map(|i| Ipv4Addr::new(10, 0, 0, i))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        r.model.services[&key("default", "fixed")].cluster_ips,
        [Ipv4Addr::new(10, 0, 0, 4)]
    );
    load_str(
        "u.yaml",
        &svc(
            "more",
            "  type: NodePort\n  ports: [{name: a, port: 1}, {name: b, port: 2}, {name: c, port: 3}]\n",
        ),
        &mut r,
    );
    allocate(&mut r, &cfg);
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("u.yaml#1 Service default/more: spec.clusterIPs: Internal error"),
        "{e:?}"
    );
}

#[test]
fn node_port_range_full() {
    let mut r = LoadResult::default();
    load_str(
        "t.yaml",
        &svc(
            "np",
            "  type: NodePort\n  ports: [{name: a, port: 1}, {name: b, port: 2}, {name: c, port: 3}]\n",
        ),
        &mut r,
    );
    allocate(
        &mut r,
        &Allocation {
            node_ports: (30000, 30001),
            ..Allocation::default()
        },
    );
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("failed to allocate a nodePort: range is full (30000-30001)"));
    assert!(r.model.services.is_empty());
}

#[test]
fn load_balancer_without_node_ports() {
    let r = load(&svc(
        "lb",
        "  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  ports: [{port: 80}]\n",
    ));
    assert!(r.errors.is_empty(), "{:?}", errors(&r));
    assert_eq!(
        r.model.services[&key("default", "lb")].ports[0].node_port,
        None
    );
}

const SLICE: &str = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080}
- {name: raw, protocol: UDP}
endpoints:
- addresses: [10.244.1.2]
  nodeName: server1
- addresses: [10.244.2.3, 10.244.2.4]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: server2
- addresses: [10.244.3.4]
  conditions: {ready: false}
";

#[test]
fn endpoint_slice_fields_and_defaults() {
    let r = load(SLICE);
    assert!(r.errors.is_empty(), "{:?}", errors(&r));
    let s = &r.model.endpoint_slices[&key("default", "web-abcde")];
    assert_eq!(s.service, "web");
    assert_eq!(s.ports.len(), 2);
    assert_eq!(s.ports[0].protocol, Protocol::Tcp);
    assert_eq!(s.ports[0].port, Some(8080));
    assert_eq!(s.ports[1].port, None);
    assert_eq!(s.ports[1].protocol, Protocol::Udp);
    let e = &s.endpoints;
    assert!(e[0].ready && e[0].serving && !e[0].terminating);
    assert_eq!(e[0].node_name.as_deref(), Some("server1"));
    assert!(!e[1].ready && e[1].serving && e[1].terminating);
    assert_eq!(e[1].addresses.len(), 2);
    // serving defaults to ready.
    assert!(!e[2].ready && !e[2].serving && e[2].node_name.is_none());
}

#[test]
fn bad_endpoint_slices() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "addressType: IPv4",
            "addressType: IPv6",
            "addressType: Invalid value: \"IPv6\": only IPv4 EndpointSlices are supported",
        ),
        (
            "addressType: IPv4",
            "addressType: Foo",
            "addressType: Unsupported value: \"Foo\"",
        ),
        (
            "  labels: {kubernetes.io/service-name: web}",
            "  labels: {app: web}",
            "metadata.labels[kubernetes.io/service-name]: Required value",
        ),
        (
            "- {name: http, port: 8080}",
            "- {name: http, port: 0}",
            "ports[0].port: Invalid value: 0",
        ),
        (
            "- {name: raw, protocol: UDP}",
            "- {name: http, protocol: UDP}",
            "ports[1].name: Duplicate value: \"http\"",
        ),
        (
            "- {name: raw, protocol: UDP}",
            "- {name: raw, protocol: QUIC}",
            "ports[1].protocol: Unsupported value: \"QUIC\"",
        ),
        (
            "[10.244.1.2]",
            "[10.244.1.256]",
            "endpoints[0].addresses[0]: Invalid value: \"10.244.1.256\": must be a valid IPv4",
        ),
        (
            "[10.244.1.2]",
            "['fd00::2']",
            "endpoints[0].addresses[0]: Invalid value: \"fd00::2\": must be a valid IPv4",
        ),
        (
            "[10.244.1.2]",
            "[]",
            "endpoints[0].addresses: Required value",
        ),
        (
            "  nodeName: server1",
            "  nodeName: Server_1",
            "endpoints[0].nodeName: Invalid value: \"Server_1\"",
        ),
    ];
    for (from, to, want) in cases {
        assert!(SLICE.contains(from), "{from}");
        let r = load(&SLICE.replacen(from, to, 1));
        let e = one_error(&r);
        assert!(
            e.starts_with("t.yaml#1 EndpointSlice default/web-abcde: "),
            "{e}"
        );
        assert!(e.contains(want), "{to}\n  got: {e}\n  want: {want}");
        assert!(r.model.endpoint_slices.is_empty());
    }
    let r = load(&SLICE.replace("discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"));
    assert!(one_error(&r).contains("apiVersion: Unsupported value"));
    // The same slice twice: the first stays.
    let r = load(&format!("{SLICE}---\n{SLICE}"));
    assert!(one_error(&r).contains("duplicate EndpointSlice: already defined at t.yaml#1"));
    assert_eq!(r.model.endpoint_slices.len(), 1);
}
