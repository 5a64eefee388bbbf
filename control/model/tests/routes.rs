//! Routes compiled for each flannel mode (vxlan, vxlan + DirectRouting, host-gw).

use std::net::Ipv4Addr;
use xdplane_control::compile::{CompileWarning, LocalState, UplinkInfo, compile};
use xdplane_control::manifest::{LoadResult, load_str};
use xdplane_pipeline::{PortConfig, PortKind, Route};

const NODES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: server1}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.50.11}]}
---
apiVersion: v1
kind: Node
metadata:
  name: server2
  annotations:
    flannel.alpha.coreos.com/backend-type: vxlan
    flannel.alpha.coreos.com/backend-data: '{"VNI":1,"VtepMAC":"9a:00:00:00:00:02"}'
    flannel.alpha.coreos.com/public-ip: 192.168.50.12
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.50.12}]}
---
apiVersion: v1
kind: Node
metadata:
  name: server3
  annotations:
    flannel.alpha.coreos.com/backend-data: '{"VNI":1,"VtepMAC":"9a:00:00:00:00:03"}'
    flannel.alpha.coreos.com/public-ip: 10.9.0.3
spec: {podCIDR: 10.244.3.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: server4}
spec: {podCIDR: 10.244.4.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.50.14}]}
"#;

fn net_conf(backend: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: kube-flannel-cfg, namespace: kube-system}}
data:
  net-conf.json: |
    {{"Network": "10.244.0.0/16", "Backend": {backend}}}
"#
    )
}

fn load(backend: &str) -> LoadResult {
    let mut r = LoadResult::default();
    load_str("nodes.yaml", NODES, &mut r);
    load_str("flannel.yaml", &net_conf(backend), &mut r);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    r
}

fn server1() -> LocalState {
    LocalState {
        node: "server1".into(),
        ports: vec![PortConfig {
            id: 0,
            name: "eth0".into(),
            ifindex: 2,
            mac: [2, 0, 0, 0, 0, 0x11],
            kind: PortKind::Uplink,
        }],
        uplink: Some(UplinkInfo {
            port: 0,
            ip: Ipv4Addr::new(192, 168, 50, 11),
            prefix: 24,
            mac: [2, 0, 0, 0, 0, 0x11],
            mtu: 1500,
            gateway: Some(Ipv4Addr::new(192, 168, 50, 1)),
        }),
        ..Default::default()
    }
}

fn route(s: &xdplane_pipeline::Snapshot, ip: [u8; 4]) -> Route {
    *s.route(Ipv4Addr::from(ip)).expect("a route")
}

#[test]
fn vxlan_mode_tunnels_to_every_peer_with_a_vtep() {
    let r = load(r#"{"Type": "vxlan"}"#);
    let (s, w) = compile(&r.model, &server1(), 1).unwrap();
    assert_eq!(route(&s, [10, 244, 1, 9]), Route::Local);
    assert_eq!(
        route(&s, [10, 244, 2, 9]),
        Route::Vxlan {
            vtep: Ipv4Addr::new(192, 168, 50, 12),
            vtep_mac: [0x9a, 0, 0, 0, 0, 2],
            vni: 1
        }
    );
    // public-ip annotation wins over the InternalIP; off-subnet peers still tunnel.
    assert_eq!(
        route(&s, [10, 244, 3, 9]),
        Route::Vxlan {
            vtep: Ipv4Addr::new(10, 9, 0, 3),
            vtep_mac: [0x9a, 0, 0, 0, 0, 3],
            vni: 1
        }
    );
    // server4 has not published its VTEP: unreachable, and said so.
    assert_eq!(route(&s, [10, 244, 4, 9]), Route::Unreachable);
    assert!(
        w.iter().any(
            |w| matches!(w, CompileWarning::PeerWithoutVtep { node, .. } if node == "server4")
        ),
        "{w:?}"
    );
    // Unknown cluster addresses are unreachable, the rest goes to the gateway.
    assert_eq!(route(&s, [10, 244, 77, 1]), Route::Unreachable);
    assert_eq!(
        route(&s, [8, 8, 8, 8]),
        Route::Gateway {
            next_hop: Ipv4Addr::new(192, 168, 50, 1)
        }
    );
    assert_eq!(s.node.pod_mtu, 1450, "vxlan pods get the uplink MTU - 50");
    assert_eq!((s.node.vni, s.node.vxlan_port), (1, 8472));
    assert_eq!(s.node.node_ip, Some(Ipv4Addr::new(192, 168, 50, 11)));
    assert!(s.node.on_uplink_subnet(Ipv4Addr::new(192, 168, 50, 12)));
}

#[test]
fn direct_routing_goes_direct_on_the_same_subnet_only() {
    // The seed's spelling: "Directrouting".
    let r = load(r#"{"Type": "vxlan", "Directrouting": true}"#);
    let (s, _) = compile(&r.model, &server1(), 1).unwrap();
    assert_eq!(
        route(&s, [10, 244, 2, 9]),
        Route::Direct {
            next_hop: Ipv4Addr::new(192, 168, 50, 12)
        }
    );
    assert!(matches!(route(&s, [10, 244, 3, 9]), Route::Vxlan { .. }));
    // Direct routing needs no VTEP: server4 is reachable now.
    assert_eq!(
        route(&s, [10, 244, 4, 9]),
        Route::Direct {
            next_hop: Ipv4Addr::new(192, 168, 50, 14)
        }
    );
    assert_eq!(s.node.pod_mtu, 1450);
}

#[test]
fn host_gw_routes_directly_and_reports_off_subnet_peers() {
    let r = load(r#"{"Type": "host-gw"}"#);
    let (s, w) = compile(&r.model, &server1(), 1).unwrap();
    assert_eq!(
        route(&s, [10, 244, 2, 9]),
        Route::Direct {
            next_hop: Ipv4Addr::new(192, 168, 50, 12)
        }
    );
    assert_eq!(route(&s, [10, 244, 3, 9]), Route::Unreachable);
    assert!(
        w.iter().any(
            |w| matches!(w, CompileWarning::PeerNotOnSubnet { node, .. } if node == "server3")
        ),
        "{w:?}"
    );
    assert_eq!(s.node.pod_mtu, 1500, "host-gw pods get the uplink MTU");
}

#[test]
fn no_flannel_config_means_no_remote_routes() {
    let mut r = LoadResult::default();
    load_str("nodes.yaml", NODES, &mut r);
    let (s, _) = compile(&r.model, &server1(), 1).unwrap();
    assert_eq!(route(&s, [10, 244, 1, 9]), Route::Local);
    assert!(matches!(route(&s, [10, 244, 2, 9]), Route::Gateway { .. }));
    assert_eq!(s.node.pod_mtu, 1500);
}

#[test]
fn bad_net_conf_is_reported_with_the_configmap_name() {
    let mut r = LoadResult::default();
    load_str("flannel.yaml", &net_conf(r#"{"Type": "udp"}"#), &mut r);
    assert_eq!(r.errors.len(), 1);
    let e = r.errors[0].to_string();
    assert!(e.contains("kube-system/kube-flannel-cfg"), "{e}");
    assert!(e.contains("not supported"), "{e}");
    assert!(r.model.net_conf.is_none());
    // Other ConfigMaps are not flannel's business.
    let mut r = LoadResult::default();
    load_str(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other, namespace: kube-system}\ndata: {a: b}\n",
        &mut r,
    );
    assert!(r.errors.is_empty() && r.ignored.len() == 1);
}
