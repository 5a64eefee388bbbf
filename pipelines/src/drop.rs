//! Why packets are dropped. Every reason becomes a per-port counter.

use serde::Serialize;

macro_rules! drop_reasons {
    ($($variant:ident = $name:literal : $help:literal,)*) => {
        /// A closed set of drop reasons; `#[repr(u16)]` so it indexes counter arrays.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        #[repr(u16)]
        pub enum DropReason { $($variant,)* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons (length of a counter array).
            pub const COUNT: usize = Self::ALL.len();
            /// Short kebab-case name (counter label).
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }
            /// One line for humans.
            pub const fn help(self) -> &'static str {
                match self { $(DropReason::$variant => $help,)* }
            }
        }
    };
}

drop_reasons! {
    EthTruncated = "eth-truncated": "frame shorter than an Ethernet header",
    EthUnsupportedType = "eth-unsupported-type": "EtherType the dataplane does not handle (not IPv4 or ARP)",
    ArpMalformed = "arp-malformed": "ARP packet truncated, not Ethernet/IPv4, or with a non-unicast sender MAC",
    ArpNotForUs = "arp-not-for-us": "ARP request for an address the dataplane does not answer (or received on the uplink)",
    ArpReply = "arp-reply": "ARP reply or other ARP operation, not used yet",
    Ip4Truncated = "ip4-truncated": "frame shorter than the IPv4 header",
    Ip4BadVersion = "ip4-bad-version": "IP version field is not 4",
    Ip4BadIhl = "ip4-bad-ihl": "IHL below 5 or header beyond the frame",
    Ip4BadLength = "ip4-bad-length": "total length smaller than the header or beyond the frame",
    Ip4BadChecksum = "ip4-bad-checksum": "IPv4 header checksum does not verify",
    Ip4BadSource = "ip4-bad-source": "source address is multicast, broadcast or unspecified",
    Ip4TtlExpired = "ip4-ttl-expired": "TTL would reach zero when forwarded, and no ICMP time exceeded was sent for it",
    Ip4NoRoute = "ip4-no-route": "no route to the destination, and no ICMP net unreachable was sent for it",
    Ip4LocalUnhandled = "ip4-local-unhandled": "addressed to the dataplane (gateway or node IP) but not a protocol it answers",
    IcmpMalformed = "icmp-malformed": "ICMP message truncated or with a bad checksum",
    IcmpNotEcho = "icmp-not-echo": "ICMP to the dataplane that is not an echo request",
    PortDown = "port-down": "egress port is gone or has no socket on this worker",
    TxRingFull = "tx-ring-full": "the egress socket's tx ring was full",
    NoVerdict = "no-verdict": "left the pipeline without a final verdict (a stage bug: should stay zero)",
    VxlanTruncated = "vxlan-truncated": "VXLAN datagram shorter than its UDP length, the VXLAN header or the inner Ethernet header",
    VxlanBadFlags = "vxlan-bad-flags": "VXLAN header without the I flag or with reserved bits set (Linux drops these too)",
    VxlanBadVni = "vxlan-bad-vni": "VXLAN network identifier is not this node's VNI",
    VxlanEcnInvalid = "vxlan-ecn-invalid": "outer header marked congestion (CE) over an inner packet that is not ECN-capable (RFC 6040)",
    VxlanInnerUnsupported = "vxlan-inner-unsupported": "decapsulated frame is not IPv4 (no ARP over the tunnel: flannel's neighbour entries are static)",
    VxlanLoop = "vxlan-loop": "arrived by VXLAN and would leave by VXLAN again, or carries our own VTEP MAC as inner source",
    VxlanNoHeadroom = "vxlan-no-headroom": "less than 50 bytes of frame headroom for the outer headers",
    VxlanVtepUnreachable = "vxlan-vtep-unreachable": "the VTEP address is neither on the uplink's subnet nor behind a gateway route",
    NeighbourUnresolved = "neighbour-unresolved": "the next hop on the uplink has no MAC yet (recorded for the resolver)",
    UplinkUnconfigured = "uplink-unconfigured": "the route leads to the uplink, but the snapshot has no uplink port or no node IP",
    Ip4HostUnreachable = "ip4-host-unreachable": "in the node's pod CIDR without a pod, and no ICMP host unreachable was sent for it",
    Ip4RouteUnreachable = "ip4-route-unreachable": "the route is marked unreachable, and no ICMP host unreachable was sent for it",
    Ip4FragNeeded = "ip4-frag-needed": "too big for the egress MTU with DF set, and no ICMP fragmentation needed was sent for it",
    IcmpErrorRateLimited = "icmp-error-rate-limited": "an ICMP error was due, but the worker's ICMP error budget was spent",
    ServiceNoEndpoints = "service-no-endpoints": "to a Service frontend without usable endpoints: the ICMP port unreachable that rejects it was forbidden (RFC 1812: broadcast, fragment, ICMP error), or it was a TCP reset",
    ConntrackFull = "conntrack-full": "a new NATed flow found no free slot in the flow table (nothing evictable within the probe window)",
    SnatPortsExhausted = "snat-ports-exhausted": "no free source port (or ICMP identifier) in this worker's slice of the SNAT range within the bounded number of tries",
    NatUnsupported = "nat-unsupported": "to a Service frontend or due for masquerade, but cannot be translated: a fragment, or a truncated or inconsistent L4 header",
    ServiceNoLocalEndpoints = "service-no-local-endpoints": "to a Service frontend whose Local traffic policy leaves no endpoint on this node (dropped, as kube-proxy does; the Service has endpoints elsewhere)",
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names_are_unique_and_indexes_dense() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn counter_indexes_are_stable() {
        // New reasons are appended: the first generation's indexes never move.
        assert_eq!(DropReason::EthTruncated as usize, 0);
        assert_eq!(DropReason::TxRingFull as usize, 17);
        assert_eq!(DropReason::NoVerdict as usize, 18);
        assert_eq!(DropReason::VxlanTruncated as usize, 19);
        assert_eq!(DropReason::IcmpErrorRateLimited as usize, 32);
        assert_eq!(DropReason::ServiceNoEndpoints as usize, 33);
        assert_eq!(DropReason::NatUnsupported as usize, 36);
        assert_eq!(DropReason::ServiceNoLocalEndpoints as usize, 37);
    }
}
