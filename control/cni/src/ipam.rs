//! IPAM delegation: the section of the configuration (or, without one, a host-local
//! section built from the node's pod CIDR, like flannel's CNI does) is run as a CNI plugin
//! found on `CNI_PATH`, with the same environment and the configuration on stdin.

use crate::agent::NodeNet;
use crate::conf::NetConf;
use crate::env::{Command, OpEnv};
use crate::error::{self, CniError};
use crate::net::Ipv4Net;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The IPAM plugin to run and the configuration to give it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ipam {
    pub plugin: String,
    pub config: Value,
}

/// The host-local section for a node (what flannel's CNI writes from its subnet.env).
pub fn host_local_section(
    pod_cidr: Ipv4Net,
    gateway: std::net::Ipv4Addr,
    data_dir: &Path,
) -> Value {
    json!({
        "type": "host-local",
        "ranges": [[{"subnet": pod_cidr.trunc().to_string(), "gateway": gateway.to_string()}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": data_dir.display().to_string(),
    })
}

impl Ipam {
    /// The delegation for `conf`: its own `ipam` section, or host-local over `node`'s pod
    /// CIDR. `None` when there is no section and no node facts (DEL with no agent and no
    /// cache).
    pub fn for_conf(conf: &NetConf, node: Option<&NodeNet>) -> Option<Ipam> {
        let section = match (&conf.ipam, node) {
            (Some(s), _) => Value::Object(s.clone()),
            (None, Some(n)) => host_local_section(n.pod_cidr, n.gateway, &conf.data_dir),
            (None, None) => return None,
        };
        let plugin = section["type"].as_str().unwrap_or_default().to_string();
        let mut config: Map<String, Value> = conf.raw.clone();
        config.insert("ipam".into(), section);
        Some(Ipam {
            plugin,
            config: Value::Object(config),
        })
    }

    /// Runs the IPAM plugin for `command` and returns its stdout (parsed) on success.
    pub fn exec(&self, env: &OpEnv, command: Command) -> Result<Value, CniError> {
        let bin = find_plugin(&self.plugin, &env.path).ok_or_else(|| {
            CniError::config(format!(
                "IPAM plugin {:?} not found on CNI_PATH ({})",
                self.plugin,
                env.path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ))
        })?;
        let stdin = serde_json::to_vec(&self.config)
            .map_err(|e| CniError::io(format!("cannot encode the IPAM configuration: {e}")))?;
        let mut child = std::process::Command::new(&bin)
            .env("CNI_COMMAND", command.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| CniError::io(format!("cannot run {}: {e}", bin.display())))?;
        if let Some(mut i) = child.stdin.take() {
            // A plugin that exits before reading everything is judged by its status below.
            let _ = i.write_all(&stdin);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| CniError::io(format!("waiting for {}: {e}", bin.display())))?;
        let what = format!("IPAM plugin {} {}", self.plugin, command.as_str());
        if !out.status.success() {
            // The delegate's own error object: pass its code on, prefix its message.
            let err = serde_json::from_slice::<Value>(&out.stdout).ok();
            let code = err
                .as_ref()
                .and_then(|v| v["code"].as_u64())
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(error::IO_FAILURE);
            let msg = err
                .as_ref()
                .and_then(|v| v["msg"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stdout).trim().to_string());
            let details = err
                .as_ref()
                .and_then(|v| v["details"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(
                CniError::new(code, format!("{what} failed: {msg} ({})", out.status))
                    .with_details(details),
            );
        }
        if command != Command::Add {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            CniError::new(
                error::DECODE_FAILURE,
                format!("{what} printed no JSON result"),
            )
            .with_details(e.to_string())
        })
    }
}

/// The first executable file `name` in the `CNI_PATH` directories.
pub fn find_plugin(name: &str, path: &[PathBuf]) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') {
        return None;
    }
    path.iter().map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    })
}

/// Where the node facts of the last successful ADD are kept, so that DEL can release the
/// built-in host-local allocation while the agent is down (host-local needs its ranges).
pub fn node_cache_path(conf: &NetConf) -> PathBuf {
    conf.data_dir
        .join(format!(".xdplane-node-{}.json", conf.name))
}

/// Writes the node facts (atomically: a temporary file renamed over the old one).
pub fn store_node_cache(conf: &NetConf, ni: &xdplane_api::NodeInfo) -> Result<(), String> {
    let path = node_cache_path(conf);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let body = serde_json::to_vec(ni).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&conf.data_dir)
        .and_then(|()| std::fs::write(&tmp, body))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {e}", path.display())
        })
}

/// The cached node facts, if any.
pub fn load_node_cache(conf: &NetConf) -> Option<NodeNet> {
    let body = std::fs::read(node_cache_path(conf)).ok()?;
    let ni: xdplane_api::NodeInfo = serde_json::from_slice(&body).ok()?;
    NodeNet::from_info(&ni).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_section_is_flannel_like() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"xdplane","type":"xdplane-cni","dataDir":"/tmp/d"}"#,
        )
        .unwrap();
        let node = NodeNet {
            node: "n".into(),
            pod_cidr: "10.244.3.0/24".parse().unwrap(),
            gateway: "10.244.3.1".parse().unwrap(),
            mtu: 1450,
        };
        let ipam = Ipam::for_conf(&conf, Some(&node)).unwrap();
        assert_eq!(ipam.plugin, "host-local");
        assert_eq!(
            ipam.config["ipam"],
            json!({
                "type": "host-local",
                "ranges": [[{"subnet": "10.244.3.0/24", "gateway": "10.244.3.1"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": "/tmp/d",
            })
        );
        assert_eq!(ipam.config["name"], "xdplane");
        assert!(Ipam::for_conf(&conf, None).is_none());
        let own = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"x","type":"t","ipam":{"type":"static","addresses":[]}}"#,
        )
        .unwrap();
        let ipam = Ipam::for_conf(&own, None).unwrap();
        assert_eq!(ipam.plugin, "static");
        assert_eq!(ipam.config["ipam"]["addresses"], json!([]));
    }

    #[test]
    fn plugin_lookup() {
        assert!(
            find_plugin(
                "sh",
                &[PathBuf::from("/nonexistent"), PathBuf::from("/bin")]
            )
            .is_some()
        );
        assert!(find_plugin("../bin/sh", &[PathBuf::from("/bin")]).is_none());
        assert!(find_plugin("no-such-plugin-xyz", &[PathBuf::from("/bin")]).is_none());
    }
}
