/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Layouts shared by the generator and sink programs and by the Rust side
 * (perf/src/gen.rs and perf/src/sink.rs mirror them with #[repr(C)] structs;
 * a unit test there checks the sizes). */
#ifndef XDPLANE_PERF_COMMON_H
#define XDPLANE_PERF_COMMON_H

#include <linux/types.h>

/* The payload the generator writes right after the UDP header. 16 bytes, so a
 * 64-byte frame (60 bytes without FCS) still carries it. Both fields are in the
 * host's byte order: generator and sink run on the same machine. */
struct gen_payload {
	__u64 seq;   /* 0, 1, 2, ... per generator CPU */
	__u64 ts_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) when the frame was written */
};

/* Generator configuration: one entry of the `gen_config` array. */
struct gen_config {
	__u8 dst_mac[6];
	__u8 src_mac[6];
	__u32 src_ip;   /* network byte order */
	__u32 dst_ip;   /* network byte order */
	__u16 src_port; /* host order: first source port; flow i uses src_port + i */
	__u16 dst_port; /* host order */
	__u32 flows;    /* number of flows (source ports), >= 1 */
	__u32 ifindex;  /* bpf_redirect target */
	__u32 _pad[2];
	__u64 max_seq;  /* send only while this CPU's seq is below (count limit) */
	/* Pacing: 0 = as fast as possible; else frames per second. A frame is sent when
	 * bpf_ktime_get_ns() reaches the state's next_ns, which then advances by
	 * 1e9 / rate_pps ns (quotient interval_ns, remainder interval_rem spread
	 * Bresenham-style, so the long-run rate is exact). Invocations before that time
	 * return XDP_DROP (the page is recycled at once) and are not counted. */
	__u64 rate_pps;
	__u64 interval_ns;
	__u64 interval_rem;
	__u64 max_lag_ns; /* a schedule that fell behind catches up at most this much */
};

/* Generator state: one per CPU (`gen_state`, per-CPU array). All sender threads of a
 * generator run on one CPU: program runs there never interleave (a live-frame batch
 * runs with bottom halves disabled), so plain read-modify-write is safe. */
struct gen_state {
	__u64 seq;  /* frames sent so far on this CPU = next sequence number */
	__u32 flow; /* flow of the next frame */
	__u32 _pad;
	__u64 next_ns; /* pacing: when the next frame is due */
	__u64 acc;     /* pacing: accumulated remainder, < rate_pps */
};

#define SINK_FILTER_MAC  1u
#define SINK_FILTER_IP   2u
#define SINK_FILTER_PORT 4u

/* Sink configuration: one entry of the `sink_config` array. A frame "matches"
 * when it is IPv4/UDP with a generator payload and passes every enabled filter. */
struct sink_config {
	__u8 mac[6];    /* destination MAC to accept */
	__u16 dst_port; /* host order */
	__u32 ip;       /* destination IPv4, network byte order */
	__u32 flags;    /* SINK_FILTER_* */
};

/* Sink counters: one per CPU (`sink_counters`, per-CPU array). */
struct sink_counters {
	__u64 packets;       /* every frame seen */
	__u64 bytes;
	__u64 matched;       /* generator frames that pass the filter */
	__u64 matched_bytes;
	__u64 reordered;     /* matched frames whose seq is not above the last one seen on this CPU */
	__u64 lat_sum_ns;    /* sum over matched frames of now - ts_ns */
	__u64 lat_max_ns;
	__u64 last_seq_plus1; /* 0: none seen yet */
};

#endif
