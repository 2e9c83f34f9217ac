/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sockmap.h — the map layouts of sockmap.bpf.c, defined once.
 *
 * The Python loader (hybridmesh/ebpf/sockmap.py) mirrors each struct as a ctypes Structure and
 * maps.Map checks the mirror against the BTF the compiler emitted for these definitions.
 *
 * Addresses are kept in network byte order (as the kernel hands them over), ports in host byte
 * order: sock_ops and sk_msg present remote_port differently from local_port, so both programs
 * normalise to host order before building a key, and a socket's key and its peer's reversed
 * key are then built from the very same numbers.
 */
#ifndef HM_SOCKMAP_H
#define HM_SOCKMAP_H

#define HM_SM_MAX_SOCKETS 65536  /* sockhash: accelerated sockets on this node */
#define HM_SM_MAX_LOCAL_IPS 4096 /* local pod addresses */

#define HM_SM_AF_INET 2

/* sockhash key: one connected socket, seen from its own side.
 *
 * netns scopes loopback: 127.0.0.1:40000 -> 127.0.0.1:15001 exists once in *every* pod, so a
 * loopback key carries the socket's netns cookie. Pod addresses are unique on a node and the
 * two ends of a pod-to-pod connection sit in different namespaces, so those keys carry 0. */
struct hm_sock_key {
	__u64 netns;       /* netns cookie for loopback keys, else 0 */
	__be32 local_ip4;
	__be32 remote_ip4;
	__u16 local_port;  /* host byte order */
	__u16 remote_port; /* host byte order */
	__u16 family;      /* AF_INET */
	__u16 pad;
};

/* local_ips: pod address -> 1 (what counts as "the other end is on this node") */
struct hm_local_ip {
	__u8 present;
	__u8 pad[3];
};

/* peer_socks: sockhash key -> the socket's kernel address (struct sock *), read only with
 * probe reads (see peer_backlogged in sockmap.bpf.c) */
struct hm_sock_ref {
	__u64 sk;
};

/* per-socket storage */
struct hm_sock_state {
	__u64 epoch;    /* the policy epoch the socket was admitted under */
	__u32 tcp_used;  /* a message of ours already went through TCP: never redirect again */
	__u32 unchecked; /* bytes redirected since the peer's queue was last looked at */
};

/* stats: per-CPU, one entry (key 0) */
struct hm_sockmap_stats {
	__u64 admitted;         /* sockets inserted into the sockhash */
	__u64 not_local;        /* established sockets left alone: an end is not on this node */
	__u64 insert_failed;    /* sockhash full or update refused */
	__u64 redirected_msgs;  /* messages handed socket-to-socket */
	__u64 redirected_bytes;
	__u64 pass_no_peer;     /* peer socket not in the sockhash (or TCP used before): TCP path */
	__u64 pass_epoch;       /* policy changed since admission: normal TCP path */
	__u64 pass_bytes;       /* bytes of every kind of pass */
	__u64 pass_backlog;     /* the peer had too much unread: TCP from then on (flow control) */
};

#endif /* HM_SOCKMAP_H */
