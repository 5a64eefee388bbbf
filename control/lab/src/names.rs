//! Lab naming: lab names, namespace names, node names and addresses.
//!
//! Every namespace of a lab is `<lab>-<role>`. Lab names contain no `-`, so the prefix
//! `<lab>-` names exactly one lab's namespaces (`t1-…` never matches a lab called `t1-x`).

use anyhow::{Result, bail};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The lab's name when neither `--name` nor `XDPLANE_LAB` says otherwise.
pub const DEFAULT_LAB: &str = "xl";
/// Environment variable naming the lab.
pub const LAB_ENV: &str = "XDPLANE_LAB";
/// Longest lab name.
pub const MAX_LAB_NAME: usize = 16;
/// Longest namespace name the lab creates (file names in /run/netns; kept short for humans).
pub const MAX_NETNS_NAME: usize = 48;
/// Most nodes one lab can have (node IPs are 192.168.50.11..; pod CIDRs 10.244.<i>.0/24).
pub const MAX_NODES: usize = 200;
/// The fabric's subnet prefix length.
pub const NODE_PREFIX_LEN: u8 = 24;

/// The lab name from `--name`, else `XDPLANE_LAB`, else [`DEFAULT_LAB`]; validated.
pub fn resolve_lab_name(flag: Option<&str>) -> Result<String> {
    let name = match flag {
        Some(n) => n.to_string(),
        None => std::env::var(LAB_ENV).unwrap_or_else(|_| DEFAULT_LAB.to_string()),
    };
    validate_lab_name(&name)?;
    Ok(name)
}

/// A lab name is 1..=16 characters of `[a-z0-9]`, starting with a letter.
pub fn validate_lab_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_LAB_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        bail!(
            "invalid lab name {name:?}: use 1 to {MAX_LAB_NAME} characters of a-z and 0-9, \
             starting with a letter (no '-': a lab owns every namespace named '<name>-*')"
        );
    }
    Ok(())
}

/// The prefix of every namespace of a lab.
pub fn netns_prefix(lab: &str) -> String {
    format!("{lab}-")
}

/// `<lab>-fabric`, which holds the bridge `br0`.
pub fn fabric_netns(lab: &str) -> String {
    format!("{lab}-fabric")
}

/// `<lab>-ext`: the external host on the fabric.
pub fn ext_netns(lab: &str) -> String {
    format!("{lab}-ext")
}

/// The role name of the external host (`lab exec ext`, `lab probe server1 ext 80`).
pub const EXT: &str = "ext";
/// The external host's fabric-side veth.
pub const EXT_FABRIC_PORT: &str = "sext";
/// The external host's address on the fabric: 192.168.50.254 (nodes use .11 to .210).
pub const EXT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 254);

/// `server<i>` (1-based).
pub fn node_name(index: usize) -> String {
    format!("server{index}")
}

/// `<lab>-server<i>`.
pub fn node_netns(lab: &str, index: usize) -> String {
    format!("{lab}-{}", node_name(index))
}

/// The fabric-side veth of node `i`: `s<i>`.
pub fn fabric_port(index: usize) -> String {
    format!("s{index}")
}

/// Node `i`'s address on the fabric: 192.168.50.(10+i).
pub fn node_ip(index: usize) -> Result<Ipv4Addr> {
    if index == 0 || index > MAX_NODES {
        bail!("node index {index} out of range 1..={MAX_NODES}");
    }
    Ok(Ipv4Addr::new(192, 168, 50, (10 + index) as u8))
}

/// The pod CIDR the lab gives node `i` when the manifests do not: 10.244.<i>.0/24.
pub fn default_pod_cidr(index: usize) -> String {
    format!("10.244.{index}.0/24")
}

/// The index of a node called `server<i>`.
pub fn node_index(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("server")?;
    if digits.is_empty() || digits.starts_with('0') || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|i| (1..=MAX_NODES).contains(i))
}

