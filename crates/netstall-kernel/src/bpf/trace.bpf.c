// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* `netstall trace`: RX stall detectors with culprit attribution.
 *
 * Tracepoints (tp_btf) only: they are the stable ABI and, on locked-down
 * kernels (no kprobes, fentry refused), all that loads. Every detector
 * aggregates in per-CPU maps; only over-threshold events reach the ring
 * buffer, and a full ring buffer is counted (TC_RING_DROPS), never silent.
 *
 *   rx-backlog     enqueue (netif_rx, napi_gro_receive_entry, ...) -> netif_receive_skb
 *   irqs-off       local timer gaps on a CPU that is not idle
 *   softirq-delay  NET_RX blocked (raise, or the softirq running then) -> entry
 *   ksoftirqd      switches to ksoftirqd/N while NET_RX is pending
 *   rstat-hold     cgroup_rstat_locked -> unlock (IRQs off), holder's stack
 *   syscalls       slow syscalls, and always the culprit's, with the fd's path
 *   icmp           ICMP echo requests processed (seq, id, context)
 *   steal          vCPU steal: time the hypervisor did not run this CPU
 *   nosched        a task ran on in the kernel (a syscall, a kthread) while
 *                  others were runnable on its CPU: no preemption there on
 *                  PREEMPT_NONE/VOLUNTARY kernels, only cond_resched()
 *
 * Steal matters twice: a hypervisor pause delays every packet of the VM
 * without any task or IRQs-off section to blame, and it makes the local
 * timer late, which must not read as an irqs-off stall.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "trace.h"

char LICENSE[] SEC("license") = "GPL";

/* NET_RX_SOFTIRQ comes from vmlinux.h (enum of softirq vectors). */
#define MAX_SANE_WAIT_NS (10ULL * 1000 * 1000 * 1000)
#define PF_KTHREAD 0x00200000

/* Set from userspace before load. */
const volatile __u64 threshold_ns = 10 * 1000 * 1000;
const volatile __u64 packet_floor_ns = 1000 * 1000;
const volatile __u64 syscall_threshold_ns = ~0ULL; /* culprits only */
/* a tick gap this long is an irqs-off stall: threshold + 1 / CONFIG_HZ */
const volatile __u64 tick_gap_ns = 14 * 1000 * 1000;
/* steal this long between two looks at a CPU is reported at once */
const volatile __u64 steal_floor_ns = 1000 * 1000;
/* steal events are sent only to a reader that wants them */
const volatile bool report_steal = false;
/* NET_RX blocked this long: a tick samples who holds the CPU (threshold / 2) */
const volatile __u64 watchdog_ns = 5 * 1000 * 1000;
const volatile bool filter_cpus = false;
const volatile __u64 cpu_mask[TRACE_MAX_CPUS / 64] = {};
const volatile __u64 fd_syscalls[8] = {};          /* bit nr: arg0 is an fd */
const volatile __u64 icmp_rcv_start = 0;           /* [start, end) of icmp_rcv */
const volatile __u64 icmp_rcv_end = 0;

/* Make libbpf-cargo generate Rust types for the event and the enums. */
struct ns_trace_event _ns_trace_event_unused = {};
struct ns_trace_abi _ns_trace_abi_unused = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TC_NR);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Per-CPU log2(ns) histograms: backlog wait per packet, NET_RX raise->entry. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TRACE_HIST_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} backlog_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TRACE_HIST_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} softirq_delay_hist SEC(".maps");

/* Enqueue time per skb, direct-mapped by address: O(1) and lock-free. A
 * collision only loses one measurement (counted as a slot miss). */
struct ns_pkt_slot {
	__u64 skb;
	__u64 ts;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TRACE_PKT_SLOTS);
	__type(key, __u32);
	__type(value, struct ns_pkt_slot);
} pkt_slots SEC(".maps");

struct ns_cpu_state {
	__u64 last_tick;     /* 0: idle (NO_HZ may stop the tick) or unknown */
	__u64 tick_steal;    /* the steal clock at last_tick's exit */
	__u64 gap_from;      /* the tick before this one (judged at its exit) */
	__u64 steal_seen;    /* the steal clock at the last look */
	__u64 steal_seen_ts;
	__u64 netrx_raise;   /* first NET_RX raise not yet serviced */
	__u64 netrx_blocked; /* when NET_RX became unable to run */
	__u64 softirq_ts;    /* entry of the softirq running now, 0 if none */
	__u32 softirq_vec;
	__u32 in_netrx;
	/* the packets of the current NET_RX run that waited */
	__u64 batch_first;   /* earliest enqueue */
	__u64 batch_max;
	__u64 batch_waited;
	/* who held the CPU while NET_RX was blocked, sampled by a tick */
	__u64 holder_ts;
	__u32 holder_pid;
	__u32 holder_tid;
	char holder_comm[TRACE_COMM_LEN];
	__u32 holder_flags;
	__u32 holder_vec;
	__u32 holder_stack_bytes;
	__u32 _pad;
	__u64 holder_stack[TRACE_MAX_FRAMES];
	/* nosched: one task's kernel code while others wait, seen by ticks */
	__u64 switches;      /* context switches here (a count: no clock read) */
	__u64 ns_switches;   /* `switches` at the last tick */
	__u64 ns_since;      /* first tick of the current stretch, 0: none */
	__u64 ns_last;       /* last tick that saw it */
	__u64 ns_ticks;
	__u32 ns_waiting;
	__u32 ns_pending;    /* crossed the threshold: nosched_events holds it */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ns_cpu_state);
} cpu_states SEC(".maps");

