// SPDX-License-Identifier: GPL-2.0
/*
 * sockmap.bpf.c — socket-to-socket acceleration between two ends on this node.
 *
 * hm_sockops runs in the pod cgroups when a TCP connection becomes established. When both ends
 * are on this node (both addresses are local pod IPs, or both loopback: the app<->sidecar hop)
 * the socket goes into sock_hash under its own 4-tuple, with the policy epoch it was admitted
 * under in its socket storage.
 *
 * hm_sk_msg runs for every sendmsg on a socket in sock_hash. It looks the peer up by the
 * reversed 4-tuple and puts the bytes straight onto the peer's receive queue
 * (bpf_msg_redirect_hash with BPF_F_INGRESS): no TCP segment, no IP, no veth, no netfilter.
 *
 * Policy on accelerated connections (what Cilium's sockmap got wrong): redirected bytes never
 * meet a packet hook, so once the shared hm_policy_epoch differs from the socket's admission
 * epoch every message goes back through the TCP stack (SK_PASS), where the cgroup_skb policy
 * sees every packet. Ordering holds: what was redirected is already on the peer's queue, and
 * the peer reads that queue before its TCP receive queue.
 *
 * Byte order within one direction: redirected bytes land on the peer's psock queue, which the
 * peer reads *before* its TCP receive queue. So once a socket sent anything through TCP (its
 * peer was not in the sockhash yet: the client may write before the server's side of the
 * handshake completed) it never redirects again; otherwise a later redirected message could
 * overtake an earlier one still travelling as packets.
 *
 * Bytes carried past TCP are counted per socket in the shared hm_sock_bytes (sock_bytes.h):
 * the sender's `sent` and the peer's `received`, both by sockhash key; flows adds them to the
 * TCP counters when the socket closes.
 *
 * Closed sockets need no callback: the kernel unlinks a socket from every sockmap/sockhash
 * when it closes (sock_map_close), and its socket storage dies with it.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "policy_epoch.h" /* shared with l4policy.bpf.c */
#include "sock_bytes.h"    /* shared with flows.bpf.c */
#include "sockmap.h"

#define SK_PASS_RET 1 /* sockops return value: ignored, 1 by convention */

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, HM_SM_MAX_SOCKETS);
	__type(key, struct hm_sock_key);
	__type(value, __u64); /* 8 bytes: a userspace lookup returns the socket cookie */
} sock_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HM_SM_MAX_LOCAL_IPS);
	__type(key, __be32);
	__type(value, struct hm_local_ip);
} local_ips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct hm_sock_state);
} sock_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hm_sockmap_stats);
} stats SEC(".maps");


static __always_inline struct hm_sockmap_stats *stats_slot(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&stats, &zero);
}

static __always_inline bool is_loopback(__be32 ip)
{
	return (bpf_ntohl(ip) >> 24) == 127;
}

static __always_inline bool is_local_pod(__be32 ip)
{
	return bpf_map_lookup_elem(&local_ips, &ip) != NULL;
}

/* remote_port arrives as the network-order port in the high half of a u32 (on little-endian
 * hosts) in both bpf_sock_ops and sk_msg_md; local_port is host order already. */
static __always_inline __u16 remote_port_host(__u32 raw)
{
	return (__u16)bpf_ntohl(raw);
}

