//! CFS bandwidth throttling per CPU cgroup, read in the kernel
//! (`src/bpf/throttle.bpf.c`) and reported per interval as [`CpuThrottle`].
//!
//! A BPF cgroup iterator walks the hierarchy the cpu controller is on and
//! copies each limited cgroup's `struct cfs_bandwidth` counters (periods,
//! throttled periods, throttled time): the numbers cpu.stat prints, without
//! reading cpu.stat. On cgroup v2 a cpu.stat read flushes rstat (and on
//! kernels before the per-subsystem split, memcg stats too: the story's
//! culprit); the iterator touches no rstat, no memcg and no file, disables
//! no interrupts, and costs a few loads per cgroup each time it is read.
//! Userspace reads it every [`ThrottleConfig::interval`] (1 s) and reports
//! the cgroups whose counters grew.

use std::collections::HashMap;
use std::io::Read;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{
    CgroupIterOpts, CgroupIterOrder, Iter, MapCore, MapFlags, MapHandle, OpenObject, RingBuffer,
    RingBufferBuilder,
};
pub use netstall_events::throttle::CpuThrottle;

use crate::skel::throttle::types::throttle_row;
use crate::skel::throttle::ThrottleSkelBuilder;
use crate::trace::Stop;

/// What to read.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Read the counters this often. A slow answer is tied to throttling by
    /// the cgroup that holds its server, not by time alone, so a second is
    /// fine enough; each read walks every cgroup (bench/throttle.sh: about
    /// 2 µs per limited cgroup, 0.9 ms for 500).
    pub interval: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
        }
    }
}

/// What the throttling reader streams.
#[derive(Debug, Clone, PartialEq)]
pub enum ThrottleEvent {
    /// The first reading is taken: throttling from now on is reported.
    Started {
        /// Where the cpu controller's hierarchy is mounted.
        hierarchy: PathBuf,
        /// Cgroups with a CFS limit at the start.
        limited: usize,
    },
    Throttle(CpuThrottle),
    /// A cgroup that had been throttled was removed: its throttling after
    /// `last_ns` (its last reading) is not counted.
    Vanished {
        cgroup: String,
        last_ns: u64,
    },
    /// Rows the kernel could not hand over (a full ring: more than about
    /// 20,000 limited cgroups): their cgroups are missing from the readings.
    Lost(u64),
}

/// A cgroup's CFS bandwidth counters (cumulative since it was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Runtime per period; `u64::MAX`: no limit.
    pub quota_ns: u64,
    pub period_ns: u64,
    pub throttled_ns: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
}

/// One reading of every limited cgroup: id → (directory name, counters).
pub type Reading = HashMap<u64, (String, Counters)>;

/// Where the cpu controller is mounted, from `/proc/self/mountinfo`: a v1
/// `cgroup` mount with the `cpu` option, else the v2 mount (whether the
/// controller is enabled there is the caller's to check). Pure.
pub fn cpu_hierarchy(mountinfo: &str) -> Option<(PathBuf, u8)> {
    let mut v2 = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount = left.split_whitespace().nth(4)?;
        let mut right = right.split_whitespace();
        let (fstype, options) = (right.next()?, right.nth(1).unwrap_or_default());
        match fstype {
            "cgroup" if options.split(',').any(|o| o == "cpu") => {
                return Some((PathBuf::from(mount), 1));
            }
            "cgroup2" if v2.is_none() => v2 = Some(PathBuf::from(mount)),
            _ => {}
        }
    }
    v2.map(|m| (m, 2))
}

/// A process's cgroup in the cpu hierarchy (`/proc/PID/cgroup`). Pure.
pub fn cpu_cgroup_of(proc_cgroup: &str, version: u8) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let ours = if version == 2 {
            id == "0" && controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == "cpu")
        };
        ours.then(|| path.to_owned())
    })
}