/* A nosched stretch that crossed the threshold, filled at that tick (the
 * task, its syscall and where it was) and sent when the stretch ends. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ns_trace_event);
} nosched_events SEC(".maps");

/* Per task: the syscall in flight, an rstat lock held, the last memcg flush. */
struct ns_task_ctx {
	__u64 sys_start;     /* 0: not in a syscall (or started before us) */
	__s64 sys_nr;
	__s64 sys_arg0;
	__u64 rstat_locked;
	__s64 rstat_lock_cpu;
	__u64 flush_ts;
	__s64 flush_updates;
	__u32 culprit;       /* report this syscall when it ends */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ns_task_ctx);
} task_ctxs SEC(".maps");

static __always_inline struct ns_cpu_state *cpu_state(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cpu_states, &zero);
}

static __always_inline void count(__u32 counter)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &counter);

	if (n)
		(*n)++; /* per-CPU value: no atomics needed */
}

static __always_inline void count_ns(__u32 counter, __u64 ns)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &counter);

	if (n)
		*n += ns; /* per-CPU value: no atomics needed */
}

static __always_inline bool cpu_selected(__u32 cpu)
{
	if (!filter_cpus)
		return true;
	if (cpu >= TRACE_MAX_CPUS)
		return false;
	__u32 word = cpu >> 6;
	/* Hide the range check from the compiler: it would drop the mask below
	 * and index with another copy of cpu, which older verifiers (6.1) do
	 * not know to be bounded ("invalid access to map value"). */
	barrier_var(word);
	return cpu_mask[word & (TRACE_MAX_CPUS / 64 - 1)] & (1ULL << (cpu & 63));
}

/* Steal time of this CPU's runqueue in ns (0 without steal accounting):
 * updated with the runqueue clock, so current at a tick's exit and at a
 * context switch. CO-RE: kernels without CONFIG_PARAVIRT_TIME_ACCOUNTING
 * lack the field and read 0. */
/* The field as a CO-RE flavor of struct rq: the committed kernel headers
 * need not have it (Debian's arm64 kernels lack the option). */
struct rq___steal {
	u64 prev_steal_time_rq;
} __attribute__((preserve_access_index));

static __always_inline __u64 steal_clock(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct rq___steal *rq;

	if (!bpf_core_field_exists(struct rq___steal, prev_steal_time_rq))
		return 0;
	rq = (struct rq___steal *)BPF_CORE_READ(task, se.cfs_rq, rq);
	return BPF_CORE_READ(rq, prev_steal_time_rq);
}

/* floor(log2(v)) in six steps, without a loop: it runs once per packet. */
static __always_inline __u32 log2_slot(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xFFFFFFFFULL) << 5;
	v >>= r;
	shift = (v > 0xFFFF) << 4;
	v >>= shift;
	r |= shift;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r >= TRACE_HIST_SLOTS ? TRACE_HIST_SLOTS - 1 : r;
}

static __always_inline void hist_add(void *map, __u64 v)
{
	__u32 slot = log2_slot(v);
	__u64 *n = bpf_map_lookup_elem(map, &slot);

	if (n)
		(*n)++;
}

static __always_inline bool is_ksoftirqd(const char *c)
{
	/* clang 14 turns __builtin_memcmp into an extern call: compare by hand */
	const char prefix[] = "ksoftirqd/";

#pragma unroll
	for (int i = 0; i < sizeof(prefix) - 1; i++)
		if (c[i] != prefix[i])
			return false;
	return true;
}

static __always_inline struct ns_trace_event *reserve(enum ns_trace_kind kind, __u32 cpu)
{
	struct ns_trace_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count(TC_RING_DROPS);
		return NULL;
	}
	e->kind = kind;
	e->cpu = cpu;
	e->start_ns = 0;
	e->end_ns = 0;
	__builtin_memset(&e->detail, 0, sizeof(e->detail));
	e->task.pid = 0;
	e->task.tid = 0;
	e->task.comm[0] = 0;
	e->task2.pid = 0;
	e->task2.tid = 0;
	e->task2.comm[0] = 0;
	e->sys_nr = -1;
	e->sys_arg0 = 0;
	e->sys_start_ns = 0;
	e->flags = 0;
	e->stack_bytes = 0;
	e->path_off = TRACE_PATH_END;
	return e;
}

