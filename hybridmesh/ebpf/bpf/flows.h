/* SPDX-License-Identifier: Apache-2.0 */
/*
 * flows.h — the records and map layouts of flows.bpf.c, defined once.
 *
 * The Python loader (hybridmesh/ebpf/flows.py) mirrors each struct with ctypes; maps.Map checks
 * the map structs against this object's BTF, and the loader checks hm_flow_record (which travels
 * through the ring buffer, so no map names it) against the BTF type of the same name.
 *
 * Addresses are in network byte order (as the kernel keeps them), ports in host order (as the
 * tracepoints hand them over).
 */
#ifndef HM_FLOWS_H
#define HM_FLOWS_H

#define HM_FLOWS_MAX_LOCAL 4096     /* local pod addresses followed on this node */
#define HM_FLOWS_MAX_TRACKED 65536  /* open connections remembered (LRU: oldest evicted) */
#define HM_FLOWS_RINGBUF (256 * 1024) /* default ring buffer bytes (a power of 2, >= a page) */

/* hm_flow_record.kind */
#define HM_FLOW_OPEN 1
#define HM_FLOW_CLOSE 2
#define HM_FLOW_RETRANSMIT 3

/* hm_flow_record.flags */
#define HM_FLOW_PASSIVE 1  /* the local socket accepted the connection (it is the server) */
#define HM_FLOW_UNSEEN 2   /* no open was recorded (opened before we loaded, or evicted) */
#define HM_FLOW_FIN_IN 4   /* close: the peer's FIN had arrived (SOCK_DONE, set by tcp_fin) */
#define HM_FLOW_REDIRECTED 8 /* close: the byte counts include what sockmap carried past TCP */

/* local: (netns inode, address) of each pod of this node. The netns is part of the key because
 * tracepoints see every namespace on the machine, and another lab (another agent, a sandbox)
 * may use the very same addresses. netns 0 matches an address in any namespace. */
struct hm_flow_local {
	__u32 netns;
	__be32 ip;
};

/* tracked: per open socket (keyed by the struct sock address), what its close needs */
struct hm_flow_state {
	__u64 start_ns;
	__u32 retransmits;  /* tcp_retransmit_skb events seen */
	__u32 flags;        /* HM_FLOW_PASSIVE */
};

/* stats: per-CPU counters, key 0 */
struct hm_flow_stats {
	__u64 events;       /* records written to the ring buffer */
	__u64 lost;         /* records dropped because the ring buffer was full */
	__u64 retransmits;  /* retransmits of followed sockets */
};

/* one ring buffer record, from the local socket's point of view */
struct hm_flow_record {
	__u64 ts_ns;           /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 duration_ns;     /* close: since the open (0 when HM_FLOW_UNSEEN) */
	__u64 bytes_acked;     /* sent by the local socket and acknowledged (+ SYN and FIN) */
	__u64 bytes_received;  /* received by the local socket (+ FIN) */
	__be32 local_ip;
	__be32 remote_ip;
	__u16 local_port;
	__u16 remote_port;
	__u32 netns;           /* inode of the local socket's network namespace */
	__u32 srtt_us;         /* smoothed RTT, microseconds (0: not measured yet) */
	__u32 total_retrans;   /* the kernel's count for the socket */
	__u8 kind;             /* HM_FLOW_* */
	__u8 flags;            /* HM_FLOW_* flags above */
	__u8 old_state;        /* TCP state the socket left */
	__u8 new_state;        /* TCP state the socket entered */
	__u32 pad;
};

#endif /* HM_FLOWS_H */