/// A row of the `rows` map, if it is one. Pure.
fn decode_row(bytes: &[u8]) -> Option<throttle_row> {
    // SAFETY: the bytes are a throttle_row the program wrote (size checked);
    // read_unaligned copes with any alignment.
    (bytes.len() >= std::mem::size_of::<throttle_row>())
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

/// The rows of one walk, by cgroup id. Pure.
pub fn parse_rows(rows: impl IntoIterator<Item = throttle_row>) -> Reading {
    rows.into_iter()
        .map(|row| {
            let name_bytes: Vec<u8> = row
                .name
                .iter()
                .map(|&c| c as u8)
                .take_while(|&b| b != 0)
                .collect();
            (
                row.cgroup_id,
                (
                    String::from_utf8_lossy(&name_bytes).into_owned(),
                    Counters {
                        quota_ns: row.quota_ns,
                        period_ns: row.period_ns,
                        throttled_ns: row.throttled_ns,
                        nr_periods: u64::from(row.nr_periods),
                        nr_throttled: u64::from(row.nr_throttled),
                    },
                ),
            )
        })
        .collect()
}

/// The cgroups throttled between two readings, with what grew. A cgroup
/// absent from `before` was created since: its counters started at zero.
/// `path` names a cgroup by id and directory name. Pure.
pub fn changes(
    before: &Reading,
    now: &Reading,
    (start_ns, end_ns): (u64, u64),
    mut path: impl FnMut(u64, &str) -> String,
) -> Vec<CpuThrottle> {
    let mut out: Vec<CpuThrottle> = now
        .iter()
        .filter_map(|(&id, (name, c))| {
            let b = before.get(&id).map(|(_, c)| *c).unwrap_or_default();
            let throttled = c.nr_throttled.checked_sub(b.nr_throttled)?;
            let throttled_ns = c.throttled_ns.saturating_sub(b.throttled_ns);
            if throttled == 0 && throttled_ns == 0 {
                return None;
            }
            Some(CpuThrottle {
                start_ns,
                end_ns,
                cgroup: path(id, name),
                cgroup_id: id,
                quota_ms: (c.quota_ns != u64::MAX).then(|| ms(c.quota_ns)),
                period_ms: ms(c.period_ns),
                periods: c.nr_periods.saturating_sub(b.nr_periods),
                throttled,
                throttled_ms: ms(throttled_ns),
                removed: false,
            })
        })
        .collect();
    out.sort_by(|a, b| a.cgroup.cmp(&b.cgroup));
    out
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 1e2
}

/// Cgroup directories by id (inode number) under a hierarchy's mount, as
/// paths from its root (`/` for the root). Bounded: at most `limit` directories.
pub fn cgroup_paths(mount: &Path, limit: usize) -> HashMap<u64, String> {
    use std::os::unix::fs::MetadataExt;
    let mut paths = HashMap::new();
    let mut stack = vec![(mount.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        if paths.len() >= limit {
            break;
        }
        // A cgroup removed while we walk is simply not there.
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        paths.insert(
            meta.ino(),
            if rel.is_empty() {
                "/".into()
            } else {
                rel.clone()
            },
        );
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                stack.push((entry.path(), format!("{rel}/{name}")));
            }
        }
    }
    paths
}

const STATE_OVERFLOW: u32 = 0;

/// Directories walked at most to name cgroups.
const MAX_CGROUP_DIRS: usize = 100_000;
/// Walk the hierarchy again for an unknown id at most this often.
const REWALK_EVERY: Duration = Duration::from_secs(1);

/// The cgroup iterator, loaded and attached to the hierarchy the cpu
/// controller is on, with its maps. It can be loaded on one thread and read
/// on another (the agent loads it before it drops its capabilities).
pub struct Reader {
    link: libbpf_rs::Link,
    /// Rows land here as the ring is consumed.
    rows: Arc<Mutex<Vec<throttle_row>>>,
    ring: RingBuffer<'static>,
    state: MapHandle,
    mount: PathBuf,
    paths: HashMap<u64, String>,
    walked: Option<Instant>,
}

impl Reader {
    /// Loads the iterator on the cpu controller's hierarchy.
    pub fn open() -> Result<Self> {
        Self::open_with_ring(None)
    }

