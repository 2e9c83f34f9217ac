// SPDX-License-Identifier: GPL-2.0
/*
 * nodesteer.bpf.c — steering for the `node` placement: every TCP connect of a pod goes to the
 * node proxy, and the proxy learns from the kernel, not from the packet, who is calling.
 *
 * hm_ns_connect4 (cgroup/connect4, inside connect(2), in the caller's context): a TCP connect
 * to any non-loopback destination is rewritten to the node proxy's outbound listener. The
 * socket's storage keeps the original destination and the calling pod's cgroup id. The pod is
 * found by cgroup, never by address: a process can bind any source IP it likes, it cannot leave
 * its cgroup. (The lab runs a pod's processes in leaves below the pod's cgroup, so the pod is
 * the registered ancestor of the caller's cgroup, which is what the proxy's index knows.)
 *
 * hm_ns_sockops (sockops, ACTIVE_ESTABLISHED): the 4-tuple is final now, so the entry the proxy
 * looks up on accept() goes into hm_node_src under it. A state callback deletes the entry when
 * the connection closes before the proxy read it (the proxy deletes it when it reads it).
 *
 * hm_ns_getpeername4 (cgroup/getpeername4): the application still sees the address it dialled.
 * connect6/getpeername6 do the same for AF_INET6 sockets dialling v4-mapped addresses.
 *
 * The node proxy runs in the node's netns and cgroup, never in a pod cgroup, so its own
 * connections (to local pods, to other nodes' tunnels) are not steered.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "nodesteer.h"

#define SYS_REJECT 0
#define SYS_PROCEED 1
#define ENOBUFS 105 /* errno values are macros, so vmlinux.h cannot carry them */

/* The node proxy's outbound listener, set by the loader before load (network order). */
const volatile __be32 proxy_ip4 = 0;
const volatile __be16 proxy_port = 0;

/* Read by the node proxy (take-once); the proxy may have pinned it first with the same shape. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HM_NS_MAX_SRC);
	__type(key, struct hm_node_src_key);
	__type(value, struct hm_node_src);
} hm_node_src SEC(".maps");

/* Per socket, from connect to close: dies with the socket, so nothing to evict or leak, and a
 * pod opening connections as fast as it can cannot push out another pod's pending entries. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct hm_node_src);
} steer_state SEC(".maps");

/* The cgroup ids of the pods steered on this node (written before their links are attached). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HM_NS_MAX_PODS);
	__type(key, __u64);
	__type(value, __u8);
} pod_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hm_nodesteer_stats);
} stats SEC(".maps");

static __always_inline struct hm_nodesteer_stats *stats_slot(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&stats, &zero);
}

/* 127/8 and 0.0.0.0 (which connect(2) treats as this host) stay inside the pod. */
static __always_inline bool stays_local(__be32 ip)
{
	return ip == 0 || (bpf_ntohl(ip) >> 24) == 127;
}

/* The shallowest ancestor of the caller's cgroup that is a registered pod cgroup; the caller's
 * own cgroup when none is (the proxy knows no such id, so it refuses: fail closed). */
static __always_inline __u64 caller_pod_cgroup(struct hm_nodesteer_stats *st)
{
	__u64 id;
	int level;

	for (level = 1; level < HM_NS_MAX_DEPTH; level++) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			break;
		if (bpf_map_lookup_elem(&pod_cgroups, &id))
			return id;
	}
	if (st)
		st->unknown_pod++;
	return bpf_get_current_cgroup_id();
}

/* Rewrites one connect whose IPv4 destination is *ip:*port (network order). */
static __always_inline int steer(struct bpf_sock *sk, __u32 *ip, __u32 *port)
{
	struct hm_nodesteer_stats *st;
	struct hm_node_src *state;

	if (stays_local(*ip))
		return SYS_PROCEED;
	if (*ip == proxy_ip4 && (__u16)*port == proxy_port)
		return SYS_PROCEED; /* dialling the proxy itself: nothing to remember */
	st = stats_slot();
	state = sk ? bpf_sk_storage_get(&steer_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE) : NULL;
	if (!state) {
		/* Without the record the proxy could not tell who is calling: refuse now. */
		if (st)
			st->no_storage++;
		bpf_set_retval(-ENOBUFS);
		return SYS_REJECT;
	}
	state->cgroup_id = caller_pod_cgroup(st);
	state->orig_daddr = *ip;
	state->orig_dport = (__u16)*port;
	*ip = proxy_ip4;
	*port = proxy_port;
	if (st)
		st->steered++;
	return SYS_PROCEED;
}

/* The original destination, when the socket was steered and still points at the proxy. */
static __always_inline void unsteer(struct bpf_sock *sk, __u32 *ip, __u32 *port)
{
	struct hm_node_src *state;

	if (!sk || *ip != proxy_ip4 || (__u16)*port != proxy_port)
		return;
	state = bpf_sk_storage_get(&steer_state, sk, 0, 0);
	if (state) {
		*ip = state->orig_daddr;
		*port = state->orig_dport;
	}
}

SEC("cgroup/connect4")
int hm_ns_connect4(struct bpf_sock_addr *ctx)
{
	__u32 ip = ctx->user_ip4, port = ctx->user_port;
	int verdict;

	if (ctx->protocol != IPPROTO_TCP)
		return SYS_PROCEED;
	verdict = steer(ctx->sk, &ip, &port);
	ctx->user_ip4 = ip;
	ctx->user_port = port;
	return verdict;
}

