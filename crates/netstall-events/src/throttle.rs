//! CFS bandwidth throttling per CPU cgroup (the doctor's `throttle` source):
//! what the scheduler counted for one cgroup during an interval, read in
//! the kernel (never from cpu.stat, whose read flushes rstat on cgroup v2).
//!
//! All `*_ns` are CLOCK_REALTIME nanoseconds.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One CPU cgroup's throttling during `start_ns..end_ns` (two readings of
/// its `struct cfs_bandwidth`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuThrottle {
    pub start_ns: u64,
    pub end_ns: u64,
    /// The cgroup's path in the cpu controller's hierarchy, from its root
    /// (`/kubepods/burstable/pod…/…`); for a cgroup removed before netstall
    /// could see its directory, `…/NAME`.
    pub cgroup: String,
    /// The cgroup's id (its directory's inode number).
    pub cgroup_id: u64,
    /// CPU time allowed per period, in ms (`None`: no limit of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_ms: Option<f64>,
    pub period_ms: f64,
    /// Periods in the interval in which it had runnable tasks ...
    pub periods: u64,
    /// ... and how many of them ran out of quota.
    pub throttled: u64,
    /// Time its runqueues spent throttled, summed over CPUs.
    pub throttled_ms: f64,
    /// The cgroup was removed at `start_ns` (its last reading): nothing of
    /// it is counted after (the counts of this record are zero).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

impl fmt::Display for CpuThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.removed {
            return write!(f, "throttled  cgroup {} removed", self.cgroup);
        }
        write!(
            f,
            "throttled  {} of {} periods, {:.1} ms, cgroup {}",
            self.throttled, self.periods, self.throttled_ms, self.cgroup
        )?;
        if let Some(quota) = self.quota_ms {
            write!(f, " (quota {quota:.0} ms per {:.0} ms)", self.period_ms)?;
        }
        Ok(())
    }
}

/// The process on this host that listens for a doctor target (found by its
/// listening socket in any network namespace), with its CPU cgroup: what
/// ties a cgroup's throttling to the target's slow answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetServer {
    pub pid: u32,
    pub comm: String,
    /// Its cgroups in the cpu controller's hierarchy: at the start of the
    /// run, and at the end if it moved.
    pub cgroups: Vec<String>,
}
