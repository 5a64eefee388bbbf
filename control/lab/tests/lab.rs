//! End-to-end tests of the lab: real namespaces, real agents, pods created through the
//! CNI plugin, traffic through the dataplane.
//!
//! They need root, iproute2, and the binaries `xdplane` (crate xdplane-agent) and
//! `xdplane-cni` (crate xdplane-cni) built into the same target directory as this test
//! (`cargo build -p xdplane-agent -p xdplane-cni`), or in `XDPLANE_BIN_DIR`. Each test uses
//! its own lab name (`t<pid><letter>`) and a guard that runs `lab down` on drop, so a
//! failing test leaves no namespace or process behind.
#![forbid(unsafe_code)]

mod common;
use common::require_binaries;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xdplane_lab::flannel::{self, Mode};
use xdplane_lab::lab::{self, LabConfig, PodSpec, UpOptions};
use xdplane_lab::netns;
use xdplane_lab::procs::{self, ProcRecord};
use xdplane_lab::state::{LabState, PodState, StateDir};
use xdplane_lab::testpod::Proto;

/// Labs with agents run one at a time (2 cores shared with other work).
static AGENT_LABS: Mutex<()> = Mutex::new(());

fn lab_name(tag: char) -> String {
    format!("t{}{tag}", std::process::id())
}

/// Runs `lab down` when dropped.
struct LabGuard {
    cfg: LabConfig,
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.cfg) {
            eprintln!("lab down {} in the guard: {e:#}", self.cfg.name);
        }
    }
}

fn lab_namespaces(name: &str) -> Vec<String> {
    netns::list_prefixed(&format!("{name}-")).unwrap()
}

fn up(tag: char, nodes: usize, no_pods: bool) -> (LabGuard, LabState) {
    up_with(
        tag,
        UpOptions {
            nodes,
            no_pods,
            verbose: true,
            ..UpOptions::default()
        },
    )
}

fn up_with(tag: char, opts: UpOptions) -> (LabGuard, LabState) {
    let cfg = LabConfig::new(&lab_name(tag))
        .unwrap()
        .with_bin_dir(require_binaries());
    let guard = LabGuard { cfg: cfg.clone() };
    let st = lab::up(&cfg, &opts).unwrap_or_else(|e| panic!("lab up {}: {e:#}", cfg.name));
    (guard, st)
}

fn ping(st: &LabState, from: &str, ip: &str) -> (bool, String) {
    let cmd: Vec<String> = ["ping", "-c", "2", "-i", "0.2", "-W", "1", ip]
        .map(String::from)
        .to_vec();
    let (code, out) = lab::exec_capture(st, from, &cmd).unwrap();
    (code == 0, out)
}