    /// The same, with a rows ring of `ring_bytes` (a power of two, at least
    /// a page) instead of 2 MiB. The ring is mapped into this process for
    /// as long as it reads, its data twice (4 MB of RSS for 2 MiB): a
    /// long-running reader (the agent) takes a smaller one. A row is 112
    /// bytes; rows that do not fit are counted ([`Reader::overflow`]).
    pub fn open_with_ring(ring_bytes: Option<u32>) -> Result<Self> {
        crate::require_bpf("the CPU throttling reader")?;
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
        let Some((mount, version)) = cpu_hierarchy(&mountinfo) else {
            bail!("no cgroup hierarchy is mounted (neither a v1 cpu controller nor cgroup2)");
        };
        if version == 2 {
            let controllers =
                std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "cpu") {
                bail!(
                    "the cpu controller is on no hierarchy here ({} has no cpu in cgroup.controllers)",
                    mount.display()
                );
            }
        }
        let dir = std::fs::File::open(&mount)
            .with_context(|| format!("open the cgroup hierarchy {}", mount.display()))?;

        let mut storage = MaybeUninit::<OpenObject>::uninit();
        let mut open = ThrottleSkelBuilder::default()
            .open(&mut storage)
            .context("open the throttle BPF object")?;
        if let Some(bytes) = ring_bytes {
            open.maps
                .rows
                .set_max_entries(bytes)
                .context("size the rows ring")?;
        }
        let skel = open.load().context(
            "load the cgroup iterator (iter/cgroup, Linux 6.1+, and CONFIG_CFS_BANDWIDTH)",
        )?;
        let mut opts = CgroupIterOpts::from_fd(dir.as_fd());
        opts.order = CgroupIterOrder::DescendantsPre;
        // The link holds the program and the hierarchy: the skeleton and
        // the directory may go.
        let link = skel
            .progs
            .dump_throttle
            .attach_iter_with_opts(libbpf_rs::IterOpts::Cgroup(opts))
            .with_context(|| format!("attach the cgroup iterator to {}", mount.display()))?;
        let rows = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&rows);
        let mut ring = RingBufferBuilder::new();
        ring.add(&skel.maps.rows, move |data: &[u8]| {
            if let Some(row) = decode_row(data) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(row);
            }
            0
        })
        .context("read the rows ring")?;
        let ring = ring.build().context("read the rows ring")?;
        let state = MapHandle::try_from(&skel.maps.state).context("keep the state map")?;
        Ok(Self {
            link,
            rows,
            ring,
            state,
            mount,
            paths: HashMap::new(),
            walked: None,
        })
    }

    /// Where the hierarchy is mounted.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// One walk of the hierarchy: every limited or throttled cgroup's counters.
    pub fn read(&self) -> Result<Reading> {
        // The walk fills the ring (its seq output is empty).
        let mut iter = Iter::new(&self.link).context("start the cgroup iterator")?;
        iter.read_to_end(&mut Vec::new())
            .context("walk the cgroups")?;
        self.ring.consume().context("read the rows ring")?;
        let rows = std::mem::take(&mut *self.rows.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(parse_rows(rows))
    }

    /// Rows lost because the ring was full, so far.
    pub fn overflow(&self) -> u64 {
        self.state
            .lookup(&STATE_OVERFLOW.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|v| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?)))
            .unwrap_or(0)
    }

    fn path(&mut self, id: u64, name: &str) -> String {
        if !self.paths.contains_key(&id) && self.walked.is_none_or(|t| t.elapsed() >= REWALK_EVERY)
        {
            self.paths = cgroup_paths(&self.mount, MAX_CGROUP_DIRS);
            self.walked = Some(Instant::now());
        }
        self.paths
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("…/{name}"))
    }
}

