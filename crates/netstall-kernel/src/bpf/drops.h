/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The interface of drops.bpf.c: map keys and values, read by
 * src/drops.rs through the generated skeleton's types. */
#ifndef NETSTALL_DROPS_H
#define NETSTALL_DROPS_H

/* Reasons below this fit the ignore mask; subsystem reasons (the high 16
 * bits: mac80211, openvswitch, ...) are always counted. */
#define DROP_REASON_MASK_BITS 256
/* The per-reason totals (`reasons`): a slot per reason below
 * DROP_REASON_MASK_BITS, and the last one for all the others. */
#define DROP_REASON_SLOTS (DROP_REASON_MASK_BITS + 1)

/* One drop site: a reason, where the kernel freed the skb, on which CPU,
 * and the device (and its netns) when the skb had one. */
struct drop_key {
	__u64 location;  /* return address inside the function that dropped */
	__u32 reason;    /* enum skb_drop_reason, as this kernel numbers it */
	__u32 cpu;
	__u32 ifindex;   /* 0: no device */
	__u32 netns;     /* netns inode (device's, else socket's); 0: unknown */
};

/* A flow that retransmitted. Addresses in network order; ports host order. */
struct retrans_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;    /* AF_INET or AF_INET6 */
	__u16 synack;    /* 1: tcp_retransmit_synack, 0: tcp_retransmit_skb */
	__u32 netns;
	__u32 state;     /* the socket's TCP state (SYN_SENT: a SYN resent) */
};

/* Count, and when the first and the last happened (CLOCK_MONOTONIC). */
struct count_val {
	__u64 count;
	__u64 first_ns;
	__u64 last_ns;
};

#endif
