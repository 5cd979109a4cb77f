//! `lab poller`: a cadvisor-like reader of `memory.stat`.
//!
//! Like a monitoring agent, it reads `memory.stat` on an interval. Before each
//! read it touches the zombies' page cache (fault, `MADV_COLD`, re-read), which
//! moves those pages on the LRU and leaves pending stat updates on every dying
//! memcg, so the read has to flush them all, with IRQs off, on its CPU.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netstall_core::output::Output;
pub use netstall_events::lab::PollRead;

/// How to poll.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// The file read each round (the memory hierarchy's root memory.stat by default).
    pub stat_path: PathBuf,
    /// The zombies' files to touch before each read; none when not given.
    pub touch_dir: Option<PathBuf>,
    pub interval: Duration,
    pub duration: Duration,
    pub cpu: Option<u32>,
    /// The process name, as `ps`, `top` and tracers will show it.
    pub comm: String,
}

impl PollerConfig {
    /// A poller for the lab `prefix`: reads `path` (by default the memory
    /// hierarchy's root memory.stat, on cgroup v2 without one the lab's
    /// zombies' parent's) and touches the lab's zombie files, if any.
    pub fn for_lab(
        prefix: &str,
        path: Option<PathBuf>,
        interval: Duration,
        duration: Duration,
        cpu: Option<u32>,
        comm: String,
    ) -> Result<Self> {
        let paths = crate::zombies::ZombiePaths::for_host(prefix)?;
        let stat_path = match path {
            Some(path) => path,
            // The hierarchy's root memory.stat; cgroup v2 may have none at
            // the root: then the zombies' parent's, whose read flushes the
            // same dying memcgs.
            None => paths
                .parent
                .parent()
                .map(|mount| mount.join("memory.stat"))
                .filter(|root| root.exists())
                .unwrap_or_else(|| paths.parent.join("memory.stat")),
        };
        Ok(Self {
            stat_path,
            touch_dir: paths.data_dir.exists().then_some(paths.data_dir),
            interval,
            duration,
            cpu,
            comm,
        })
    }
}

/// [`run`], each read printed as it comes: `cadvisor [42] read PATH in
/// 25.31 ms (touched 20000 files)`, or its `poll` record.
pub fn run_printed(config: &PollerConfig, out: Output) -> Result<Vec<PollRead>> {
    run(config, |read| {
        out.json(read.clone());
        out.text(format!(
            "{} [{}] read {} in {:.2} ms (touched {} files)",
            config.comm,
            read.pid,
            read.path.display(),
            read.read_ms,
            read.touched_files
        ));
    })
}

/// Runs the poller for `config.duration`, calling `on_read` after each read.
pub fn run(config: &PollerConfig, mut on_read: impl FnMut(&PollRead)) -> Result<Vec<PollRead>> {
    if config.comm.is_empty() || config.comm.len() > 15 {
        bail!("--comm must be 1-15 characters (the kernel's task name limit)");
    }
    if let Some(cpu) = config.cpu {
        netstall_core::cpu::check_online(&[cpu])?;
        netstall_core::sys::pin_to_cpu(cpu)?;
    }
    set_comm(&config.comm)?;
    let started = Instant::now();
    let mut reads = Vec::new();
    let mut seq = 0;
    let mut buf = Vec::with_capacity(8192);
    while started.elapsed() < config.duration {
        let round = Instant::now();
        let touched_files = match &config.touch_dir {
            Some(dir) => touch_page_cache(dir)?,
            None => 0,
        };
        let start_ns = netstall_core::clock::realtime_ns();
        let t0 = Instant::now();
        buf.clear();
        std::fs::File::open(&config.stat_path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .with_context(|| format!("cannot read {}", config.stat_path.display()))?;
        let read = PollRead {
            seq,
            pid: std::process::id(),
            cpu: config.cpu,
            path: config.stat_path.clone(),
            start_ns,
            read_ms: t0.elapsed().as_secs_f64() * 1e3,
            touched_files,
        };
        on_read(&read);
        reads.push(read);
        seq += 1;
        let next = round + config.interval;
        let end = started + config.duration;
        std::thread::sleep(next.min(end).saturating_duration_since(Instant::now()));
    }
    Ok(reads)
}

fn set_comm(comm: &str) -> Result<()> {
    let name = std::ffi::CString::new(comm).context("--comm contains a NUL byte")?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set the process name");
    }
    Ok(())
}

/// Cycles every file's pages through the LRU so their (dying) memcgs get
/// pending stat updates: fault them in through a mapping, mark them cold,
/// read them twice.
fn touch_page_cache(dir: &Path) -> Result<u32> {
    let mut touched = 0;
    let mut buf = vec![0u8; crate::zombies::FILE_BYTES];
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries.flatten() {
        let Ok(file) = std::fs::File::open(entry.path()) else {
            continue;
        };
        let len = crate::zombies::FILE_BYTES;
        // SAFETY: a read-only shared mapping of an open file, unmapped before the file closes.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            if map != libc::MAP_FAILED {
                let mut sum = 0u8;
                for offset in (0..len).step_by(4096) {
                    sum = sum.wrapping_add(std::ptr::read_volatile(map.cast::<u8>().add(offset)));
                }
                std::hint::black_box(sum);
                libc::madvise(map, len, libc::MADV_COLD);
                libc::munmap(map, len);
            }
        }
        use std::os::unix::fs::FileExt;
        let _ = file.read_at(&mut buf, 0);
        let _ = file.read_at(&mut buf, 0);
        touched += 1;
    }
    Ok(touched)
}
