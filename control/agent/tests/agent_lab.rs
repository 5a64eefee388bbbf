//! End-to-end tests of the node agent in a one-node lab (root; real AF_XDP on veths).
//!
//! They run the real binaries: `xdplane` (this crate) and `xdplane-cni` next to it
//! (`cargo build --bins` first; `scripts/test.sh` does).

use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const XDPLANE: &str = env!("CARGO_BIN_EXE_xdplane");

fn run(args: &[&str]) -> Output {
    Command::new(XDPLANE)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running xdplane {args:?}: {e}"))
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "xdplane {args:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A lab that is taken down when the test ends, pass or fail.
struct Lab {
    name: String,
}

impl Lab {
    fn up(tag: &str) -> Lab {
        let name = format!("{tag}{}", std::process::id() % 100_000);
        let cni = std::path::Path::new(XDPLANE).with_file_name("xdplane-cni");
        assert!(
            cni.exists(),
            "{} is missing: run `cargo build --bins` first",
            cni.display()
        );
        let lab = Lab { name };
        ok(&["lab", "up", "--name", &lab.name, "--nodes", "1"]);
        lab
    }
    fn status(&self) -> Value {
        serde_json::from_str(&ok(&["lab", "status", "--name", &self.name, "--json"]))
            .expect("lab status --json")
    }
    fn stats(&self, socket: &str) -> Value {
        serde_json::from_str(&ok(&["stats", "--admin-socket", socket, "--json"]))
            .expect("stats --json")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = run(&["lab", "down", "--name", &self.name]);
    }
}

fn port_counter(stats: &Value, ip: &str, field: &str) -> u64 {
    stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["ip"] == ip)
        .unwrap_or_else(|| panic!("no port for {ip} in {stats}"))["counters"][field]
        .as_u64()
        .unwrap()
}

fn frames(stats: &Value) -> (u64, u64, u64, u64, u64) {
    let f = &stats["workers"][0]["frames"];
    let g = |k: &str| f[k].as_u64().unwrap();
    (g("total"), g("free"), g("in_fill"), g("in_tx"), g("held"))
}

