use super::tcp::{ACK, FIN, PSH, RST, SYN};
use super::*;
use crate::tables::services::PROTO_UDP;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

const S: u64 = 1_000_000_000;

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn table(capacity: usize) -> FlowTable {
    FlowTable::new(FlowTableConfig {
        capacity,
        timeouts: Timeouts::default(),
    })
}

fn sweep_all(t: &FlowTable, now: u64) -> SweepStats {
    t.sweep(now, t.slots())
}

/// A client's flow to a ClusterIP (10.96.0.10:80) and its DNAT to a backend.
fn dnat(proto: u8, i: u32) -> (Tuple, Tuple) {
    let client = Ipv4Addr::from(0x0a01_0000 | i);
    let sport = 30_000 + (i % 20_000) as u16;
    let orig = Tuple::new(proto, client, ip(10, 96, 0, 10), sport, 80);
    let rw = Tuple::new(
        proto,
        client,
        ip(10, 244, 1, (i % 200) as u8 + 2),
        sport,
        8080,
    );
    (orig, rw)
}

/// The same flow with SNAT to the node (10.0.0.5) on port `snat`.
fn dnat_snat(i: u32, snat: u16) -> (Tuple, Tuple) {
    let (orig, mut rw) = dnat(PROTO_TCP, i);
    rw.src = ip(10, 0, 0, 5);
    rw.sport = snat;
    (orig, rw)
}

#[test]
fn tuple_reversed_swaps_both_ends() {
    let t = Tuple::new(PROTO_TCP, ip(10, 0, 0, 1), ip(10, 0, 0, 2), 1234, 80);
    let r = t.reversed();
    assert_eq!(
        r,
        Tuple::new(PROTO_TCP, ip(10, 0, 0, 2), ip(10, 0, 0, 1), 80, 1234)
    );
    assert_eq!(r.reversed(), t);
    // ICMP echo: identifier in both ports, unchanged by reversal.
    let e = Tuple::new(PROTO_ICMP, ip(10, 0, 0, 1), ip(8, 8, 8, 8), 77, 77);
    assert_eq!((e.reversed().sport, e.reversed().dport), (77, 77));
    assert_eq!(Tuple::from_words(t.words().0, t.words().1), t);
}

#[test]
fn affinity_key_splits_the_service_port_id() {
    let k = Tuple::affinity(ip(10, 1, 2, 3), 0x0012_3456);
    assert_eq!(k.proto, PROTO_AFFINITY);
    assert_eq!(k.src, ip(10, 1, 2, 3));
    assert_eq!(k.dst, Ipv4Addr::from(0x12u32));
    assert_eq!((k.sport, k.dport), (0, 0x3456));
    assert_ne!(k, Tuple::affinity(ip(10, 1, 2, 3), 0x0013_3456));
    let u = Tuple::new(PROTO_UDP, k.src, k.dst, 0, k.dport);
    assert_ne!(u.hash(), k.hash());
}

#[test]
fn hash_is_fixed_and_spreads_sequential_ports() {
    let t = Tuple::new(PROTO_TCP, ip(10, 0, 0, 1), ip(10, 96, 0, 10), 40_000, 80);
    // Fixed across runs, processes and platforms (Maglev picks depend on it).
    assert_eq!(t.hash(), FIXED_HASH);
    assert_ne!(t.hash(), t.reversed().hash());
    // 65 536 source ports of one client into 1024 buckets by the low bits (the slot
    // index) and by the high bits (the fingerprint): no bucket far from the mean of 64.
    let mut low = vec![0u32; 1024];
    let mut high = vec![0u32; 1024];
    for p in 0..=u16::MAX {
        let h = Tuple { sport: p, ..t }.hash();
        low[(h & 1023) as usize] += 1;
        high[(h >> 54) as usize] += 1;
    }
    for b in [&low, &high] {
        let (min, max) = (b.iter().min().unwrap(), b.iter().max().unwrap());
        assert!(*min > 30 && *max < 110, "min {min} max {max}");
    }
}

const FIXED_HASH: u64 = 8_228_514_922_345_181_893;

#[test]
fn each_direction_resolves_to_its_translation() {
    let t = table(1024);
    let (orig, rw) = dnat_snat(1, 61_000);
    let h = t.insert(&orig, &rw, 0, Some(SYN)).unwrap();
    assert_eq!((h.dir, h.rewrite), (Dir::Original, rw));
    assert_eq!(h.state, FlowState::Tcp(TcpState::SynSent));

    let o = t.lookup(&orig).expect("original tuple");
    assert_eq!((o.dir, o.rewrite, o.slot), (Dir::Original, rw, h.slot));
    let reply = rw.reversed();
    let r = t.lookup(&reply).expect("reply tuple");
    assert_eq!(r.dir, Dir::Reply);
    assert_eq!(r.rewrite, orig.reversed());
    assert_ne!(r.slot, o.slot);
    assert_eq!(r.flow_slot(), o.slot);
    // Neither the translated forward tuple nor the untranslated reverse are keys.
    assert!(t.lookup(&rw).is_none());
    assert!(t.lookup(&orig.reversed()).is_none());

    // A flow without translation still has two keys, each mapping to itself.
    let plain = Tuple::new(PROTO_UDP, ip(10, 2, 0, 1), ip(1, 1, 1, 1), 5000, 53);
    t.insert(&plain, &plain, 0, None).unwrap();
    assert_eq!(t.lookup(&plain).unwrap().rewrite, plain);
    let back = t.lookup(&plain.reversed()).unwrap();
    assert_eq!((back.dir, back.rewrite), (Dir::Reply, plain.reversed()));
    assert_eq!(t.counters().entries, 2);
    assert_eq!(t.counters().inserted, 2);
}

