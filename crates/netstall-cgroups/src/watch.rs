//! Who makes the dying cgroups: cgroup churn over a window, per hierarchy
//! and per parent, from the kernel's cgroup mkdir/rmdir/release tracepoints,
//! or (where tracing is unavailable) from counts taken at both ends.
//!
//! Rates: `created` (mkdir), `removed` (rmdir: each one becomes dying),
//! `released` (freed for good). `net_dying_per_s` = removed − released: how
//! fast dying cgroups accumulate. A crash-looping pod shows up as its pod
//! cgroup at the top, with a steady creation rate.
//!
//! Beside the churn, the stats readers' ledger over the same window: who
//! reads cgroup stats (cadvisor, kubelet, the kernel's flusher) and what
//! each costs the node in flushes and IRQs-off time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use anyhow::{Context, Result};
use netstall_core::shutdown::Shutdown;
use netstall_events::kernel::StatFlush;
use netstall_kernel::cgwatch::{CgroupEvent, CgroupOp};
use netstall_kernel::trace::ledger::window_of;
use netstall_kernel::trace::{self, Stop, TraceConfig, TraceEvent};

use crate::host::Host;
use crate::mounts::CgroupMount;
use crate::proc_cgroups::ControllerLine;
pub use netstall_events::cgroups::{
    Churn, ChurnSource, Creator, HierarchyChurn, ParentChurn, WatchReport,
};

/// How many parents the report names.
pub const TOP_PARENTS: usize = 10;

fn count(churn: &mut Churn, op: CgroupOp) {
    match op {
        CgroupOp::Mkdir => churn.created += 1,
        CgroupOp::Rmdir => churn.removed += 1,
        CgroupOp::Release => churn.released += 1,
    }
}

fn with_rates(mut churn: Churn, seconds: f64) -> Churn {
    let per_s = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    churn.created_per_s = per_s(churn.created);
    churn.removed_per_s = per_s(churn.removed);
    churn.released_per_s = per_s(churn.released);
    churn.net_dying_per_s = churn.removed_per_s - churn.released_per_s;
    churn
}

fn activity(churn: &Churn) -> u64 {
    churn.created + churn.removed + churn.released
}

/// How many creators a parent names.
pub const TOP_CREATORS: usize = 3;

/// Names hierarchies (by id) after their controllers and mounts.
#[derive(Debug, Clone, Default)]
pub struct HierarchyNames {
    names: HashMap<u32, String>,
    mounts: HashMap<u32, PathBuf>,
}

impl HierarchyNames {
    /// From /proc/cgroups (id → controllers), `/proc/self/cgroup` if given
    /// (it also lists named hierarchies such as `name=systemd`) and the
    /// mounts (controllers → mount point).
    pub fn new(
        table: &[ControllerLine],
        self_cgroup: Option<&str>,
        mounts: &[CgroupMount],
    ) -> Self {
        let mut by_id: HashMap<u32, Vec<&str>> = HashMap::new();
        for line in table.iter().filter(|l| l.enabled && l.hierarchy != 0) {
            by_id.entry(line.hierarchy).or_default().push(&line.subsys);
        }
        // `9:name=systemd:/`: hierarchy id, controllers, this process's cgroup.
        for line in self_cgroup.unwrap_or_default().lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(Ok(id)), Some(controllers)) =
                (fields.next().map(str::parse::<u32>), fields.next())
            else {
                continue;
            };
            if id != 0 && !controllers.is_empty() {
                by_id
                    .entry(id)
                    .or_insert_with(|| controllers.split(',').collect());
            }
        }
        let mut names = HashMap::from([(0, "cgroup2".to_owned())]);
        let mut mount_of = HashMap::new();
        if let Some(v2) = whole(mounts.iter().filter(|m| m.version == 2)) {
            mount_of.insert(0, v2.path.clone());
        }
        for (id, controllers) in by_id {
            names.insert(id, controllers.join(","));
            if let Some(m) = whole(
                mounts
                    .iter()
                    .filter(|m| m.version == 1 && m.has_controller(controllers[0])),
            ) {
                mount_of.insert(id, m.path.clone());
            }
        }
        Self {
            names,
            mounts: mount_of,
        }
    }

    fn name(&self, id: u32) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("hierarchy {id} (named v1 hierarchy)"))
    }

    /// The directory of `cgroup` (hierarchy-relative) on this host, if mounted.
    fn dir(&self, id: u32, cgroup: &str) -> Option<PathBuf> {
        let mount = self.mounts.get(&id)?;
        Some(mount.join(cgroup.trim_start_matches('/')))
    }
}

