//! Kernel flannel nodes: a lab node without xdplane, set up the way flanneld and the flannel
//! CNI plugin set up a real node's kernel.
//!
//! - `flannel.<VNI>`: `ip link add flannel.1 type vxlan id 1 local <node IP> dev eth0 dstport
//!   8472 nolearning`, MTU = eth0's − 50, address `<pod subnet>.0/32`, up (vxlan modes only;
//!   a node in host-gw mode has none, as one booted in that mode).
//! - `cni0`: a bridge with the pods' gateway `<pod subnet>.1/<len>` and the pod MTU, made by
//!   the lab before the first pod (the bridge plugin finds it and keeps it).
//! - `net.ipv4.ip_forward=1` in the node's namespace.
//! - Per peer (flanneld's lease of every other annotated Node), [`program_kernel_node`]
//!   reconciles what flanneld's vxlan / host-gw backends keep: `bridge fdb append <VtepMAC>
//!   dev flannel.1 dst <peer IP>`, `ip neigh replace <peer subnet .0> lladdr <VtepMAC> dev
//!   flannel.1 nud permanent`, `ip route replace <peer podCIDR> via <peer subnet .0> dev
//!   flannel.1 onlink`; or, for DirectRouting peers on the same subnet and in host-gw mode,
//!   `ip route replace <peer podCIDR> via <peer IP> dev eth0`. Entries for peers that are
//!   gone, or that the mode no longer wants, are removed.
//! - Pods: the standard `bridge` CNI plugin with `host-local` IPAM, configured as the flannel
//!   CNI plugin configures its delegate ([`bridge_conf`]).

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use crate::flannel::{Cidr, Lease, Mode, NetConf, fmt_mac, parse_mac};
use crate::netns;

/// The pods' bridge.
pub const BRIDGE: &str = "cni0";
/// The node's uplink.
pub const UPLINK: &str = "eth0";
/// The CNI plugin the flannel CNI plugin delegates to (in [`crate::cni::SYSTEM_CNI_DIR`]).
pub const BRIDGE_PLUGIN: &str = "bridge";
/// The IPAM plugin of the delegate.
pub const IPAM_PLUGIN: &str = "host-local";
/// flannel CNI's network name (kube-flannel.yml's conflist).
pub const NETWORK_NAME: &str = "cbr0";

/// A kernel node of the lab.
#[derive(Debug, Clone)]
pub struct KernelNode<'a> {
    pub name: &'a str,
    pub netns: &'a str,
    /// eth0's address and prefix length.
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub pod_cidr: Cidr,
}

impl KernelNode<'_> {
    pub fn uplink_net(&self) -> Cidr {
        Cidr::of(self.ip, self.prefix_len)
    }
    /// The pods' gateway: `<subnet>.1`, on cni0.
    pub fn gateway(&self) -> Ipv4Addr {
        self.pod_cidr.nth(1)
    }
    /// flannel.1's address: `<subnet>.0`.
    pub fn vtep_addr(&self) -> Ipv4Addr {
        self.pod_cidr.addr
    }
}

/// The bridge plugin's network config for a pod, as the flannel CNI plugin builds its
/// delegate from subnet.env and kube-flannel.yml's conflist (`hairpinMode`,
/// `isDefaultGateway`): bridge cni0, `isGateway`, no masquerading, the pod MTU, host-local
/// IPAM over the node's subnet with a route to the flannel network.
pub fn bridge_conf(network: Cidr, pod_cidr: Cidr, mtu: u32, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "0.3.1",
        "name": NETWORK_NAME,
        "type": BRIDGE_PLUGIN,
        "bridge": BRIDGE,
        "mtu": mtu,
        "isGateway": true,
        "isDefaultGateway": true,
        "hairpinMode": true,
        "ipMasq": false,
        "ipam": {
            "type": IPAM_PLUGIN,
            "dataDir": data_dir.display().to_string(),
            "ranges": [[{"subnet": pod_cidr.to_string()}]],
            "routes": [{"dst": network.to_string()}],
        },
    })
}

/// Checks that the plugins kernel nodes need are installed.
pub fn check_plugins() -> Result<()> {
    let dir = Path::new(crate::cni::SYSTEM_CNI_DIR);
    let missing: Vec<String> = [BRIDGE_PLUGIN, IPAM_PLUGIN]
        .iter()
        .filter(|p| !dir.join(p).is_file())
        .map(|p| dir.join(p).display().to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "kernel flannel nodes need the standard CNI plugins: missing {} (apt-get install containernetworking-plugins)",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// Whether `iptables-restore` is on the PATH (kernel nodes load kube-proxy's rules with it).
pub fn have_iptables() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(IPTABLES_RESTORE).is_file()))
}

