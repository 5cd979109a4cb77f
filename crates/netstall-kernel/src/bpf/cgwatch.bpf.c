// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Cgroup churn watcher (`netstall cgroups --watch`).
 *
 * Every cgroup created (mkdir), removed (rmdir: it becomes a dying cgroup
 * until the last reference goes) and released (freed for good) on any
 * hierarchy, with its path, goes to userspace, which ranks the parents by
 * churn. Tracepoints only (tp_btf): the cgroup events are rare, so one ring
 * buffer record per event costs nothing measurable.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define CG_PATH_MAX 256

enum cg_op {
	CG_MKDIR = 1,
	CG_RMDIR = 2,
	CG_RELEASE = 3,
};

struct cg_event {
	__u64 ts_ns;       /* CLOCK_MONOTONIC */
	enum cg_op op;     /* an enum, so the Rust side gets its values from the BTF */
	__s32 hierarchy_id; /* 0: the cgroup v2 hierarchy */
	__s32 level;       /* depth below the hierarchy root */
	__u32 path_len;    /* bytes in path without the NUL; CG_PATH_MAX - 1 may mean truncated */
	__u32 pid;         /* the task doing it (tgid); a kworker for releases */
	char comm[16];
	char path[CG_PATH_MAX]; /* relative to the hierarchy root, e.g. "/kubepods/pod1/c1" */
};
struct cg_event _cg_event_unused = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} cg_events SEC(".maps");

/* Events lost because userspace fell behind (ring buffer full). */
__u64 dropped = 0;

static __always_inline int emit(struct cgroup *cgrp, const char *path, enum cg_op op)
{
	struct cg_event *e = bpf_ringbuf_reserve(&cg_events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&dropped, 1);
		return 0;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->op = op;
	e->hierarchy_id = BPF_CORE_READ(cgrp, root, hierarchy_id);
	e->level = BPF_CORE_READ(cgrp, level);
	e->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	long n = bpf_probe_read_kernel_str(e->path, sizeof(e->path), path);
	e->path_len = n > 0 ? n - 1 : 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(on_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	return emit(cgrp, path, CG_MKDIR);
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(on_cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	return emit(cgrp, path, CG_RMDIR);
}

SEC("tp_btf/cgroup_release")
int BPF_PROG(on_cgroup_release, struct cgroup *cgrp, const char *path)
{
	return emit(cgrp, path, CG_RELEASE);
}
