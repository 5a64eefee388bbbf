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
    ArpNotForUs = "arp-not-for-us": "ARP request for an address the dataplane does not answer",
    ArpReply = "arp-reply": "ARP reply or other ARP operation, not used yet",
    Ip4Truncated = "ip4-truncated": "frame shorter than the IPv4 header",
    Ip4BadVersion = "ip4-bad-version": "IP version field is not 4",
    Ip4BadIhl = "ip4-bad-ihl": "IHL below 5 or header beyond the frame",
    Ip4BadLength = "ip4-bad-length": "total length smaller than the header or beyond the frame",
    Ip4BadChecksum = "ip4-bad-checksum": "IPv4 header checksum does not verify",
    Ip4BadSource = "ip4-bad-source": "source address is multicast, broadcast or unspecified",
    Ip4TtlExpired = "ip4-ttl-expired": "TTL would reach zero when forwarded",
    Ip4NoRoute = "ip4-no-route": "no route to the destination",
    Ip4LocalUnhandled = "ip4-local-unhandled": "addressed to the dataplane but not a protocol it answers",
    IcmpMalformed = "icmp-malformed": "ICMP message truncated or with a bad checksum",
    IcmpNotEcho = "icmp-not-echo": "ICMP to the dataplane that is not an echo request",
    PortDown = "port-down": "egress port is gone or has no socket on this worker",
    TxRingFull = "tx-ring-full": "the egress socket's tx ring was full",
    NoVerdict = "no-verdict": "left the pipeline without a final verdict (a stage bug: should stay zero)",
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
}
