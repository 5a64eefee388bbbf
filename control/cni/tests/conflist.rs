//! The shipped conflist is what a runtime would hand to this plugin.

use serde_json::Value;
use xdplane_cni::conf::NetConf;

#[test]
fn deploy_conflist_is_valid_for_the_plugin() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/10-xdplane.conflist"
    );
    let list: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(list["cniVersion"], "1.0.0");
    assert_eq!(list["name"], "xdplane");
    let plugins = list["plugins"].as_array().unwrap();
    assert_eq!(plugins[0]["type"], "xdplane-cni");
    // The runtime copies the list's cniVersion and name into each plugin's configuration.
    let mut first = plugins[0].clone();
    first["cniVersion"] = list["cniVersion"].clone();
    first["name"] = list["name"].clone();
    let conf = NetConf::parse(first.to_string().as_bytes()).unwrap();
    assert_eq!(
        conf.admin_socket.to_str(),
        Some(xdplane_api::DEFAULT_ADMIN_SOCKET)
    );
    assert!(
        conf.ipam.is_none(),
        "the built-in host-local section is meant to be used"
    );
    // Every plugin in the list must be one this project has made work with its dataplane.
    for p in plugins {
        assert_eq!(p["type"], "xdplane-cni", "unsupported chained plugin {p}");
    }
}
