// SPDX-License-Identifier: GPL-2.0
/*
 * capture.bpf.c — traffic capture for the `sidecar+ebpf` placement: no iptables in the pod.
 *
 * Outbound (cgroup hooks on the pod's cgroup):
 *   cgroup/connect4   a TCP connect by anything but the proxy, to anything but loopback, is
 *                     rewritten to 127.0.0.1:<outbound_port>; the destination the app asked
 *                     for is kept in the socket's own storage (peer_by_sock: the local port is
 *                     not chosen yet, and the socket may outlive the proxy's side).
 *   sockops           at TCP_CONNECT_CB the local port exists: the destination is copied to a
 *                     key the proxy's accepted socket can name — its peer address, plus the
 *                     netns (orig_by_addr).
 *   cgroup/connect6   the same for an AF_INET6 socket dialling a v4-mapped address
 *                     (::ffff:a.b.c.d: the dual-stack default of Java, Node and Go), sent to
 *                     ::ffff:127.0.0.1:<outbound_port> — an IPv4 connection the proxy accepts
 *                     like any other. Native IPv6 destinations are out of scope and left alone:
 *                     the lab's pods have IPv4 addresses only.
 *   cgroup/getsockopt getsockopt(SOL_IP, SO_ORIGINAL_DST) on a socket accepted on the outbound
 *                     port is answered from orig_by_addr, so the proxy's iptables-era code
 *                     works unchanged (Merbridge's approach); a dual-stack proxy (listening on
 *                     ::) asking getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) on a v4-mapped
 *                     connection gets the v4-mapped sockaddr_in6 netfilter would give.
 *   cgroup/getpeername4, cgroup/getpeername6 (v4-mapped)
 *                     a captured app socket reports the address it dialled, not
 *                     127.0.0.1:<outbound_port>, as under iptables REDIRECT (NAT is invisible
 *                     to the socket): apps log it, clients check it (Go RemoteAddr, Java's
 *                     getInetAddress, TLS pinning by IP). Answered from peer_by_sock, never
 *                     from orig_by_addr: that entry goes when the proxy's side closes, and a
 *                     proxy that closes first (Connection: close, a server that hung up)
 *                     leaves the app's socket in CLOSE_WAIT, where getpeername still answers.
 *                     Socket storage lives exactly as long as the app's socket. Only a socket
 *                     connect captured has it: the proxy's sockets, loopback connections
 *                     (even to 127.0.0.1:<outbound_port> itself) keep their real peer.
 *   An orig_by_addr entry lives until the proxy's accepted socket closes, once it was answered
 *   (sockops state callback): a busy pod never has live entries LRU-evicted by dead ones.
 *   Entries never answered (the proxy never accepted) are left to the LRU.
 * Inbound (sk_lookup on the pod's netns):
 *   a TCP SYN to the pod IP, on any port but the proxy's own, from anywhere but the pod itself,
 *   is handed to the proxy's inbound listener (a socket in `listeners`, keyed by pod IP). The
 *   connection keeps its local address, so the proxy learns the app port from getsockname().
 *   With no listener (the proxy died) the SYN is dropped: capture fails closed, as a REDIRECT
 *   to a closed port does. A restarted proxy's new listener joins `listeners` the moment it
 *   listens (sockops TCP_LISTEN_CB on inbound_port, pod IP found by netns in netns_pods): no
 *   wait for the agent's next sync.
 *
 * The proxy is recognised three ways, any one suffices: its cgroup (the pod's `proxy` leaf,
 * in proxy_cgroups), its uid (proxy_uid) or its socket mark (proxy_mark). A proxy running as
 * root in a cgroup we were not told about still marks its sockets.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "capture.h"

#define SYS_PROCEED 1
#define SOL_IP 0
#define SOL_IPV6 41
#define SO_ORIGINAL_DST 80 /* IP6T_SO_ORIGINAL_DST has the same number */
#define AF_INET 2
#define AF_INET6 10

/* struct sockaddr_in as SO_ORIGINAL_DST returns it (vmlinux.h's copy names its padding
 * differently on every kernel). */
