//! The service scenario end to end (needs root): the kube-proxy rules of
//! `xdplane_control::kubeproxy` are accepted by `iptables-restore` (1 and 10,000 Services, and
//! every rule kind), the kernel datapath with those rules delivers exactly what pod A sends
//! to the ClusterIP, DNATed to pod B on the other node, the scenario measures and reports,
//! and nothing is left behind. The xdplane side needs the agent binary (`XDPLANE_BIN_DIR`,
//! or `cargo build -p xdplane-agent` into the same target directory) and is `#[ignore]`d:
//! run it with `-- --ignored`.
mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;
use xdplane_control::kubeproxy::{self, KubeProxyOpts};
use xdplane_control::model::{
    Endpoint, EndpointPort, EndpointSlice, Model, Protocol, Service, ServicePort, ServiceType,
    TargetPort, TrafficPolicy,
};
use xdplane_perf::generator::Rate;
use xdplane_perf::scenarios::remote_pod::{NODE_A, NODE_B};
use xdplane_perf::scenarios::service::{self, Datapath, ServiceOpts};

/// The tests share the machine's two CPUs and this process's autogroup: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn need_root() {
    common::need_root("the service tests need root");
}

/// A network namespace and a scratch directory of one test; both removed on drop.
struct Scratch {
    ns: String,
    dir: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let ns = format!("svt{}{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&ns);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = Scratch { ns, dir };
        run("ip", &["netns", "add", &s.ns]).unwrap();
        s
    }

