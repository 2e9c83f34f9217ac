// SPDX-License-Identifier: GPL-2.0
/*
 * sock_lb.bpf.c — socket-level service load balancing (the `kernel` placement's L4 LB).
 *
 * cgroup/connect4 runs inside connect(2) for every socket of a process in the attached cgroup,
 * before any packet exists. When the destination is a service VIP:port we pick one backend at
 * random and rewrite the socket's destination: the connection is made straight to the backend,
 * so there is no per-packet NAT and no conntrack entry (Cilium's "socket LB").
 *
 * cgroup/getpeername4 undoes the rewrite for the application: the socket cookie keys what
 * connect4 recorded, so getpeername(2) still reports the VIP the application asked for.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "sock_lb.h"

#define SYS_REJECT 0
#define SYS_PROCEED 1
#define ECONNREFUSED 111 /* errno values are macros, so vmlinux.h cannot carry them */

/* Which protocols are balanced (HM_LB_TCP | HM_LB_UDP). Set by the loader before load; the
 * verifier sees a constant and prunes the branch for the protocols left out. */
const volatile __u8 lb_protocols = HM_LB_TCP;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HM_LB_MAX_SERVICES);
	__type(key, struct hm_svc_key);
	__type(value, struct hm_svc);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HM_LB_MAX_BACKENDS);
	__type(key, struct hm_backend_key);
	__type(value, struct hm_backend);
} backends SEC(".maps");

/* LRU: entries of closed sockets are never deleted explicitly; cookies are never reused
 * within a boot, so a stale entry can only be evicted, never misread. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HM_LB_MAX_REVNAT);
	__type(key, __u64);
	__type(value, struct hm_revnat);
} revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HM_LB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct hm_svc_stats);
} stats SEC(".maps");

static __always_inline bool protocol_balanced(__u32 proto)
{
	if (proto == IPPROTO_TCP)
		return lb_protocols & HM_LB_TCP;
	if (proto == IPPROTO_UDP)
		return lb_protocols & HM_LB_UDP;
	return false;
}

static __always_inline struct hm_svc_stats *stats_of(__u32 svc_id)
{
	return bpf_map_lookup_elem(&stats, &svc_id);
}

/* Slot `count` of the random pick may vanish while userspace shrinks a service (it writes the
 * new count before deleting surplus slots); slot 0 exists whenever count > 0. */
static __always_inline struct hm_backend *pick_backend(const struct hm_svc *svc)
{
	struct hm_backend_key key = {
		.svc_id = svc->id,
		.slot = bpf_get_prandom_u32() % svc->count,
	};
	struct hm_backend *backend = bpf_map_lookup_elem(&backends, &key);

	if (backend)
		return backend;
	key.slot = 0;
	return bpf_map_lookup_elem(&backends, &key);
}

/* The hook's return value only says allow/deny (deny is EPERM); bpf_set_retval (5.18+) picks
 * the errno connect(2) returns, so an empty service looks like a closed port: ECONNREFUSED. */
static __always_inline int refuse(struct hm_svc_stats *st)
{
	if (st)
		st->no_backend++;
	bpf_set_retval(-ECONNREFUSED);
	return SYS_REJECT;
}

SEC("cgroup/connect4")
int hm_connect4(struct bpf_sock_addr *ctx)
{
	struct hm_svc_key key = {
		.vip = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
	};
	struct hm_revnat rn = {};
	struct hm_backend *backend;
	struct hm_svc_stats *st;
	struct hm_svc *svc;
	__u64 cookie;

	if (!protocol_balanced(ctx->protocol))
		return SYS_PROCEED;
	svc = bpf_map_lookup_elem(&services, &key);
	if (!svc)
		return SYS_PROCEED;
	st = stats_of(svc->id);
	if (svc->count == 0)
		return refuse(st);
	backend = pick_backend(svc);
	if (!backend)
		return refuse(st);

	rn.vip = key.vip;
	rn.vport = key.port;
	rn.backend_ip = backend->ip;
	rn.backend_port = backend->port;
	ctx->user_ip4 = backend->ip;
	ctx->user_port = backend->port;
	/* A full revnat map costs only the getpeername translation, never the connection. */
	cookie = bpf_get_socket_cookie(ctx);
	bpf_map_update_elem(&revnat, &cookie, &rn, BPF_ANY);
	if (st)
		st->connects++;
	return SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int hm_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct hm_revnat *rn = bpf_map_lookup_elem(&revnat, &cookie);

	/* Only translate the peer connect4 chose: a UDP socket may since have been reconnected. */
	if (rn && rn->backend_ip == ctx->user_ip4 && rn->backend_port == (__u16)ctx->user_port) {
		ctx->user_ip4 = rn->vip;
		ctx->user_port = rn->vport;
	}
	return SYS_PROCEED; /* getpeername hooks must return 1 */
}

char LICENSE[] SEC("license") = "GPL";
