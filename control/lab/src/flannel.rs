//! flannel, as the lab plays it: the `kube-flannel-cfg` ConfigMap's `net-conf.json`, the
//! three modes the seed guide switches between, and the Node annotations flanneld writes
//! (the lab plays the API server, so it writes them onto the Node objects the agents read).
//!
//! This is the lab's own reading of flannel, independent of xdplane's: the kernel flannel
//! nodes of the lab ([`crate::kernel`]) are programmed from it, and they are what xdplane is
//! checked against.

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use xdplane_control::model::Model;

/// `kube-system/kube-flannel-cfg`, key `net-conf.json`.
pub const CONFIGMAP_NAMESPACE: &str = "kube-system";
pub const CONFIGMAP_NAME: &str = "kube-flannel-cfg";
pub const NET_CONF_KEY: &str = "net-conf.json";
/// The flannel network of the seed (and of kube-flannel.yml).
pub const DEFAULT_NETWORK: &str = "10.244.0.0/16";
/// flannel's vxlan defaults: VNI 1 (hence `flannel.1`), UDP port 8472 (the Linux default).
pub const DEFAULT_VNI: u32 = 1;
pub const DEFAULT_PORT: u16 = 8472;
/// Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8: flannel's vxlan MTU is the uplink's − 50.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The Node annotations flanneld (kube subnet manager) writes on its own Node.
pub const ANN_BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const ANN_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const ANN_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const ANN_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// The three ways the seed guide runs flannel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `Backend.Type: vxlan`: every other node's pods through the VXLAN tunnel (flannel.1).
    #[default]
    Vxlan,
    /// `vxlan` + `DirectRouting: true`: plain routes to nodes on the same subnet, VXLAN to
    /// the others.
    #[value(name = "directrouting", alias = "direct-routing")]
    #[serde(rename = "directrouting")]
    DirectRouting,
    /// `Backend.Type: host-gw`: plain routes via the peer node; no encapsulation.
    #[value(name = "host-gw", alias = "hostgw")]
    #[serde(rename = "host-gw")]
    HostGw,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Vxlan => "vxlan",
            Mode::DirectRouting => "directrouting",
            Mode::HostGw => "host-gw",
        }
    }
    /// flannel's `Backend.Type` (and the `backend-type` annotation).
    pub fn backend_type(self) -> &'static str {
        match self {
            Mode::Vxlan | Mode::DirectRouting => "vxlan",
            Mode::HostGw => "host-gw",
        }
    }
    pub fn is_vxlan(self) -> bool {
        self != Mode::HostGw
    }
    /// The pod MTU flannel puts in subnet.env (FLANNEL_MTU) for an uplink of `uplink_mtu`.
    pub fn pod_mtu(self, uplink_mtu: u32) -> u32 {
        if self.is_vxlan() {
            uplink_mtu.saturating_sub(VXLAN_OVERHEAD)
        } else {
            uplink_mtu
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s.to_ascii_lowercase().as_str() {
            "vxlan" => Ok(Mode::Vxlan),
            "directrouting" | "direct-routing" => Ok(Mode::DirectRouting),
            "host-gw" | "hostgw" => Ok(Mode::HostGw),
            other => bail!("unknown flannel mode {other:?} (vxlan, directrouting or host-gw)"),
        }
    }
}

