//! `xdplane lab demo`: the project's main job shown step by step in a fresh lab.

use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

use crate::flannel::{self, Mode};
use crate::lab::{self, LabConfig, PodSpec, UpOptions};
use crate::state::{LabState, PodState};
use crate::testpod::Proto;

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub nodes: usize,
    /// Kernel flannel nodes of the demo's lab.
    pub kernel_nodes: Vec<String>,
    pub manifests: Option<PathBuf>,
    /// Leave the lab running afterwards.
    pub keep: bool,
}

/// Name of the pod the demo adds while the agents run.
pub const LIVE_POD: &str = "live-pod";

struct Demo {
    lab: String,
    step: usize,
    passed: usize,
    failed: usize,
}

impl Demo {
    fn begin(&mut self, title: &str, what: &str) {
        self.step += 1;
        crate::outln!();
        crate::outln!("[{}] {title}", self.step);
        for l in what.lines() {
            crate::outln!("    {l}");
        }
    }
    fn command(&self, cmd: &str) {
        crate::outln!("    $ {cmd}");
    }
    fn output(&self, text: &str) {
        for l in text.trim_end().lines() {
            crate::outln!("    | {l}");
        }
    }
    fn result(&mut self, ok: bool, msg: &str) -> bool {
        if ok {
            self.passed += 1;
            crate::outln!("    ✓ {msg}");
        } else {
            self.failed += 1;
            crate::outln!("    ✗ {msg}");
        }
        ok
    }
    fn lab_flag(&self) -> String {
        format!("--name {}", self.lab)
    }
}

/// Runs the demo; the exit code is 0 when every step passed.
pub fn run(cfg: &LabConfig, opts: &DemoOptions) -> Result<i32> {
    let mut d = Demo {
        lab: cfg.name.clone(),
        step: 0,
        passed: 0,
        failed: 0,
    };
    crate::outln!(
        "xdplane lab demo: a {}-node lab in network namespaces, one xdplane agent per node \
         forwarding pod traffic over AF_XDP, pods wired by the xdplane CNI plugin{}.",
        opts.nodes,
        if opts.kernel_nodes.is_empty() {
            String::new()
        } else {
            format!(
                "; {} run the kernel's flannel datapath instead",
                opts.kernel_nodes.join(", ")
            )
        }
    );

    d.begin(
        "Bring up the lab",
        "Fabric bridge, node namespaces with their uplinks, one agent per node, and the pods\n\
         of the manifests (the seed's demo2 = myapp:v2 and deployment = myapp:v1), each\n\
         created through xdplane-cni exactly as a container runtime would.",
    );
    let mut up_cmd = format!("xdplane lab up {} --nodes {}", d.lab_flag(), opts.nodes);
    if !opts.kernel_nodes.is_empty() {
        up_cmd.push_str(&format!(" --kernel-nodes {}", opts.kernel_nodes.join(",")));
    }
    if let Some(m) = &opts.manifests {
        up_cmd.push_str(&format!(" --manifests {}", m.display()));
    }
    d.command(&up_cmd);
    let up = lab::up(
        cfg,
        &UpOptions {
            nodes: opts.nodes,
            kernel_nodes: opts.kernel_nodes.clone(),
            manifests: opts.manifests.clone(),
            verbose: true,
            ..UpOptions::default()
        },
    );
    let st = match up {
        Ok(st) => {
            d.result(
                true,
                &format!("{} nodes and {} pods up", st.nodes.len(), st.pods.len()),
            );
            Some(st)
        }
        Err(e) => {
            d.result(false, &format!("{e:#}"));
            None
        }
    };
    if let Some(st) = &st {
        steps(&mut d, cfg, st);
        cross_node(&mut d, cfg, st);
    }

    if opts.keep {
        crate::outln!();
        crate::outln!(
            "The lab is kept: `xdplane lab status {}`, and `xdplane lab down {}` to remove it.",
            d.lab_flag(),
            d.lab_flag()
        );
    } else {
        d.begin(
            "Tear down",
            "Stop the test servers, CNI DEL every pod while its agent runs, stop the agents,\n\
             delete every namespace of the lab.",
        );
        d.command(&format!("xdplane lab down {}", d.lab_flag()));
        match lab::down(cfg) {
            Ok(r) => d.result(
                true,
                &format!(
                    "{} processes stopped, {} pods deleted through CNI, {} namespaces removed",
                    r.processes_stopped,
                    r.cni_deleted,
                    r.netns_deleted.len()
                ),
            ),
            Err(e) => d.result(false, &format!("{e:#}")),
        };
    }
    crate::outln!();
    crate::outln!("{} passed, {} failed", d.passed, d.failed);
    Ok(if d.failed == 0 { 0 } else { 1 })
}

