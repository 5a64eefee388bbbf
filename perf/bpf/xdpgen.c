/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The traffic generator: run with BPF_PROG_TEST_RUN and BPF_F_TEST_XDP_LIVE_FRAMES.
 *
 * Live-frame pages are recycled without being reset (only the data pointers
 * are), and the device under test may have rewritten a frame in place before
 * the page comes back, so every header field is written on every invocation.
 * The frame length is the length of the data passed to the test run; IPv4 and
 * UDP lengths are derived from it. */
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
	__type(value, struct gen_config);
} gen_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_state);
} gen_state SEC(".maps");

/* The frame's headers: Ethernet at 0, IPv4 at 14 (no options), UDP at 34,
 * the payload at 42. Unaligned packet access is fine for the verifier on x86. */
#define IP_OFF (sizeof(struct ethhdr))
#define UDP_OFF (IP_OFF + sizeof(struct iphdr))
#define PL_OFF (UDP_OFF + sizeof(struct udphdr))

static __always_inline __u16 ip_checksum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int xdpgen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + IP_OFF;
	struct udphdr *udp = data + UDP_OFF;
	struct gen_payload *pl = data + PL_OFF;
	__u32 key = 0;

	struct gen_config *c = bpf_map_lookup_elem(&gen_config, &key);
	struct gen_state *s = bpf_map_lookup_elem(&gen_state, &key);
	if (!c || !s)
		return XDP_ABORTED;
	if ((void *)(pl + 1) > data_end)
		return XDP_ABORTED;
	__u32 len = (__u32)(data_end - data);
	if (len > 0xffff)
		return XDP_ABORTED;

	__u64 seq = s->seq;
	__u32 flow = s->flow;
	if (seq >= c->max_seq)
		return XDP_DROP;
	__u64 now = bpf_ktime_get_ns();
	if (c->rate_pps != 0) {
		__u64 next = s->next_ns;
		if (now < next)
			return XDP_DROP; /* not due yet */
		if (now - next > c->max_lag_ns)
			next = now - c->max_lag_ns; /* no long burst after a stall */
		next += c->interval_ns;
		__u64 acc = s->acc + c->interval_rem;
		if (acc >= c->rate_pps) {
			acc -= c->rate_pps;
			next++;
		}
		s->next_ns = next;
		s->acc = acc;
	}

	__builtin_memcpy(eth->h_dest, c->dst_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, c->src_mac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);

	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons((__u16)(len - sizeof(struct ethhdr)));
	ip->id = bpf_htons((__u16)seq);
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	ip->check = 0;
	ip->saddr = c->src_ip;
	ip->daddr = c->dst_ip;
	ip->check = ip_checksum(ip);

	udp->source = bpf_htons((__u16)(c->src_port + flow));
	udp->dest = bpf_htons(c->dst_port);
	udp->len = bpf_htons((__u16)(len - sizeof(struct ethhdr) - sizeof(struct iphdr)));
	udp->check = 0; /* no UDP checksum: allowed for IPv4 (RFC 768) */

	pl->seq = seq;
	pl->ts_ns = now;

	s->seq = seq + 1;
	flow++;
	s->flow = flow >= c->flows ? 0 : flow;

	return bpf_redirect(c->ifindex, 0);
}

char LICENSE[] SEC("license") = "MIT OR Apache-2.0";