/// The MTU of `dev` in `ns`.
pub fn link_mtu(ns: &str, dev: &str) -> Result<u32> {
    let v: Value = serde_json::from_str(&netns::ip_in_output(
        ns,
        &["-j", "link", "show", "dev", dev],
    )?)?;
    v.get(0)
        .and_then(|l| l.get("mtu"))
        .and_then(Value::as_u64)
        .map(|m| m as u32)
        .ok_or_else(|| anyhow!("no MTU for {dev} in {ns}"))
}

/// What a node needs before flanneld runs and before its first pod: IP forwarding, and
/// `cni0` with the gateway address and `pod_mtu` (the bridge plugin would create it the
/// same way on the first pod).
pub fn setup_node(node: &KernelNode<'_>, pod_mtu: u32) -> Result<()> {
    netns::exec_in(node.netns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    netns::ip_in(node.netns, &["link", "add", BRIDGE, "type", "bridge"])?;
    netns::ip_in(
        node.netns,
        &["link", "set", BRIDGE, "mtu", &pod_mtu.to_string()],
    )?;
    let gw = format!("{}/{}", node.gateway(), node.pod_cidr.len);
    netns::ip_in(node.netns, &["addr", "add", &gw, "dev", BRIDGE])?;
    netns::ip_in(node.netns, &["link", "set", BRIDGE, "up"])?;
    Ok(())
}

/// A VXLAN device as `ip -d link` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepInfo {
    pub name: String,
    pub id: u32,
    pub local: Option<Ipv4Addr>,
    pub port: u16,
    pub learning: bool,
    /// The underlying device (`dev eth0`).
    pub link: Option<String>,
    pub mtu: u32,
    pub mac: String,
    pub up: bool,
}

/// The flannel VTEPs (`flannel.<n>` VXLAN devices) in `ip -j -d link show` output.
pub fn parse_vteps(json_text: &str) -> Result<Vec<VtepInfo>> {
    let v: Value = serde_json::from_str(json_text).context("parsing `ip -j -d link show`")?;
    let mut out = Vec::new();
    for l in v.as_array().map(Vec::as_slice).unwrap_or_default() {
        let Some(name) = l.get("ifname").and_then(Value::as_str) else {
            continue;
        };
        let info = l.get("linkinfo");
        if !name.starts_with("flannel.")
            || info
                .and_then(|i| i.get("info_kind"))
                .and_then(Value::as_str)
                != Some("vxlan")
        {
            continue;
        }
        let d = info.and_then(|i| i.get("info_data"));
        let get = |k: &str| d.and_then(|d| d.get(k));
        out.push(VtepInfo {
            name: name.to_string(),
            id: get("id").and_then(Value::as_u64).unwrap_or(0) as u32,
            local: get("local")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok()),
            port: get("port").and_then(Value::as_u64).unwrap_or(0) as u16,
            learning: get("learning").and_then(Value::as_bool).unwrap_or(true),
            link: get("link").and_then(Value::as_str).map(str::to_string),
            mtu: l.get("mtu").and_then(Value::as_u64).unwrap_or(0) as u32,
            mac: l
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            up: l
                .get("flags")
                .and_then(Value::as_array)
                .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("UP"))),
        });
    }
    Ok(out)
}

fn vteps(ns: &str) -> Result<Vec<VtepInfo>> {
    parse_vteps(&netns::ip_in_output(ns, &["-j", "-d", "link", "show"])?)
}

