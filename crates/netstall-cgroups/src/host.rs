//! Where the report's files are read from: `/` on a live host, or a
//! directory of recorded files (`tests/data/<host>/proc/cgroups`, ...) in tests.
//!
//! Every read goes through [`Host`] so the whole report can be built from a
//! recording, and every failure names the file the user would look at.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::mounts::{self, CgroupMount};
use crate::proc_cgroups::{self, ControllerLine};
use crate::stat::{self, CgroupStat};

/// A host's `/proc` and cgroup filesystems, seen from `root`.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    /// The running system.
    pub fn live() -> Self {
        Self::at("/")
    }

    /// A host whose `/` is the directory `root` (recorded files in tests).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Whether this is the running system (only then may anything be written or timed).
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The real location of the host path `path` (absolute, as the host sees it).
    pub fn path(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Reads a small text file, failing with the host path in the message.
    pub fn read(&self, path: &Path) -> Result<String> {
        std::fs::read_to_string(self.path(path))
            .with_context(|| format!("cannot read {}", path.display()))
    }

    /// The kernel release (`uname -r`).
    pub fn kernel_release(&self) -> Result<String> {
        Ok(self
            .read(Path::new("/proc/sys/kernel/osrelease"))?
            .trim()
            .to_owned())
    }

    /// The cgroup mounts in this process's mount namespace.
    pub fn mounts(&self) -> Result<Vec<CgroupMount>> {
        let text = self.read(Path::new("/proc/self/mountinfo"))?;
        Ok(mounts::parse_mountinfo(&text))
    }

    /// `/proc/cgroups`, parsed.
    pub fn proc_cgroups(&self) -> Result<Vec<ControllerLine>> {
        proc_cgroups::parse(&self.read(Path::new("/proc/cgroups"))?)
    }

    /// The `cgroup.stat` of the v2 cgroup directory `dir`.
    pub fn cgroup_stat(&self, dir: &Path) -> Result<CgroupStat> {
        let file = dir.join("cgroup.stat");
        stat::parse(&self.read(&file)?).with_context(|| format!("in {}", file.display()))
    }

    /// The controllers enabled on the v2 hierarchy mounted at `mount`.
    pub fn v2_controllers(&self, mount: &Path) -> Result<Vec<String>> {
        Ok(self
            .read(&mount.join("cgroup.controllers"))?
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    }

    /// Live cgroup directories under `mount`, its root included.
    pub fn count_live_dirs(&self, mount: &Path) -> Result<u64> {
        crate::count_live_dirs(&self.path(mount))
            .with_context(|| format!("cannot count the cgroups under {}", mount.display()))
    }

    /// The cgroup directories exactly `depth` levels below `dir` (host paths),
    /// at most `limit` of them.
    pub fn child_dirs(&self, dir: &Path, depth: u32, limit: usize) -> Vec<PathBuf> {
        let mut level = vec![dir.to_path_buf()];
        for _ in 0..depth {
            let mut next = Vec::new();
            for parent in &level {
                let Ok(entries) = std::fs::read_dir(self.path(parent)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    if next.len() >= limit {
                        break;
                    }
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        next.push(parent.join(entry.file_name()));
                    }
                }
            }
            level = next;
        }
        level.sort();
        level
    }
}
