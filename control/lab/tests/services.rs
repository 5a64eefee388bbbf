//! End-to-end tests of Services and NAT in the lab (issue 4): ClusterIP from pods on every
//! node, NodePort and externalIPs from the external host, `externalTrafficPolicy: Local`,
//! masquerade to the outside, hairpin, reject without endpoints, scaling down under a
//! running transfer, session affinity, and a mixed cluster with a kernel (kube-proxy) node.
//!
//! They need root, iproute2, iptables and the binaries `xdplane` and `xdplane-cni` built
//! into the same target directory (`cargo build -p xdplane-agent -p xdplane-cni`), or in
//! `XDPLANE_BIN_DIR`. Each test uses its own lab (`s<pid><letter>`), a copy of the default
//! manifests plus the test Services below in a temporary directory, and a guard that runs
//! `lab down` and removes the directory on drop, also when the test fails.
#![forbid(unsafe_code)]

mod common;
use common::require_binaries;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xdplane_control::model::{Model, Service};
use xdplane_lab::lab::{self, LabConfig, PodSpec, UpOptions};
use xdplane_lab::netns;
use xdplane_lab::state::LabState;
use xdplane_lab::testpod::{Ask, Proto};

/// Labs with agents run one at a time (2 cores shared with other work).
static AGENT_LABS: Mutex<()> = Mutex::new(());

/// The external host's address on the fabric.
const EXT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 254);
/// An externalIP of the test set (TEST-NET-3: never routed anywhere real; the external
/// host routes it to a node inside the lab).
const EXTERNAL_IP: &str = "203.0.113.10";

/// Services (and one Deployment) added to the default manifests for these tests. Node
/// placement (round-robin over workloads in name order, 3 nodes): bulk-0..2 on server1..3,
/// demo2 (app=myapp) on server1 and server2, deployment (app=nginx) on server3 and server1.
const TEST_SET: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web-local
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector:
    app: myapp
  ports:
  - protocol: TCP
    port: 8080
    targetPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web-cluster
spec:
  type: NodePort
  selector:
    app: nginx
  ports:
  - name: http
    protocol: TCP
    port: 8081
    targetPort: 80
  - name: udp
    protocol: UDP
    port: 8081
    targetPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: nobody
spec:
  type: NodePort
  selector:
    app: nobody
  ports:
  - name: tcp
    protocol: TCP
    port: 80
  - name: udp
    protocol: UDP
    port: 53
---
apiVersion: v1
kind: Service
metadata:
  name: sticky
spec:
  selector:
    app: myapp
  sessionAffinity: ClientIP
  ports:
  - protocol: TCP
    port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: dns-like
spec:
  selector:
    app: nginx
  ports:
  - protocol: UDP
    port: 5353
    targetPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: ext-ip
spec:
  selector:
    app: nginx
  externalIPs:
  - 203.0.113.10
  ports:
  - protocol: TCP
    port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: solo-svc
spec:
  selector:
    app: solo
  ports:
  - protocol: TCP
    port: 80
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: bulk
spec:
  replicas: 3
  selector:
    matchLabels:
      app: bulk
  template:
    metadata:
      labels:
        app: bulk
    spec:
      containers:
      - name: echo
        image: echo
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: bulk-svc
spec:
  selector:
    app: bulk
  ports:
  - protocol: TCP
    port: 80
"#;

fn lab_name(tag: char) -> String {
    format!("s{}{tag}", std::process::id())
}

/// Runs `lab down` and removes the test's manifest directory when dropped.
struct LabGuard {
    cfg: LabConfig,
    manifests: PathBuf,
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.cfg) {
            eprintln!("lab down {} in the guard: {e:#}", self.cfg.name);
        }
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