/// The two pods the same-node steps use: the first two pods of the xdplane node with the
/// most (of any node when there is no xdplane node).
fn same_node_pair(st: &LabState) -> Option<(PodState, PodState)> {
    let node = st.nodes.iter().max_by_key(|n| {
        (
            !n.is_kernel(),
            st.pods.iter().filter(|p| p.node == n.name).count(),
            std::cmp::Reverse(n.index),
        )
    })?;
    let mut on = st
        .pods
        .iter()
        .filter(|p| p.node == node.name && p.ip().is_some());
    let a = on.next()?.clone();
    // Prefer a pod of another workload (demo2 → deployment) when there is one.
    let rest: Vec<&PodState> = on.collect();
    let b = rest
        .iter()
        .find(|p| p.name.split('-').next() != a.name.split('-').next())
        .or(rest.first())?;
    Some((a, (*b).clone()))
}

fn ping(d: &mut Demo, st: &LabState, from: &PodState, to_label: &str, ip: &str) -> bool {
    let cmd: Vec<String> = ["ping", "-c", "3", "-i", "0.2", "-W", "1", ip]
        .map(String::from)
        .to_vec();
    d.command(&format!(
        "xdplane lab exec {} {} -- {}",
        d.lab_flag(),
        from.display_name(),
        cmd.join(" ")
    ));
    match lab::exec_capture(st, &from.display_name(), &cmd) {
        Ok((code, out)) => {
            let summary = out
                .lines()
                .find(|l| l.contains("packets transmitted"))
                .unwrap_or("")
                .to_string();
            d.output(&summary);
            d.result(
                code == 0,
                &format!(
                    "{} → {to_label} ({ip}): {}",
                    from.display_name(),
                    if code == 0 { "replies" } else { "no reply" }
                ),
            )
        }
        Err(e) => d.result(false, &format!("{e:#}")),
    }
}

fn probe(
    d: &mut Demo,
    st: &LabState,
    from: &PodState,
    to: &PodState,
    port: u16,
    proto: Proto,
    expect_name: bool,
) -> bool {
    d.command(&format!(
        "xdplane lab probe {} {} {} {port}/{}",
        d.lab_flag(),
        from.display_name(),
        to.display_name(),
        proto.as_str()
    ));
    match lab::probe_in(
        st,
        &from.display_name(),
        &to.display_name(),
        port,
        proto,
        Duration::from_secs(2),
    ) {
        Ok(r) => {
            d.output(&r.output);
            let named = r.output.contains(&format!("\"{}\"", to.name));
            let ok = r.ok && (!expect_name || named);
            let msg = match (r.ok, named) {
                (true, true) => format!("{} answered with its own name", to.display_name()),
                (true, false) => format!("connected, but the answer is not {:?}", to.name),
                _ => "no connection".into(),
            };
            d.result(ok, &msg)
        }
        Err(e) => d.result(false, &format!("{e:#}")),
    }
}

