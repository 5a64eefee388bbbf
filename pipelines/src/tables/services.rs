//! The service table: which destinations are Service frontends (ClusterIP, NodePort,
//! externalIP, LoadBalancer IP; by protocol and port) and the backends each one
//! load-balances over with Maglev.
//!
//! Built by the control side's compiler for one node (traffic policies already applied:
//! a frontend points at the backend set it may use on this node), frozen, swapped with the
//! snapshot. A lookup is one hash probe; choosing a backend is one Maglev slot load.

use super::maglev::{self, Maglev, MaglevError};
use crate::snapshot::FxBuild;
use serde::Serialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// IP protocol numbers of the L4 protocols Services use.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// What a frontend is keyed by: the packet's destination address, destination port and IP
/// protocol number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FrontendKey {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
}

/// How a frontend is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrontendKind {
    /// A ClusterIP (from pods; internalTrafficPolicy applies).
    ClusterIp,
    /// `<node IP>:<nodePort>` (externalTrafficPolicy applies).
    NodePort,
    /// One of `spec.externalIPs` (externalTrafficPolicy applies).
    ExternalIp,
    /// A `status.loadBalancer.ingress` IP (externalTrafficPolicy applies).
    LoadBalancer,
}

/// One frontend: a (Service, port) reached one way.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Frontend {
    /// `namespace/name:port-name` (or `namespace/name:port` for an unnamed port): for
    /// counters, dumps and logs.
    pub name: String,
    pub kind: FrontendKind,
    /// Index into [`Services::sets`]: the backends this frontend may use on this node.
    pub set: u32,
    /// New flows get their source translated (masquerade) to the node's address: external
    /// traffic (NodePort, externalIP, LoadBalancer) with `externalTrafficPolicy: Cluster`,
    /// as kube-proxy does. The translated source is the pod gateway when the backend is a
    /// pod reached through the pod network, the node IP otherwise (see services.md).
    pub masquerade: bool,
    /// With an empty backend set: drop new flows silently instead of rejecting them. Set
    /// when a `Local` traffic policy leaves no endpoint on this node although the Service
    /// has endpoints elsewhere (kube-proxy's "has no local endpoints" DROP); a Service
    /// with no endpoints at all is rejected (TCP RST, ICMP port unreachable).
    pub drop_when_empty: bool,
    /// `sessionAffinity: ClientIP` timeout in seconds; 0 = no affinity.
    pub affinity_timeout_s: u32,
    /// Identifies the Service port across frontend kinds (affinity is per Service port and
    /// client, whichever way the client came in). Dense, from 0.
    pub service_port: u32,
}

/// One backend: an endpoint address and its resolved target port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// The endpoint runs on this node.
    pub local: bool,
}

impl Backend {
    /// The stable key Maglev orders backends by (address and port).
    pub fn key(&self) -> u64 {
        (u64::from(u32::from(self.ip)) << 16) | u64::from(self.port)
    }
}

/// The backends of a frontend and their Maglev table. Empty: the Service has no usable
/// endpoint here and new flows are rejected (TCP RST, ICMP port unreachable).
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackendSet {
    pub backends: Vec<Backend>,
    #[serde(skip)]
    pub maglev: Maglev,
}

impl BackendSet {
    /// Builds the set and its Maglev table ([`maglev_size`] slots).
    pub fn new(backends: Vec<Backend>) -> Result<BackendSet, MaglevError> {
        let keys: Vec<u64> = backends.iter().map(Backend::key).collect();
        let maglev = Maglev::build(&keys, maglev_size(backends.len()))?;
        Ok(BackendSet { backends, maglev })
    }

    /// The backend for a flow hash; `None` when the set is empty.
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> Option<&Backend> {
        self.maglev
            .lookup(flow_hash)
            .and_then(|i| self.backends.get(i as usize))
    }

    /// Whether `ip:port` is still one of the backends (session affinity checks this before
    /// reusing a remembered backend).
    #[inline]
    pub fn contains(&self, ip: Ipv4Addr, port: u16) -> bool {
        self.backends.iter().any(|b| b.ip == ip && b.port == port)
    }
}

