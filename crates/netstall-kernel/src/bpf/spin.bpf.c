// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Test-only stall injector (`netstall lab spin`).
 *
 * On one CPU, at most once per period, busy-waits inside a non-NET_RX softirq.
 * Bottom halves are disabled for the whole wait, so the NET_RX backlog of that
 * CPU is not drained: a deterministic stall of spin_ns, for tests and the lab.
 * IRQs stay on (the local timer keeps ticking): this is a BH-off stall.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 target_cpu = 0;
const volatile __u64 spin_ns = 50000000ULL;
const volatile __u64 period_ns = 1000000000ULL;

struct spin_event {
	__u64 start_ns; /* CLOCK_MONOTONIC */
	__u64 end_ns;
	__u32 vec;      /* softirq vector the wait ran in */
	__u32 cpu;
};
struct spin_event _spin_event_unused = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} spins SEC(".maps");

__u64 last_spin_ns = 0;

struct deadline { __u64 end; };

static long wait_until(__u64 i, struct deadline *d)
{
	return bpf_ktime_get_ns() >= d->end ? 1 : 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(spin_in_softirq, unsigned int vec)
{
	if (bpf_get_smp_processor_id() != target_cpu || vec == NET_RX_SOFTIRQ)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (last_spin_ns && now - last_spin_ns < period_ns)
		return 0;
	last_spin_ns = now;

	struct deadline d = { .end = now + spin_ns };
	/* bpf_loop caps iterations at 1 << 23; each one reads the clock, so
	 * this bounds the wait well above any spin_ns userspace allows. */
	bpf_loop(1 << 23, wait_until, &d, 0);

	struct spin_event *e = bpf_ringbuf_reserve(&spins, sizeof(*e), 0);
	if (e) {
		e->start_ns = now;
		e->end_ns = bpf_ktime_get_ns();
		e->vec = vec;
		e->cpu = target_cpu;
		bpf_ringbuf_submit(e, 0);
	}
	return 0;
}
