//! Running the CNI plugin the way a container runtime does: inside the node's namespace,
//! parameters in `CNI_*` variables, the network config on stdin, the result on stdout.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns;

/// The plugin's binary name.
pub const PLUGIN: &str = "xdplane-cni";
/// Where Debian's containernetworking-plugins live (searched after the lab's bin dir).
pub const SYSTEM_CNI_DIR: &str = "/usr/lib/cni";
/// How long one plugin call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The network config given on stdin (also written to `<state>/cni/<node>.conf`).
pub fn net_conf(admin_socket: &Path, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "xdplane",
        "type": PLUGIN,
        "adminSocket": admin_socket.display().to_string(),
        "dataDir": data_dir.display().to_string(),
    })
}

/// One pod's parameters.
pub struct CniCall<'a> {
    /// The plugin to run (`<bin>/xdplane-cni`, or `/usr/lib/cni/bridge` on kernel nodes).
    pub plugin: &'a Path,
    /// The lab's bin dir (first in `CNI_PATH`, before [`SYSTEM_CNI_DIR`]).
    pub bin_dir: &'a Path,
    pub node_netns: &'a str,
    pub container_id: &'a str,
    pub pod_netns: &'a str,
    pub pod_namespace: &'a str,
    pub pod_name: &'a str,
    pub conf: &'a Value,
}

/// What the lab keeps from an ADD result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    /// `ips[0].address`: `IP/prefix`.
    pub address: String,
    pub gateway: Option<String>,
    /// The MAC of the interface inside the pod.
    pub mac: Option<String>,
    /// The interface without a sandbox (the host side).
    pub host_ifname: Option<String>,
    pub raw: Value,
}

