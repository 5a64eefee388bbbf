//! Compiling Services and EndpointSlices into the snapshot's service table
//! (`docs/design/services.md` §4).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use xdplane_control::compile::{CompileError, CompileWarning, LocalState, UplinkInfo, compile};
use xdplane_control::endpoints::{endpoint_slices_with_pods, endpoint_slices_yaml};
use xdplane_control::manifest::{Allocation, LoadResult, allocate, load_str};
use xdplane_control::model::{ContainerPort, Model, Pod, Protocol};
use xdplane_pipeline::tables::services::{
    BackendSet, Frontend, FrontendKind, PROTO_TCP, PROTO_UDP, Services,
};
use xdplane_pipeline::{DEFAULT_SNAT_PORTS, Snapshot};

/// Two flannel vxlan nodes, server1 (10.244.1.0/24) and server2 (10.244.2.0/24), and
/// flannel's network config.
fn cluster() -> String {
    let mut s = String::new();
    for n in 1..=2 {
        let _ = write!(
            s,
            "\napiVersion: v1\nkind: Node\nmetadata:\n  name: server{n}\n  annotations: \
             {{flannel.alpha.coreos.com/backend-data: '{{\"VNI\":1,\"VtepMAC\":\"02:00:00:00:00:0{n}\"}}'}}\n\
             spec: {{podCIDR: 10.244.{n}.0/24}}\nstatus: {{addresses: [{{type: InternalIP, \
             address: 192.168.50.1{n}}}]}}\n---"
        );
    }
    s.push_str(
        "\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: kube-flannel-cfg, namespace: \
         kube-system}\ndata:\n  net-conf.json: '{\"Network\": \"10.244.0.0/16\", \"Backend\": \
         {\"Type\": \"vxlan\"}}'\n",
    );
    s
}

/// A slice of Service `svc` with one port and endpoints `(ip, node, ready, serving,
/// terminating)`.
fn slice(
    name: &str,
    svc: &str,
    port: (&str, u16, &str),
    eps: &[([u8; 4], &str, bool, bool, bool)],
) -> String {
    let mut s = format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  \
         labels: {{kubernetes.io/service-name: {svc}}}\naddressType: IPv4\nports:\n- {{name: \
         '{}', port: {}, protocol: {}}}\nendpoints:\n",
        port.0, port.1, port.2
    );
    for (ip, node, ready, serving, terminating) in eps {
        let ip = Ipv4Addr::from(*ip);
        let _ = write!(
            s,
            "- addresses: [{ip}]\n  nodeName: {node}\n  conditions: {{ready: {ready}, serving: \
             {serving}, terminating: {terminating}}}\n"
        );
    }
    s
}

fn load(text: &str) -> Model {
    let mut r = LoadResult::default();
    load_str("t.yaml", &format!("{}{text}", cluster()), &mut r);
    allocate(&mut r, &Allocation::default());
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    r.model
}

fn server(n: u8) -> LocalState {
    LocalState {
        node: format!("server{n}"),
        ..Default::default()
    }
}

/// A third node with no endpoints of its own.
fn server3() -> LocalState {
    let mut local = server(3);
    local.pod_cidr_override = Some("10.244.3.0/24".parse().unwrap());
    local
}

/// Service `web`'s slice with one ready endpoint on server1 and one on server2.
fn web_on_two_nodes() -> String {
    slice(
        "web-1",
        "web",
        ("http", 8080, "TCP"),
        &[
            ([10, 244, 1, 2], "server1", true, true, false),
            ([10, 244, 2, 2], "server2", true, true, false),
        ],
    )
}

fn build(m: &Model, local: &LocalState) -> (Snapshot, Vec<CompileWarning>) {
    compile(m, local, 1).expect("compiles")
}

fn fe(s: &Services, ip: [u8; 4], port: u16, proto: u8) -> (&Frontend, &BackendSet) {
    s.lookup(Ipv4Addr::from(ip), port, proto)
        .unwrap_or_else(|| panic!("no frontend {ip:?}:{port}/{proto}"))
}

/// `ip:port` of a set, with `*` marking local backends.
fn backends(set: &BackendSet) -> Vec<String> {
    set.backends
        .iter()
        .map(|b| format!("{}:{}{}", b.ip, b.port, if b.local { "*" } else { "" }))
        .collect()
}

const WEB: &str = "
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.20
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
";

