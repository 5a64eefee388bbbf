//! The admin-socket protocol of xdplane.
//!
//! A unix stream socket; each side writes one JSON object per line. The client sends a
//! [`Request`] and reads one [`Reply`] line per request. The protocol is used by the CNI
//! plugin (`node-info`, `attach`, `detach`, `check`) and by the CLI (`stats`, `tables`,
//! `reload`, `conntrack`).
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Where a node agent listens when nothing else is configured.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/xdplane/xdplane.sock";

/// A request to the node agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// The node's name, pod CIDR, gateway and pod MTU.
    NodeInfo,
    /// Attach a pod's host-side interface to the dataplane.
    Attach(Attachment),
    /// Detach by container ID; succeeds (with `found: false`) when nothing is attached.
    Detach {
        #[serde(rename = "containerId")]
        container_id: String,
    },
    /// The attachment of a container, or an error when there is none.
    Check {
        #[serde(rename = "containerId")]
        container_id: String,
    },
    /// Counters of every worker and port.
    Stats,
    /// The tables of the current snapshot.
    Tables,
    /// Re-read the manifest directory and publish.
    Reload,
    /// Live flows of the connection-tracking table (at most `max`, default
    /// [`DEFAULT_CONNTRACK_MAX`]), with the table's counters.
    Conntrack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<usize>,
    },
}

/// How many flows a `conntrack` request lists when it does not say.
pub const DEFAULT_CONNTRACK_MAX: usize = 1000;

/// One live flow as `conntrack` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FlowInfo {
    /// `tcp`, `udp`, `sctp`, `icmp`, `affinity` or the protocol number.
    pub proto: String,
    /// The original direction's tuple, `src:sport -> dst:dport` (ICMP: the identifier as
    /// both ports).
    pub orig: String,
    /// What the original direction's packets become.
    pub rewrite: String,
    /// Protocol state, e.g. `established`, `syn-sent`, `replied`, `unreplied`.
    pub state: String,
    /// Seconds since the last packet.
    pub age_s: u64,
    /// Seconds until the flow expires without traffic.
    pub expires_in_s: u64,
}

/// The reply to `conntrack`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConntrackDump {
    /// The table's counters (entries, capacity, inserted, ...), by name.
    pub counters: serde_json::Map<String, serde_json::Value>,
    /// Whether more live flows exist than were listed.
    pub truncated: bool,
    pub flows: Vec<FlowInfo>,
}

/// A pod interface attached to the dataplane (what the CNI plugin registers).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub container_id: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// Host-side interface name (in the node's network namespace).
    pub ifname: String,
    /// The pod's IPv4 address (no prefix length).
    pub ip: String,
    /// The MAC address of the pod's own interface (inside the pod).
    pub mac: String,
}

/// The node facts the CNI plugin needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub node: String,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
    pub gateway: String,
    pub mtu: u32,
    /// flannel's backend on this node (`vxlan` or `host-gw`), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The node's VtepMAC (the uplink's MAC), published in flannel's backend-data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
    /// The node's underlay address, published as flannel's public-ip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    /// The VXLAN network identifier in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

/// One reply line: `{"ok":true, ...payload}` or `{"ok":false,"error":"..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Reply {
    pub fn ok(data: impl Serialize) -> Reply {
        Reply {
            ok: true,
            error: None,
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
        }
    }
    pub fn err(msg: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(msg.into()),
            data: serde_json::Value::Null,
        }
    }
}

/// Errors of the client side.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot connect to the xdplane admin socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("admin socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad reply from the agent: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the agent closed the connection without replying")]
    Closed,
    #[error("the agent refused: {0}")]
    Refused(String),
}

/// A connection to a node agent.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects with a timeout for every read and write (`timeout`).
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ApiError> {
        let s = UnixStream::connect(path).map_err(|source| ApiError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let writer = s.try_clone()?;
        Ok(Client {
            reader: BufReader::new(s),
            writer,
        })
    }

    /// Sends one request and returns the reply's payload, or `Refused` with the agent's error.
    pub fn call(&mut self, req: &Request) -> Result<serde_json::Value, ApiError> {
        let mut line = serde_json::to_string(req)?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        let mut buf = String::new();
        if self.reader.read_line(&mut buf)? == 0 {
            return Err(ApiError::Closed);
        }
        let reply: Reply = serde_json::from_str(&buf)?;
        if reply.ok {
            Ok(reply.data)
        } else {
            Err(ApiError::Refused(
                reply.error.unwrap_or_else(|| "unspecified error".into()),
            ))
        }
    }

    /// `call` and decode the payload as `T`.
    pub fn call_as<T: for<'de> Deserialize<'de>>(&mut self, req: &Request) -> Result<T, ApiError> {
        Ok(serde_json::from_value(self.call(req)?)?)
    }
}

