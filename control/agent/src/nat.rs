//! Services/NAT on the node side: the SNAT port range and its checks against the kernel's
//! ephemeral ports, the uplink services the XDP program owns, the flow table's sweeper.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xdplane_pipeline::Snapshot;
use xdplane_pipeline::tables::conntrack::{
    FlowEntry, FlowState, FlowTable, PROTO_AFFINITY, PROTO_ICMP, TcpState, Tuple,
};
use xdplane_pipeline::tables::services::{FrontendKind, PROTO_UDP};

/// The kernel's ephemeral source ports (in the agent's network namespace).
pub const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
/// Kubernetes' default NodePort range (`--service-node-port-range`).
pub const NODE_PORT_RANGE: (u16, u16) = (30000, 32767);

/// Parses `LO-HI` (inclusive, 1 ≤ LO ≤ HI ≤ 65535), the form of `--snat-ports`.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected LO-HI, e.g. 61000-65535"))?;
    let port = |p: &str| -> Result<u16, String> {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("{s:?}: {p:?} is not a port number (1-65535)"))
    };
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo == 0 {
        return Err(format!("{s:?}: port 0 cannot be used"));
    }
    if lo > hi {
        return Err(format!("{s:?}: the range is empty ({lo} > {hi})"));
    }
    Ok((lo, hi))
}

/// Parses the contents of `ip_local_port_range` ("32768\t60999\n").
pub fn parse_local_port_range(text: &str) -> Result<(u16, u16), String> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi => Ok((lo, hi)),
        _ => Err(format!("unexpected contents {text:?}")),
    }
}

/// Reads the kernel's ephemeral port range.
pub fn read_local_port_range(path: &Path) -> Result<(u16, u16), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_local_port_range(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether two inclusive ranges share a port.
pub fn overlaps(a: (u16, u16), b: (u16, u16)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

/// Problems of a SNAT range: overlap with the kernel's ephemeral ports (`kernel`, when
/// known) — replies to the node's own connections would be taken by the dataplane — or
/// with the NodePort range, and a range too small to give every worker a slice.
pub fn snat_range_warnings(
    snat: (u16, u16),
    kernel: Option<(u16, u16)>,
    workers: usize,
) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(k) = kernel
        && overlaps(snat, k)
    {
        w.push(format!(
            "--snat-ports {}-{} overlaps the kernel's ip_local_port_range {}-{}: replies to \
             the node's own connections on the shared ports are taken by the dataplane and \
             lost. Use a disjoint range, or narrow net.ipv4.ip_local_port_range",
            snat.0, snat.1, k.0, k.1
        ));
    }
    if overlaps(snat, NODE_PORT_RANGE) {
        w.push(format!(
            "--snat-ports {}-{} overlaps the NodePort range {}-{}",
            snat.0, snat.1, NODE_PORT_RANGE.0, NODE_PORT_RANGE.1
        ));
    }
    let size = usize::from(snat.1 - snat.0) + 1;
    if size < workers.max(1) * 64 {
        w.push(format!(
            "--snat-ports {}-{} gives each of {workers} workers fewer than 64 ports",
            snat.0, snat.1
        ));
    }
    w
}

/// (address, IP protocol, port) the XDP program redirects on the uplink.
pub type OwnedService = (Ipv4Addr, u8, u16);

/// The uplink services the dataplane must own for `snap`: VXLAN's UDP port on the node IP
/// (`vxlan`, in vxlan mode with an uplink), and every NodePort, externalIP and
/// LoadBalancer frontend (TCP, UDP, SCTP). ClusterIPs are only reached from pods.
pub fn wanted_owned_services(
    snap: &Snapshot,
    vxlan: Option<(Ipv4Addr, u16)>,
) -> BTreeSet<OwnedService> {
    use xdplane_pipeline::tables::services::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};
    let mut want = BTreeSet::new();
    if let Some((ip, port)) = vxlan {
        want.insert((ip, PROTO_UDP, port));
    }
    for (key, fe) in snap.services.sorted() {
        let external = matches!(
            fe.kind,
            FrontendKind::NodePort | FrontendKind::ExternalIp | FrontendKind::LoadBalancer
        );
        if external && matches!(key.proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
            want.insert((key.ip, key.proto, key.port));
        }
    }
    want
}