static __always_inline void set_current(struct ns_task *t)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	t->pid = pid_tgid >> 32;
	t->tid = (__u32)pid_tgid;
	bpf_get_current_comm(t->comm, sizeof(t->comm));
}

/* A window with some steal, but less than the floor, is reported after this
 * long anyway: a steady drip of steal adds up, and a window must stay short
 * enough to line up with a 10 ms episode. */
#define STEAL_WINDOW_NS (100ULL * 1000 * 1000)

/* Reports the steal since the last look: at once when it reaches
 * steal_floor_ns, else when the window has aged. A look without new steal
 * starts a fresh window. */
static __always_inline void look_at_steal(struct ns_cpu_state *st, __u64 now, __u64 steal)
{
	struct ns_trace_event *e;
	__u64 stolen;
	__u32 cpu;

	if (!report_steal || !steal)
		return;
	if (!st->steal_seen || steal < st->steal_seen) {
		st->steal_seen = steal;
		st->steal_seen_ts = now;
		return;
	}
	stolen = steal - st->steal_seen;
	if (!stolen) {
		st->steal_seen_ts = now;
		return;
	}
	if (stolen < steal_floor_ns && now - st->steal_seen_ts < STEAL_WINDOW_NS)
		return;
	cpu = bpf_get_smp_processor_id();
	if (cpu_selected(cpu)) {
		e = reserve(TK_STEAL, cpu);
		if (e) {
			e->start_ns = st->steal_seen_ts;
			e->end_ns = now;
			e->detail.steal.stolen_ns = stolen;
			bpf_ringbuf_submit(e, 0);
		}
	}
	st->steal_seen = steal;
	st->steal_seen_ts = now;
}

static __always_inline bool is_fd_syscall(__s64 nr)
{
	if (nr < 0 || nr >= 512)
		return false;
	return fd_syscalls[(nr >> 6) & 7] & (1ULL << (nr & 63));
}

struct path_walk {
	struct dentry *dentry;
	struct mount *mnt;
	struct ns_trace_event *e;
};

/* One step up the path: a component, or a jump from a mount's root to its
 * mount point. A bpf_loop callback, so the verifier checks it once. The
 * write position lives in the event (e->path_off), not on the stack: the
 * verifier tracks stack values exactly, so the states of successive steps
 * would never converge. */
static long path_step(__u64 i, struct path_walk *w)
{
	struct dentry *dentry = w->dentry, *parent, *mnt_root;
	struct mount *mnt = w->mnt, *mnt_parent;
	struct ns_trace_event *e = w->e;
	const unsigned char *name;
	__u32 pos = e->path_off, len;

	parent = BPF_CORE_READ(dentry, d_parent);
	mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
	if (dentry == mnt_root || dentry == parent) {
		mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (mnt_parent == mnt || !mnt_parent)
			return 1; /* the root of the mount tree */
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		return 0;
	}
	len = BPF_CORE_READ(dentry, d_name.len);
	name = BPF_CORE_READ(dentry, d_name.name);
	if (len > TRACE_NAME_MAX)
		len = TRACE_NAME_MAX;
	if (len + 1 > pos)
		return 1; /* path too long: keep the tail */
	pos -= len;
	bpf_probe_read_kernel(&e->path[pos & TRACE_PATH_END], len & TRACE_NAME_MAX, name);
	pos -= 1;
	e->path[pos & TRACE_PATH_END] = '/';
	e->path_off = pos;
	w->dentry = parent;
	return 0;
}

/* The path of `fd` in `task`, walked from the dentry up through the mounts
 * (bpf_d_path is not allowed in tracepoints), written backwards so it ends
 * at path[TRACE_PATH_END]. */
static __always_inline void resolve_fd_path(struct ns_trace_event *e, struct task_struct *task,
					    __s64 fd)
{
	struct path_walk w = { .e = e };
	struct file **fds, *file = NULL;
	struct vfsmount *vfsmnt;
	unsigned int max_fds;

	if (fd < 0)
		return;
	max_fds = BPF_CORE_READ(task, files, fdt, max_fds);
	if (fd >= max_fds)
		return;
	fds = BPF_CORE_READ(task, files, fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return;
	w.dentry = BPF_CORE_READ(file, f_path.dentry);
	vfsmnt = BPF_CORE_READ(file, f_path.mnt);
	w.mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);
	e->path[TRACE_PATH_END] = 0;
	e->path_off = TRACE_PATH_END;
	bpf_loop(TRACE_PATH_DEPTH, path_step, &w, 0);
	/* no component: a pipe, socket or other pseudo file, not worth a name */
	if (e->path_off < TRACE_PATH_END)
		e->flags |= TF_HAS_PATH;
}

/* The syscall the current task is in, with its fd's path. The number and
 * first argument come from the task's entry registers, so attribution costs
 * nothing per syscall; with --syscalls, sys_enter also gives the start time
 * and `mark` asks sys_exit to report this syscall's duration. */
