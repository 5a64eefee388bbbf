// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * xdplane_redirect: steers frames from a device queue to the AF_XDP socket that
 * xdplane bound on that (ifindex, rx queue), or passes them to the kernel.
 *
 *   slot = xsk_slots[{ingress_ifindex, rx_queue_index}]      none      -> XDP_PASS
 *   flags = port_policy[ingress_ifindex]                     none      -> XDP_PASS
 *   flags & PORT_REDIRECT_ALL   (pod ports)                            -> xsks[slot]
 *   flags & PORT_REDIRECT_OWNED (uplinks): untagged IPv4 that is
 *       - to an owned prefix (owned_prefixes: the pod CIDR)           -> xsks[slot]
 *       - TCP/UDP/SCTP to an owned service (owned_services: VXLAN,
 *         NodePorts on the node IP, externalIPs, LoadBalancer IPs)     -> xsks[slot]
 *       - a reply to a flow the dataplane translated to the node IP
 *         (nat_config: node IP and SNAT port range, when enabled):
 *         (a) TCP/UDP/SCTP to the node IP, destination port in range
 *         (b) ICMP echo reply to the node IP, identifier in range
 *         (c) ICMP error (3, 11, 12) to the node IP quoting a packet
 *             from the node IP whose TCP/UDP/SCTP source port or echo
 *             identifier is in range, or from an owned service        -> xsks[slot]
 *       anything else (ARP, the node's own traffic, IPv6, VLAN-tagged,
 *       non-first fragments of L4 traffic)                             -> XDP_PASS
 *
 * bpf_redirect_map() is given XDP_PASS as its fallback action, so a slot whose
 * XSKMAP entry is empty (socket closed, entry cleared) also passes the frame.
 *
 * Licensed "Dual MIT/GPL": the kernel only lets GPL-compatible programs call
 * GPL-only helpers; the userspace crate stays MIT OR Apache-2.0.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Keep in sync with dataplane/xsk/src/bpf.rs. */
#define XSK_SLOTS 1024
#define MAX_PORTS 4096
#define MAX_OWNED_PREFIXES 16384

#define PORT_REDIRECT_ALL 1u
#define PORT_REDIRECT_OWNED 2u

struct slot_key {
	__u32 ifindex;
	__u32 queue;
};

/* BPF_MAP_TYPE_LPM_TRIE key: prefix length in bits, then the address bytes in
 * network order. */
struct owned_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

/* An owned service on one of the node's own addresses: UDP/TCP/SCTP to (daddr, dport). */
struct service_key {
	__u32 daddr;  /* network byte order */
	__u16 dport;  /* network byte order */
	__u8 proto;   /* IPPROTO_UDP, IPPROTO_TCP or IPPROTO_SCTP */
	__u8 pad;
};

/* The node's source NAT: replies to node_ip on ports (or echo identifiers) in
 * [port_lo, port_hi] belong to the dataplane when NAT_ENABLED is set. */
struct nat_config {
	__u32 node_ip;  /* network byte order */
	__u16 port_lo;  /* host byte order, inclusive */
	__u16 port_hi;  /* host byte order, inclusive */
	__u32 flags;
};

#define NAT_ENABLED 1u

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
/* IPv4 frag_off: offset bits (MF and DF masked out). */
#define IP_OFFSET 0x1fff

#define MAX_OWNED_SERVICES 65536

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XSK_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XSK_SLOTS);
	__type(key, struct slot_key);
	__type(value, __u32);
} xsk_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} port_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_OWNED_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct owned_v4_key);
	__type(value, __u32);
} owned_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_OWNED_SERVICES);
	__type(key, struct service_key);
	__type(value, __u32);
} owned_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nat_config);
} nat_config SEC(".maps");