#[test]
fn reply_taken_and_exists() {
    let t = table(1024);
    let (orig, rw) = dnat_snat(1, 61_000);
    t.insert(&orig, &rw, 0, Some(SYN)).unwrap();

    // Same original tuple again (another worker's first packet): Exists with the flow.
    match t.insert(&orig, &rw, 0, Some(SYN)) {
        Err(InsertError::Exists(h)) => assert_eq!((h.dir, h.rewrite), (Dir::Original, rw)),
        other => panic!("expected Exists, got {other:?}"),
    }
    // Another client mapped to the same SNAT port: the reply tuple is taken.
    let (orig2, rw2) = dnat_snat(2, 61_000);
    let (_, rw_same) = dnat_snat(1, 61_000);
    let rw2 = Tuple {
        dst: rw_same.dst,
        ..rw2
    };
    assert!(matches!(
        t.insert(&orig2, &rw2, 0, Some(SYN)),
        Err(InsertError::ReplyTaken)
    ));
    assert!(
        t.lookup(&orig2).is_none(),
        "a failed insert leaves no key behind"
    );
    assert_eq!(t.counters().reply_taken, 1);
    // With the next port it goes in.
    let rw3 = Tuple {
        sport: 61_001,
        ..rw2
    };
    t.insert(&orig2, &rw3, 0, Some(SYN)).unwrap();
    assert_eq!(t.lookup(&rw3.reversed()).unwrap().rewrite, orig2.reversed());

    // A flow whose reply tuple is another flow's original tuple is refused too, and a flow
    // whose original tuple is another flow's reply tuple Exists (as that flow's reply).
    let x = Tuple::new(PROTO_UDP, ip(10, 3, 0, 1), ip(10, 3, 0, 2), 1, 2);
    t.insert(&x, &x, 0, None).unwrap();
    let y = Tuple::new(PROTO_UDP, ip(10, 3, 0, 9), ip(10, 3, 0, 1), 7, 1);
    assert!(matches!(
        t.insert(&y, &x.reversed(), 0, None),
        Err(InsertError::ReplyTaken)
    ));
    match t.insert(&x.reversed(), &y, 0, None) {
        Err(InsertError::Exists(h)) => assert_eq!(h.dir, Dir::Reply),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(t.counters().entries, 3);
}

#[test]
fn touch_runs_the_tcp_state_machine_and_marks_replies() {
    let t = table(64);
    let (orig, rw) = dnat_snat(7, 61_007);
    t.insert(&orig, &rw, 0, Some(SYN)).unwrap();
    let r = t.lookup(&rw.reversed()).unwrap();
    assert_eq!(r.state, FlowState::Tcp(TcpState::SynSent));
    assert_eq!(
        t.touch(&r, S, Some(SYN | ACK)),
        FlowState::Tcp(TcpState::SynRecv)
    );
    let o = t.lookup(&orig).unwrap();
    assert_eq!(o.state, FlowState::Tcp(TcpState::SynRecv));
    assert_eq!(
        t.touch(&o, 2 * S, Some(ACK)),
        FlowState::Tcp(TcpState::Established)
    );
    assert_eq!(
        t.touch(&o, 3 * S, Some(ACK | PSH)),
        FlowState::Tcp(TcpState::Established)
    );
    // Invalid for the state: kept.
    assert_eq!(
        t.touch(&o, 3 * S, Some(SYN | ACK)),
        FlowState::Tcp(TcpState::Established)
    );
    assert_eq!(
        t.touch(&o, 4 * S, Some(FIN | ACK)),
        FlowState::Tcp(TcpState::FinWait)
    );
    let r = t.lookup(&rw.reversed()).unwrap();
    assert_eq!(
        t.touch(&r, 4 * S, Some(ACK)),
        FlowState::Tcp(TcpState::CloseWait)
    );
    assert_eq!(
        t.touch(&r, 4 * S, Some(FIN | ACK)),
        FlowState::Tcp(TcpState::LastAck)
    );
    assert_eq!(
        t.touch(&o, 5 * S, Some(ACK)),
        FlowState::Tcp(TcpState::TimeWait)
    );
    assert_eq!(
        t.touch(&o, 5 * S, Some(RST)),
        FlowState::Tcp(TcpState::Close)
    );

    // UDP: replied after a reply-direction packet only.
    let (uo, urw) = dnat(PROTO_UDP, 9);
    let h = t.insert(&uo, &urw, 0, None).unwrap();
    assert_eq!(h.state, FlowState::Udp { replied: false });
    assert_eq!(t.touch(&h, S, None), FlowState::Udp { replied: false });
    let r = t.lookup(&urw.reversed()).unwrap();
    assert_eq!(t.touch(&r, S, None), FlowState::Udp { replied: true });
    assert_eq!(
        t.lookup(&uo).unwrap().state,
        FlowState::Udp { replied: true }
    );
}

#[test]
fn first_tcp_packet_sets_the_initial_state() {
    let t = table(64);
    for (i, (flags, want)) in [
        (Some(SYN), TcpState::SynSent),
        (Some(ACK), TcpState::Established),
        (Some(FIN | ACK), TcpState::FinWait),
        (Some(RST), TcpState::Close),
        (None, TcpState::Established),
    ]
    .into_iter()
    .enumerate()
    {
        let (o, rw) = dnat(PROTO_TCP, i as u32);
        assert_eq!(
            t.insert(&o, &rw, 0, flags).unwrap().state,
            FlowState::Tcp(want)
        );
    }
}

/// Inserts 16 UDP flows into a 32-slot table (every probe window is the whole table).
fn full_table() -> (FlowTable, Vec<(Tuple, Tuple)>) {
    let t = table(8);
    assert_eq!(t.slots(), 32);
    let flows: Vec<_> = (0..16).map(|i| dnat(PROTO_UDP, i)).collect();
    for (i, (o, rw)) in flows.iter().enumerate() {
        t.insert(o, rw, i as u64 * S, None).unwrap();
    }
    (t, flows)
}

fn reply_to(t: &FlowTable, rw: &Tuple, now: u64) {
    let r = t.lookup(&rw.reversed()).unwrap();
    t.touch(&r, now, None);
}

#[test]
fn eviction_takes_the_oldest_non_assured_flow_then_fails_full() {
    let (t, flows) = full_table();
    // All replied (assured) except flows 3 and 7; 3 is older.
    for (i, (_, rw)) in flows.iter().enumerate() {
        if i != 3 && i != 7 {
            reply_to(&t, rw, 20 * S);
        }
    }
    let (n1, r1) = dnat(PROTO_UDP, 100);
    t.insert(&n1, &r1, 30 * S, None).unwrap();
    assert!(t.lookup(&flows[3].0).is_none() && t.lookup(&flows[3].1.reversed()).is_none());
    assert!(t.lookup(&flows[7].0).is_some());
    assert_eq!(t.counters().evicted, 1);

    let (n2, r2) = dnat(PROTO_UDP, 101);
    t.insert(&n2, &r2, 31 * S, None).unwrap();
    assert!(t.lookup(&flows[7].0).is_none());
    assert_eq!(t.counters().evicted, 2);

    // Now everything is assured once the new flows saw replies: Full.
    reply_to(&t, &r1, 32 * S);
    reply_to(&t, &r2, 32 * S);
    let (n3, r3) = dnat(PROTO_UDP, 102);
    assert!(matches!(
        t.insert(&n3, &r3, 33 * S, None),
        Err(InsertError::Full)
    ));
    assert!(t.lookup(&n3).is_none() && t.lookup(&r3.reversed()).is_none());
    let c = t.counters();
    assert_eq!((c.insert_failed, c.evicted, c.entries), (1, 2, 16));
    for (i, (o, _)) in flows.iter().enumerate() {
        assert_eq!(t.lookup(o).is_some(), i != 3 && i != 7, "flow {i}");
    }
}

#[test]
fn established_tcp_is_assured_but_a_syn_is_not() {
    let t = table(8);
    assert_eq!(t.slots(), 32);
    let mut syn = None;
    for i in 0..16 {
        let (o, rw) = dnat_snat(i, 61_000 + i as u16);
        if i == 5 {
            t.insert(&o, &rw, 0, Some(SYN)).unwrap();
            syn = Some(o);
        } else {
            // Picked up established, then a reply: assured.
            t.insert(&o, &rw, 0, Some(ACK)).unwrap();
            reply_to(&t, &rw, S);
        }
    }
    // Picked-up flows without a reply are not assured either: make one and check it is
    // preferred to nothing else but the SYN (older).
    let (o, rw) = dnat_snat(99, 62_000);
    t.insert(&o, &rw, 2 * S, Some(ACK)).unwrap();
    assert!(
        t.lookup(&syn.unwrap()).is_none(),
        "the half-open flow was evicted"
    );
    let (o2, rw2) = dnat_snat(98, 62_001);
    t.insert(&o2, &rw2, 3 * S, Some(ACK)).unwrap();
    assert!(
        t.lookup(&o).is_none(),
        "the unreplied picked-up flow went next"
    );
    assert_eq!(t.counters().evicted, 2);
}

#[test]
fn sweep_expires_each_state_after_its_timeout() {
    let t = table(256);
    let t0 = 5_000 * S;
    let mut n = 0;
    let mut flow = |proto: u8| {
        n += 1;
        dnat(proto, n)
    };
    let mut add = |t: &FlowTable, proto: u8, flags: Option<u8>| {
        let (o, rw) = flow(proto);
        t.insert(&o, &rw, t0, flags).unwrap();
        (o, rw)
    };
    let close = add(&t, PROTO_TCP, Some(RST)); // 10 s
    let syn = add(&t, PROTO_TCP, Some(SYN)); // 120 s
    let est = add(&t, PROTO_TCP, Some(ACK)); // replied below: 5 days
    reply_to(&t, &est.1, t0);
    let picked = add(&t, PROTO_TCP, Some(ACK)); // never replied: 300 s
    let tw = add(&t, PROTO_TCP, Some(ACK));
    {
        let o = t.lookup(&tw.0).unwrap();
        t.touch(&o, t0, Some(FIN | ACK));
        let r = t.lookup(&tw.1.reversed()).unwrap();
        t.touch(&r, t0, Some(FIN | ACK));
        assert_eq!(
            t.touch(&o, t0, Some(ACK)),
            FlowState::Tcp(TcpState::TimeWait)
        ); // 120 s
    }
    let udp = add(&t, PROTO_UDP, None); // 30 s
    let stream = add(&t, PROTO_UDP, None); // 120 s once replied
    reply_to(&t, &stream.1, t0);
    let icmp = add(&t, PROTO_ICMP, None); // 30 s
    let sctp = add(&t, 132, None); // 30 s
    let sctp_r = add(&t, 132, None); // 210 s once replied
    reply_to(&t, &sctp_r.1, t0);

    let all = [close, syn, est, picked, tw, udp, stream, icmp, sctp, sctp_r];
    let alive = |t: &FlowTable| -> Vec<bool> {
        all.iter()
            .map(|(o, rw)| {
                let a = t.lookup(o).is_some();
                assert_eq!(
                    a,
                    t.lookup(&rw.reversed()).is_some(),
                    "both keys go together"
                );
                a
            })
            .collect()
    };
    let steps: [(u64, [bool; 10]); 7] = [
        (9, [true; 10]),
        (
            11,
            [false, true, true, true, true, true, true, true, true, true],
        ),
        (
            31,
            [
                false, true, true, true, true, false, true, false, false, true,
            ],
        ),
        (
            121,
            [
                false, false, true, true, false, false, false, false, false, true,
            ],
        ),
        (
            211,
            [
                false, false, true, true, false, false, false, false, false, false,
            ],
        ),
        (
            301,
            [
                false, false, true, false, false, false, false, false, false, false,
            ],
        ),
        (432_001, [false; 10]),
    ];
    let mut expired = 0;
    for (s, want) in steps {
        let st = sweep_all(&t, t0 + s * S);
        expired += st.expired;
        assert_eq!(alive(&t), want, "at +{s} s");
        assert_eq!(st.live, want.iter().filter(|a| **a).count(), "at +{s} s");
    }
    assert_eq!(expired, 10);
    let c = t.counters();
    assert_eq!((c.expired, c.entries), (10, 0));
}

#[test]
fn sweep_walks_a_budget_from_a_wrapping_cursor_and_time_may_wrap() {
    let t = table(512);
    // An origin just before the 32-bit tick counter wraps.
    let t0 = (1u64 << 56) - 5 * S;
    for i in 0..300 {
        let (o, rw) = dnat(PROTO_UDP, i);
        t.insert(&o, &rw, t0, None).unwrap();
    }
    assert_eq!(sweep_all(&t, t0 + 29 * S).expired, 0);
    // In budgets of 100 slots: the whole table after slots / 100 calls, not before.
    let mut total = SweepStats::default();
    let calls = t.slots().div_ceil(100);
    for k in 0..calls {
        if k == calls - 1 {
            assert!(total.expired < 300);
        }
        let st = t.sweep(t0 + 31 * S, 100);
        assert_eq!(st.examined, 100);
        total.expired += st.expired;
    }
    assert_eq!(total.expired, 300);
    assert_eq!(t.counters().entries, 0);
}

#[test]
fn affinity_entries_keep_their_own_timeout_refreshed_by_touch() {
    let t = table(64);
    let key = Tuple::affinity(ip(10, 1, 0, 7), 42);
    let h = t
        .insert_affinity(&key, (ip(10, 244, 2, 9), 8443), 0, 100)
        .unwrap();
    assert_eq!(h.state, FlowState::Affinity);
    let l = t.lookup(&key).unwrap();
    assert_eq!((l.rewrite.dst, l.rewrite.dport), (ip(10, 244, 2, 9), 8443));
    assert_eq!(l.dir, Dir::Original);
    assert!(matches!(
        t.insert_affinity(&key, (ip(10, 244, 2, 10), 8443), 0, 100),
        Err(InsertError::Exists(_))
    ));
    assert_eq!(t.touch(&l, 80 * S, None), FlowState::Affinity);
    assert_eq!(
        sweep_all(&t, 150 * S).expired,
        0,
        "touched at 80 s, 70 s idle"
    );
    let d = t.dump(150 * S, 10);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].age_s, d[0].expires_in_s), (70, 30));
    assert_eq!(sweep_all(&t, 181 * S).expired, 1);
    assert!(t.lookup(&key).is_none());
    // One slot per affinity entry.
    assert_eq!(t.counters().entries, 0);
}

