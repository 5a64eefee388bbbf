//! The neighbour resolver: ARP for next hops on the uplink.
//!
//! One thread owns an `AF_PACKET` socket on the uplink (ARP only). The XDP program passes
//! ARP to the kernel, so the kernel keeps answering for the node's address and resolving
//! its own neighbours; the packet tap sees the same frames. The resolver:
//! - learns IP → MAC from ARP replies addressed to the node and from requests whose target
//!   is the node (their sender is on the link and talking to us);
//! - sends a request for every wanted next hop (the routes' next hops and VTEPs on the
//!   uplink subnet) and for every miss the workers report, at most one per address per
//!   [`REQUEST_INTERVAL`];
//! - refreshes wanted entries older than [`REFRESH_AFTER`] and forgets entries not
//!   confirmed for [`EXPIRE_AFTER`];
//! - publishes the table into a new snapshot generation when it changes.

use crate::daemon::Agent;
use crossbeam_channel::Receiver;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xdplane_wire::{ArpOp, ArpPacket, ArpRepr, EtherType, EthernetFrame, EthernetRepr, MacAddr};
use xdplane_xsk::packet::{ETH_P_ARP, PacketSocket};

pub const REQUEST_INTERVAL: Duration = Duration::from_secs(1);
pub const REFRESH_AFTER: Duration = Duration::from_secs(60);
pub const EXPIRE_AFTER: Duration = Duration::from_secs(300);

/// The node's identity on the uplink.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mac: [u8; 6],
}

impl Identity {
    fn on_subnet(&self, ip: Ipv4Addr) -> bool {
        let m = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        u32::from(ip) & m == u32::from(self.ip) & m
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    mac: [u8; 6],
    confirmed: Instant,
}

/// Resolver counters, for `stats`.
#[derive(Default, Debug, Clone, serde::Serialize)]
pub struct NeighStats {
    pub requests_sent: u64,
    pub replies_learned: u64,
    pub expired: u64,
    pub send_errors: u64,
}

/// What the resolver shares with the agent.
#[derive(Default)]
pub struct Shared {
    pub stats: Mutex<NeighStats>,
}

/// The pure part of the resolver: the table and what to ask for, driven by time.
pub struct Table {
    id: Identity,
    entries: BTreeMap<Ipv4Addr, Entry>,
    wanted: BTreeSet<Ipv4Addr>,
    pending: BTreeSet<Ipv4Addr>,
    last_request: BTreeMap<Ipv4Addr, Instant>,
}

impl Table {
    pub fn new(id: Identity) -> Table {
        Table {
            id,
            entries: BTreeMap::new(),
            wanted: BTreeSet::new(),
            pending: BTreeSet::new(),
            last_request: BTreeMap::new(),
        }
    }

    /// Replaces the set of next hops the routes need (only those on the uplink subnet).
    pub fn set_wanted(&mut self, hops: impl IntoIterator<Item = Ipv4Addr>) {
        let id = self.id;
        self.wanted = hops
            .into_iter()
            .filter(|ip| id.on_subnet(*ip) && *ip != id.ip)
            .collect();
    }

    /// A worker could not send to `ip` for want of its MAC.
    pub fn miss(&mut self, ip: Ipv4Addr) {
        if self.id.on_subnet(ip) && ip != self.id.ip {
            self.pending.insert(ip);
        }
    }

    /// Learns from one received ARP frame; whether the table changed.
    pub fn learn(&mut self, frame: &[u8], now: Instant) -> bool {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return false;
        };
        if eth.ethertype() != EtherType::ARP {
            return false;
        }
        let Ok(arp) = ArpPacket::new_checked(eth.payload()) else {
            return false;
        };
        let Ok(r) = ArpRepr::parse(&arp) else {
            return false;
        };
        let sender = r.source_protocol_addr;
        let mac = r.source_hardware_addr;
        let to_us = r.target_protocol_addr == self.id.ip;
        let useful = match r.operation {
            ArpOp::REPLY => {
                to_us || self.wanted.contains(&sender) || self.pending.contains(&sender)
            }
            ArpOp::REQUEST => to_us,
            _ => false,
        };
        if !useful
            || !self.id.on_subnet(sender)
            || sender == self.id.ip
            || !mac.is_unicast()
            || mac.is_zero()
        {
            return false;
        }
        self.pending.remove(&sender);
        let changed = self.entries.get(&sender).map(|e| e.mac) != Some(mac.0);
        self.entries.insert(
            sender,
            Entry {
                mac: mac.0,
                confirmed: now,
            },
        );
        changed
    }