/// Maglev table size for `n` backends: the smallest of a fixed list of primes that is at
/// least 100 × n (about 1 % imbalance between backends), at most [`maglev::DEFAULT_SIZE`].
/// Small Services get small tables, so 10,000 Services stay within memory.
pub fn maglev_size(n: usize) -> usize {
    const PRIMES: [usize; 6] = [251, 1021, 4093, 16381, 32749, maglev::DEFAULT_SIZE];
    let want = n.saturating_mul(100);
    PRIMES
        .iter()
        .copied()
        .find(|&p| p >= want)
        .unwrap_or(maglev::DEFAULT_SIZE)
}

/// Every frontend of the node and the backend sets they use.
#[derive(Clone, Debug, Default)]
pub struct Services {
    index: HashMap<FrontendKey, u32, FxBuild>,
    /// Indexed by the values of the lookup index.
    pub frontends: Vec<Frontend>,
    /// Indexed by [`Frontend::set`].
    pub sets: Vec<BackendSet>,
}

/// A frontend key given twice (the compiler reports it and keeps the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DuplicateFrontend(pub FrontendKey);

impl Services {
    /// Adds a backend set; returns its index for [`Frontend::set`].
    pub fn add_set(&mut self, set: BackendSet) -> u32 {
        self.sets.push(set);
        (self.sets.len() - 1) as u32
    }

    /// Adds a frontend under `key`. A key already present is refused (the first wins).
    /// `fe.set` must be an index returned by [`Services::add_set`].
    pub fn add_frontend(
        &mut self,
        key: FrontendKey,
        fe: Frontend,
    ) -> Result<(), DuplicateFrontend> {
        if self.index.contains_key(&key) {
            return Err(DuplicateFrontend(key));
        }
        debug_assert!((fe.set as usize) < self.sets.len());
        self.frontends.push(fe);
        self.index.insert(key, (self.frontends.len() - 1) as u32);
        Ok(())
    }