/// Makes the node's VTEP what `conf` and `mode` want, as flanneld's vxlan backend does on
/// start (an existing device with other attributes is deleted and made again); in host-gw
/// mode the node has no VTEP. Returns the VtepMAC (vxlan modes).
pub fn ensure_vtep(node: &KernelNode<'_>, conf: &NetConf, mode: Mode) -> Result<Option<String>> {
    let ns = node.netns;
    let want = conf.vtep_device();
    let mut have = None;
    for v in vteps(ns)? {
        if mode.is_vxlan() && v.name == want {
            have = Some(v);
        } else {
            // Another VNI's device, or host-gw mode.
            netns::ip_in(ns, &["link", "del", &v.name])?;
        }
    }
    if !mode.is_vxlan() {
        return Ok(None);
    }
    let uplink_mtu = link_mtu(ns, UPLINK)?;
    let mtu = mode.pod_mtu(uplink_mtu);
    if let Some(v) = &have {
        let compatible = v.id == conf.vni
            && v.local == Some(node.ip)
            && v.port == conf.port
            && !v.learning
            && v.link.as_deref() == Some(UPLINK);
        if !compatible {
            netns::ip_in(ns, &["link", "del", &v.name])?;
            have = None;
        }
    }
    if have.is_none() {
        netns::ip_in(
            ns,
            &[
                "link",
                "add",
                &want,
                "type",
                "vxlan",
                "id",
                &conf.vni.to_string(),
                "local",
                &node.ip.to_string(),
                "dev",
                UPLINK,
                "dstport",
                &conf.port.to_string(),
                "nolearning",
            ],
        )?;
    }
    let v = vteps(ns)?
        .into_iter()
        .find(|v| v.name == want)
        .ok_or_else(|| anyhow!("{want} is missing in {ns} right after it was created"))?;
    if v.mtu != mtu {
        netns::ip_in(ns, &["link", "set", &want, "mtu", &mtu.to_string()])?;
    }
    // flanneld's ensureV4AddressOnLink: exactly the subnet's .0/32.
    let addr = format!("{}/32", node.vtep_addr());
    let have_addr = netns::link_ipv4(ns, &want)?;
    if have_addr.as_deref() != Some(addr.as_str()) {
        netns::ip_in(ns, &["-4", "addr", "flush", "dev", &want])?;
        netns::ip_in(ns, &["addr", "add", &addr, "dev", &want])?;
    }
    if !v.up {
        netns::ip_in(ns, &["link", "set", &want, "up"])?;
    }
    let mac = parse_mac(&v.mac).ok_or_else(|| anyhow!("{want} has no MAC address"))?;
    Ok(Some(fmt_mac(mac)))
}

/// A route flanneld keeps for a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub dst: Cidr,
    pub via: Ipv4Addr,
    pub dev: String,
    pub onlink: bool,
}

impl Route {
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            self.dst.to_string(),
            "via".into(),
            self.via.to_string(),
            "dev".into(),
            self.dev.clone(),
        ];
        if self.onlink {
            a.push("onlink".into());
        }
        a
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.args().join(" "))
    }
}

/// What a kernel node should have for its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub routes: Vec<Route>,
    /// VtepMAC → peer IP (flannel.1's FDB).
    pub fdb: BTreeMap<String, Ipv4Addr>,
    /// Peer subnet .0 → VtepMAC (flannel.1's neighbours).
    pub neigh: BTreeMap<Ipv4Addr, String>,
    /// Peers that get nothing, and why.
    pub notes: Vec<String>,
}

/// flanneld's view of the peers: what each backend installs for each lease.
pub fn plan(node: &KernelNode<'_>, conf: &NetConf, mode: Mode, leases: &[Lease]) -> Plan {
    let mut p = Plan::default();
    let vtep = conf.vtep_device();
    let uplink_net = node.uplink_net();
    let mut leases: Vec<&Lease> = leases.iter().collect();
    leases.sort_by(|a, b| a.node.cmp(&b.node));
    for l in leases {
        if l.node == node.name {
            continue;
        }
        if l.pod_cidr == node.pod_cidr {
            p.notes.push(format!(
                "{}: has this node's own podCIDR {}; ignored",
                l.node, l.pod_cidr
            ));
            continue;
        }
        // Both backends ignore leases of another backend type.
        if l.backend_type != mode.backend_type() {
            p.notes.push(format!(
                "{}: backend-type {:?}, this node runs {}; ignored",
                l.node,
                l.backend_type,
                mode.backend_type()
            ));
            continue;
        }
        let same_subnet = uplink_net.contains(l.public_ip);
        if mode.is_vxlan() {
            let mac = match l.vtep_mac() {
                Ok(m) => fmt_mac(m),
                Err(e) => {
                    p.notes.push(format!("{}: {e:#}; no route", l.node));
                    continue;
                }
            };
            if mode == Mode::DirectRouting && same_subnet {
                p.routes.push(Route {
                    dst: l.pod_cidr,
                    via: l.public_ip,
                    dev: UPLINK.into(),
                    onlink: false,
                });
            } else {
                let gw = l.pod_cidr.addr;
                p.neigh.insert(gw, mac.clone());
                p.fdb.insert(mac, l.public_ip);
                p.routes.push(Route {
                    dst: l.pod_cidr,
                    via: gw,
                    dev: vtep.clone(),
                    onlink: true,
                });
            }
        } else if same_subnet {
            p.routes.push(Route {
                dst: l.pod_cidr,
                via: l.public_ip,
                dev: UPLINK.into(),
                onlink: false,
            });
        } else {
            p.notes.push(format!(
                "{}: {} is not on {uplink_net}; host-gw cannot reach it, no route",
                l.node, l.public_ip
            ));
        }
    }
    p
}

