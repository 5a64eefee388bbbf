//! `xdplane lab …`: the command line of the lab (mounted by the agent binary).

use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

use crate::demo::{self, DemoOptions};
use crate::flannel::Mode;
use crate::lab::{self, LabConfig, PodSpec, UpOptions};
use crate::names;
use crate::testpod::{parse_duration, parse_size};

fn duration_arg(s: &str) -> std::result::Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn size_arg(s: &str) -> std::result::Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn label_arg(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid label {s:?}: KEY=VALUE")),
    }
}

/// Which lab.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LabName {
    /// Lab name: every namespace is `<name>-…` (default: $XDPLANE_LAB, else `xl`).
    #[arg(long)]
    pub name: Option<String>,
}

impl LabName {
    pub fn config(&self) -> Result<LabConfig> {
        LabConfig::new(&names::resolve_lab_name(self.name.as_deref())?)
    }
}

/// `xdplane lab …`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum LabCmd {
    /// Create a lab: fabric bridge, N nodes each running an agent, the manifests' pods.
    Up {
        #[command(flatten)]
        lab: LabName,
        /// Number of nodes (server1..N).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Nodes without xdplane, set up as flanneld + the flannel CNI set up a node's kernel
        /// (flannel.1, cni0, bridge plugin): `server3` or `server2,server3`.
        #[arg(long, value_name = "NODES", value_delimiter = ',')]
        kernel_nodes: Vec<String>,
        /// Every node a kernel flannel node (the kernel baseline).
        #[arg(long, conflicts_with = "kernel_nodes")]
        all_kernel: bool,
        /// flannel mode to start in (default: what the manifests' kube-flannel-cfg says).
        #[arg(long, value_enum)]
        mode: Option<Mode>,
        /// Manifest directory (default: the repository's or installed deploy/lab).
        #[arg(long)]
        manifests: Option<PathBuf>,
        /// Create nodes and agents, no pods.
        #[arg(long)]
        no_pods: bool,
        /// How long to wait for each agent's admin socket.
        #[arg(long, default_value = "30s", value_parser = duration_arg)]
        ready_timeout: Duration,
        /// Pod MTU given to the agents.
        #[arg(long)]
        pod_mtu: Option<u32>,
    },
    /// Switch flannel's mode: rewrite the kube-flannel-cfg ConfigMap, the Node annotations,
    /// re-program kernel nodes and reload every agent (pods keep running).
    Mode {
        #[command(flatten)]
        lab: LabName,
        /// vxlan, directrouting or host-gw.
        #[arg(value_enum)]
        mode: Mode,
        #[arg(long)]
        json: bool,
    },
    /// Re-apply the manifests: write the Node annotations, re-program kernel nodes, reload
    /// every agent (after editing <state>/manifests by hand).
    Sync {
        #[command(flatten)]
        lab: LabName,
        #[arg(long)]
        json: bool,
    },
    /// Remove a lab (also a half-created one); nothing to do is fine.
    Down {
        #[command(flatten)]
        lab: LabName,
    },
    /// Nodes, agents and pods of a lab.
    Status {
        #[command(flatten)]
        lab: LabName,
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a pod's namespace (or a node's: server1, or `fabric`).
    Exec {
        #[command(flatten)]
        lab: LabName,
        /// Pod (`name` or `namespace/name`), node (`server1`) or `fabric`.
        target: String,
        /// The command, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Probe TO:PORT from FROM's namespace (TCP connect + HTTP, or UDP hostname); exit 0 on success.
    Probe {
        #[command(flatten)]
        lab: LabName,
        /// Pod or node the probe runs in.
        from: String,
        /// Pod, node or IPv4 address.
        to: String,
        /// PORT, PORT/tcp or PORT/udp.
        port: String,
        #[arg(long, default_value = "1s", value_parser = duration_arg)]
        timeout: Duration,
        /// TCP: push this many bytes (e.g. 10M) through the target's echo and check them,
        /// instead of an HTTP GET (a bulk transfer; give a longer --timeout).
        #[arg(long, value_name = "N", value_parser = size_arg)]
        bytes: Option<u64>,
        /// With --bytes: at most this many bytes per second (e.g. 2M).
        #[arg(long, value_name = "BYTES", value_parser = size_arg, requires = "bytes")]
        rate: Option<u64>,
        /// What to ask the server: its name, or the client address it sees (`clientip`).
        #[arg(long, value_enum, default_value = "hostname")]
        ask: crate::testpod::Ask,
        #[arg(long)]
        json: bool,
    },
    /// The lab's Services: clusterIP, ports and nodePorts, policies, endpoints (as the
    /// EndpointSlices the lab writes hold them).
    Services {
        #[command(flatten)]
        lab: LabName,
        #[arg(long)]
        json: bool,
    },
    /// `kubectl scale`: set a workload's replicas in the lab's manifests; pods are created
    /// or deleted to match (leaving pods go out of their Services' endpoints first).
    Scale {
        #[command(flatten)]
        lab: LabName,
        /// The Deployment (or ReplicaSet/StatefulSet): `name` or `namespace/name`.
        workload: String,
        replicas: u32,
        #[arg(long)]
        json: bool,
    },
    /// Add a pod to a running lab (namespace, CNI ADD, test server).
    AddPod {
        #[command(flatten)]
        lab: LabName,
        /// `name` or `namespace/name`.
        pod: String,
        /// The node: server1, server2, …
        #[arg(long)]
        node: String,
        /// Port the test server listens on, TCP and UDP (repeatable; default 80).
        #[arg(long = "port", value_name = "PORT")]
        ports: Vec<u16>,
        /// The pod's MTU (default: what its node gives pods).
        #[arg(long)]
        mtu: Option<u32>,
        /// A label `key=value` (repeatable): Services whose selector matches get the pod
        /// as an endpoint.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label_arg)]
        labels: Vec<(String, String)>,
    },
    /// Remove one pod (test server, CNI DEL, namespace).
    DelPod {
        #[command(flatten)]
        lab: LabName,
        /// `name` or `namespace/name`.
        pod: String,
    },
    /// Show xdplane's job step by step in a fresh lab, then remove it.
    Demo {
        #[command(flatten)]
        lab: LabName,
        /// Number of nodes (cross-node steps need 2 or more, and agents that do VXLAN).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Kernel flannel nodes in the demo's lab, to show xdplane ↔ kernel flannel
        /// (`none`: every node runs xdplane; nodes beyond --nodes are left out).
        #[arg(
            long,
            value_name = "NODES",
            value_delimiter = ',',
            default_value = "server3"
        )]
        kernel_nodes: Vec<String>,
        /// Manifest directory (default: deploy/lab).
        #[arg(long)]
        manifests: Option<PathBuf>,
        /// Leave the lab running.
        #[arg(long)]
        keep: bool,
    },
}