/// The default manifests (deploy/lab) plus [`TEST_SET`], in a fresh directory.
fn test_manifests(tag: char) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/lab");
    let dir = std::env::temp_dir().join(format!("xdplane-svc-{}{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    std::fs::write(dir.join("zz-test-services.yaml"), TEST_SET).unwrap();
    dir
}

fn up(tag: char, kernel_nodes: &[&str]) -> (LabGuard, LabState) {
    let manifests = test_manifests(tag);
    let cfg = LabConfig::new(&lab_name(tag))
        .unwrap()
        .with_bin_dir(require_binaries());
    let guard = LabGuard {
        cfg: cfg.clone(),
        manifests: manifests.clone(),
    };
    let st = lab::up(
        &cfg,
        &UpOptions {
            nodes: 3,
            kernel_nodes: kernel_nodes.iter().map(|s| s.to_string()).collect(),
            manifests: Some(manifests),
            verbose: true,
            ..UpOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("lab up {}: {e:#}", cfg.name));
    (guard, st)
}

/// The Services as the agents see them (clusterIPs and nodePorts allocated).
fn model(st: &LabState) -> Model {
    xdplane_control::manifest::load_dir(&st.manifests_dir)
        .unwrap()
        .model
}

fn service(m: &Model, name: &str) -> Service {
    m.services
        .get(&("default".to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("no Service {name}"))
        .clone()
}

fn cluster_ip(m: &Model, name: &str) -> String {
    service(m, name).cluster_ips[0].to_string()
}

fn node_port(m: &Model, name: &str, idx: usize) -> u16 {
    service(m, name).ports[idx]
        .node_port
        .unwrap_or_else(|| panic!("{name} has no nodePort"))
}

/// Names of the pods whose labels have `app=<app>`.
fn pods_of(st: &LabState, app: &str) -> BTreeSet<String> {
    st.pods
        .iter()
        .filter(|p| p.labels.get("app").map(String::as_str) == Some(app))
        .map(|p| p.name.clone())
        .collect()
}

fn pod_on(st: &LabState, app: &str, node: &str) -> Option<String> {
    st.pods
        .iter()
        .find(|p| p.node == node && p.labels.get("app").map(String::as_str) == Some(app))
        .map(|p| p.name.clone())
}

fn node_ip(st: &LabState, node: &str) -> Ipv4Addr {
    st.node(node).unwrap().ip
}

/// The first address of a node's pod CIDR (the pods' gateway, the source of SNAT towards
/// pods).
fn pod_gateway(st: &LabState, node: &str) -> Ipv4Addr {
    let cidr = st.node(node).unwrap().pod_cidr.clone().unwrap();
    let net: Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
    Ipv4Addr::from(u32::from(net) + 1)
}

/// The last `"…"` of a probe's output: the HTTP body or the UDP reply.
fn answer(out: &str) -> Option<String> {
    let end = out.rfind('"')?;
    let start = out[..end].rfind('"')?;
    Some(out[start + 1..end].to_string())
}

/// One probe; panics with the output when it does not succeed. Returns the answer.
fn ask(st: &LabState, from: &str, ip: &str, port: u16, proto: Proto, what: Ask) -> String {
    let r = lab::probe_ask_in(st, from, ip, port, proto, what, Duration::from_secs(3)).unwrap();
    assert!(r.ok, "{}", r.line());
    answer(&r.output).unwrap_or_else(|| panic!("no answer in {}", r.line()))
}

fn ip_of_answer(a: &str) -> Ipv4Addr {
    a.split(':')
        .next()
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("not IP:PORT: {a:?}"))
}

/// ClusterIPs of myservice and nginx-svc (the seed's Services) from a pod on every node:
/// every answer comes from a backend of the right Service, and both backends of each answer
/// over a series of connections (TCP, and UDP through a UDP Service). The client keeps its
/// address (no masquerade pod → ClusterIP → pod).
#[test]
fn cluster_ip_from_pods_on_every_node() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, st) = up('a', &[]);
    let m = model(&st);
    let myapp = pods_of(&st, "myapp");
    let nginx = pods_of(&st, "nginx");
    assert_eq!(myapp.len(), 2);
    assert_eq!(nginx.len(), 2);
    let slices = std::fs::read_to_string(st.manifests_dir.join("endpointslices.yaml")).unwrap();
    for p in st.pods.iter().filter(|p| !p.name.starts_with("bulk")) {
        assert!(
            slices.contains(&p.ip().unwrap().to_string()),
            "{} in the slices:\n{slices}",
            p.name
        );
    }
    for node in ["server1", "server2", "server3"] {
        let client = pod_on(&st, "bulk", node).expect("a bulk pod on every node");
        for (svc, backends) in [("myservice", &myapp), ("nginx-svc", &nginx)] {
            let ip = cluster_ip(&m, svc);
            let mut seen = BTreeSet::new();
            for _ in 0..24 {
                let a = ask(&st, &client, &ip, 80, Proto::Tcp, Ask::Hostname);
                assert!(
                    backends.contains(&a),
                    "{svc} from {node}: {a} is not a backend"
                );
                seen.insert(a);
            }
            assert_eq!(&seen, backends, "{svc} from {node}: every backend answers");
            let me = st.pods.iter().find(|p| p.name == client).unwrap().ip();
            let seen_ip = ip_of_answer(&ask(&st, &client, &ip, 80, Proto::Tcp, Ask::Clientip));
            assert_eq!(
                Some(seen_ip),
                me,
                "{svc} from {node}: the backend sees the pod"
            );
        }
        let udp = cluster_ip(&m, "dns-like");
        let a = ask(&st, &client, &udp, 5353, Proto::Udp, Ask::Hostname);
        assert!(nginx.contains(&a), "dns-like from {node}: {a}");
    }
    drop(guard);
}