fn steps(d: &mut Demo, cfg: &LabConfig, st: &LabState) {
    d.begin(
        "Pods and their addresses",
        "Every pod got an address from its node's podCIDR through xdplane-cni, and its\n\
         agent answers on the admin socket.",
    );
    d.command(&format!("xdplane lab status {}", d.lab_flag()));
    match lab::status(cfg) {
        Ok(s) => {
            d.output(&s.render());
            d.result(
                s.healthy(),
                if s.healthy() {
                    "every agent answers, every pod has an address and a running server"
                } else {
                    "something is down (see the table)"
                },
            );
        }
        Err(e) => {
            d.result(false, &format!("{e:#}"));
        }
    }

    let Some((a, b)) = same_node_pair(st) else {
        d.begin(
            "Same-node traffic",
            "Needs two pods with addresses on one node.",
        );
        d.result(
            false,
            "no node has two pods (use more replicas or fewer nodes)",
        );
        return;
    };
    let gw = a
        .gateway
        .clone()
        .or_else(|| st.node(&a.node).and_then(|n| n.gateway.clone()));

    let on_kernel = st.node(&a.node).is_some_and(|n| n.is_kernel());
    d.begin(
        "Pod → gateway",
        if on_kernel {
            "On a kernel flannel node the gateway is cni0's address, answered by the kernel."
        } else {
            "The pod's default gateway is answered by the dataplane itself (ARP and ICMP echo\n\
             in the pipeline), not by a kernel bridge."
        },
    );
    match &gw {
        Some(gw) => {
            ping(d, st, &a, "gateway", gw);
        }
        None => {
            d.result(
                false,
                "neither the CNI result nor the agent named a gateway",
            );
        }
    }

    d.begin(
        "Pod ↔ pod on one node: ping",
        &format!(
            "{} and {} are both on {}: {}.",
            a.display_name(),
            b.display_name(),
            a.node,
            if on_kernel {
                "the kernel's cni0 bridge moves frames between their ports"
            } else {
                "the agent moves frames between their ports"
            }
        ),
    );
    let (aip, bip) = (
        a.ip().map(|i| i.to_string()).unwrap_or_default(),
        b.ip().map(|i| i.to_string()).unwrap_or_default(),
    );
    ping(d, st, &a, &b.display_name(), &bip);
    ping(d, st, &b, &a.display_name(), &aip);

    d.begin(
        "Pod ↔ pod on one node: TCP (HTTP) and UDP",
        "Each pod runs the test server on its containerPort: HTTP answers with the pod's\n\
         name (like myapp's /hostname.html), UDP answers \"hostname\" with it.",
    );
    probe(d, st, &a, &b, 80, Proto::Tcp, true);
    probe(d, st, &b, &a, 80, Proto::Tcp, true);
    probe(d, st, &a, &b, 80, Proto::Udp, true);

    d.begin(
        "A pod added live",
        &format!(
            "A new pod on {} while the agent runs: namespace, CNI ADD (the agent attaches\n\
             its port and publishes new tables), test server; then traffic to it.",
            a.node
        ),
    );
    d.command(&format!(
        "xdplane lab add-pod {} {LIVE_POD} --node {}",
        d.lab_flag(),
        a.node
    ));
    let live = lab::add_pod(
        cfg,
        &PodSpec {
            namespace: "default".into(),
            name: LIVE_POD.into(),
            node: a.node.clone(),
            ports: vec![80],
            mtu: None,
            ..PodSpec::default()
        },
    );
    match live {
        Ok(live) => {
            d.result(
                true,
                &format!(
                    "{} is {} ({})",
                    live.display_name(),
                    live.address.as_deref().unwrap_or("?"),
                    live.mac.as_deref().unwrap_or("?")
                ),
            );
            // Re-read the state: it now has the live pod.
            let st2 = cfg.load();
            match st2 {
                Ok(st2) => {
                    probe(d, &st2, &a, &live, 80, Proto::Tcp, true);
                    probe(d, &st2, &live, &b, 80, Proto::Udp, true);
                }
                Err(e) => {
                    d.result(false, &format!("{e:#}"));
                }
            }
        }
        Err(e) => {
            d.result(false, &format!("{e:#}"));
        }
    }

    d.begin(
        "Dataplane counters",
        &format!("What {}'s agent counted: per worker, per port.", a.node),
    );
    if let Some(node) = st.node(&a.node).filter(|n| n.is_kernel()) {
        d.result(
            true,
            &format!(
                "{} is a kernel flannel node: no agent, nothing to count",
                node.name
            ),
        );
    } else if let Some(node) = st.node(&a.node) {
        let bin = st.bin_dir.join(lab::AGENT_BIN);
        let sock = node.admin_socket.display().to_string();
        d.command(&format!("xdplane stats --admin-socket {sock}"));
        match std::process::Command::new(&bin)
            .args(["stats", "--admin-socket", &sock])
            .output()
        {
            Ok(out) => {
                d.output(&String::from_utf8_lossy(&out.stdout));
                d.output(&String::from_utf8_lossy(&out.stderr));
                d.result(
                    out.status.success(),
                    if out.status.success() {
                        "counters read"
                    } else {
                        "stats failed"
                    },
                );
            }
            Err(e) => {
                d.result(false, &format!("running {}: {e}", bin.display()));
            }
        }
    }
}

