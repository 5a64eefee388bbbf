//! End-to-end tests of the `xdplane-cni` binary: real network namespaces (one playing the
//! node, one per pod), host-local from /usr/lib/cni, and a fake node agent that speaks the
//! admin-socket protocol. Needs root, iproute2, nsenter and containernetworking-plugins.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xdplane_api::{Attachment, NodeInfo, Reply, Request};

const BIN: &str = env!("CARGO_BIN_EXE_xdplane-cni");
const CNI_PATH: &str = "/usr/lib/cni";
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!(
        "xdcni-{}-{}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("run ip")
}

fn ip_json(args: &[&str]) -> Value {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ip -j output")
}

/// A network namespace deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = unique(tag);
        let out = ip(&["netns", "add", &name]);
        assert!(
            out.status.success(),
            "ip netns add {name} (these tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns(name)
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
    /// Names of the links in the namespace.
    fn links(&self) -> Vec<String> {
        ip_json(&["-n", &self.0, "-j", "link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(unique("dir"));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct AgentState {
    requests: Vec<Request>,
    attached: HashMap<String, Attachment>,
    refuse_attach: bool,
    next_port: u16,
}

/// A node agent that answers node-info, attach, detach and check like the real one.
struct FakeAgent {
    socket: PathBuf,
    state: Arc<Mutex<AgentState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAgent {
    fn start(socket: PathBuf, info: NodeInfo) -> FakeAgent {
        let listener = UnixListener::bind(&socket).expect("bind fake agent");
        let state = Arc::new(Mutex::new(AgentState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                serve(conn, &st, &info);
            }
        });
        FakeAgent {
            socket,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    fn attached(&self, id: &str) -> Option<Attachment> {
        self.state.lock().unwrap().attached.get(id).cloned()
    }
}

fn serve(conn: UnixStream, state: &Mutex<AgentState>, info: &NodeInfo) {
    let mut w = conn.try_clone().unwrap();
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let reply = match serde_json::from_str::<Request>(&line) {
            Err(e) => Reply::err(format!("bad request: {e}")),
            Ok(req) => {
                let mut s = state.lock().unwrap();
                s.requests.push(req.clone());
                match req {
                    Request::NodeInfo => Reply::ok(info),
                    Request::Attach(a) if s.refuse_attach => {
                        Reply::err(format!("refusing {} (test)", a.container_id))
                    }
                    Request::Attach(a) => {
                        s.next_port += 1;
                        let port = s.next_port;
                        s.attached.insert(a.container_id.clone(), a);
                        Reply::ok(json!({"port": port}))
                    }
                    Request::Detach { container_id } => {
                        let found = s.attached.remove(&container_id).is_some();
                        Reply::ok(json!({"found": found}))
                    }
                    Request::Check { container_id } => match s.attached.get(&container_id) {
                        Some(a) => Reply::ok(a),
                        None => Reply::err(format!("container {container_id} is not attached")),
                    },
                    other => Reply::err(format!("unsupported {other:?}")),
                }
            }
        };
        let mut out = serde_json::to_string(&reply).unwrap();
        out.push('\n');
        if w.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// One node: its namespace, a fake agent, a host-local store.
struct Node {
    ns: Netns,
    agent: Option<FakeAgent>,
    dir: TempDir,
    subnet: String,
}

impl Node {
    fn new() -> Node {
        let dir = TempDir::new();
        let third = std::process::id() % 200 + 20;
        let subnet = format!("10.250.{third}");
        let agent = FakeAgent::start(
            dir.0.join("xdplane.sock"),
            NodeInfo {
                node: "node-a".into(),
                pod_cidr: format!("{subnet}.0/24"),
                gateway: format!("{subnet}.1"),
                mtu: 1450,
                backend: None,
                vtep_mac: None,
                public_ip: None,
                vni: None,
            },
        );
        Node {
            ns: Netns::new("node"),
            agent: Some(agent),
            dir,
            subnet,
        }
    }

    fn agent(&self) -> &FakeAgent {
        self.agent.as_ref().unwrap()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.0.join("ipam")
    }

    fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "xdplane",
            "type": "xdplane-cni",
            "adminSocket": self.dir.0.join("xdplane.sock").display().to_string(),
            "dataDir": self.data_dir().display().to_string(),
        })
    }

    /// Addresses host-local holds for network "xdplane".
    fn allocated(&self) -> Vec<String> {
        let d = self.data_dir().join("xdplane");
        let Ok(rd) = std::fs::read_dir(&d) else {
            return vec![];
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
            .collect();
        v.sort();
        v
    }

    fn run(&self, cmd: &str, id: &str, netns: Option<&str>, conf: &Value) -> Outcome {
        self.run_env(cmd, Some(id), netns, conf, "")
    }

    fn run_env(
        &self,
        cmd: &str,
        id: Option<&str>,
        netns: Option<&str>,
        conf: &Value,
        args: &str,
    ) -> Outcome {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns.0, BIN])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", cmd)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH);
        if let Some(id) = id {
            c.env("CNI_CONTAINERID", id);
        }
        if let Some(ns) = netns {
            c.env("CNI_NETNS", ns);
        }
        if !args.is_empty() {
            c.env("CNI_ARGS", args);
        }
        run_with_stdin(c, &conf.to_string())
    }
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} / {}",
                self.stdout, self.stderr
            )
        })
    }
    fn expect_ok(self) -> Outcome {
        assert!(
            self.ok,
            "plugin failed: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    fn expect_err(&self, code: u64) -> Value {
        assert!(
            !self.ok,
            "plugin succeeded but should fail: {}",
            self.stdout
        );
        let v = self.json();
        assert_eq!(v["code"], code, "error {v} (stderr {})", self.stderr);
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(v["cniVersion"].is_string(), "{v}");
        v
    }
}

