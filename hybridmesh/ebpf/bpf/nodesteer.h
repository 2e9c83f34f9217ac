/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nodesteer.h — the map layouts of nodesteer.bpf.c, defined once.
 *
 * hm_node_src is read by the node proxy (hybridmesh/agent/nodeproxy/source.py packs the same
 * bytes with struct.Struct("!4s4sHH") and ("=Q4s2sH")); hybridmesh/ebpf/nodesteer.py mirrors
 * every struct as ctypes and checks the mirrors against this file's BTF.
 *
 * Addresses and ports are in network byte order (as the proxy's accept() reports them, packed
 * big-endian); the cgroup id is a host-order u64 (the inode number of a cgroup v2 directory).
 */
#ifndef HM_NODESTEER_H
#define HM_NODESTEER_H

#define HM_NS_MAX_SRC 65536  /* connections established but not yet accepted by the proxy */
#define HM_NS_MAX_PODS 4096  /* pod cgroups on one node */
#define HM_NS_MAX_DEPTH 32   /* cgroup levels searched for the pod's own cgroup */

/* hm_node_src key: the connection as the proxy's accepted socket sees it (peer -> local) */
struct hm_node_src_key {
	__be32 saddr;  /* the pod's source address (whatever it bound: never trusted) */
	__be32 daddr;  /* the node proxy's outbound listener address */
	__be16 sport;
	__be16 dport;
};

/* hm_node_src value, and the per-socket state connect4 leaves for sockops and getpeername */
struct hm_node_src {
	__u64 cgroup_id;     /* the calling pod's cgroup v2 id; 0 marks a conflicting entry */
	__be32 orig_daddr;   /* where the application connected */
	__be16 orig_dport;
	__u16 pad;
};

/* stats: one per-CPU slot of counters */
struct hm_nodesteer_stats {
	__u64 steered;        /* connects rewritten to the node proxy */
	__u64 unknown_pod;    /* ... whose caller was in no registered pod cgroup (proxy refuses) */
	__u64 no_storage;     /* connects refused: no socket storage for the original destination */
	__u64 established;    /* hm_node_src entries written */
	__u64 conflicts;      /* entries found holding another cgroup: poisoned (cgroup id 0) */
	__u64 insert_failed;  /* hm_node_src updates that failed */
	__u64 closed;         /* entries deleted because the connection closed before the proxy read it */
};

#endif /* HM_NODESTEER_H */
