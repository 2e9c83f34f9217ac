/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sock_bytes.h — hm_sock_bytes, the per-socket count of bytes sockmap carried past TCP.
 *
 * sockmap's sk_msg hands a message straight to the peer socket's receive queue, so neither
 * tcp_sock's bytes_acked (sender) nor bytes_received (peer) ever sees it. hm_sk_msg adds each
 * redirected message to the sender's `sent` and the peer's `received`; flows adds them to the
 * TCP counters in the socket's close record, then deletes the entry.
 *
 * Keyed by the socket's own sockhash key (struct hm_sock_key), not socket storage: the sender
 * knows its peer only by key (an sk_msg program cannot release the socket a sockhash lookup
 * would return), and flows can build the same key from the struct sock at close. hm_sockops
 * zeroes a socket's entry when it joins the sockhash, so a tuple reused after a close that
 * flows did not see starts afresh; LRU bounds what nobody deletes.
 *
 * Shared between sockmap.bpf.c and flows.bpf.c: both include this one definition, and the
 * loaders pin it at <bpffs>/hm-<node>-shared/hm_sock_bytes (whichever loads first creates it,
 * the other reuses it; libbpf refuses a pinned map of another shape).
 */
#ifndef HM_SOCK_BYTES_H
#define HM_SOCK_BYTES_H

#include "sockmap.h"

struct hm_sock_bytes {
	__u64 sent;     /* redirected by this socket's sk_msg to its peer */
	__u64 received; /* redirected to this socket by its peer's sk_msg */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HM_SM_MAX_SOCKETS);
	__type(key, struct hm_sock_key);
	__type(value, struct hm_sock_bytes);
} hm_sock_bytes SEC(".maps");

#endif /* HM_SOCK_BYTES_H */
