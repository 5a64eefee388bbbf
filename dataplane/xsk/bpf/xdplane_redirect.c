// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * xdplane_redirect: steers frames from a device queue to the AF_XDP socket that
 * xdplane bound on that (ifindex, rx queue), or passes them to the kernel.
 *
 *   slot = xsk_slots[{ingress_ifindex, rx_queue_index}]      none      -> XDP_PASS
 *   flags = port_policy[ingress_ifindex]                     none      -> XDP_PASS
 *   flags & PORT_REDIRECT_ALL   (pod ports)                            -> xsks[slot]
 *   flags & PORT_REDIRECT_OWNED (uplinks): untagged IPv4 whose destination is in
 *                                owned_prefixes                        -> xsks[slot]
 *                                anything else (ARP, the node's own
 *                                traffic, IPv6, VLAN-tagged)           -> XDP_PASS
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

/* An owned service on one of the node's own addresses: UDP/TCP to (daddr, dport). */
struct service_key {
	__u32 daddr;  /* network byte order */
	__u16 dport;  /* network byte order */
	__u8 proto;   /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 pad;
};

#define MAX_OWNED_SERVICES 4096

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

	/* Owned services on the node's own addresses (VXLAN UDP 8472; NodePorts later). */
	if (ip->protocol == IPPROTO_UDP || ip->protocol == IPPROTO_TCP) {
		struct service_key skey = {};
		__u16 *ports;
		__u32 ihl = ip->ihl * 4;

		if (ihl < sizeof(*ip))
			return 0;
		ports = (void *)ip + ihl;
		if ((void *)(ports + 2) > data_end)
			return 0;
		skey.daddr = ip->daddr;
		skey.dport = ports[1];
		skey.proto = ip->protocol;
		if (bpf_map_lookup_elem(&owned_services, &skey))
			return 1;
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