#[test]
fn up_without_binaries_creates_nothing() {
    let empty = std::env::temp_dir().join(format!("xdplane-lab-nobin-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let cfg = LabConfig::new(&lab_name('n')).unwrap().with_bin_dir(&empty);
    let err = lab::up(&cfg, &UpOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cargo build -p xdplane-agent -p xdplane-cni"),
        "{err}"
    );
    assert!(lab_namespaces(&cfg.name).is_empty());
    assert!(!cfg.state_dir().exists());
    std::fs::remove_dir_all(&empty).unwrap();
}

/// `down` removes what a half-finished `up` left (namespaces, links, a recorded process),
/// leaves an unrecorded process alone, and a second `down` has nothing to do. Needs no
/// agent.
#[test]
fn down_cleans_partial_state() {
    let name = lab_name('p');
    let cfg = LabConfig::new(&name).unwrap();
    let guard = LabGuard { cfg: cfg.clone() };
    let fabric = format!("{name}-fabric");
    let node = format!("{name}-server1");
    netns::add(&fabric).unwrap();
    netns::ip_in(&fabric, &["link", "add", "br0", "type", "bridge"]).unwrap();
    netns::add(&node).unwrap();
    netns::ip_in(
        &node,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "s1", "netns", &fabric,
        ],
    )
    .unwrap();
    let sd: StateDir = cfg.state_dir();
    let log = sd.dir.join("logs/sleeper.log");
    let argv: Vec<String> = ["sleep", "300"].map(String::from).to_vec();
    let (_child, rec) = procs::spawn_in_netns(&node, &argv, &log).unwrap();
    let st = LabState {
        version: 1,
        name: name.clone(),
        phase: "failed".into(),
        bin_dir: "/nonexistent".into(),
        manifests_source: "/nonexistent".into(),
        manifests_dir: sd.manifests(),
        fabric_netns: fabric.clone(),
        nodes: vec![xdplane_lab::state::NodeState {
            name: "server1".into(),
            index: 1,
            netns: node.clone(),
            ip: "192.168.50.11".parse().unwrap(),
            prefix_len: 24,
            pod_cidr: None,
            gateway: None,
            admin_socket: sd.socket("server1"),
            cni_conf: sd.cni_conf("server1"),
            ipam_dir: sd.ipam("server1"),
            log: log.clone(),
            agent: Some(rec.clone()),
            kind: Default::default(),
            vtep_mac: None,
            vxlan_support: false,
            pod_mtu: None,
        }],
        pods: vec![],
        mode: Mode::Vxlan,
        pod_mtu_override: None,
        ext: None,
    };
    sd.save(&st).unwrap();
    // A process the lab did not record, in the lab's namespace: never signalled.
    let mut bystander = Command::new(netns::ip_bin())
        .args(["netns", "exec", &node, "sleep", "300"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rec.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(rec.alive(), "the recorded process runs");

    let r = lab::down(&cfg).unwrap();
    assert!(r.had_state);
    assert_eq!(r.processes_stopped, 1, "{r:?}");
    let deleted: BTreeSet<String> = r.netns_deleted.iter().cloned().collect();
    assert_eq!(deleted, BTreeSet::from([fabric, node]));
    assert!(!rec.alive());
    assert!(lab_namespaces(&name).is_empty());
    assert!(!sd.exists());
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "an unrecorded process is left alone"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();

    let again = lab::down(&cfg).unwrap();
    assert!(again.nothing_to_do(), "{again:?}");
    drop(guard);
}

/// Same-node pod ↔ pod traffic through the dataplane: ping, TCP (HTTP answered with the
/// pod's name) and UDP, plus pod → gateway.
#[test]
fn same_node_ping_tcp_udp() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, st) = up('a', 1, false);
    assert_eq!(st.nodes.len(), 1);
    assert_eq!(st.pods.len(), 4, "demo2 x2 + deployment x2 on server1");
    let status = lab::status(&guard.cfg).unwrap();
    assert!(status.healthy(), "{}", status.render());
    // The lab annotated the Node as flanneld would, with the agent's VtepMAC (its uplink's
    // MAC unless the agent reports one).
    let ann = node_annotations(&st, "server1");
    assert_eq!(ann[flannel::ANN_BACKEND_TYPE], "vxlan");
    assert_eq!(ann[flannel::ANN_PUBLIC_IP], "192.168.50.11");
    assert_eq!(ann[flannel::ANN_SUBNET_MANAGER], "true");
    let mac = st.nodes[0].vtep_mac.clone().expect("a VtepMAC");
    assert_eq!(
        ann[flannel::ANN_BACKEND_DATA],
        format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#)
    );
    if !st.nodes[0].vxlan_support {
        assert_eq!(mac, netns::link_mac(&st.nodes[0].netns, "eth0").unwrap());
    }
    for p in &st.pods {
        assert_eq!(p.node, "server1");
        let ip = p.ip().expect("every pod has an address");
        assert_eq!(
            ip.octets()[..3],
            [10, 244, 1],
            "{} from server1's podCIDR",
            p.name
        );
        assert!(p.mac.is_some());
    }
    let (a, b) = (&st.pods[0], &st.pods[1]);
    let gw = a
        .gateway
        .clone()
        .or_else(|| st.nodes[0].gateway.clone())
        .expect("a gateway");
    let (ok, out) = ping(&st, &a.name, &gw);
    assert!(ok, "{} → gateway {gw}: {out}", a.name);
    let (ok, out) = ping(&st, &a.name, &b.ip().unwrap().to_string());
    assert!(ok, "{} → {}: {out}", a.name, b.name);
    let (ok, out) = ping(&st, &b.name, &a.ip().unwrap().to_string());
    assert!(ok, "{} → {}: {out}", b.name, a.name);

    let t = lab::probe_in(
        &st,
        &a.name,
        &b.name,
        80,
        Proto::Tcp,
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(t.ok, "{}", t.line());
    assert!(
        t.output.contains(&format!("body \"{}\"", b.name)),
        "{}",
        t.line()
    );
    let u = lab::probe_in(
        &st,
        &b.name,
        &a.name,
        80,
        Proto::Udp,
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(u.ok, "{}", u.line());
    assert!(
        u.output.contains(&format!("reply \"{}\"", a.name)),
        "{}",
        u.line()
    );
    // A port nobody serves: TCP is refused (the pod's kernel answers RST through the
    // dataplane), so the probe fails.
    let closed = lab::probe_in(
        &st,
        &a.name,
        &b.name,
        81,
        Proto::Tcp,
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(!closed.ok, "{}", closed.line());
    drop(guard);
}

/// A pod added while a flood runs between two others gets traffic at once, and the flood
/// is not disturbed.
#[test]
fn pod_added_while_traffic_flows() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, _) = up('b', 1, true);
    let cfg = guard.cfg.clone();
    let spec = |name: &str| PodSpec {
        namespace: "default".into(),
        name: name.into(),
        node: "server1".into(),
        ports: vec![80],
        mtu: None,
        ..PodSpec::default()
    };
    let a = lab::add_pod(&cfg, &spec("src")).unwrap();
    let b = lab::add_pod(&cfg, &spec("dst")).unwrap();
    let st = cfg.load().unwrap();
    let count = 40_000u64;
    let to = format!("{}:80", b.ip().unwrap());
    let flood = Command::new(netns::ip_bin())
        .args(["netns", "exec", &a.netns])
        .arg(st.bin_dir.join(lab::AGENT_BIN))
        .args([
            "testpod",
            "flood",
            "--to",
            &to,
            "--count",
            &count.to_string(),
        ])
        .args(["--rate", "20000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let c = lab::add_pod(&cfg, &spec("late")).unwrap();
    let st = cfg.load().unwrap();
    let t = lab::probe_in(&st, "src", "late", 80, Proto::Tcp, Duration::from_secs(2)).unwrap();
    assert!(t.ok, "{}", t.line());
    assert!(t.output.contains("body \"late\""), "{}", t.line());
    let u = lab::probe_in(&st, "late", "dst", 80, Proto::Udp, Duration::from_secs(2)).unwrap();
    assert!(u.ok, "{}", u.line());
    let out = flood.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "flood: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("sent {count} of {count}")), "{text}");
    assert!(c.ip().is_some());
    drop(guard);
}

/// `down` twice: the first removes everything (namespaces, agents, servers, state), the
/// second has nothing to do.
#[test]
fn down_twice_leaves_nothing() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, st) = up('c', 2, false);
    let name = guard.cfg.name.clone();
    let procs: Vec<ProcRecord> = st
        .nodes
        .iter()
        .filter_map(|n| n.agent.clone())
        .chain(st.pods.iter().filter_map(|p| p.server.clone()))
        .chain(st.ext.iter().filter_map(|e| e.server.clone()))
        .collect();
    // 2 agents, 4 pod servers, the external host's server.
    assert_eq!(procs.len(), 2 + 4 + 1);
    assert!(procs.iter().all(ProcRecord::alive));
    // fabric, ext, 2 nodes, 4 pods.
    assert_eq!(lab_namespaces(&name).len(), 1 + 1 + 2 + 4);

    let r = lab::down(&guard.cfg).unwrap();
    assert_eq!(r.processes_stopped, 7, "{r:?}");
    assert_eq!(r.cni_deleted, 4, "{r:?}");
    assert!(r.cni_errors.is_empty(), "{r:?}");
    assert!(lab_namespaces(&name).is_empty());
    assert!(procs.iter().all(|p| !p.alive()));
    assert!(!guard.cfg.state_dir().exists());

    let again = lab::down(&guard.cfg).unwrap();
    assert!(again.nothing_to_do(), "{again:?}");
    drop(guard);
}

/// Manifests that cannot be placed stop `up` before anything is created.
#[test]
fn unplaceable_pod_fails_before_anything_exists() {
    let dir = std::env::temp_dir().join(format!("xdplane-lab-pinned-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: solo\nspec:\n  nodeName: server9\n  containers:\n  - name: c\n    image: x\n",
    )
    .unwrap();
    let cfg = LabConfig::new(&lab_name('u'))
        .unwrap()
        .with_bin_dir(require_binaries());
    let guard = LabGuard { cfg: cfg.clone() };
    let err = lab::up(
        &cfg,
        &UpOptions {
            nodes: 1,
            manifests: Some(dir.clone()),
            ..UpOptions::default()
        },
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("pinned to node server9"), "{msg}");
    assert!(lab_namespaces(&cfg.name).is_empty());
    assert!(!cfg.state_dir().exists());
    std::fs::remove_dir_all(&dir).unwrap();
    drop(guard);
}

// ---------------------------------------------------------------------------------------
// Across nodes (issue 3)

fn node_annotations(st: &LabState, node: &str) -> std::collections::BTreeMap<String, String> {
    let l = xdplane_control::manifest::load_dir(&st.manifests_dir).unwrap();
    assert!(l.errors.is_empty(), "{:?}", l.errors);
    l.model.nodes[node].annotations.clone()
}

fn pod_on<'a>(st: &'a LabState, node: &str) -> &'a PodState {
    st.pods
        .iter()
        .find(|p| p.node == node && p.ip().is_some())
        .unwrap_or_else(|| panic!("no pod on {node}"))
}

fn ip_of(p: &PodState) -> String {
    p.ip().expect("pod address").to_string()
}

/// `ip -n NS ARGS…` output.
fn ip_out(ns: &str, args: &[&str]) -> String {
    netns::ip_in_output(ns, args).unwrap()
}

fn link_mtu(ns: &str, dev: &str) -> u32 {
    xdplane_lab::kernel::link_mtu(ns, dev).unwrap()
}

/// a → b: ping, TCP (the HTTP answer names b) and UDP (`hostname` answered with b's name).
fn assert_reaches(st: &LabState, a: &PodState, b: &PodState, ctx: &str) {
    let (ok, out) = ping(st, &a.display_name(), &ip_of(b));
    assert!(ok, "[{ctx}] ping {} → {}: {out}", a.name, b.name);
    let t = lab::probe_in(
        st,
        &a.display_name(),
        &b.display_name(),
        80,
        Proto::Tcp,
        Duration::from_secs(3),
    )
    .unwrap();
    assert!(t.ok, "[{ctx}] {}", t.line());
    assert!(
        t.output.contains(&format!("body \"{}\"", b.name)),
        "[{ctx}] {}",
        t.line()
    );
    let u = lab::probe_in(
        st,
        &a.display_name(),
        &b.display_name(),
        80,
        Proto::Udp,
        Duration::from_secs(3),
    )
    .unwrap();
    assert!(u.ok, "[{ctx}] {}", u.line());
    assert!(
        u.output.contains(&format!("reply \"{}\"", b.name)),
        "[{ctx}] {}",
        u.line()
    );
}

fn assert_both_ways(st: &LabState, a: &PodState, b: &PodState, ctx: &str) {
    assert_reaches(st, a, b, ctx);
    assert_reaches(st, b, a, ctx);
}

/// Pings `to` from `from` while tcpdump watches the fabric for UDP 8472 (decoded as
/// VXLAN); what it captured.
fn capture_vxlan(st: &LabState, from: &PodState, to: &PodState) -> lab::Capture {
    let cmd: Vec<String> = ["ping", "-c", "4", "-i", "0.2", "-W", "1", &ip_of(to)]
        .map(String::from)
        .to_vec();
    let (cap, ping) = lab::capture_fabric(st, "udp port 8472", 5, Duration::from_secs(4), || {
        lab::exec_capture(st, &from.display_name(), &cmd).unwrap()
    })
    .unwrap();
    assert_eq!(
        ping.0, 0,
        "ping {} → {} during the capture: {}",
        from.name, to.name, ping.1
    );
    cap
}

/// The checks of one mode on the fabric: VXLAN (VNI 1, flags I) carrying `from`'s ping in
/// vxlan mode; no UDP 8472 at all, and the ping as plain IP, otherwise.
fn assert_wire(st: &LabState, from: &PodState, to: &PodState, mode: Mode) {
    let cap = capture_vxlan(st, from, to);
    let inner = format!("IP {} > {}: ICMP echo request", ip_of(from), ip_of(to));
    if mode == Mode::Vxlan {
        assert!(
            cap.packets.contains("VXLAN, flags [I] (0x08), vni 1"),
            "{mode}: {}\n{}",
            cap.packets,
            cap.summary
        );
        assert!(cap.packets.contains(&inner), "{mode}: {}", cap.packets);
        let (src, dst) = (
            st.node(&from.node).unwrap().ip,
            st.node(&to.node).unwrap().ip,
        );
        assert!(
            cap.packets.contains(&format!("IP {src}."))
                && cap.packets.contains(&format!("> {dst}.8472: VXLAN")),
            "{mode}: outer {src} -> {dst}:8472 expected: {}",
            cap.packets
        );
    } else {
        assert_eq!(
            cap.captured, 0,
            "{mode}: no VXLAN expected: {}",
            cap.packets
        );
        assert!(!cap.packets.contains("VXLAN"), "{mode}: {}", cap.packets);
        let cmd: Vec<String> = ["ping", "-c", "3", "-i", "0.2", "-W", "1", &ip_of(to)]
            .map(String::from)
            .to_vec();
        let (plain, _) = lab::capture_fabric(st, "icmp", 2, Duration::from_secs(4), || {
            lab::exec_capture(st, &from.display_name(), &cmd).unwrap()
        })
        .unwrap();
        assert!(
            plain.packets.contains(&inner),
            "{mode}: the ping crosses the fabric as plain IP: {}\n{}",
            plain.packets,
            plain.summary
        );
    }
}

/// The routes a kernel node must have for peer `i` in `mode`.
fn assert_kernel_routes(st: &LabState, node: &str, peers: &[usize], mode: Mode) {
    let ns = &st.node(node).unwrap().netns;
    let routes = ip_out(ns, &["route", "show"]);
    for i in peers {
        let want = match mode {
            Mode::Vxlan => format!("10.244.{i}.0/24 via 10.244.{i}.0 dev flannel.1 onlink"),
            _ => format!("10.244.{i}.0/24 via 192.168.50.{} dev eth0", 10 + i),
        };
        assert!(
            routes.contains(&want),
            "{node} in {mode}: want {want:?}:\n{routes}"
        );
    }
    let links = ip_out(ns, &["-d", "link", "show"]);
    if mode.is_vxlan() {
        assert!(links.contains("vxlan id 1 local"), "{node}: {links}");
    } else {
        assert!(
            !links.contains("flannel."),
            "{node} in host-gw has no VTEP: {links}"
        );
    }
}

/// An all-kernel lab is a flannel cluster as the seed describes it: flannel.1 VTEPs, cni0,
/// the bridge plugin; pods reach each other across nodes in vxlan, directrouting and
/// host-gw, switched live; VXLAN is on the fabric only in vxlan mode; a bulk transfer
/// between pods of MTU 1500 needs (and gets) path MTU discovery. This validates the lab's
/// flannel emulation on its own, with no xdplane involved.
#[test]
fn all_kernel_lab_across_modes() {
    let (guard, st) = up_with(
        'k',
        UpOptions {
            nodes: 3,
            all_kernel: true,
            verbose: true,
            ..UpOptions::default()
        },
    );
    let cfg = guard.cfg.clone();
    assert_eq!(st.mode, Mode::Vxlan);
    assert!(st.nodes.iter().all(|n| n.is_kernel() && n.agent.is_none()));
    let status = lab::status(&cfg).unwrap();
    assert!(status.healthy(), "{}", status.render());

    // The node as flanneld + the flannel CNI leave it.
    let s1 = st.node("server1").unwrap();
    let vtep = ip_out(&s1.netns, &["-d", "link", "show", "dev", "flannel.1"]);
    for want in [
        "mtu 1450",
        "vxlan id 1 local 192.168.50.11 dev eth0",
        "dstport 8472",
        "nolearning",
    ] {
        assert!(vtep.contains(want), "flannel.1 has {want:?}: {vtep}");
    }
    assert!(
        ip_out(&s1.netns, &["-4", "addr", "show", "dev", "flannel.1"])
            .contains("inet 10.244.1.0/32")
    );
    let cni0 = ip_out(&s1.netns, &["-4", "addr", "show", "dev", "cni0"]);
    assert!(
        cni0.contains("inet 10.244.1.1/24") && cni0.contains("mtu 1450"),
        "{cni0}"
    );
    assert_eq!(
        xdplane_lab::netns::exec_in(&s1.netns, "sysctl", &["-n", "net.ipv4.ip_forward"])
            .unwrap()
            .trim(),
        "1"
    );
    // Each Node carries its flannel.1 MAC; each node has the others' in its FDB and
    // neighbour table.
    for n in &st.nodes {
        let mac = n.vtep_mac.clone().unwrap();
        assert_eq!(mac, netns::link_mac(&n.netns, "flannel.1").unwrap());
        let ann = node_annotations(&st, &n.name);
        assert_eq!(
            ann[flannel::ANN_BACKEND_DATA],
            format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#)
        );
        for other in st.nodes.iter().filter(|o| o.name != n.name) {
            let fdb = netns::bridge_in_output(&other.netns, &["fdb", "show", "dev", "flannel.1"])
                .unwrap();
            assert!(
                fdb.contains(&format!("{mac} dst {} self permanent", n.ip)),
                "{}: {fdb}",
                other.name
            );
            let neigh = ip_out(&other.netns, &["neigh", "show", "dev", "flannel.1"]);
            assert!(
                neigh.contains(&format!("10.244.{}.0 lladdr {mac} PERMANENT", n.index)),
                "{}: {neigh}",
                other.name
            );
        }
    }

    let (a, b, c) = (
        pod_on(&st, "server1"),
        pod_on(&st, "server2"),
        pod_on(&st, "server3"),
    );
    assert_eq!(link_mtu(&a.netns, "eth0"), 1450, "flannel's vxlan pod MTU");
    for mode in [Mode::Vxlan, Mode::DirectRouting, Mode::HostGw, Mode::Vxlan] {
        if cfg.load().unwrap().mode != mode {
            let r = lab::set_mode(&cfg, mode).unwrap();
            assert_eq!(r.mode, mode);
            assert_eq!(r.kernel.len(), 3);
        }
        let st = cfg.load().unwrap();
        assert_eq!(st.mode, mode);
        assert_eq!(
            node_annotations(&st, "server2")[flannel::ANN_BACKEND_TYPE],
            mode.backend_type()
        );
        if mode == Mode::HostGw {
            assert_eq!(
                node_annotations(&st, "server2")[flannel::ANN_BACKEND_DATA],
                "null"
            );
        }
        assert_kernel_routes(&st, "server1", &[2, 3], mode);
        assert_kernel_routes(&st, "server3", &[1, 2], mode);
        assert_both_ways(&st, a, b, mode.as_str());
        assert_both_ways(&st, b, c, mode.as_str());
        assert_both_ways(&st, c, a, mode.as_str());
        assert_wire(&st, a, c, mode);
        // Running pods keep their MTU.
        assert_eq!(link_mtu(&a.netns, "eth0"), 1450);
        // Re-programming with nothing changed changes nothing.
        let again = lab::sync(&cfg).unwrap();
        assert!(
            again.kernel.iter().all(|k| k.changes.is_empty()),
            "{:?}",
            again.kernel
        );
    }

    // Path MTU: two pods of MTU 1500 on different nodes; the path through flannel.1 holds
    // 1450. The sender's node answers the 1500-byte DF packets with "fragmentation
    // needed", the senders learn 1450, and 10 MiB go there and back intact.
    let spec = |name: &str, node: &str, mtu: Option<u32>| PodSpec {
        namespace: "default".into(),
        name: name.into(),
        node: node.into(),
        ports: vec![80],
        mtu,
        ..PodSpec::default()
    };
    let big1 = lab::add_pod(&cfg, &spec("big1", "server1", Some(1500))).unwrap();
    let big3 = lab::add_pod(&cfg, &spec("big3", "server3", Some(1500))).unwrap();
    assert_eq!(link_mtu(&big1.netns, "eth0"), 1500);
    let st = cfg.load().unwrap();
    let t = lab::transfer_in(&st, "big1", "big3", 80, 10 << 20, Duration::from_secs(120)).unwrap();
    assert!(t.ok, "{}", t.line());
    let learned = ip_out(&big1.netns, &["route", "get", &ip_of(&big3)]);
    assert!(
        learned.contains("mtu 1450"),
        "big1 learned the path MTU: {learned}"
    );
    let learned = ip_out(&big3.netns, &["route", "get", &ip_of(&big1)]);
    assert!(
        learned.contains("mtu 1450"),
        "big3 learned the path MTU: {learned}"
    );
    // One side 1500, the other flannel's 1450.
    let t = lab::transfer_in(&st, &b.name, "big1", 80, 10 << 20, Duration::from_secs(120)).unwrap();
    assert!(t.ok, "{}", t.line());

    let r = lab::down(&cfg).unwrap();
    assert_eq!(r.cni_deleted, 6, "{r:?}");
    assert!(lab_namespaces(&cfg.name).is_empty());
    drop(guard);
}

/// flanneld re-programs a node when the set of Nodes changes: a Node that appears (with
/// its annotations) gets FDB, neighbour and route entries on every kernel node; when it goes
/// away they go too. A Node of another backend type is ignored, as flanneld does.
#[test]
fn kernel_nodes_follow_the_set_of_nodes() {
    let (guard, st) = up_with(
        'r',
        UpOptions {
            nodes: 2,
            all_kernel: true,
            no_pods: true,
            verbose: true,
            ..UpOptions::default()
        },
    );
    let cfg = guard.cfg.clone();
    let extra = st.manifests_dir.join("server9.yaml");
    std::fs::write(
        &extra,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: server9\n  annotations:\n    flannel.alpha.coreos.com/backend-type: vxlan\n    flannel.alpha.coreos.com/backend-data: '{\"VNI\":1,\"VtepMAC\":\"02:00:00:00:00:09\"}'\n    flannel.alpha.coreos.com/public-ip: 192.168.50.19\n    flannel.alpha.coreos.com/kube-subnet-manager: 'true'\nspec:\n  podCIDR: 10.244.9.0/24\n",
    )
    .unwrap();
    let r = lab::sync(&cfg).unwrap();
    for k in &r.kernel {
        assert!(
            k.routes
                .contains(&"10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink".to_string()),
            "{k:?}"
        );
    }
    for n in &st.nodes {
        let routes = ip_out(&n.netns, &["route", "show"]);
        assert!(
            routes.contains("10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink"),
            "{routes}"
        );
        let fdb = netns::bridge_in_output(&n.netns, &["fdb", "show", "dev", "flannel.1"]).unwrap();
        assert!(
            fdb.contains("02:00:00:00:00:09 dst 192.168.50.19 self permanent"),
            "{fdb}"
        );
        let neigh = ip_out(&n.netns, &["neigh", "show", "dev", "flannel.1"]);
        assert!(
            neigh.contains("10.244.9.0 lladdr 02:00:00:00:00:09 PERMANENT"),
            "{neigh}"
        );
    }
    // host-gw: server9 still says vxlan (nobody re-annotates it): ignored.
    let r = lab::set_mode(&cfg, Mode::HostGw).unwrap();
    for k in &r.kernel {
        assert!(
            k.notes
                .iter()
                .any(|n| n.contains("server9") && n.contains("ignored")),
            "{k:?}"
        );
        assert!(
            !k.routes.iter().any(|r| r.starts_with("10.244.9.0/24")),
            "{k:?}"
        );
    }
    lab::set_mode(&cfg, Mode::Vxlan).unwrap();
    std::fs::remove_file(&extra).unwrap();
    let r = lab::sync(&cfg).unwrap();
    for (k, n) in r.kernel.iter().zip(&st.nodes) {
        assert!(
            !k.routes.iter().any(|r| r.starts_with("10.244.9.0/24")),
            "{k:?}"
        );
        let routes = ip_out(&n.netns, &["route", "show"]);
        assert!(!routes.contains("10.244.9.0"), "{routes}");
        let fdb = netns::bridge_in_output(&n.netns, &["fdb", "show", "dev", "flannel.1"]).unwrap();
        assert!(!fdb.contains("02:00:00:00:00:09"), "{fdb}");
        let neigh = ip_out(&n.netns, &["neigh", "show", "dev", "flannel.1"]);
        assert!(!neigh.contains("10.244.9.0"), "{neigh}");
    }
    drop(guard);
}

/// Mixed cluster: xdplane on server1 and server2, the kernel's flannel on server3. Pods
/// reach each other across nodes (xdplane ↔ kernel both ways, xdplane ↔ xdplane) in every
/// mode, switched live; in vxlan mode the xdplane node's VXLAN is what flannel.1 decodes
/// and the other way round.
#[test]
fn mixed_xdplane_and_kernel_nodes_across_modes() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, st) = up_with(
        'm',
        UpOptions {
            nodes: 3,
            kernel_nodes: vec!["server3".into()],
            verbose: true,
            ..UpOptions::default()
        },
    );
    let cfg = guard.cfg.clone();
    let status = lab::status(&cfg).unwrap();
    assert!(status.healthy(), "{}", status.render());
    for n in st.nodes.iter().filter(|n| !n.is_kernel()) {
        assert!(n.vxlan_support, "{}: node-info reports vtepMac", n.name);
        // The contract: an xdplane node's VtepMAC is its uplink's MAC.
        assert_eq!(
            n.vtep_mac.as_deref(),
            Some(netns::link_mac(&n.netns, "eth0").unwrap().as_str())
        );
        assert_eq!(
            n.pod_mtu,
            Some(1450),
            "{}: vxlan pod MTU from node-info",
            n.name
        );
    }
    let (a, b, c) = (
        pod_on(&st, "server1"),
        pod_on(&st, "server2"),
        pod_on(&st, "server3"),
    );
    assert_eq!(link_mtu(&a.netns, "eth0"), 1450);
    assert_eq!(link_mtu(&c.netns, "eth0"), 1450);
    for mode in [Mode::Vxlan, Mode::DirectRouting, Mode::HostGw, Mode::Vxlan] {
        if cfg.load().unwrap().mode != mode {
            let r = lab::set_mode(&cfg, mode).unwrap();
            assert_eq!(r.reloaded.len(), 2, "both agents reloaded: {r:?}");
        }
        let st = cfg.load().unwrap();
        assert_kernel_routes(&st, "server3", &[1, 2], mode);
        assert_both_ways(&st, a, c, &format!("{mode} xdplane↔kernel"));
        assert_both_ways(&st, b, c, &format!("{mode} xdplane↔kernel"));
        assert_both_ways(&st, a, b, &format!("{mode} xdplane↔xdplane"));
        // Encapsulated by xdplane, decapsulated by flannel.1; and back.
        assert_wire(&st, a, c, mode);
        assert_wire(&st, c, a, mode);
        // xdplane ↔ xdplane.
        assert_wire(&st, b, a, mode);
    }
    let status = lab::status(&cfg).unwrap();
    assert!(status.healthy(), "{}", status.render());
    drop(guard);
}

