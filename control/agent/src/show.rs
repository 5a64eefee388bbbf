//! Client commands: `stats`, `tables`, `reload`, `conntrack`.

use anyhow::{Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use xdplane_api::Request;

#[derive(Debug, Clone, clap::Args)]
pub struct ClientOpts {
    /// Admin socket of the agent.
    #[arg(long, env = "XDPLANE_ADMIN_SOCKET", default_value = xdplane_api::DEFAULT_ADMIN_SOCKET)]
    pub admin_socket: PathBuf,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

fn call(o: &ClientOpts, req: Request) -> Result<Value> {
    xdplane_api::call(&o.admin_socket, &req, Duration::from_secs(10))
        .with_context(|| format!("asking the agent at {}", o.admin_socket.display()))
}

pub fn stats(o: &ClientOpts) -> Result<i32> {
    let v = call(o, Request::Stats)?;
    if o.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    print!("{}", render_stats(&v));
    Ok(0)
}

/// A JSON scalar as plain text (strings unquoted), so width formatting applies.
fn t(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The human form of `stats`.
pub fn render_stats(v: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}  generation {}",
        v["node"].as_str().unwrap_or("?"),
        v["generation"]
    );
    for w in v["workers"].as_array().into_iter().flatten() {
        let f = &w["frames"];
        let _ = writeln!(
            out,
            "worker {} core {} poll {} umem {} bind {}: frames total {} free {} on-fill {} on-tx {} held {}; rounds {} sleeps {}; service rejects sent {}",
            t(&w["id"]),
            t(&w["core"]),
            t(&w["poll"]),
            t(&w["umem"]),
            t(&w["bindMode"]),
            t(&f["total"]),
            t(&f["free"]),
            t(&f["in_fill"]),
            t(&f["in_tx"]),
            t(&f["held"]),
            t(&w["loops"]),
            t(&w["sleeps"]),
            t(&w["serviceRejects"])
        );
    }
    let _ = writeln!(
        out,
        "{:<4} {:<15} {:<6} {:<34} {:>12} {:>12} {:>9}  drops by reason",
        "PORT", "DEVICE", "KIND", "POD", "RX", "TX", "DROPPED"
    );
    for p in v["ports"].as_array().into_iter().flatten() {
        let c = &p["counters"];
        let drops = c["drops"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| format!("{k}={n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let dropped: u64 = c["drops"]
            .as_object()
            .map(|m| m.values().filter_map(|n| n.as_u64()).sum())
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<4} {:<15} {:<6} {:<34} {:>12} {:>12} {:>9}  {}",
            t(&p["id"]),
            t(&p["name"]),
            t(&p["kind"]),
            t(&p["pod"]),
            t(&c["rx_packets"]),
            t(&c["tx_packets"]),
            dropped,
            drops
        );
    }
    let neigh = v["neighbours"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !neigh.is_empty() || !v["resolver"].is_null() {
        let r = &v["resolver"];
        let _ = writeln!(
            out,
            "neighbours on the uplink: {} (ARP requests sent {}, learned {}, expired {}, send errors {})",
            neigh.len(),
            t(&r["requests_sent"]),
            t(&r["replies_learned"]),
            t(&r["expired"]),
            t(&r["send_errors"])
        );
        for n in neigh {
            let _ = writeln!(out, "  {:<16} {}", t(&n["ip"]), t(&n["mac"]));
        }
    }
    if v["conntrack"].is_object() {
        let _ = writeln!(out, "{}", conntrack_line(&v["conntrack"]));
        let s = &v["sweeper"];
        if s.is_object() {
            let _ = writeln!(
                out,
                "  sweeper: {} slots every {} ms, {} rounds, {} expired, busy {} ms",
                t(&s["budgetPerTick"]),
                t(&s["tickMs"]),
                t(&s["rounds"]),
                t(&s["expired"]),
                t(&s["busyMs"])
            );
        }
    }
    for e in v["natWarnings"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "warning: {}", e.as_str().unwrap_or("?"));
    }
    for e in v["modelErrors"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "manifest error: {}", e.as_str().unwrap_or("?"));
    }
    out
}

pub fn tables(o: &ClientOpts) -> Result<i32> {
    let v = call(o, Request::Tables)?;
    if o.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    print!("{}", render_tables(&v));
    Ok(0)
}