#[test]
fn remove_and_remove_where() {
    let t = table(256);
    let flows: Vec<_> = (0..20).map(|i| dnat(PROTO_UDP, i)).collect();
    for (o, rw) in &flows {
        t.insert(o, rw, 0, None).unwrap();
    }
    // remove() through the reply slot deletes both keys.
    let r = t.lookup(&flows[0].1.reversed()).unwrap();
    assert!(t.remove(r.slot));
    assert!(t.lookup(&flows[0].0).is_none() && t.lookup(&flows[0].1.reversed()).is_none());
    assert!(!t.remove(r.slot));
    assert!(!t.remove(u32::MAX));
    // remove_hit() refuses a stale handle.
    let h = t.lookup(&flows[1].0).unwrap();
    assert!(t.remove_hit(&h));
    assert!(!t.remove_hit(&h));
    // Flush the flows of one backend (dnat() spreads over 10.244.1.2 + i % 200).
    let gone = ip(10, 244, 1, 7);
    let n = t.remove_where(|e| e.rewrite.dst == gone);
    assert_eq!(n, 1);
    for (i, (o, _)) in flows.iter().enumerate() {
        assert_eq!(t.lookup(o).is_some(), i > 1 && i != 5, "flow {i}");
    }
    let n = t.remove_where(|e| matches!(e.state, FlowState::Udp { replied: false }));
    assert_eq!(n, 17);
    let c = t.counters();
    assert_eq!((c.removed, c.entries), (20, 0));
}