/// An IPv4 prefix `a.b.c.d/len` (host bits must be zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Cidr {
    fn mask(len: u8) -> u32 {
        if len == 0 { 0 } else { u32::MAX << (32 - len) }
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Cidr::mask(self.len) == u32::from(self.addr)
    }
    /// True when `other` lies wholly inside `self`.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
    /// The address `offset` past the network address (`.0` + offset).
    pub fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(offset))
    }
    /// The prefix that holds `ip` with length `len`.
    pub fn of(ip: Ipv4Addr, len: u8) -> Cidr {
        Cidr {
            addr: Ipv4Addr::from(u32::from(ip) & Cidr::mask(len)),
            len,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Cidr {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Cidr> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("{s:?} is not an IPv4 prefix (a.b.c.d/len)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .with_context(|| format!("{s:?}: bad IPv4 address"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| anyhow!("{s:?}: prefix length must be 0..=32"))?;
        let c = Cidr::of(addr, len);
        if c.addr != addr {
            bail!("{s:?} has host bits set (the prefix is {c})");
        }
        Ok(c)
    }
}

/// Go's encoding/json matches object keys to struct fields exactly first, then
/// case-insensitively: the seed's `"Directrouting": true` means `DirectRouting`.
fn go_get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn go_remove(obj: &mut Map<String, Value>, key: &str) {
    obj.retain(|k, _| !k.eq_ignore_ascii_case(key));
}

/// flannel's `net-conf.json`, as flanneld reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetConf {
    pub network: Cidr,
    /// `Backend.Type`, lower case.
    pub backend_type: String,
    pub vni: u32,
    pub port: u16,
    pub direct_routing: bool,
}

impl NetConf {
    /// Parses `net-conf.json` with flannel's defaults (VNI 1, port 8472; 0 means default).
    pub fn parse(text: &str) -> Result<NetConf> {
        let v: Value = serde_json::from_str(text).context("net-conf.json is not valid JSON")?;
        let obj = v
            .as_object()
            .ok_or_else(|| anyhow!("net-conf.json must be a JSON object"))?;
        let network = match go_get(obj, "Network") {
            Some(Value::String(s)) => s
                .parse::<Cidr>()
                .with_context(|| format!("net-conf.json Network {s:?}"))?,
            Some(other) => bail!("net-conf.json Network must be a string, got {other}"),
            None => bail!("net-conf.json has no Network"),
        };
        let empty = Map::new();
        let backend = match go_get(obj, "Backend") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(b)) => b,
            Some(other) => bail!("net-conf.json Backend must be an object, got {other}"),
        };
        // flanneld's default backend is udp.
        let backend_type = match go_get(backend, "Type") {
            None | Some(Value::Null) => "udp".to_string(),
            Some(Value::String(s)) => s.to_ascii_lowercase(),
            Some(other) => bail!("net-conf.json Backend.Type must be a string, got {other}"),
        };
        let num = |key: &str, default: u64, max: u64| -> Result<u64> {
            match go_get(backend, key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => match v.as_u64() {
                    Some(0) => Ok(default),
                    Some(n) if n <= max => Ok(n),
                    _ => bail!("net-conf.json Backend.{key}: {v} is not a number in 0..={max}"),
                },
            }
        };
        let vni = num("VNI", u64::from(DEFAULT_VNI), 0xff_ffff)? as u32;
        let port = num("Port", u64::from(DEFAULT_PORT), 65535)? as u16;
        let direct_routing = match go_get(backend, "DirectRouting") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                bail!("net-conf.json Backend.DirectRouting must be true or false, got {other}")
            }
        };
        Ok(NetConf {
            network,
            backend_type,
            vni,
            port,
            direct_routing,
        })
    }

    /// The lab's mode; an error for backends the lab does not emulate (udp, wireguard, …).
    pub fn mode(&self) -> Result<Mode> {
        match (self.backend_type.as_str(), self.direct_routing) {
            ("vxlan", false) => Ok(Mode::Vxlan),
            ("vxlan", true) => Ok(Mode::DirectRouting),
            ("host-gw", _) => Ok(Mode::HostGw),
            (other, _) => bail!(
                "flannel backend {other:?} is not one the lab emulates (vxlan, vxlan with DirectRouting, host-gw)"
            ),
        }
    }

    /// `flannel.<VNI>`, the VTEP device flanneld creates.
    pub fn vtep_device(&self) -> String {
        format!("flannel.{}", self.vni)
    }
}