/// NodePort (eTP Cluster) on every node's address from the external host, also on server2,
/// which has no endpoint of the Service: answered by a backend, which sees the receiving
/// node's pod gateway (SNAT), never the external host. UDP NodePort alike. externalIPs: the
/// external host reaches 203.0.113.10 (routed to a node inside the lab).
#[test]
fn node_port_and_external_ip_from_the_external_host() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, st) = up('b', &[]);
    let m = model(&st);
    let nginx = pods_of(&st, "nginx");
    assert!(
        pod_on(&st, "nginx", "server2").is_none(),
        "server2 has no nginx pod"
    );
    let tcp_np = node_port(&m, "web-cluster", 0);
    let udp_np = node_port(&m, "web-cluster", 1);
    for node in ["server1", "server2", "server3"] {
        let nip = node_ip(&st, node).to_string();
        let a = ask(&st, "ext", &nip, tcp_np, Proto::Tcp, Ask::Hostname);
        assert!(nginx.contains(&a), "NodePort on {node}: {a}");
        let seen = ip_of_answer(&ask(&st, "ext", &nip, tcp_np, Proto::Tcp, Ask::Clientip));
        assert_eq!(
            seen,
            pod_gateway(&st, node),
            "NodePort (eTP Cluster) on {node}: the backend sees the node's SNAT address"
        );
        assert_ne!(seen, EXT_IP);
        let a = ask(&st, "ext", &nip, udp_np, Proto::Udp, Ask::Hostname);
        assert!(nginx.contains(&a), "UDP NodePort on {node}: {a}");
    }
    // externalIPs: the lab routes the address to a node on the external host only.
    let ext = st.ext.as_ref().unwrap();
    let want = format!("{EXTERNAL_IP}/32 via {}", node_ip(&st, "server1"));
    assert!(ext.routes.contains(&want), "{:?}", ext.routes);
    let in_ext = netns::ip_in_output(&ext.netns, &["-4", "route", "show"]).unwrap();
    assert!(
        in_ext.contains(&format!("{EXTERNAL_IP} via 192.168.50.11 dev eth0")),
        "{in_ext}"
    );
    let a = ask(&st, "ext", EXTERNAL_IP, 80, Proto::Tcp, Ask::Hostname);
    assert!(nginx.contains(&a), "externalIP: {a}");
    // No route to it anywhere but in the external host.
    for n in &st.nodes {
        let routes = netns::ip_in_output(&n.netns, &["-4", "route", "show"]).unwrap();
        assert!(!routes.contains(EXTERNAL_IP), "{}: {routes}", n.name);
    }
    drop(guard);
}

/// `externalTrafficPolicy: Local`: a NodePort on a node with an endpoint is answered by that
/// node's own pod, which sees the external host's address.
#[test]
fn external_traffic_policy_local_keeps_the_client_address() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, st) = up('c', &[]);
    let m = model(&st);
    let np = node_port(&m, "web-local", 0);
    for node in ["server1", "server2"] {
        let local = pod_on(&st, "myapp", node).expect("a myapp pod");
        let nip = node_ip(&st, node).to_string();
        for _ in 0..6 {
            let a = ask(&st, "ext", &nip, np, Proto::Tcp, Ask::Hostname);
            assert_eq!(a, local, "eTP Local on {node}: only the local endpoint");
        }
        let seen = ip_of_answer(&ask(&st, "ext", &nip, np, Proto::Tcp, Ask::Clientip));
        assert_eq!(
            seen, EXT_IP,
            "eTP Local on {node}: the client address is kept"
        );
    }
    // server3 runs no myapp pod: its nodePort is not served by another node's endpoint
    // (new flows are dropped, as kube-proxy does).
    assert!(pod_on(&st, "myapp", "server3").is_none());
    let r = lab::probe_in(
        &st,
        "ext",
        &node_ip(&st, "server3").to_string(),
        np,
        Proto::Tcp,
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(!r.ok, "{}", r.line());
    drop(guard);
}

