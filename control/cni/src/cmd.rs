//! ADD, DEL and CHECK.

use crate::agent::{Agent, NodeNet};
use crate::conf::NetConf;
use crate::env::{Command, OpEnv};
use crate::error::{self, CniError};
use crate::ipam::{self, Ipam};
use crate::link;
use crate::net::Ipv4Net;
use crate::result::{self, CniResult, Interface, IpConfig, Route};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::path::Path;
use xdplane_api::Attachment;

/// Writes one line to stderr (the runtime's log); stdout carries only the result.
pub fn log(msg: impl AsRef<str>) {
    eprintln!("xdplane-cni: {}", msg.as_ref());
}

/// What ADD has created so far, undone in reverse when a later step fails.
#[derive(Default)]
struct Created {
    veth: bool,
    attach_sent: bool,
}

/// ADD: node-info, IPAM, veth, pod addressing, attach. Returns the result to print.
pub fn add(env: &OpEnv, conf: &NetConf) -> Result<Value, CniError> {
    let netns = env
        .netns
        .as_deref()
        .ok_or_else(|| CniError::env("CNI_NETNS is not set"))?;
    if !netns.exists() {
        return Err(CniError::new(
            error::CONTAINER_UNKNOWN,
            format!("network namespace {} does not exist", netns.display()),
        ));
    }
    if conf.prev_result.is_some() {
        log(
            "ADD: ignoring prevResult: xdplane-cni creates the pod interface and must come first in the list",
        );
    }
    let mut agent = Agent::connect(&conf.admin_socket)?;
    let (ni, node) = agent.node_info()?;
    let mtu = conf.mtu.unwrap_or(node.mtu);
    if !(crate::conf::MIN_MTU..=crate::conf::MAX_MTU).contains(&mtu) {
        return Err(CniError::io(format!(
            "the agent's pod MTU {mtu} is out of range (set \"mtu\" in the configuration)"
        )));
    }
    let host = link::host_ifname(&env.container_id);
    if link::link(None, &host)
        .map_err(|e| e.into_cni(format!("cannot look up {host}")))?
        .is_some()
    {
        return Err(CniError::io(format!(
            "host interface {host} of container {} already exists (ADD without DEL?)",
            env.container_id
        )));
    }
    let ipam = Ipam::for_conf(conf, Some(&node))
        .ok_or_else(|| CniError::config("no IPAM configuration"))?;
    if conf.ipam.is_none()
        && let Err(e) = ipam::store_node_cache(conf, &ni)
    {
        log(format!("warning: cannot cache node-info for DEL: {e}"));
    }
    let ipam_out = ipam.exec(env, Command::Add)?;
    let mut created = Created::default();
    match add_after_ipam(
        env,
        conf,
        netns,
        &host,
        mtu,
        &node,
        &ipam_out,
        &mut agent,
        &mut created,
    ) {
        Ok(v) => Ok(v),
        Err(e) => {
            log(format!("ADD {} failed: {e}; undoing", env.container_id));
            if created.attach_sent {
                // A fresh connection: after a timed-out attach, the old one may still
                // deliver that attach's reply.
                drop(agent);
                if let Err(de) =
                    Agent::connect(&conf.admin_socket).and_then(|mut a| a.detach(&env.container_id))
                {
                    log(format!("undo: detach: {de}"));
                }
            }
            if created.veth {
                match link::delete_link(None, &host) {
                    Ok(_) => {}
                    Err(le) => log(format!("undo: delete {host}: {}", le.stderr)),
                }
            }
            if let Err(ie) = ipam.exec(env, Command::Del) {
                log(format!("undo: IPAM release: {ie}"));
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn add_after_ipam(
    env: &OpEnv,
    conf: &NetConf,
    netns: &Path,
    host: &str,
    mtu: u32,
    node: &NodeNet,
    ipam_out: &Value,
    agent: &mut Agent,
    created: &mut Created,
) -> Result<Value, CniError> {
    let r = result::parse_result(
        ipam_out,
        &format!("the result of IPAM plugin {}", ipam_type(conf)),
    )?;
    let ip = r.ips.first().cloned().ok_or_else(|| {
        CniError::io(format!(
            "IPAM plugin {} returned no IPv4 address",
            ipam_type(conf)
        ))
    })?;
    let gateway = ip.gateway.unwrap_or(node.gateway);
    if gateway == ip.address.addr {
        return Err(CniError::io(format!(
            "IPAM assigned the gateway address {gateway} to the pod"
        )));
    }
    let ifname = env.ifname.as_str();

    link::create_veth(host, ifname, netns, mtu)
        .map_err(|e| e.into_cni(format!("cannot create the veth pair {host}/{ifname}")))?;
    created.veth = true;
    link::disable_ipv6(host)?;
    link::set_up(None, host).map_err(|e| e.into_cni(format!("cannot set {host} up")))?;

    let ns = Some(netns);
    link::set_up(ns, "lo").map_err(|e| e.into_cni("cannot set lo up in the pod"))?;
    link::add_addr(ns, ifname, ip.address)
        .map_err(|e| e.into_cni(format!("cannot add {} to {ifname}", ip.address)))?;
    link::disable_tx_offload(ns, ifname)
        .map_err(|e| e.into_cni(format!("cannot turn off tx checksum offload on {ifname}")))?;
    link::set_up(ns, ifname).map_err(|e| e.into_cni(format!("cannot set {ifname} up")))?;
    let onlink = |gw: Ipv4Addr| !ip.address.contains(gw);
    let mut routes = Vec::new();
    for rt in &r.routes {
        let gw = rt.gw.unwrap_or(gateway);
        link::add_route(ns, rt.dst, gw, ifname, onlink(gw))
            .map_err(|e| e.into_cni(format!("cannot add the route {} via {gw}", rt.dst.trunc())))?;
        routes.push(Route {
            dst: rt.dst.trunc(),
            gw: Some(gw),
        });
    }
    if !routes.iter().any(|rt| rt.dst.is_default()) {
        let dst = Ipv4Net {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        };
        link::add_route(ns, dst, gateway, ifname, onlink(gateway))
            .map_err(|e| e.into_cni(format!("cannot add the default route via {gateway}")))?;
        routes.push(Route {
            dst,
            gw: Some(gateway),
        });
    }

    let pod_link = link::link(ns, ifname)
        .map_err(|e| e.into_cni(format!("cannot read {ifname}")))?
        .ok_or_else(|| CniError::io(format!("{ifname} vanished from the pod")))?;
    let host_link = link::link(None, host)
        .map_err(|e| e.into_cni(format!("cannot read {host}")))?
        .ok_or_else(|| CniError::io(format!("{host} vanished")))?;

    let (pod_namespace, pod_name) = env.pod();
    created.attach_sent = true;
    let reply = agent.attach(Attachment {
        container_id: env.container_id.clone(),
        pod_namespace: pod_namespace.clone(),
        pod_name: pod_name.clone(),
        ifname: host.to_string(),
        ip: ip.address.addr.to_string(),
        mac: pod_link.mac.clone(),
    })?;
    log(format!(
        "ADD {}: pod {pod_namespace}/{pod_name} {} on {host} (mtu {mtu}), agent: {reply}",
        env.container_id, ip.address
    ));

    let dns = if r.dns.as_object().is_some_and(|o| !o.is_empty()) {
        r.dns
    } else {
        conf.dns.clone().unwrap_or_else(|| json!({}))
    };
    Ok(CniResult {
        interfaces: vec![
            Interface {
                name: host.to_string(),
                mac: host_link.mac,
                sandbox: None,
            },
            Interface {
                name: ifname.to_string(),
                mac: pod_link.mac,
                sandbox: Some(netns.display().to_string()),
            },
        ],
        ips: vec![IpConfig {
            address: ip.address,
            gateway: Some(gateway),
            interface: Some(1),
        }],
        routes,
        dns,
    }
    .to_json(&conf.cni_version))
}

fn ipam_type(conf: &NetConf) -> String {
    conf.ipam
        .as_ref()
        .and_then(|s| s.get("type").and_then(Value::as_str))
        .unwrap_or("host-local")
        .to_string()
}

/// DEL: detach, delete the host veth, release the address. Whatever is already gone is
/// fine; an unreachable agent is logged and skipped.
pub fn del(env: &OpEnv, conf: &NetConf) -> Result<(), CniError> {
    let mut first_err: Option<CniError> = None;
    let mut node: Option<NodeNet> = None;
    match Agent::connect(&conf.admin_socket) {
        Err(e) => log(format!("DEL {}: skipping detach: {e}", env.container_id)),
        Ok(mut agent) => {
            match agent.detach(&env.container_id) {
                Ok(true) => log(format!("DEL {}: detached", env.container_id)),
                Ok(false) => log(format!("DEL {}: was not attached", env.container_id)),
                Err(e) => first_err = Some(e),
            }
            if conf.ipam.is_none() {
                match agent.node_info() {
                    Ok((_, n)) => node = Some(n),
                    Err(e) => log(format!("DEL: node-info: {e}; using the cached one")),
                }
            }
        }
    }

    let host = link::host_ifname(&env.container_id);
    match link::delete_link(None, &host) {
        Ok(true) => log(format!("DEL {}: deleted {host}", env.container_id)),
        Ok(false) => {}
        Err(e) => {
            let e = e.into_cni(format!("cannot delete {host}"));
            first_err.get_or_insert(e);
        }
    }

    if conf.ipam.is_none() && node.is_none() {
        node = ipam::load_node_cache(conf).or_else(|| node_from_prev_result(conf));
    }
    match Ipam::for_conf(conf, node.as_ref()) {
        None => log(format!(
            "DEL {}: no node-info (agent down, no cache, no prevResult): nothing to release",
            env.container_id
        )),
        Some(ipam) => {
            if let Err(e) = ipam.exec(env, Command::Del) {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The pod subnet and gateway as the ADD result reported them (a last resort for DEL).
fn node_from_prev_result(conf: &NetConf) -> Option<NodeNet> {
    let r = result::parse_result(conf.prev_result.as_ref()?, "prevResult").ok()?;
    let ip = r.ips.first()?;
    Some(NodeNet {
        node: String::new(),
        pod_cidr: ip.address.trunc(),
        gateway: ip.gateway?,
        mtu: 0,
    })
}

/// CHECK: the agent's attachment, the host veth, the pod's interface, address and default
/// route agree with `prevResult`; then the IPAM plugin's own CHECK.
pub fn check(env: &OpEnv, conf: &NetConf) -> Result<(), CniError> {
    if !conf.has_check() {
        return Err(CniError::new(
            error::INCOMPATIBLE_VERSION,
            format!("CHECK is not defined for cniVersion {}", conf.cni_version),
        ));
    }
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::config("CHECK needs prevResult"))?;
    let prev = result::parse_result(prev, "prevResult")?;
    let netns = env
        .netns
        .as_deref()
        .ok_or_else(|| CniError::env("CNI_NETNS is not set"))?;
    if !netns.exists() {
        return Err(CniError::new(
            error::CONTAINER_UNKNOWN,
            format!("network namespace {} does not exist", netns.display()),
        ));
    }
    let ifname = env.ifname.as_str();
    let host = link::host_ifname(&env.container_id);
    let pod_idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some());
    let ip = prev
        .ips
        .iter()
        .find(|ip| pod_idx.is_none() || ip.interface.is_none() || ip.interface == pod_idx)
        .cloned()
        .ok_or_else(|| CniError::config(format!("prevResult has no IPv4 address for {ifname}")))?;
    let gateway = ip.gateway;

    // The host side.
    let h = link::link(None, &host)
        .map_err(|e| e.into_cni(format!("cannot read {host}")))?
        .ok_or_else(|| CniError::io(format!("host interface {host} does not exist")))?;
    if !h.up {
        return Err(CniError::io(format!("host interface {host} is down")));
    }

    // The pod side.
    let ns = Some(netns);
    let p = link::link(ns, ifname)
        .map_err(|e| e.into_cni(format!("cannot read {ifname} in the pod")))?
        .ok_or_else(|| {
            CniError::io(format!(
                "interface {ifname} does not exist in {}",
                netns.display()
            ))
        })?;
    if !p.up {
        return Err(CniError::io(format!("pod interface {ifname} is down")));
    }
    if let Some(want) = pod_idx
        .map(|i| &prev.interfaces[i].mac)
        .filter(|m| !m.is_empty())
        && !want.eq_ignore_ascii_case(&p.mac)
    {
        return Err(CniError::io(format!(
            "pod interface {ifname} has MAC {} but prevResult says {want}",
            p.mac
        )));
    }
    let have = link::addrs(ns, ifname).map_err(|e| e.into_cni("cannot read pod addresses"))?;
    if !have.contains(&ip.address) {
        return Err(CniError::io(format!(
            "pod interface {ifname} lacks {} (has {})",
            ip.address,
            have.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let defaults = link::default_routes(ns).map_err(|e| e.into_cni("cannot read pod routes"))?;
    let ok = defaults
        .iter()
        .any(|(gw, dev)| dev == ifname && (gateway.is_none() || *gw == gateway));
    if !ok {
        return Err(CniError::io(format!(
            "the pod has no default route via {} on {ifname}",
            gateway
                .map(|g| g.to_string())
                .unwrap_or_else(|| "any gateway".into())
        )));
    }

    // The agent.
    let mut agent = Agent::connect(&conf.admin_socket)?;
    let a = agent.check(&env.container_id)?;
    let mut diffs = Vec::new();
    if a.ifname != host {
        diffs.push(format!("ifname {} (want {host})", a.ifname));
    }
    if a.ip != ip.address.addr.to_string() {
        diffs.push(format!("ip {} (want {})", a.ip, ip.address.addr));
    }
    if !a.mac.eq_ignore_ascii_case(&p.mac) {
        diffs.push(format!("mac {} (want {})", a.mac, p.mac));
    }
    if !diffs.is_empty() {
        return Err(CniError::io(format!(
            "the agent's attachment of {} differs: {}",
            env.container_id,
            diffs.join(", ")
        )));
    }

    // IPAM.
    let node = if conf.ipam.is_none() {
        Some(agent.node_info()?.1)
    } else {
        None
    };
    let ipam = Ipam::for_conf(conf, node.as_ref())
        .ok_or_else(|| CniError::config("no IPAM configuration"))?;
    ipam.exec(env, Command::Check)?;
    Ok(())
}