/// The net-conf.json of `mode` on the default network.
pub fn default_net_conf(mode: Mode) -> String {
    rewrite_net_conf(
        &format!(r#"{{"Network": "{DEFAULT_NETWORK}", "Backend": {{"Type": "vxlan"}}}}"#),
        mode,
    )
    .expect("the default net-conf is valid")
}

/// `text` with its backend switched to `mode`, as `kubectl -n kube-system edit cm
/// kube-flannel-cfg` would: `Backend.Type` and `DirectRouting` (whatever their case) are
/// replaced; `Network`, `VNI`, `Port` and anything else are kept.
pub fn rewrite_net_conf(text: &str, mode: Mode) -> Result<String> {
    let mut v: Value = serde_json::from_str(text).context("net-conf.json is not valid JSON")?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| anyhow!("net-conf.json must be a JSON object"))?;
    let mut backend = match go_get(obj, "Backend") {
        Some(Value::Object(b)) => b.clone(),
        _ => Map::new(),
    };
    go_remove(obj, "Backend");
    go_remove(&mut backend, "Type");
    go_remove(&mut backend, "DirectRouting");
    backend.insert("Type".into(), Value::String(mode.backend_type().into()));
    if mode == Mode::DirectRouting {
        backend.insert("DirectRouting".into(), Value::Bool(true));
    }
    obj.insert("Backend".into(), Value::Object(backend));
    let out = serde_json::to_string_pretty(&v)?;
    // What the lab writes must read back as the mode it meant.
    let back = NetConf::parse(&out)?;
    if back.mode()? != mode {
        bail!("rewriting net-conf.json to {mode} gave {out}");
    }
    Ok(out)
}

/// The flannel CNI config of kube-flannel.yml (`cni-conf.json`, i.e. 10-flannel.conflist).
pub const CNI_CONF_JSON: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}"#;

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}\n"))
        .collect::<String>()
}

/// The `kube-flannel-cfg` ConfigMap (as in kube-flannel.yml) holding `net_conf`.
pub fn configmap_yaml(net_conf: &str) -> String {
    format!(
        "kind: ConfigMap\napiVersion: v1\nmetadata:\n  name: {CONFIGMAP_NAME}\n  namespace: {CONFIGMAP_NAMESPACE}\n  labels:\n    tier: node\n    k8s-app: flannel\n    app: flannel\ndata:\n  cni-conf.json: |\n{}  {NET_CONF_KEY}: |\n{}",
        indent(CNI_CONF_JSON, "    "),
        indent(net_conf, "    ")
    )
}

/// The annotations flanneld writes on its own Node: `backend-type`, `backend-data`
/// (`{"VNI":1,"VtepMAC":"…"}` for vxlan, `null` for host-gw), `public-ip` and
/// `kube-subnet-manager: "true"`.
pub fn node_annotations(
    mode: Mode,
    vni: u32,
    vtep_mac: Option<&str>,
    public_ip: Ipv4Addr,
) -> Result<BTreeMap<String, String>> {
    let data = match (mode.is_vxlan(), vtep_mac) {
        (true, Some(mac)) => {
            let mac = parse_mac(mac).ok_or_else(|| anyhow!("{mac:?} is not a MAC address"))?;
            format!(r#"{{"VNI":{vni},"VtepMAC":"{}"}}"#, fmt_mac(mac))
        }
        (true, None) => bail!("vxlan mode needs the node's VtepMAC"),
        (false, _) => "null".to_string(),
    };
    Ok(BTreeMap::from([
        (
            ANN_BACKEND_TYPE.to_string(),
            mode.backend_type().to_string(),
        ),
        (ANN_BACKEND_DATA.to_string(), data),
        (ANN_PUBLIC_IP.to_string(), public_ip.to_string()),
        (ANN_SUBNET_MANAGER.to_string(), "true".to_string()),
    ]))
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A peer node as flanneld's kube subnet manager sees it (a "lease").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub node: String,
    pub public_ip: Ipv4Addr,
    pub pod_cidr: Cidr,
    pub backend_type: String,
    /// The raw `backend-data` annotation.
    pub backend_data: String,
}

impl Lease {
    /// The VtepMAC of a vxlan lease (flanneld's vxlanLeaseAttrs).
    pub fn vtep_mac(&self) -> Result<[u8; 6]> {
        let v: Value = serde_json::from_str(&self.backend_data)
            .with_context(|| format!("backend-data {:?} is not JSON", self.backend_data))?;
        let obj = v
            .as_object()
            .ok_or_else(|| anyhow!("backend-data {:?} is not an object", self.backend_data))?;
        let mac = go_get(obj, "VtepMAC")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("backend-data {:?} has no VtepMAC", self.backend_data))?;
        parse_mac(mac).ok_or_else(|| anyhow!("VtepMAC {mac:?} is not a MAC address"))
    }
}