struct hm_sockaddr_in {
	__u16 family;
	__be16 port;
	__be32 addr;
	__u64 zero;
};

/* struct sockaddr_in6, for IP6T_SO_ORIGINAL_DST */
struct hm_sockaddr_in6 {
	__u16 family;
	__be16 port;
	__be32 flowinfo;
	__be32 addr[4];
	__u32 scope_id;
};

const volatile __u16 outbound_port = 15001;
const volatile __u16 inbound_port = 15006;
const volatile __u32 proxy_uid = 1337;
const volatile __u32 proxy_mark = 0x539;
const volatile __u16 excluded_ports[HM_CAP_EXCLUDED_PORTS] = {15001, 15006, 15008, 15020, 15021};

/* Per captured socket, from connect to close: dies with the socket, so nothing to evict or
 * leak, and getpeername answers for the socket's whole life. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct hm_cap_dst);
} peer_by_sock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HM_CAP_MAX_CONNS);
	__type(key, struct hm_cap_addr);
	__type(value, struct hm_cap_dst);
} orig_by_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HM_CAP_MAX_PODS);
	__type(key, __u64);
	__type(value, __u8);
} proxy_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HM_CAP_MAX_PODS);
	__type(key, __be32);
	__type(value, struct hm_cap_pod);
} pods SEC(".maps");

/* netns inode -> pod IP: where a listener that appears on inbound_port belongs */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HM_CAP_MAX_PODS);
	__type(key, __u32);
	__type(value, __be32);
} netns_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, HM_CAP_MAX_PODS);
	__type(key, __be32);
	__type(value, __u64);
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HM_CAP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &which);

	if (n)
		*n += 1;
}

static __always_inline bool loopback(__be32 ip)
{
	return (bpf_ntohl(ip) >> 24) == 127;
}

static __always_inline bool is_proxy(struct bpf_sock_addr *ctx)
{
	__u64 cgroup = bpf_get_current_cgroup_id();
	struct bpf_sock *sk = ctx->sk;

	if (bpf_map_lookup_elem(&proxy_cgroups, &cgroup))
		return true;
	if ((__u32)bpf_get_current_uid_gid() == proxy_uid)
		return true;
	return sk && sk->mark == proxy_mark;
}

/* Remember where the app meant to go (in the socket's storage: no local port yet) and whether
 * to send it to the proxy. False: leave the connect alone; -1: refuse it. */