/// A route of the node's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurRoute {
    pub dst: Cidr,
    pub gateway: Option<Ipv4Addr>,
    pub dev: String,
    pub onlink: bool,
}

/// What a kernel node has now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    pub routes: Vec<CurRoute>,
    /// (MAC, remote) entries of the VTEP's FDB.
    pub fdb: Vec<(String, Ipv4Addr)>,
    /// (IP, MAC, permanent) neighbours of the VTEP.
    pub neigh: Vec<(Ipv4Addr, String, bool)>,
}

/// Parses `ip -j -4 route show table main`.
pub fn parse_routes(json_text: &str) -> Result<Vec<CurRoute>> {
    let v: Value = serde_json::from_str(json_text).context("parsing `ip -j route show`")?;
    let mut out = Vec::new();
    for r in v.as_array().map(Vec::as_slice).unwrap_or_default() {
        let Some(dst) = r.get("dst").and_then(Value::as_str) else {
            continue;
        };
        if dst == "default" {
            continue;
        }
        let dst = if dst.contains('/') {
            dst.parse::<Cidr>()
        } else {
            format!("{dst}/32").parse::<Cidr>()
        };
        let Ok(dst) = dst else { continue };
        out.push(CurRoute {
            dst,
            gateway: r
                .get("gateway")
                .and_then(Value::as_str)
                .and_then(|g| g.parse().ok()),
            dev: r
                .get("dev")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            onlink: r
                .get("flags")
                .and_then(Value::as_array)
                .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("onlink"))),
        });
    }
    Ok(out)
}

/// Parses `bridge -j fdb show dev DEV`: the entries with a remote (`dst`).
pub fn parse_fdb(json_text: &str) -> Result<Vec<(String, Ipv4Addr)>> {
    let v: Value = serde_json::from_str(json_text).context("parsing `bridge -j fdb show`")?;
    let mut out = Vec::new();
    for e in v.as_array().map(Vec::as_slice).unwrap_or_default() {
        let mac = e.get("mac").and_then(Value::as_str).and_then(parse_mac);
        let dst = e
            .get("dst")
            .and_then(Value::as_str)
            .and_then(|d| d.parse().ok());
        if let (Some(mac), Some(dst)) = (mac, dst) {
            out.push((fmt_mac(mac), dst));
        }
    }
    Ok(out)
}

/// Parses `ip -j -4 neigh show dev DEV`.
pub fn parse_neigh(json_text: &str) -> Result<Vec<(Ipv4Addr, String, bool)>> {
    let v: Value = serde_json::from_str(json_text).context("parsing `ip -j neigh show`")?;
    let mut out = Vec::new();
    for e in v.as_array().map(Vec::as_slice).unwrap_or_default() {
        let ip = e
            .get("dst")
            .and_then(Value::as_str)
            .and_then(|d| d.parse().ok());
        let mac = e
            .get("lladdr")
            .and_then(Value::as_str)
            .and_then(parse_mac)
            .map(fmt_mac)
            .unwrap_or_default();
        let permanent = e
            .get("state")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|x| x.as_str() == Some("PERMANENT")));
        if let Some(ip) = ip {
            out.push((ip, mac, permanent));
        }
    }
    Ok(out)
}

/// One change: `ip ARGS…` or `bridge ARGS…` in the node's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Ip(Vec<String>),
    Bridge(Vec<String>),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Ip(a) => write!(f, "ip {}", a.join(" ")),
            Change::Bridge(a) => write!(f, "bridge {}", a.join(" ")),
        }
    }
}