/// The human form of `tables`.
pub fn render_tables(v: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let n = &v["node"];
    let _ = writeln!(
        out,
        "generation {}  node {}  pod CIDR {}/{}  gateway {}  pod MTU {}",
        v["generation"],
        n["name"].as_str().unwrap_or("?"),
        n["pod_net"].as_str().unwrap_or("?"),
        n["pod_prefix"],
        n["gateway"].as_str().unwrap_or("?"),
        n["pod_mtu"]
    );
    let snat = n["snat_ports"]
        .as_array()
        .map(|a| format!("{}-{}", t(&a[0]), t(&a[1])))
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "node IP {}  cluster network {}/{}  masquerade {}  SNAT ports {}",
        t(&n["node_ip"]),
        t(&n["cluster_net"]),
        t(&n["cluster_prefix"]),
        if n["masquerade"] == true { "on" } else { "off" },
        snat
    );
    let _ = writeln!(out, "ports:");
    for p in v["ports"].as_array().into_iter().flatten() {
        if p.is_null() {
            continue;
        }
        let _ = writeln!(
            out,
            "  {:<4} {:<16} {:<7} ifindex {:<5} mac {}",
            t(&p["id"]),
            p["name"].as_str().unwrap_or("?"),
            p["kind"].as_str().unwrap_or("?"),
            t(&p["ifindex"]),
            fmt_mac(&p["mac"])
        );
    }
    let _ = writeln!(out, "local endpoints:");
    for (ip, ep) in v["local"].as_object().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<16} port {:<4} mac {}",
            ip,
            t(&ep["port"]),
            fmt_mac(&ep["mac"])
        );
    }
    let services = v["services"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let _ = writeln!(out, "services: {} frontends", services.len());
    for s in services {
        let mut flags = vec![];
        if s["masquerade"] == true {
            flags.push("masquerade".to_string());
        }
        if let Some(a) = s["affinity_timeout_s"].as_u64().filter(|a| *a > 0) {
            flags.push(format!("affinity {a}s"));
        }
        let _ = writeln!(
            out,
            "  {:<26} {:<12} {}{}",
            t(&s["frontend"]),
            t(&s["kind"]),
            t(&s["name"]),
            if flags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", flags.join(", "))
            }
        );
        let backends: Vec<String> = s["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(t)
            .collect();
        if backends.is_empty() {
            let _ = writeln!(out, "      → no endpoints (new connections rejected)");
        } else {
            let _ = writeln!(out, "      → {}", backends.join(", "));
        }
    }
    out
}

fn fmt_mac(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|b| format!("{:02x}", b.as_u64().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_else(|| "?".into())
}

#[derive(Debug, Clone, clap::Args)]
pub struct ConntrackOpts {
    #[command(flatten)]
    pub client: ClientOpts,
    /// List at most this many flows.
    #[arg(long, default_value_t = xdplane_api::DEFAULT_CONNTRACK_MAX)]
    pub max: usize,
}

pub fn conntrack(o: &ConntrackOpts) -> Result<i32> {
    let v = call(&o.client, Request::Conntrack { max: Some(o.max) })?;
    if o.client.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    print!("{}", render_conntrack(&v));
    Ok(0)
}

/// The table's counters on one line, as `stats` and `conntrack` show them.
fn conntrack_line(c: &Value) -> String {
    format!(
        "conntrack: {} of {} entries ({} MiB); inserted {} expired {} evicted {} insert-failed {} reply-taken {}",
        t(&c["entries"]),
        t(&c["capacity"]),
        c["memoryBytes"].as_u64().map(|b| b >> 20).unwrap_or(0),
        t(&c["inserted"]),
        t(&c["expired"]),
        t(&c["evicted"]),
        t(&c["insertFailed"]),
        t(&c["replyTaken"])
    )
}

/// The human form of `conntrack`.
pub fn render_conntrack(v: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}", conntrack_line(&v["counters"]));
    let _ = writeln!(
        out,
        "{:<8} {:<46} {:<46} {:<12} {:>7} {:>10}",
        "PROTO", "ORIGINAL", "REWRITTEN TO", "STATE", "AGE", "EXPIRES IN"
    );
    for f in v["flows"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<8} {:<46} {:<46} {:<12} {:>6}s {:>9}s",
            t(&f["proto"]),
            t(&f["orig"]),
            t(&f["rewrite"]),
            t(&f["state"]),
            t(&f["ageS"]),
            t(&f["expiresInS"])
        );
    }
    if v["truncated"] == true {
        let _ = writeln!(out, "(more flows not listed; --max raises the limit)");
    }
    out
}

