//! `xdplane lab demo`: the project's main job shown step by step in a fresh lab.

use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

use crate::flannel::{self, Mode};
use crate::lab::{self, LabConfig, PodSpec, UpOptions};
use crate::services::{self, ServiceView};
use crate::state::{LabState, PodState};
use crate::testpod::Ask;
use crate::testpod::Proto;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

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
        services_steps(&mut d, cfg);
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

// ---------------------------------------------------------------------------------------
// Services (issue 4)

/// One probe for the Services steps: the answer (HTTP body / UDP reply) or why there is
/// none; the command is shown.
fn ask(
    d: &Demo,
    st: &LabState,
    from: &str,
    (to, port, proto): (&str, u16, Proto),
    what: Ask,
    show: bool,
) -> Result<String, String> {
    if show {
        d.command(&format!(
            "xdplane lab probe {} {from} {to} {port}/{}{}",
            d.lab_flag(),
            proto.as_str(),
            if what == Ask::Clientip {
                " --ask clientip"
            } else {
                ""
            }
        ));
    }
    match lab::probe_ask_in(st, from, to, port, proto, what, Duration::from_secs(3)) {
        Ok(r) if r.ok => {
            let out = &r.output;
            let end = out.rfind('"');
            let start = end.and_then(|e| out[..e].rfind('"'));
            match (start, end) {
                (Some(s), Some(e)) => Ok(out[s + 1..e].to_string()),
                _ => Err(format!("no answer: {out}")),
            }
        }
        Ok(r) => Err(r.output),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The first TCP port of a Service view: (port, nodePort).
fn tcp_port(v: &ServiceView) -> Option<(u16, Option<u16>)> {
    v.ports.iter().find_map(|p| {
        let (port, rest) = p.split_once("/TCP")?;
        let np = rest
            .split_once("nodePort ")
            .and_then(|(_, n)| n.trim().parse().ok());
        Some((port.parse().ok()?, np))
    })
}

/// Pod names of a Service's endpoints (`IP@node pod`).
fn endpoint_pods(v: &ServiceView) -> BTreeSet<String> {
    v.endpoints
        .iter()
        .filter_map(|e| e.rsplit(' ').next())
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .collect()
}

fn endpoint_nodes(v: &ServiceView) -> Vec<String> {
    v.endpoints
        .iter()
        .filter_map(|e| e.split_once('@'))
        .filter_map(|(_, rest)| rest.split(' ').next())
        .map(str::to_string)
        .collect()
}

fn node_kind(st: &LabState, node: &str) -> &'static str {
    if st.node(node).is_some_and(|n| n.is_kernel()) {
        "kernel + kube-proxy"
    } else {
        "xdplane"
    }
}

/// The issue-4 steps: Services reached by ClusterIP from every node, by NodePort from the
/// external host, eTP Local, masquerade, hairpin, reject, Maglev, conntrack.
fn services_steps(d: &mut Demo, cfg: &LabConfig) {
    let st = match cfg.load() {
        Ok(s) => s,
        Err(e) => {
            d.begin("Services", "");
            d.result(false, &format!("{e:#}"));
            return;
        }
    };
    d.begin(
        "Services and their endpoints",
        "The lab plays the endpointslice controller: from the pods it runs it writes the\n\
         EndpointSlices into the manifests the agents read (and loads kube-proxy's iptables\n\
         rules on kernel nodes). ClusterIPs and nodePorts are allocated by the loader.",
    );
    d.command(&format!("xdplane lab services {}", d.lab_flag()));
    let views = match services::list(&st) {
        Ok(v) => v,
        Err(e) => {
            d.result(false, &format!("{e:#}"));
            return;
        }
    };
    d.output(&services::render(&views));
    let with_eps: Vec<&ServiceView> = views
        .iter()
        .filter(|v| !v.endpoints.is_empty() && v.cluster_ip.is_some() && tcp_port(v).is_some())
        .collect();
    d.result(
        !with_eps.is_empty(),
        &format!(
            "{} Services, {} with endpoints",
            views.len(),
            views.iter().filter(|v| !v.endpoints.is_empty()).count()
        ),
    );

    // ClusterIP from a pod on every node.
    d.begin(
        "ClusterIP from every node",
        "A pod on each node connects to the ClusterIP; the node's dataplane picks a backend\n\
         (DNAT), the reply is translated back. On a kernel node kube-proxy's rules do it.",
    );
    let seed: Vec<&ServiceView> = {
        let named: Vec<&ServiceView> = with_eps
            .iter()
            .copied()
            .filter(|v| v.name == "myservice" || v.name == "nginx-svc")
            .collect();
        if named.is_empty() {
            with_eps.iter().copied().take(2).collect()
        } else {
            named
        }
    };
    let mut clients: Vec<(String, String)> = Vec::new(); // (node, pod)
    for n in &st.nodes {
        if let Some(p) = st
            .pods
            .iter()
            .find(|p| p.node == n.name && p.ip().is_some())
        {
            clients.push((n.name.clone(), p.display_name()));
        }
    }
    for v in &seed {
        let (Some(ip), Some((port, _))) = (v.cluster_ip, tcp_port(v)) else {
            continue;
        };
        let backends = endpoint_pods(v);
        for (node, pod) in &clients {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            let mut bad = Vec::new();
            for i in 0..6 {
                match ask(
                    d,
                    &st,
                    pod,
                    (&ip.to_string(), port, Proto::Tcp),
                    Ask::Hostname,
                    i == 0,
                ) {
                    Ok(a) if backends.contains(&a) => *seen.entry(a).or_default() += 1,
                    Ok(a) => bad.push(format!("answered by {a}, not a backend")),
                    Err(e) => bad.push(e),
                }
            }
            let spread = seen
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            d.result(
                bad.is_empty(),
                &format!(
                    "{}/{} {ip}:{port} from {pod} on {node} ({}): {}",
                    v.namespace,
                    v.name,
                    node_kind(&st, node),
                    if bad.is_empty() {
                        format!("6/6 answered by {spread}")
                    } else {
                        bad.join("; ")
                    }
                ),
            );
        }
    }

    let ext_ip = st.ext.as_ref().map(|e| e.ip);
    // NodePort from the external host.
    d.begin(
        "NodePort from the external host",
        "The external host (<lab>-ext, 192.168.50.254, standing for the internet) connects to\n\
         every node's address on the nodePort. externalTrafficPolicy Cluster: any node\n\
         forwards to a backend anywhere, source NATed so the reply comes back through it.",
    );
    let np_cluster = views.iter().find(|v| {
        !v.is_local() && !v.endpoints.is_empty() && tcp_port(v).is_some_and(|(_, n)| n.is_some())
    });
    match np_cluster {
        None => crate::outln!(
            "    (the manifests have no NodePort Service with externalTrafficPolicy Cluster and endpoints: not shown)"
        ),
        Some(v) => {
            let np = tcp_port(v).and_then(|(_, n)| n).unwrap_or(0);
            let backends = endpoint_pods(v);
            for n in &st.nodes {
                let r = ask(
                    d,
                    &st,
                    "ext",
                    (&n.ip.to_string(), np, Proto::Tcp),
                    Ask::Hostname,
                    true,
                );
                let local = endpoint_nodes(v).contains(&n.name);
                d.result(
                    r.as_ref().is_ok_and(|a| backends.contains(a)),
                    &format!(
                        "{}/{} on {}:{np} ({}{}): {}",
                        v.namespace,
                        v.name,
                        n.name,
                        node_kind(&st, &n.name),
                        if local { "" } else { ", no local endpoint" },
                        match &r {
                            Ok(a) => format!("answered by {a}"),
                            Err(e) => e.clone(),
                        }
                    ),
                );
            }
            // The Service's external addresses (externalIPs, LoadBalancer IPs): the
            // external host routes them to a node.
            let port = tcp_port(v).map_or(80, |(p, _)| p);
            for ip in &v.external_ips {
                let r = ask(
                    d,
                    &st,
                    "ext",
                    (&ip.to_string(), port, Proto::Tcp),
                    Ask::Hostname,
                    true,
                );
                d.result(
                    r.as_ref().is_ok_and(|a| backends.contains(a)),
                    &format!(
                        "{}/{} external address {ip}:{port}: {}",
                        v.namespace,
                        v.name,
                        match &r {
                            Ok(a) => format!("answered by {a}"),
                            Err(e) => e.clone(),
                        }
                    ),
                );
            }
        }
    }

    // eTP Local.
    d.begin(
        "externalTrafficPolicy: Local keeps the client address",
        "A NodePort with policy Local is served only by the receiving node's own endpoints,\n\
         without source NAT: the backend sees the external host's address.",
    );
    let np_local = views.iter().find(|v| {
        v.is_local() && !v.endpoints.is_empty() && tcp_port(v).is_some_and(|(_, n)| n.is_some())
    });
    match (np_local, ext_ip) {
        (Some(v), Some(ext_ip)) => {
            let np = tcp_port(v).and_then(|(_, n)| n).unwrap_or(0);
            let nodes = endpoint_nodes(v);
            if let Some(n) = nodes.first().and_then(|n| st.node(n)) {
                let r = ask(
                    d,
                    &st,
                    "ext",
                    (&n.ip.to_string(), np, Proto::Tcp),
                    Ask::Clientip,
                    true,
                );
                d.result(
                    r.as_ref()
                        .is_ok_and(|a| a.split(':').next() == Some(&ext_ip.to_string())),
                    &format!(
                        "{}/{} on {}:{np}: the endpoint saw {}",
                        v.namespace,
                        v.name,
                        n.name,
                        match &r {
                            Ok(a) => format!("{a} (the external host is {ext_ip})"),
                            Err(e) => e.clone(),
                        }
                    ),
                );
            }
        }
        _ => crate::outln!(
            "    (the manifests have no NodePort Service with externalTrafficPolicy Local and endpoints: not shown)"
        ),
    }

    // Masquerade.
    d.begin(
        "Pods reach the outside from the node's address",
        "flannel's ip-masq: traffic from pods to outside the cluster network leaves with the\n\
         node's address (a port from the agent's SNAT range); the replies are translated back.",
    );
    for (node, pod) in &clients {
        let nip = st.node(node).map(|n| n.ip);
        let r = ask(d, &st, pod, ("ext", 80, Proto::Tcp), Ask::Clientip, true);
        d.result(
            match (&r, nip) {
                (Ok(a), Some(ip)) => a.split(':').next() == Some(&ip.to_string()),
                _ => false,
            },
            &format!(
                "{pod} on {node} ({}) → ext: the external host saw {}",
                node_kind(&st, node),
                match &r {
                    Ok(a) => format!(
                        "{a} (the node is {})",
                        nip.map_or("?".into(), |i: Ipv4Addr| i.to_string())
                    ),
                    Err(e) => e.clone(),
                }
            ),
        );
    }

    // Hairpin.
    d.begin(
        "Hairpin",
        "A backend connecting to its own Service can land on itself; the dataplane then also\n\
         rewrites the source (to the node's pod gateway) so the reply comes back through it.",
    );
    let hp = seed.iter().find_map(|v| {
        let ip = v.cluster_ip?;
        let (port, _) = tcp_port(v)?;
        let pod = st.pods.iter().find(|p| {
            endpoint_pods(v).contains(&p.name) && st.node(&p.node).is_some_and(|n| !n.is_kernel())
        })?;
        Some((v, ip, port, pod.clone()))
    });
    match hp {
        None => crate::outln!("    (no Service with an endpoint on an xdplane node: not shown)"),
        Some((v, ip, port, pod)) => {
            let mut tries = 0;
            let mut hit = None;
            while tries < 30 && hit.is_none() {
                tries += 1;
                match ask(
                    d,
                    &st,
                    &pod.display_name(),
                    (&ip.to_string(), port, Proto::Tcp),
                    Ask::Hostname,
                    tries == 1,
                ) {
                    Ok(a) if a == pod.name => hit = Some(a),
                    _ => {}
                }
            }
            d.result(
                hit.is_some(),
                &format!(
                    "{} → {}/{} {ip}:{port}: {}",
                    pod.display_name(),
                    v.namespace,
                    v.name,
                    if hit.is_some() {
                        format!("answered by itself (connection {tries})")
                    } else {
                        "never answered by itself in 30 connections".into()
                    }
                ),
            );
        }
    }

    // Reject.
    d.begin(
        "A Service without endpoints refuses at once",
        "No endpoint: the dataplane answers a TCP SYN with a RST and UDP with ICMP port\n\
         unreachable (kube-proxy's REJECT), so clients fail at once instead of timing out.",
    );
    reject_step(d, cfg, &st, &views, &clients);

    // Session affinity.
    if let Some(v) = views.iter().find(|v| {
        v.session_affinity
            && v.endpoints.len() > 1
            && v.cluster_ip.is_some()
            && tcp_port(v).is_some()
    }) && let (Some(ip), Some((port, _)), Some((node, pod))) =
        (v.cluster_ip, tcp_port(v), clients.first())
    {
        d.begin(
            "Session affinity (ClientIP)",
            "The Service remembers each client's backend (an affinity entry in the flow\n\
             table): every connection of one client lands on the same pod.",
        );
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut failed = Vec::new();
        for i in 0..8 {
            match ask(
                d,
                &st,
                pod,
                (&ip.to_string(), port, Proto::Tcp),
                Ask::Hostname,
                i == 0,
            ) {
                Ok(a) => {
                    seen.insert(a);
                }
                Err(e) => failed.push(e),
            }
        }
        d.result(
            failed.is_empty() && seen.len() == 1,
            &format!(
                "{}/{} from {pod} on {node}: 8 connections, {}",
                v.namespace,
                v.name,
                if failed.is_empty() {
                    format!(
                        "answered by {}",
                        seen.iter().cloned().collect::<Vec<_>>().join(" and ")
                    )
                } else {
                    failed.join("; ")
                }
            ),
        );
    }

    // Maglev.
    d.begin(
        "Backend choice: Maglev",
        "Each new flow's backend comes from a Maglev lookup table (consistent hashing of the\n\
         5-tuple): backends get near-equal shares, and when one goes only its flows move.\n\
         Established flows keep their backend (conntrack), also across endpoint changes.",
    );
    if let (Some(v), Some((_, pod))) = (seed.first(), clients.first())
        && let (Some(ip), Some((port, _))) = (v.cluster_ip, tcp_port(v))
    {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut failed = 0;
        for _ in 0..20 {
            match ask(
                d,
                &st,
                pod,
                (&ip.to_string(), port, Proto::Tcp),
                Ask::Hostname,
                false,
            ) {
                Ok(a) => *seen.entry(a).or_default() += 1,
                Err(_) => failed += 1,
            }
        }
        d.output(
            &seen
                .iter()
                .map(|(k, n)| format!("{k}: {n} of 20 connections"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        d.result(
            failed == 0 && seen.len() == endpoint_pods(v).len(),
            &format!(
                "20 connections from {pod} to {}/{} spread over {} backends",
                v.namespace,
                v.name,
                seen.len()
            ),
        );
    }

    // conntrack.
    d.begin(
        "The flow table",
        "Every translated flow is one entry of the node's shared flow table, found by its\n\
         original and its reply tuple.",
    );
    if let Some(n) = st.nodes.iter().find(|n| !n.is_kernel()) {
        let bin = st.bin_dir.join(lab::AGENT_BIN);
        let sock = n.admin_socket.display().to_string();
        d.command(&format!("xdplane conntrack --admin-socket {sock} --max 10"));
        match std::process::Command::new(&bin)
            .args(["conntrack", "--admin-socket", &sock, "--max", "10"])
            .output()
        {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                d.output(&text);
                d.output(&String::from_utf8_lossy(&out.stderr));
                d.result(
                    out.status.success() && text.lines().count() > 2,
                    &format!("{}'s flows listed", n.name),
                );
            }
            Err(e) => {
                d.result(false, &format!("running {}: {e}", bin.display()));
            }
        }
    }
}

/// The reject step: a Service of the manifests without endpoints, or else one made so by
/// scaling its Deployment to 0 (and back afterwards).
fn reject_step(
    d: &mut Demo,
    cfg: &LabConfig,
    st: &LabState,
    views: &[ServiceView],
    clients: &[(String, String)],
) {
    let Some((_, pod)) = clients
        .iter()
        .find(|(n, _)| st.node(n).is_some_and(|n| !n.is_kernel()))
    else {
        crate::outln!("    (no xdplane node with a pod: not shown)");
        return;
    };
    let empty = views
        .iter()
        .find(|v| v.endpoints.is_empty() && v.cluster_ip.is_some() && !v.ports.is_empty());
    let mut restore: Option<(String, u32)> = None;
    let target: Option<ServiceView> = match empty {
        Some(v) => Some(v.clone()),
        None => {
            // Scale the workload behind the second seed Service to 0.
            let v = views.iter().rev().find(|v| {
                !v.endpoints.is_empty() && v.cluster_ip.is_some() && tcp_port(v).is_some()
            });
            let workload = v.and_then(|v| {
                let pods = endpoint_pods(v);
                st.pods
                    .iter()
                    .find(|p| pods.contains(&p.name))
                    .and_then(|p| p.workload.clone())
                    .map(|w| (w, pods.len() as u32))
            });
            match (v, workload) {
                (Some(v), Some((w, n))) => {
                    let name = w.rsplit('/').next().unwrap_or(&w).to_string();
                    d.command(&format!("xdplane lab scale {} {name} 0", d.lab_flag()));
                    match lab::scale(cfg, &name, 0) {
                        Ok(r) => {
                            d.result(
                                true,
                                &format!(
                                    "{} scaled to 0: {} pods removed, {}/{} has no endpoints",
                                    r.workload,
                                    r.removed.len(),
                                    v.namespace,
                                    v.name
                                ),
                            );
                            restore = Some((name, n));
                            Some(v.clone())
                        }
                        Err(e) => {
                            d.result(false, &format!("{e:#}"));
                            None
                        }
                    }
                }
                _ => None,
            }
        }
    };
    let Some(v) = target else {
        crate::outln!("    (no Service to empty: not shown)");
        return;
    };
    let st2 = cfg.load().unwrap_or_else(|_| st.clone());
    let ip = v.cluster_ip.map(|i| i.to_string()).unwrap_or_default();
    for p in &v.ports {
        let Some((port, proto)) = p.split_once('→').and_then(|(pp, _)| {
            let (port, proto) = pp.split_once('/')?;
            Some((port.parse::<u16>().ok()?, proto.parse::<Proto>().ok()?))
        }) else {
            continue;
        };
        let t0 = std::time::Instant::now();
        let r = ask(d, &st2, pod, (&ip, port, proto), Ask::Hostname, true);
        let took = t0.elapsed();
        let want = match proto {
            Proto::Tcp => "refused",
            Proto::Udp => "ICMP port unreachable",
        };
        d.result(
            matches!(&r, Err(e) if e.contains(want)) && took < Duration::from_secs(1),
            &format!(
                "{}/{} {ip}:{port}/{}: {} after {:.0} ms",
                v.namespace,
                v.name,
                proto.as_str(),
                match &r {
                    Ok(a) => format!("answered by {a}?"),
                    Err(e) => e.rsplit(": ").next().unwrap_or(e).to_string(),
                },
                took.as_secs_f64() * 1e3
            ),
        );
    }
    if let Some((name, n)) = restore {
        d.command(&format!("xdplane lab scale {} {name} {n}", d.lab_flag()));
        match lab::scale(cfg, &name, n) {
            Ok(r) => {
                let st3 = cfg.load().unwrap_or_else(|_| st.clone());
                let (port, _) = tcp_port(&v).unwrap_or((80, None));
                let back = ask(d, &st3, pod, (&ip, port, Proto::Tcp), Ask::Hostname, true);
                d.result(
                    back.is_ok(),
                    &format!(
                        "{} back to {n}: {}",
                        r.workload,
                        match &back {
                            Ok(a) => format!("{}/{} answers again ({a})", v.namespace, v.name),
                            Err(e) => e.clone(),
                        }
                    ),
                );
            }
            Err(e) => {
                d.result(false, &format!("{e:#}"));
            }
        }
    }
}
