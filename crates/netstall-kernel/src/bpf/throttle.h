/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The interface of throttle.bpf.c: one row per CPU cgroup with a CFS
 * bandwidth limit, written to the ring buffer `rows` on each walk and
 * consumed by src/throttle.rs after it. */
#ifndef NETSTALL_THROTTLE_H
#define NETSTALL_THROTTLE_H

#define THROTTLE_NAME_LEN 64
/* The ring holds about 20,000 rows; rows it cannot take are counted
 * (STATE_OVERFLOW). */
#define THROTTLE_RING_BYTES (2 << 20)
/* The `state` array: the rows lost to a full ring. */
#define STATE_OVERFLOW 0

/* A cgroup's CFS bandwidth counters as the scheduler keeps them
 * (struct cfs_bandwidth): cumulative since the cgroup was created. */
struct throttle_row {
	__u64 cgroup_id;     /* kernfs id: the directory's inode number */
	__u64 quota_ns;      /* runtime per period; ~0: no limit */
	__u64 period_ns;
	__u64 throttled_ns;  /* time its runqueues spent throttled */
	__u32 nr_periods;    /* periods with runnable tasks */
	__u32 nr_throttled;  /* of those, periods that ran out of quota */
	char name[THROTTLE_NAME_LEN]; /* the directory's name (a vanished cgroup keeps it) */
};

#endif