/// Pods reach the external host; it sees the node's address (flannel's ip-masq), TCP and
/// UDP, from every node.
#[test]
fn pods_reach_the_external_host_from_the_node_address() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, st) = up('d', &[]);
    for node in ["server1", "server2", "server3"] {
        let client = pod_on(&st, "bulk", node).unwrap();
        for proto in [Proto::Tcp, Proto::Udp] {
            let a = ask(&st, &client, "ext", 8080, proto, Ask::Clientip);
            assert_eq!(
                ip_of_answer(&a),
                node_ip(&st, node),
                "{client} on {node} → ext over {proto:?}"
            );
        }
        assert_eq!(
            ask(&st, &client, "ext", 80, Proto::Tcp, Ask::Hostname),
            "ext"
        );
    }
    // The external host records its clients: the three node addresses, nothing from pods.
    let log = std::fs::read_to_string(&st.ext.as_ref().unwrap().log).unwrap();
    for node in ["server1", "server2", "server3"] {
        let ip = node_ip(&st, node);
        assert!(
            log.contains(&format!("testpod ext: tcp 8080 from {ip}:")),
            "{log}"
        );
        assert!(
            log.contains(&format!("testpod ext: udp 8080 from {ip}:")),
            "{log}"
        );
    }
    assert!(!log.contains("from 10.244."), "{log}");
    drop(guard);
}

/// Hairpin: the only backend of a Service reaches itself through the ClusterIP; the answer
/// comes from itself, to the node's pod gateway (the SNAT that makes the reply come back
/// through the dataplane).
#[test]
fn hairpin_through_the_cluster_ip() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, _) = up('e', &[]);
    let cfg = guard.cfg.clone();
    let solo = lab::add_pod(
        &cfg,
        &PodSpec {
            labels: BTreeMap::from([("app".to_string(), "solo".to_string())]),
            ..PodSpec::new("solo", "server2", vec![80])
        },
    )
    .unwrap();
    let st = cfg.load().unwrap();
    let m = model(&st);
    let ip = cluster_ip(&m, "solo-svc");
    for _ in 0..4 {
        assert_eq!(ask(&st, "solo", &ip, 80, Proto::Tcp, Ask::Hostname), "solo");
    }
    let seen = ip_of_answer(&ask(&st, "solo", &ip, 80, Proto::Tcp, Ask::Clientip));
    assert_eq!(seen, pod_gateway(&st, "server2"));
    // Another pod reaching it keeps its own address.
    let other = pod_on(&st, "bulk", "server1").unwrap();
    let seen = ip_of_answer(&ask(&st, &other, &ip, 80, Proto::Tcp, Ask::Clientip));
    let other_ip = st.pods.iter().find(|p| p.name == other).unwrap().ip();
    assert_eq!(Some(seen), other_ip);
    // Deleted, it leaves the Service: TCP is refused.
    lab::del_pod(&cfg, &solo.name).unwrap();
    let st = cfg.load().unwrap();
    let r = lab::probe_in(&st, &other, &ip, 80, Proto::Tcp, Duration::from_secs(2)).unwrap();
    assert!(!r.ok && r.output.contains("refused"), "{}", r.line());
    drop(guard);
}

