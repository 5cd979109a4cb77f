// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* CFS bandwidth throttling per CPU cgroup, read in the kernel.
 *
 *   iter/cgroup   walks one cgroup hierarchy (the one the cpu controller is
 *                 on) and writes a throttle_row to `rows` for every live
 *                 cgroup with a bandwidth limit or a throttled period, from
 *                 its task group's struct cfs_bandwidth.
 *
 * Why not cpu.stat: on cgroup v2, reading cpu.stat flushes rstat (the
 * story's culprit: on older kernels memcg stats too). This reads the
 * scheduler's own counters and touches no rstat, no memcg, no file, and
 * disables no interrupts; it runs only when userspace reads the iterator.
 * kprobes/fentry on throttle_cfs_rq would be per event, but they do not
 * load on every kernel (not on this one); the counters do not need them.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "throttle.h"

char LICENSE[] SEC("license") = "GPL";

#define RUNTIME_INF ((__u64)~0ULL)

/* The cgroup iterator cannot resume a walk across read() calls (it drops
 * cgroup_mutex between them), and one read holds 32 KiB: rows go to a
 * ring buffer, not to the seq file, so any number of cgroups fits in one
 * walk, and userspace reads them without a syscall per row. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, THROTTLE_RING_BYTES);
} rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} state SEC(".maps");

/* Exported so the skeleton carries the type. */
struct throttle_row _throttle_row_unused = {};

SEC("iter/cgroup")
int dump_throttle(struct bpf_iter__cgroup *ctx)
{
	struct cgroup *cgrp = ctx->cgroup;
	struct cgroup_subsys_state *css = NULL;
	struct throttle_row row = {};

	if (!cgrp)
		return 0;
	if (!bpf_core_field_exists(struct task_group, cfs_bandwidth))
		return 1; /* no CONFIG_CFS_BANDWIDTH: nothing to read, stop */
	int id = bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id);
	if (id < 0 || id >= 16)
		return 1;
	bpf_core_read(&css, sizeof(css), &cgrp->subsys[id]);
	if (!css)
		return 0; /* the cpu controller is not enabled here (v2) */
	/* A removed cgroup stays in the walk while it dies: it is gone for us. */
	if (!(BPF_CORE_READ(css, flags) & CSS_ONLINE))
		return 0;
	/* css is a task_group's first member: container_of by its offset. */
	struct task_group *tg = (void *)css - bpf_core_field_offset(struct task_group, css);

	row.quota_ns = BPF_CORE_READ(tg, cfs_bandwidth.quota);
	row.nr_throttled = BPF_CORE_READ(tg, cfs_bandwidth.nr_throttled);
	if (row.quota_ns == RUNTIME_INF && row.nr_throttled == 0)
		return 0; /* unlimited and never throttled */
	row.cgroup_id = BPF_CORE_READ(cgrp, kn, id);
	row.period_ns = BPF_CORE_READ(tg, cfs_bandwidth.period);
	row.throttled_ns = BPF_CORE_READ(tg, cfs_bandwidth.throttled_time);
	row.nr_periods = BPF_CORE_READ(tg, cfs_bandwidth.nr_periods);
	const char *name = BPF_CORE_READ(cgrp, kn, name);
	bpf_probe_read_kernel_str(row.name, sizeof(row.name), name);
	/* No wakeup: userspace consumes the ring right after the walk. */
	if (bpf_ringbuf_output(&rows, &row, sizeof(row), BPF_RB_NO_WAKEUP)) {
		__u32 at = STATE_OVERFLOW;
		__u64 *overflow = bpf_map_lookup_elem(&state, &at);
		if (overflow)
			__sync_fetch_and_add(overflow, 1);
	}
	return 0;
}
