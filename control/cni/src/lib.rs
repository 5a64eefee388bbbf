//! `xdplane-cni`: the CNI plugin of xdplane (CNI spec 1.0.0; results also in the 0.3.x and
//! 0.4.0 shapes).
//!
//! ADD asks the node agent for the node's pod CIDR, gateway and MTU, delegates the address
//! to an IPAM plugin (host-local over the pod CIDR unless the configuration has its own
//! `ipam` section), creates a veth pair (host side `xv<hash>` in the node, `CNI_IFNAME` in
//! the pod), addresses the pod and gives it a default route via the gateway, then attaches
//! the host side to the dataplane. A failure after IPAM undoes everything. DEL is
//! idempotent; CHECK verifies the agent, both interfaces, the address and the route.
//!
//! Guarantees: stdout carries exactly one JSON object (the result, the VERSION answer or
//! the error); logs go to stderr. See `docs/cni.md`.
#![forbid(unsafe_code)]

pub mod agent;
pub mod cmd;
pub mod conf;
pub mod env;
pub mod error;
pub mod ipam;
pub mod link;
pub mod net;
pub mod result;

use env::Command;
use error::CniError;
use serde_json::{Value, json};

/// The answer to VERSION.
pub fn version_info() -> Value {
    json!({
        "cniVersion": conf::CURRENT_VERSION,
        "supportedVersions": conf::SUPPORTED_VERSIONS,
    })
}

/// Runs one invocation. `get` reads the environment, `stdin` is the configuration.
/// Returns what to print on success (`Value::Null`: nothing), or the error and the
/// `cniVersion` to report it with.
pub fn run(
    get: &dyn Fn(&str) -> Option<String>,
    stdin: impl FnOnce() -> std::io::Result<Vec<u8>>,
) -> Result<Value, (CniError, String)> {
    let plain = |e: CniError| (e, conf::CURRENT_VERSION.to_string());
    let command = env::command(get).map_err(plain)?;
    if command == Command::Version {
        return Ok(version_info());
    }
    let input = stdin().map_err(|e| {
        plain(CniError::io(format!(
            "cannot read the configuration from stdin: {e}"
        )))
    })?;
    let ver = conf::error_version(&input).to_string();
    let with_ver = |e: CniError| (e, ver.clone());
    let op = env::OpEnv::from_vars(command, get).map_err(with_ver)?;
    let conf = conf::NetConf::parse(&input).map_err(with_ver)?;
    match command {
        Command::Add => cmd::add(&op, &conf).map_err(with_ver),
        Command::Del => cmd::del(&op, &conf).map(|()| Value::Null).map_err(with_ver),
        Command::Check => cmd::check(&op, &conf)
            .map(|()| Value::Null)
            .map_err(with_ver),
        Command::Version => Ok(version_info()),
    }
}