SEC("cgroup/getpeername4")
int hm_ns_getpeername4(struct bpf_sock_addr *ctx)
{
	__u32 ip = ctx->user_ip4, port = ctx->user_port;

	unsteer(ctx->sk, &ip, &port);
	ctx->user_ip4 = ip;
	ctx->user_port = port;
	return SYS_PROCEED; /* getpeername hooks must return 1 */
}

/* An AF_INET6 socket dialling ::ffff:a.b.c.d is an IPv4 connection that runs the connect6
 * hook, not connect4: without these two, such a socket would leave the mesh. Native IPv6
 * destinations are not steered (the lab's pods have IPv4 addresses only). */
static __always_inline bool v4_mapped(struct bpf_sock_addr *ctx)
{
	return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 &&
	       ctx->user_ip6[2] == bpf_htonl(0xffff);
}

SEC("cgroup/connect6")
int hm_ns_connect6(struct bpf_sock_addr *ctx)
{
	__u32 ip, port = ctx->user_port;
	int verdict;

	if (ctx->protocol != IPPROTO_TCP || !v4_mapped(ctx))
		return SYS_PROCEED;
	ip = ctx->user_ip6[3];
	verdict = steer(ctx->sk, &ip, &port);
	ctx->user_ip6[3] = ip;
	ctx->user_port = port;
	return verdict;
}

SEC("cgroup/getpeername6")
int hm_ns_getpeername6(struct bpf_sock_addr *ctx)
{
	__u32 ip, port = ctx->user_port;

	if (!v4_mapped(ctx))
		return SYS_PROCEED;
	ip = ctx->user_ip6[3];
	unsteer(ctx->sk, &ip, &port);
	ctx->user_ip6[3] = ip;
	ctx->user_port = port;
	return SYS_PROCEED;
}

/* The connection as the proxy will see it: the pod's end is the peer. remote_port is the
 * network-order port in the high half of a u32 on little-endian hosts; local_port host order. */
static __always_inline void key_of(struct bpf_sock_ops *skops, struct hm_node_src_key *key)
{
	key->saddr = skops->local_ip4;
	key->daddr = skops->remote_ip4;
	key->sport = bpf_htons((__u16)skops->local_port);
	key->dport = bpf_htons((__u16)bpf_ntohl(skops->remote_port));
}

/* Write-once per 4-tuple: an entry already holding another cgroup means two sockets claimed
 * the same connection, so neither identity can be believed; cgroup id 0 makes the proxy refuse. */
static __always_inline void record(struct hm_node_src_key *key, struct hm_node_src *state,
				   struct hm_nodesteer_stats *st)
{
	struct hm_node_src poisoned = {};
	struct hm_node_src *old;

	if (bpf_map_update_elem(&hm_node_src, key, state, BPF_NOEXIST) == 0) {
		if (st)
			st->established++;
		return;
	}
	old = bpf_map_lookup_elem(&hm_node_src, key);
	if (old && old->cgroup_id == state->cgroup_id) {
		*old = *state;
		if (st)
			st->established++;
		return;
	}
	poisoned.orig_daddr = state->orig_daddr;
	poisoned.orig_dport = state->orig_dport;
	if (bpf_map_update_elem(&hm_node_src, key, &poisoned, BPF_ANY) != 0) {
		if (st)
			st->insert_failed++;
	} else if (st) {
		st->conflicts++;
	}
}

static __always_inline void on_established(struct bpf_sock_ops *skops, struct hm_node_src *state)
{
	struct hm_nodesteer_stats *st = stats_slot();
	struct hm_node_src_key key = {};

	if (skops->remote_ip4 != proxy_ip4 || bpf_htons((__u16)bpf_ntohl(skops->remote_port)) != proxy_port)
		return; /* connect4 steered it, something else changed the destination since */
	key_of(skops, &key);
	record(&key, state, st);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* Delete only our own entry: the proxy may have taken it already and, in theory, another
 * connection with this 4-tuple may have recorded its own since. */
static __always_inline void on_close(struct bpf_sock_ops *skops, struct hm_node_src *state)
{
	struct hm_nodesteer_stats *st;
	struct hm_node_src_key key = {};
	struct hm_node_src *entry;

	key_of(skops, &key);
	entry = bpf_map_lookup_elem(&hm_node_src, &key);
	if (!entry || entry->cgroup_id != state->cgroup_id)
		return;
	if (bpf_map_delete_elem(&hm_node_src, &key) == 0) {
		st = stats_slot();
		if (st)
			st->closed++;
	}
}

SEC("sockops")
int hm_ns_sockops(struct bpf_sock_ops *skops)
{
	struct hm_node_src *state;
	struct bpf_sock *sk;

	/* AF_INET6 too: a v4-mapped connection (connect6 steered it) has its IPv4 addresses in
	 * the same fields; only sockets with steer_state are ever looked at. */
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    !(skops->op == BPF_SOCK_OPS_STATE_CB && skops->args[1] == BPF_TCP_CLOSE))
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	state = bpf_sk_storage_get(&steer_state, sk, 0, 0);
	if (!state)
		return 1; /* not a steered socket */
	if (skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		on_established(skops, state);
	else
		on_close(skops, state);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
