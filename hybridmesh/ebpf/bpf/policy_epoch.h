/* SPDX-License-Identifier: Apache-2.0 */
/*
 * policy_epoch.h — hm_policy_epoch, shared by l4policy.bpf.c and sockmap.bpf.c.
 *
 * l4policy's loader bumps it after every policy or identity change: l4policy then re-judges
 * each established connection's cached verdict on its next packet, and sockmap sends a socket
 * admitted under an older epoch back through the TCP stack, where that policy sees it. Both
 * objects include this one definition and pin the map at
 * <bpffs>/hm-<node>-shared/hm_policy_epoch (whichever loads first creates it).
 */
#ifndef HM_POLICY_EPOCH_H
#define HM_POLICY_EPOCH_H

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hm_policy_epoch SEC(".maps");

static __always_inline __u64 current_epoch(void)
{
	__u32 zero = 0;
	__u64 *epoch = bpf_map_lookup_elem(&hm_policy_epoch, &zero);

	return epoch ? *epoch : 0;
}

#endif /* HM_POLICY_EPOCH_H */
