/* SPDX-License-Identifier: Apache-2.0 */
/*
 * capture.h — the map layouts of capture.bpf.c, defined once.
 *
 * The Python loader (hybridmesh/ebpf/capture.py) mirrors each struct with ctypes and
 * maps.Map checks the mirror against this object's BTF. Addresses and ports are in network
 * byte order, as the kernel hands them over, unless a field says otherwise.
 */
#ifndef HM_CAPTURE_H
#define HM_CAPTURE_H

#define HM_CAP_MAX_PODS 1024       /* sidecar+ebpf pods on one node */
#define HM_CAP_MAX_CONNS 65536     /* captured connections remembered for SO_ORIGINAL_DST */
#define HM_CAP_EXCLUDED_PORTS 8    /* inbound ports never steered to the proxy */

/* The original destination of a captured outbound connect: the value of orig_by_addr (for the
 * proxy's SO_ORIGINAL_DST) and of peer_by_sock (the app socket's own storage, for its
 * getpeername; `answered` unused there). */
struct hm_cap_dst {
	__be32 ip;
	__be16 port;
	__u16 answered; /* SO_ORIGINAL_DST was answered: the proxy's close may delete it */
};

/* A captured socket by its local address, which the proxy sees as its accepted socket's peer:
 * loopback addresses repeat in every pod, so the pod's network namespace is part of the key. */
struct hm_cap_addr {
	__u64 netns;   /* bpf_get_netns_cookie */
	__be32 ip;
	__be16 port;
	__u16 pad;
};

/* pods: pod IP -> what sk_lookup needs (presence alone turns inbound capture on). */
struct hm_cap_pod {
	__u64 steered;   /* inbound connections handed to the proxy's listener */
	__u64 refused;   /* inbound connections dropped: the proxy's listener was gone */
};

/* counters: a per-CPU array, indexed by the HM_CAP_STAT_* values. */
enum {
	HM_CAP_STAT_REDIRECTED = 0,  /* outbound connects rewritten to the proxy */
	HM_CAP_STAT_PROXY,           /* connects by the proxy itself, left alone */
	HM_CAP_STAT_ANSWERED,        /* SO_ORIGINAL_DST answers */
	HM_CAP_STAT_UNKNOWN,         /* SO_ORIGINAL_DST asked on 15001 for an unknown peer */
	HM_CAP_STAT_MAX,
};

#endif /* HM_CAPTURE_H */
