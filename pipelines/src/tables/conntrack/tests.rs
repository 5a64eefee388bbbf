use super::*;
use crate::tables::services::PROTO_UDP;

#[test]
fn tuple_reversed_swaps_both_ends() {
    let t = Tuple::new(
        PROTO_TCP,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        1234,
        80,
    );
    let r = t.reversed();
    assert_eq!(
        r,
        Tuple::new(
            PROTO_TCP,
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 1),
            80,
            1234
        )
    );
    assert_eq!(r.reversed(), t);
}

#[test]
fn affinity_key_splits_the_service_port_id() {
    let k = Tuple::affinity(Ipv4Addr::new(10, 1, 2, 3), 0x0012_3456);
    assert_eq!(k.proto, PROTO_AFFINITY);
    assert_eq!(k.src, Ipv4Addr::new(10, 1, 2, 3));
    assert_eq!(k.dst, Ipv4Addr::from(0x12u32));
    assert_eq!((k.sport, k.dport), (0, 0x3456));
    assert_ne!(k, Tuple::affinity(Ipv4Addr::new(10, 1, 2, 3), 0x0013_3456));
    let u = Tuple::new(PROTO_UDP, k.src, k.dst, 0, k.dport);
    assert_ne!(u.hash(), k.hash());
}
