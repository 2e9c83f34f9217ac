// SPDX-License-Identifier: GPL-2.0
/*
 * capture.bpf.c — traffic capture for the `sidecar+ebpf` placement: no iptables in the pod.
 *
 * Outbound (cgroup hooks on the pod's cgroup):
 *   cgroup/connect4   a TCP connect by anything but the proxy, to anything but loopback, is
 *                     rewritten to 127.0.0.1:<outbound_port>; the destination the app asked
 *                     for is kept by socket cookie (the local port is not chosen yet).
 *   sockops           at TCP_CONNECT_CB the local port exists: the entry moves to a key the
 *                     proxy's accepted socket can name — its peer address, plus the netns.
 *   cgroup/getsockopt getsockopt(SOL_IP, SO_ORIGINAL_DST) on a socket accepted on the outbound
 *                     port is answered from that map, so the proxy's iptables-era code works
 *                     unchanged (Merbridge's approach).
 * Inbound (sk_lookup on the pod's netns):
 *   a TCP SYN to the pod IP, on any port but the proxy's own, from anywhere but the pod itself,
 *   is handed to the proxy's inbound listener (a socket in `listeners`, keyed by pod IP). The
 *   connection keeps its local address, so the proxy learns the app port from getsockname().
 *   With no listener (the proxy died) the SYN is dropped: capture fails closed, as a REDIRECT
 *   to a closed port does.
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
#define SO_ORIGINAL_DST 80
#define AF_INET 2

/* struct sockaddr_in as SO_ORIGINAL_DST returns it (vmlinux.h's copy names its padding
 * differently on every kernel). */
struct hm_sockaddr_in {
	__u16 family;
	__be16 port;
	__be32 addr;
	__u64 zero;
};

const volatile __u16 outbound_port = 15001;
const volatile __u32 proxy_uid = 1337;
const volatile __u32 proxy_mark = 0x539;
const volatile __u16 excluded_ports[HM_CAP_EXCLUDED_PORTS] = {15001, 15006, 15008, 15020, 15021};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HM_CAP_MAX_CONNS);
	__type(key, __u64);
	__type(value, struct hm_cap_dst);
} orig_by_cookie SEC(".maps");

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

SEC("cgroup/connect4")
int hm_cap_connect4(struct bpf_sock_addr *ctx)
{
	struct hm_cap_dst dst = {.ip = ctx->user_ip4, .port = (__u16)ctx->user_port};
	__u64 cookie;

	if (ctx->protocol != IPPROTO_TCP || loopback(dst.ip))
		return SYS_PROCEED;
	if (is_proxy(ctx)) {
		count(HM_CAP_STAT_PROXY);
		return SYS_PROCEED;
	}
	cookie = bpf_get_socket_cookie(ctx);
	/* No room to remember the destination means the proxy could not route it: refuse. */
	if (bpf_map_update_elem(&orig_by_cookie, &cookie, &dst, BPF_ANY))
		return 0;
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(outbound_port);
	count(HM_CAP_STAT_REDIRECTED);
	return SYS_PROCEED;
}

SEC("sockops")
int hm_cap_sockops(struct bpf_sock_ops *skops)
{
	struct hm_cap_addr addr = {};
	struct hm_cap_dst *dst;
	__u64 cookie;

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB || skops->family != AF_INET)
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	dst = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
	if (!dst)
		return 1;
	addr.netns = bpf_get_netns_cookie(skops);
	addr.ip = skops->local_ip4;
	addr.port = bpf_htons((__u16)skops->local_port);
	bpf_map_update_elem(&orig_by_addr, &addr, dst, BPF_ANY);
	bpf_map_delete_elem(&orig_by_cookie, &cookie);
	return 1;
}

SEC("cgroup/getsockopt")
int hm_cap_getsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct hm_sockaddr_in *out = ctx->optval;
	struct hm_cap_addr addr = {};
	struct hm_cap_dst *dst;

	if (ctx->level != SOL_IP || ctx->optname != SO_ORIGINAL_DST || !sk)
		return SYS_PROCEED;
	if (sk->src_port != outbound_port)
		return SYS_PROCEED;
	addr.netns = bpf_get_netns_cookie(ctx);
	addr.ip = sk->dst_ip4;
	addr.port = (__u16)sk->dst_port;
	dst = bpf_map_lookup_elem(&orig_by_addr, &addr);
	if (!dst) {
		count(HM_CAP_STAT_UNKNOWN);
		return SYS_PROCEED;
	}
	if ((void *)(out + 1) > ctx->optval_end)
		return SYS_PROCEED; /* the caller's buffer is too small: leave its error */
	out->family = AF_INET;
	out->port = dst->port;
	out->addr = dst->ip;
	out->zero = 0;
	ctx->optlen = sizeof(*out);
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
