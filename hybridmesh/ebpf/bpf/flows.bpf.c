// SPDX-License-Identifier: GPL-2.0
/*
 * flows.bpf.c — TCP flow visibility for `hybridmesh observe` (Hubble-like, reduced to TCP/IPv4).
 *
 * sock/inet_sock_set_state fires on every TCP state change on the machine. A socket entering
 * ESTABLISHED is a flow opening (from SYN_SENT: we connected; from SYN_RECV: we accepted); a
 * socket entering CLOSE after it was established is a flow ending, and the tcp_sock then holds
 * the connection's totals (bytes acked/received, smoothed RTT, retransmits). The programs are
 * tp_btf (BTF-typed raw tracepoints): the kernel pointers they get are read directly, CO-RE
 * relocated through vmlinux.h, with no copy. tcp/tcp_retransmit_skb counts retransmits per flow
 * and, optionally, reports each one.
 *
 * Tracepoints are global — every netns, every lab and sandbox on the machine — so the first
 * thing each program does is look the local socket's (netns, address) up in `local`, which the
 * loader fills with this node's pods: other traffic costs a few loads and one hash lookup.
 *
 * Same-node connections that sockmap joined carry their payload past TCP (sk_msg redirect), so
 * the TCP counters miss it; sockmap counts it per socket in the shared hm_sock_bytes
 * (sock_bytes.h), and the close record adds it (flag HM_FLOW_REDIRECTED).
 *
 * Records go to a ring buffer; when it is full the record is counted in `stats.lost`, never
 * silently dropped. An upgrade attaches the new programs next to the old ones and then flips
 * `control[0]` to the new generation: each program runs only while its generation is the active
 * one, so the switch is atomic (no event reported twice, none missed), although tracepoint
 * links cannot have their program replaced in place.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "flows.h"
#include "sock_bytes.h"

#define AF_INET 2 /* a macro in the kernel, so vmlinux.h cannot carry it */

/* Set by the loader before load. */
const volatile __u64 generation = 0;
const volatile __u8 emit_retransmits = 1;
/* Never read: it puts struct hm_flow_record into the object's BTF (records travel through the
 * ring buffer, which has no value type), so the loader can check its ctypes mirror. */
const volatile struct hm_flow_record record_layout = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HM_FLOWS_MAX_LOCAL);
	__type(key, struct hm_flow_local);
	__type(value, __u32);
} local SEC(".maps");

/* Keyed by the struct sock address: deleted at close, so a reused address starts afresh. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HM_FLOWS_MAX_TRACKED);
	__type(key, __u64);
	__type(value, struct hm_flow_state);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hm_flow_stats);
} stats SEC(".maps");

/* control[0]: the generation whose programs report (written by the loader after attaching) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} control SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, HM_FLOWS_RINGBUF);
} events SEC(".maps");

static __always_inline bool active(void)
{
	__u32 zero = 0;
	__u64 *current = bpf_map_lookup_elem(&control, &zero);

	return current && *current == generation;
}

static __always_inline __u32 netns_of(const struct sock *sk)
{
	return sk->__sk_common.skc_net.net->ns.inum; /* typed pointers: read directly */
}

static __always_inline bool is_local(__u32 netns, __be32 ip)
{
	struct hm_flow_local key = { .netns = netns, .ip = ip };

	if (bpf_map_lookup_elem(&local, &key))
		return true;
	key.netns = 0;
	return bpf_map_lookup_elem(&local, &key) != NULL;
}

static __always_inline struct hm_flow_stats *stats_of(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&stats, &zero);
}

/* Without a recorded open, guess the side from the ports: the server's is the lower one. */
static __always_inline __u8 guessed_flags(__u16 local_port, __u16 remote_port)
{
	return HM_FLOW_UNSEEN | (local_port < remote_port ? HM_FLOW_PASSIVE : 0);
}

/* A zeroed record in the ring buffer, or NULL (counted as lost) when it is full. */
static __always_inline struct hm_flow_record *reserve(struct hm_flow_stats *st)
{
	struct hm_flow_record *rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);

	if (!rec) {
		if (st)
			st->lost++;
		return NULL;
	}
	if (st)
		st->events++;
	__builtin_memset(rec, 0, sizeof(*rec));
	return rec;
}

static __always_inline void fill_tcp(struct hm_flow_record *rec, const struct tcp_sock *tp)
{
	rec->bytes_acked = tp->bytes_acked;
	rec->bytes_received = tp->bytes_received;
	rec->srtt_us = tp->srtt_us >> 3; /* the kernel keeps it scaled by 8 */
	rec->total_retrans = tp->total_retrans;
}

static __always_inline bool reported_transition(int old, int new)
{
	if (new == TCP_ESTABLISHED)
		return true;
	/* a close of a connection that was established (not a failed connect or a listener) */
	return new == TCP_CLOSE && old != TCP_SYN_SENT && old != TCP_SYN_RECV &&
	       old != TCP_LISTEN && old != TCP_CLOSE;
}

/* The socket's addresses, as the tracepoints' own records take them. */
struct endpoints {
	__be32 local_ip;
	__be32 remote_ip;
	__u16 local_port;
	__u16 remote_port;
	__u32 netns;
};

/* The TCP socket when it is one of this node's pods' (IPv4 only), with `ep` filled; NULL
 * otherwise. The local port comes from inet_sport: skc_num is already 0 once the socket left
 * its bind bucket, which happens before the tracepoint reports the close. */