fn strs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The changes that turn `cur` into `plan`. Routes flanneld owns are those into the flannel
/// network (other than the node's own podCIDR) and those through the VTEP; nothing else of
/// the table is touched.
pub fn diff(
    node: &KernelNode<'_>,
    conf: &NetConf,
    vtep_present: bool,
    plan: &Plan,
    cur: &Current,
) -> Vec<Change> {
    let vtep = conf.vtep_device();
    let mut out = Vec::new();
    // Removals first: a route of the old mode must not linger next to the new one.
    let wanted: BTreeSet<Cidr> = plan.routes.iter().map(|r| r.dst).collect();
    for r in &cur.routes {
        let owned = (conf.network.covers(&r.dst) && r.dst != node.pod_cidr && r.dev != BRIDGE)
            || r.dev == vtep;
        if owned && !wanted.contains(&r.dst) {
            let mut a = strs(&["route", "del"]);
            a.push(r.dst.to_string());
            if let Some(g) = r.gateway {
                a.extend(["via".into(), g.to_string()]);
            }
            a.extend(["dev".into(), r.dev.clone()]);
            out.push(Change::Ip(a));
        }
    }
    if vtep_present {
        let mut by_mac: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
        for (m, d) in &cur.fdb {
            by_mac.entry(m.as_str()).or_default().push(*d);
        }
        for (mac, dsts) in &by_mac {
            let want = plan.fdb.get(*mac);
            for d in dsts {
                if want != Some(d) {
                    out.push(Change::Bridge(strs(&[
                        "fdb",
                        "del",
                        mac,
                        "dev",
                        &vtep,
                        "dst",
                        &d.to_string(),
                    ])));
                }
            }
        }
        for (ip, _, _) in &cur.neigh {
            if !plan.neigh.contains_key(ip) {
                out.push(Change::Ip(strs(&[
                    "neigh",
                    "del",
                    &ip.to_string(),
                    "dev",
                    &vtep,
                ])));
            }
        }
    }
    // Then what is missing or different.
    for (mac, dst) in &plan.fdb {
        let present = cur.fdb.iter().any(|(m, d)| m == mac && d == dst);
        if !present {
            out.push(Change::Bridge(strs(&[
                "fdb",
                "append",
                mac,
                "dev",
                &vtep,
                "dst",
                &dst.to_string(),
                "self",
                "permanent",
            ])));
        }
    }
    for (ip, mac) in &plan.neigh {
        let present = cur
            .neigh
            .iter()
            .any(|(i, m, perm)| i == ip && m == mac && *perm);
        if !present {
            out.push(Change::Ip(strs(&[
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                mac,
                "dev",
                &vtep,
                "nud",
                "permanent",
            ])));
        }
    }
    for r in &plan.routes {
        let present = cur.routes.iter().any(|c| {
            c.dst == r.dst && c.gateway == Some(r.via) && c.dev == r.dev && c.onlink == r.onlink
        });
        if !present {
            let mut a = strs(&["route", "replace"]);
            a.extend(r.args());
            out.push(Change::Ip(a));
        }
    }
    out
}

/// What [`program_kernel_node`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProgramReport {
    pub node: String,
    pub mode: Mode,
    pub vtep_mac: Option<String>,
    /// The routes the node has for its peers afterwards.
    pub routes: Vec<String>,
    /// The commands run.
    pub changes: Vec<String>,
    /// Peers that got nothing, and why.
    pub notes: Vec<String>,
}

/// Reconciles a kernel node with flannel's configuration and the peers' leases, as flanneld
/// does when it starts or sees a Node change: the VTEP ([`ensure_vtep`]), then FDB,
/// neighbour and route entries ([`plan`], [`diff`]). Safe to run any number of times.
pub fn program_kernel_node(
    node: &KernelNode<'_>,
    conf: &NetConf,
    mode: Mode,
    leases: &[Lease],
) -> Result<ProgramReport> {
    let ns = node.netns;
    let vtep_mac = ensure_vtep(node, conf, mode)?;
    let vtep = conf.vtep_device();
    let p = plan(node, conf, mode, leases);
    let mut cur = Current {
        routes: parse_routes(&netns::ip_in_output(
            ns,
            &["-j", "-4", "route", "show", "table", "main"],
        )?)?,
        ..Current::default()
    };
    if vtep_mac.is_some() {
        cur.fdb = parse_fdb(&netns::bridge_in_output(
            ns,
            &["-j", "fdb", "show", "dev", &vtep],
        )?)?;
        cur.neigh = parse_neigh(&netns::ip_in_output(
            ns,
            &["-j", "-4", "neigh", "show", "dev", &vtep],
        )?)?;
    }
    let changes = diff(node, conf, vtep_mac.is_some(), &p, &cur);
    for c in &changes {
        let r = match c {
            Change::Ip(a) => {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                netns::ip_in(ns, &a)
            }
            Change::Bridge(a) => {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                netns::bridge_in(ns, &a)
            }
        };
        r.with_context(|| format!("programming kernel node {} ({ns})", node.name))?;
    }
    Ok(ProgramReport {
        node: node.name.to_string(),
        mode,
        vtep_mac,
        routes: p.routes.iter().map(Route::to_string).collect(),
        changes: changes.iter().map(Change::to_string).collect(),
        notes: p.notes,
    })
}