#[test]
fn a_stale_hit_does_not_touch_the_flow_that_reused_its_slot() {
    let t = table(16);
    let (o, rw) = dnat_snat(1, 61_000);
    t.insert(&o, &rw, 0, Some(SYN)).unwrap();
    let stale = t.lookup(&o).unwrap();
    assert!(t.remove(stale.slot));
    // Same key again: same home, the tombstone is reused.
    let (o2, rw2) = (
        o,
        Tuple {
            sport: 61_001,
            ..rw
        },
    );
    let fresh = t.insert(&o2, &rw2, S, Some(SYN)).unwrap();
    assert_eq!(
        fresh.flow_slot(),
        stale.flow_slot(),
        "the test needs the slot reused"
    );
    assert_eq!(
        t.touch(&stale, 2 * S, Some(RST)),
        FlowState::Tcp(TcpState::SynSent)
    );
    assert!(!t.remove_hit(&stale));
    let now = t.lookup(&o2).unwrap();
    assert_eq!(now.state, FlowState::Tcp(TcpState::SynSent));
    assert_eq!(now.rewrite, rw2);
    assert!(t.lookup(&rw.reversed()).is_none());
}

#[test]
fn churn_reuses_tombstones() {
    let t = table(64);
    for round in 0..40u32 {
        let flows: Vec<_> = (0..64)
            .map(|i| dnat_snat(round * 64 + i, 1000 + i as u16))
            .collect();
        for (o, rw) in &flows {
            t.insert(o, rw, u64::from(round) * S, Some(SYN)).unwrap();
        }
        for (o, rw) in &flows {
            assert_eq!(t.lookup(o).unwrap().rewrite, *rw);
            assert_eq!(t.lookup(&rw.reversed()).unwrap().rewrite, o.reversed());
        }
        if round < 39 {
            assert_eq!(t.remove_where(|_| true), 64);
        }
    }
    let c = t.counters();
    assert_eq!(
        (c.entries, c.inserted, c.insert_failed, c.evicted),
        (64, 40 * 64, 0, 0)
    );
}