/// A Service without endpoints refuses at once: TCP connect fails with ECONNREFUSED well
/// under a second, UDP gets ICMP port unreachable.
#[test]
fn service_without_endpoints_refuses_at_once() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, st) = up('f', &[]);
    let m = model(&st);
    let ip = cluster_ip(&m, "nobody");
    let slices = std::fs::read_to_string(st.manifests_dir.join("endpointslices.yaml")).unwrap();
    assert!(
        slices.contains("kubernetes.io/service-name: nobody"),
        "{slices}"
    );
    for node in ["server1", "server3"] {
        let client = pod_on(&st, "bulk", node).unwrap();
        let t0 = Instant::now();
        let r = lab::probe_in(&st, &client, &ip, 80, Proto::Tcp, Duration::from_secs(5)).unwrap();
        let took = t0.elapsed();
        assert!(!r.ok, "{}", r.line());
        assert!(r.output.contains("not connected: refused"), "{}", r.line());
        assert!(took < Duration::from_millis(900), "refused after {took:?}");
        let t0 = Instant::now();
        let r = lab::probe_in(&st, &client, &ip, 53, Proto::Udp, Duration::from_secs(5)).unwrap();
        let took = t0.elapsed();
        assert!(!r.ok, "{}", r.line());
        assert!(
            r.output.contains("refused (ICMP port unreachable)"),
            "{}",
            r.line()
        );
        assert!(took < Duration::from_millis(1900), "refused after {took:?}");
    }
    // Its NodePorts, from the external host, alike.
    let (tcp_np, udp_np) = (node_port(&m, "nobody", 0), node_port(&m, "nobody", 1));
    for node in ["server1", "server2"] {
        let nip = node_ip(&st, node).to_string();
        let t0 = Instant::now();
        let r =
            lab::probe_in(&st, "ext", &nip, tcp_np, Proto::Tcp, Duration::from_secs(5)).unwrap();
        let took = t0.elapsed();
        assert!(r.output.contains("not connected: refused"), "{}", r.line());
        assert!(took < Duration::from_millis(900), "refused after {took:?}");
        let r =
            lab::probe_in(&st, "ext", &nip, udp_np, Proto::Udp, Duration::from_secs(5)).unwrap();
        assert!(
            r.output.contains("refused (ICMP port unreachable)"),
            "{}",
            r.line()
        );
    }
    drop(guard);
}

/// Which bulk pod holds the established connection to port 80 (`ss` in each pod's
/// namespace).
fn backend_of_transfer(st: &LabState) -> Vec<String> {
    let mut out = Vec::new();
    for p in st
        .pods
        .iter()
        .filter(|p| p.labels.get("app").map(String::as_str) == Some("bulk"))
    {
        let o = Command::new(netns::ip_bin())
            .args([
                "netns",
                "exec",
                &p.netns,
                "ss",
                "-Htn",
                "state",
                "established",
                "( sport = :80 )",
            ])
            .output()
            .unwrap();
        if !String::from_utf8_lossy(&o.stdout).trim().is_empty() {
            out.push(p.name.clone());
        }
    }
    out
}

/// Kills the transfer child when dropped (a failing test leaves no process behind).
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A long TCP transfer to the ClusterIP keeps going while the Deployment is scaled down
/// from 3 to 1 with the transfer's backend surviving: the other endpoints leave the slices
/// and their pods are deleted; every byte comes back.
#[test]
fn scale_down_during_a_long_transfer() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, st) = up('g', &[]);
    let cfg = guard.cfg.clone();
    let m = model(&st);
    let ip: Ipv4Addr = service(&m, "bulk-svc").cluster_ips[0];
    assert_eq!(pods_of(&st, "bulk").len(), 3);
    // Which bulk pod stays at 1 replica: the one the scheduler places for replicas = 1.
    let mut m1 = m.clone();
    m1.workloads
        .get_mut(&("default".to_string(), "bulk".to_string()))
        .unwrap()
        .replicas = 1;
    let nodes: Vec<String> = st.nodes.iter().map(|n| n.name.clone()).collect();
    let survivor = lab::plan_pods(&m1, &nodes, &mut vec![])
        .unwrap()
        .into_iter()
        .find(|p| p.labels.get("app").map(String::as_str) == Some("bulk"))
        .unwrap()
        .name;
    let client = pod_on(&st, "myapp", "server2").unwrap();
    let client_ns = st
        .pods
        .iter()
        .find(|p| p.name == client)
        .unwrap()
        .netns
        .clone();
    // 12 MiB at 3 MiB/s: about 4 s. Retry until Maglev puts the flow on the survivor (a new
    // source port each time).
    let bytes: u64 = 12 << 20;
    let mut running = None;
    // One in three lands there; 30 tries miss with a chance of (2/3)^30 ≈ 5e-6.
    for attempt in 0..30 {
        // The previous attempt's connection is gone first (killed: its RST closes it).
        let deadline = Instant::now() + Duration::from_secs(3);
        while !backend_of_transfer(&st).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let argv = lab::probe_argv(
            &st,
            std::net::SocketAddrV4::new(ip, 80),
            Proto::Tcp,
            Ask::Hostname,
            Some(bytes),
            Some(3 << 20),
            Duration::from_secs(60),
        );
        let child = Command::new(netns::ip_bin())
            .args(["netns", "exec", &client_ns])
            .args(&argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let child = ChildGuard(child);
        let mut on = vec![];
        let deadline = Instant::now() + Duration::from_secs(3);
        while on.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            on = backend_of_transfer(&st);
        }
        assert_eq!(
            on.len(),
            1,
            "attempt {attempt}: the transfer runs on one backend"
        );
        if on[0] == survivor {
            running = Some(child);
            break;
        }
        drop(child);
    }
    let mut child = running.expect("no transfer landed on the surviving backend in 30 tries");
    std::thread::sleep(Duration::from_millis(500));
    let rep = lab::scale(&cfg, "bulk", 1).unwrap();
    assert_eq!(rep.removed.len(), 2, "{rep:?}");
    assert!(rep.added.is_empty());
    assert!(rep.removed.iter().all(|p| p.name != survivor));
    let st2 = cfg.load().unwrap();
    assert_eq!(pods_of(&st2, "bulk"), BTreeSet::from([survivor.clone()]));
    for p in &rep.removed {
        assert!(!netns::exists(&p.netns), "{} is gone", p.name);
    }
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the transfer is still running after the scale-down"
    );
    let out = ChildGuard::wait(&mut child);
    assert!(out.0, "transfer failed: {}", out.1);
    assert!(out.1.contains("echoed back intact"), "{}", out.1);
    // New connections go to the survivor only.
    for _ in 0..5 {
        assert_eq!(
            ask(
                &st2,
                &client,
                &ip.to_string(),
                80,
                Proto::Tcp,
                Ask::Hostname
            ),
            survivor
        );
    }
    // Scaling up again brings the others back into the Service.
    let rep = lab::scale(&cfg, "bulk", 3).unwrap();
    assert_eq!(rep.added.len(), 2);
    let st3 = cfg.load().unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        seen.insert(ask(
            &st3,
            &client,
            &ip.to_string(),
            80,
            Proto::Tcp,
            Ask::Hostname,
        ));
    }
    assert_eq!(seen, pods_of(&st3, "bulk"));
    drop(guard);
}

