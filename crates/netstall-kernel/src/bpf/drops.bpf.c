// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* `netstall trace --drops`: packet drops and TCP retransmits, counted in
 * the kernel.
 *
 *   skb:kfree_skb              every freed skb with its drop reason; counted
 *                              per (reason, location, CPU, device, netns),
 *                              except the reasons userspace marks as normal
 *                              consumption (a bit in ignore_mask)
 *   tcp:tcp_retransmit_skb     a segment resent (RTO, loss recovery, SYN)
 *   tcp:tcp_retransmit_synack  a SYN-ACK resent (the client's ACK was lost)
 *
 * Nothing reaches userspace per event: it reads the hash maps once per
 * interval and reports the increments. A full map is counted (OVERFLOW),
 * never silent.
 *
 * With totals_only (the agent, which runs for months: the sites and flows
 * of a run would fill any map), only skb:kfree_skb is attached and a drop
 * only adds one to its reason's slot of a per-CPU array that never fills.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "drops.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10

/* Set from userspace before load, from this kernel's BTF names. */
const volatile __u64 ignore_mask[DROP_REASON_MASK_BITS / 64] = {};
/* Count per reason only (`reasons`), not per site (`drops`). */
const volatile bool totals_only = false;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_REASON_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct drop_key);
	__type(value, struct count_val);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct retrans_key);
	__type(value, struct count_val);
} retransmits SEC(".maps");

/* Updates lost to a full map, drops and retransmits. */
__u64 drops_overflow = 0;
__u64 retransmits_overflow = 0;

/* Exported so the skeleton carries the types. */
struct drop_key _drop_key_unused = {};
struct retrans_key _retrans_key_unused = {};
struct count_val _count_val_unused = {};

static __always_inline void count(void *map, const void *key, __u64 *overflow)
{
	__u64 now = bpf_ktime_get_ns();
	struct count_val *v = bpf_map_lookup_elem(map, key);
	if (v) {
		/* A drop key holds its CPU, but a retransmit's flow can be
		 * resent from any CPU: atomic adds for both. */
		__sync_fetch_and_add(&v->count, 1);
		v->last_ns = now;
		return;
	}
	struct count_val init = { .count = 1, .first_ns = now, .last_ns = now };
	if (bpf_map_update_elem(map, key, &init, BPF_NOEXIST)) {
		/* Lost the race to another CPU (retransmits) or the map is full. */
		v = bpf_map_lookup_elem(map, key);
		if (v) {
			__sync_fetch_and_add(&v->count, 1);
			v->last_ns = now;
		} else {
			__sync_fetch_and_add(overflow, 1);
		}
	}
}

static __always_inline __u32 netns_of_net(struct net *net)
{
	return net ? BPF_CORE_READ(net, ns.inum) : 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb, struct sk_buff *skb, void *location,
	     enum skb_drop_reason reason, struct sock *rx_sk)
{
	__u32 r = reason;
	if (r < DROP_REASON_MASK_BITS) {
		__u32 word = r / 64;
		/* Hide the range check from the compiler: it would drop the
		 * mask below, and the verifier needs it to bound the index. */
		barrier_var(word);
		if ((ignore_mask[word & 3] >> (r % 64)) & 1)
			return 0;
	}
	if (totals_only) {
		__u32 slot = r < DROP_REASON_MASK_BITS ? r : DROP_REASON_MASK_BITS;
		__u64 *total = bpf_map_lookup_elem(&reasons, &slot);
		/* This CPU's own slot: no other writer, no atomic needed. */
		if (total)
			*total += 1;
		return 0;
	}

	struct drop_key key = {
		.location = (__u64)location,
		.reason = r,
		.cpu = bpf_get_smp_processor_id(),
	};
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (dev) {
		key.ifindex = BPF_CORE_READ(dev, ifindex);
		key.netns = netns_of_net(BPF_CORE_READ(dev, nd_net.net));
	} else {
		struct sock *sk = rx_sk ? rx_sk : BPF_CORE_READ(skb, sk);
		if (sk)
			key.netns = netns_of_net(BPF_CORE_READ(sk, __sk_common.skc_net.net));
	}
	count(&drops, &key, &drops_overflow);
	return 0;
}

static __always_inline void flow_of(const struct sock_common *c, struct retrans_key *key)
{
	key->family = BPF_CORE_READ(c, skc_family);
	key->sport = BPF_CORE_READ(c, skc_num);
	key->dport = __builtin_bswap16(BPF_CORE_READ(c, skc_dport));
	key->state = BPF_CORE_READ(c, skc_state);
	key->netns = netns_of_net(BPF_CORE_READ(c, skc_net.net));
	if (key->family == AF_INET6) {
		BPF_CORE_READ_INTO(&key->saddr, c, skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&key->daddr, c, skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)key->saddr, c, skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)key->daddr, c, skc_daddr);
	}
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(on_tcp_retransmit_skb, const struct sock *sk)
{
	struct retrans_key key = {};
	flow_of(&sk->__sk_common, &key);
	count(&retransmits, &key, &retransmits_overflow);
	return 0;
}

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(on_tcp_retransmit_synack, const struct sock *sk,
	     const struct request_sock *req)
{
	struct retrans_key key = { .synack = 1 };
	flow_of(&req->__req_common, &key);
	count(&retransmits, &key, &retransmits_overflow);
	return 0;
}
