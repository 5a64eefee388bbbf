/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The traffic sink: counts every frame and the generator's frames that match
 * its filter (per-CPU counters), tracks reordering and one-way latency from the
 * generator's payload, and drops everything. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_config);
} sink_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_counters);
} sink_counters SEC(".maps");


SEC("xdp")
int xdpsink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 key = 0;

	struct sink_counters *k = bpf_map_lookup_elem(&sink_counters, &key);
	struct sink_config *c = bpf_map_lookup_elem(&sink_config, &key);
	if (!k || !c)
		return XDP_DROP;
	__u64 len = (__u64)(data_end - data);
	k->packets++;
	k->bytes += len;

	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > data_end)
		return XDP_DROP;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4 || ip->ihl < 5 ||
	    ip->protocol != IPPROTO_UDP)
		return XDP_DROP;
	if ((ip->frag_off & bpf_htons(0x3fff)) != 0) /* a fragment: no UDP header here */
		return XDP_DROP;
	/* IPv4 options are accepted: the UDP header is found through ihl */
	struct udphdr *udp = (void *)ip + ip->ihl * 4;
	struct gen_payload *pl = (void *)(udp + 1);
	if ((void *)(pl + 1) > data_end)
		return XDP_DROP;

	__u32 flags = c->flags;
	if (flags & SINK_FILTER_MAC) {
		const __u8 *d = eth->h_dest;
		if (d[0] != c->mac[0] || d[1] != c->mac[1] || d[2] != c->mac[2] ||
		    d[3] != c->mac[3] || d[4] != c->mac[4] || d[5] != c->mac[5])
			return XDP_DROP;
	}
	if ((flags & SINK_FILTER_IP) && ip->daddr != c->ip)
		return XDP_DROP;
	if ((flags & SINK_FILTER_PORT) && udp->dest != bpf_htons(c->dst_port))
		return XDP_DROP;

	__u64 seq = pl->seq;
	__u64 now = bpf_ktime_get_ns();
	__u64 ts = pl->ts_ns;
	k->matched++;
	k->matched_bytes += len;
	if (k->last_seq_plus1 != 0 && seq < k->last_seq_plus1)
		k->reordered++;
	else
		k->last_seq_plus1 = seq + 1;
	if (now >= ts) {
		__u64 lat = now - ts;
		k->lat_sum_ns += lat;
		if (lat > k->lat_max_ns)
			k->lat_max_ns = lat;
	}
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "MIT OR Apache-2.0";