/// Reads the parts of a CNI 1.0 result the lab uses.
pub fn parse_add_result(raw: Value, pod_netns_path: &str) -> Result<AddResult> {
    let ip0 = raw
        .get("ips")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .ok_or_else(|| anyhow!("the CNI result has no ips: {raw}"))?;
    let address = ip0
        .get("address")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the CNI result's ips[0] has no address: {raw}"))?
        .to_string();
    if !address.contains('/') {
        bail!("the CNI result's ips[0].address {address:?} is not IP/prefix");
    }
    let gateway = ip0
        .get("gateway")
        .and_then(Value::as_str)
        .map(str::to_string);
    let ifaces = raw
        .get("interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let by_index = ip0
        .get("interface")
        .and_then(Value::as_u64)
        .and_then(|i| ifaces.get(i as usize));
    let in_pod = by_index.or_else(|| {
        ifaces
            .iter()
            .find(|i| i.get("sandbox").and_then(Value::as_str) == Some(pod_netns_path))
    });
    let mac = in_pod
        .and_then(|i| i.get("mac"))
        .and_then(Value::as_str)
        .map(str::to_string);
    // The host side: the last interface outside the sandbox (a bridge plugin lists the
    // bridge first, then the host veth).
    let host_ifname = ifaces
        .iter()
        .rev()
        .find(|i| {
            i.get("sandbox")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        })
        .and_then(|i| i.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(AddResult {
        address,
        gateway,
        mac,
        host_ifname,
        raw,
    })
}

/// Runs the plugin with `CNI_COMMAND=command`; returns its stdout parsed as JSON (`Null`
/// when empty), or an error carrying the plugin's CNI error (`code`, `msg`, `details`).
pub fn invoke(call: &CniCall<'_>, command: &str, conf: &Value) -> Result<Value> {
    let plugin = call.plugin;
    if !plugin.exists() {
        if plugin.file_name().and_then(|n| n.to_str()) == Some(PLUGIN) {
            bail!(
                "the CNI plugin {} does not exist (build it: cargo build -p xdplane-cni, or set XDPLANE_BIN_DIR)",
                plugin.display()
            );
        }
        bail!(
            "the CNI plugin {} does not exist (apt-get install containernetworking-plugins)",
            plugin.display()
        );
    }
    let cni_path = format!("{}:{SYSTEM_CNI_DIR}", call.bin_dir.display());
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
        call.pod_namespace, call.pod_name, call.container_id
    );
    let mut child = Command::new(netns::ip_bin())
        .args(["netns", "exec", call.node_netns])
        .arg(plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", netns::path(call.pod_netns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} in {}", plugin.display(), call.node_netns))?;
    let input = serde_json::to_vec(conf)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits before reading its config makes this fail: its exit status
        // and output below tell why.
        let _ = stdin.write_all(&input);
    }
    let mut stdout = child.stdout.take().context("plugin stdout")?;
    let mut stderr = child.stderr.take().context("plugin stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + CALL_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "CNI {command} for {}/{} did not finish within {}s",
                call.pod_namespace,
                call.pod_name,
                CALL_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let out_text = String::from_utf8_lossy(&out);
    let err_text = String::from_utf8_lossy(&err);
    let parsed: Option<Value> = if out_text.trim().is_empty() {
        None
    } else {
        serde_json::from_str(&out_text).ok()
    };
    if !status.success() {
        let detail = match &parsed {
            Some(v) if v.get("msg").is_some() => format!(
                "code {}: {}{}",
                v.get("code").map(Value::to_string).unwrap_or_default(),
                v.get("msg").and_then(Value::as_str).unwrap_or_default(),
                v.get("details")
                    .and_then(Value::as_str)
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            _ => format!("{} {}", out_text.trim(), err_text.trim()),
        };
        bail!(
            "CNI {command} for {}/{} failed ({status}): {}",
            call.pod_namespace,
            call.pod_name,
            detail.trim()
        );
    }
    match parsed {
        Some(v) => Ok(v),
        None if out_text.trim().is_empty() => Ok(Value::Null),
        None => bail!(
            "CNI {command} for {}/{} printed something that is not JSON: {}",
            call.pod_namespace,
            call.pod_name,
            out_text.trim()
        ),
    }
}

/// CNI ADD; the parsed result.
pub fn add(call: &CniCall<'_>) -> Result<AddResult> {
    let raw = invoke(call, "ADD", call.conf)?;
    parse_add_result(raw, &netns::path(call.pod_netns).display().to_string())
        .with_context(|| format!("CNI ADD for {}/{}", call.pod_namespace, call.pod_name))
}

/// CNI DEL, with the ADD result as `prevResult` when known (as runtimes do).
pub fn del(call: &CniCall<'_>, prev: Option<&Value>) -> Result<()> {
    let mut conf = call.conf.clone();
    if let (Some(prev), Some(obj)) = (prev, conf.as_object_mut()) {
        obj.insert("prevResult".into(), prev.clone());
    }
    invoke(call, "DEL", &conf).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result() {
        let raw = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "xdp1a2b3c", "mac": "aa:aa:aa:aa:aa:01"},
                {"name": "eth0", "mac": "02:00:00:00:00:07", "sandbox": "/run/netns/xl-a"}
            ],
            "ips": [{"address": "10.244.1.7/24", "gateway": "10.244.1.1", "interface": 1}]
        });
        let r = parse_add_result(raw, "/run/netns/xl-a").unwrap();
        assert_eq!(r.address, "10.244.1.7/24");
        assert_eq!(r.gateway.as_deref(), Some("10.244.1.1"));
        assert_eq!(r.mac.as_deref(), Some("02:00:00:00:00:07"));
        assert_eq!(r.host_ifname.as_deref(), Some("xdp1a2b3c"));
    }

    #[test]
    fn parses_bridge_plugin_result() {
        let raw = json!({
            "cniVersion": "0.3.1",
            "interfaces": [
                {"name": "cni0", "mac": "aa:aa:aa:aa:aa:00"},
                {"name": "veth1234", "mac": "aa:aa:aa:aa:aa:01"},
                {"name": "eth0", "mac": "02:00:00:00:00:09", "sandbox": "/run/netns/xl-k"}
            ],
            "ips": [{"version": "4", "interface": 2, "address": "10.244.3.2/24", "gateway": "10.244.3.1"}]
        });
        let r = parse_add_result(raw, "/run/netns/xl-k").unwrap();
        assert_eq!(r.host_ifname.as_deref(), Some("veth1234"));
        assert_eq!(r.mac.as_deref(), Some("02:00:00:00:00:09"));
        assert_eq!(r.gateway.as_deref(), Some("10.244.3.1"));
    }

    #[test]
    fn result_without_interface_index() {
        let raw = json!({
            "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:08", "sandbox": "/run/netns/xl-b"}],
            "ips": [{"address": "10.244.1.8/24"}]
        });
        let r = parse_add_result(raw, "/run/netns/xl-b").unwrap();
        assert_eq!(r.mac.as_deref(), Some("02:00:00:00:00:08"));
        assert_eq!(r.host_ifname, None);
    }

    #[test]
    fn bad_results() {
        assert!(parse_add_result(json!({}), "x").is_err());
        assert!(parse_add_result(json!({"ips": []}), "x").is_err());
        assert!(parse_add_result(json!({"ips": [{"address": "10.0.0.1"}]}), "x").is_err());
    }

    #[test]
    fn conf_shape() {
        let c = net_conf(Path::new("/s.sock"), Path::new("/d"));
        assert_eq!(c["type"], "xdplane-cni");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["adminSocket"], "/s.sock");
        assert_eq!(c["dataDir"], "/d");
    }
}