static __always_inline struct tcp_sock *local_tcp(const struct sock *sk, struct endpoints *ep)
{
	struct tcp_sock *tp;

	if (sk->__sk_common.skc_family != AF_INET)
		return NULL;
	ep->local_ip = sk->__sk_common.skc_rcv_saddr;
	ep->netns = netns_of(sk);
	if (!is_local(ep->netns, ep->local_ip))
		return NULL;
	tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp)
		return NULL;
	ep->remote_ip = sk->__sk_common.skc_daddr;
	ep->local_port = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
	ep->remote_port = bpf_ntohs(sk->__sk_common.skc_dport);
	return tp;
}

static __always_inline void fill(struct hm_flow_record *rec, const struct tcp_sock *tp,
				 const struct endpoints *ep, __u64 now)
{
	rec->ts_ns = now;
	rec->local_ip = ep->local_ip;
	rec->remote_ip = ep->remote_ip;
	rec->local_port = ep->local_port;
	rec->remote_port = ep->remote_port;
	rec->netns = ep->netns;
	fill_tcp(rec, tp);
}

/* Add what sockmap redirected for this socket (its sockhash key, built as hm_sockops builds
 * it) to the record's counters, and forget it: the socket is closing. */
static __always_inline void add_redirected(struct hm_flow_record *rec, const struct sock *sk,
					   const struct endpoints *ep)
{
	struct hm_sock_key key = {};
	struct hm_sock_bytes *bytes;

	key.local_ip4 = ep->local_ip;
	key.remote_ip4 = ep->remote_ip;
	key.local_port = ep->local_port;
	key.remote_port = ep->remote_port;
	key.family = HM_SM_AF_INET;
	if ((bpf_ntohl(ep->local_ip) >> 24) == 127 && (bpf_ntohl(ep->remote_ip) >> 24) == 127)
		key.netns = sk->__sk_common.skc_net.net->net_cookie;
	bytes = bpf_map_lookup_elem(&hm_sock_bytes, &key);
	if (!bytes)
		return;
	rec->bytes_acked += bytes->sent;
	rec->bytes_received += bytes->received;
	rec->flags |= HM_FLOW_REDIRECTED;
	bpf_map_delete_elem(&hm_sock_bytes, &key);
}

/* tp_btf, not a classic tracepoint: attaching needs no tracefs (often not mounted), and the
 * arguments are typed kernel pointers, read directly (CO-RE relocated) instead of copied. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(hm_flow_state, const struct sock *sk, const int old, const int new)
{
	struct hm_flow_state *state, fresh = {};
	struct hm_flow_record *rec;
	struct endpoints ep;
	struct tcp_sock *tp;
	__u64 key = (__u64)sk, now;

	if (!reported_transition(old, new) || sk->sk_protocol != IPPROTO_TCP || !active())
		return 0;
	tp = local_tcp(sk, &ep);
	if (!tp)
		return 0;

	now = bpf_ktime_get_ns();
	rec = reserve(stats_of());
	if (new == TCP_ESTABLISHED) {
		fresh.start_ns = now;
		fresh.flags = old == TCP_SYN_RECV ? HM_FLOW_PASSIVE : 0;
		bpf_map_update_elem(&tracked, &key, &fresh, BPF_ANY);
		if (!rec)
			return 0;
		rec->kind = HM_FLOW_OPEN;
		rec->flags = fresh.flags;
	} else {
		state = bpf_map_lookup_elem(&tracked, &key);
		if (rec) {
			rec->kind = HM_FLOW_CLOSE;
			rec->flags = state ? state->flags : guessed_flags(ep.local_port, ep.remote_port);
			/* bytes_received counts the peer's FIN: userspace takes it off */
			if (sk->__sk_common.skc_flags & (1UL << SOCK_DONE))
				rec->flags |= HM_FLOW_FIN_IN;
			rec->duration_ns = state ? now - state->start_ns : 0;
		}
		if (state)
			bpf_map_delete_elem(&tracked, &key);
		if (!rec)
			return 0;
	}
	rec->old_state = old;
	rec->new_state = new;
	fill(rec, tp, &ep, now);
	if (new == TCP_CLOSE)
		add_redirected(rec, sk, &ep);
	bpf_ringbuf_submit(rec, 0);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(hm_flow_retransmit, const struct sock *sk, const struct sk_buff *skb, int err)
{
	struct hm_flow_stats *st;
	struct hm_flow_state *state;
	struct hm_flow_record *rec;
	struct endpoints ep;
	struct tcp_sock *tp;
	__u64 key = (__u64)sk;

	if (!active())
		return 0;
	tp = local_tcp(sk, &ep);
	if (!tp)
		return 0;
	st = stats_of();
	if (st)
		st->retransmits++;
	state = bpf_map_lookup_elem(&tracked, &key);
	if (state)
		__sync_fetch_and_add(&state->retransmits, 1);
	if (!emit_retransmits)
		return 0;
	rec = reserve(st);
	if (!rec)
		return 0;
	rec->kind = HM_FLOW_RETRANSMIT;
	rec->flags = state ? state->flags : guessed_flags(ep.local_port, ep.remote_port);
	rec->old_state = sk->__sk_common.skc_state;
	rec->new_state = rec->old_state;
	fill(rec, tp, &ep, bpf_ktime_get_ns());
	bpf_ringbuf_submit(rec, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