/// What to remove from and add to the map to get from `have` to `want`.
pub fn diff_owned(
    have: &BTreeSet<OwnedService>,
    want: &BTreeSet<OwnedService>,
) -> (Vec<OwnedService>, Vec<OwnedService>) {
    (
        have.difference(want).copied().collect(),
        want.difference(have).copied().collect(),
    )
}

/// How often the sweeper runs.
pub const SWEEP_TICK: Duration = Duration::from_millis(10);

/// Slots the sweeper examines per tick so that `slots` are covered about once per second.
pub fn sweep_budget(slots: usize, tick: Duration) -> usize {
    let per_s = 1_000_000_000u128 / tick.as_nanos().max(1);
    (slots as u128).div_ceil(per_s.max(1)).max(1) as usize
}

/// What the sweeper has done, for `stats`.
#[derive(Default)]
struct SweeperCounters {
    rounds: AtomicU64,
    examined: AtomicU64,
    expired: AtomicU64,
    /// Nanoseconds spent in `sweep` (to show it does not hog a core).
    busy_ns: AtomicU64,
}

/// The flow table's expiry thread: `FlowTable::sweep` every [`SWEEP_TICK`] with a budget
/// that covers the whole table about once per second, on the workers' clock.
pub struct Sweeper {
    stop: Arc<AtomicBool>,
    counters: Arc<SweeperCounters>,
    budget: usize,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    pub fn start(flows: Arc<FlowTable>, epoch: Instant) -> std::io::Result<Sweeper> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(SweeperCounters::default());
        let budget = sweep_budget(flows.slots(), SWEEP_TICK);
        let thread = {
            let (stop, counters) = (stop.clone(), counters.clone());
            std::thread::Builder::new()
                .name("xdplane-sweep".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let t0 = Instant::now();
                        // The workers stamp flows with epoch-relative nanoseconds.
                        let now = epoch.elapsed().as_nanos() as u64;
                        let s = flows.sweep(now, budget);
                        counters.rounds.fetch_add(1, Ordering::Relaxed);
                        counters
                            .examined
                            .fetch_add(s.examined as u64, Ordering::Relaxed);
                        counters
                            .expired
                            .fetch_add(s.expired as u64, Ordering::Relaxed);
                        counters
                            .busy_ns
                            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        std::thread::park_timeout(SWEEP_TICK);
                    }
                })?
        };
        tracing::info!(
            budget,
            tick_ms = SWEEP_TICK.as_millis() as u64,
            "flow table sweeper running"
        );
        Ok(Sweeper {
            stop,
            counters,
            budget,
            thread: Some(thread),
        })
    }

    pub fn stats(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
            "budgetPerTick": self.budget,
            "tickMs": SWEEP_TICK.as_millis() as u64,
            "rounds": c.rounds.load(Ordering::Relaxed),
            "examined": c.examined.load(Ordering::Relaxed),
            "expired": c.expired.load(Ordering::Relaxed),
            "busyMs": c.busy_ns.load(Ordering::Relaxed) / 1_000_000,
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Every (address, port) of every backend set of `snap`.
pub fn all_backends(snap: &Snapshot) -> BTreeSet<(Ipv4Addr, u16)> {
    snap.services
        .sets
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| (b.ip, b.port)))
        .collect()
}

/// Whether `e` is a UDP flow translated to a backend in `gone` (the flows kube-proxy
/// flushes when an endpoint goes away).
pub fn udp_flow_to(e: &FlowEntry, gone: &BTreeSet<(Ipv4Addr, u16)>) -> bool {
    let dnat = (e.rewrite.dst, e.rewrite.dport) != (e.orig.dst, e.orig.dport);
    e.orig.proto == PROTO_UDP && dnat && gone.contains(&(e.rewrite.dst, e.rewrite.dport))
}

