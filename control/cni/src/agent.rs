//! The node agent, over its admin socket (`xdplane-api`).

use crate::error::{self, CniError};
use crate::net::Ipv4Net;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use xdplane_api::{ApiError, Attachment, Client, NodeInfo, Request};

/// How long one request may take. `attach` replies when the port is live (XDP attached,
/// sockets bound, tables published), which is the slowest call.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The node facts, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    pub node: String,
    pub pod_cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

impl NodeNet {
    pub fn from_info(ni: &NodeInfo) -> Result<NodeNet, CniError> {
        let bad = |m: String| CniError::io(format!("the agent's node-info is invalid: {m}"));
        let pod_cidr: Ipv4Net = ni
            .pod_cidr
            .parse()
            .map_err(|e| bad(format!("podCIDR: {e}")))?;
        let gateway: Ipv4Addr = ni
            .gateway
            .parse()
            .map_err(|_| bad(format!("gateway {:?} is not an IPv4 address", ni.gateway)))?;
        if !pod_cidr.contains(gateway) {
            return Err(bad(format!(
                "gateway {gateway} is outside the pod CIDR {pod_cidr}"
            )));
        }
        Ok(NodeNet {
            node: ni.node.clone(),
            pod_cidr: pod_cidr.trunc(),
            gateway,
            mtu: ni.mtu,
        })
    }
}

/// A connection to the agent.
pub struct Agent {
    client: Client,
    socket: PathBuf,
}

/// Maps a client error: an agent that cannot be reached or stopped answering is a
/// transient condition (11); a refusal or a bad reply is a failure (5).
fn map_err(socket: &Path, what: &str, e: ApiError) -> CniError {
    let code = match &e {
        ApiError::Connect { .. } | ApiError::Io(_) | ApiError::Closed => error::TRY_AGAIN_LATER,
        ApiError::Decode(_) | ApiError::Refused(_) => error::IO_FAILURE,
    };
    let msg = match &e {
        ApiError::Refused(m) => format!("the xdplane agent refused {what}: {m}"),
        ApiError::Connect { .. } => format!(
            "the xdplane agent is not reachable at {} (is the node agent running?)",
            socket.display()
        ),
        _ => format!("{what} with the xdplane agent failed"),
    };
    CniError::new(code, msg).with_details(e.to_string())
}

impl Agent {
    /// Connects; an unreachable agent is code 11.
    pub fn connect(socket: &Path) -> Result<Agent, CniError> {
        let client = Client::connect(socket, TIMEOUT).map_err(|e| map_err(socket, "connect", e))?;
        Ok(Agent {
            client,
            socket: socket.to_path_buf(),
        })
    }

    pub fn node_info(&mut self) -> Result<(NodeInfo, NodeNet), CniError> {
        let ni: NodeInfo = self
            .client
            .call_as(&Request::NodeInfo)
            .map_err(|e| map_err(&self.socket, "node-info", e))?;
        let nn = NodeNet::from_info(&ni)?;
        Ok((ni, nn))
    }

    /// Registers the pod; returns the agent's reply payload (`{port}`).
    pub fn attach(&mut self, a: Attachment) -> Result<serde_json::Value, CniError> {
        self.client
            .call(&Request::Attach(a))
            .map_err(|e| map_err(&self.socket, "attach", e))
    }

    /// Unregisters the pod; `Ok(false)` when it was not attached.
    pub fn detach(&mut self, container_id: &str) -> Result<bool, CniError> {
        let v = self
            .client
            .call(&Request::Detach {
                container_id: container_id.to_string(),
            })
            .map_err(|e| map_err(&self.socket, "detach", e))?;
        Ok(v.get("found")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true))
    }

    /// The attachment the agent holds for the container.
    pub fn check(&mut self, container_id: &str) -> Result<Attachment, CniError> {
        self.client
            .call_as(&Request::Check {
                container_id: container_id.to_string(),
            })
            .map_err(|e| map_err(&self.socket, "check", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_info_validation() {
        let ni = NodeInfo {
            node: "n1".into(),
            pod_cidr: "10.244.1.0/24".into(),
            gateway: "10.244.1.1".into(),
            mtu: 1500,
            backend: None,
            vtep_mac: None,
            public_ip: None,
            vni: None,
        };
        let nn = NodeNet::from_info(&ni).unwrap();
        assert_eq!(nn.pod_cidr.to_string(), "10.244.1.0/24");
        let mut bad = ni.clone();
        bad.gateway = "10.244.2.1".into();
        assert_eq!(NodeNet::from_info(&bad).unwrap_err().code, 5);
        let mut bad = ni;
        bad.pod_cidr = "10.244.1.0".into();
        assert_eq!(NodeNet::from_info(&bad).unwrap_err().code, 5);
    }

    #[test]
    fn unreachable_is_try_again() {
        let e = Agent::connect(Path::new("/nonexistent/xdplane-cni-test.sock"))
            .err()
            .unwrap();
        assert_eq!(e.code, 11);
        assert!(e.msg.contains("not reachable"), "{e}");
    }
}
