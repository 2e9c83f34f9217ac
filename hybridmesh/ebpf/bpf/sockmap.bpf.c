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
 * Flow control (issue #5: ENOMEM on the app's send). A BPF_F_INGRESS redirect queues the bytes
 * on the peer's psock and uncharges them from the sender at once, and the kernel bounds that
 * queue by nothing but the machine's TCP memory (tcp_bpf.c: bpf_tcp_ingress only asks
 * sk_wmem_schedule): a writer faster than its reader — an app streaming through a proxy that
 * forwards cross-node — never blocks, and queues the difference until tcp_mem's hard limit
 * makes the redirect fail with ENOMEM, returned by the app's send. So before redirecting we
 * read how much the peer has not read yet (psock->msg_tot_len, the count FIONREAD reports) and
 * once this message would take it past max(peer's sk_rcvbuf, backlog_floor) the socket goes
 * to TCP for good (the tcp_used rule above keeps the order): TCP's window then holds the
 * writer back as it would without us. A reader that keeps up never gets there. The look is
 * taken once every HM_SM_CHECK_EVERY redirected bytes, so small request/response messages
 * never pay for it.
 *
 * Bytes carried past TCP are counted per socket in the shared hm_sock_bytes (sock_bytes.h):
 * the sender's `sent` and the peer's `received`, both by sockhash key; flows adds them to the
 * TCP counters when the socket closes.
 *
 * Closed sockets: the kernel unlinks a socket from every sockmap/sockhash when it closes
 * (sock_map_close), and its socket storage dies with it; only its peer_socks entry needs the
 * state callback (asked for at admission) to go.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "policy_epoch.h" /* shared with l4policy.bpf.c */
#include "sock_bytes.h"    /* shared with flows.bpf.c */
#include "sockmap.h"

#define SK_PASS_RET 1 /* sockops return value: ignored, 1 by convention */
#define SK_USER_DATA_PTRMASK (~7UL) /* sk_user_data's low bits are flags (NOCOPY|BPF|PSOCK) */

/* Unread bytes a peer may hold before its writer falls back to TCP, whatever its sk_rcvbuf
 * (which never autotunes on this path: no segment arrives). Plain loopback TCP lets a writer
 * run a few MiB ahead (its send buffer plus the reader's receive buffer). */
const volatile __u32 backlog_floor = 4 << 20;
/* The peer's queue is looked at once this many bytes were redirected since the last look (or
 * for any bigger message): request/response traffic never pays for the look, and a stream
 * overshoots the bound by at most this much. */
#define HM_SM_CHECK_EVERY (256 << 10)

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, HM_SM_MAX_SOCKETS);
	__type(key, struct hm_sock_key);
	__type(value, __u64); /* 8 bytes: a userspace lookup returns the socket cookie */
} sock_hash SEC(".maps");

/* sockhash key -> the socket's kernel address, for peer_backlogged (see there). Entries go
 * when their socket closes (hm_sockops' state callback); LRU only as a backstop. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HM_SM_MAX_SOCKETS);
	__type(key, struct hm_sock_key);
	__type(value, struct hm_sock_ref);
} peer_socks SEC(".maps");

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

/* The socket's own sockhash key (the peer builds the same numbers reversed). Every context
 * field is read once, up front: clang otherwise merges the reads of two paths into one
 * offset-added context pointer, which the verifier refuses. */
static __always_inline void own_key(struct bpf_sock_ops *skops, struct hm_sock_key *key)
{
	__u32 local_ip4 = skops->local_ip4, remote_ip4 = skops->remote_ip4;
	__u32 local_port = skops->local_port, remote_port = skops->remote_port;

	key->local_ip4 = local_ip4;
	key->remote_ip4 = remote_ip4;
	key->local_port = (__u16)local_port;
	key->remote_port = remote_port_host(remote_port);
	key->family = HM_SM_AF_INET;
	key->netns = 0;
	if (is_loopback(local_ip4) && is_loopback(remote_ip4))
		key->netns = bpf_get_netns_cookie(skops);
}

/* A closing accelerated socket takes its peer_socks entry with it (its sockhash entry and
 * storage go by themselves). */
static __always_inline void forget_closed(struct bpf_sock_ops *skops)
{
	struct hm_sock_key key = {};

	if (skops->args[1] != BPF_TCP_CLOSE)
		return;
	own_key(skops, &key);
	bpf_map_delete_elem(&peer_socks, &key);
}

