//! `lab zombies`: real dying memory cgroups.
//!
//! Each cgroup is made under `<memory mount>/netstall-<prefix>/`, a short
//! child process joins it and writes a small file (its page cache is charged
//! to that cgroup), the child exits and the cgroup is removed. The page cache
//! keeps the removed cgroup alive in the kernel: a dying ("zombie") memcg,
//! exactly what pinned tens of thousands of them in the story. The memory
//! hierarchy is v1 where it is mounted (the story's nodes), else v2, where
//! the memory controller is enabled for the parent's children first.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use netstall_core::output::Output;
pub use netstall_events::lab::ZombieReport;

/// Page cache charged to each zombie: enough to pin it, small enough that
/// 50k of them are 800 MB.
pub const FILE_BYTES: usize = 16 * 1024;
/// The most zombies one call makes (the story's scale, with headroom).
pub const MAX_COUNT: u32 = 100_000;

/// Where a lab's zombies live.
#[derive(Debug, Clone)]
pub struct ZombiePaths {
    /// The live parent cgroup the zombies were children of.
    pub parent: PathBuf,
    /// The files whose page cache pins them.
    pub data_dir: PathBuf,
}

impl ZombiePaths {
    /// Paths for the lab `prefix` under the memory hierarchy at `memory_mount`.
    pub fn new(memory_mount: &Path, prefix: &str) -> Self {
        Self {
            parent: memory_mount.join(format!("netstall-{prefix}")),
            data_dir: PathBuf::from(format!("/var/tmp/netstall/{prefix}/zombies")),
        }
    }

    /// Paths for `prefix` on this host's memory hierarchy (v1 or v2).
    pub fn for_host(prefix: &str) -> Result<Self> {
        let memory = netstall_cgroups::memory_count()?;
        Ok(Self::new(&memory.mount, prefix))
    }

    /// Number of files (one per zombie made so far).
    pub fn file_count(&self) -> usize {
        std::fs::read_dir(&self.data_dir)
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// [`create`], telling on stderr where and how far it is.
pub fn create_narrated(paths: &ZombiePaths, count: u32, out: Output) -> Result<ZombieReport> {
    out.progress(format!(
        "making {count} dying memory cgroups under {}...",
        paths.parent.display()
    ));
    create(paths, count, |done| {
        if done > 0 && done % 2000 == 0 {
            out.progress(format!("  {done}/{count}"));
        }
    })
}

/// Makes `count` dying memory cgroups; `progress(done)` is called now and then.
pub fn create(
    paths: &ZombiePaths,
    count: u32,
    mut progress: impl FnMut(u32),
) -> Result<ZombieReport> {
    netstall_core::privilege::require_root("lab zombies")?;
    if count == 0 || count > MAX_COUNT {
        bail!("--count must be between 1 and {MAX_COUNT}");
    }
    let before = netstall_cgroups::memory_count()?;
    std::fs::create_dir_all(&paths.parent)
        .with_context(|| format!("cannot create cgroup {}", paths.parent.display()))?;
    if before.version == 2 {
        enable_memory_for_children(&before.mount, &paths.parent)?;
    }
    std::fs::create_dir_all(&paths.data_dir)
        .with_context(|| format!("cannot create {}", paths.data_dir.display()))?;

    // New files never overwrite old ones: truncating a file would free its
    // page cache and release the zombie it pins.
    let first = paths.file_count() as u64;
    let started = Instant::now();
    let payload = vec![b'z'; FILE_BYTES];
    let mut failed = 0;
    for i in 0..count {
        let n = first + u64::from(i);
        let cgroup = paths.parent.join(format!("z{n}"));
        let file = paths.data_dir.join(format!("f{n}"));
        if let Err(e) = make_one(&cgroup, &file, &payload) {
            failed += 1;
            if failed == 1 && i == 0 {
                return Err(e.context("cannot make a dying memory cgroup"));
            }
        }
        if i % 500 == 0 {
            progress(i);
        }
    }
    progress(count);
    let after = netstall_cgroups::memory_count()?;
    Ok(ZombieReport {
        created: count - failed,
        failed,
        dying_before: before.dying,
        dying_after: after.dying,
        parent: paths.parent.clone(),
        data_dir: paths.data_dir.clone(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// On cgroup v2 a child has a memory controller only if every ancestor
/// lists `memory` in `cgroup.subtree_control`: enables it from the root down
/// to `parent` where it is not already (systemd hosts have it at the root).
fn enable_memory_for_children(mount: &Path, parent: &Path) -> Result<()> {
    let below_root = parent.strip_prefix(mount).unwrap_or(Path::new(""));
    let mut dir = mount.to_path_buf();
    let mut levels = vec![dir.clone()];
    for part in below_root.components() {
        dir.push(part);
        levels.push(dir.clone());
    }
    for level in levels {
        let control = level.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&control)
            .with_context(|| format!("cannot read {}", control.display()))?;
        if !enabled.split_whitespace().any(|c| c == "memory") {
            std::fs::write(&control, "+memory").with_context(|| {
                format!(
                    "cannot enable the memory controller in {}",
                    control.display()
                )
            })?;
        }
    }
    Ok(())
}

fn make_one(cgroup: &Path, file: &Path, payload: &[u8]) -> Result<()> {
    std::fs::create_dir(cgroup).with_context(|| format!("mkdir {}", cgroup.display()))?;
    let procs = CString::new(
        cgroup
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )?;
    let file_c = CString::new(file.as_os_str().as_encoded_bytes())?;
    let result = charge_in_child(&procs, &file_c, payload);
    std::fs::remove_dir(cgroup).with_context(|| format!("rmdir {}", cgroup.display()))?;
    result
}

/// Forks a child that joins the cgroup and writes the file, so the page
/// cache is charged there. The child only makes raw syscalls on buffers
/// prepared before the fork (async-signal-safe).
fn charge_in_child(procs: &CString, file: &CString, payload: &[u8]) -> Result<()> {
    // SAFETY: fork in a process that runs no other threads at this point
    // (the CLI is single-threaded here); the child only calls open/write/
    // close/_exit on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        // SAFETY: see above; every path is a valid NUL-terminated string.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(2);
            }
            libc::close(fd);
            let fd = libc::open(
                file.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                0o644,
            );
            if fd < 0
                || libc::write(fd, payload.as_ptr().cast(), payload.len()) != payload.len() as isize
            {
                libc::_exit(3);
            }
            libc::close(fd);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child we just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "the charging child failed (exit {}): cannot join the cgroup or write {}",
            libc::WEXITSTATUS(status),
            file.to_string_lossy()
        );
    }
    Ok(())
}
