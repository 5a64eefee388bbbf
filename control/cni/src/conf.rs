//! The network configuration the runtime passes on stdin (one plugin of a conflist, with the
//! list's `cniVersion` and `name`).

use crate::error::{self, CniError};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// The spec versions this plugin speaks (`VERSION` reports them).
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The version this plugin implements (used for `VERSION` and when the request's is unknown).
pub const CURRENT_VERSION: &str = "1.0.0";

/// host-local's own default store directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The smallest MTU an IPv4 interface may have (RFC 791), and the largest a veth takes.
pub const MIN_MTU: u32 = 68;
pub const MAX_MTU: u32 = 65535;

/// One plugin configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    /// `adminSocket`: the node agent's admin socket.
    pub admin_socket: PathBuf,
    /// `mtu`: overrides the agent's pod MTU.
    pub mtu: Option<u32>,
    /// `ipam`: delegate to this IPAM section instead of the built-in host-local one.
    pub ipam: Option<Map<String, Value>>,
    /// `dataDir`: host-local's store when the built-in IPAM section is used.
    pub data_dir: PathBuf,
    /// `dns`: reported in the result when IPAM returns none.
    pub dns: Option<Value>,
    /// `prevResult`: the result of the previous plugin (chained ADD) or of ADD (CHECK, DEL).
    pub prev_result: Option<Value>,
    /// The whole object as received (delegated to IPAM with the `ipam` section set).
    pub raw: Map<String, Value>,
}

/// The `cniVersion` to write in an error about `stdin`: the request's when it is one we speak.
pub fn error_version(stdin: &[u8]) -> &'static str {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .and_then(|v| SUPPORTED_VERSIONS.iter().find(|s| **s == v).copied())
        .unwrap_or(CURRENT_VERSION)
}

/// Network names: an alphanumeric first character, then alphanumerics, `_`, `.`, `-`.
fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && c.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn opt_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(CniError::config(format!(
            "field {key:?} must be a string, got {other}"
        ))),
    }
}

impl NetConf {
    /// Parses and validates: not JSON → 6, unsupported `cniVersion` → 1, a missing or
    /// invalid field → 7.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                error::DECODE_FAILURE,
                "the network configuration is not valid JSON",
            )
            .with_details(e.to_string())
        })?;
        let Value::Object(raw) = v else {
            return Err(CniError::config(
                "the network configuration must be a JSON object",
            ));
        };
        let cni_version = opt_str(&raw, "cniVersion")?.unwrap_or("").to_string();
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            let shown = if cni_version.is_empty() {
                "none".to_string()
            } else {
                format!("{cni_version:?}")
            };
            return Err(CniError::new(
                error::INCOMPATIBLE_VERSION,
                format!(
                    "incompatible CNI version {shown}: this plugin supports {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let name = opt_str(&raw, "name")?
            .ok_or_else(|| CniError::config("field \"name\" is missing"))?
            .to_string();
        if !valid_name(&name) {
            return Err(CniError::config(format!(
                "network name {name:?} is invalid: it must start with a letter or digit and \
                 contain only letters, digits, '_', '.' and '-'"
            )));
        }
        let plugin_type = opt_str(&raw, "type")?
            .ok_or_else(|| CniError::config("field \"type\" is missing"))?
            .to_string();
        let admin_socket = match opt_str(&raw, "adminSocket")? {
            None => PathBuf::from(xdplane_api::DEFAULT_ADMIN_SOCKET),
            Some("") => return Err(CniError::config("field \"adminSocket\" is empty")),
            Some(s) => PathBuf::from(s),
        };
        let mtu = match raw.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let m = v
                    .as_u64()
                    .filter(|m| (u64::from(MIN_MTU)..=u64::from(MAX_MTU)).contains(m))
                    .ok_or_else(|| {
                        CniError::config(format!(
                            "field \"mtu\" must be an integer from {MIN_MTU} to {MAX_MTU}, got {v}"
                        ))
                    })?;
                Some(u32::try_from(m).unwrap_or(MAX_MTU))
            }
        };
        let ipam = match raw.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => {
                let t = opt_str(m, "type")?.unwrap_or("");
                if t.is_empty() || t.contains('/') || t == "." || t == ".." {
                    return Err(CniError::config(format!(
                        "ipam.type {t:?} must name a plugin binary on CNI_PATH"
                    )));
                }
                Some(m.clone())
            }
            Some(other) => {
                return Err(CniError::config(format!(
                    "field \"ipam\" must be an object, got {other}"
                )));
            }
        };
        let data_dir = match opt_str(&raw, "dataDir")? {
            None => PathBuf::from(DEFAULT_DATA_DIR),
            Some("") => return Err(CniError::config("field \"dataDir\" is empty")),
            Some(s) => PathBuf::from(s),
        };
        let dns = match raw.get("dns") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(other) => {
                return Err(CniError::config(format!(
                    "field \"dns\" must be an object, got {other}"
                )));
            }
        };
        let prev_result = match raw.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(other) => {
                return Err(CniError::config(format!(
                    "field \"prevResult\" must be an object, got {other}"
                )));
            }
        };
        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            admin_socket,
            mtu,
            ipam,
            data_dir,
            dns,
            prev_result,
            raw,
        })
    }

    /// Whether the requested version has CHECK (0.4.0 and later).
    pub fn has_check(&self) -> bool {
        matches!(self.cni_version.as_str(), "0.4.0" | "1.0.0")
    }

    /// Whether results carry `ips[].version` (every version before 1.0.0).
    pub fn ips_have_version(&self) -> bool {
        self.cni_version != "1.0.0"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn minimal_and_defaults() {
        let c = parse(r#"{"cniVersion":"1.0.0","name":"xdplane","type":"xdplane-cni"}"#).unwrap();
        assert_eq!(c.admin_socket, PathBuf::from("/run/xdplane/xdplane.sock"));
        assert_eq!(c.mtu, None);
        assert!(c.ipam.is_none());
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.has_check() && !c.ips_have_version());
        let c = parse(
            r#"{"cniVersion":"0.3.1","name":"n","type":"t","mtu":1450,"adminSocket":"/x.sock",
                "ipam":{"type":"static"},"dataDir":"/d","runtimeConfig":{},"args":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(c.mtu, Some(1450));
        assert!(!c.has_check() && c.ips_have_version());
        assert_eq!(c.ipam.unwrap()["type"], "static");
    }

    #[test]
    fn error_codes() {
        assert_eq!(parse("{not json").unwrap_err().code, 6);
        assert_eq!(parse("").unwrap_err().code, 6);
        assert_eq!(parse("[1]").unwrap_err().code, 7);
        assert_eq!(
            parse(r#"{"cniVersion":"0.2.0","name":"n","type":"t"}"#)
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(parse(r#"{"name":"n","type":"t"}"#).unwrap_err().code, 1);
        for bad in [
            r#"{"cniVersion":"1.0.0","type":"t"}"#,
            r#"{"cniVersion":"1.0.0","name":"-n","type":"t"}"#,
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":20}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":"1500"}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"type":"../x"}}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":[]}"#,
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","adminSocket":5}"#,
            r#"{"cniVersion":1,"name":"n","type":"t"}"#,
        ] {
            assert_eq!(parse(bad).unwrap_err().code, 7, "{bad}");
        }
    }

    #[test]
    fn error_version_falls_back() {
        assert_eq!(error_version(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
        assert_eq!(error_version(br#"{"cniVersion":"9.9.9"}"#), "1.0.0");
        assert_eq!(error_version(b"garbage"), "1.0.0");
    }
}