pub fn reload(o: &ClientOpts) -> Result<i32> {
    let v = call(o, Request::Reload)?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_render_services() {
        let v = serde_json::json!({
            "generation": 3,
            "node": {"name": "server1", "pod_net": "10.244.1.0", "pod_prefix": 24,
                     "gateway": "10.244.1.1", "pod_mtu": 1450, "node_ip": "192.168.50.11",
                     "cluster_net": "10.244.0.0", "cluster_prefix": 16, "masquerade": true,
                     "snat_ports": [61000, 65535]},
            "ports": [null, {"id": 1, "name": "xv1", "kind": "pod", "ifindex": 7,
                             "mac": [2, 0, 0, 0, 0, 1]}],
            "local": {"10.244.1.2": {"port": 1, "mac": [2, 0, 0, 0, 0, 2]}},
            "services": [
                {"frontend": "10.96.0.10:80/tcp", "name": "default/web:http",
                 "kind": "clusterip", "set": 0, "masquerade": false,
                 "affinity_timeout_s": 10800, "service_port": 0,
                 "backends": ["10.244.1.2:8080 (local)", "10.244.2.3:8080"]},
                {"frontend": "192.168.50.11:30053/udp", "name": "default/dns:53",
                 "kind": "nodeport", "set": 1, "masquerade": true,
                 "affinity_timeout_s": 0, "service_port": 1, "backends": []}
            ]
        });
        let out = super::render_tables(&v);
        assert!(
            out.contains("node IP 192.168.50.11  cluster network 10.244.0.0/16  masquerade on  SNAT ports 61000-65535"),
            "{out}"
        );
        assert!(out.contains("services: 2 frontends"), "{out}");
        assert!(
            out.contains(
                "10.96.0.10:80/tcp          clusterip    default/web:http  [affinity 10800s]"
            ),
            "{out}"
        );
        assert!(
            out.contains("→ 10.244.1.2:8080 (local), 10.244.2.3:8080"),
            "{out}"
        );
        assert!(
            out.contains("192.168.50.11:30053/udp    nodeport     default/dns:53  [masquerade]"),
            "{out}"
        );
        assert!(
            out.contains("→ no endpoints (new connections rejected)"),
            "{out}"
        );
        assert!(
            out.contains("10.244.1.2       port 1    mac 02:00:00:00:00:02"),
            "{out}"
        );
    }

    #[test]
    fn stats_render_ports_drops_and_neighbours() {
        let v = serde_json::json!({
            "node": "server1", "generation": 4,
            "workers": [{"id": 0, "core": 0, "poll": "adaptive", "umem": "4KiB-pages",
                         "bindMode": "copy", "loops": 10, "sleeps": 2,
                         "frames": {"total": 16, "free": 8, "in_fill": 8, "in_tx": 0, "held": 0}}],
            "ports": [{"id": 1, "name": "xv1", "kind": "pod", "pod": "default/a",
                       "counters": {"rx_packets": 5, "tx_packets": 3,
                                    "drops": {"ip4-no-route": 2}}}],
            "neighbours": [{"ip": "192.168.50.12", "mac": "02:00:00:00:00:12"}],
            "resolver": {"requests_sent": 1, "replies_learned": 1, "expired": 0, "send_errors": 0},
            "conntrack": {"entries": 3, "capacity": 262144, "memoryBytes": 75497472, "inserted": 9, "expired": 6,
                          "evicted": 0, "insertFailed": 1, "replyTaken": 2},
            "sweeper": {"budgetPerTick": 5243, "tickMs": 10, "rounds": 100, "expired": 6,
                        "busyMs": 1},
            "modelErrors": ["x.yaml#1 Pod default/p: bad"],
            "natWarnings": ["--snat-ports 60000-65535 overlaps the kernel's ip_local_port_range 32768-60999"]
        });
        let out = super::render_stats(&v);
        assert!(out.contains("node server1  generation 4"), "{out}");
        assert!(out.contains("frames total 16 free 8 on-fill 8"), "{out}");
        assert!(out.contains("ip4-no-route=2"), "{out}");
        assert!(out.contains("default/a"), "{out}");
        assert!(
            out.contains("neighbours on the uplink: 1 (ARP requests sent 1, learned 1"),
            "{out}"
        );
        assert!(out.contains("192.168.50.12    02:00:00:00:00:12"), "{out}");
        assert!(
            out.contains("manifest error: x.yaml#1 Pod default/p: bad"),
            "{out}"
        );
        assert!(
            out.contains("conntrack: 3 of 262144 entries (72 MiB); inserted 9 expired 6 evicted 0 insert-failed 1 reply-taken 2"),
            "{out}"
        );
        assert!(out.contains("sweeper: 5243 slots every 10 ms"), "{out}");
        assert!(
            out.contains("warning: --snat-ports 60000-65535 overlaps the kernel's"),
            "{out}"
        );
    }

    #[test]
    fn conntrack_renders_flows() {
        let v = serde_json::json!({
            "counters": {"entries": 1, "capacity": 16, "inserted": 1, "expired": 0,
                         "evicted": 0, "insertFailed": 0, "replyTaken": 0},
            "truncated": true,
            "flows": [{"proto": "tcp", "orig": "10.244.1.2:40000 -> 10.96.0.10:80",
                       "rewrite": "10.244.1.2:40000 -> 10.244.2.3:8080",
                       "state": "established", "ageS": 2, "expiresInS": 431998}]
        });
        let out = super::render_conntrack(&v);
        assert!(out.contains("conntrack: 1 of 16 entries (0 MiB)"), "{out}");
        assert!(
            out.contains("tcp      10.244.1.2:40000 -> 10.96.0.10:80"),
            "{out}"
        );
        assert!(out.contains("10.244.1.2:40000 -> 10.244.2.3:8080"), "{out}");
        assert!(out.contains("established       2s    431998s"), "{out}");
        assert!(out.contains("more flows not listed"), "{out}");
    }
}