static __always_inline int capture(struct bpf_sock_addr *ctx, __be32 ip, __u32 port)
{
	struct hm_cap_dst *dst;

	if (ctx->protocol != IPPROTO_TCP || loopback(ip) || !ctx->sk)
		return 0;
	if (is_proxy(ctx)) {
		count(HM_CAP_STAT_PROXY);
		return 0;
	}
	dst = bpf_sk_storage_get(&peer_by_sock, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	/* No room to remember the destination means the proxy could not route it: refuse. */
	if (!dst)
		return -1;
	dst->ip = ip;
	dst->port = (__u16)port; /* a socket may connect again after a failed connect */
	dst->answered = 0;
	count(HM_CAP_STAT_REDIRECTED);
	return 1;
}

/* The destination a captured socket dialled, if this socket was captured and still points at
 * the proxy (ip, port: the peer getpeername is about to report, network order). */
static __always_inline struct hm_cap_dst *dialled(struct bpf_sock *sk, __be32 ip, __u32 port)
{
	if (!sk || ip != bpf_htonl(0x7f000001) || (__u16)port != bpf_htons(outbound_port))
		return NULL;
	return bpf_sk_storage_get(&peer_by_sock, sk, 0, 0);
}

SEC("cgroup/connect4")
int hm_cap_connect4(struct bpf_sock_addr *ctx)
{
	int captured = capture(ctx, ctx->user_ip4, ctx->user_port);

	if (captured < 0)
		return 0;
	if (captured) {
		ctx->user_ip4 = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons(outbound_port);
	}
	return SYS_PROCEED;
}

static __always_inline bool v4_mapped(struct bpf_sock_addr *ctx)
{
	return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 &&
	       ctx->user_ip6[2] == bpf_htonl(0xffff);
}

SEC("cgroup/connect6")
int hm_cap_connect6(struct bpf_sock_addr *ctx)
{
	int captured;

	if (!v4_mapped(ctx))
		return SYS_PROCEED; /* native IPv6: out of scope, pods are IPv4-only */
	captured = capture(ctx, ctx->user_ip6[3], ctx->user_port);
	if (captured < 0)
		return 0;
	if (captured) {
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons(outbound_port);
	}
	return SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int hm_cap_getpeername4(struct bpf_sock_addr *ctx)
{
	struct hm_cap_dst *dst = dialled(ctx->sk, ctx->user_ip4, ctx->user_port);

	if (dst) {
		ctx->user_ip4 = dst->ip;
		ctx->user_port = dst->port;
	}
	return SYS_PROCEED; /* getpeername hooks must return 1 */
}

SEC("cgroup/getpeername6")
int hm_cap_getpeername6(struct bpf_sock_addr *ctx)
{
	struct hm_cap_dst *dst;

	if (!v4_mapped(ctx))
		return SYS_PROCEED;
	dst = dialled(ctx->sk, ctx->user_ip6[3], ctx->user_port);
	if (dst) {
		ctx->user_ip6[3] = dst->ip;
		ctx->user_port = dst->port;
	}
	return SYS_PROCEED;
}

/* At TCP_CONNECT_CB the local port exists: copy the destination to the key the proxy's
 * accepted socket can name. AF_INET6 sockets count too: a v4-mapped one has its IPv4
 * addresses in the same fields, and only captured sockets have peer_by_sock storage. */
static __always_inline void on_connect(struct bpf_sock_ops *skops)
{
	struct hm_cap_addr addr = {};
	struct bpf_sock *sk = skops->sk;
	struct hm_cap_dst *dst;

	if (!sk)
		return;
	dst = bpf_sk_storage_get(&peer_by_sock, sk, 0, 0);
	if (!dst)
		return;
	addr.netns = bpf_get_netns_cookie(skops);
	addr.ip = skops->local_ip4;
	addr.port = bpf_htons((__u16)skops->local_port);
	bpf_map_update_elem(&orig_by_addr, &addr, dst, BPF_ANY);
}

/* The proxy's side of a captured connection (accepted on outbound_port) closed: the original
 * destination it was answered is not needed any more. An entry not answered yet belongs to a
 * newer connection that reuses the app's port (tcp_tw_reuse on loopback): it stays. */
static __always_inline void on_proxy_close(struct bpf_sock_ops *skops)
{
	struct hm_cap_addr addr = {};
	struct hm_cap_dst *dst;

	addr.netns = bpf_get_netns_cookie(skops);
	addr.ip = skops->remote_ip4;
	addr.port = bpf_htons((__u16)bpf_ntohl(skops->remote_port));
	dst = bpf_map_lookup_elem(&orig_by_addr, &addr);
	if (dst && dst->answered)
		bpf_map_delete_elem(&orig_by_addr, &addr);
}

/* A listener on inbound_port in a captured pod's netns is its proxy's (the port is excluded
 * from capture and reserved for it, as take_listener assumes too): steer to it at once. */
static __always_inline void on_listen(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct tcp_sock *tp;
	__be32 *pod_ip;
	__u32 inum;

	if (!sk)
		return;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	inum = tp->inet_conn.icsk_inet.sk.__sk_common.skc_net.net->ns.inum;
	pod_ip = bpf_map_lookup_elem(&netns_pods, &inum);
	if (pod_ip)
		bpf_sock_hash_update(skops, &listeners, pod_ip, BPF_ANY);
}

SEC("sockops")
int hm_cap_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op, family = skops->family, local_port = skops->local_port;

	if (family != AF_INET && family != AF_INET6)
		return 1;
	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		on_connect(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if (local_port == outbound_port)
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						  BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (local_port == outbound_port && skops->args[1] == BPF_TCP_CLOSE)
			on_proxy_close(skops);
		break;
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		if (local_port == inbound_port)
			on_listen(skops);
		break;
	}
	return 1;
}

/* Fill the caller's buffer as netfilter would: sockaddr_in for SOL_IP, the v4-mapped
 * sockaddr_in6 for SOL_IPV6. False when the buffer is too small (the caller keeps its error). */
static __always_inline bool answer(struct bpf_sockopt *ctx, struct hm_cap_dst *dst, bool v6)
{
	struct hm_sockaddr_in6 *out6 = ctx->optval;
	struct hm_sockaddr_in *out = ctx->optval;

	if (v6) {
		if ((void *)(out6 + 1) > ctx->optval_end)
			return false;
		out6->family = AF_INET6;
		out6->port = dst->port;
		out6->flowinfo = 0;
		out6->addr[0] = 0;
		out6->addr[1] = 0;
		out6->addr[2] = bpf_htonl(0xffff);
		out6->addr[3] = dst->ip;
		out6->scope_id = 0;
		ctx->optlen = sizeof(*out6);
		return true;
	}
	if ((void *)(out + 1) > ctx->optval_end)
		return false;
	out->family = AF_INET;
	out->port = dst->port;
	out->addr = dst->ip;
	out->zero = 0;
	ctx->optlen = sizeof(*out);
	return true;
}

SEC("cgroup/getsockopt")
int hm_cap_getsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct hm_cap_addr addr = {};
	struct hm_cap_dst *dst;
	bool v6;

	if (ctx->optname != SO_ORIGINAL_DST || !sk)
		return SYS_PROCEED;
	v6 = ctx->level == SOL_IPV6;
	if (!v6 && ctx->level != SOL_IP)
		return SYS_PROCEED;
	if (v6 && sk->family != AF_INET6)
		return SYS_PROCEED;
	if (sk->src_port != outbound_port)
		return SYS_PROCEED;
	addr.netns = bpf_get_netns_cookie(ctx);
	addr.ip = sk->dst_ip4; /* the IPv4 peer, for a v4-mapped AF_INET6 socket too */
	addr.port = (__u16)sk->dst_port;
	dst = bpf_map_lookup_elem(&orig_by_addr, &addr);
	if (!dst) {
		count(HM_CAP_STAT_UNKNOWN);
		return SYS_PROCEED;
	}
	if (!answer(ctx, dst, v6))
		return SYS_PROCEED; /* the caller's buffer is too small: leave its error */
	dst->answered = 1;
	ctx->retval = 0;
	count(HM_CAP_STAT_ANSWERED);
	return SYS_PROCEED;
}

static __always_inline bool excluded(__u32 port)
{
	for (int i = 0; i < HM_CAP_EXCLUDED_PORTS; i++)
		if (excluded_ports[i] && excluded_ports[i] == port)
			return true;
	return false;
}

SEC("sk_lookup")
int hm_cap_lookup(struct bpf_sk_lookup *ctx)
{
	__be32 local = ctx->local_ip4;
	struct hm_cap_pod *pod;
	struct bpf_sock *sk;
	long err;

	if (ctx->family != AF_INET || ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	pod = bpf_map_lookup_elem(&pods, &local);
	if (!pod || excluded(ctx->local_port))
		return SK_PASS;
	/* From the pod itself (the proxy's inbound leg dials <pod IP>:<port>) or loopback: iptables
	 * never captured these either, PREROUTING does not see locally generated traffic. */
	if (ctx->remote_ip4 == local || loopback(ctx->remote_ip4))
		return SK_PASS;
	sk = bpf_map_lookup_elem(&listeners, &local);
	if (!sk) {
		__sync_fetch_and_add(&pod->refused, 1);
		return SK_DROP;
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		__sync_fetch_and_add(&pod->refused, 1);
		return SK_DROP;
	}
	__sync_fetch_and_add(&pod->steered, 1);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
