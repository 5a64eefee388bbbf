//! The pod-pod scenario end to end on the kernel datapath (needs root): it measures, reports,
//! and leaves nothing behind. The xdplane side needs the agent binary and is exercised by
//! `xdplane-perf pod-pod` itself.
mod common;

use std::time::Duration;
use xdplane_perf::scenarios::pod_pod::{self, Datapath, PodPodOpts};

#[test]
fn kernel_side_measures_and_cleans_up() {
    common::need_root("the pod-pod test needs root");
    let prefix = format!("ppt{}", std::process::id());
    let opts = PodPodOpts {
        prefix: prefix.clone(),
        runs: 2,
        warmup: Duration::from_millis(300),
        window: Duration::from_millis(700),
        datapaths: vec![Datapath::Kernel],
        nice: None,
        results_dir: None,
        ..PodPodOpts::default()
    };
    let report = pod_pod::run(&opts).unwrap();
    assert_eq!(report.error, None);
    assert_eq!(report.runs.len(), 2);
    for r in &report.runs {
        assert!(
            r.sink_pps > 10_000.0,
            "the bridge forwarded almost nothing: {r:?}"
        );
        assert!(r.offered_pps >= r.sink_pps, "{r:?}");
        assert!(r.node_rx_pps > 0.0 && r.ns_per_pkt_fwd_cpu > 0.0, "{r:?}");
        assert_eq!(r.reordered, 0, "{r:?}");
    }
    let k = &report.summary[&Datapath::Kernel];
    assert_eq!(k.runs, 2);
    assert!(report.ratio_xdplane_over_kernel.is_none());
    assert!(report.table().contains("kernel"));

    common::assert_no_namespaces(&prefix);
    common::assert_no_state_dir(&prefix);
}