/* The syscall number in a task's entry registers. libbpf has CO-RE readers for
 * the arguments (PT_REGS_PARM*_CORE_SYSCALL) but none for the number, so the
 * one per-architecture field is named here; a -1 there means "not a syscall"
 * on both. The target comes from build.rs (-D__TARGET_ARCH_*). */
#if defined(__TARGET_ARCH_x86)
#define SYSCALL_NR_CORE(regs) BPF_CORE_READ((regs), orig_ax)
#elif defined(__TARGET_ARCH_arm64)
#define SYSCALL_NR_CORE(regs) ((__s32)BPF_CORE_READ((regs), syscallno))
#else
#error "netstall's BPF knows the syscall-number register of x86 and arm64 only"
#endif

static __always_inline void set_current_syscall(struct ns_trace_event *e, bool mark)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs;
	struct ns_task_ctx *t;
	__s64 nr;

	if (task->flags & PF_KTHREAD)
		return;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	nr = SYSCALL_NR_CORE(regs);
	if (nr < 0 || nr >= 512)
		return; /* in the kernel for an interrupt or exception, not a syscall */
	e->sys_nr = nr;
	e->sys_arg0 = PT_REGS_PARM1_CORE_SYSCALL(regs);
	e->flags |= TF_HAS_SYSCALL;
	t = bpf_task_storage_get(&task_ctxs, task, 0, 0);
	if (t && t->sys_start && t->sys_nr == nr) {
		e->sys_start_ns = t->sys_start;
		if (mark)
			t->culprit = 1;
	}
	if (is_fd_syscall(nr))
		resolve_fd_path(e, task, e->sys_arg0);
}

/* ---- rx-backlog ---- */

/* The packet hooks are raw_tp: their skb argument is a plain number there,
 * while tp_btf makes it a trusted pointer that may not be hashed. */
static __always_inline void stamp_packet(__u64 addr)
{
	__u32 idx = ((addr >> 8) ^ (addr >> 24)) & (TRACE_PKT_SLOTS - 1);
	struct ns_pkt_slot *slot = bpf_map_lookup_elem(&pkt_slots, &idx);

	if (slot) {
		slot->ts = bpf_ktime_get_ns();
		slot->skb = addr;
	}
}

SEC("raw_tp/netif_rx")
int on_netif_rx(struct bpf_raw_tracepoint_args *ctx)
{
	stamp_packet(ctx->args[0]);
	return 0;
}

SEC("raw_tp/napi_gro_receive_entry")
int on_napi_gro_receive_entry(struct bpf_raw_tracepoint_args *ctx)
{
	stamp_packet(ctx->args[0]);
	return 0;
}

SEC("raw_tp/netif_receive_skb_entry")
int on_netif_receive_skb_entry(struct bpf_raw_tracepoint_args *ctx)
{
	stamp_packet(ctx->args[0]);
	return 0;
}

SEC("raw_tp/netif_receive_skb_list_entry")
int on_netif_receive_skb_list_entry(struct bpf_raw_tracepoint_args *ctx)
{
	stamp_packet(ctx->args[0]);
	return 0;
}

