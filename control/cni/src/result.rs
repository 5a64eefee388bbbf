//! CNI results: the one this plugin prints after ADD, and the ones it reads (IPAM output,
//! `prevResult`). Versions 0.3.0 to 1.0.0 share one shape; before 1.0.0 every entry of
//! `ips` carries `"version": "4"` or `"6"`.

use crate::error::{self, CniError};
use crate::net::Ipv4Net;
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::Ipv4Addr;

/// One entry of `interfaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// The netns path, for interfaces inside the container.
    pub sandbox: Option<String>,
}

/// One IPv4 entry of `ips`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address and prefix length of the interface.
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// One IPv4 entry of `routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gw: Option<Ipv4Addr>,
}

/// A result restricted to what this plugin handles (IPv4).
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Value,
}

impl CniResult {
    /// The result in the shape of `cni_version` (one of the supported versions).
    pub fn to_json(&self, cni_version: &str) -> Value {
        let with_ip_version = cni_version != "1.0.0";
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = json!({"name": i.name, "mac": i.mac});
                if let Some(s) = &i.sandbox {
                    o["sandbox"] = json!(s);
                }
                o
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = json!({"address": ip.address.to_string()});
                if with_ip_version {
                    o["version"] = json!("4");
                }
                if let Some(g) = ip.gateway {
                    o["gateway"] = json!(g.to_string());
                }
                if let Some(i) = ip.interface {
                    o["interface"] = json!(i);
                }
                o
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut o = json!({"dst": r.dst.trunc().to_string()});
                if let Some(g) = r.gw {
                    o["gw"] = json!(g.to_string());
                }
                o
            })
            .collect();
        let dns = if self.dns.is_object() {
            self.dns.clone()
        } else {
            json!({})
        };
        json!({
            "cniVersion": cni_version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": dns,
        })
    }
}

#[derive(Deserialize)]
struct WireResult {
    #[serde(default)]
    interfaces: Vec<WireInterface>,
    #[serde(default)]
    ips: Vec<WireIp>,
    #[serde(default)]
    routes: Vec<WireRoute>,
    #[serde(default)]
    dns: Value,
}

#[derive(Deserialize)]
struct WireInterface {
    name: String,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Deserialize)]
struct WireIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct WireRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

/// A result read from another plugin. IPv6 entries are skipped (xdplane is IPv4-only);
/// malformed IPv4 entries are errors (`what` names the source in messages).
pub fn parse_result(v: &Value, what: &str) -> Result<CniResult, CniError> {
    let w: WireResult = serde_json::from_value(v.clone()).map_err(|e| {
        CniError::new(error::DECODE_FAILURE, format!("{what} is not a CNI result"))
            .with_details(e.to_string())
    })?;
    let bad = |m: String| CniError::io(format!("{what}: {m}"));
    let mut ips = Vec::new();
    for ip in w.ips {
        if ip.address.contains(':') {
            continue;
        }
        let address: Ipv4Net = ip.address.parse().map_err(|e| bad(format!("{e}")))?;
        let gateway = match ip.gateway.as_deref() {
            None | Some("") => None,
            Some(g) => Some(
                g.parse::<Ipv4Addr>()
                    .map_err(|_| bad(format!("gateway {g:?} is not an IPv4 address")))?,
            ),
        };
        ips.push(IpConfig {
            address,
            gateway,
            interface: ip.interface,
        });
    }
    let mut routes = Vec::new();
    for r in w.routes {
        if r.dst.contains(':') {
            continue;
        }
        let dst: Ipv4Net = r.dst.parse().map_err(|e| bad(format!("route {e}")))?;
        let gw = match r.gw.as_deref() {
            None | Some("") => None,
            Some(g) => Some(
                g.parse::<Ipv4Addr>()
                    .map_err(|_| bad(format!("route gateway {g:?} is not an IPv4 address")))?,
            ),
        };
        routes.push(Route { dst, gw });
    }
    Ok(CniResult {
        interfaces: w
            .interfaces
            .into_iter()
            .map(|i| Interface {
                name: i.name,
                mac: i.mac,
                sandbox: i.sandbox,
            })
            .collect(),
        ips,
        routes,
        dns: w.dns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "xv0123456789a".into(),
                    mac: "02:00:00:00:00:01".into(),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:02".into(),
                    sandbox: Some("/run/netns/p".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.1.2/24".parse().unwrap(),
                gateway: Some(Ipv4Addr::new(10, 244, 1, 1)),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some(Ipv4Addr::new(10, 244, 1, 1)),
            }],
            dns: Value::Null,
        }
    }

    #[test]
    fn shapes_per_version() {
        let v1 = sample().to_json("1.0.0");
        assert_eq!(
            v1,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "xv0123456789a", "mac": "02:00:00:00:00:01"},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/p"}
                ],
                "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
                "dns": {}
            })
        );
        for v in ["0.3.0", "0.3.1", "0.4.0"] {
            let j = sample().to_json(v);
            assert_eq!(j["cniVersion"], v);
            assert_eq!(j["ips"][0]["version"], "4");
        }
    }

    #[test]
    fn round_trip_and_ipv6_skipped() {
        let mut j = sample().to_json("0.3.1");
        j["ips"]
            .as_array_mut()
            .unwrap()
            .push(json!({"version":"6","address":"fd00::2/64"}));
        let r = parse_result(&j, "prevResult").unwrap();
        let mut want = sample();
        want.dns = json!({});
        assert_eq!(r, want);
    }

    #[test]
    fn malformed() {
        let e = parse_result(&json!({"ips":[{"address":"10.0.0.1"}]}), "IPAM").unwrap_err();
        assert_eq!(e.code, 5);
        assert!(e.msg.starts_with("IPAM:"), "{e}");
        assert_eq!(parse_result(&json!({"ips":5}), "IPAM").unwrap_err().code, 6);
    }
}
