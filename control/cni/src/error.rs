//! CNI errors: a well-known code, a short message and optional details (CNI spec 1.0.0,
//! "Error" and "Well-known Error Codes").

use std::fmt;

/// 1: the configuration's `cniVersion` is not one this plugin supports.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// 3: the container (its network namespace) is unknown or does not exist.
pub const CONTAINER_UNKNOWN: u32 = 3;
/// 4: a `CNI_*` environment variable is missing or invalid.
pub const INVALID_ENV: u32 = 4;
/// 5: an I/O or system failure (netlink, exec, the agent refused, ...).
pub const IO_FAILURE: u32 = 5;
/// 6: the configuration (or another plugin's output) is not valid JSON.
pub const DECODE_FAILURE: u32 = 6;
/// 7: the configuration is JSON but a field is missing or invalid.
pub const INVALID_CONFIG: u32 = 7;
/// 11: a transient condition (the node agent is not reachable); the runtime may retry.
pub const TRY_AGAIN_LATER: u32 = 11;

/// An error as the plugin reports it on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn io(msg: impl Into<String>) -> CniError {
        CniError::new(IO_FAILURE, msg)
    }

    pub fn config(msg: impl Into<String>) -> CniError {
        CniError::new(INVALID_CONFIG, msg)
    }

    pub fn env(msg: impl Into<String>) -> CniError {
        CniError::new(INVALID_ENV, msg)
    }

    /// The spec's error object, `details` omitted when empty.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = serde_json::Value::String(self.details.clone());
        }
        v
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = CniError::new(7, "bad field");
        assert_eq!(
            e.to_json("1.0.0"),
            serde_json::json!({"cniVersion":"1.0.0","code":7,"msg":"bad field"})
        );
        let e = e.with_details("more");
        assert_eq!(e.to_json("0.4.0")["details"], "more");
        assert_eq!(e.to_string(), "code 7: bad field (more)");
    }
}