#[test]
fn dump_lists_live_flows() {
    let t = table(64);
    let (o, rw) = dnat_snat(3, 61_003);
    t.insert(&o, &rw, 10 * S, Some(SYN)).unwrap();
    let (uo, urw) = dnat(PROTO_UDP, 4);
    t.insert(&uo, &urw, 10 * S, None).unwrap();
    let d = t.dump(25 * S, 10);
    assert_eq!(d.len(), 2);
    let e = d.iter().find(|e| e.orig == o).unwrap();
    assert_eq!(e.rewrite, rw);
    assert_eq!(e.state, FlowState::Tcp(TcpState::SynSent));
    assert_eq!((e.age_s, e.expires_in_s), (15, 105));
    let u = d.iter().find(|e| e.orig == uo).unwrap();
    assert_eq!((u.age_s, u.expires_in_s), (15, 15));
    assert_eq!(t.dump(25 * S, 1).len(), 1);
}

#[test]
fn table_is_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FlowTable>();
    assert_send_sync::<Arc<FlowTable>>();
}

/// Flow `i` of worker `w` in the stress tests: unique tuples, a rewrite that is a function
/// of them.
fn worker_flow(w: u32, i: u32) -> (Tuple, Tuple) {
    let client = Ipv4Addr::from(0x0a00_0000 | (w << 20) | i);
    let orig = Tuple::new(
        PROTO_UDP,
        client,
        ip(10, 96, 0, 10),
        1000 + (i % 5000) as u16,
        53,
    );
    let rw = Tuple::new(
        PROTO_UDP,
        ip(10, 0, 0, 5),
        Ipv4Addr::from(0x0af4_0000 | (i % 251) << 8 | w),
        (i % 60_000) as u16,
        5353 + w as u16,
    );
    (orig, rw)
}