impl ChildGuard {
    /// Waits for the child; (success, stdout + stderr).
    fn wait(&mut self) -> (bool, String) {
        use std::io::Read;
        let mut out = String::new();
        if let Some(mut o) = self.0.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut out);
        }
        let status = self.0.wait().unwrap();
        (status.success(), out)
    }
}

/// `sessionAffinity: ClientIP`: every connection of one client goes to the same backend.
#[test]
fn session_affinity_keeps_a_client_on_one_backend() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, st) = up('h', &[]);
    let m = model(&st);
    let ip = cluster_ip(&m, "sticky");
    let myapp = pods_of(&st, "myapp");
    for node in ["server1", "server2", "server3"] {
        let client = pod_on(&st, "bulk", node).unwrap();
        let first = ask(&st, &client, &ip, 80, Proto::Tcp, Ask::Hostname);
        assert!(myapp.contains(&first));
        for _ in 0..16 {
            assert_eq!(
                ask(&st, &client, &ip, 80, Proto::Tcp, Ask::Hostname),
                first,
                "{client} sticks to {first}"
            );
        }
    }
    drop(guard);
}

/// A Service added to the lab's manifests by hand reaches the agents with `lab sync`: its
/// EndpointSlices are written, its ClusterIP answers from every backend; removed (and
/// synced again), its slices go and the address answers no more.
#[test]
fn a_service_added_by_hand_works_after_sync() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, st) = up('i', &[]);
    let file = st.manifests_dir.join("late.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: late\nspec:\n  clusterIP: 10.96.200.200\n  selector:\n    app: bulk\n  ports:\n  - protocol: TCP\n    port: 9090\n    targetPort: 80\n",
    )
    .unwrap();
    let r = lab::sync(&guard.cfg).unwrap();
    assert_eq!(r.services.endpoints["default/late"].len(), 3, "{r:?}");
    let bulk = pods_of(&st, "bulk");
    let client = pod_on(&st, "myapp", "server1").unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..24 {
        let a = ask(
            &st,
            &client,
            "10.96.200.200",
            9090,
            Proto::Tcp,
            Ask::Hostname,
        );
        assert!(bulk.contains(&a), "{a}");
        seen.insert(a);
    }
    assert_eq!(seen, bulk);
    std::fs::remove_file(&file).unwrap();
    let r = lab::sync(&guard.cfg).unwrap();
    assert!(!r.services.endpoints.contains_key("default/late"));
    let slices = std::fs::read_to_string(st.manifests_dir.join("endpointslices.yaml")).unwrap();
    assert!(!slices.contains("service-name: late"), "{slices}");
    let p = lab::probe_in(
        &st,
        &client,
        "10.96.200.200",
        9090,
        Proto::Tcp,
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(!p.ok, "{}", p.line());
    drop(guard);
}

