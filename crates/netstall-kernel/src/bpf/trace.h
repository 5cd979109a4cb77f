/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Shared between trace.bpf.c and (through the generated skeleton types) the
 * Rust decoder in src/trace/. Keep the layout of struct ns_trace_event in step
 * with src/trace/decode.rs. */
#ifndef NETSTALL_TRACE_H
#define NETSTALL_TRACE_H

#define TRACE_COMM_LEN 16
#define TRACE_MAX_FRAMES 40     /* kernel stack depth kept per event */
/* A syscall fd's path is built backwards from path[TRACE_PATH_END]; the
 * buffer is larger so the verifier can bound each component copy with masks. */
#define TRACE_PATH_END 255
#define TRACE_NAME_MAX 127      /* longest path component copied */
#define TRACE_PATH_BUF 384      /* >= 256 + TRACE_NAME_MAX */
#define TRACE_PATH_DEPTH 16     /* components walked, mounts crossed included */
#define TRACE_HIST_SLOTS 32     /* log2(ns) buckets */
#define TRACE_MAX_CPUS 1024
#define TRACE_PKT_SLOTS 65536   /* direct-mapped enqueue timestamps (power of 2) */

enum ns_trace_kind {
	TK_RX_BATCH = 1,      /* rx-backlog: packets of one NET_RX run that waited */
	TK_TICK_GAP = 2,      /* irqs-off: no local timer on a busy CPU */
	TK_SOFTIRQ_DELAY = 3, /* softirq-delay: NET_RX blocked -> entry */
	TK_KSOFTIRQD = 4,     /* ksoftirqd took over pending NET_RX */
	TK_RSTAT_HOLD = 5,    /* rstat-hold: cgroup rstat lock held with IRQs off */
	TK_SYSCALL = 6,       /* slow (or culprit's) syscall */
	TK_ICMP_ECHO = 7,     /* an ICMP echo request processed */
	TK_STEAL = 8,         /* steal: the hypervisor ran something else (a = ns stolen) */
};

/* Per-CPU counters (index into the `counters` per-CPU array). */
enum ns_trace_counter {
	TC_RING_DROPS = 0,     /* events lost: ring buffer full */
	TC_PACKETS_WAITED = 1, /* packets that waited at least packet_floor_ns */
	TC_KSOFTIRQD = 2,      /* switches to ksoftirqd with NET_RX pending */
	TC_SLOT_MISSES = 3,    /* packets received without a matching enqueue stamp */
	TC_NET_RX_NS = 4,      /* time spent in NET_RX softirq runs (ns) */
	TC_NR = 5,
};

/* Bits of trace_event.flags */
#define TF_IN_SOFTIRQ   (1u << 0) /* holder sample was taken inside a softirq */
#define TF_HAS_HOLDER   (1u << 1) /* holder_* fields are valid */
#define TF_HAS_SYSCALL  (1u << 2) /* sys_* fields are valid */
#define TF_HAS_PATH     (1u << 3) /* path is valid */
#define TF_CULPRIT      (1u << 4) /* TK_SYSCALL: the task was a stall's culprit */

struct ns_trace_event {
	__u32 kind;
	__u32 cpu;
	__u64 start_ns;         /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 end_ns;
	__u64 a;                /* kind-specific, see the Rust decoder */
	__u64 b;
	__u64 c;
	/* the task the event is about: culprit, drainer, previous task, current */
	__u32 pid;
	__u32 tid;
	char comm[TRACE_COMM_LEN];
	/* a second task: who drained (softirq-delay), ksoftirqd (takeover) */
	__u32 pid2;
	__u32 tid2;
	char comm2[TRACE_COMM_LEN];
	/* the syscall the task was in */
	__s64 sys_nr;
	__s64 sys_arg0;
	__u64 sys_start_ns;
	__u32 flags;
	__u32 holder_vec;       /* softirq vector of the holder sample */
	__u32 stack_bytes;      /* valid bytes in stack[] */
	__u32 path_off;         /* the path is path[path_off .. TRACE_PATH_END) */
	__u64 stack[TRACE_MAX_FRAMES];
	char path[TRACE_PATH_BUF];
};

#endif