/// flanneld's `--ip-masq` rules (kube-flannel.yml runs flanneld with it), as an
/// `iptables-restore --noflush` input for the `nat` table: pod traffic leaving the flannel
/// network is masqueraded, traffic inside it and kube-proxy's marked traffic is not.
pub fn flannel_masq_rules(network: Cidr, pod_cidr: Cidr) -> String {
    let c = "-m comment --comment \"flanneld masq\"";
    format!(
        "*nat\n\
         :FLANNEL-POSTRTG - [0:0]\n\
         -A POSTROUTING {c} -j FLANNEL-POSTRTG\n\
         -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN\n\
         -A FLANNEL-POSTRTG -s {pod_cidr} -d {network} {c} -j RETURN\n\
         -A FLANNEL-POSTRTG -s {network} -d {pod_cidr} {c} -j RETURN\n\
         -A FLANNEL-POSTRTG ! -s {network} -d {pod_cidr} {c} -j RETURN\n\
         -A FLANNEL-POSTRTG -s {network} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully\n\
         -A FLANNEL-POSTRTG ! -s {network} -d {network} {c} -j MASQUERADE --random-fully\n\
         COMMIT\n"
    )
}

/// Runs `iptables-restore [ARGS]` in `ns` with `input` on stdin.
pub fn iptables_restore_in(ns: &str, args: &[&str], input: &str) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new(netns::ip_bin())
        .args(["netns", "exec", ns, IPTABLES_RESTORE])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {IPTABLES_RESTORE} in {ns} (is iptables installed?)"))?;
    child
        .stdin
        .take()
        .context("iptables-restore stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{IPTABLES_RESTORE} {} in {ns} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The iptables program kernel nodes load their rules with.
pub const IPTABLES_RESTORE: &str = "iptables-restore";

/// Programs what kube-proxy (iptables mode) and flanneld's ip-masq keep in a kernel node's
/// `nat` and `filter` tables, from `model` (its Services and EndpointSlices): kube-proxy's
/// whole rule set (`xdplane_control::kubeproxy::iptables_restore` with the jumps from the
/// built-in chains) replaces both tables, then flannel's masquerade chain is added. Runs
/// on every change, like kube-proxy's sync. A one-line summary.
pub fn program_kube_proxy(
    node: &crate::state::NodeState,
    model: &xdplane_control::model::Model,
) -> Result<String> {
    use xdplane_control::kubeproxy::{KubeProxyOpts, iptables_restore};
    let opts = KubeProxyOpts::for_model(model);
    let rules = iptables_restore(model, &node.name, &opts);
    iptables_restore_in(&node.netns, &[], &rules).context("loading kube-proxy's rules")?;
    let network = model
        .net_conf
        .as_ref()
        .map(|c| Cidr::of(c.network.addr, c.network.prefix))
        .ok_or_else(|| anyhow!("the manifests have no flannel network (kube-flannel-cfg)"))?;
    let pod_cidr: Cidr = node
        .pod_cidr
        .as_deref()
        .ok_or_else(|| anyhow!("node {} has no pod CIDR", node.name))?
        .parse()?;
    iptables_restore_in(
        &node.netns,
        &["--noflush"],
        &flannel_masq_rules(network, pod_cidr),
    )
    .context("loading flanneld's masquerade rules")?;
    let rules_n = rules.lines().filter(|l| l.starts_with("-A ")).count();
    Ok(format!(
        "kernel node {}: kube-proxy rules loaded ({rules_n} rules), flanneld ip-masq for {pod_cidr} in {network}",
        node.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_ip_masq_chain() {
        let r = flannel_masq_rules(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
        );
        assert!(r.starts_with("*nat\n:FLANNEL-POSTRTG - [0:0]\n"), "{r}");
        assert!(r.ends_with("COMMIT\n"));
        assert!(r.contains("-A FLANNEL-POSTRTG -s 10.244.3.0/24 -d 10.244.0.0/16"));
        assert!(r.contains(
            "-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully"
        ));
        assert_eq!(r.matches("-A ").count(), 7);
    }

    fn node() -> KernelNode<'static> {
        KernelNode {
            name: "server3",
            netns: "xl-server3",
            ip: Ipv4Addr::new(192, 168, 50, 13),
            prefix_len: 24,
            pod_cidr: "10.244.3.0/24".parse().unwrap(),
        }
    }

    fn conf() -> NetConf {
        NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap()
    }

    fn lease(i: u8, ty: &str, data: &str) -> Lease {
        Lease {
            node: format!("server{i}"),
            public_ip: Ipv4Addr::new(192, 168, 50, 10 + i),
            pod_cidr: format!("10.244.{i}.0/24").parse().unwrap(),
            backend_type: ty.into(),
            backend_data: data.into(),
        }
    }

    fn vx(i: u8) -> Lease {
        lease(
            i,
            "vxlan",
            &format!(r#"{{"VNI":1,"VtepMAC":"02:00:00:00:00:0{i}"}}"#),
        )
    }

    #[test]
    fn vxlan_plan() {
        let p = plan(&node(), &conf(), Mode::Vxlan, &[vx(2), vx(1), vx(3)]);
        assert_eq!(
            p.routes.iter().map(Route::to_string).collect::<Vec<_>>(),
            [
                "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink",
                "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"
            ]
        );
        assert_eq!(p.fdb["02:00:00:00:00:01"], Ipv4Addr::new(192, 168, 50, 11));
        assert_eq!(p.neigh[&Ipv4Addr::new(10, 244, 2, 0)], "02:00:00:00:00:02");
        assert!(p.notes.is_empty(), "{:?}", p.notes);
    }

    #[test]
    fn directrouting_and_host_gw_plans() {
        let mut far = vx(4);
        far.public_ip = Ipv4Addr::new(10, 9, 0, 4);
        let p = plan(&node(), &conf(), Mode::DirectRouting, &[vx(1), far.clone()]);
        assert_eq!(
            p.routes.iter().map(Route::to_string).collect::<Vec<_>>(),
            [
                "10.244.1.0/24 via 192.168.50.11 dev eth0",
                "10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink"
            ],
            "direct on the same subnet, VXLAN to the other"
        );
        assert_eq!(p.fdb.len(), 1);

        let mut hg1 = lease(1, "host-gw", "null");
        let hg_far = Lease {
            backend_type: "host-gw".into(),
            backend_data: "null".into(),
            ..far
        };
        let p = plan(&node(), &conf(), Mode::HostGw, &[hg1.clone(), hg_far]);
        assert_eq!(
            p.routes.iter().map(Route::to_string).collect::<Vec<_>>(),
            ["10.244.1.0/24 via 192.168.50.11 dev eth0"]
        );
        assert!(p.fdb.is_empty() && p.neigh.is_empty());
        assert!(
            p.notes[0].contains("host-gw cannot reach it"),
            "{:?}",
            p.notes
        );

        // A lease of the other backend type, or with bad backend data, gets nothing.
        hg1.node = "server1".into();
        let p = plan(
            &node(),
            &conf(),
            Mode::Vxlan,
            &[hg1, lease(2, "vxlan", "null")],
        );
        assert!(p.routes.is_empty());
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
    }

    #[test]
    fn diff_adds_removes_and_leaves_the_rest() {
        let n = node();
        let c = conf();
        let p = plan(&n, &c, Mode::Vxlan, &[vx(1), vx(2)]);
        let cur = Current {
            routes: vec![
                // Correct already.
                CurRoute {
                    dst: "10.244.1.0/24".parse().unwrap(),
                    gateway: Some(Ipv4Addr::new(10, 244, 1, 0)),
                    dev: "flannel.1".into(),
                    onlink: true,
                },
                // host-gw leftover for server2: replaced.
                CurRoute {
                    dst: "10.244.2.0/24".parse().unwrap(),
                    gateway: Some(Ipv4Addr::new(192, 168, 50, 12)),
                    dev: "eth0".into(),
                    onlink: false,
                },
                // A node that is gone: removed.
                CurRoute {
                    dst: "10.244.9.0/24".parse().unwrap(),
                    gateway: Some(Ipv4Addr::new(10, 244, 9, 0)),
                    dev: "flannel.1".into(),
                    onlink: true,
                },
                // Not flannel's: kept.
                CurRoute {
                    dst: "10.244.3.0/24".parse().unwrap(),
                    gateway: None,
                    dev: "cni0".into(),
                    onlink: false,
                },
                CurRoute {
                    dst: "192.168.50.0/24".parse().unwrap(),
                    gateway: None,
                    dev: "eth0".into(),
                    onlink: false,
                },
            ],
            fdb: vec![
                ("02:00:00:00:00:01".into(), Ipv4Addr::new(192, 168, 50, 11)),
                ("02:00:00:00:00:09".into(), Ipv4Addr::new(192, 168, 50, 19)),
            ],
            neigh: vec![
                (
                    Ipv4Addr::new(10, 244, 1, 0),
                    "02:00:00:00:00:01".into(),
                    true,
                ),
                (
                    Ipv4Addr::new(10, 244, 9, 0),
                    "02:00:00:00:00:09".into(),
                    true,
                ),
            ],
        };
        let got: Vec<String> = diff(&n, &c, true, &p, &cur)
            .iter()
            .map(Change::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "ip route del 10.244.9.0/24 via 10.244.9.0 dev flannel.1",
                "bridge fdb del 02:00:00:00:00:09 dev flannel.1 dst 192.168.50.19",
                "ip neigh del 10.244.9.0 dev flannel.1",
                "bridge fdb append 02:00:00:00:00:02 dev flannel.1 dst 192.168.50.12 self permanent",
                "ip neigh replace 10.244.2.0 lladdr 02:00:00:00:00:02 dev flannel.1 nud permanent",
                "ip route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
            ]
        );
        // Reconciled: nothing more to do.
        let done = Current {
            routes: p
                .routes
                .iter()
                .map(|r| CurRoute {
                    dst: r.dst,
                    gateway: Some(r.via),
                    dev: r.dev.clone(),
                    onlink: r.onlink,
                })
                .collect(),
            fdb: p.fdb.iter().map(|(m, d)| (m.clone(), *d)).collect(),
            neigh: p.neigh.iter().map(|(i, m)| (*i, m.clone(), true)).collect(),
        };
        assert!(diff(&n, &c, true, &p, &done).is_empty());
    }

    #[test]
    fn parses_iproute2_json() {
        let routes = parse_routes(
            r#"[{"dst":"default","gateway":"192.168.50.1","dev":"eth0","flags":[]},{"dst":"10.244.2.0/24","gateway":"10.244.2.0","dev":"flannel.1","flags":["onlink"]},{"dst":"10.244.7.5","dev":"eth0","flags":[]}]"#,
        )
        .unwrap();
        assert_eq!(routes.len(), 2);
        assert!(routes[0].onlink);
        assert_eq!(routes[1].dst.to_string(), "10.244.7.5/32");
        let fdb = parse_fdb(
            r#"[{"mac":"AA:BB:CC:DD:EE:01","dst":"192.168.50.12","flags":["self"],"state":"permanent"},{"mac":"33:33:00:00:00:01","flags":["self"],"state":"permanent"}]"#,
        )
        .unwrap();
        assert_eq!(
            fdb,
            [(
                "aa:bb:cc:dd:ee:01".to_string(),
                Ipv4Addr::new(192, 168, 50, 12)
            )]
        );
        let n = parse_neigh(r#"[{"dst":"10.244.2.0","lladdr":"aa:bb:cc:dd:ee:01","state":["PERMANENT"]},{"dst":"10.244.5.0","state":["FAILED"]}]"#).unwrap();
        assert_eq!(n.len(), 2);
        assert!(n[0].2 && !n[1].2);
        let v = parse_vteps(
            r#"[{"ifname":"eth0","mtu":1500},{"ifname":"flannel.1","mtu":1450,"address":"9a:5c:1e:0b:44:01","flags":["BROADCAST","UP"],"linkinfo":{"info_kind":"vxlan","info_data":{"id":1,"local":"192.168.50.13","link":"eth0","port":8472,"learning":false}}}]"#,
        )
        .unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].id, v[0].port, v[0].learning, v[0].mtu, v[0].up),
            (1, 8472, false, 1450, true)
        );
        assert_eq!(v[0].local, Some(Ipv4Addr::new(192, 168, 50, 13)));
        assert!(parse_routes("nope").is_err());
    }

    #[test]
    fn bridge_delegate_like_flannel_cni() {
        let c = bridge_conf(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
            1450,
            Path::new("/run/x/ipam/server3"),
        );
        assert_eq!(c["type"], "bridge");
        assert_eq!(c["bridge"], "cni0");
        assert_eq!(c["mtu"], 1450);
        assert_eq!(c["isGateway"], true);
        assert_eq!(c["ipMasq"], false);
        assert_eq!(c["ipam"]["type"], "host-local");
        assert_eq!(c["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(c["ipam"]["routes"][0]["dst"], "10.244.0.0/16");
    }
}