SEC("sockops")
int hm_sockops(struct bpf_sock_ops *skops)
{
	struct hm_sockmap_stats *st;
	struct hm_sock_state *state;
	struct hm_sock_bytes no_bytes = {};
	struct hm_sock_key key = {};
	struct bpf_sock *sk;
	bool loopback;

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return SK_PASS_RET;
	if (skops->family != HM_SM_AF_INET)
		return SK_PASS_RET;
	st = stats_slot();
	loopback = is_loopback(skops->local_ip4) && is_loopback(skops->remote_ip4);
	if (!loopback && !(is_local_pod(skops->local_ip4) && is_local_pod(skops->remote_ip4))) {
		if (st)
			st->not_local++;
		return SK_PASS_RET;
	}
	sk = skops->sk;
	if (!sk)
		return SK_PASS_RET;
	/* the epoch first: a socket in sock_hash always has one for hm_sk_msg to compare */
	state = bpf_sk_storage_get(&sock_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!state) {
		if (st)
			st->insert_failed++;
		return SK_PASS_RET;
	}
	state->epoch = current_epoch();
	state->tcp_used = 0;
	key.netns = loopback ? bpf_get_netns_cookie(skops) : 0;
	key.local_ip4 = skops->local_ip4;
	key.remote_ip4 = skops->remote_ip4;
	key.local_port = (__u16)skops->local_port;
	key.remote_port = remote_port_host(skops->remote_port);
	key.family = HM_SM_AF_INET;
	/* before joining: hm_sk_msg may count for this socket as soon as it is in sock_hash */
	bpf_map_update_elem(&hm_sock_bytes, &key, &no_bytes, BPF_ANY);
	if (bpf_sock_hash_update(skops, &sock_hash, &key, BPF_ANY) != 0) {
		if (st)
			st->insert_failed++;
		return SK_PASS_RET;
	}
	if (st)
		st->admitted++;
	return SK_PASS_RET;
}

static __always_inline int pass(struct hm_sockmap_stats *st, __u32 size, bool epoch_changed)
{
	if (st) {
		if (epoch_changed)
			st->pass_epoch++;
		else
			st->pass_no_peer++;
		st->pass_bytes += size;
	}
	return SK_PASS;
}

/* Add a redirected message to the sender's `sent` and the peer's `received` (both entries
 * were made by hm_sockops when the sockets joined; a missing one is an evicted or closed
 * socket, whose count no one can report any more). */
static __always_inline void count_redirected(const struct hm_sock_key *peer, __u32 size)
{
	struct hm_sock_key self = *peer;
	struct hm_sock_bytes *bytes;

	self.local_ip4 = peer->remote_ip4;
	self.remote_ip4 = peer->local_ip4;
	self.local_port = peer->remote_port;
	self.remote_port = peer->local_port;
	bytes = bpf_map_lookup_elem(&hm_sock_bytes, &self);
	if (bytes)
		__sync_fetch_and_add(&bytes->sent, size);
	bytes = bpf_map_lookup_elem(&hm_sock_bytes, peer);
	if (bytes)
		__sync_fetch_and_add(&bytes->received, size);
}

SEC("sk_msg")
int hm_sk_msg(struct sk_msg_md *msg)
{
	struct hm_sockmap_stats *st = stats_slot();
	struct hm_sock_state *state;
	struct hm_sock_key peer = {};
	struct bpf_sock *sk = msg->sk;
	__u32 size = msg->size;

	if (!sk || msg->family != HM_SM_AF_INET)
		return pass(st, size, false);
	state = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	if (!state || state->epoch != current_epoch())
		return pass(st, size, true);
	if (state->tcp_used)
		return pass(st, size, false);
	/* the peer's own key: our tuple reversed */
	peer.local_ip4 = msg->remote_ip4;
	peer.remote_ip4 = msg->local_ip4;
	peer.local_port = remote_port_host(msg->remote_port);
	peer.remote_port = (__u16)msg->local_port;
	peer.family = HM_SM_AF_INET;
	if (is_loopback(peer.local_ip4))
		peer.netns = bpf_get_netns_cookie(msg);
	if (bpf_msg_redirect_hash(msg, &sock_hash, &peer, BPF_F_INGRESS) != SK_PASS) {
		state->tcp_used = 1; /* no peer (not accelerated, not yet, or gone): TCP for good */
		return pass(st, size, false);
	}
	if (st) {
		st->redirected_msgs++;
		st->redirected_bytes += size;
	}
	count_redirected(&peer, size);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
