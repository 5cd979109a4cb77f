/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The interface between trace.bpf.c and the Rust decoder (src/trace/), defined
 * once, here. Every constant Rust needs is an enum (clang puts enums in the
 * object's BTF; #defines vanish), and libbpf-cargo turns the BTF into the
 * skeleton's `types` module: `types::ns_trace_kind::TK_RX_BATCH`,
 * `types::ns_trace_event`, ... So Rust copies no number by hand: a change here
 * changes the generated types, and the Rust side follows or fails to build.
 *
 * Enum types that no variable or field uses are left out of the BTF: struct
 * ns_trace_abi (below) uses each one. */
#ifndef NETSTALL_TRACE_H
#define NETSTALL_TRACE_H

/* Sizes and limits. */
enum ns_trace_limit {
	TRACE_COMM_LEN = 16,
	TRACE_MAX_FRAMES = 40,   /* kernel stack depth kept per event */
	/* A syscall fd's path is built backwards from path[TRACE_PATH_END]; the
	 * buffer is larger so the verifier can bound each component copy with masks. */
	TRACE_PATH_END = 255,
	TRACE_NAME_MAX = 127,    /* longest path component copied */
	TRACE_PATH_BUF = 384,    /* >= 256 + TRACE_NAME_MAX */
	TRACE_PATH_DEPTH = 16,   /* components walked, mounts crossed included */
	TRACE_HIST_SLOTS = 32,   /* log2(ns) buckets: slot i counts [2^i, 2^(i+1)) ns */
	TRACE_MAX_CPUS = 1024,   /* cpu_mask covers CPUs 0 .. TRACE_MAX_CPUS - 1 */
	TRACE_PKT_SLOTS = 65536, /* direct-mapped enqueue timestamps (power of 2) */
};

/* What a ring-buffer record is (ns_trace_event.kind), and which member of
 * ns_trace_event.detail it fills. */
enum ns_trace_kind {
	TK_RX_BATCH = 1,      /* rx-backlog: packets of one NET_RX run that waited */
	TK_TICK_GAP = 2,      /* irqs-off: no local timer on a busy CPU */
	TK_SOFTIRQ_DELAY = 3, /* softirq-delay: NET_RX blocked -> entry */
	TK_KSOFTIRQD = 4,     /* ksoftirqd took over pending NET_RX */
	TK_RSTAT_HOLD = 5,    /* rstat-hold: cgroup rstat lock held with IRQs off */
	TK_SYSCALL = 6,       /* slow (or culprit's) syscall */
	TK_ICMP_ECHO = 7,     /* an ICMP echo request processed */
	TK_STEAL = 8,         /* steal: the hypervisor ran something else */
	TK_NOSCHED = 9,       /* kernel-nonpreemptible: others runnable, one task's kernel code ran on */
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

/* Bits of ns_trace_event.flags */
enum ns_trace_flag {
	TF_IN_SOFTIRQ = 1 << 0,  /* holder sample was taken inside a softirq */
	TF_HAS_HOLDER = 1 << 1,  /* TK_SOFTIRQ_DELAY: task, stack, detail.softirq_delay.holder_* valid */
	TF_HAS_SYSCALL = 1 << 2, /* sys_* fields are valid */
	TF_HAS_PATH = 1 << 3,    /* path is valid */
	TF_CULPRIT = 1 << 4,     /* TK_SYSCALL: the task was a stall's culprit */
};

/* The kind-specific part of an event: one member per kind. */
struct ns_rx_batch {
	__u64 packets;     /* that waited at least packet_floor_ns */
	__u64 max_wait_ns; /* the longest wait of them */
};

struct ns_tick_gap {
	__u64 stolen_ns; /* steal inside the gap (already discounted) */
};

struct ns_softirq_delay {
	__u64 raise_ns;  /* the first NET_RX raise not serviced */
	__u64 holder_ts; /* when the holder (task, stack) was sampled */
	__u32 holder_vec; /* softirq vector running then (with TF_IN_SOFTIRQ) */
	__u32 _pad;
};

struct ns_ksoftirqd {
	__u64 raise_ns; /* the first NET_RX raise not serviced */
};

struct ns_rstat_hold {
	__s64 lock_cpu;      /* the per-CPU rstat lock's CPU (-1: the global lock) */
	__s64 flush_updates; /* pending memcg stat updates at the flush */
	__u64 flush_ts;      /* when that flush began; 0: no memcg flush seen */
};

struct ns_syscall_end {
	__s64 ret;
};

struct ns_icmp_echo {
	__u16 seq; /* host byte order */
	__u16 id;
	__u32 _pad;
};

struct ns_steal {
	__u64 stolen_ns; /* of [start_ns, end_ns] */
};

struct ns_nosched {
	__u64 ticks;   /* timer ticks that found it so (IRQs were on) */
	__u32 waiting; /* most tasks seen waiting on the CPU's runqueue */
	__u32 _pad;
};

/* The largest member first: a zeroed (default) union is all zero. */
union ns_trace_detail {
	struct ns_rstat_hold rstat_hold;
	struct ns_rx_batch rx_batch;
	struct ns_tick_gap tick_gap;
	struct ns_softirq_delay softirq_delay;
	struct ns_ksoftirqd ksoftirqd;
	struct ns_syscall_end syscall;
	struct ns_icmp_echo icmp_echo;
	struct ns_steal steal;
	struct ns_nosched nosched;
};

struct ns_task {
	__u32 pid; /* tgid */
	__u32 tid;
	char comm[TRACE_COMM_LEN];
};

struct ns_trace_event {
	enum ns_trace_kind kind;
	__u32 cpu;
	__u64 start_ns;         /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 end_ns;
	union ns_trace_detail detail; /* the member `kind` names */
	/* the task the event is about: culprit, drainer, previous task, current */
	struct ns_task task;
	/* a second task: who drained (softirq-delay), ksoftirqd (takeover) */
	struct ns_task task2;
	/* the syscall the task was in (TF_HAS_SYSCALL) */
	__s64 sys_nr;
	__s64 sys_arg0;
	__u64 sys_start_ns;
	__u32 flags;            /* enum ns_trace_flag bits */
	__u32 stack_bytes;      /* valid bytes in stack[] */
	__u32 path_off;         /* the path is path[path_off .. TRACE_PATH_END) */
	__u32 _pad;
	__u64 stack[TRACE_MAX_FRAMES]; /* innermost frame first, as bpf_get_stack writes it */
	char path[TRACE_PATH_BUF];
};

/* Never used by a program: it puts every enum above in the BTF, and so in
 * the skeleton's Rust types. */
struct ns_trace_abi {
	enum ns_trace_limit limit;
	enum ns_trace_kind kind;
	enum ns_trace_counter counter;
	enum ns_trace_flag flag;
};

#endif