/// The leases of every node of `model` except `except`, as flanneld's kube subnet manager
/// builds them: only Nodes annotated `kube-subnet-manager: "true"` with a `public-ip` and a
/// `spec.podCIDR`. Nodes left out are reported in the second list.
pub fn leases(model: &Model, except: &str) -> (Vec<Lease>, Vec<String>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (name, n) in &model.nodes {
        if name == except {
            continue;
        }
        let ann = &n.annotations;
        if ann.get(ANN_SUBNET_MANAGER).map(String::as_str) != Some("true") {
            skipped.push(format!(
                "{name}: not annotated {ANN_SUBNET_MANAGER}: \"true\""
            ));
            continue;
        }
        let Some(ip) = ann
            .get(ANN_PUBLIC_IP)
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        else {
            skipped.push(format!("{name}: no valid {ANN_PUBLIC_IP} annotation"));
            continue;
        };
        let Some(cidr) = n.pod_cidr else {
            skipped.push(format!("{name}: no spec.podCIDR"));
            continue;
        };
        out.push(Lease {
            node: name.clone(),
            public_ip: ip,
            pod_cidr: Cidr::of(cidr.addr, cidr.prefix),
            backend_type: ann.get(ANN_BACKEND_TYPE).cloned().unwrap_or_default(),
            backend_data: ann.get(ANN_BACKEND_DATA).cloned().unwrap_or_default(),
        });
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!("vxlan".parse::<Mode>().unwrap(), Mode::Vxlan);
        assert_eq!(
            "DirectRouting".parse::<Mode>().unwrap(),
            Mode::DirectRouting
        );
        assert_eq!("host-gw".parse::<Mode>().unwrap(), Mode::HostGw);
        assert!("udp".parse::<Mode>().is_err());
        assert_eq!(Mode::Vxlan.pod_mtu(1500), 1450);
        assert_eq!(Mode::DirectRouting.pod_mtu(1500), 1450);
        assert_eq!(Mode::HostGw.pod_mtu(1500), 1500);
        assert_eq!(serde_json::to_string(&Mode::HostGw).unwrap(), "\"host-gw\"");
        assert_eq!(
            serde_json::from_str::<Mode>("\"directrouting\"").unwrap(),
            Mode::DirectRouting
        );
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.244.0.0/16".parse().unwrap();
        assert!(c.contains("10.244.3.7".parse().unwrap()));
        assert!(!c.contains("10.245.0.1".parse().unwrap()));
        assert!(c.covers(&"10.244.3.0/24".parse().unwrap()));
        assert!(!c.covers(&"10.0.0.0/8".parse().unwrap()));
        assert!("10.244.0.1/16".parse::<Cidr>().is_err());
        assert!("10.244.0.0/33".parse::<Cidr>().is_err());
        assert!("10.244.0.0".parse::<Cidr>().is_err());
        let p: Cidr = "10.244.3.0/24".parse().unwrap();
        assert_eq!(p.nth(1), Ipv4Addr::new(10, 244, 3, 1));
        assert_eq!(
            Cidr::of(Ipv4Addr::new(192, 168, 50, 13), 24).to_string(),
            "192.168.50.0/24"
        );
        assert!(Cidr::of(Ipv4Addr::new(1, 2, 3, 4), 0).contains(Ipv4Addr::new(9, 9, 9, 9)));
    }

    #[test]
    fn seed_net_conf() {
        // The seed's edit: Go-style case-insensitive keys.
        let n = NetConf::parse(
            r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "Directrouting": true}}"#,
        )
        .unwrap();
        assert_eq!(n.mode().unwrap(), Mode::DirectRouting);
        assert_eq!((n.vni, n.port), (1, 8472));
        assert_eq!(n.vtep_device(), "flannel.1");
        let n = NetConf::parse(
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":0,"Port":4789}}"#,
        )
        .unwrap();
        assert_eq!((n.vni, n.port), (1, 4789));
        assert!(
            NetConf::parse(r#"{"Network":"10.244.0.0/16"}"#)
                .unwrap()
                .mode()
                .is_err(),
            "udp"
        );
        assert!(NetConf::parse(r#"{"Backend":{"Type":"vxlan"}}"#).is_err());
        assert!(
            NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}"#)
                .is_err()
        );
        assert!(NetConf::parse("[").is_err());
    }

    #[test]
    fn rewriting_keeps_the_rest() {
        let seed = r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "Directrouting": true, "VNI": 7}}"#;
        let hg = rewrite_net_conf(seed, Mode::HostGw).unwrap();
        let n = NetConf::parse(&hg).unwrap();
        assert_eq!(n.mode().unwrap(), Mode::HostGw);
        assert_eq!(n.vni, 7, "VNI kept: {hg}");
        assert!(!hg.to_ascii_lowercase().contains("directrouting"), "{hg}");
        let v = rewrite_net_conf(&hg, Mode::Vxlan).unwrap();
        assert_eq!(NetConf::parse(&v).unwrap().mode().unwrap(), Mode::Vxlan);
        let d = rewrite_net_conf(&v, Mode::DirectRouting).unwrap();
        assert_eq!(
            NetConf::parse(&d).unwrap().mode().unwrap(),
            Mode::DirectRouting
        );
        assert!(d.contains("\"DirectRouting\": true"), "{d}");
        assert!(rewrite_net_conf("3", Mode::Vxlan).is_err());
        let def = NetConf::parse(&default_net_conf(Mode::Vxlan)).unwrap();
        assert_eq!(def.network.to_string(), DEFAULT_NETWORK);
        assert_eq!(def.mode().unwrap(), Mode::Vxlan);
    }

    #[test]
    fn annotations_like_flanneld() {
        let ip = Ipv4Addr::new(192, 168, 50, 11);
        let a = node_annotations(Mode::Vxlan, 1, Some("9A:5C:1E:0B:44:01"), ip).unwrap();
        assert_eq!(a[ANN_BACKEND_TYPE], "vxlan");
        assert_eq!(
            a[ANN_BACKEND_DATA],
            r#"{"VNI":1,"VtepMAC":"9a:5c:1e:0b:44:01"}"#
        );
        assert_eq!(a[ANN_PUBLIC_IP], "192.168.50.11");
        assert_eq!(a[ANN_SUBNET_MANAGER], "true");
        let h = node_annotations(Mode::HostGw, 1, None, ip).unwrap();
        assert_eq!(h[ANN_BACKEND_TYPE], "host-gw");
        assert_eq!(h[ANN_BACKEND_DATA], "null");
        assert!(node_annotations(Mode::Vxlan, 1, None, ip).is_err());
        assert!(node_annotations(Mode::Vxlan, 1, Some("zz"), ip).is_err());
    }

    #[test]
    fn lease_backend_data() {
        let mut l = Lease {
            node: "server2".into(),
            public_ip: Ipv4Addr::new(192, 168, 50, 12),
            pod_cidr: "10.244.2.0/24".parse().unwrap(),
            backend_type: "vxlan".into(),
            backend_data: r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"#.into(),
        };
        assert_eq!(l.vtep_mac().unwrap(), [2, 0, 0, 0, 0, 2]);
        l.backend_data = "null".into();
        assert!(l.vtep_mac().is_err());
        l.backend_data = r#"{"vtepmac":"02:00:00:00:00:03"}"#.into();
        assert_eq!(
            l.vtep_mac().unwrap(),
            [2, 0, 0, 0, 0, 3],
            "Go-style key match"
        );
    }

    #[test]
    fn configmap_is_valid_yaml() {
        let y = configmap_yaml(&default_net_conf(Mode::Vxlan));
        let v: Value = serde_norway::from_str(&y).unwrap();
        assert_eq!(v["metadata"]["name"], CONFIGMAP_NAME);
        assert_eq!(v["metadata"]["namespace"], CONFIGMAP_NAMESPACE);
        let nc = NetConf::parse(v["data"][NET_CONF_KEY].as_str().unwrap()).unwrap();
        assert_eq!(nc.mode().unwrap(), Mode::Vxlan);
        let cni: Value =
            serde_json::from_str(v["data"]["cni-conf.json"].as_str().unwrap()).unwrap();
        assert_eq!(cni["plugins"][0]["type"], "flannel");
    }
}