fn run_with_stdin(mut c: Command, stdin: &str) -> Outcome {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    // The plugin may exit before reading (VERSION, a bad environment): EPIPE is fine.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing the config: {e}"
        );
    }
    let out = child.wait_with_output().unwrap();
    Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the plugin in the current namespace (for checks that never reach netlink).
fn run_plain(env: &[(&str, &str)], stdin: &str) -> Outcome {
    let mut c = Command::new(BIN);
    c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        c.env(k, v);
    }
    run_with_stdin(c, stdin)
}

fn host_ifname_of(result: &Value) -> String {
    result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string()
}

fn pod_addrs(pod: &Netns) -> Vec<String> {
    ip_json(&["-n", &pod.0, "-j", "-4", "addr", "show", "dev", "eth0"])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn pod_mac(pod: &Netns) -> String {
    ip_json(&["-n", &pod.0, "-j", "link", "show", "dev", "eth0"])[0]["address"]
        .as_str()
        .unwrap()
        .to_string()
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

#[test]
fn version_lists_supported_versions() {
    let o = run_plain(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#).expect_ok();
    assert_eq!(
        o.json(),
        json!({"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]})
    );
}

#[test]
fn errors_are_json_on_stdout_with_spec_codes() {
    let base = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/none"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", CNI_PATH),
    ];
    let good = r#"{"cniVersion":"1.0.0","name":"xdplane","type":"xdplane-cni","adminSocket":"/nonexistent/x.sock"}"#;

    let v = run_plain(&base, "{this is not json").expect_err(6);
    assert_eq!(v["cniVersion"], "1.0.0");

    let v = run_plain(
        &base,
        r#"{"cniVersion":"0.2.0","name":"n","type":"xdplane-cni"}"#,
    )
    .expect_err(1);
    assert!(v["msg"].as_str().unwrap().contains("0.2.0"), "{v}");

    run_plain(&base[1..], good).expect_err(4);
    let no_id: Vec<_> = base
        .iter()
        .filter(|(k, _)| *k != "CNI_CONTAINERID")
        .copied()
        .collect();
    let v = run_plain(&no_id, good).expect_err(4);
    assert!(
        v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{v}"
    );
    let mut bad_cmd = base;
    bad_cmd[0] = ("CNI_COMMAND", "FROB");
    run_plain(&bad_cmd, good).expect_err(4);

    let v = run_plain(&base, r#"{"cniVersion":"0.4.0","type":"xdplane-cni"}"#).expect_err(7);
    assert_eq!(v["cniVersion"], "0.4.0");
    run_plain(
        &base,
        r#"{"cniVersion":"1.0.0","name":"n","type":"xdplane-cni","mtu":10}"#,
    )
    .expect_err(7);
}

#[test]
fn unreachable_agent_is_try_again_and_allocates_nothing() {
    let node = Node::new();
    let pod = Netns::new("pod");
    let mut conf = node.conf("1.0.0");
    conf["adminSocket"] = json!(node.dir.0.join("absent.sock").display().to_string());
    let v = node
        .run("ADD", "c-unreach", Some(&pod.path()), &conf)
        .expect_err(11);
    assert!(v["msg"].as_str().unwrap().contains("not reachable"), "{v}");
    assert!(node.allocated().is_empty());
    assert_eq!(node.ns.links(), vec!["lo"]);
    assert_eq!(pod.links(), vec!["lo"]);
}

#[test]
fn unknown_ipam_type_fails_and_leaves_nothing() {
    let node = Node::new();
    let pod = Netns::new("pod");
    let mut conf = node.conf("1.0.0");
    conf["ipam"] = json!({"type": "no-such-ipam-plugin"});
    let v = node
        .run("ADD", "c-noipam", Some(&pod.path()), &conf)
        .expect_err(7);
    assert!(
        v["msg"].as_str().unwrap().contains("no-such-ipam-plugin"),
        "{v}"
    );
    assert_eq!(node.ns.links(), vec!["lo"]);
    assert_eq!(pod.links(), vec!["lo"]);
    assert!(
        !node
            .agent()
            .requests()
            .iter()
            .any(|r| matches!(r, Request::Attach(_)))
    );
}

#[test]
fn refused_attach_is_rolled_back() {
    let node = Node::new();
    let pod = Netns::new("pod");
    node.agent().state.lock().unwrap().refuse_attach = true;
    let conf = node.conf("1.0.0");
    let v = node
        .run("ADD", "c-refused", Some(&pod.path()), &conf)
        .expect_err(5);
    assert!(v["msg"].as_str().unwrap().contains("refused"), "{v}");
    // The IP was allocated, then released; the veth was created, then deleted.
    assert!(node.allocated().is_empty(), "{:?}", node.allocated());
    assert_eq!(node.ns.links(), vec!["lo"]);
    assert_eq!(pod.links(), vec!["lo"]);
    let reqs = node.agent().requests();
    assert!(reqs.iter().any(|r| matches!(r, Request::Attach(_))));
    assert!(
        matches!(reqs.last(), Some(Request::Detach { .. })),
        "{reqs:?}"
    );
}

#[test]
fn add_check_del() {
    let node = Node::new();
    let pod = Netns::new("pod");
    let conf = node.conf("1.0.0");
    let id = "0123456789abcdef-add-check-del";
    let res = node
        .run_env(
            "ADD",
            Some(id),
            Some(&pod.path()),
            &conf,
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=nginx-0",
        )
        .expect_ok()
        .json();
    let gw = format!("{}.1", node.subnet);
    assert_eq!(res["cniVersion"], "1.0.0");
    let host = host_ifname_of(&res);
    assert!(host.starts_with("xv") && host.len() == 13, "{host}");
    assert_eq!(res["interfaces"][1]["name"], "eth0");
    assert_eq!(res["interfaces"][1]["sandbox"], pod.path());
    assert_eq!(res["ips"][0]["gateway"], gw);
    assert_eq!(res["ips"][0]["interface"], 1);
    assert!(res["ips"][0].get("version").is_none(), "{res}");
    assert_eq!(res["routes"], json!([{"dst": "0.0.0.0/0", "gw": gw}]));
    let addr = res["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(
        addr.starts_with(&format!("{}.", node.subnet)) && addr.ends_with("/24"),
        "{addr}"
    );
    let pod_ip = addr.split('/').next().unwrap().to_string();

    // The pod: address, default route via the gateway, MAC as reported, lo up, MTU.
    assert_eq!(pod_addrs(&pod), vec![addr.clone()]);
    let routes = ip_json(&["-n", &pod.0, "-j", "-4", "route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], gw, "{routes}");
    assert_eq!(routes[0]["dev"], "eth0");
    let mac = pod_mac(&pod);
    assert_eq!(res["interfaces"][1]["mac"], mac);
    let lo = ip_json(&["-n", &pod.0, "-j", "link", "show", "dev", "lo"]);
    assert!(lo[0]["flags"].as_array().unwrap().contains(&json!("UP")));
    let eth0 = ip_json(&["-n", &pod.0, "-j", "-d", "link", "show", "dev", "eth0"]);
    assert_eq!(eth0[0]["mtu"], 1450);
    assert_eq!(eth0[0]["num_rx_queues"], 1);
    // Transmit checksum offload is off: frames leave the pod with complete checksums.
    let k = std::process::Command::new("ip")
        .args(["netns", "exec", &pod.0, "ethtool", "-k", "eth0"])
        .output()
        .unwrap();
    let k = String::from_utf8_lossy(&k.stdout);
    assert!(k.contains("tx-checksumming: off"), "{k}");

    // The node: the host veth lives in the node namespace, up, no address, no IPv6.
    assert!(
        !ip(&["link", "show", "dev", &host]).status.success(),
        "host veth in the root namespace"
    );
    let h = ip_json(&["-n", &node.ns.0, "-j", "-d", "addr", "show", "dev", &host]);
    assert!(
        h[0]["flags"].as_array().unwrap().contains(&json!("UP")),
        "{h}"
    );
    assert_eq!(h[0]["addr_info"], json!([]), "{h}");
    assert_eq!(h[0]["mtu"], 1450);
    assert_eq!(h[0]["num_tx_queues"], 1);
    assert_eq!(res["interfaces"][0]["mac"], h[0]["address"]);
    let v6 = Command::new("ip")
        .args(["netns", "exec", &node.ns.0, "cat"])
        .arg(format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&v6.stdout).trim(), "1");

    // The agent got the attachment.
    let a = node.agent().attached(id).expect("attached");
    assert_eq!(
        a,
        Attachment {
            container_id: id.into(),
            pod_namespace: "web".into(),
            pod_name: "nginx-0".into(),
            ifname: host.clone(),
            ip: pod_ip.clone(),
            mac: mac.clone(),
        }
    );
    assert_eq!(node.allocated(), vec![pod_ip.clone()]);

    // CHECK passes; then fails once the route is gone, and when the agent forgets the pod.
    let checked = with_prev(&conf, &res);
    node.run("CHECK", id, Some(&pod.path()), &checked)
        .expect_ok();
    assert!(
        ip(&["-n", &pod.0, "route", "del", "default"])
            .status
            .success()
    );
    let v = node
        .run("CHECK", id, Some(&pod.path()), &checked)
        .expect_err(5);
    assert!(v["msg"].as_str().unwrap().contains("default route"), "{v}");
    assert!(
        ip(&[
            "-n", &pod.0, "route", "add", "default", "via", &gw, "dev", "eth0"
        ])
        .status
        .success()
    );
    node.run("CHECK", id, Some(&pod.path()), &checked)
        .expect_ok();
    let saved = node
        .agent()
        .state
        .lock()
        .unwrap()
        .attached
        .remove(id)
        .unwrap();
    let v = node
        .run("CHECK", id, Some(&pod.path()), &checked)
        .expect_err(5);
    assert!(v["msg"].as_str().unwrap().contains("not attached"), "{v}");
    node.agent()
        .state
        .lock()
        .unwrap()
        .attached
        .insert(id.into(), saved);

    // DEL: detached, veth gone on both sides, address released; a second DEL succeeds.
    node.run("DEL", id, Some(&pod.path()), &checked).expect_ok();
    assert!(node.agent().attached(id).is_none());
    assert_eq!(node.ns.links(), vec!["lo"]);
    assert_eq!(pod.links(), vec!["lo"]);
    assert!(node.allocated().is_empty());
    node.run("DEL", id, Some(&pod.path()), &checked).expect_ok();
    let v = node
        .run("CHECK", id, Some(&pod.path()), &checked)
        .expect_err(5);
    assert!(v["msg"].as_str().unwrap().contains("does not exist"), "{v}");
}

#[test]
fn two_pods_get_two_addresses() {
    let node = Node::new();
    let (p1, p2) = (Netns::new("pod"), Netns::new("pod"));
    let conf = node.conf("1.0.0");
    let r1 = node
        .run("ADD", "pod-one", Some(&p1.path()), &conf)
        .expect_ok()
        .json();
    let r2 = node
        .run("ADD", "pod-two", Some(&p2.path()), &conf)
        .expect_ok()
        .json();
    assert_ne!(r1["ips"][0]["address"], r2["ips"][0]["address"]);
    assert_ne!(host_ifname_of(&r1), host_ifname_of(&r2));
    assert_eq!(node.allocated().len(), 2);
    assert_eq!(node.ns.links().len(), 3);
    // A second ADD for a live container is refused without touching the first one.
    let p3 = Netns::new("pod");
    node.run("ADD", "pod-one", Some(&p3.path()), &conf)
        .expect_err(5);
    assert_eq!(node.allocated().len(), 2);
    assert_eq!(p3.links(), vec!["lo"]);
    node.run("DEL", "pod-one", Some(&p1.path()), &conf)
        .expect_ok();
    node.run("DEL", "pod-two", Some(&p2.path()), &conf)
        .expect_ok();
    assert!(node.allocated().is_empty());
    assert_eq!(node.ns.links(), vec!["lo"]);
}

#[test]
fn del_without_netns_and_without_agent() {
    let mut node = Node::new();
    let pod = Netns::new("pod");
    let conf = node.conf("1.0.0");
    let res = node
        .run("ADD", "c-gone", Some(&pod.path()), &conf)
        .expect_ok()
        .json();
    assert_eq!(node.allocated().len(), 1);
    // The pod's namespace goes first (the veth dies with it), then the agent stops.
    drop(pod);
    // The kernel dismantles a deleted namespace asynchronously; wait for the peer to go.
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.ns.links() != vec!["lo"] {
        assert!(
            Instant::now() < deadline,
            "host veth outlived its pod: {:?}",
            node.ns.links()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(node.agent.take());
    let o = node
        .run_env("DEL", Some("c-gone"), None, &conf, "")
        .expect_ok();
    assert!(o.stderr.contains("skipping detach"), "{}", o.stderr);
    assert!(node.allocated().is_empty(), "{:?}", node.allocated());
    node.run("DEL", "c-gone", None, &with_prev(&conf, &res))
        .expect_ok();
}

#[test]
fn older_versions_get_older_shapes() {
    let node = Node::new();
    let pod = Netns::new("pod");
    for (i, v) in ["0.3.1", "0.4.0"].iter().enumerate() {
        let conf = node.conf(v);
        let id = format!("c-old-{i}");
        let res = node
            .run("ADD", &id, Some(&pod.path()), &conf)
            .expect_ok()
            .json();
        assert_eq!(res["cniVersion"], *v);
        assert_eq!(res["ips"][0]["version"], "4");
        let checked = with_prev(&conf, &res);
        if *v == "0.3.1" {
            node.run("CHECK", &id, Some(&pod.path()), &checked)
                .expect_err(1);
        } else {
            node.run("CHECK", &id, Some(&pod.path()), &checked)
                .expect_ok();
        }
        node.run("DEL", &id, Some(&pod.path()), &checked)
            .expect_ok();
        assert_eq!(pod.links(), vec!["lo"]);
    }
    assert!(node.allocated().is_empty());
}

#[test]
fn own_ipam_section_is_used() {
    let node = Node::new();
    let pod = Netns::new("pod");
    let mut conf = node.conf("1.0.0");
    let dd = node.dir.0.join("own-ipam");
    conf["ipam"] = json!({
        "type": "host-local",
        "ranges": [[{"subnet": "10.251.7.0/28", "rangeStart": "10.251.7.9", "gateway": "10.251.7.14"}]],
        "dataDir": dd.display().to_string(),
    });
    conf["mtu"] = json!(1400);
    let res = node
        .run("ADD", "c-own", Some(&pod.path()), &conf)
        .expect_ok()
        .json();
    assert_eq!(res["ips"][0]["address"], "10.251.7.9/28");
    assert_eq!(res["ips"][0]["gateway"], "10.251.7.14");
    let routes = ip_json(&["-n", &pod.0, "-j", "-4", "route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "10.251.7.14");
    let eth0 = ip_json(&["-n", &pod.0, "-j", "link", "show", "dev", "eth0"]);
    assert_eq!(eth0[0]["mtu"], 1400);
    assert!(dd.join("xdplane").join("10.251.7.9").exists());
    node.run("CHECK", "c-own", Some(&pod.path()), &with_prev(&conf, &res))
        .expect_ok();
    node.run("DEL", "c-own", Some(&pod.path()), &conf)
        .expect_ok();
    assert!(!dd.join("xdplane").join("10.251.7.9").exists());
    assert!(node.allocated().is_empty());
}