    /// The frontend for a packet's destination, with its backend set.
    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr, port: u16, proto: u8) -> Option<(&Frontend, &BackendSet)> {
        let i = *self.index.get(&FrontendKey { ip, port, proto })?;
        let fe = self.frontends.get(i as usize)?;
        let set = self.sets.get(fe.set as usize)?;
        Some((fe, set))
    }

    pub fn len(&self) -> usize {
        self.frontends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty()
    }

    /// Every (key, frontend), sorted by key: for dumps and golden tests.
    pub fn sorted(&self) -> Vec<(FrontendKey, &Frontend)> {
        let mut v: Vec<_> = self
            .index
            .iter()
            .filter_map(|(k, &i)| self.frontends.get(i as usize).map(|f| (*k, f)))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

impl Serialize for Services {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        #[derive(Serialize)]
        struct Row<'a> {
            frontend: String,
            #[serde(flatten)]
            fe: &'a Frontend,
            backends: Vec<String>,
        }
        let sorted = self.sorted();
        let mut seq = s.serialize_seq(Some(sorted.len()))?;
        for (k, fe) in sorted {
            let proto = match k.proto {
                PROTO_TCP => "tcp".to_string(),
                PROTO_UDP => "udp".to_string(),
                PROTO_SCTP => "sctp".to_string(),
                p => p.to_string(),
            };
            let backends = self
                .sets
                .get(fe.set as usize)
                .map(|set| {
                    set.backends
                        .iter()
                        .map(|b| {
                            let l = if b.local { " (local)" } else { "" };
                            format!("{}:{}{l}", b.ip, b.port)
                        })
                        .collect()
                })
                .unwrap_or_default();
            seq.serialize_element(&Row {
                frontend: format!("{}:{}/{proto}", k.ip, k.port),
                fe,
                backends,
            })?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(last: u8, port: u16) -> Backend {
        Backend {
            ip: Ipv4Addr::new(10, 244, 1, last),
            port,
            local: false,
        }
    }

    #[test]
    fn sizes_grow_with_backends() {
        assert_eq!(maglev_size(0), 251);
        assert_eq!(maglev_size(2), 251);
        assert_eq!(maglev_size(3), 1021);
        assert_eq!(maglev_size(10), 1021);
        assert_eq!(maglev_size(11), 4093);
        assert_eq!(maglev_size(1000), 65_537);
        assert_eq!(maglev_size(usize::MAX), 65_537);
    }

    #[test]
    fn lookup_and_pick() {
        let mut s = Services::default();
        let set = s.add_set(BackendSet::new(vec![be(2, 80), be(3, 80)]).unwrap());
        let empty = s.add_set(BackendSet::new(Vec::new()).unwrap());
        let key = FrontendKey {
            ip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            proto: PROTO_TCP,
        };
        let fe = Frontend {
            name: "default/myservice:80".into(),
            kind: FrontendKind::ClusterIp,
            set,
            masquerade: false,
            drop_when_empty: false,
            affinity_timeout_s: 0,
            service_port: 0,
        };
        s.add_frontend(key, fe.clone()).unwrap();
        assert_eq!(s.add_frontend(key, fe.clone()), Err(DuplicateFrontend(key)));
        let key2 = FrontendKey { port: 81, ..key };
        s.add_frontend(key2, Frontend { set: empty, ..fe }).unwrap();

        let (f, b) = s.lookup(key.ip, 80, PROTO_TCP).unwrap();
        assert_eq!(f.name, "default/myservice:80");
        let picked = b.pick(12345).unwrap();
        assert!(b.contains(picked.ip, picked.port));
        assert!(s.lookup(key.ip, 80, PROTO_UDP).is_none());
        let (_, b2) = s.lookup(key.ip, 81, PROTO_TCP).unwrap();
        assert!(b2.pick(1).is_none());
        // Both backends get flows.
        let mut seen = std::collections::HashSet::new();
        for h in 0..1000u64 {
            seen.insert(b.pick(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap().ip);
        }
        assert_eq!(seen.len(), 2);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("10.96.0.10:80/tcp"), "{json}");
    }

    /// The acceptance figure, on the real path: backend sets sized by
    /// `maglev_size`, flows hashed the way the `nat` stage hashes them. Removing any one of
    /// 10 endpoints moves at most 15 % of 10,000 flows — its own ~10 % and little else.
    #[test]
    fn removing_one_of_ten_endpoints_moves_at_most_15_percent() {
        use crate::tables::conntrack::Tuple;
        let all: Vec<Backend> = (0..10u8)
            .map(|i| Backend {
                ip: Ipv4Addr::new(10, 244, 1 + i % 3, 10 + i),
                port: 8080,
                local: i % 3 == 0,
            })
            .collect();
        let before = BackendSet::new(all.clone()).unwrap();
        let flows: Vec<u64> = (0..10_000u32)
            .map(|f| {
                Tuple {
                    proto: PROTO_TCP,
                    src: Ipv4Addr::from(0x0af4_0000 + f / 1000),
                    dst: Ipv4Addr::new(10, 96, 0, 10),
                    sport: 32768 + (f % 1000) as u16 * 7,
                    dport: 80,
                }
                .hash()
            })
            .collect();
        for removed in 0..all.len() {
            let rest: Vec<Backend> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != removed)
                .map(|(_, b)| *b)
                .collect();
            // A different order must not matter either.
            let mut shuffled = rest.clone();
            shuffled.reverse();
            let after = BackendSet::new(shuffled).unwrap();
            let mut moved = 0;
            let mut on_removed = 0;
            for &h in &flows {
                let b = before.pick(h).unwrap();
                let a = after.pick(h).unwrap();
                assert_ne!(a, &all[removed]);
                if a != b {
                    moved += 1;
                }
                if *b == all[removed] {
                    on_removed += 1;
                }
            }
            assert!(moved >= on_removed);
            assert!(
                moved <= 1_500,
                "removing backend {removed}: {moved} of 10,000 flows moved"
            );
            assert!(on_removed > 500, "backend {removed} had {on_removed} flows");
        }
    }
}
