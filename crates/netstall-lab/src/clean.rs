//! `lab clean`: releases the lab's dying cgroups and removes their data.
//!
//! Removing the files frees the page cache that pins the zombies; dropping
//! clean caches (`drop_caches` level 1, the level measured to release them
//! on current kernels) catches what other files still pin.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::zombies::ZombiePaths;
pub use netstall_events::lab::CleanReport;

/// How long to wait at most for the kernel to free released cgroups.
const SETTLE: Duration = Duration::from_secs(20);
/// The count is settled once it has not fallen for this long.
const STEADY: Duration = Duration::from_secs(1);

pub fn clean(paths: &ZombiePaths) -> Result<CleanReport> {
    netstall_core::privilege::require_root("lab clean")?;
    let started = Instant::now();
    let before = netstall_cgroups::memory_count()?;
    let files_removed = paths.file_count() as u64;
    if paths.data_dir.exists() {
        std::fs::remove_dir_all(&paths.data_dir)
            .with_context(|| format!("cannot remove {}", paths.data_dir.display()))?;
    }
    if let Some(prefix_dir) = paths.data_dir.parent() {
        let _ = std::fs::remove_dir(prefix_dir);
    }
    std::fs::write("/proc/sys/vm/drop_caches", "1")
        .context("cannot write /proc/sys/vm/drop_caches")?;
    if paths.parent.exists() {
        remove_cgroup_tree(&paths.parent)?;
    }
    // Freed cgroups go away asynchronously (RCU grace periods, then a
    // workqueue), in bursts: wait until the count has stopped falling for a
    // whole second, not just between two reads.
    let mut lowest = netstall_cgroups::memory_count()?.dying;
    let mut fell_at = Instant::now();
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline && fell_at.elapsed() < STEADY {
        std::thread::sleep(Duration::from_millis(250));
        let now = netstall_cgroups::memory_count()?.dying;
        if now < lowest {
            lowest = now;
            fell_at = Instant::now();
        }
    }
    Ok(CleanReport {
        dying_before: before.dying,
        dying_after: netstall_cgroups::memory_count()?.dying,
        files_removed,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// Removes a cgroup directory and its children, deepest first (cgroup
/// directories are removed with rmdir, never by deleting their files).
fn remove_cgroup_tree(dir: &std::path::Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir).with_context(|| format!("cannot remove cgroup {}", dir.display()))
}