    /// Runs `prog args…` inside the namespace.
    fn exec(&self, prog: &str, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["netns", "exec", self.ns.as_str(), prog];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Writes `text` to a file and returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.ns]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{prog} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A model with every kind of rule: ClusterIP with 2 endpoints, ClientIP affinity, a
/// LoadBalancer with externalIP, NodePort and eTP Local, iTP Local, SCTP, and a Service
/// without endpoints.
fn every_kind() -> Model {
    let mut m = Model::default();
    let mut add = |name: &str,
                   ip: [u8; 4],
                   proto: Protocol,
                   f: &dyn Fn(&mut Service),
                   eps: Vec<([u8; 4], &str)>| {
        let mut svc = Service {
            cluster_ips: vec![Ipv4Addr::from(ip)],
            ports: vec![ServicePort {
                name: Some("p".into()),
                protocol: proto,
                port: 80,
                target_port: TargetPort::Number(8080),
                node_port: None,
            }],
            ..Service::bare("ns".into(), name.into(), ServiceType::ClusterIP)
        };
        f(&mut svc);
        let slice = EndpointSlice {
            namespace: "ns".into(),
            name: format!("{name}-x"),
            service: name.into(),
            ports: vec![EndpointPort {
                name: Some("p".into()),
                protocol: proto,
                port: Some(8080),
            }],
            endpoints: eps
                .into_iter()
                .map(|(a, node)| Endpoint {
                    addresses: vec![Ipv4Addr::from(a)],
                    ready: true,
                    serving: true,
                    terminating: false,
                    node_name: Some(node.into()),
                })
                .collect(),
        };
        m.endpoint_slices
            .insert(("ns".into(), slice.name.clone()), slice);
        m.services.insert(("ns".into(), name.into()), svc);
    };
    let two = || vec![([10, 244, 1, 5], NODE_A), ([10, 244, 2, 5], NODE_B)];
    add("plain", [10, 96, 0, 1], Protocol::Tcp, &|_| {}, two());
    add(
        "sticky",
        [10, 96, 0, 2],
        Protocol::Tcp,
        &|s| s.session_affinity_timeout = Some(10_800),
        two(),
    );
    add(
        "lb",
        [10, 96, 0, 3],
        Protocol::Udp,
        &|s| {
            s.service_type = ServiceType::LoadBalancer;
            s.ports[0].node_port = Some(30_080);
            s.external_ips = vec![Ipv4Addr::new(192, 0, 2, 1)];
            s.load_balancer_ips = vec![Ipv4Addr::new(192, 0, 2, 2)];
            s.external_traffic_policy = TrafficPolicy::Local;
        },
        two(),
    );
    add(
        "itp",
        [10, 96, 0, 4],
        Protocol::Sctp,
        &|s| s.internal_traffic_policy = TrafficPolicy::Local,
        vec![([10, 244, 2, 6], NODE_B)],
    );
    add(
        "empty",
        [10, 96, 0, 5],
        Protocol::Tcp,
        &|s| s.ports[0].node_port = Some(30_081),
        vec![],
    );
    m
}

#[test]
fn iptables_restore_accepts_every_rule_kind_and_10000_services() {
    need_root();
    // Serial with the scenario tests: their cleanup check counts this process's children,
    // and the iptables-restore processes started here are children too.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new("i");
    let opts = KubeProxyOpts {
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        ..KubeProxyOpts::default()
    };
    for node in [NODE_A, NODE_B, "elsewhere"] {
        let text = kubeproxy::iptables_restore(&every_kind(), node, &opts);
        let f = s.file(&format!("every-{node}.rules"), &text);
        s.exec("iptables-restore", &["--wait=10", "--test", &f])
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    // kube-proxy's own input (no built-in chains) loads with --noflush.
    let own = KubeProxyOpts {
        jump_rules: false,
        ..opts.clone()
    };
    let f = s.file(
        "noflush.rules",
        &kubeproxy::iptables_restore(&every_kind(), NODE_A, &own),
    );
    s.exec(
        "iptables-restore",
        &["--wait=10", "--test", "--noflush", &f],
    )
    .unwrap();

    for n in [1, 10_000] {
        let m = service::bench_model(n).unwrap();
        let text = kubeproxy::iptables_restore(&m, NODE_A, &service::kube_proxy_opts());
        let f = s.file(&format!("bench-{n}.rules"), &text);
        s.exec("iptables-restore", &["--wait=10", "--test", &f])
            .unwrap();
        // Loaded for real: the kernel holds one KUBE-SERVICES rule per Service, in order,
        // the target last before the NodePort jump.
        s.exec("iptables-restore", &["--wait=10", &f]).unwrap();
        let saved = s.exec("iptables-save", &["-t", "nat"]).unwrap();
        let svc: Vec<&str> = saved
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .collect();
        assert_eq!(svc.len(), n as usize + 1, "{n} Services");
        assert!(
            svc[n as usize - 1].starts_with(&format!(
                "-A KUBE-SERVICES -d {}/32 -p udp",
                service::CLUSTER_IP
            )),
            "{}",
            svc[n as usize - 1]
        );
        assert!(svc[n as usize].ends_with("-j KUBE-NODEPORTS"));
        let count = |prefix: &str| saved.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(count(":KUBE-SVC-"), n as usize);
        assert_eq!(count(":KUBE-SEP-"), n as usize);
    }
    // The legacy backend takes the same file.
    if run("iptables-legacy-restore", &["--version"]).is_ok() {
        let m = service::bench_model(100).unwrap();
        let f = s.file(
            "legacy.rules",
            &kubeproxy::iptables_restore(&m, NODE_A, &service::kube_proxy_opts()),
        );
        s.exec("iptables-legacy-restore", &["--wait=10", "--test", &f])
            .unwrap();
    }
    let ns = s.ns.clone();
    drop(s);
    common::assert_no_namespaces(&ns);
}

fn opts(prefix: &str, dp: Datapath) -> ServiceOpts {
    ServiceOpts {
        prefix: prefix.to_string(),
        datapaths: vec![dp],
        results_dir: None,
        ..ServiceOpts::default()
    }
}

#[test]
fn kernel_with_kube_proxy_rules_delivers_an_exact_count_through_the_cluster_ip() {
    need_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = format!("svt{}k", std::process::id());
    let (n, flows) = (20_000, 4);
    let d = service::deliver_count(
        &opts(&prefix, Datapath::Kernel),
        Datapath::Kernel,
        1_000,
        flows,
        n,
        Rate::Pps(20_000),
    )
    .unwrap();
    let dl = &d.delivery;
    assert_eq!(dl.sent, n, "{d:?}");
    assert_eq!(dl.node_a_rx, n, "node A received what pod A sent: {d:?}");
    assert_eq!(dl.dropped.total(), 0, "{d:?}");
    // The sink counts only frames to pod B's MAC, IP and port 5001: every frame sent to
    // 10.96.0.100:80 arrived DNATed.
    assert_eq!(dl.sink.matched, n, "pod B received every frame: {d:?}");
    assert!(dl.sink.packets - dl.sink.matched <= 2, "{d:?}");
    // One conntrack entry per flow on node A (the counted ones and the probe), plus what
    // node A sends itself: the VXLAN flows to node B (outer source port from the inner
    // flow's hash) and the bridge's multicast reports.
    let ct = d.node_a_conntrack.expect("conntrack count of node A");
    let inner = u64::from(flows) + 1;
    assert!((inner..=2 * inner + 8).contains(&ct), "{ct} entries: {d:?}");
    common::assert_clean(&prefix);
}

#[test]
fn kernel_scenario_measures_both_service_counts_and_cleans_up() {
    need_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = format!("svt{}s", std::process::id());
    let o = ServiceOpts {
        runs: 1,
        warmup: Duration::from_millis(300),
        window: Duration::from_millis(700),
        flows: vec![1, 8],
        services: vec![1, 300],
        new_flows: 2000,
        new_flow_rate: 20_000,
        nice: None,
        ..opts(&prefix, Datapath::Kernel)
    };
    let report = service::run(&o).unwrap();
    assert_eq!(report.error, None);
    assert_eq!(
        report
            .runs
            .iter()
            .map(|r| (r.services, r.flows))
            .collect::<Vec<_>>(),
        [(1, 1), (1, 8), (300, 1), (300, 8)]
    );
    for r in &report.runs {
        assert!(
            r.window.sink_pps > 10_000.0,
            "almost nothing delivered: {r:?}"
        );
        assert!(r.window.offered_pps >= r.window.sink_pps, "{r:?}");
        assert!(r.window.ns_per_pkt_fwd_cpu > 0.0, "{r:?}");
        assert!(
            r.node_a_conntrack.unwrap_or(0) >= u64::from(r.flows),
            "{r:?}"
        );
    }
    // Every measurement used its own source ports.
    let mut ports: Vec<u16> = report.runs.iter().map(|r| r.src_port).collect();
    ports.dedup();
    assert_eq!(ports.len(), 4);
    // One new-flow burst per setup, every frame a new conntrack entry on node A.
    assert_eq!(report.new_flow_runs.len(), 2);
    for r in &report.new_flow_runs {
        assert_eq!(r.sent, 2000, "{r:?}");
        assert!(r.delivered > 1000, "{r:?}");
        assert!(r.node_a_conntrack.unwrap() >= r.delivered, "{r:?}");
        assert!(r.ns_per_flow_tasks > 0.0, "{r:?}");
    }
    assert_ne!(
        report.new_flow_runs[0].src_port,
        report.new_flow_runs[1].src_port
    );
    assert_eq!(report.new_flow_summary.len(), 2);
    let kp = report.kube_proxy.as_ref().unwrap();
    assert_eq!(kp.rules[&300].kube_services_rules, 301);
    assert_eq!(report.summary.len(), 4);
    assert_eq!(report.scaling.len(), 2);
    assert!(report.ratio_xdplane_over_kernel.is_empty());
    assert!(report.table().contains("Services, "));
    common::assert_clean(&prefix);
}

#[test]
#[ignore = "needs the xdplane agent binary (XDPLANE_BIN_DIR)"]
fn xdplane_delivers_an_exact_count_through_the_cluster_ip() {
    need_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = format!("svt{}x", std::process::id());
    let n = 20_000;
    let d = service::deliver_count(
        &opts(&prefix, Datapath::Xdplane),
        Datapath::Xdplane,
        1_000,
        4,
        n,
        Rate::Pps(20_000),
    )
    .unwrap();
    let dl = &d.delivery;
    assert_eq!(dl.sent, n, "{d:?}");
    assert_eq!(dl.dropped.total(), 0, "{d:?}");
    assert_eq!(
        dl.sink.matched, n,
        "pod B received every frame DNATed: {d:?}"
    );
    assert_eq!(dl.sink.packets, n, "and nothing else: {d:?}");
    assert_eq!(d.node_a_conntrack, None);
    common::assert_clean(&prefix);
}