/// A 10 MiB TCP transfer across nodes with pods of MTU 1500 where the overlay holds 1450:
/// xdplane answers DF packets too big for VXLAN with "fragmentation needed" (MTU 1450), the
/// senders learn it, and every byte comes back intact; also with 1500 on one side only, and
/// between an xdplane pod and a kernel node's pod.
#[test]
fn bulk_transfer_across_nodes_with_path_mtu() {
    let _one = AGENT_LABS.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, _) = up_with(
        'x',
        UpOptions {
            nodes: 3,
            kernel_nodes: vec!["server3".into()],
            no_pods: true,
            verbose: true,
            ..UpOptions::default()
        },
    );
    let cfg = guard.cfg.clone();
    let spec = |name: &str, node: &str, mtu: Option<u32>| PodSpec {
        namespace: "default".into(),
        name: name.into(),
        node: node.into(),
        ports: vec![80],
        mtu,
        ..PodSpec::default()
    };
    let x1 = lab::add_pod(&cfg, &spec("x1", "server1", None)).unwrap();
    let x1big = lab::add_pod(&cfg, &spec("x1big", "server1", Some(1500))).unwrap();
    let x2big = lab::add_pod(&cfg, &spec("x2big", "server2", Some(1500))).unwrap();
    let k3 = lab::add_pod(&cfg, &spec("k3", "server3", None)).unwrap();
    let k3big = lab::add_pod(&cfg, &spec("k3big", "server3", Some(1500))).unwrap();
    assert_eq!(link_mtu(&x1.netns, "eth0"), 1450);
    assert_eq!(link_mtu(&x1big.netns, "eth0"), 1500);
    assert_eq!(link_mtu(&k3big.netns, "eth0"), 1500);
    assert_eq!(
        link_mtu(&k3.netns, "eth0"),
        1450,
        "flannel's vxlan MTU on the kernel node"
    );
    let st = cfg.load().unwrap();
    let ten = 10 << 20;
    let t = Duration::from_secs(120);
    // xdplane ↔ xdplane, 1500 both sides: xdplane's PMTU answers on both nodes.
    let r = lab::transfer_in(&st, "x1big", "x2big", 80, ten, t).unwrap();
    assert!(r.ok, "{}", r.line());
    let learned = ip_out(&x1big.netns, &["route", "get", &ip_of(&x2big)]);
    assert!(
        learned.contains("mtu 1450"),
        "x1big learned the path MTU: {learned}"
    );
    let learned = ip_out(&x2big.netns, &["route", "get", &ip_of(&x1big)]);
    assert!(
        learned.contains("mtu 1450"),
        "x2big learned the path MTU: {learned}"
    );
    // xdplane (1500) ↔ kernel (1500).
    let r = lab::transfer_in(&st, "x1big", "k3big", 80, ten, t).unwrap();
    assert!(r.ok, "{}", r.line());
    let learned = ip_out(&k3big.netns, &["route", "get", &ip_of(&x1big)]);
    assert!(
        learned.contains("mtu 1450"),
        "k3big learned the path MTU: {learned}"
    );
    // 1500 on one side only.
    let r = lab::transfer_in(&st, "x1big", "k3", 80, ten, t).unwrap();
    assert!(r.ok, "{}", r.line());
    let r = lab::transfer_in(&st, "k3", "x1big", 80, ten, t).unwrap();
    assert!(r.ok, "{}", r.line());
    let r = lab::transfer_in(&st, "x2big", "x1", 80, ten, t).unwrap();
    assert!(r.ok, "{}", r.line());
    drop(guard);
}
