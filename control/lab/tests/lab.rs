//! End-to-end tests of the lab: real namespaces, real agents, pods created through the
//! CNI plugin, traffic through the dataplane.
//!
//! They need root, iproute2, and the binaries `xdplane` (crate xdplane-agent) and
//! `xdplane-cni` (crate xdplane-cni) built into the same target directory as this test
//! (`cargo build -p xdplane-agent -p xdplane-cni`), or in `XDPLANE_BIN_DIR`. Each test uses
//! its own lab name (`t<pid><letter>`) and a guard that runs `lab down` on drop, so a
//! failing test leaves no namespace or process behind.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xdplane_lab::lab::{self, LabConfig, PodSpec, UpOptions};
use xdplane_lab::netns;
use xdplane_lab::procs::{self, ProcRecord};
use xdplane_lab::state::{LabState, StateDir};
use xdplane_lab::testpod::Proto;

/// Labs with agents run one at a time (2 cores shared with other work).
static AGENT_LABS: Mutex<()> = Mutex::new(());

/// `target/<profile>` of this test binary (`target/<profile>/deps/lab-…`), or
/// `XDPLANE_BIN_DIR`.
fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDPLANE_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The bin dir, after checking that the agent and the plugin are there.
fn require_binaries() -> PathBuf {
    let dir = bin_dir();
    if let Err(e) = lab::check_binaries(&dir) {
        panic!(
            "these tests run the real agent and CNI plugin: {e:#}\n\
             build them first into the same target directory: \
             `cargo build -p xdplane-agent -p xdplane-cni` (with the same CARGO_TARGET_DIR), \
             or set XDPLANE_BIN_DIR"
        );
    }
    dir
}

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
    let cfg = LabConfig::new(&lab_name(tag))
        .unwrap()
        .with_bin_dir(require_binaries());
    let guard = LabGuard { cfg: cfg.clone() };
    let st = lab::up(
        &cfg,
        &UpOptions {
            nodes,
            no_pods,
            verbose: true,
            ..UpOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("lab up {}: {e:#}", cfg.name));
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
        }],
        pods: vec![],
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
        .collect();
    assert_eq!(procs.len(), 2 + 4);
    assert!(procs.iter().all(ProcRecord::alive));
    assert_eq!(lab_namespaces(&name).len(), 1 + 2 + 4);

    let r = lab::down(&guard.cfg).unwrap();
    assert_eq!(r.processes_stopped, 6, "{r:?}");
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