#[test]
fn cluster_ip_with_endpoints_on_two_nodes() {
    let m = load(&format!("{WEB}{}", web_on_two_nodes()));
    let (snap, w) = build(&m, &server(1));
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(snap.services.len(), 1);
    let (f, set) = fe(&snap.services, [10, 96, 0, 20], 80, PROTO_TCP);
    assert_eq!(f.name, "default/web:http");
    assert_eq!(f.kind, FrontendKind::ClusterIp);
    assert!(!f.masquerade);
    assert_eq!(f.affinity_timeout_s, 0);
    assert_eq!(f.service_port, 0);
    assert_eq!(backends(set), ["10.244.1.2:8080*", "10.244.2.2:8080"]);
    assert!(
        snap.services
            .lookup(Ipv4Addr::new(10, 96, 0, 20), 80, PROTO_UDP)
            .is_none()
    );
    // From server2 the other backend is the local one.
    let (snap2, _) = build(&m, &server(2));
    let (_, set2) = fe(&snap2.services, [10, 96, 0, 20], 80, PROTO_TCP);
    assert_eq!(backends(set2), ["10.244.1.2:8080", "10.244.2.2:8080*"]);
    // A node without endpoints of its own still gets every backend (iTP Cluster).
    let (snap3, _) = build(&m, &server3());
    assert_eq!(
        backends(fe(&snap3.services, [10, 96, 0, 20], 80, PROTO_TCP).1),
        ["10.244.1.2:8080", "10.244.2.2:8080"]
    );
}

#[test]
fn internal_traffic_policy_local() {
    let m = load(&format!(
        "{}{}",
        WEB.replace("  selector:", "  internalTrafficPolicy: Local\n  selector:"),
        web_on_two_nodes()
    ));
    let (snap, _) = build(&m, &server(1));
    assert_eq!(
        backends(fe(&snap.services, [10, 96, 0, 20], 80, PROTO_TCP).1),
        ["10.244.1.2:8080*"]
    );
    let (snap3, _) = build(&m, &server3());
    let (f3, set3) = fe(&snap3.services, [10, 96, 0, 20], 80, PROTO_TCP);
    assert!(set3.backends.is_empty());
    // Endpoints elsewhere, none here: dropped, not rejected (kube-proxy).
    assert!(f3.drop_when_empty);
    assert!(
        !fe(&snap.services, [10, 96, 0, 20], 80, PROTO_TCP)
            .0
            .drop_when_empty
    );
}

#[test]
fn external_traffic_policy_local_without_local_endpoints_drops() {
    let m = np_model("Local");
    let (snap, _) = build(&m, &server3());
    let s = &snap.services;
    for (ip, port) in [([203, 0, 113, 5], 80), ([198, 51, 100, 7], 80)] {
        let (f, set) = fe(s, ip, port, PROTO_TCP);
        assert!(set.backends.is_empty(), "{ip:?}");
        assert!(f.drop_when_empty, "{ip:?}");
    }
    // The ClusterIP (iTP Cluster) still has both.
    let (c, cset) = fe(s, [10, 96, 0, 30], 80, PROTO_TCP);
    assert_eq!(cset.backends.len(), 2);
    assert!(!c.drop_when_empty);
}

const NODEPORT: &str = "
---
apiVersion: v1
kind: Service
metadata: {name: np}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.30
  externalTrafficPolicy: ETP
  externalIPs: [203.0.113.5]
  selector: {app: np}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
status:
  loadBalancer:
    ingress: [{ip: 198.51.100.7}]
";

fn np_model(etp: &str) -> Model {
    load(&format!(
        "{}{}",
        NODEPORT.replace("ETP", etp),
        slice(
            "np-1",
            "np",
            ("", 8080, "TCP"),
            &[
                ([10, 244, 1, 2], "server1", true, true, false),
                ([10, 244, 2, 2], "server2", true, true, false),
            ]
        )
    ))
}