    /// Addresses to send a request for now (rate-limited), and whether entries expired.
    pub fn tick(&mut self, now: Instant) -> (Vec<Ipv4Addr>, bool) {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.duration_since(e.confirmed) < EXPIRE_AFTER);
        let expired = self.entries.len() != before;
        let mut ask = vec![];
        for ip in self.wanted.iter().chain(self.pending.iter()) {
            let stale = match self.entries.get(ip) {
                None => true,
                Some(e) => now.duration_since(e.confirmed) >= REFRESH_AFTER,
            };
            let recent = self
                .last_request
                .get(ip)
                .is_some_and(|t| now.duration_since(*t) < REQUEST_INTERVAL);
            if stale && !recent && !ask.contains(ip) {
                ask.push(*ip);
            }
        }
        for ip in &ask {
            self.last_request.insert(*ip, now);
        }
        // Pending misses that stay unanswered are given up with their entry's expiry.
        let wanted = &self.wanted;
        self.last_request
            .retain(|ip, t| now.duration_since(*t) < EXPIRE_AFTER || wanted.contains(ip));
        (ask, expired)
    }

    pub fn resolved(&self) -> Vec<(Ipv4Addr, [u8; 6])> {
        self.entries.iter().map(|(ip, e)| (*ip, e.mac)).collect()
    }

    /// The ARP request for `ip` from the node (broadcast).
    pub fn request(&self, ip: Ipv4Addr) -> [u8; 42] {
        let mut f = [0u8; 42];
        let eth = EthernetRepr {
            src_addr: MacAddr(self.id.mac),
            dst_addr: MacAddr::BROADCAST,
            ethertype: EtherType::ARP,
        };
        let arp = ArpRepr {
            operation: ArpOp::REQUEST,
            source_hardware_addr: MacAddr(self.id.mac),
            source_protocol_addr: self.id.ip,
            target_hardware_addr: MacAddr::ZERO,
            target_protocol_addr: ip,
        };
        // Both fit by construction: 14 + 28 = 42 bytes.
        let _ = eth.emit(&mut f);
        let _ = arp.emit(&mut f[14..]);
        f
    }
}

