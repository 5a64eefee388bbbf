//! The remote-pod scenario end to end (needs root): the kernel flannel datapath on both nodes
//! delivers exactly what pod A sends to pod B on the other node, the scenario measures and
//! reports, and nothing is left behind. The xdplane side needs the agent binary
//! (`XDPLANE_BIN_DIR`, or `cargo build -p xdplane-agent` into the same target directory) and
//! is `#[ignore]`d: run it with `-- --ignored`.
mod common;

use std::sync::Mutex;
use std::time::Duration;
use xdplane_perf::generator::Rate;
use xdplane_perf::scenarios::remote_pod::{self, Datapath, RemotePodOpts};

/// The tests share the machine's two CPUs and this process's autogroup: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn need_root() {
    common::need_root("the remote-pod tests need root");
}

fn count_opts(prefix: &str, dp: Datapath) -> RemotePodOpts {
    RemotePodOpts {
        prefix: prefix.to_string(),
        datapaths: vec![dp],
        flows: vec![4],
        streams: Vec::new(),
        results_dir: None,
        ..RemotePodOpts::default()
    }
}

#[test]
fn kernel_flannel_delivers_an_exact_count_across_nodes_and_cleans_up() {
    need_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = format!("rpt{}k", std::process::id());
    let n = 20_000;
    // 20 kpps: a 256-frame veth ring holds 12.8 ms of it, far beyond a scheduling delay.
    let d = remote_pod::deliver_count(
        &count_opts(&prefix, Datapath::Kernel),
        Datapath::Kernel,
        n,
        Rate::Pps(20_000),
    )
    .unwrap();
    assert_eq!(d.sent, n, "{d:?}");
    assert_eq!(d.node_a_rx, n, "node A received what pod A sent: {d:?}");
    // Node B's eth0 also sees node A's ARP request for the VTEP address.
    assert!(
        (n..=n + 4).contains(&d.node_b_uplink_rx),
        "node B received the VXLAN frames: {d:?}"
    );
    assert_eq!(d.dropped.total(), 0, "{d:?}");
    assert_eq!(d.sink.matched, n, "pod B received every frame: {d:?}");
    // Besides them, at most node B's own IGMP reports: cni0 joins 224.0.0.106 (multicast
    // router discovery) when it comes up and reports it twice, flooded to pod B.
    assert!(
        d.sink.packets - d.sink.matched <= 2,
        "pod B received other frames: {d:?}"
    );
    assert_eq!(d.sink.reordered, 0, "{d:?}");
    common::assert_clean(&prefix);
}

#[test]
fn kernel_scenario_measures_pps_and_tcp_and_cleans_up() {
    need_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = format!("rpt{}s", std::process::id());
    let opts = RemotePodOpts {
        prefix: prefix.clone(),
        runs: 1,
        warmup: Duration::from_millis(300),
        window: Duration::from_millis(700),
        flows: vec![1, 8],
        streams: vec![1, 2],
        tcp_time: Duration::from_secs(2),
        datapaths: vec![Datapath::Kernel],
        nice: None,
        results_dir: None,
        ..RemotePodOpts::default()
    };
    let report = remote_pod::run(&opts).unwrap();
    assert_eq!(report.error, None);
    assert_eq!(report.pps.len(), 2);
    for r in &report.pps {
        assert!(
            r.window.sink_pps > 10_000.0,
            "almost nothing delivered: {r:?}"
        );
        assert!(r.window.offered_pps >= r.window.sink_pps, "{r:?}");
        assert!(
            r.window.node_b_uplink_rx_pps >= r.window.sink_pps * 0.99,
            "{r:?}"
        );
        assert!(
            r.window.ns_per_pkt_fwd_cpu > 0.0 && r.window.ns_per_pkt_gen_cpu > 0.0,
            "{r:?}"
        );
        assert_eq!(r.reordered, 0, "{r:?}");
    }
    assert_eq!(
        report.pps.iter().map(|r| r.flows).collect::<Vec<_>>(),
        [1, 8]
    );
    assert_eq!(report.tcp.len(), 2);
    for t in &report.tcp {
        assert!(t.receiver_gbps > 0.05, "TCP moved almost nothing: {t:?}");
        assert!(t.bytes_received > 0 && t.us_per_mb_fwd_cpu > 0.0, "{t:?}");
    }
    assert_eq!(
        report.tcp.iter().map(|r| r.streams).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(report.pps_summary.len(), 2);
    assert_eq!(report.tcp_summary.len(), 2);
    assert!(report.pps_ratio_xdplane_over_kernel.is_empty());
    let t = report.table();
    assert!(
        t.contains("packets per second") && t.contains("TCP: iperf3"),
        "{t}"
    );
    common::assert_clean(&prefix);
}

#[test]
#[ignore = "needs the xdplane agent binary (XDPLANE_BIN_DIR)"]
fn xdplane_delivers_an_exact_count_across_nodes_and_cleans_up() {
    need_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = format!("rpt{}x", std::process::id());
    let n = 20_000;
    let d = remote_pod::deliver_count(
        &count_opts(&prefix, Datapath::Xdplane),
        Datapath::Xdplane,
        n,
        Rate::Pps(20_000),
    )
    .unwrap();
    assert_eq!(d.sent, n, "{d:?}");
    assert_eq!(d.dropped.total(), 0, "{d:?}");
    assert_eq!(d.sink.matched, n, "pod B received every frame: {d:?}");
    assert_eq!(d.sink.packets, n, "and nothing else: {d:?}");
    common::assert_clean(&prefix);
}