/// The flow table's counters by name, with its capacity.
pub fn flow_counters(flows: &FlowTable) -> serde_json::Map<String, serde_json::Value> {
    let c = flows.counters();
    let v = serde_json::json!({
        "entries": c.entries,
        "capacity": flows.capacity(),
        "inserted": c.inserted,
        "evicted": c.evicted,
        "expired": c.expired,
        "insertFailed": c.insert_failed,
        "replyTaken": c.reply_taken,
        "removed": c.removed,
        "memoryBytes": flows.memory_bytes(),
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// A tuple as `conntrack` shows it.
pub fn fmt_tuple(t: &Tuple) -> String {
    match t.proto {
        PROTO_ICMP => format!("{} -> {} id {}", t.src, t.dst, t.sport),
        PROTO_AFFINITY => format!(
            "client {} service-port {}",
            t.src,
            (u32::from(t.dst) << 16) | u32::from(t.dport)
        ),
        _ => format!("{}:{} -> {}:{}", t.src, t.sport, t.dst, t.dport),
    }
}

/// A flow's protocol state as `conntrack` shows it.
pub fn state_name(s: &FlowState) -> String {
    let replied = |r: bool| if r { "replied" } else { "unreplied" }.to_string();
    match s {
        FlowState::Tcp(t) => match t {
            TcpState::None => "none",
            TcpState::SynSent => "syn-sent",
            TcpState::SynRecv => "syn-recv",
            TcpState::Established => "established",
            TcpState::FinWait => "fin-wait",
            TcpState::CloseWait => "close-wait",
            TcpState::LastAck => "last-ack",
            TcpState::TimeWait => "time-wait",
            TcpState::Close => "close",
            TcpState::SynSent2 => "syn-sent2",
        }
        .to_string(),
        FlowState::Udp { replied: r } | FlowState::Icmp { replied: r } => replied(*r),
        FlowState::Sctp { replied: r } => replied(*r),
        FlowState::Affinity => "affinity".into(),
    }
}

/// One live flow for the admin protocol.
pub fn flow_info(e: &FlowEntry) -> xdplane_api::FlowInfo {
    let rewrite = if e.orig.proto == PROTO_AFFINITY {
        format!("backend {}:{}", e.rewrite.dst, e.rewrite.dport)
    } else {
        fmt_tuple(&e.rewrite)
    };
    xdplane_api::FlowInfo {
        proto: proto_name(e.orig.proto),
        orig: fmt_tuple(&e.orig),
        rewrite,
        state: state_name(&e.state),
        age_s: e.age_s,
        expires_in_s: e.expires_in_s,
    }
}

/// A protocol's name in dumps.
pub fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        255 => "affinity".into(),
        o => o.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdplane_pipeline::tables::services::{
        Backend, BackendSet, Frontend, FrontendKey, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
    };

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_port_range("61000-65535"), Ok((61000, 65535)));
        assert_eq!(parse_port_range(" 100 - 100"), Ok((100, 100)));
        assert!(parse_port_range("61000").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("65535-61000").is_err());
        assert!(parse_port_range("61000-65536").is_err());
        assert!(parse_port_range("a-b").is_err());
        assert_eq!(parse_local_port_range("32768\t60999\n"), Ok((32768, 60999)));
        assert!(parse_local_port_range("32768").is_err());
        assert!(parse_local_port_range("60999 32768").is_err());
        assert!(parse_local_port_range("1 2 3").is_err());
    }

    #[test]
    fn overlap_checks() {
        assert!(overlaps((10, 20), (20, 30)));
        assert!(overlaps((10, 20), (0, 10)));
        assert!(overlaps((10, 20), (12, 13)));
        assert!(!overlaps((10, 20), (21, 30)));
        assert!(!overlaps((10, 20), (0, 9)));
        // The defaults are disjoint from Linux's default range and from NodePorts.
        assert!(snat_range_warnings((61000, 65535), Some((32768, 60999)), 2).is_empty());
        let w = snat_range_warnings((60000, 65535), Some((32768, 60999)), 1);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("ip_local_port_range 32768-60999"), "{w:?}");
        let w = snat_range_warnings((32000, 32100), None, 1);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("NodePort"), "{w:?}");
        let w = snat_range_warnings((61000, 61100), None, 2);
        assert!(w[0].contains("fewer than 64"), "{w:?}");
    }

    #[test]
    fn sweep_budget_covers_the_table_once_a_second() {
        let tick = Duration::from_millis(10);
        assert_eq!(sweep_budget(524_288, tick), 5243);
        assert_eq!(sweep_budget(100, tick), 1);
        assert_eq!(sweep_budget(0, tick), 1);
        assert_eq!(sweep_budget(1000, Duration::from_secs(1)), 1000);
        // 100 ticks of the budget cover the default table.
        assert!(sweep_budget(524_288, tick) * 100 >= 524_288);
    }

    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Tuple {
        Tuple::new(PROTO_UDP, src.into(), dst.into(), sport, dport)
    }

    #[test]
    fn flows_list_and_udp_flows_of_gone_backends_are_flushed() {
        let flows = FlowTable::new(xdplane_pipeline::tables::conntrack::FlowTableConfig {
            capacity: 64,
            timeouts: Default::default(),
        });
        let now = 5_000_000_000;
        let insert = |orig: &Tuple, rewrite: &Tuple, tcp_flags: Option<u8>| {
            flows.insert(orig, rewrite, now, tcp_flags).unwrap();
        };
        // Pod → ClusterIP, DNATed to 10.244.2.3:53 (UDP) and to 10.244.2.4:53.
        let a = udp([10, 244, 1, 2], 4000, [10, 96, 0, 10], 53);
        insert(&a, &udp([10, 244, 1, 2], 4000, [10, 244, 2, 3], 53), None);
        let b = udp([10, 244, 1, 2], 4001, [10, 96, 0, 10], 53);
        insert(&b, &udp([10, 244, 1, 2], 4001, [10, 244, 2, 4], 53), None);
        // Masquerade only (no DNAT) to an outside address that happens to equal nothing.
        let m = udp([10, 244, 1, 2], 4002, [10, 244, 2, 3], 53);
        insert(
            &m,
            &udp([192, 168, 50, 11], 61000, [10, 244, 2, 3], 53),
            None,
        );
        // TCP to the same backend: kept.
        let t = Tuple::new(6, [10, 244, 1, 2].into(), [10, 96, 0, 10].into(), 5000, 53);
        let t_rw = Tuple::new(6, [10, 244, 1, 2].into(), [10, 244, 2, 3].into(), 5000, 53);
        insert(&t, &t_rw, Some(0x02));

        let listed: Vec<xdplane_api::FlowInfo> = flows
            .dump(now + 2_000_000_000, 10)
            .iter()
            .map(flow_info)
            .collect();
        assert_eq!(listed.len(), 4, "{listed:?}");
        let fa = listed
            .iter()
            .find(|f| f.orig == "10.244.1.2:4000 -> 10.96.0.10:53")
            .unwrap();
        assert_eq!(fa.proto, "udp");
        assert_eq!(fa.rewrite, "10.244.1.2:4000 -> 10.244.2.3:53");
        assert_eq!(fa.state, "unreplied");
        // Last-seen is kept in coarse ticks: about 2 s old, about 28 s of UDP's 30 left.
        assert!((1..=2).contains(&fa.age_s), "{fa:?}");
        assert!((28..=29).contains(&fa.expires_in_s), "{fa:?}");
        let ft = listed.iter().find(|f| f.proto == "tcp").unwrap();
        assert_eq!(ft.state, "syn-sent");

        let gone: BTreeSet<(Ipv4Addr, u16)> = [(Ipv4Addr::new(10, 244, 2, 3), 53)].into();
        assert_eq!(flows.remove_where(|e| udp_flow_to(e, &gone)), 1);
        assert!(
            flows.lookup(&a).is_none(),
            "UDP flow to the gone backend flushed"
        );
        assert!(flows.lookup(&b).is_some(), "other backend kept");
        assert!(flows.lookup(&m).is_some(), "masquerade-only flow kept");
        assert!(flows.lookup(&t).is_some(), "TCP kept");
        let c = flow_counters(&flows);
        assert_eq!(c["entries"], 3);
        assert_eq!(c["capacity"], 64);
        assert_eq!(c["removed"], 1);
    }

    #[test]
    fn sweeper_expires_idle_flows_on_the_workers_clock() {
        let timeouts = xdplane_pipeline::tables::conntrack::Timeouts {
            udp: 1,
            ..Default::default()
        };
        let flows = Arc::new(FlowTable::new(
            xdplane_pipeline::tables::conntrack::FlowTableConfig {
                capacity: 1024,
                timeouts,
            },
        ));
        // The agent's clock origin, started a while ago as a worker would see it.
        let epoch = Instant::now() - Duration::from_secs(10);
        let now = epoch.elapsed().as_nanos() as u64;
        let old = udp([10, 244, 1, 2], 4000, [8, 8, 8, 8], 53);
        flows
            .insert(
                &old,
                &udp([192, 168, 50, 11], 61000, [8, 8, 8, 8], 53),
                now,
                None,
            )
            .unwrap();
        let sweeper = Sweeper::start(flows.clone(), epoch).unwrap();
        assert!(flows.lookup(&old).is_some(), "fresh: not expired at once");
        let deadline = Instant::now() + Duration::from_secs(5);
        while flows.lookup(&old).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            flows.lookup(&old).is_none(),
            "expired after its 1 s timeout"
        );
        let st = sweeper.stats();
        assert_eq!(st["expired"], 1, "{st}");
        assert!(st["rounds"].as_u64().unwrap() >= 50, "{st}");
        sweeper.stop();
        assert_eq!(flows.counters().expired, 1);
    }

    #[test]
    fn local_port_range_of_this_namespace_reads() {
        let (lo, hi) = read_local_port_range(Path::new(LOCAL_PORT_RANGE)).unwrap();
        assert!(lo <= hi);
        assert!(read_local_port_range(Path::new("/nonexistent/xdplane")).is_err());
    }

    fn snap_with(frontends: &[(FrontendKind, [u8; 4], u16, u8)]) -> Snapshot {
        let mut snap = Snapshot::default();
        let set = snap.services.add_set(
            BackendSet::new(vec![Backend {
                ip: Ipv4Addr::new(10, 244, 1, 2),
                port: 8080,
                local: true,
            }])
            .unwrap(),
        );
        for (i, (kind, ip, port, proto)) in frontends.iter().enumerate() {
            snap.services
                .add_frontend(
                    FrontendKey {
                        ip: Ipv4Addr::from(*ip),
                        port: *port,
                        proto: *proto,
                    },
                    Frontend {
                        name: format!("default/s{i}:p"),
                        kind: *kind,
                        set,
                        masquerade: true,
                        drop_when_empty: false,
                        affinity_timeout_s: 0,
                        service_port: i as u32,
                    },
                )
                .unwrap();
        }
        snap
    }

    #[test]
    fn owned_services_follow_external_frontends() {
        let node = Ipv4Addr::new(192, 168, 50, 11);
        let snap = snap_with(&[
            (FrontendKind::ClusterIp, [10, 96, 0, 10], 80, PROTO_TCP),
            (FrontendKind::NodePort, node.octets(), 30080, PROTO_TCP),
            (FrontendKind::NodePort, node.octets(), 30053, PROTO_UDP),
            (FrontendKind::NodePort, node.octets(), 30090, PROTO_SCTP),
            (FrontendKind::ExternalIp, [192, 168, 50, 200], 80, PROTO_TCP),
            (
                FrontendKind::LoadBalancer,
                [192, 168, 50, 201],
                443,
                PROTO_TCP,
            ),
        ]);
        let want = wanted_owned_services(&snap, Some((node, 8472)));
        let expect: BTreeSet<OwnedService> = [
            (node, PROTO_UDP, 8472),
            (node, PROTO_TCP, 30080),
            (node, PROTO_UDP, 30053),
            (node, PROTO_SCTP, 30090),
            (Ipv4Addr::new(192, 168, 50, 200), PROTO_TCP, 80),
            (Ipv4Addr::new(192, 168, 50, 201), PROTO_TCP, 443),
        ]
        .into();
        assert_eq!(want, expect);
        assert_eq!(wanted_owned_services(&snap, None).len(), 5);

        // Diffing: unchanged entries are not touched, gone ones removed, new ones added.
        let next = snap_with(&[
            (FrontendKind::NodePort, node.octets(), 30080, PROTO_TCP),
            (FrontendKind::NodePort, node.octets(), 30081, PROTO_TCP),
        ]);
        let want2 = wanted_owned_services(&next, Some((node, 8472)));
        let (remove, add) = diff_owned(&want, &want2);
        assert_eq!(add, vec![(node, PROTO_TCP, 30081)]);
        assert_eq!(
            remove.into_iter().collect::<BTreeSet<_>>(),
            [
                (node, PROTO_UDP, 30053),
                (node, PROTO_SCTP, 30090),
                (Ipv4Addr::new(192, 168, 50, 200), PROTO_TCP, 80),
                (Ipv4Addr::new(192, 168, 50, 201), PROTO_TCP, 443),
            ]
            .into()
        );
        let (r, a) = diff_owned(&want2, &want2);
        assert!(r.is_empty() && a.is_empty());
    }
}