#[test]
fn external_traffic_policy_cluster_masquerades_to_every_backend() {
    let m = np_model("Cluster");
    let (snap, w) = build(&m, &server(1));
    assert!(w.is_empty(), "{w:?}");
    let s = &snap.services;
    assert_eq!(s.len(), 4);
    let (c, cset) = fe(s, [10, 96, 0, 30], 80, PROTO_TCP);
    assert_eq!(
        (c.kind, c.masquerade, c.name.as_str()),
        (FrontendKind::ClusterIp, false, "default/np:80")
    );
    // NodePort on the Node's InternalIP (no uplink given).
    let (n, nset) = fe(s, [192, 168, 50, 11], 30080, PROTO_TCP);
    assert_eq!((n.kind, n.masquerade), (FrontendKind::NodePort, true));
    let (x, _) = fe(s, [203, 0, 113, 5], 80, PROTO_TCP);
    assert_eq!((x.kind, x.masquerade), (FrontendKind::ExternalIp, true));
    let (l, _) = fe(s, [198, 51, 100, 7], 80, PROTO_TCP);
    assert_eq!((l.kind, l.masquerade), (FrontendKind::LoadBalancer, true));
    assert_eq!(backends(nset), ["10.244.1.2:8080*", "10.244.2.2:8080"]);
    // One Service port: one id; identical backend lists share one set.
    assert!([n, x, l].iter().all(|f| f.service_port == c.service_port));
    assert_eq!(c.set, n.set);
    assert_eq!(snap.services.sets.len(), 1);
    assert_eq!(backends(cset), backends(nset));
}

#[test]
fn external_traffic_policy_local_keeps_the_client_and_local_backends() {
    let m = np_model("Local");
    let mut local = server(2);
    local.uplink = Some(UplinkInfo {
        port: 0,
        ip: Ipv4Addr::new(192, 168, 50, 112),
        prefix: 24,
        mac: [2, 0, 0, 0, 0, 2],
        mtu: 1500,
        gateway: None,
    });
    let (snap, _) = build(&m, &local);
    let s = &snap.services;
    // The uplink's address wins over the InternalIP.
    assert!(
        s.lookup(Ipv4Addr::new(192, 168, 50, 12), 30080, PROTO_TCP)
            .is_none()
    );
    for (ip, port) in [
        ([192, 168, 50, 112], 30080),
        ([203, 0, 113, 5], 80),
        ([198, 51, 100, 7], 80),
    ] {
        let (f, set) = fe(s, ip, port, PROTO_TCP);
        assert!(!f.masquerade, "{ip:?}");
        assert_eq!(backends(set), ["10.244.2.2:8080*"], "{ip:?}");
    }
    // The ClusterIP keeps every backend (iTP Cluster).
    assert_eq!(
        backends(fe(s, [10, 96, 0, 30], 80, PROTO_TCP).1),
        ["10.244.1.2:8080", "10.244.2.2:8080*"]
    );
    assert_eq!(s.sets.len(), 2);
}

#[test]
fn serving_terminating_fallback() {
    let eps_all_terminating = [
        ([10, 244, 1, 2], "server1", false, true, true),
        ([10, 244, 2, 2], "server2", false, false, true),
        ([10, 244, 2, 3], "server2", false, true, false),
    ];
    let m = load(&format!(
        "{WEB}{}",
        slice("web-1", "web", ("http", 8080, "TCP"), &eps_all_terminating)
    ));
    let (snap, _) = build(&m, &server(1));
    // Nothing ready: the serving and terminating one.
    assert_eq!(
        backends(fe(&snap.services, [10, 96, 0, 20], 80, PROTO_TCP).1),
        ["10.244.1.2:8080*"]
    );
    // One ready endpoint in another slice: only it.
    let m = load(&format!(
        "{WEB}{}{}",
        slice("web-1", "web", ("http", 8080, "TCP"), &eps_all_terminating),
        slice(
            "web-2",
            "web",
            ("http", 8080, "TCP"),
            &[([10, 244, 2, 9], "server2", true, true, false)]
        )
    ));
    let (snap, _) = build(&m, &server(1));
    assert_eq!(
        backends(fe(&snap.services, [10, 96, 0, 20], 80, PROTO_TCP).1),
        ["10.244.2.9:8080"]
    );
}

#[test]
fn no_endpoints_means_an_empty_set() {
    let m = load(WEB);
    let (snap, w) = build(&m, &server(1));
    assert!(w.is_empty());
    let (f, set) = fe(&snap.services, [10, 96, 0, 20], 80, PROTO_TCP);
    assert_eq!(f.name, "default/web:http");
    assert!(set.backends.is_empty());
    // No endpoints anywhere: rejected, not dropped.
    assert!(!f.drop_when_empty);
    assert!(set.pick(12345).is_none());
}

#[test]
fn session_affinity_timeout() {
    let m = load(&WEB.replace(
        "  selector:",
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}\n  selector:",
    ));
    let (snap, _) = build(&m, &server(1));
    assert_eq!(
        fe(&snap.services, [10, 96, 0, 20], 80, PROTO_TCP)
            .0
            .affinity_timeout_s,
        600
    );
    let m = load(&WEB.replace("  selector:", "  sessionAffinity: ClientIP\n  selector:"));
    let (snap, _) = build(&m, &server(1));
    assert_eq!(
        fe(&snap.services, [10, 96, 0, 20], 80, PROTO_TCP)
            .0
            .affinity_timeout_s,
        10800
    );
}