/// Pairs of pods on different nodes, an xdplane node's pod first: one with another xdplane
/// node's pod (xdplane ↔ xdplane) and one with a kernel node's pod (xdplane ↔ kernel
/// flannel), whichever the lab has.
fn cross_node_pairs(st: &LabState) -> Vec<(PodState, PodState)> {
    let kind_of = |p: &PodState| st.node(&p.node).map(|n| n.is_kernel());
    let with_ip: Vec<&PodState> = st.pods.iter().filter(|p| p.ip().is_some()).collect();
    let Some(a) = with_ip
        .iter()
        .find(|p| kind_of(p) == Some(false))
        .or(with_ip.first())
    else {
        return vec![];
    };
    let others: Vec<&&PodState> = with_ip.iter().filter(|p| p.node != a.node).collect();
    let mut pairs = vec![];
    for want_kernel in [false, true] {
        if let Some(b) = others.iter().find(|p| kind_of(p) == Some(want_kernel)) {
            pairs.push(((*a).clone(), (**b).clone()));
        }
    }
    if pairs.is_empty()
        && let Some(b) = others.first()
    {
        pairs.push(((*a).clone(), (**b).clone()));
    }
    pairs
}

/// Pings `to` from `from` while tcpdump watches the fabric for VXLAN; true when the VXLAN
/// packets seen are what `want_vxlan` says.
fn watch_fabric(d: &mut Demo, st: &LabState, from: &PodState, to: &PodState, want_vxlan: bool) {
    let ip = to.ip().map(|i| i.to_string()).unwrap_or_default();
    d.command(&format!(
        "xdplane lab exec {} fabric -- tcpdump -i br0 -nn -T vxlan -c 4 udp port 8472   # while {} pings {ip}",
        d.lab_flag(),
        from.display_name()
    ));
    let ping: Vec<String> = ["ping", "-c", "4", "-i", "0.2", "-W", "1", &ip]
        .map(String::from)
        .to_vec();
    let from_name = from.display_name();
    let r = lab::capture_fabric(st, "udp port 8472", 4, Duration::from_secs(3), || {
        lab::exec_capture(st, &from_name, &ping)
    });
    match r {
        Ok((cap, ping)) => {
            d.output(&cap.packets);
            let vxlan = cap.packets.contains("VXLAN, flags [I] (0x08), vni");
            let replies = matches!(ping, Ok((0, _)));
            let ok = replies && vxlan == want_vxlan;
            let msg = match (want_vxlan, vxlan) {
                (true, true) => "pod traffic crosses the fabric inside VXLAN (VNI, flags I)",
                (false, false) => "pod traffic crosses the fabric as plain IP: no VXLAN",
                (true, false) => "no VXLAN seen on the fabric",
                (false, true) => "VXLAN seen although the mode routes directly",
            };
            d.result(
                ok,
                &format!(
                    "{msg}{}",
                    if replies {
                        ""
                    } else {
                        "; the ping got no reply"
                    }
                ),
            );
        }
        Err(e) => {
            d.result(false, &format!("{e:#}"));
        }
    }
}

fn switch_mode(d: &mut Demo, cfg: &LabConfig, mode: Mode) -> bool {
    d.command(&format!("xdplane lab mode {} {mode}", d.lab_flag()));
    match lab::set_mode(cfg, mode) {
        Ok(r) => {
            d.output(&r.lines().join("\n"));
            d.result(
                true,
                &format!(
                    "net-conf.json says {}; Nodes re-annotated, agents reloaded, no pod restarted",
                    mode
                ),
            )
        }
        Err(e) => d.result(false, &format!("{e:#}")),
    }
}

