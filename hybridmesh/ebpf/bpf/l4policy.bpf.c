// SPDX-License-Identifier: GPL-2.0
/*
 * l4policy.bpf.c — identity-based L4 policy on a pod's cgroup (the `kernel` placement's authz).
 *
 * cgroup_skb/ingress runs for every packet delivered to a socket of the attached cgroup, with
 * the skb starting at the IP header. Only inbound TCP connections are judged:
 *
 *   SYN (no ACK)          source identity from the ipcache (LPM; unknown -> WORLD), destination
 *                         identity likewise, then the policy map with wildcard fallbacks; the
 *                         verdict is cached per 5-tuple with the policy epoch it was made under.
 *   any other packet      the flow's cached verdict while the epoch is unchanged (one array and
 *                         one hash lookup); recomputed when userspace bumped hm_policy_epoch, so
 *                         a policy change also applies to established connections.
 *   no cached flow        a reply to this pod's own connect() passes (its socket carries the
 *                         `outbound` mark that hm_l4_egress set when its SYN left); anything
 *                         else — an inbound connection whose verdict the LRU evicted, or one
 *                         accepted before the attachment — is judged by the policy like a SYN,
 *                         so a policy change reaches it too (no fail-open).
 *
 * hm_l4_egress (cgroup_skb/egress, same cgroups) only marks a socket whose SYN leaves: socket
 * storage, so the mark lives exactly as long as the socket (no table to evict or clean up).
 * An outbound connection opened before the attachment carries no mark and is judged as if
 * inbound; kernel-placement pods start only after their datapaths attached, so they have none.
 *
 * IPv6: identities, policies and pod addresses are IPv4 only, so an IPv6 path into a pod (the
 * veth's link-local address, reachable from every pod on the bridge) would bypass the policy.
 * Enforced pods therefore accept IPv6 only from ::1 (and ICMPv6); the rest is dropped and
 * counted (dropped_ipv6), without an event (events carry IPv4 addresses).
 *
 * A drop writes an event to the ring buffer, at most one per flow per event_interval_ns, so a
 * SYN flood or a stalled connection's retransmissions cannot flood the ring.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "l4policy.h"
#include "policy_epoch.h" /* shared with sockmap.bpf.c */

#define PASS 1
#define DROP 0
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define NEXTHDR_ICMPV6 58
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

/* Minimum gap between two drop events of one flow. Set by the loader before load. */
const volatile __u64 event_interval_ns = 5000000000ULL;

/* Never read: it puts struct hm_l4_event into the object's BTF (events travel through the ring
 * buffer, which has no value type), so the loader can check its mirror of the layout. */
const volatile struct hm_l4_event event_layout = {};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HM_L4_MAX_IPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hm_l4_ip_key);
	__type(value, struct hm_l4_identity);
} ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HM_L4_MAX_RULES);
	__type(key, struct hm_l4_key);
	__type(value, struct hm_l4_verdict);
} policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HM_L4_MAX_FLOWS);
	__type(key, struct hm_l4_flow_key);
	__type(value, struct hm_l4_flow);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hm_l4_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, HM_L4_RING_BYTES);
} events SEC(".maps");


/* per socket: 1 once this pod's own connect() sent the SYN (see hm_l4_egress) */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} outbound SEC(".maps");

struct packet {
	struct hm_l4_flow_key flow;
	__u8 flags;
};

static __always_inline struct hm_l4_stats *stats_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&stats, &zero);
}


/* Only from the pod itself (::1), or ICMPv6 (neighbour discovery, errors). */
static __always_inline int ipv6_allowed(struct __sk_buff *skb)
{
	struct ipv6hdr ip6;

	if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
		return 0;
	if (ip6.nexthdr == NEXTHDR_ICMPV6)
		return 1;
	return ip6.saddr.in6_u.u6_addr32[0] == 0 && ip6.saddr.in6_u.u6_addr32[1] == 0 &&
	       ip6.saddr.in6_u.u6_addr32[2] == 0 && ip6.saddr.in6_u.u6_addr32[3] == bpf_htonl(1);
}

/* IPv4/TCP only; 0 when the packet is anything else (it passes untouched). */
static __always_inline int parse(struct __sk_buff *skb, struct packet *pkt)
{
	struct iphdr ip;
	struct tcphdr tcp;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 0;
	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
		return 0;
	if (ip.protocol != IPPROTO_TCP || ip.ihl < 5)
		return 0;
	if (bpf_skb_load_bytes(skb, ip.ihl * 4, &tcp, sizeof(tcp)) < 0)
		return 0;
	pkt->flow.saddr = ip.saddr;
	pkt->flow.daddr = ip.daddr;
	pkt->flow.sport = bpf_ntohs(tcp.source);
	pkt->flow.dport = bpf_ntohs(tcp.dest);
	pkt->flags = ((__u8 *)&tcp)[13];
	return 1;
}

static __always_inline __u32 identity_of(__be32 ip)
{
	struct hm_l4_ip_key key = {.prefixlen = 32, .ip = ip};
	struct hm_l4_identity *id = bpf_map_lookup_elem(&ipcache, &key);

	return id ? id->id : HM_L4_ID_WORLD;
}