/// A mixed cluster: server3 runs the kernel's datapath with kube-proxy's iptables rules
/// (loaded by the lab from the same Services and slices). ClusterIPs work from pods of every
/// node to backends anywhere, NodePorts on the kernel node from the external host, and the
/// kernel node's pods reach the external host from its address (flanneld's ip-masq).
#[test]
fn mixed_cluster_with_a_kube_proxy_node() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        xdplane_lab::kernel::have_iptables(),
        "the kernel node loads kube-proxy's rules with iptables-restore: apt-get install iptables"
    );
    let (guard, st) = up('k', &["server3"]);
    let m = model(&st);
    let k3 = st.node("server3").unwrap();
    assert!(k3.is_kernel());
    let rules = netns::exec_in(&k3.netns, "iptables-save", &["-t", "nat"]).unwrap();
    assert!(rules.contains("-A KUBE-SERVICES"), "{rules}");
    assert!(rules.contains(&cluster_ip(&m, "myservice")), "{rules}");
    assert!(rules.contains("FLANNEL-POSTRTG"), "{rules}");
    let myapp = pods_of(&st, "myapp");
    let nginx = pods_of(&st, "nginx");
    for node in ["server1", "server2", "server3"] {
        let client = pod_on(&st, "bulk", node).unwrap();
        for (svc, backends) in [("myservice", &myapp), ("nginx-svc", &nginx)] {
            let ip = cluster_ip(&m, svc);
            let mut seen = BTreeSet::new();
            for _ in 0..20 {
                let a = ask(&st, &client, &ip, 80, Proto::Tcp, Ask::Hostname);
                assert!(backends.contains(&a), "{svc} from {node}: {a}");
                seen.insert(a);
            }
            assert_eq!(&seen, backends, "{svc} from {node}");
        }
    }
    let np = node_port(&m, "web-cluster", 0);
    let a = ask(
        &st,
        "ext",
        &node_ip(&st, "server3").to_string(),
        np,
        Proto::Tcp,
        Ask::Hostname,
    );
    assert!(nginx.contains(&a), "NodePort on the kernel node: {a}");
    let client = pod_on(&st, "bulk", "server3").unwrap();
    let a = ask(&st, &client, "ext", 8080, Proto::Tcp, Ask::Clientip);
    assert_eq!(ip_of_answer(&a), node_ip(&st, "server3"));
    // Hairpin on the kernel node: its nginx pod reaches itself through the ClusterIP.
    let own = pod_on(&st, "nginx", "server3").expect("an nginx pod on server3");
    let ip = cluster_ip(&m, "nginx-svc");
    let mut hit = false;
    for _ in 0..30 {
        if ask(&st, &own, &ip, 80, Proto::Tcp, Ask::Hostname) == own {
            hit = true;
            break;
        }
    }
    assert!(hit, "{own} never answered itself through {ip}");
    // ClientIP affinity by kube-proxy (`-m recent`).
    let sticky = cluster_ip(&m, "sticky");
    let first = ask(&st, &client, &sticky, 80, Proto::Tcp, Ask::Hostname);
    for _ in 0..8 {
        assert_eq!(
            ask(&st, &client, &sticky, 80, Proto::Tcp, Ask::Hostname),
            first
        );
    }
    // eTP Local on the kernel node, which has no myapp pod: kube-proxy drops.
    let r = lab::probe_in(
        &st,
        "ext",
        &node_ip(&st, "server3").to_string(),
        node_port(&m, "web-local", 0),
        Proto::Tcp,
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(!r.ok, "{}", r.line());
    // The no-endpoints Service is rejected by kube-proxy too.
    let r = lab::probe_in(
        &st,
        &client,
        &cluster_ip(&m, "nobody"),
        80,
        Proto::Tcp,
        Duration::from_secs(3),
    )
    .unwrap();
    assert!(!r.ok && r.output.contains("refused"), "{}", r.line());
    let name = guard.cfg.name.clone();
    drop(guard);
    assert!(
        netns::list_prefixed(&format!("{name}-"))
            .unwrap()
            .is_empty()
    );
}
