/* SPDX-License-Identifier: Apache-2.0 */
/*
 * l4policy.h — the map layouts of l4policy.bpf.c, defined once.
 *
 * The Python loader (hybridmesh/ebpf/l4policy.py) mirrors each struct as a ctypes Structure and
 * maps.Map checks the mirror against the BTF the compiler emitted for these definitions.
 *
 * Addresses are in network byte order (as the IP header has them); ports in host byte order
 * (userspace writes policy keys without converting, the program converts once per lookup).
 */
#ifndef HM_L4POLICY_H
#define HM_L4POLICY_H

#define HM_L4_MAX_IPS 65536      /* ipcache: pod addresses (and prefixes) with an identity */
#define HM_L4_MAX_RULES 65536    /* policy entries, all destinations together */
#define HM_L4_MAX_FLOWS 131072   /* inbound connections whose verdict is cached */
#define HM_L4_RING_BYTES (256 * 1024)

/* Reserved identities. Pod identities are >= 256 (userspace allocates them). */
#define HM_L4_ID_ANY 0   /* in a policy key's src: "any source" (the destination's default) */
#define HM_L4_ID_HOST 1  /* this node's own addresses (probes): userspace always allows it */
#define HM_L4_ID_WORLD 2 /* an address the ipcache does not know */

#define HM_L4_PORT_ANY 0 /* in a policy key's port: "every port without its own entry" */

/* verdicts */
#define HM_L4_ALLOW 1
#define HM_L4_DROP 2

/* verdict flags */
#define HM_L4_DEFAULT_DENY 1 /* dropped because an ALLOW policy selects the destination */

/* event reasons */
#define HM_L4_NEW 0         /* a SYN (new inbound connection) was dropped */
#define HM_L4_ESTABLISHED 1 /* a packet of an admitted connection, after a policy change */

/* ipcache: LPM trie, address/prefix -> identity */
struct hm_l4_ip_key {
	__u32 prefixlen;
	__be32 ip;
};

struct hm_l4_identity {
	__u32 id;
};

/* policy: (source identity, destination identity, port, protocol) -> verdict.
 * Lookup order: (src, dst, port) -> (src, dst, ANY port) -> (ANY src, dst, ANY port) -> allow. */
struct hm_l4_key {
	__u32 src;
	__u32 dst;
	__u16 port;  /* host byte order; HM_L4_PORT_ANY */
	__u8 proto;  /* IPPROTO_TCP */
	__u8 pad;
};

struct hm_l4_verdict {
	__u8 verdict; /* HM_L4_ALLOW / HM_L4_DROP */
	__u8 flags;   /* HM_L4_DEFAULT_DENY */
	__u16 pad;
	__u32 policy; /* policy id (userspace's table: id -> "ns/name"); 0: none */
};

/* flows: an inbound connection (from the destination pod's point of view) -> cached verdict */
struct hm_l4_flow_key {
	__be32 saddr;
	__be32 daddr;
	__u16 sport; /* host byte order */
	__u16 dport;
};

struct hm_l4_flow {
	__u64 epoch;         /* hm_policy_epoch the verdict was computed under */
	__u64 last_event_ns; /* bpf_ktime_get_ns of the last drop event (rate limit) */
	__u32 src_id;        /* identities the verdict was computed for (shown in events) */
	__u32 dst_id;
	struct hm_l4_verdict v;
};

/* stats: per-CPU, one entry (key 0) */
struct hm_l4_stats {
	__u64 allowed_new;         /* SYNs admitted */
	__u64 dropped_new;         /* SYNs dropped */
	__u64 passed;              /* packets of admitted connections (cache hit, same epoch) */
	__u64 dropped_established; /* packets of connections a policy change now denies */
	__u64 reevaluated;         /* cached verdicts recomputed after an epoch change */
	__u64 untracked;           /* non-SYN packets without a flow: replies, older connections */
	__u64 events;              /* drop events written to the ring buffer */
	__u64 events_lost;         /* drop events the full ring buffer refused */
	__u64 dropped_ipv6;        /* IPv6 packets from outside the pod (identities are IPv4) */
};

/* ring buffer record: one dropped packet (rate-limited per flow) */
struct hm_l4_event {
	__u64 ts_ns; /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__be32 saddr;
	__be32 daddr;
	__u16 sport; /* host byte order */
	__u16 dport;
	__u32 policy;
	__u32 src_id;
	__u32 dst_id;
	__u8 direction; /* 0: ingress */
	__u8 reason;    /* HM_L4_NEW / HM_L4_ESTABLISHED */
	__u8 flags;     /* HM_L4_DEFAULT_DENY */
	__u8 pad;
};

#endif /* HM_L4POLICY_H */
