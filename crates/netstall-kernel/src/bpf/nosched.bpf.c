// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Test-only injector of a non-preemptible kernel section (`netstall lab nosched`).
 *
 * A BPF_PROG_TYPE_SYSCALL program, run by the bpf(BPF_PROG_TEST_RUN) syscall
 * of the injector's thread: it busy-waits in that syscall, in kernel code
 * that never calls cond_resched(), with IRQs and bottom halves on. On a
 * PREEMPT_NONE kernel nothing preempts it: another task runnable on the
 * same CPU waits for the whole section, while timer ticks and softirqs keep
 * running. (A preemptible kernel would preempt it: nothing to see there.)
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct nosched_args {
	__u64 spin_ns; /* capped by userspace */
};

struct deadline { __u64 end; };

static long wait_until(__u64 i, struct deadline *d)
{
	return bpf_ktime_get_ns() >= d->end ? 1 : 0;
}

SEC("syscall")
int spin_in_syscall(struct nosched_args *args)
{
	struct deadline d = { .end = bpf_ktime_get_ns() + args->spin_ns };

	/* bpf_loop caps iterations at 1 << 23, each reads the clock: a bound
	 * well above the longest spin userspace allows. */
	bpf_loop(1 << 23, wait_until, &d, 0);
	return 0;
}