/// xorshift64.
fn rnd(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn concurrent_inserts_cross_lookups_and_a_sweeper() {
    const W: u32 = 4;
    const N: u32 = 2000;
    let t = Arc::new(table(16_384));
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..W).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (t, done) = (t.clone(), done.clone());
        std::thread::spawn(move || {
            let mut st = SweepStats::default();
            while !done.load(Ordering::Relaxed) {
                let s = t.sweep(10 * S, 512);
                st.expired += s.expired;
            }
            st.expired
        })
    };
    let workers: Vec<_> = (0..W)
        .map(|w| {
            let (t, progress) = (t.clone(), progress.clone());
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9 + u64::from(w);
                let mut checked = 0u64;
                for i in 0..N {
                    let (o, rw) = worker_flow(w, i);
                    t.insert(&o, &rw, 0, None).unwrap();
                    progress[w as usize].store(u64::from(i) + 1, Ordering::Release);
                    // Look up a flow another worker published already.
                    let other = (rnd(&mut seed) % u64::from(W)) as u32;
                    let upto = progress[other as usize].load(Ordering::Acquire);
                    if upto > 0 {
                        let j = (rnd(&mut seed) % upto) as u32;
                        let (oo, orw) = worker_flow(other, j);
                        let r = t.lookup(&orw.reversed()).expect("published reply tuple");
                        assert_eq!((r.dir, r.rewrite), (Dir::Reply, oo.reversed()));
                        let f = t.lookup(&oo).expect("published original tuple");
                        assert_eq!((f.dir, f.rewrite), (Dir::Original, orw));
                        t.touch(&f, S, None);
                        checked += 1;
                    }
                }
                // Then a reply through every other worker's flows.
                for other in (0..W).filter(|o| *o != w) {
                    while progress[other as usize].load(Ordering::Acquire) < u64::from(N) {
                        std::thread::yield_now();
                    }
                    for j in 0..N {
                        let (oo, orw) = worker_flow(other, j);
                        let r = t.lookup(&orw.reversed()).expect("reply tuple");
                        assert_eq!(r.rewrite, oo.reversed());
                        t.touch(&r, 2 * S, None);
                    }
                }
                checked
            })
        })
        .collect();
    let checked: u64 = workers.into_iter().map(|h| h.join().unwrap()).sum();
    done.store(true, Ordering::Relaxed);
    assert_eq!(sweeper.join().unwrap(), 0);
    assert!(checked > 0);
    for w in 0..W {
        for i in 0..N {
            let (o, rw) = worker_flow(w, i);
            let f = t.lookup(&o).unwrap();
            assert_eq!((f.rewrite, f.state), (rw, FlowState::Udp { replied: true }));
            assert_eq!(t.lookup(&rw.reversed()).unwrap().rewrite, o.reversed());
        }
    }
    let c = t.counters();
    assert_eq!(
        (c.entries, c.inserted, c.expired, c.evicted),
        (u64::from(W * N), u64::from(W * N), 0, 0)
    );
    // Every slot is accounted for: two per flow.
    let keys: HashSet<u32> = (0..W)
        .flat_map(|w| (0..N).map(move |i| (w, i)))
        .flat_map(|(w, i)| {
            let (o, rw) = worker_flow(w, i);
            [
                t.lookup(&o).unwrap().slot,
                t.lookup(&rw.reversed()).unwrap().slot,
            ]
        })
        .collect();
    assert_eq!(keys.len(), 2 * (W * N) as usize);
}

