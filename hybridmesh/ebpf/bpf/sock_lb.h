/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sock_lb.h — the map layouts of sock_lb.bpf.c, defined once.
 *
 * The kernel program includes this file; the Python loader (hybridmesh/ebpf/sock_lb.py) mirrors
 * each struct as a ctypes Structure, and maps.Map checks that mirror against the BTF the
 * compiler emitted for these very definitions, so the two cannot drift apart silently.
 *
 * Addresses and ports are kept in network byte order, exactly as struct bpf_sock_addr hands
 * them over, so the datapath never converts.
 */
#ifndef HM_SOCK_LB_H
#define HM_SOCK_LB_H

#define HM_LB_MAX_SERVICES 4096   /* service ids are 1..HM_LB_MAX_SERVICES-1; 0 is never used */
#define HM_LB_MAX_BACKENDS 65536  /* backend slots, all services together */
#define HM_LB_MAX_REVNAT 65536    /* connected sockets remembered for getpeername */

/* lb_protocols bits (a const volatile global: which socket protocols get balanced) */
#define HM_LB_TCP 1
#define HM_LB_UDP 2

/* services: (VIP, port, protocol) -> service */
struct hm_svc_key {
	__be32 vip;
	__be16 port;
	__u8 proto;   /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct hm_svc {
	__u32 id;     /* index into stats, first half of every backend key */
	__u32 count;  /* backends in slots 0..count-1; 0 refuses connect */
};

/* backends: (service id, slot) -> backend address */
struct hm_backend_key {
	__u32 svc_id;
	__u32 slot;
};

struct hm_backend {
	__be32 ip;
	__be16 port;
	__u16 pad;
};

/* revnat: socket cookie -> what connect asked for and where it was sent */
struct hm_revnat {
	__be32 vip;
	__be32 backend_ip;
	__be16 vport;
	__be16 backend_port;
};

/* stats: per-CPU, indexed by service id */
struct hm_svc_stats {
	__u64 connects;    /* connects translated to a backend */
	__u64 no_backend;  /* connects refused because the service had no backend */
};

#endif /* HM_SOCK_LB_H */