/* Remember where the socket lives, for peer_backlogged, and ask for its close. */
static __always_inline void remember(struct bpf_sock_ops *skops, struct bpf_sock *sk,
				     struct hm_sock_key *key)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct hm_sock_ref ref = {};

	if (!tp)
		return;
	ref.sk = (__u64)tp;
	bpf_map_update_elem(&peer_socks, key, &ref, BPF_ANY);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
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

	if (skops->family != HM_SM_AF_INET)
		return SK_PASS_RET;
	if (skops->op == BPF_SOCK_OPS_STATE_CB) {
		forget_closed(skops);
		return SK_PASS_RET;
	}
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
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
	state->unchecked = 0;
	own_key(skops, &key);
	/* before joining: hm_sk_msg may count for this socket as soon as it is in sock_hash */
	bpf_map_update_elem(&hm_sock_bytes, &key, &no_bytes, BPF_ANY);
	remember(skops, sk, &key);
	if (bpf_sock_hash_update(skops, &sock_hash, &key, BPF_ANY) != 0) {
		if (st)
			st->insert_failed++;
		return SK_PASS_RET;
	}
	if (st)
		st->admitted++;
	return SK_PASS_RET;
}

enum hm_pass_why { HM_PASS_NO_PEER, HM_PASS_EPOCH, HM_PASS_BACKLOG };

static __always_inline int pass(struct hm_sockmap_stats *st, __u32 size, enum hm_pass_why why)
{
	if (st) {
		if (why == HM_PASS_EPOCH)
			st->pass_epoch++;
		else if (why == HM_PASS_BACKLOG)
			st->pass_backlog++;
		else
			st->pass_no_peer++;
		st->pass_bytes += size;
	}
	return SK_PASS;
}

/* Would `size` more bytes take the peer's unread psock queue past what it may hold? The peer is
 * found through peer_socks (an sk_msg program may not look a socket up in a sockhash: that
 * takes a reference it has no helper to release); its psock and sk_rcvbuf are read with
 * probe reads, which a socket closed meanwhile turns into a failed read, not a fault. False
 * when the peer is unknown (the redirect then fails by itself) or the kernel keeps no
 * msg_tot_len (before 6.18: no bound, as before this check existed). */
static __always_inline bool peer_backlogged(struct hm_sock_key *peer, __u32 size)
{
	struct hm_sock_ref *ref = bpf_map_lookup_elem(&peer_socks, peer);
	struct sk_psock *psock = NULL;
	unsigned long user_data = 0;
	__u64 limit = backlog_floor;
	struct sock *sk;
	__u32 queued = 0;
	int rcvbuf = 0;

	if (!ref || !bpf_core_field_exists(psock->msg_tot_len))
		return false;
	sk = (struct sock *)ref->sk;
	if (bpf_core_read(&user_data, sizeof(user_data), &sk->sk_user_data) ||
	    bpf_core_read(&rcvbuf, sizeof(rcvbuf), &sk->sk_rcvbuf))
		return false;
	psock = (struct sk_psock *)(user_data & SK_USER_DATA_PTRMASK);
	if (!psock || bpf_core_read(&queued, sizeof(queued), &psock->msg_tot_len))
		return false;
	if (rcvbuf > 0 && (__u64)rcvbuf > limit)
		limit = rcvbuf;
	return (__u64)queued + size > limit;
}

/* peer_backlogged, asked only once HM_SM_CHECK_EVERY bytes went by since the last time. */
static __always_inline bool reader_fell_behind(struct hm_sock_state *state,
					       struct hm_sock_key *peer, __u32 size)
{
	if (state->unchecked + size < HM_SM_CHECK_EVERY) {
		state->unchecked += size;
		return false;
	}
	state->unchecked = 0;
	return peer_backlogged(peer, size);
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
		return pass(st, size, HM_PASS_NO_PEER);
	state = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	if (!state || state->epoch != current_epoch())
		return pass(st, size, HM_PASS_EPOCH);
	if (state->tcp_used)
		return pass(st, size, HM_PASS_NO_PEER);
	/* the peer's own key: our tuple reversed */
	peer.local_ip4 = msg->remote_ip4;
	peer.remote_ip4 = msg->local_ip4;
	peer.local_port = remote_port_host(msg->remote_port);
	peer.remote_port = (__u16)msg->local_port;
	peer.family = HM_SM_AF_INET;
	if (is_loopback(peer.local_ip4))
		peer.netns = bpf_get_netns_cookie(msg);
	if (reader_fell_behind(state, &peer, size)) {
		state->tcp_used = 1; /* TCP's flow control from now on, for good */
		return pass(st, size, HM_PASS_BACKLOG);
	}
	if (bpf_msg_redirect_hash(msg, &sock_hash, &peer, BPF_F_INGRESS) != SK_PASS) {
		state->tcp_used = 1; /* no peer (not accelerated, not yet, or gone): TCP for good */
		return pass(st, size, HM_PASS_NO_PEER);
	}
	if (st) {
		st->redirected_msgs++;
		st->redirected_bytes += size;
	}
	count_redirected(&peer, size);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