#[test]
fn readers_never_see_a_wrong_translation_while_flows_expire() {
    const INSERTERS: u32 = 2;
    const N: u32 = 12_000;
    // Small enough that slots are reused many times over.
    let t = Arc::new(table(2048));
    let clock = Arc::new(AtomicU64::new(0));
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..INSERTERS).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (t, clock, done) = (t.clone(), clock.clone(), done.clone());
        std::thread::spawn(move || {
            let mut expired = 0;
            while !done.load(Ordering::Relaxed) {
                // A virtual second per 512 slots swept: UDP flows last about 30 s.
                let now = clock.fetch_add(S, Ordering::Relaxed) + S;
                expired += t.sweep(now, 512).expired;
            }
            expired
        })
    };
    let inserters: Vec<_> = (0..INSERTERS)
        .map(|w| {
            let (t, clock, progress) = (t.clone(), clock.clone(), progress.clone());
            std::thread::spawn(move || {
                for i in 0..N {
                    let (o, rw) = worker_flow(w, i);
                    // Full is possible when the sweeper lags; that is not what is tested.
                    let _ = t.insert(&o, &rw, clock.load(Ordering::Relaxed), None);
                    progress[w as usize].store(u64::from(i) + 1, Ordering::Release);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u64)
        .map(|k| {
            let (t, clock, progress, done) =
                (t.clone(), clock.clone(), progress.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seed = 0x1234_5678 + k;
                let (mut hits, mut lookups) = (0u64, 0u64);
                while !done.load(Ordering::Relaxed) {
                    let w = (rnd(&mut seed) % u64::from(INSERTERS)) as u32;
                    let upto = progress[w as usize].load(Ordering::Acquire);
                    if upto == 0 {
                        std::thread::yield_now();
                        continue;
                    }
                    // Mostly recent flows (alive), some old ones (expired, slots reused).
                    let back = rnd(&mut seed) % upto.min(4000);
                    let i = (upto - 1 - back) as u32;
                    let (o, rw) = worker_flow(w, i);
                    lookups += 2;
                    if let Some(h) = t.lookup(&o) {
                        assert_eq!((h.dir, h.rewrite), (Dir::Original, rw), "flow {w}/{i}");
                        t.touch(&h, clock.load(Ordering::Relaxed), None);
                        hits += 1;
                    }
                    if let Some(h) = t.lookup(&rw.reversed()) {
                        assert_eq!(
                            (h.dir, h.rewrite),
                            (Dir::Reply, o.reversed()),
                            "flow {w}/{i}"
                        );
                        t.touch(&h, clock.load(Ordering::Relaxed), None);
                        hits += 1;
                    }
                }
                (hits, lookups)
            })
        })
        .collect();
    for h in inserters {
        h.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let expired = sweeper.join().unwrap();
    let (mut hits, mut lookups) = (0, 0);
    for r in readers {
        let (h, l) = r.join().unwrap();
        hits += h;
        lookups += l;
    }
    let c = t.counters();
    assert!(
        expired > 1000,
        "expired {expired}: the sweeper must have deleted many flows"
    );
    assert!(hits > 100 && hits < lookups, "hits {hits} of {lookups}");
    assert_eq!(c.inserted - c.expired - c.evicted - c.removed, c.entries);
    // What is left is consistent: every live flow's two keys agree.
    for e in t.dump(clock.load(Ordering::Relaxed), usize::MAX) {
        let r = t.lookup(&e.rewrite.reversed()).unwrap();
        assert_eq!(r.rewrite, e.orig.reversed());
        assert_eq!(r.flow_slot(), e.slot);
    }
}

/// An affinity key with the same home slot as `k` in table `t` (a different client).
fn same_home(t: &FlowTable, k: &Tuple) -> Tuple {
    let home = k.hash() as usize & (t.slots() - 1);
    (1..)
        .map(|i| Tuple::affinity(Ipv4Addr::from(0x0a09_0000 + i), 1))
        .find(|c| c.hash() as usize & (t.slots() - 1) == home)
        .unwrap()
}

#[test]
fn a_slot_rewritten_during_a_read_is_read_again() {
    // Between the reader's key and translation loads, the slot is deleted and reused by
    // another key: the reader must not pair the old key with the new translation.
    let t = table(8);
    let a = Tuple::affinity(ip(10, 1, 0, 1), 1);
    let b = same_home(&t, &a);
    let h = t
        .insert_affinity(&a, (ip(10, 244, 0, 1), 1111), 0, 100)
        .unwrap();
    hooks::set(hooks::Point::MidRead, move |t: &FlowTable| {
        assert!(t.remove(h.slot));
        let hb = t
            .insert_affinity(&b, (ip(10, 244, 0, 2), 2222), 0, 100)
            .unwrap();
        assert_eq!(hb.slot, h.slot, "the test needs the slot reused");
    });
    assert!(t.lookup(&a).is_none(), "a's key is gone");
    assert!(!hooks::pending(), "the interleaving ran");
    let l = t.lookup(&b).unwrap();
    assert_eq!((l.rewrite.dst, l.rewrite.dport), (ip(10, 244, 0, 2), 2222));
}

#[test]
fn a_reply_slot_whose_flow_slot_was_reused_is_a_miss() {
    // The reply slot reads fine, then (before its flow word is read) the flow is deleted
    // and its original slot reused by another flow: no hit that would touch that flow.
    let t = table(8);
    let (o, rw) = dnat(PROTO_UDP, 1);
    let h = t.insert(&o, &rw, 0, None).unwrap();
    hooks::set(hooks::Point::BeforeFlow, move |t: &FlowTable| {
        assert!(t.remove(h.slot));
        // Same original tuple, another backend: same home, the original slot is reused;
        // the old reply slot stays deleted.
        let rw2 = Tuple {
            dst: ip(10, 244, 9, 9),
            ..rw
        };
        let h2 = t.insert(&o, &rw2, 0, None).unwrap();
        assert_eq!(
            h2.flow_slot(),
            h.flow_slot(),
            "the test needs the slot reused"
        );
    });
    assert!(t.lookup(&rw.reversed()).is_none());
    assert!(!hooks::pending(), "the interleaving ran");
    assert_eq!(t.lookup(&o).unwrap().rewrite.dst, ip(10, 244, 9, 9));
}

#[test]
fn a_slot_being_written_is_skipped() {
    let t = table(8);
    let a = Tuple::affinity(ip(10, 1, 0, 1), 1);
    let h = t
        .insert_affinity(&a, (ip(10, 244, 0, 1), 1111), 0, 100)
        .unwrap();
    let s = h.slot as usize;
    let c = t.ctl[s].load(Ordering::Relaxed);
    t.ctl[s].store(c | WRITING, Ordering::Relaxed);
    assert!(t.lookup(&a).is_none());
    t.ctl[s].store(c, Ordering::Relaxed);
    assert!(t.lookup(&a).is_some());
}

#[test]
fn a_key_overflows_into_its_second_window_and_is_found_there() {
    let t = table(64);
    let mask = t.slots() - 1;
    assert!(t.slots() >= 4 * PROBE);
    let k = Tuple::affinity(ip(10, 1, 0, 1), 7);
    let [h1, h2] = t.homes(k.hash());
    let in_window = |s: u32, home: usize| (s as usize).wrapping_sub(home) & mask < PROBE;
    // Fill the first window with keys of the same first home.
    let fillers: Vec<Tuple> = (1..)
        .map(|i| Tuple::affinity(Ipv4Addr::from(0x0a08_0000 + i), 7))
        .filter(|c| t.homes(c.hash())[0] == h1)
        .take(PROBE)
        .collect();
    for f in &fillers {
        let h = t
            .insert_affinity(f, (ip(10, 244, 0, 1), 1), 0, 100)
            .unwrap();
        assert!(in_window(h.slot, h1));
    }
    let h = t
        .insert_affinity(&k, (ip(10, 244, 0, 2), 2), 0, 100)
        .unwrap();
    assert!(
        in_window(h.slot, h2) && !in_window(h.slot, h1),
        "slot {} h1 {h1} h2 {h2}",
        h.slot
    );
    assert_eq!(t.lookup(&k).unwrap().rewrite.dport, 2);
    // A tombstone in the first window does not hide it; a new key takes the tombstone.
    assert!(t.remove(t.lookup(&fillers[3]).unwrap().slot));
    assert_eq!(t.lookup(&k).unwrap().slot, h.slot);
    let again = Tuple::affinity(ip(10, 1, 0, 1), 8);
    assert!(matches!(
        t.insert_affinity(&k, (ip(10, 244, 0, 3), 3), 0, 100),
        Err(InsertError::Exists(_))
    ));
    assert!(t.lookup(&again).is_none());
    assert_eq!(t.counters().entries, PROBE as u64);
}

#[test]
fn bulk_lookups_agree_with_single_lookups() {
    let t = table(1024);
    let mut tuples = vec![];
    for i in 0..600 {
        let (o, rw) = dnat_snat(i, 1000 + i as u16);
        t.insert(&o, &rw, 0, Some(SYN)).unwrap();
        tuples.push(o);
        tuples.push(rw.reversed());
        tuples.push(Tuple { dport: 81, ..o }); // a miss
    }
    let mut out = vec![None; tuples.len()];
    t.lookup_bulk(&tuples, &mut out);
    let key = |h: &Option<Hit>| h.map(|h| (h.slot, h.dir, h.rewrite, h.state));
    for (tup, got) in tuples.iter().zip(&out) {
        assert_eq!(key(got), key(&t.lookup(tup)));
    }
    assert_eq!(out.iter().flatten().count(), 1200);
    // A shorter output slice: only that many are looked up; a shorter input leaves the
    // rest of the output alone.
    let mut short = vec![None; 5];
    t.lookup_bulk(&tuples, &mut short);
    assert!(short[0].is_some() && short[1].is_some() && short[2].is_none());
    let mut long = vec![Some(out[0].unwrap()); 4];
    t.lookup_bulk(&tuples[2..3], &mut long);
    assert!(long[0].is_none() && long[1..].iter().all(Option::is_some));
}
