//! Dying ("zombie") cgroups: removed directories the kernel still keeps
//! because something (page cache, for memory) is charged to them. Tens of
//! thousands of dying memory cgroups made every memory.stat read stall a CPU
//! in the story; this crate counts them, names who makes them, times one
//! read, and proves (or disproves) a remedy.
//!
//! * [`report::report`]: the typed report (per controller and hierarchy, v1,
//!   v2 and hybrid; kernel-era advice), printing nothing: the doctor calls it.
//! * [`canary`]: one timed memory.stat read, only on request.
//! * [`watch`]: churn per parent from the cgroup tracepoints (or polling).
//! * [`remediate`]: the guarded drop_caches ladder with before/after counts.
//! * Parsers ([`mounts`], [`proc_cgroups`], [`stat`]) and [`advice`] are pure;
//!   every read goes through [`host::Host`], so all of it runs on recordings.

pub mod advice;
pub mod canary;
pub mod host;
pub mod mounts;
pub mod proc_cgroups;
pub mod remediate;
pub mod report;
pub mod stat;
pub mod watch;

pub use host::Host;
pub use report::{report, Report};

use std::path::Path;

use anyhow::{Context, Result};

/// Counts the cgroup directories under `mount`, the root included.
///
/// Only directories are walked and symlinks are not followed; a directory
/// that vanishes during the walk (a cgroup removed meanwhile) is skipped.
pub fn count_live_dirs(mount: &Path) -> Result<u64> {
    let mut count = 1;
    let mut stack = vec![mount.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if dir != mount && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                count += 1;
                stack.push(entry.path());
            }
        }
    }
    Ok(count)
}

/// Dying memory cgroups, measured now: `num_cgroups` of `memory` in
/// /proc/cgroups minus the live directories of the memory hierarchy (v1,
/// or v2 where memory is on the unified hierarchy).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemoryCount {
    /// 1 or 2.
    pub version: u8,
    /// Where the memory hierarchy is mounted.
    pub mount: std::path::PathBuf,
    pub total: u64,
    pub live: u64,
    pub dying: u64,
}

/// Measures [`MemoryCount`] from the running system.
pub fn memory_count() -> Result<MemoryCount> {
    let memory = report::memory_count(&Host::live())?;
    Ok(MemoryCount {
        version: memory.version,
        mount: memory.mount,
        total: memory.total,
        live: memory.live,
        dying: memory.dying,
    })
}