#[test]
fn multi_port_service_with_named_ports_from_the_controller() {
    let m = load(
        "
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.10
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: dns}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: dns-tcp}
  - {name: metrics, port: 9153, targetPort: 9153}
",
    );
    let pod = |name: &str, ip: [u8; 4], node: &str, tcp_port: u16| Pod {
        namespace: "kube-system".into(),
        name: name.into(),
        labels: [("k8s-app".to_string(), "kube-dns".to_string())].into(),
        node_name: Some(node.into()),
        ip: Some(Ipv4Addr::from(ip)),
        ports: vec![
            ContainerPort {
                name: Some("dns".into()),
                port: 53,
                protocol: Protocol::Udp,
            },
            ContainerPort {
                name: Some("dns-tcp".into()),
                port: tcp_port,
                protocol: Protocol::Tcp,
            },
        ],
        host_network: false,
    };
    let pods = [
        pod("coredns-a", [10, 244, 1, 5], "server1", 53),
        pod("coredns-b", [10, 244, 2, 5], "server2", 5353),
    ];
    // Slices written as YAML and read back, as the lab does.
    let yaml = endpoint_slices_yaml(&endpoint_slices_with_pods(&m, &pods));
    let mut r = LoadResult::default();
    load_str("t.yaml", &format!("{}{yaml}", cluster()), &mut r);
    load_str(
        "s.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: kube-system}\nspec:\n  \
         clusterIP: 10.96.0.10\n  selector: {k8s-app: kube-dns}\n  ports:\n  - {name: dns, port: \
         53, protocol: UDP, targetPort: dns}\n  - {name: dns-tcp, port: 53, protocol: TCP, \
         targetPort: dns-tcp}\n  - {name: metrics, port: 9153, targetPort: 9153}\n",
        &mut r,
    );
    allocate(&mut r, &Allocation::default());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.model.endpoint_slices.len(), 2);
    let (snap, _) = build(&r.model, &server(1));
    let s = &snap.services;
    let (u, uset) = fe(s, [10, 96, 0, 10], 53, PROTO_UDP);
    assert_eq!(u.name, "kube-system/dns:dns");
    assert_eq!(backends(uset), ["10.244.1.5:53*", "10.244.2.5:53"]);
    let (t, tset) = fe(s, [10, 96, 0, 10], 53, PROTO_TCP);
    assert_eq!(t.name, "kube-system/dns:dns-tcp");
    assert_eq!(backends(tset), ["10.244.1.5:53*", "10.244.2.5:5353"]);
    let (mfe, mset) = fe(s, [10, 96, 0, 10], 9153, PROTO_TCP);
    assert_eq!(backends(mset), ["10.244.1.5:9153*", "10.244.2.5:9153"]);
    let ids = [u.service_port, t.service_port, mfe.service_port];
    assert_eq!(ids, [0, 1, 2]);
}

#[test]
fn duplicate_frontends_are_reported_and_the_first_kept() {
    let m = load(
        "
---
apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  externalIPs: [203.0.113.9]
  selector: {app: a}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec:
  externalIPs: [203.0.113.9]
  selector: {app: b}
  ports: [{name: web, port: 80}, {name: alt, port: 81}]
",
    );
    let (snap, w) = build(&m, &server(1));
    let text: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "frontend 203.0.113.9:80/tcp is claimed by Service port default/a:80 and Service port \
          default/b:web; the first keeps it, the second is left out there"
        ]
    );
    assert_eq!(
        fe(&snap.services, [203, 0, 113, 9], 80, PROTO_TCP).0.name,
        "default/a:80"
    );
    assert_eq!(
        fe(&snap.services, [203, 0, 113, 9], 81, PROTO_TCP).0.name,
        "default/b:alt"
    );
    // Both Services keep their ClusterIPs: a's port and b's two ports, ids 0, 1, 2.
    let mut ids: Vec<u32> = snap
        .services
        .frontends
        .iter()
        .map(|f| f.service_port)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, [0, 1, 2]);
}

#[test]
fn headless_and_external_name_produce_nothing() {
    let m = load(
        "
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: db.example.com}
",
    );
    let (snap, w) = build(&m, &server(1));
    assert!(w.is_empty());
    assert!(snap.services.is_empty());
}