/* (src, dst, port) -> (src, dst, any port) -> (any src, dst, any port) -> allow. */
static __always_inline struct hm_l4_verdict decide(__u32 src, __u32 dst, __u16 port)
{
	struct hm_l4_key key = {.src = src, .dst = dst, .port = port, .proto = IPPROTO_TCP};
	struct hm_l4_verdict allow = {.verdict = HM_L4_ALLOW};
	struct hm_l4_verdict *v;

	v = bpf_map_lookup_elem(&policy, &key);
	if (v)
		return *v;
	key.port = HM_L4_PORT_ANY;
	v = bpf_map_lookup_elem(&policy, &key);
	if (v)
		return *v;
	key.src = HM_L4_ID_ANY;
	v = bpf_map_lookup_elem(&policy, &key);
	return v ? *v : allow;
}

static __always_inline void emit(const struct packet *pkt, struct hm_l4_flow *flow, __u8 reason,
				 struct hm_l4_stats *st)
{
	__u64 now = bpf_ktime_get_ns();
	struct hm_l4_event *ev;

	if (flow->last_event_ns && now - flow->last_event_ns < event_interval_ns)
		return;
	flow->last_event_ns = now;
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		if (st)
			st->events_lost++;
		return;
	}
	ev->ts_ns = now;
	ev->saddr = pkt->flow.saddr;
	ev->daddr = pkt->flow.daddr;
	ev->sport = pkt->flow.sport;
	ev->dport = pkt->flow.dport;
	ev->policy = flow->v.policy;
	ev->src_id = flow->src_id;
	ev->dst_id = flow->dst_id;
	ev->direction = 0;
	ev->reason = reason;
	ev->flags = flow->v.flags;
	ev->pad = 0;
	bpf_ringbuf_submit(ev, 0);
	if (st)
		st->events++;
}

/* Judge a new connection, or re-judge one whose verdict predates the current epoch. */
static __always_inline int evaluate(const struct packet *pkt, struct hm_l4_flow *cached,
				    __u64 epoch, int syn, struct hm_l4_stats *st)
{
	__u32 src = identity_of(pkt->flow.saddr);
	__u32 dst = identity_of(pkt->flow.daddr);
	struct hm_l4_flow fresh = {};
	struct hm_l4_flow *flow;

	if (dst == HM_L4_ID_WORLD) /* loopback or an address no policy can select */
		return PASS;
	fresh.epoch = epoch;
	fresh.src_id = src;
	fresh.dst_id = dst;
	fresh.v = decide(src, dst, pkt->flow.dport);
	if (cached) { /* keep the rate limit of the flow's earlier drops */
		fresh.last_event_ns = cached->last_event_ns;
		if (st)
			st->reevaluated++;
	}
	bpf_map_update_elem(&flows, &pkt->flow, &fresh, BPF_ANY);
	flow = bpf_map_lookup_elem(&flows, &pkt->flow);
	if (fresh.v.verdict != HM_L4_DROP) {
		if (st)
			syn ? st->allowed_new++ : st->passed++;
		return PASS;
	}
	if (st)
		syn ? st->dropped_new++ : st->dropped_established++;
	emit(pkt, flow ? flow : &fresh, syn ? HM_L4_NEW : HM_L4_ESTABLISHED, st);
	return DROP;
}

/* The packet belongs to a socket this pod connected (marked by hm_l4_egress). No socket, or
 * no full one (time-wait), is nothing a verdict could protect: treated as a reply. */
static __always_inline bool replies_to_our_connect(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return true;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return true;
	return bpf_sk_storage_get(&outbound, sk, 0, 0) != NULL;
}

SEC("cgroup_skb/ingress")
int hm_l4_ingress(struct __sk_buff *skb)
{
	struct hm_l4_stats *st = stats_get();
	struct hm_l4_flow *flow;
	struct packet pkt = {};
	__u64 epoch;
	int syn;

	if (skb->protocol == bpf_htons(ETH_P_IPV6) && !ipv6_allowed(skb)) {
		if (st)
			st->dropped_ipv6++;
		return DROP;
	}
	if (!parse(skb, &pkt))
		return PASS;
	syn = (pkt.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
	epoch = current_epoch();
	flow = bpf_map_lookup_elem(&flows, &pkt.flow);
	if (flow && flow->epoch == epoch) {
		if (flow->v.verdict != HM_L4_DROP) {
			if (st)
				syn ? st->allowed_new++ : st->passed++;
			return PASS;
		}
		if (st)
			syn ? st->dropped_new++ : st->dropped_established++;
		emit(&pkt, flow, syn ? HM_L4_NEW : HM_L4_ESTABLISHED, st);
		return DROP;
	}
	if (!flow && !syn && replies_to_our_connect(skb)) {
		if (st)
			st->untracked++;
		return PASS;
	}
	return evaluate(&pkt, flow, epoch, syn, st);
}

/* A pod socket whose SYN leaves was opened by connect(): mark it, so ingress lets its replies
 * through without a verdict. SYN-ACKs (accepted connections) carry ACK and are not marked. */
SEC("cgroup_skb/egress")
int hm_l4_egress(struct __sk_buff *skb)
{
	struct packet pkt = {};
	struct bpf_sock *sk;

	if (!parse(skb, &pkt) || (pkt.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
		return PASS;
	sk = skb->sk;
	if (sk)
		sk = bpf_sk_fullsock(sk);
	if (sk)
		bpf_sk_storage_get(&outbound, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	return PASS;
}

char LICENSE[] SEC("license") = "GPL";