/// 32-bit FNV-1a, printed as 8 hex digits: a short stable tag for long or clashing names.
pub fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The namespace of a pod: `<lab>-<pod>` for pods of the `default` namespace,
/// `<lab>-<pod>.<namespace>` otherwise. Names that are too long, that would clash with a
/// namespace in `taken`, or with the lab's own roles (`fabric`, `server<i>`), get a hash
/// of the full identity: `<lab>-<start of the name>-<8 hex digits>`.
pub fn pod_netns(lab: &str, namespace: &str, pod: &str, taken: &BTreeSet<String>) -> String {
    let base = if namespace == "default" {
        sanitize(pod)
    } else {
        format!("{}.{}", sanitize(pod), sanitize(namespace))
    };
    let plain = format!("{lab}-{base}");
    let reserved = base == "fabric" || base == EXT || node_index(&base).is_some();
    let needs_hash = reserved
        || base.is_empty()
        || base == "."
        || base == ".."
        || plain.len() > MAX_NETNS_NAME
        || sanitize(pod) != pod
        || sanitize(namespace) != namespace
        || taken.contains(&plain);
    if !needs_hash {
        return plain;
    }
    let identity = format!("{namespace}/{pod}");
    let mut salt = 0u32;
    loop {
        let tag = if salt == 0 {
            short_hash(&identity)
        } else {
            short_hash(&format!("{identity}#{salt}"))
        };
        // `<lab>-` + head + `-` + 8 hex digits fits MAX_NETNS_NAME.
        let room = MAX_NETNS_NAME - lab.len() - 1 - 1 - tag.len();
        let head: String = base.chars().take(room).collect();
        let head = head.trim_end_matches(['-', '.']);
        let name = if head.is_empty() {
            format!("{lab}-{tag}")
        } else {
            format!("{lab}-{head}-{tag}")
        };
        if !taken.contains(&name) {
            return name;
        }
        salt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names() {
        assert!(validate_lab_name("xl").is_ok());
        assert!(validate_lab_name("t12345").is_ok());
        assert!(validate_lab_name("").is_err());
        assert!(validate_lab_name("a-b").is_err());
        assert!(validate_lab_name("1a").is_err());
        assert!(validate_lab_name("Ab").is_err());
        assert!(validate_lab_name("abcdefghijklmnopq").is_err());
        assert_eq!(resolve_lab_name(Some("lab2")).unwrap(), "lab2");
        assert!(resolve_lab_name(Some("bad/name")).is_err());
    }

    #[test]
    fn node_naming() {
        assert_eq!(fabric_netns("xl"), "xl-fabric");
        assert_eq!(node_netns("xl", 2), "xl-server2");
        assert_eq!(node_ip(1).unwrap(), Ipv4Addr::new(192, 168, 50, 11));
        assert_eq!(node_ip(3).unwrap(), Ipv4Addr::new(192, 168, 50, 13));
        assert!(node_ip(0).is_err());
        assert!(node_ip(MAX_NODES + 1).is_err());
        assert_eq!(default_pod_cidr(2), "10.244.2.0/24");
        assert_eq!(node_index("server12"), Some(12));
        assert_eq!(node_index("server"), None);
        assert_eq!(node_index("server01"), None);
        assert_eq!(node_index("serverx"), None);
    }

    #[test]
    fn pod_netns_plain_and_namespaced() {
        let taken = BTreeSet::new();
        assert_eq!(pod_netns("xl", "default", "demo2-0", &taken), "xl-demo2-0");
        assert_eq!(pod_netns("xl", "prod", "web", &taken), "xl-web.prod");
    }

    #[test]
    fn pod_netns_reserved_long_and_clashing() {
        let mut taken = BTreeSet::new();
        let e = pod_netns("xl", "default", "ext", &taken);
        assert!(e.starts_with("xl-ext-"), "{e}");
        let f = pod_netns("xl", "default", "fabric", &taken);
        assert_ne!(f, "xl-fabric");
        assert!(f.starts_with("xl-fabric-"), "{f}");
        let s = pod_netns("xl", "default", "server1", &taken);
        assert_ne!(s, "xl-server1");

        let long = "a".repeat(200);
        let l = pod_netns("xl", "default", &long, &taken);
        assert!(l.len() <= MAX_NETNS_NAME, "{l}");
        assert!(l.starts_with("xl-aaaa"));
        // Two long names differing only at the end stay distinct.
        let long2 = format!("{}b", "a".repeat(199));
        assert_ne!(l, pod_netns("xl", "default", &long2, &taken));

        taken.insert("xl-web".to_string());
        let w = pod_netns("xl", "default", "web", &taken);
        assert_ne!(w, "xl-web");
        taken.insert(w.clone());
        let w2 = pod_netns("xl", "default", "web", &taken);
        assert!(w2 != w && w2 != "xl-web");

        // Characters outside the safe set never reach the namespace name.
        let odd = pod_netns("xl", "default", "A/b c", &BTreeSet::new());
        assert!(
            odd.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c)),
            "{odd}"
        );
        assert!(!odd.contains('/'));
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(short_hash(""), "811c9dc5");
        assert_eq!(short_hash("a"), "e40c292c");
    }
}