#[test]
fn node_tables_for_nat() {
    let m = load(WEB);
    let (snap, _) = build(&m, &server(1));
    assert_eq!(snap.node.cluster_net, Ipv4Addr::new(10, 244, 0, 0));
    assert_eq!(snap.node.cluster_prefix, 16);
    assert!(snap.node.masquerade);
    assert_eq!(snap.node.snat_ports, DEFAULT_SNAT_PORTS);
    let mut local = server(1);
    local.masquerade = Some(false);
    local.snat_ports = Some((62000, 62999));
    let (snap, _) = build(&m, &local);
    assert!(!snap.node.masquerade);
    assert_eq!(snap.node.snat_ports, (62000, 62999));
    local.snat_ports = Some((63000, 62999));
    assert_eq!(
        compile(&m, &local, 1).unwrap_err(),
        CompileError::BadSnatPorts {
            lo: 63000,
            hi: 62999
        }
    );
    // No net-conf: the cluster network is unknown (0.0.0.0/0 means masquerade is off in the
    // dataplane).
    let mut m2 = m.clone();
    m2.net_conf = None;
    let (snap, _) = build(&m2, &server(1));
    assert_eq!(
        (snap.node.cluster_net, snap.node.cluster_prefix),
        (Ipv4Addr::UNSPECIFIED, 0)
    );
}

#[test]
fn node_ports_without_a_node_address_are_reported() {
    let mut m = np_model("Cluster");
    m.nodes.get_mut("server1").unwrap().internal_ip = None;
    let (snap, w) = build(&m, &server(1));
    assert_eq!(snap.services.len(), 3);
    assert!(matches!(
        &w[..],
        [CompileWarning::NodePortsWithoutNodeIp { count: 1, first, .. }] if first == "default/np:80"
    ));
}

/// The perf lab's scale: 10,000 Services with 1–3 endpoints each (ClusterIP; every tenth a
/// NodePort). Compiling must stay fast in debug builds too. The model is built in code (the
/// loader's share is measured by `xdplane lab`/perf; parsing 20,000 YAML documents in a
/// debug build alone takes seconds).
#[test]
fn ten_thousand_services() {
    use xdplane_control::model::{
        Endpoint, EndpointPort, EndpointSlice, Service, ServicePort, ServiceType, TargetPort,
        TrafficPolicy,
    };
    let mut m = load("");
    let nodes = ["server1", "server2"];
    for i in 0..10_000u32 {
        let name = format!("s{i}");
        let [_, a, b, c] = (i + 0x0a60_1000).to_be_bytes();
        let svc = Service {
            namespace: "default".into(),
            name: name.clone(),
            service_type: if i % 10 == 0 {
                ServiceType::NodePort
            } else {
                ServiceType::ClusterIP
            },
            cluster_ips: vec![Ipv4Addr::new(10, a, b, c)],
            ports: vec![ServicePort {
                name: None,
                protocol: Protocol::Tcp,
                port: 80,
                target_port: TargetPort::Number(8080),
                node_port: (i % 10 == 0).then(|| 30000 + (i / 10) as u16),
            }],
            selector: [("app".to_string(), name.clone())].into(),
            external_ips: vec![],
            load_balancer_ips: vec![],
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            session_affinity_timeout: None,
        };
        let n = 1 + (i % 3) as usize;
        let endpoints = (0..n)
            .map(|k| {
                let host = i * 3 + k as u32;
                let [_, a, b, c] = (host + (10 << 24)).to_be_bytes();
                Endpoint {
                    addresses: vec![Ipv4Addr::new(10, a, b, c)],
                    ready: true,
                    serving: true,
                    terminating: false,
                    node_name: Some(nodes[k % 2].to_string()),
                }
            })
            .collect();
        let slice = EndpointSlice {
            namespace: "default".into(),
            name: format!("{name}-x"),
            service: name.clone(),
            ports: vec![EndpointPort {
                name: None,
                protocol: Protocol::Tcp,
                port: Some(8080),
            }],
            endpoints,
        };
        m.services.insert(("default".into(), name.clone()), svc);
        m.endpoint_slices
            .insert(("default".into(), format!("{name}-x")), slice);
    }
    let t = std::time::Instant::now();
    let (snap, w) = build(&m, &server(1));
    let compiled = t.elapsed();
    assert!(w.is_empty(), "{:?}", &w[..w.len().min(3)]);
    // 10,000 ClusterIPs + 1,000 NodePorts.
    assert_eq!(snap.services.len(), 11_000);
    assert_eq!(snap.services.sets.len(), 10_000);
    let total: usize = snap.services.sets.iter().map(|s| s.backends.len()).sum();
    assert_eq!(total, 3334 + 3333 * 2 + 3333 * 3);
    let local: usize = snap
        .services
        .sets
        .iter()
        .map(|s| s.backends.iter().filter(|b| b.local).count())
        .sum();
    assert_eq!(local, 3334 + 3333 + 3333 * 2);
    let ids: std::collections::BTreeSet<u32> = snap
        .services
        .frontends
        .iter()
        .map(|f| f.service_port)
        .collect();
    assert_eq!(ids.len(), 10_000);
    assert_eq!(ids.last(), Some(&9_999));
    let (f, set) = fe(&snap.services, [192, 168, 50, 11], 30999, PROTO_TCP);
    assert_eq!(f.name, "default/s9990:80");
    assert_eq!(set.backends.len(), 1);
    eprintln!("10k services: compile {compiled:?}");
    // Generous for a debug build on a shared 2-core machine (about 2 s there; a release
    // build takes about a fifth).
    assert!(compiled.as_secs() < 20, "compile took {compiled:?}");
}