SEC("raw_tp/netif_receive_skb")
int on_netif_receive_skb(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 addr = ctx->args[0];
	__u32 idx = ((addr >> 8) ^ (addr >> 24)) & (TRACE_PKT_SLOTS - 1);
	__u32 cpu = bpf_get_smp_processor_id();
	struct ns_pkt_slot *slot;
	struct ns_cpu_state *st;
	struct ns_trace_event *e;
	__u64 now, wait;

	if (!cpu_selected(cpu))
		return 0;
	slot = bpf_map_lookup_elem(&pkt_slots, &idx);
	if (!slot)
		return 0;
	if (slot->skb != addr) {
		count(TC_SLOT_MISSES);
		return 0;
	}
	now = bpf_ktime_get_ns();
	wait = now - slot->ts;
	slot->skb = 0;
	if (wait > MAX_SANE_WAIT_NS)
		return 0;
	hist_add(&backlog_hist, wait); /* its sum is the packet count */
	if (wait < packet_floor_ns)
		return 0;
	count(TC_PACKETS_WAITED);
	st = cpu_state();
	if (!st)
		return 0;
	if (st->in_netrx) {
		/* reported once per NET_RX run, at softirq_exit */
		if (!st->batch_waited || now - wait < st->batch_first)
			st->batch_first = now - wait;
		if (wait > st->batch_max)
			st->batch_max = wait;
		st->batch_waited++;
		return 0;
	}
	if (wait < threshold_ns)
		return 0;
	e = reserve(TK_RX_BATCH, cpu);
	if (!e)
		return 0;
	e->start_ns = now - wait;
	e->end_ns = now;
	e->detail.rx_batch.packets = 1;
	e->detail.rx_batch.max_wait_ns = wait;
	set_current(&e->task);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* ---- softirq-delay, and the NET_RX runs that drain the backlog ---- */

SEC("tp_btf/softirq_raise")
int BPF_PROG(on_softirq_raise, unsigned int vec)
{
	struct ns_cpu_state *st;
	__u64 now;

	if (vec != NET_RX_SOFTIRQ)
		return 0;
	st = cpu_state();
	if (!st || st->netrx_raise)
		return 0;
	now = bpf_ktime_get_ns();
	st->netrx_raise = now;
	/* Raised inside another softirq: NET_RX has been unable to run since
	 * that softirq began (bottom halves are off while it runs). */
	st->netrx_blocked =
		(st->softirq_ts && st->softirq_vec != NET_RX_SOFTIRQ) ? st->softirq_ts : now;
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(on_softirq_entry, unsigned int vec)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct ns_trace_event *e;
	struct ns_cpu_state *st;
	__u64 now;

	st = cpu_state();
	if (!st)
		return 0;
	now = bpf_ktime_get_ns();
	st->softirq_ts = now;
	st->softirq_vec = vec;
	if (vec != NET_RX_SOFTIRQ)
		return 0;
	st->in_netrx = 1;
	st->batch_waited = 0;
	st->batch_max = 0;
	if (!st->netrx_raise)
		return 0;
	if (cpu_selected(cpu)) {
		hist_add(&softirq_delay_hist, now - st->netrx_raise);
		if (now - st->netrx_blocked >= threshold_ns) {
			e = reserve(TK_SOFTIRQ_DELAY, cpu);
			if (e) {
				e->start_ns = st->netrx_blocked;
				e->end_ns = now;
				e->detail.softirq_delay.raise_ns = st->netrx_raise;
				set_current(&e->task2); /* who runs NET_RX now */
				if (st->holder_ts) {
					e->task.pid = st->holder_pid;
					e->task.tid = st->holder_tid;
					__builtin_memcpy(e->task.comm, st->holder_comm, sizeof(e->task.comm));
					e->flags |= TF_HAS_HOLDER | st->holder_flags;
					e->detail.softirq_delay.holder_vec = st->holder_vec;
					e->detail.softirq_delay.holder_ts = st->holder_ts;
					e->stack_bytes = st->holder_stack_bytes;
					__builtin_memcpy(e->stack, st->holder_stack, sizeof(e->stack));
				}
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	st->netrx_raise = 0;
	st->holder_ts = 0;
	return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(on_softirq_exit, unsigned int vec)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct ns_trace_event *e;
	struct ns_cpu_state *st;
	__u64 entered;

	st = cpu_state();
	if (!st)
		return 0;
	entered = st->softirq_ts;
	st->softirq_ts = 0;
	if (vec != NET_RX_SOFTIRQ)
		return 0;
	st->in_netrx = 0;
	if (entered)
		count_ns(TC_NET_RX_NS, bpf_ktime_get_ns() - entered);
	if (!st->batch_waited || st->batch_max < threshold_ns)
		return 0;
	e = reserve(TK_RX_BATCH, cpu);
	if (e) {
		e->start_ns = st->batch_first;
		e->end_ns = bpf_ktime_get_ns();
		e->detail.rx_batch.packets = st->batch_waited;
		e->detail.rx_batch.max_wait_ns = st->batch_max;
		set_current(&e->task); /* who drained them */
		bpf_ringbuf_submit(e, 0);
	}
	st->batch_waited = 0;
	st->batch_max = 0;
	return 0;
}

/* ---- nosched: others runnable, one task's kernel code runs on ---- */

/* Sends the pending stretch, if one crossed the threshold, ending at `end`. */
static __always_inline void end_nosched(struct ns_cpu_state *st, __u64 end)
{
	struct ns_trace_event *e;
	__u32 zero = 0;

	if (!st->ns_pending)
		return;
	st->ns_pending = 0;
	e = bpf_map_lookup_elem(&nosched_events, &zero);
	if (!e)
		return;
	e->end_ns = end;
	e->detail.nosched.ticks = st->ns_ticks;
	e->detail.nosched.waiting = st->ns_waiting;
	if (bpf_ringbuf_output(&events, e, sizeof(*e), 0))
		count(TC_RING_DROPS);
}

/* At a tick on a busy CPU: is the current task in kernel code (a kthread,
 * or a syscall: the task's entry registers hold its number; an interrupt
 * from user mode holds -1 there; not in a softirq) while another task is
 * runnable here, and has it been so since the previous tick without a
 * switch? A stretch of such ticks of at least threshold_ns is reported
 * with the task, its syscall and its stack. A late tick (IRQs off: irqs-off's, not this
 * one's) starts a new stretch; so does every context switch. RT tasks are
 * left out: they are not preempted by the waiting ones anyway. */
static __always_inline void look_at_nosched(void *ctx, struct ns_cpu_state *st,
					    struct task_struct *task, __u64 now)
{
	struct ns_trace_event *e;
	struct cfs_rq *cfs;
	bool kernel, same, on_time;
	__u32 zero = 0, waiting, running;
	__s64 nr;
	long n;

	same = st->ns_switches == st->switches;
	st->ns_switches = st->switches;
	on_time = st->last_tick && now - st->last_tick < tick_gap_ns;
	/* this CPU's runqueue, as steal_clock() finds it (the `runqueues`
	 * per-CPU symbol is not resolvable on every kernel); direct loads, no
	 * helper calls: this runs at every tick of a busy CPU */
	cfs = task->se.cfs_rq;
	running = cfs ? cfs->rq->nr_running : 0;
	waiting = running > 1 ? running - 1 : 0;
	/* nobody waits (the common case), an RT task, or inside a softirq (a
	 * stall of the softirq detectors', not the task's own code) */
	kernel = waiting && !st->softirq_ts && task->prio >= 100 /* MAX_RT_PRIO */;
	if (kernel && !(task->flags & PF_KTHREAD)) {
		nr = SYSCALL_NR_CORE((struct pt_regs *)bpf_task_pt_regs(task));
		kernel = nr >= 0 && nr < 512;
	}
	if (!kernel) {
		end_nosched(st, st->ns_last);
		st->ns_since = 0;
		return;
	}
	if (!st->ns_since || !same || !on_time) {
		end_nosched(st, st->ns_last);
		st->ns_since = now;
		st->ns_last = now;
		st->ns_ticks = 1;
		st->ns_waiting = waiting;
		return;
	}
	st->ns_last = now;
	st->ns_ticks++;
	if (waiting > st->ns_waiting)
		st->ns_waiting = waiting;
	if (st->ns_pending || now - st->ns_since < threshold_ns ||
	    !cpu_selected(bpf_get_smp_processor_id()))
		return;
	e = bpf_map_lookup_elem(&nosched_events, &zero);
	if (!e)
		return;
	e->kind = TK_NOSCHED;
	e->cpu = bpf_get_smp_processor_id();
	e->start_ns = st->ns_since;
	e->end_ns = now;
	e->flags = 0;
	e->sys_nr = -1;
	e->sys_start_ns = 0;
	e->path_off = TRACE_PATH_END;
	__builtin_memset(&e->detail, 0, sizeof(e->detail));
	e->task2.pid = 0;
	e->task2.tid = 0;
	e->task2.comm[0] = 0;
	set_current(&e->task);
	set_current_syscall(e, false);
	/* where the task was: under the timer interrupt's frames */
	n = bpf_get_stack(ctx, e->stack, sizeof(e->stack), 0);
	e->stack_bytes = n > 0 ? n : 0;
	st->ns_pending = 1;
}

/* ---- irqs-off: the local timer is the heartbeat of a busy CPU ---- */

SEC("tp_btf/local_timer_entry")
int BPF_PROG(on_local_timer_entry, int vector)
{
	struct task_struct *task = bpf_get_current_task_btf();
	bool idle = task->pid == 0;
	struct ns_cpu_state *st;
	__u64 now;
	long n;

	st = cpu_state();
	if (!st)
		return 0;
	if (idle && !st->netrx_raise) {
		st->last_tick = 0; /* idle: the tick may stop (NO_HZ) */
		return 0;
	}
	now = bpf_ktime_get_ns();

	/* Watchdog: NET_RX blocked for a while; sample who holds the CPU now. */
	if (st->netrx_raise && !st->holder_ts && now - st->netrx_blocked >= watchdog_ns) {
		__u64 pid_tgid = bpf_get_current_pid_tgid();

		st->holder_ts = now;
		st->holder_pid = pid_tgid >> 32;
		st->holder_tid = (__u32)pid_tgid;
		bpf_get_current_comm(st->holder_comm, sizeof(st->holder_comm));
		st->holder_flags = st->softirq_ts ? TF_IN_SOFTIRQ : 0;
		st->holder_vec = st->softirq_vec;
		n = bpf_get_stack(ctx, st->holder_stack, sizeof(st->holder_stack), 0);
		st->holder_stack_bytes = n > 0 ? n : 0;
	}

	if (idle) {
		st->last_tick = 0;
		return 0;
	}
	look_at_nosched(ctx, st, task, now);
	/* Judged at this tick's exit, when the steal clock has caught up. */
	st->gap_from = st->last_tick;
	st->last_tick = now;
	return 0;
}

/* A late tick is an irqs-off stall only if the CPU ran: time stolen by the
 * hypervisor in between delays the tick just the same, with nothing on
 * this CPU to blame. The irqs-off judgement lives here for that reason. */
SEC("tp_btf/local_timer_exit")
int BPF_PROG(on_local_timer_exit, int vector)
{
	struct ns_trace_event *e;
	struct ns_cpu_state *st;
	__u64 now, steal, stolen, from, to;
	__u32 cpu;
	long n;

	st = cpu_state();
	if (!st)
		return 0;
	now = bpf_ktime_get_ns();
	steal = steal_clock();
	look_at_steal(st, now, steal);
	from = st->gap_from;
	to = st->last_tick;
	st->gap_from = 0;
	stolen = steal > st->tick_steal && st->tick_steal ? steal - st->tick_steal : 0;
	st->tick_steal = steal;
	/* IRQs were off for at least gap - tick: one late tick is not a stall */
	if (!from || !to || to - from < tick_gap_ns + stolen)
		return 0;
	cpu = bpf_get_smp_processor_id();
	if (!cpu_selected(cpu))
		return 0;
	e = reserve(TK_TICK_GAP, cpu);
	if (!e)
		return 0;
	e->start_ns = from;
	e->end_ns = to;
	e->detail.tick_gap.stolen_ns = stolen;
	set_current(&e->task);
	set_current_syscall(e, true);
	/* where IRQs came back on: the interrupted context, under the IRQ frames */
	n = bpf_get_stack(ctx, e->stack, sizeof(e->stack), 0);
	e->stack_bytes = n > 0 ? n : 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* ---- idle tracking and ksoftirqd takeovers ---- */

SEC("tp_btf/sched_switch")
int BPF_PROG(on_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	struct ns_trace_event *e;
	struct ns_cpu_state *st;
	__u64 now = 0;
	__u32 cpu;

	st = cpu_state();
	if (!st)
		return 0;
	st->switches++;
	if (st->ns_pending) {
		now = bpf_ktime_get_ns();
		end_nosched(st, now); /* the stretch ends: the CPU goes to another task */
	}
	if (next->pid == 0) {
		st->last_tick = 0; /* entering idle: NO_HZ may stop the tick */
	} else if (prev->pid == 0) {
		__u64 steal = steal_clock();

		now = bpf_ktime_get_ns();
		st->last_tick = now; /* leaving idle: a new baseline */
		st->tick_steal = steal;
		/* a VM's vCPU is often stolen as it wakes up */
		look_at_steal(st, now, steal);
	}

	/* The common case costs no clock read and no helper: the name is
	 * compared in place (next is a trusted pointer here). */
	if (!st->netrx_raise || !is_ksoftirqd(next->comm))
		return 0;
	if (!now)
		now = bpf_ktime_get_ns();
	count(TC_KSOFTIRQD);
	cpu = bpf_get_smp_processor_id();
	if (now - st->netrx_blocked < threshold_ns || !cpu_selected(cpu))
		return 0;
	e = reserve(TK_KSOFTIRQD, cpu);
	if (!e)
		return 0;
	e->start_ns = st->netrx_blocked;
	e->end_ns = now;
	e->detail.ksoftirqd.raise_ns = st->netrx_raise;
	e->task.pid = prev->tgid;
	e->task.tid = prev->pid;
	bpf_probe_read_kernel_str(e->task.comm, sizeof(e->task.comm), prev->comm);
	e->task2.pid = next->tgid;
	e->task2.tid = next->pid;
	bpf_probe_read_kernel_str(e->task2.comm, sizeof(e->task2.comm), next->comm);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* ---- rstat-hold: the memcg stat flush that keeps IRQs off ---- */

/* The ledger: per stats reader (comm, cgroup v2 id), the memcg stat flushes
 * it ran and the time it held an rstat lock (IRQs off on its CPU), whether
 * or not a hold crossed the threshold. LRU: a node with more readers than
 * entries forgets the least recent one; the map never grows. */
struct ns_flush_key {
	char comm[TRACE_COMM_LEN];
	__u64 cgroup_id;
};

struct ns_flush_val {
	__u64 flushes;
	__u64 locked_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 256);
	__type(key, struct ns_flush_key);
	__type(value, struct ns_flush_val);
} flush_ledger SEC(".maps");

static __always_inline struct ns_flush_val *ledger_entry(void)
{
	struct ns_flush_key key = {};
	struct ns_flush_val zero = {}, *v;

	bpf_get_current_comm(key.comm, sizeof(key.comm));
	key.cgroup_id = bpf_get_current_cgroup_id();
	v = bpf_map_lookup_elem(&flush_ledger, &key);
	if (v)
		return v;
	bpf_map_update_elem(&flush_ledger, &key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&flush_ledger, &key);
}

SEC("tp_btf/cgroup_rstat_locked")
int BPF_PROG(on_rstat_locked, struct cgroup *cgrp, int cpu, bool contended)
{
	struct ns_task_ctx *t = bpf_task_storage_get(&task_ctxs, bpf_get_current_task_btf(), 0,
						  BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (t && !t->rstat_locked) {
		t->rstat_locked = bpf_ktime_get_ns();
		t->rstat_lock_cpu = cpu;
	}
	return 0;
}

SEC("tp_btf/cgroup_rstat_unlock")
int BPF_PROG(on_rstat_unlock, struct cgroup *cgrp, int cpu, bool contended)
{
	__u32 this_cpu = bpf_get_smp_processor_id();
	struct ns_flush_val *ledger;
	struct ns_trace_event *e;
	struct ns_task_ctx *t;
	__u64 now, locked;
	long n;

	t = bpf_task_storage_get(&task_ctxs, bpf_get_current_task_btf(), 0, 0);
	if (!t || !t->rstat_locked)
		return 0;
	now = bpf_ktime_get_ns();
	locked = t->rstat_locked;
	t->rstat_locked = 0;
	ledger = ledger_entry();
	if (ledger)
		__sync_fetch_and_add(&ledger->locked_ns, now - locked);
	if (now - locked < threshold_ns || !cpu_selected(this_cpu))
		return 0;
	e = reserve(TK_RSTAT_HOLD, this_cpu);
	if (!e)
		return 0;
	e->start_ns = locked;
	e->end_ns = now;
	e->detail.rstat_hold.lock_cpu = t->rstat_lock_cpu;
	e->detail.rstat_hold.flush_updates = t->flush_updates;
	e->detail.rstat_hold.flush_ts = t->flush_ts;
	set_current(&e->task);
	set_current_syscall(e, true);
	n = bpf_get_stack(ctx, e->stack, sizeof(e->stack), 0);
	e->stack_bytes = n > 0 ? n : 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/memcg_flush_stats")
int BPF_PROG(on_memcg_flush_stats, struct mem_cgroup *memcg, s64 stats_updates, bool force,
	     bool needs_flush)
{
	struct ns_flush_val *ledger;
	struct ns_task_ctx *t;

	/* What __mem_cgroup_flush_stats() does next: flush, or return. */
	if (force || needs_flush) {
		ledger = ledger_entry();
		if (ledger)
			__sync_fetch_and_add(&ledger->flushes, 1);
	}
	if (!needs_flush)
		return 0;
	t = bpf_task_storage_get(&task_ctxs, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (t) {
		t->flush_ts = bpf_ktime_get_ns();
		t->flush_updates = stats_updates;
	}
	return 0;
}

/* ---- syscalls: the one in flight, for attribution; slow ones, reported ---- */

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	struct ns_task_ctx *t = bpf_task_storage_get(&task_ctxs, bpf_get_current_task_btf(), 0,
						  BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!t)
		return 0;
	t->sys_start = bpf_ktime_get_ns();
	t->sys_nr = id;
	t->sys_arg0 = PT_REGS_PARM1_CORE_SYSCALL(regs);
	t->culprit = 0;
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit, struct pt_regs *regs, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct ns_task_ctx *t = bpf_task_storage_get(&task_ctxs, task, 0, 0);
	struct ns_trace_event *e;
	__u64 now, start;

	if (!t || !t->sys_start)
		return 0;
	now = bpf_ktime_get_ns();
	start = t->sys_start;
	t->sys_start = 0;
	if (now - start < syscall_threshold_ns && !t->culprit)
		return 0;
	e = reserve(TK_SYSCALL, bpf_get_smp_processor_id());
	if (!e)
		return 0;
	e->start_ns = start;
	e->end_ns = now;
	e->detail.syscall.ret = ret;
	set_current(&e->task);
	e->sys_nr = t->sys_nr;
	e->sys_arg0 = t->sys_arg0;
	e->sys_start_ns = start;
	e->flags |= TF_HAS_SYSCALL | (t->culprit ? TF_CULPRIT : 0);
	if (is_fd_syscall(t->sys_nr))
		resolve_fd_path(e, task, t->sys_arg0);
	t->culprit = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* ---- icmp: echo requests processed, in the context that processed them ---- */

/* fentry/icmp_echo is refused on locked-down kernels; icmp_rcv() calls
 * consume_skb(skb) right after the echo handler succeeded, in the same
 * context, so consume_skb called from icmp_rcv with an echo header is
 * "echo request processed". */
SEC("tp_btf/consume_skb")
int BPF_PROG(on_icmp_consume, struct sk_buff *skb, void *location)
{
	__u64 loc = (__u64)location;
	__u32 cpu = bpf_get_smp_processor_id();
	struct icmphdr icmph;
	struct ns_trace_event *e;
	unsigned char *head;
	__u16 thoff;

	if (loc < icmp_rcv_start || loc >= icmp_rcv_end || !cpu_selected(cpu))
		return 0;
	head = BPF_CORE_READ(skb, head);
	thoff = BPF_CORE_READ(skb, transport_header);
	if (bpf_probe_read_kernel(&icmph, sizeof(icmph), head + thoff))
		return 0;
	if (icmph.type != 8 /* ICMP_ECHO */)
		return 0;
	e = reserve(TK_ICMP_ECHO, cpu);
	if (!e)
		return 0;
	e->start_ns = bpf_ktime_get_ns();
	e->end_ns = e->start_ns;
	e->detail.icmp_echo.seq = bpf_ntohs(icmph.un.echo.sequence);
	e->detail.icmp_echo.id = bpf_ntohs(icmph.un.echo.id);
	set_current(&e->task);
	bpf_ringbuf_submit(e, 0);
	return 0;
}