/// Runs a `lab` subcommand; returns the exit code.
pub fn run_lab(cmd: LabCmd) -> Result<i32> {
    match cmd {
        LabCmd::Up {
            lab: l,
            nodes,
            kernel_nodes,
            all_kernel,
            mode,
            manifests,
            no_pods,
            ready_timeout,
            pod_mtu,
        } => {
            let cfg = l.config()?;
            let st = lab::up(
                &cfg,
                &UpOptions {
                    nodes,
                    kernel_nodes,
                    all_kernel,
                    mode,
                    manifests,
                    no_pods,
                    ready_timeout,
                    pod_mtu,
                    verbose: true,
                },
            )?;
            crate::outln!();
            crate::outln!("{}", lab::status(&cfg)?.render().trim_end());
            crate::outln!();
            crate::outln!(
                "lab {} is up: {} nodes, {} pods, flannel mode {}. `xdplane lab status --name {0}`, \
                 `xdplane lab probe --name {0} FROM TO 80/tcp`, `xdplane lab mode --name {0} host-gw`, \
                 `xdplane lab down --name {0}`.",
                st.name,
                st.nodes.len(),
                st.pods.len(),
                st.mode
            );
            Ok(0)
        }
        LabCmd::Mode { lab: l, mode, json } => {
            let r = lab::set_mode(&l.config()?, mode)?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let compact = serde_json::from_str::<serde_json::Value>(&r.net_conf_text)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|_| r.net_conf_text.trim().to_string());
                crate::outln!(
                    "flannel mode {}: kube-system/kube-flannel-cfg net-conf.json is now {compact}",
                    r.mode
                );
                for line in r.lines() {
                    crate::outln!("{line}");
                }
                crate::outln!(
                    "running pods keep their MTU; new pods get the mode's ({}).",
                    if r.mode.is_vxlan() {
                        "uplink − 50"
                    } else {
                        "the uplink's"
                    }
                );
            }
            Ok(0)
        }
        LabCmd::Sync { lab: l, json } => {
            let r = lab::sync(&l.config()?)?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for line in r.lines() {
                    crate::outln!("{line}");
                }
            }
            Ok(0)
        }
        LabCmd::Down { lab: l } => {
            let cfg = l.config()?;
            let r = lab::down(&cfg)?;
            if r.nothing_to_do() {
                crate::outln!("lab {}: nothing to remove", cfg.name);
            } else {
                crate::outln!(
                    "lab {}: {} processes stopped, {} pods deleted through CNI, {} namespaces removed",
                    cfg.name,
                    r.processes_stopped,
                    r.cni_deleted,
                    r.netns_deleted.len()
                );
            }
            for e in &r.cni_errors {
                eprintln!("warning: CNI DEL {e}");
            }
            Ok(0)
        }
        LabCmd::Status { lab: l, json } => {
            let cfg = l.config()?;
            let s = lab::status(&cfg)?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                crate::outln!("{}", s.render().trim_end());
            }
            Ok(if s.healthy() { 0 } else { 1 })
        }
        LabCmd::Exec {
            lab: l,
            target,
            cmd,
        } => lab::exec(&l.config()?, &target, &cmd),
        LabCmd::Probe {
            lab: l,
            from,
            to,
            port,
            timeout,
            bytes,
            rate,
            ask,
            json,
        } => {
            let (port, proto) = lab::parse_port(&port)?;
            let cfg = l.config()?;
            let st = cfg.load()?;
            let r = match bytes {
                Some(n) => {
                    if proto != crate::testpod::Proto::Tcp {
                        anyhow::bail!("--bytes goes through the TCP echo: use PORT or PORT/tcp");
                    }
                    lab::transfer_paced_in(&st, &from, &to, port, n, rate, timeout)?
                }
                None => lab::probe_ask_in(&st, &from, &to, port, proto, ask, timeout)?,
            };
            if json {
                crate::outln!("{}", serde_json::to_string(&r)?);
            } else {
                crate::outln!("{}", r.line());
            }
            Ok(if r.ok { 0 } else { 1 })
        }
        LabCmd::AddPod {
            lab: l,
            pod,
            node,
            ports,
            mtu,
            labels,
        } => {
            let (namespace, name) = match pod.split_once('/') {
                Some((ns, n)) => (ns.to_string(), n.to_string()),
                None => ("default".to_string(), pod.clone()),
            };
            let container_ports = lab::server_ports(&ports)
                .into_iter()
                .flat_map(|p| {
                    ["TCP", "UDP"].map(|proto| crate::state::PodPort {
                        name: None,
                        port: p,
                        protocol: proto.into(),
                    })
                })
                .collect();
            let p = lab::add_pod(
                &l.config()?,
                &PodSpec {
                    namespace,
                    name,
                    node,
                    ports,
                    mtu,
                    labels: labels.into_iter().collect(),
                    container_ports,
                    workload: None,
                },
            )?;
            crate::outln!(
                "pod {} on {}: {} {} (netns {})",
                p.display_name(),
                p.node,
                p.address.as_deref().unwrap_or("?"),
                p.mac.as_deref().unwrap_or("?"),
                p.netns
            );
            Ok(0)
        }
        LabCmd::Services { lab: l, json } => {
            let st = l.config()?.load()?;
            let v = crate::services::list(&st)?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                crate::outln!("{}", crate::services::render(&v).trim_end());
            }
            Ok(0)
        }
        LabCmd::Scale {
            lab: l,
            workload,
            replicas,
            json,
        } => {
            let r = lab::scale(&l.config()?, &workload, replicas)?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                crate::outln!("{} scaled to {}", r.workload, r.replicas);
                for p in &r.removed {
                    crate::outln!("pod {} removed (was on {})", p.display_name(), p.node);
                }
                for p in &r.added {
                    crate::outln!(
                        "pod {} on {}: {}",
                        p.display_name(),
                        p.node,
                        p.address.as_deref().unwrap_or("?")
                    );
                }
                for line in r.after.lines() {
                    crate::outln!("{line}");
                }
            }
            Ok(0)
        }
        LabCmd::DelPod { lab: l, pod } => {
            let p = lab::del_pod(&l.config()?, &pod)?;
            crate::outln!("pod {} removed", p.display_name());
            Ok(0)
        }
        LabCmd::Demo {
            lab: l,
            nodes,
            kernel_nodes,
            manifests,
            keep,
        } => demo::run(
            &l.config()?,
            &DemoOptions {
                nodes,
                // `none`, and nodes the demo's lab does not have, run no kernel datapath.
                kernel_nodes: kernel_nodes
                    .into_iter()
                    .filter(|k| {
                        k != "none"
                            && k.strip_prefix("server")
                                .and_then(|i| i.parse::<usize>().ok())
                                .is_some_and(|i| i >= 1 && i <= nodes)
                    })
                    .collect(),
                manifests,
                keep,
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Top {
        #[command(subcommand)]
        cmd: Top2,
    }
    #[derive(clap::Subcommand, Debug)]
    enum Top2 {
        #[command(subcommand)]
        Lab(LabCmd),
        #[command(subcommand)]
        Testpod(crate::testpod::TestpodCmd),
    }

    fn parse(args: &[&str]) -> Top2 {
        Top::try_parse_from(std::iter::once("xdplane").chain(args.iter().copied()))
            .unwrap()
            .cmd
    }

    #[test]
    fn parses_lab_commands() {
        match parse(&["lab", "up", "--name", "t1", "--nodes", "2", "--no-pods"]) {
            Top2::Lab(LabCmd::Up {
                lab,
                nodes,
                no_pods,
                ready_timeout,
                ..
            }) => {
                assert_eq!(lab.name.as_deref(), Some("t1"));
                assert_eq!(nodes, 2);
                assert!(no_pods);
                assert_eq!(ready_timeout, Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "lab",
            "exec",
            "demo2-abc",
            "--",
            "ping",
            "-c",
            "1",
            "10.244.1.1",
        ]) {
            Top2::Lab(LabCmd::Exec { target, cmd, .. }) => {
                assert_eq!(target, "demo2-abc");
                assert_eq!(cmd, ["ping", "-c", "1", "10.244.1.1"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["lab", "probe", "a", "b", "80/udp", "--timeout", "500ms"]) {
            Top2::Lab(LabCmd::Probe {
                from,
                to,
                port,
                timeout,
                ..
            }) => {
                assert_eq!(
                    (from.as_str(), to.as_str(), port.as_str()),
                    ("a", "b", "80/udp")
                );
                assert_eq!(timeout, Duration::from_millis(500));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["lab", "demo", "--keep"]) {
            Top2::Lab(LabCmd::Demo { nodes, keep, .. }) => {
                assert_eq!(nodes, 3);
                assert!(keep);
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "lab",
            "up",
            "--kernel-nodes",
            "server2,server3",
            "--mode",
            "host-gw",
        ]) {
            Top2::Lab(LabCmd::Up {
                kernel_nodes,
                all_kernel,
                mode,
                ..
            }) => {
                assert_eq!(kernel_nodes, ["server2", "server3"]);
                assert!(!all_kernel);
                assert_eq!(mode, Some(Mode::HostGw));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Top::try_parse_from([
                "xdplane",
                "lab",
                "up",
                "--all-kernel",
                "--kernel-nodes",
                "server1"
            ])
            .is_err(),
            "--all-kernel and --kernel-nodes exclude each other"
        );
        for (arg, want) in [
            ("vxlan", Mode::Vxlan),
            ("directrouting", Mode::DirectRouting),
            ("host-gw", Mode::HostGw),
        ] {
            match parse(&["lab", "mode", arg]) {
                Top2::Lab(LabCmd::Mode { mode, .. }) => assert_eq!(mode, want),
                other => panic!("{other:?}"),
            }
        }
        assert!(Top::try_parse_from(["xdplane", "lab", "mode", "udp"]).is_err());
        match parse(&[
            "lab",
            "probe",
            "a",
            "b",
            "80",
            "--bytes",
            "10M",
            "--timeout",
            "60s",
        ]) {
            Top2::Lab(LabCmd::Probe { bytes, .. }) => assert_eq!(bytes, Some(10 << 20)),
            other => panic!("{other:?}"),
        }
        assert!(
            Top::try_parse_from(["xdplane", "lab", "exec", "pod"]).is_err(),
            "exec needs a command"
        );
    }

    #[test]
    fn parses_services_commands() {
        match parse(&["lab", "scale", "--name", "t1", "demo2", "3"]) {
            Top2::Lab(LabCmd::Scale {
                lab,
                workload,
                replicas,
                json,
            }) => {
                assert_eq!(lab.name.as_deref(), Some("t1"));
                assert_eq!((workload.as_str(), replicas, json), ("demo2", 3, false));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["lab", "services", "--json"]),
            Top2::Lab(LabCmd::Services { json: true, .. })
        ));
        match parse(&[
            "lab",
            "add-pod",
            "p",
            "--node",
            "server1",
            "--label",
            "app=myapp",
            "--label",
            "tier=",
        ]) {
            Top2::Lab(LabCmd::AddPod { labels, .. }) => assert_eq!(
                labels,
                [
                    ("app".to_string(), "myapp".to_string()),
                    ("tier".to_string(), String::new())
                ]
            ),
            other => panic!("{other:?}"),
        }
        match parse(&[
            "lab",
            "probe",
            "ext",
            "10.96.0.10",
            "80",
            "--bytes",
            "10M",
            "--rate",
            "2M",
        ]) {
            Top2::Lab(LabCmd::Probe {
                bytes, rate, ask, ..
            }) => {
                assert_eq!((bytes, rate), (Some(10 << 20), Some(2 << 20)));
                assert_eq!(ask, crate::testpod::Ask::Hostname);
            }
            other => panic!("{other:?}"),
        }
        // --rate needs --bytes; a label needs a key.
        assert!(
            Top::try_parse_from(["x", "lab", "probe", "a", "b", "80", "--rate", "1M"]).is_err()
        );
        assert!(
            Top::try_parse_from(["x", "lab", "add-pod", "p", "--node", "s", "--label", "=v"])
                .is_err()
        );
    }

    #[test]
    fn parses_testpod_commands() {
        match parse(&[
            "testpod", "serve", "--name", "p", "--tcp", "80", "--udp", "80", "--tcp", "8080",
        ]) {
            Top2::Testpod(crate::testpod::TestpodCmd::Serve { name, tcp, udp, .. }) => {
                assert_eq!(name, "p");
                assert_eq!(tcp, [80, 8080]);
                assert_eq!(udp, [80]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "testpod",
            "probe",
            "--to",
            "10.244.1.2:80",
            "--proto",
            "udp",
            "--timeout",
            "1s",
            "--ask",
            "clientip",
        ]) {
            Top2::Testpod(crate::testpod::TestpodCmd::Probe {
                to,
                proto,
                timeout,
                bytes,
                rate,
                ask,
            }) => {
                assert_eq!(bytes, None);
                assert_eq!(rate, None);
                assert_eq!(ask, crate::testpod::Ask::Clientip);
                assert_eq!(to.to_string(), "10.244.1.2:80");
                assert_eq!(proto, crate::testpod::Proto::Udp);
                assert_eq!(timeout, Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "testpod",
            "flood",
            "--to",
            "10.0.0.1:9",
            "--count",
            "10",
            "--rate",
            "100",
        ]) {
            Top2::Testpod(crate::testpod::TestpodCmd::Flood {
                count, size, rate, ..
            }) => {
                assert_eq!((count, size, rate), (10, 64, Some(100)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn down_of_a_lab_that_never_existed_is_fine() {
        let name = format!("n{}", std::process::id());
        let code = run_lab(LabCmd::Down {
            lab: LabName { name: Some(name) },
        })
        .unwrap();
        assert_eq!(code, 0);
    }
}