static __always_inline int is_l4(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

static __always_inline int in_range(const struct nat_config *nat, __u16 port_be)
{
	__u16 p = bpf_ntohs(port_be);

	return p >= nat->port_lo && p <= nat->port_hi;
}

static __always_inline int owned_service(__u32 addr, __u16 port, __u8 proto)
{
	struct service_key skey = {};

	skey.daddr = addr;
	skey.dport = port;
	skey.proto = proto;
	return bpf_map_lookup_elem(&owned_services, &skey) != NULL;
}

/*
 * (c): an ICMP error to `daddr` about a packet `daddr` sent: a source-NATed packet
 * from the node IP (source port or echo identifier in the SNAT range), or a reply from
 * an owned service. `icmp` points at the ICMP header, 8 bytes of which are known to be
 * in the frame; the quoted IPv4 header follows, then (RFC 792) at least 8 bytes of its
 * payload: the ports, or the echo header with its identifier.
 */
static __always_inline int icmp_error_is_ours(void *icmp, void *data_end, __u32 daddr,
					      const struct nat_config *nat)
{
	struct iphdr *in = icmp + 8;
	__u16 *ports;
	__u32 ihl;

	if ((void *)(in + 1) > data_end)
		return 0;
	if (in->version != 4 || in->saddr != daddr)
		return 0;
	ihl = in->ihl * 4;
	if (ihl < sizeof(*in))
		return 0;
	/* The quoted packet must carry its L4 header (a first fragment). */
	if (in->frag_off & bpf_htons(IP_OFFSET))
		return 0;
	ports = (void *)in + ihl;
	if ((void *)(ports + 4) > data_end)
		return 0;
	if (is_l4(in->protocol)) {
		if (nat && in->saddr == nat->node_ip && in_range(nat, ports[0]))
			return 1;
		return owned_service(in->saddr, ports[0], in->protocol);
	}
	if (in->protocol == IPPROTO_ICMP && nat && in->saddr == nat->node_ip) {
		__u8 type = *(__u8 *)ports;

		return type == ICMP_ECHO && in_range(nat, ports[2]);
	}
	return 0;
}

/*
 * Whether an uplink frame belongs to the dataplane. Only untagged Ethernet II
 * IPv4 frames are candidates; every header read is bounds-checked against
 * data_end, as the verifier requires.
 */
static __always_inline int is_owned(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct owned_v4_key key;
	struct nat_config nat_copy = {};
	const struct nat_config *nat = NULL, *entry;
	__u32 zero = 0;
	__u16 *l4;
	__u32 ihl;

	if ((void *)(eth + 1) > data_end)
		return 0;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return 0;
	if (ip->version != 4)
		return 0;

	key.prefixlen = 32;
	__builtin_memcpy(key.addr, &ip->daddr, sizeof(key.addr));
	if (bpf_map_lookup_elem(&owned_prefixes, &key))
		return 1;

	/* Everything below reads the L4 header: only first fragments have one. */
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return 0;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return 0;
	l4 = (void *)ip + ihl;
	/* 8 bytes: ports (TCP/UDP/SCTP) or type, code, checksum, identifier (ICMP). */
	if ((void *)(l4 + 4) > data_end)
		return 0;

	/* A copy on the stack: `nat` is then NULL or points at the stack, never a map
	 * value the compiler would have to select between with pointer arithmetic. */
	entry = bpf_map_lookup_elem(&nat_config, &zero);
	if (entry && (entry->flags & NAT_ENABLED)) {
		nat_copy = *entry;
		nat = &nat_copy;
	}

	if (is_l4(ip->protocol)) {
		/* Owned services on the node's addresses (VXLAN, NodePorts, external IPs). */
		if (owned_service(ip->daddr, l4[1], ip->protocol))
			return 1;
		/* (a) replies to source-NATed flows. */
		return nat && ip->daddr == nat->node_ip && in_range(nat, l4[1]);
	}
	if (ip->protocol == IPPROTO_ICMP) {
		__u8 type = *(__u8 *)l4;

		/* (b) echo replies to source-NATed echo requests: identifier at offset 4. */
		if (type == ICMP_ECHOREPLY)
			return nat && ip->daddr == nat->node_ip && in_range(nat, l4[2]);
		/* (c) errors about packets of source-NATed flows or owned services. */
		if (type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
		    type == ICMP_PARAMETERPROB)
			return icmp_error_is_ours(l4, data_end, ip->daddr, nat);
	}
	return 0;
}

SEC("xdp")
int xdplane_redirect(struct xdp_md *ctx)
{
	struct slot_key key = {
		.ifindex = ctx->ingress_ifindex,
		.queue = ctx->rx_queue_index,
	};
	__u32 *slot, *flags;

	slot = bpf_map_lookup_elem(&xsk_slots, &key);
	if (!slot)
		return XDP_PASS;
	flags = bpf_map_lookup_elem(&port_policy, &key.ifindex);
	if (!flags)
		return XDP_PASS;

	if (*flags & PORT_REDIRECT_ALL)
		return bpf_redirect_map(&xsks, *slot, XDP_PASS);
	if ((*flags & PORT_REDIRECT_OWNED) && is_owned(ctx))
		return bpf_redirect_map(&xsks, *slot, XDP_PASS);
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