pub struct Resolver {
    pub shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Resolver {
    /// Starts the resolver thread. `wanted` carries the next hops after every publish,
    /// `misses` what the workers could not resolve.
    pub fn start(
        id: Identity,
        agent: Arc<Mutex<Agent>>,
        wanted: Receiver<Vec<Ipv4Addr>>,
        misses: Receiver<Ipv4Addr>,
    ) -> std::io::Result<Resolver> {
        let sock = PacketSocket::open(id.ifindex, ETH_P_ARP)?;
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("xdplane-neigh".into())
                .spawn(move || run(id, sock, agent, wanted, misses, shared, stop))?
        };
        Ok(Resolver {
            shared,
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    id: Identity,
    sock: PacketSocket,
    agent: Arc<Mutex<Agent>>,
    wanted: Receiver<Vec<Ipv4Addr>>,
    misses: Receiver<Ipv4Addr>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let mut table = Table::new(id);
    let mut buf = [0u8; 2048];
    let mut last_tick = Instant::now() - REQUEST_INTERVAL;
    while !stop.load(Ordering::Acquire) {
        let mut changed = false;
        match sock.recv(&mut buf, Duration::from_millis(100)) {
            Ok(Some(r)) if !r.outgoing => {
                if table.learn(&buf[..r.len], Instant::now()) {
                    changed = true;
                    shared.stats.lock().unwrap().replies_learned += 1;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ARP socket receive");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let mut hint = false;
        while let Ok(w) = wanted.try_recv() {
            table.set_wanted(w);
            hint = true;
        }
        while let Ok(ip) = misses.try_recv() {
            table.miss(ip);
            hint = true;
        }
        let now = Instant::now();
        if hint || now.duration_since(last_tick) >= Duration::from_millis(250) {
            last_tick = now;
            let (ask, expired) = table.tick(now);
            for ip in ask {
                let mut st = shared.stats.lock().unwrap();
                match sock.send(&table.request(ip)) {
                    Ok(()) => st.requests_sent += 1,
                    Err(e) => {
                        st.send_errors += 1;
                        tracing::debug!(%ip, error = %e, "ARP request");
                    }
                }
            }
            if expired {
                shared.stats.lock().unwrap().expired += 1;
                changed = true;
            }
        }
        if changed {
            let list = table.resolved();
            let mut a = agent.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = a.set_neighbours(list) {
                tracing::warn!(error = %format!("{e:#}"), "publishing neighbours");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            ifindex: 2,
            ip: Ipv4Addr::new(192, 168, 50, 11),
            prefix: 24,
            mac: [2, 0, 0, 0, 0, 0x11],
        }
    }

    fn arp(op: ArpOp, smac: [u8; 6], sip: [u8; 4], tip: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        EthernetRepr {
            src_addr: MacAddr(smac),
            dst_addr: MacAddr([2, 0, 0, 0, 0, 0x11]),
            ethertype: EtherType::ARP,
        }
        .emit(&mut f)
        .unwrap();
        ArpRepr {
            operation: op,
            source_hardware_addr: MacAddr(smac),
            source_protocol_addr: sip.into(),
            target_hardware_addr: MacAddr([2, 0, 0, 0, 0, 0x11]),
            target_protocol_addr: tip.into(),
        }
        .emit(&mut f[14..])
        .unwrap();
        f
    }

    #[test]
    fn asks_for_wanted_hops_rate_limited_and_learns_replies() {
        let mut t = Table::new(id());
        let t0 = Instant::now();
        t.set_wanted([
            Ipv4Addr::new(192, 168, 50, 12),
            Ipv4Addr::new(10, 9, 0, 3),      // off-subnet: never asked
            Ipv4Addr::new(192, 168, 50, 11), // ourselves
        ]);
        let (ask, _) = t.tick(t0);
        assert_eq!(ask, vec![Ipv4Addr::new(192, 168, 50, 12)]);
        let (ask, _) = t.tick(t0 + Duration::from_millis(300));
        assert!(ask.is_empty(), "one request per second per address");
        let (ask, _) = t.tick(t0 + Duration::from_millis(1100));
        assert_eq!(ask.len(), 1, "asked again while unanswered");

        let req = t.request(Ipv4Addr::new(192, 168, 50, 12));
        assert_eq!(&req[0..6], &[0xff; 6]);
        assert_eq!(&req[12..14], &[8, 6]);
        assert_eq!(&req[38..42], &[192, 168, 50, 12]);

        let mac = [2, 0, 0, 0, 0, 0x12];
        let reply = arp(ArpOp::REPLY, mac, [192, 168, 50, 12], [192, 168, 50, 11]);
        assert!(t.learn(&reply, t0 + Duration::from_millis(1200)));
        assert!(
            !t.learn(&reply, t0 + Duration::from_millis(1300)),
            "same MAC: no change"
        );
        assert_eq!(t.resolved(), vec![(Ipv4Addr::new(192, 168, 50, 12), mac)]);
        // Fresh: not asked; stale after REFRESH_AFTER: asked again; expired later.
        assert!(t.tick(t0 + Duration::from_secs(30)).0.is_empty());
        assert_eq!(t.tick(t0 + Duration::from_secs(62)).0.len(), 1);
        let (_, expired) = t.tick(t0 + Duration::from_secs(302));
        assert!(expired);
        assert!(t.resolved().is_empty());
    }

    #[test]
    fn learns_only_what_concerns_the_node() {
        let mut t = Table::new(id());
        let now = Instant::now();
        let m = [2, 0, 0, 0, 0, 0x13];
        // A request for someone else: not learned.
        assert!(!t.learn(
            &arp(ArpOp::REQUEST, m, [192, 168, 50, 13], [192, 168, 50, 99]),
            now
        ));
        // A request for us: its sender is learned.
        assert!(t.learn(
            &arp(ArpOp::REQUEST, m, [192, 168, 50, 13], [192, 168, 50, 11]),
            now
        ));
        // Off-subnet senders, broadcast MACs and truncated frames are ignored.
        assert!(!t.learn(
            &arp(
                ArpOp::REPLY,
                [2, 0, 0, 0, 0, 9],
                [10, 0, 0, 9],
                [192, 168, 50, 11]
            ),
            now
        ));
        assert!(!t.learn(
            &arp(
                ArpOp::REPLY,
                [0xff; 6],
                [192, 168, 50, 14],
                [192, 168, 50, 11]
            ),
            now
        ));
        assert!(!t.learn(&[0u8; 20], now));
        // A miss on the subnet is asked for.
        t.miss(Ipv4Addr::new(192, 168, 50, 1));
        t.miss(Ipv4Addr::new(8, 8, 8, 8));
        assert_eq!(t.tick(now).0, vec![Ipv4Addr::new(192, 168, 50, 1)]);
    }
}