/// The issue-3 steps: pods on different nodes, over VXLAN, then host-gw, switched live.
/// Shown only when every agent reports VXLAN support (`vtepMac` in node-info).
fn cross_node(d: &mut Demo, cfg: &LabConfig, st: &LabState) {
    let unsupported: Vec<&str> = st
        .nodes
        .iter()
        .filter(|n| !n.vxlan_support)
        .map(|n| n.name.as_str())
        .collect();
    if st.nodes.len() < 2 || !unsupported.is_empty() {
        crate::outln!();
        crate::outln!(
            "(Across nodes: not shown — {}.)",
            if st.nodes.len() < 2 {
                "the lab has one node; run the demo with --nodes 3".to_string()
            } else {
                format!(
                    "the agents of {} do not report VXLAN support yet (no vtepMac in node-info)",
                    unsupported.join(", ")
                )
            }
        );
        return;
    }
    let pairs = cross_node_pairs(st);
    let Some((a, b)) = pairs.first().cloned() else {
        d.begin("Across nodes", "Needs pods with addresses on two nodes.");
        d.result(false, "no two nodes have pods");
        return;
    };
    let kind = |p: &PodState| {
        st.node(&p.node).map_or("?", |n| {
            if n.is_kernel() {
                "kernel flannel"
            } else {
                "xdplane"
            }
        })
    };

    d.begin(
        "flannel's view: the ConfigMap and the Node annotations",
        "As flanneld does, every node publishes its VTEP on its Node object; the lab plays\n\
         the API server and writes them into the manifests the agents read.",
    );
    d.command(&format!(
        "grep -h flannel.alpha.coreos.com {}/*.yaml",
        st.manifests_dir.display()
    ));
    match xdplane_control::manifest::load_dir(&st.manifests_dir) {
        Ok(l) => {
            let mut ok = true;
            let mut lines = String::new();
            for n in &st.nodes {
                let ann = l.model.nodes.get(&n.name).map(|x| &x.annotations);
                let get = |k: &str| ann.and_then(|a| a.get(k)).cloned().unwrap_or_default();
                let data = get(flannel::ANN_BACKEND_DATA);
                ok &= n.vtep_mac.as_deref().is_some_and(|m| data.contains(m));
                lines.push_str(&format!(
                    "{}: backend-type={} backend-data={} public-ip={}\n",
                    n.name,
                    get(flannel::ANN_BACKEND_TYPE),
                    data,
                    get(flannel::ANN_PUBLIC_IP)
                ));
            }
            d.output(&lines);
            d.result(ok, "every Node carries its VtepMAC (VNI 1, UDP 8472)");
        }
        Err(e) => {
            d.result(false, &format!("{e:#}"));
        }
    }

    for (a, b) in &pairs {
        let (a, b) = (a.clone(), b.clone());
        d.begin(
            &format!(
                "Pod ↔ pod across nodes: {} ↔ {} (vxlan)",
                kind(&a),
                kind(&b)
            ),
            &format!(
                "{} on {} ({}) and {} on {} ({}): frames are wrapped in VXLAN by the sending\n\
                 node and unwrapped by the other, wire-compatible with flannel.1.",
                a.display_name(),
                a.node,
                kind(&a),
                b.display_name(),
                b.node,
                kind(&b)
            ),
        );
        let (aip, bip) = (
            a.ip().map(|i| i.to_string()).unwrap_or_default(),
            b.ip().map(|i| i.to_string()).unwrap_or_default(),
        );
        ping(d, st, &a, &b.display_name(), &bip);
        ping(d, st, &b, &a.display_name(), &aip);
        probe(d, st, &a, &b, 80, Proto::Tcp, true);
        probe(d, st, &b, &a, 80, Proto::Udp, true);
        d.command(&format!(
            "xdplane lab probe {} {} {} 80 --bytes 10M --timeout 60s",
            d.lab_flag(),
            a.display_name(),
            b.display_name()
        ));
        match lab::transfer_in(
            st,
            &a.display_name(),
            &b.display_name(),
            80,
            10 << 20,
            Duration::from_secs(60),
        ) {
            Ok(r) => {
                d.output(&r.output);
                d.result(
                    r.ok,
                    if r.ok {
                        "10 MiB there and back, intact"
                    } else {
                        "transfer failed"
                    },
                );
            }
            Err(e) => {
                d.result(false, &format!("{e:#}"));
            }
        }
    }

    // The mode switches below use the first pair.
    let bip = b.ip().map(|i| i.to_string()).unwrap_or_default();

    d.begin(
        "On the wire",
        "A capture on the fabric bridge between the nodes.",
    );
    watch_fabric(d, st, &a, &b, true);

    d.begin(
        "Switch to host-gw, live",
        "The seed guide's `kubectl -n kube-system edit cm kube-flannel-cfg`: the backend\n\
         becomes host-gw; nodes on one subnet route pod traffic to each other directly.",
    );
    if switch_mode(d, cfg, Mode::HostGw) {
        ping(d, st, &a, &b.display_name(), &bip);
        probe(d, st, &a, &b, 80, Proto::Tcp, true);
        watch_fabric(d, st, &a, &b, false);
    }

    d.begin(
        "DirectRouting, then back to vxlan",
        "vxlan with DirectRouting: direct routes to nodes on the same subnet (all of them\n\
         here), VXLAN to the rest.",
    );
    if switch_mode(d, cfg, Mode::DirectRouting) {
        probe(d, st, &b, &a, 80, Proto::Tcp, true);
        watch_fabric(d, st, &a, &b, false);
    }
    if switch_mode(d, cfg, Mode::Vxlan) {
        probe(d, st, &a, &b, 80, Proto::Udp, true);
        watch_fabric(d, st, &b, &a, true);
    }
}