fn whole<'a>(mut mounts: impl Iterator<Item = &'a CgroupMount>) -> Option<&'a CgroupMount> {
    mounts.find(|m| m.is_whole_hierarchy())
}

/// The parent of a hierarchy-relative cgroup path (`/a/b` → `/a`, `/a` → `/`).
pub fn parent_of(path: &str) -> &str {
    match path.trim_end_matches('/').rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Adds events up; pure, so it is tested on recorded events.
#[derive(Debug, Default)]
pub struct ChurnCounter {
    hierarchies: HashMap<u32, Churn>,
    parents: HashMap<(u32, String), (Churn, HashMap<String, u64>)>,
}

impl ChurnCounter {
    pub fn add(&mut self, event: &CgroupEvent) {
        count(
            self.hierarchies.entry(event.hierarchy_id).or_default(),
            event.op,
        );
        let (churn, creators) = self
            .parents
            .entry((event.hierarchy_id, parent_of(&event.path).to_owned()))
            .or_default();
        count(churn, event.op);
        if event.op == CgroupOp::Mkdir {
            *creators.entry(event.comm.clone()).or_default() += 1;
        }
    }

    /// Rates over `elapsed`; parents ranked by churn (created + removed +
    /// released), then by name for a stable order.
    pub fn finish(
        self,
        elapsed: Duration,
        names: &HierarchyNames,
    ) -> (Vec<HierarchyChurn>, Vec<ParentChurn>) {
        let seconds = elapsed.as_secs_f64();
        let mut hierarchies: Vec<HierarchyChurn> = self
            .hierarchies
            .into_iter()
            .map(|(id, churn)| HierarchyChurn {
                hierarchy_id: id,
                controllers: names.name(id),
                churn: with_rates(churn, seconds),
            })
            .collect();
        hierarchies.sort_by_key(|h| (std::cmp::Reverse(activity(&h.churn)), h.hierarchy_id));
        let mut parents: Vec<ParentChurn> = self
            .parents
            .into_iter()
            .map(|((id, cgroup), (churn, creators))| ParentChurn {
                path: names.dir(id, &cgroup),
                controllers: names.name(id),
                hierarchy_id: id,
                cgroup,
                churn: with_rates(churn, seconds),
                creators: top_creators(creators),
            })
            .collect();
        parents.sort_by(|a, b| {
            activity(&b.churn)
                .cmp(&activity(&a.churn))
                .then(a.hierarchy_id.cmp(&b.hierarchy_id))
                .then(a.cgroup.cmp(&b.cgroup))
        });
        parents.truncate(TOP_PARENTS);
        (hierarchies, parents)
    }
}

fn top_creators(creators: HashMap<String, u64>) -> Vec<Creator> {
    let mut creators: Vec<Creator> = creators
        .into_iter()
        .map(|(comm, created)| Creator { comm, created })
        .collect();
    creators.sort_by(|a, b| b.created.cmp(&a.created).then(a.comm.cmp(&b.comm)));
    creators.truncate(TOP_CREATORS);
    creators
}

/// Watches for `duration`: tracepoints when BPF is available, else polling.
pub fn watch(host: &Host, duration: Duration) -> Result<WatchReport> {
    let table = host.proc_cgroups()?;
    let self_cgroup = host.read(Path::new("/proc/self/cgroup")).ok();
    let names = HierarchyNames::new(&table, self_cgroup.as_deref(), &host.mounts()?);
    let memory_dying_start = crate::report::memory_count(host)?.dying;
    let mut counter = ChurnCounter::default();
    let (traced, ledger) = if host.is_live() {
        with_ledger(duration, || {
            netstall_kernel::cgwatch::watch(duration, |event| counter.add(&event))
        })
    } else {
        (Err(anyhow::anyhow!("not the live host")), Ok(Vec::new()))
    };
    let mut report = match traced {
        Ok(stats) => {
            let memory_dying_end = crate::report::memory_count(host)?.dying;
            let (hierarchies, top_parents) = counter.finish(stats.elapsed, &names);
            WatchReport {
                source: ChurnSource::Tracepoints,
                start_ns: stats.start_ns,
                end_ns: stats.start_ns + stats.elapsed.as_nanos() as u64,
                seconds: stats.elapsed.as_secs_f64(),
                hierarchies,
                top_parents,
                memory_dying_start,
                memory_dying_end,
                dropped: stats.dropped,
                note: (stats.dropped > 0).then(|| {
                    format!(
                        "{} events were lost (ring buffer full): rates are low",
                        stats.dropped
                    )
                }),
                ledger: Vec::new(),
                ledger_note: None,
            }
        }
        Err(why) => {
            let why = format!("{why:#}");
            poll(host, &table, &names, duration, memory_dying_start, &why)?
        }
    };
    match ledger {
        Ok(ledger) => report.ledger = ledger,
        Err(why) => report.ledger_note = Some(format!("{why:#}").replace('\n', " ")),
    }
    Ok(report)
}

/// Stalls the ledger's tracer reports (and this watch ignores): only the
/// longest, so that it is not woken for stacks nobody reads.
const LEDGER_THRESHOLD: Duration = Duration::from_secs(1);

/// Runs `work` with the in-kernel tracer loaded, for its stats readers'
/// ledger (`flush_ledger` in trace.bpf.c): per reader, the memcg stat
/// flushes and the time with the rstat lock held, IRQs off, from the
/// tracer's start until `work` returns.
fn with_ledger<T>(duration: Duration, work: impl FnOnce() -> T) -> (T, Result<Vec<StatFlush>>) {
    let stop = match Shutdown::new() {
        Ok(stop) => Arc::new(stop),
        Err(e) => return (work(), Err(e.into())),
    };
    std::thread::scope(|scope| {
        let tracer = std::thread::Builder::new()
            .name("ledger".into())
            .spawn_scoped(scope, || {
                let config = TraceConfig {
                    threshold: LEDGER_THRESHOLD,
                    // Read when stopped (the tracer starts after the watch).
                    totals_every: Some(duration),
                    ..TraceConfig::default()
                };
                let until = Stop {
                    duration: None,
                    shutdown: Some(Arc::clone(&stop)),
                };
                let (mut start_ns, mut ledger) = (None, Vec::new());
                trace::run(&config, &until, |event| match event {
                    TraceEvent::Started(s) => start_ns = Some(s.ts_ns),
                    TraceEvent::Totals(t) => ledger = t.flush_ledger,
                    _ => {}
                })
                .context("the in-kernel tracer does not run")?;
                let end_ns = netstall_core::clock::realtime_ns();
                Ok(window_of(&ledger, start_ns.unwrap_or(end_ns), end_ns, None))
            });
        let done = work();
        stop.request();
        let ledger = match tracer {
            Ok(tracer) => tracer
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the ledger's tracer failed"))),
            Err(e) => Err(e.into()),
        };
        (done, ledger)
    })
}

/// The fallback: counts at both ends of the window. Gives the net rate per
/// hierarchy (dying cgroups piling up or going away), but not who makes them.
fn poll(
    host: &Host,
    table: &[ControllerLine],
    names: &HierarchyNames,
    duration: Duration,
    memory_dying_start: u64,
    why: &str,
) -> Result<WatchReport> {
    let start = dying_by_hierarchy(host, table)?;
    let start_ns = netstall_core::clock::realtime_ns();
    let started = Instant::now();
    std::thread::sleep(duration);
    let end = dying_by_hierarchy(host, table)?;
    let end_ns = netstall_core::clock::realtime_ns();
    let seconds = started.elapsed().as_secs_f64();
    let hierarchies = end
        .iter()
        .map(|(&id, &after)| {
            let before = start.get(&id).copied().unwrap_or(after);
            HierarchyChurn {
                hierarchy_id: id,
                controllers: names.name(id),
                churn: Churn {
                    net_dying_per_s: (after as f64 - before as f64) / seconds,
                    ..Churn::default()
                },
            }
        })
        .collect();
    Ok(WatchReport {
        source: ChurnSource::Polling,
        start_ns,
        end_ns,
        seconds,
        hierarchies,
        top_parents: Vec::new(),
        memory_dying_start,
        memory_dying_end: crate::report::memory_count(host)?.dying,
        dropped: 0,
        ledger: Vec::new(),
        ledger_note: None,
        note: Some(format!(
            "cgroup tracepoints unavailable ({why}): only net rates from counts at both ends; \
             naming the creators needs tracing (CAP_BPF, CAP_PERFMON, kernel BTF)"
        )),
    })
}

/// Dying cgroups per hierarchy id (v2: the cgroups themselves).
fn dying_by_hierarchy(host: &Host, table: &[ControllerLine]) -> Result<BTreeMap<u32, u64>> {
    let mut dying = BTreeMap::new();
    for row in crate::report::count_hierarchies(host)? {
        let id = match row.version {
            2 if row.controller == "cgroup" => 0,
            2 => continue,
            _ => match table.iter().find(|l| l.subsys == row.controller) {
                Some(line) => line.hierarchy,
                None => continue,
            },
        };
        if let Some(n) = row.dying {
            dying.insert(id, n);
        }
    }
    Ok(dying)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{mounts, proc_cgroups};

    fn event(op: CgroupOp, hierarchy_id: u32, path: &str) -> CgroupEvent {
        CgroupEvent {
            op,
            hierarchy_id,
            level: path.matches('/').count() as u32,
            path: path.to_owned(),
            truncated: false,
            pid: 1,
            comm: match op {
                CgroupOp::Release => "kworker/0:1".to_owned(),
                _ => "containerd-shim".to_owned(),
            },
            ts_ns: 0,
        }
    }

    fn names() -> HierarchyNames {
        let table = proc_cgroups::parse(
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\ncpuacct\t1\t1\t1\n\
             memory\t4\t12031\t1\nhugetlb\t0\t1\t1\n",
        )
        .unwrap();
        let mounts = mounts::parse_mountinfo(
            "33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        );
        let self_cgroup = "9:name=systemd:/user.slice\n4:memory:/\n1:cpu,cpuacct:/\n0::/\n";
        HierarchyNames::new(&table, Some(self_cgroup), &mounts)
    }

    #[test]
    fn parents_of_paths() {
        assert_eq!(parent_of("/netstall-x/z12"), "/netstall-x");
        assert_eq!(
            parent_of("/kubepods/burstable/pod1/c1"),
            "/kubepods/burstable/pod1"
        );
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(parent_of("/"), "/");
    }

    #[test]
    fn a_crash_looping_pod_tops_the_parents_with_its_rate() {
        let mut counter = ChurnCounter::default();
        // 10 s: a crash-looping pod's container cgroup made and removed 50
        // times on memory and on cpu,cpuacct; one release; background churn.
        for i in 0..50 {
            for hierarchy in [4, 1] {
                let path = format!("/kubepods/burstable/pod1/c{i}");
                counter.add(&event(CgroupOp::Mkdir, hierarchy, &path));
                counter.add(&event(CgroupOp::Rmdir, hierarchy, &path));
            }
        }
        counter.add(&event(CgroupOp::Release, 4, "/kubepods/burstable/pod1/c0"));
        counter.add(&event(CgroupOp::Mkdir, 4, "/system.slice/cron.service"));
        counter.add(&event(CgroupOp::Mkdir, 7, "/user.slice"));
        counter.add(&event(CgroupOp::Mkdir, 9, "/user.slice/session-3.scope"));
        let (hierarchies, parents) = counter.finish(Duration::from_secs(10), &names());

        let top = &parents[0];
        assert_eq!(top.cgroup, "/kubepods/burstable/pod1");
        assert_eq!(top.controllers, "memory");
        assert_eq!(
            top.path.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory/kubepods/burstable/pod1"))
        );
        assert_eq!(
            (top.churn.created, top.churn.removed, top.churn.released),
            (50, 50, 1)
        );
        assert_eq!(top.churn.created_per_s, 5.0);
        assert_eq!(top.churn.net_dying_per_s, 4.9);
        assert_eq!(parents[1].controllers, "cpu,cpuacct");
        assert_eq!(parents[1].churn.net_dying_per_s, 5.0);
        assert!(parents.iter().any(|p| p.cgroup == "/system.slice"));
        let unknown = parents.iter().find(|p| p.hierarchy_id == 7).unwrap();
        assert!(unknown.controllers.contains("named"), "{unknown:?}");
        assert_eq!(unknown.path, None);
        let systemd = parents.iter().find(|p| p.hierarchy_id == 9).unwrap();
        assert_eq!(systemd.controllers, "name=systemd");
        assert_eq!(
            systemd.path.as_deref(),
            Some(Path::new("/sys/fs/cgroup/systemd/user.slice"))
        );

        assert_eq!(hierarchies[0].hierarchy_id, 4);
        assert_eq!(hierarchies[0].churn.created, 51);
    }

    #[test]
    fn at_most_the_top_parents_are_named() {
        let mut counter = ChurnCounter::default();
        for i in 0..25 {
            for _ in 0..i {
                counter.add(&event(CgroupOp::Mkdir, 0, &format!("/p{i:02}/c")));
            }
        }
        let (_, parents) = counter.finish(Duration::from_secs(1), &names());
        assert_eq!(parents.len(), TOP_PARENTS);
        assert_eq!(parents[0].cgroup, "/p24");
        assert_eq!(parents[0].controllers, "cgroup2");
        assert_eq!(parents[9].cgroup, "/p15");
    }
}