/// Reads every limited cgroup's throttling each interval until `stop`,
/// calling `on_event` with the cgroups whose counters grew.
pub fn run(
    config: &ThrottleConfig,
    stop: &Stop,
    mut on_event: impl FnMut(ThrottleEvent),
) -> Result<()> {
    if config.interval.is_zero() {
        bail!("the throttle interval must be positive");
    }
    let mut reader = Reader::open()?;
    let started = Instant::now();
    let mut before = reader.read()?;
    let mut before_ns = netstall_core::clock::realtime_ns();
    on_event(ThrottleEvent::Started {
        hierarchy: reader.mount.clone(),
        limited: before
            .values()
            .filter(|(_, c)| c.quota_ns != u64::MAX)
            .count(),
    });
    // Paths of cgroups seen throttled, to name them when they vanish.
    let mut throttled_paths: HashMap<u64, String> = HashMap::new();
    let mut next_read = Instant::now() + config.interval;
    loop {
        let stopping = stop.should_stop(started);
        if !stopping {
            std::thread::sleep(
                next_read
                    .saturating_duration_since(Instant::now())
                    .min(stop.left(started))
                    .min(Duration::from_millis(100)),
            );
            if Instant::now() < next_read && !stop.should_stop(started) {
                continue;
            }
        }
        next_read += config.interval;
        let now = reader.read()?;
        let now_ns = netstall_core::clock::realtime_ns();
        for change in changes(&before, &now, (before_ns, now_ns), |id, name| {
            reader.path(id, name)
        }) {
            throttled_paths.insert(change.cgroup_id, change.cgroup.clone());
            on_event(ThrottleEvent::Throttle(change));
        }
        for id in before.keys().filter(|id| !now.contains_key(id)) {
            if let Some(cgroup) = throttled_paths.remove(id) {
                on_event(ThrottleEvent::Vanished {
                    cgroup,
                    last_ns: before_ns,
                });
            }
        }
        before = now;
        before_ns = now_ns;
        if stopping {
            break;
        }
    }
    let lost = reader.overflow();
    if lost > 0 {
        on_event(ThrottleEvent::Lost(lost));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 1 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
30 25 0:26 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
31 25 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 25 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn the_cpu_controller_is_found_on_v1_before_v2() {
        assert_eq!(
            cpu_hierarchy(MOUNTINFO),
            Some((PathBuf::from("/sys/fs/cgroup/cpu"), 1))
        );
        let combined =
            "31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        assert_eq!(cpu_hierarchy(combined).unwrap().1, 1);
        let v2 = "40 25 0:35 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cpu_hierarchy(v2),
            Some((PathBuf::from("/sys/fs/cgroup"), 2))
        );
        assert_eq!(cpu_hierarchy("25 1 0:23 / /x rw - tmpfs tmpfs rw\n"), None);
    }

    #[test]
    fn a_process_cpu_cgroup_is_read_for_v1_and_v2() {
        let v1 = "12:pids:/a\n4:cpu:/kubepods/pod1\n3:cpuacct:/x\n0::/user.slice\n";
        assert_eq!(cpu_cgroup_of(v1, 1).as_deref(), Some("/kubepods/pod1"));
        assert_eq!(cpu_cgroup_of(v1, 2).as_deref(), Some("/user.slice"));
        let combined = "4:cpu,cpuacct:/\n";
        assert_eq!(cpu_cgroup_of(combined, 1).as_deref(), Some("/"));
        assert_eq!(cpu_cgroup_of("3:cpuacct:/x\n", 1), None);
    }

    #[test]
    fn changes_are_what_grew_and_new_cgroups_count_from_zero() {
        let c = |periods, throttled, throttled_ns| Counters {
            quota_ns: 20_000_000,
            period_ns: 100_000_000,
            throttled_ns,
            nr_periods: periods,
            nr_throttled: throttled,
        };
        let before: Reading = HashMap::from([
            (7, ("web".into(), c(100, 90, 7_000_000_000))),
            (8, ("idle".into(), c(50, 1, 80_000_000))),
        ]);
        let now: Reading = HashMap::from([
            (7, ("web".into(), c(103, 93, 7_240_000_000))),
            (8, ("idle".into(), c(52, 1, 80_000_000))),
            (9, ("new".into(), c(2, 2, 150_000_000))),
        ]);
        let got = changes(&before, &now, (1_000, 2_000), |id, name| {
            format!("/{id}/{name}")
        });
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].cgroup, "/7/web");
        assert_eq!((got[0].periods, got[0].throttled), (3, 3));
        assert_eq!(got[0].throttled_ms, 240.0);
        assert_eq!(got[0].quota_ms, Some(20.0));
        assert_eq!(got[0].period_ms, 100.0);
        assert_eq!((got[1].cgroup.as_str(), got[1].throttled), ("/9/new", 2));
        assert_eq!((got[1].start_ns, got[1].end_ns), (1_000, 2_000));
    }

    #[test]
    fn paths_are_named_by_inode_from_the_mount() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("netstall-paths-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        let ino = std::fs::metadata(dir.join("a/b")).unwrap().ino();
        let paths = cgroup_paths(&dir, 100);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(paths.get(&ino).map(String::as_str), Some("/a/b"));
        assert_eq!(paths.len(), 3);
    }
}