/// One-shot helper: connect, call, disconnect.
pub fn call(path: &Path, req: &Request, timeout: Duration) -> Result<serde_json::Value, ApiError> {
    Client::connect(path, timeout)?.call(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let r = Request::Detach {
            container_id: "abc".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"detach","containerId":"abc"}"#
        );
        let a: Request = serde_json::from_str(
            r#"{"op":"attach","containerId":"c","podNamespace":"default","podName":"p","ifname":"xv1","ip":"10.244.1.2","mac":"02:00:00:00:00:01"}"#,
        )
        .unwrap();
        match a {
            Request::Attach(at) => assert_eq!(at.ip, "10.244.1.2"),
            other => panic!("decoded as {other:?}"),
        }
        assert_eq!(
            serde_json::to_string(&Request::NodeInfo).unwrap(),
            r#"{"op":"node-info"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Conntrack { max: Some(5) }).unwrap(),
            r#"{"op":"conntrack","max":5}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"conntrack"}"#).unwrap(),
            Request::Conntrack { max: None }
        );
    }

    #[test]
    fn conntrack_dump_round_trip() {
        let d = ConntrackDump {
            counters: serde_json::json!({"entries": 1, "capacity": 262144})
                .as_object()
                .unwrap()
                .clone(),
            truncated: false,
            flows: vec![FlowInfo {
                proto: "tcp".into(),
                orig: "10.244.1.2:40000 -> 10.96.0.10:80".into(),
                rewrite: "10.244.1.2:40000 -> 10.244.2.3:8080".into(),
                state: "established".into(),
                age_s: 1,
                expires_in_s: 431999,
            }],
        };
        let s = serde_json::to_string(&d).unwrap();
        assert!(s.contains(r#""expiresInS":431999"#), "{s}");
        let back: ConntrackDump = serde_json::from_str(&s).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn reply_round_trip() {
        let ok = Reply::ok(NodeInfo {
            node: "server1".into(),
            pod_cidr: "10.244.1.0/24".into(),
            gateway: "10.244.1.1".into(),
            mtu: 1500,
            backend: None,
            vtep_mac: Some("02:00:00:00:00:01".into()),
            public_ip: None,
            vni: None,
        });
        let s = serde_json::to_string(&ok).unwrap();
        assert!(s.contains(r#""podCIDR":"10.244.1.0/24""#), "{s}");
        assert!(s.contains(r#""vtepMac":"02:00:00:00:00:01""#), "{s}");
        assert!(!s.contains("publicIp"), "absent fields are left out: {s}");
        let back: Reply = serde_json::from_str(&s).unwrap();
        let ni: NodeInfo = serde_json::from_value(back.data).unwrap();
        assert_eq!(ni.node, "server1");
        let e = serde_json::to_string(&Reply::err("nope")).unwrap();
        assert_eq!(e, r#"{"ok":false,"error":"nope"}"#);
    }

    #[test]
    fn client_talks_to_a_server() {
        use std::os::unix::net::UnixListener;
        let dir = std::env::temp_dir().join(format!("xdplane-api-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            for _ in 0..2 {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let req: Request = serde_json::from_str(&line).unwrap();
                let rep = match req {
                    Request::Check { .. } => Reply::err("container xyz is not attached"),
                    _ => Reply::ok(serde_json::json!({"found": true})),
                };
                let mut out = serde_json::to_string(&rep).unwrap();
                out.push('\n');
                w.write_all(out.as_bytes()).unwrap();
            }
        });
        let mut c = Client::connect(&path, Duration::from_secs(2)).unwrap();
        let v = c.call(&Request::Stats).unwrap();
        assert_eq!(v["found"], true);
        match c.call(&Request::Check {
            container_id: "xyz".into(),
        }) {
            Err(ApiError::Refused(m)) => assert!(m.contains("not attached")),
            other => panic!("expected refusal, got {other:?}"),
        }
        t.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