/// The lab's manifests (`deploy/lab`): every Service loads, the lab's pods give slices, and
/// every node compiles its service table without a conflict.
#[test]
fn lab_manifests_compile() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/lab");
    let r = xdplane_control::manifest::load_dir(&dir).unwrap();
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    let names: Vec<&str> = r.model.services.keys().map(|k| k.1.as_str()).collect();
    for want in [
        "myservice",
        "nginx-svc",
        "myapp-local",
        "nginx-sticky",
        "nginx-udp",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let nodes: Vec<String> = r.model.nodes.keys().cloned().collect();
    // The lab's pods with addresses from their nodes' pod CIDRs.
    let mut pods = xdplane_control::schedule::lab_pods(&r.model, &nodes);
    let mut next: std::collections::BTreeMap<String, u32> = Default::default();
    for p in &mut pods {
        let node = p.node_name.clone().unwrap();
        let cidr = r.model.nodes[&node].pod_cidr.unwrap();
        let n = next.entry(node).or_insert(2);
        p.ip = Some(Ipv4Addr::from(u32::from(cidr.network()) + *n));
        *n += 1;
    }
    let slices = endpoint_slices_with_pods(&r.model, &pods);
    let mut r2 = LoadResult::default();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    // Reverse order: allocation does not depend on the order files are read in.
    files.sort();
    files.reverse();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        load_str(&f.display().to_string(), &text, &mut r2);
    }
    load_str(
        "endpointslices.yaml",
        &endpoint_slices_yaml(&slices),
        &mut r2,
    );
    allocate(&mut r2, &Allocation::default());
    assert!(r2.errors.is_empty(), "{:#?}", r2.errors);
    // The same allocation from the directory and from the files one by one.
    assert_eq!(r2.model.services, r.model.services);
    for node in &nodes {
        let n: u8 = node.trim_start_matches("server").parse().unwrap();
        let (snap, w) = build(&r2.model, &server(n));
        assert!(
            !w.iter().any(|w| matches!(
                w,
                CompileWarning::DuplicateFrontend { .. } | CompileWarning::BackendSetFailed { .. }
            )),
            "{w:?}"
        );
        let node_ip = r2.model.nodes[node].internal_ip.unwrap();
        // myapp-local: NodePort 30080 with eTP Local: this node's myapp pods only.
        let (f, set) = fe(&snap.services, node_ip.octets(), 30080, PROTO_TCP);
        assert!(!f.masquerade);
        assert!(set.backends.iter().all(|b| b.local), "{node}: {set:?}");
        let (_, all) = snap
            .services
            .lookup(
                r2.model.services[&("default".into(), "myservice".into())].cluster_ips[0],
                80,
                PROTO_TCP,
            )
            .unwrap();
        assert_eq!(all.backends.len(), 2, "myservice has demo2's two pods");
        let sticky = r2.model.services[&("default".into(), "nginx-sticky".into())].cluster_ips[0];
        let (f, _) = snap.services.lookup(sticky, 80, PROTO_TCP).unwrap();
        assert_eq!(f.affinity_timeout_s, 300);
        let (_, lb) = fe(&snap.services, [203, 0, 113, 20], 80, PROTO_TCP);
        assert_eq!(lb.backends.len(), 2);
    }
}