/// Frames settle once traffic stops: every frame is free or on a fill ring again.
fn settled_frames(lab: &Lab, socket: &str) -> (u64, u64, u64, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = frames(&lab.stats(socket));
        if (f.3 == 0 && f.4 == 0) || Instant::now() > deadline {
            return f;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn million_frames_forwarded_leave_the_frame_pool_where_it_started_and_shutdown_detaches_xdp() {
    let lab = Lab::up("ta");
    let st = lab.status();
    let node = &st["nodes"][0];
    let socket = node["admin_socket"].as_str().unwrap().to_string();
    let node_ns = node["netns"].as_str().unwrap().to_string();
    let pods: Vec<&Value> = st["pods"].as_array().unwrap().iter().collect();
    assert!(
        pods.len() >= 2,
        "the default lab has at least two pods: {st}"
    );
    let from = pods[0]["name"].as_str().unwrap().to_string();
    let to_ip = pods[1]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();

    let before = settled_frames(&lab, &socket);
    assert_eq!(
        before.0,
        before.1 + before.2,
        "pool at rest before: {before:?}"
    );

    // Flood UDP to a port nobody listens on (the receiving pod's kernel drops them), until
    // the dataplane has forwarded at least a million frames to the destination port.
    let target = format!("{to_ip}:9");
    let mut forwarded = 0;
    for _ in 0..20 {
        ok(&[
            "lab", "exec", "--name", &lab.name, &from, "--", XDPLANE, "testpod", "flood", "--to",
            &target, "--count", "300000", "--size", "64",
        ]);
        forwarded = port_counter(&lab.stats(&socket), &to_ip, "tx_packets");
        if forwarded >= 1_000_000 {
            break;
        }
    }
    assert!(forwarded >= 1_000_000, "only {forwarded} frames forwarded");

    let after = settled_frames(&lab, &socket);
    assert_eq!(after.3, 0, "frames left on tx rings: {after:?}");
    assert_eq!(after.4, 0, "frames held by the worker: {after:?}");
    assert_eq!(after.0, before.0, "the pool's size changed");
    assert_eq!(
        after.1 + after.2,
        before.1 + before.2,
        "free + on-fill changed: before {before:?} after {after:?}"
    );
    let s = lab.stats(&socket);
    assert_eq!(
        s["workers"][0]["frames"]["bad_descs"].as_u64(),
        Some(0),
        "descriptors in the wrong place: {s}"
    );

    // SIGTERM the agent: it must leave no XDP program attached in the node.
    let pid = node["agent"]["pid"].as_i64().unwrap();
    let links = Command::new("ip")
        .args(["-n", &node_ns, "-d", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        links.contains("prog/xdp"),
        "XDP should be attached while running:\n{links}"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        // Zombies count as gone: the lab's agents are not our children.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z") || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let links = Command::new("ip")
        .args(["-n", &node_ns, "-d", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains("prog/xdp") && !links.contains("xdpgeneric"),
        "XDP still attached after shutdown:\n{links}"
    );
}

/// A NodePort Service (TCP and UDP) whose endpoint is a pod of the node: the external host
/// reaches it through the uplink (the XDP program owns the NodePorts on the node IP), the
/// agent lists the flows, and a NodePort that goes away is given back to the kernel.
#[test]
fn nodeports_are_owned_on_the_uplink_while_the_service_exists() {
    let lab = Lab::up("tn");
    let st = lab.status();
    let node = &st["nodes"][0];
    let socket = node["admin_socket"].as_str().unwrap().to_string();
    let node_ip = node["ip"].as_str().unwrap().to_string();
    let pod = &st["pods"][0];
    let pod_name = pod["name"].as_str().unwrap().to_string();
    let pod_ip = pod["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let manifests = std::path::Path::new(&socket)
        .parent()
        .unwrap()
        .join("manifests");
    assert!(manifests.is_dir(), "{} is missing", manifests.display());
    // NodePorts of their own: deploy/lab's Services hold 30080 (myapp-local) and an
    // allocated one for nginx-lb (allocated ports avoid explicit ones).
    let file = manifests.join("zz-nodeport-test.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: np-test, namespace: default}}
spec:
  type: NodePort
  selector: {{app: np-test-nothing}}
  ports:
  - {{name: web, protocol: TCP, port: 80, targetPort: 80, nodePort: 30180}}
  - {{name: dns, protocol: UDP, port: 53, targetPort: 80, nodePort: 30153}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: np-test-1
  namespace: default
  labels: {{kubernetes.io/service-name: np-test}}
addressType: IPv4
ports:
- {{name: web, protocol: TCP, port: 80}}
- {{name: dns, protocol: UDP, port: 80}}
endpoints:
- addresses: [\"{pod_ip}\"]
  conditions: {{ready: true}}
"
        ),
    )
    .unwrap();
    ok(&["reload", "--admin-socket", &socket]);
    // A veth hands the dataplane what its sender left as CHECKSUM_PARTIAL: an L4 checksum
    // field holding only the pseudo-header sum, which AF_XDP cannot flag and which NAT's
    // incremental update then carries into a wrong checksum. Real NICs deliver complete
    // checksums; the external host computes them in software, as the lab's kernel nodes do.
    let ext_ns = st["ext"]["netns"].as_str().unwrap();
    let off = Command::new("ip")
        .args([
            "netns", "exec", ext_ns, "ethtool", "-K", "eth0", "tx", "off",
        ])
        .output()
        .unwrap();
    assert!(off.status.success(), "{off:?}");
    let tables = ok(&["tables", "--admin-socket", &socket]);
    assert!(
        tables.contains(&format!("{node_ip}:30180/tcp")) && tables.contains("nodeport"),
        "{tables}"
    );

    for port in ["30180/tcp", "30153/udp"] {
        let out = ok(&[
            "lab",
            "probe",
            "--name",
            &lab.name,
            "--timeout",
            "3s",
            "ext",
            &node_ip,
            port,
        ]);
        assert!(out.contains(&pod_name), "{port}: {out}");
    }
    let ct: Value =
        serde_json::from_str(&ok(&["conntrack", "--admin-socket", &socket, "--json"])).unwrap();
    let flows = ct["flows"].as_array().unwrap();
    for (proto, port) in [("tcp", 30180), ("udp", 30153)] {
        assert!(
            flows.iter().any(|f| f["proto"] == proto
                && f["orig"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("-> {node_ip}:{port}"))
                && f["rewrite"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("-> {pod_ip}:80"))),
            "no {proto} flow to {node_ip}:{port} → {pod_ip}:80 in {ct}"
        );
    }
    let s = lab.stats(&socket);
    assert!(s["conntrack"]["inserted"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(s["conntrack"]["capacity"].as_u64(), Some(262_144), "{s}");

    // The Service goes: the kernel gets the port back and refuses the connection.
    std::fs::remove_file(&file).unwrap();
    ok(&["reload", "--admin-socket", &socket]);
    let o = run(&[
        "lab",
        "probe",
        "--name",
        &lab.name,
        "--timeout",
        "2s",
        "ext",
        &node_ip,
        "30180/tcp",
    ]);
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && text.contains("refused"), "{text}");
}
