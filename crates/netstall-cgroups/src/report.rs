//! The full count: per controller and hierarchy, live and dying, on cgroup
//! v1, v2 and hybrid hosts, and where the memory controller lives.
//!
//! * v1: `num_cgroups` in /proc/cgroups minus the live directories of that
//!   controller's hierarchy (v1 has no cgroup.stat).
//! * v2: the root's `cgroup.stat` (`nr_dying_descendants`,
//!   `nr_dying_subsys_<c>`), and the sub-trees holding the most dying ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use netstall_core::output::Output;

use crate::advice::{self, KernelVersion, MemoryState};
use crate::host::Host;
use crate::mounts::CgroupMount;
use crate::remediate::{self, Level};
use crate::stat::CgroupStat;
use crate::{canary, watch};
pub use netstall_events::cgroups::{Hierarchy, MemoryHierarchy, Report, Subtree};

/// How many sub-trees with dying cgroups a v2 row lists.
const TOP_SUBTREES: usize = 5;
/// How deep below the v2 root sub-trees are looked at (kubepods/burstable).
const SUBTREE_DEPTH: u32 = 2;
/// At most this many directories per level are read (bounded work on big nodes).
const SUBTREE_LIMIT: usize = 4_000;

/// Rebuilds the advice from the counts and whatever canary was taken.
pub fn refresh_advice(report: &mut Report) {
    report.advice = advice::advise(&MemoryState {
        kernel_release: &report.kernel,
        version: report.memory.version,
        live: report.memory.live,
        dying: report.memory.dying,
        canary_ms: report.canary.as_ref().map(|c| c.read_ms),
    });
}

/// What `netstall cgroups` may do beyond counting, each only when asked:
/// they read memory.stat, watch, or write.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Time ONE memory.stat read.
    pub canary: bool,
    /// Pin that read to this CPU.
    pub canary_cpu: Option<u32>,
    /// Watch cgroup creation and removal this long.
    pub watch: Option<Duration>,
    /// Remediate at this level; only with `write` does it write.
    pub remediate: Option<Level>,
    pub write: bool,
}

/// The report with the `extras` asked for, telling on stderr what each
/// one is about to do.
pub fn report_with(host: &Host, extras: &Extras, out: Output) -> Result<Report> {
    let mut report = report(host)?;
    if extras.canary {
        let path = memory_stat_path(host, &report)?;
        out.progress(canary::warning(&path, extras.canary_cpu));
        report.canary = Some(canary::read_once(host, &path, extras.canary_cpu)?);
        refresh_advice(&mut report);
    }
    if let Some(duration) = extras.watch {
        out.progress(format!(
            "watching cgroup mkdir/rmdir/release for {duration:?}..."
        ));
        report.watch = Some(watch::watch(host, duration)?);
    }
    if let Some(level) = extras.remediate {
        if extras.write {
            out.progress(format!(
                "remediation: writing {} to /proc/sys/vm/drop_caches, then re-counting...",
                level.number()
            ));
        }
        report.remediation = Some(remediate::for_report(host, &report, level, extras.write)?);
    }
    Ok(report)
}

/// Counts every hierarchy of `host` and returns the typed report (nothing is
/// printed, nothing written, memory.stat is not read).
pub fn report(host: &Host) -> Result<Report> {
    let kernel = host.kernel_release()?;
    let hierarchies = count_hierarchies(host)?;
    let memory = memory_of(&hierarchies)?;
    let stat_era = KernelVersion::parse(&kernel).map(KernelVersion::stat_era);
    let worst = stat_era.and_then(|era| advice::worst_stall(era, memory.dying));
    let mut report = Report {
        kernel,
        hierarchies,
        memory,
        stat_era,
        worst_stall_ms: worst.map(|w| w.ms),
        worst_stall_ms_high: worst.map(|w| w.high_ms),
        canary: None,
        watch: None,
        remediation: None,
        advice: Vec::new(),
    };
    refresh_advice(&mut report);
    Ok(report)
}

/// Only the memory controller's counts (what remediation re-checks): no
/// other hierarchy is walked, no sub-tree read.
pub fn memory_count(host: &Host) -> Result<MemoryHierarchy> {
    memory_of(&rows(host, Some("memory"))?)
}

/// Every controller's row, v1 rows first, then v2.
pub fn count_hierarchies(host: &Host) -> Result<Vec<Hierarchy>> {
    rows(host, None)
}

/// The rows of every controller, or of `only` that one (without sub-trees).
fn rows(host: &Host, only: Option<&str>) -> Result<Vec<Hierarchy>> {
    let wanted = |controller: &str| only.is_none_or(|o| o == controller);
    let table = host.proc_cgroups()?;
    let mounts = host.mounts()?;
    if mounts.is_empty() {
        bail!(
            "no cgroup filesystem is mounted (/proc/self/mountinfo lists no cgroup or cgroup2 \
             mount; is /sys/fs/cgroup mounted?)"
        );
    }
    let mut rows = Vec::new();
    let mut live_by_mount: HashMap<PathBuf, u64> = HashMap::new();
    for line in table
        .iter()
        .filter(|l| l.enabled && l.hierarchy != 0 && wanted(&l.subsys))
    {
        rows.push(v1_row(
            host,
            &mounts,
            &line.subsys,
            line.num_cgroups,
            &mut live_by_mount,
        )?);
    }
    if let Some(mount) = best_mount(mounts.iter().filter(|m| m.version == 2)) {
        let v2_in_table: Vec<&str> = table
            .iter()
            .filter(|l| l.enabled && l.hierarchy == 0 && wanted(&l.subsys))
            .map(|l| l.subsys.as_str())
            .collect();
        if only.is_none() || !v2_in_table.is_empty() {
            let v2 = v2_rows(host, mount, &v2_in_table, only.is_none())?;
            rows.extend(v2.into_iter().filter(|r| wanted(&r.controller)));
        }
    }
    Ok(rows)
}

/// Mounts of the whole hierarchy first: a sub-tree mount hides cgroups.
fn best_mount<'a>(mounts: impl Iterator<Item = &'a CgroupMount>) -> Option<&'a CgroupMount> {
    let mut mounts: Vec<_> = mounts.collect();
    mounts.sort_by_key(|m| !m.is_whole_hierarchy());
    mounts.into_iter().next()
}

fn v1_row(
    host: &Host,
    mounts: &[CgroupMount],
    controller: &str,
    total: u64,
    live_by_mount: &mut HashMap<PathBuf, u64>,
) -> Result<Hierarchy> {
    let mut row = Hierarchy {
        controller: controller.to_owned(),
        version: 1,
        mount: None,
        total: Some(total),
        live: None,
        dying: None,
        subtrees: Vec::new(),
        note: None,
    };
    let Some(mount) = best_mount(
        mounts
            .iter()
            .filter(|m| m.version == 1 && m.has_controller(controller)),
    ) else {
        row.note = Some(format!(
            "the v1 {controller} hierarchy is not mounted in this mount namespace: live cgroups cannot be counted"
        ));
        return Ok(row);
    };
    row.mount = Some(mount.path.clone());
    if !mount.is_whole_hierarchy() {
        row.note = Some(format!(
            "only the sub-tree {} of the {controller} hierarchy is mounted here: cgroups outside it cannot be counted",
            mount.root
        ));
        return Ok(row);
    }
    let live = match live_by_mount.get(&mount.path) {
        Some(&live) => live,
        None => {
            let live = host.count_live_dirs(&mount.path)?;
            live_by_mount.insert(mount.path.clone(), live);
            live
        }
    };
    row.live = Some(live);
    row.dying = Some(total.saturating_sub(live));
    Ok(row)
}

fn v2_rows(
    host: &Host,
    mount: &CgroupMount,
    v2_in_table: &[&str],
    with_subtrees: bool,
) -> Result<Vec<Hierarchy>> {
    let path = &mount.path;
    let root = host.cgroup_stat(path)?;
    let whole = mount.is_whole_hierarchy();
    let partial_note = (!whole).then(|| {
        format!(
            "only the sub-tree {} of the v2 hierarchy is mounted here: counts cover that sub-tree",
            mount.root
        )
    });
    let depth = if with_subtrees { SUBTREE_DEPTH } else { 0 };
    let subtree_stats: Vec<(PathBuf, CgroupStat)> = (1..=depth)
        .flat_map(|depth| host.child_dirs(path, depth, SUBTREE_LIMIT))
        .filter_map(|dir| host.cgroup_stat(&dir).ok().map(|stat| (dir, stat)))
        .collect();
    let top = |dying_of: &dyn Fn(&CgroupStat) -> Option<u64>| -> Vec<Subtree> {
        let mut subtrees: Vec<Subtree> = subtree_stats
            .iter()
            .filter_map(|(dir, stat)| {
                let dying = dying_of(stat)?;
                (dying > 0).then(|| Subtree {
                    path: dir.clone(),
                    dying,
                })
            })
            .collect();
        subtrees.sort_by(|a, b| b.dying.cmp(&a.dying).then(a.path.cmp(&b.path)));
        subtrees.truncate(TOP_SUBTREES);
        subtrees
    };

    let live = root.nr_descendants + 1;
    let mut rows = vec![Hierarchy {
        controller: "cgroup".to_owned(),
        version: 2,
        mount: Some(path.clone()),
        total: Some(live + root.nr_dying_descendants),
        live: Some(live),
        dying: Some(root.nr_dying_descendants),
        subtrees: top(&|s| Some(s.nr_dying_descendants)),
        note: partial_note.clone(),
    }];

    // Controllers enabled on v2: listed in cgroup.controllers, or implicit
    // ones (perf_event) that cgroup.stat counts.
    let mut controllers = host.v2_controllers(path)?;
    for name in root.live_subsys.keys() {
        if !controllers.contains(name) {
            controllers.push(name.clone());
        }
    }
    controllers.retain(|c| v2_in_table.contains(&c.as_str()));
    for controller in controllers {
        let row = match (root.live_of(&controller), root.dying_of(&controller)) {
            (Some(live), Some(dying)) => Hierarchy {
                controller: controller.clone(),
                version: 2,
                mount: Some(path.clone()),
                total: Some(live + dying),
                live: Some(live),
                dying: Some(dying),
                subtrees: top(&|s| s.dying_of(&controller)),
                note: partial_note.clone(),
            },
            // Kernels before nr_dying_subsys_*: a dying controller state keeps
            // its cgroup dying, so the dying cgroups bound it from above.
            _ => Hierarchy {
                controller: controller.clone(),
                version: 2,
                mount: Some(path.clone()),
                total: Some(live + root.nr_dying_descendants),
                live: Some(live),
                dying: Some(root.nr_dying_descendants),
                subtrees: top(&|s| Some(s.nr_dying_descendants)),
                note: Some(
                    "this kernel's cgroup.stat has no nr_dying_subsys_*: dying is the count of dying cgroups, an upper bound"
                        .to_owned(),
                ),
            },
        };
        rows.push(row);
    }
    Ok(rows)
}

fn memory_of(rows: &[Hierarchy]) -> Result<MemoryHierarchy> {
    let Some(row) = rows.iter().find(|r| r.controller == "memory") else {
        bail!(
            "the memory controller is not enabled on any mounted hierarchy \
             (/proc/cgroups and the cgroup mounts show no memory controller)"
        );
    };
    match (&row.mount, row.total, row.live, row.dying) {
        (Some(mount), Some(total), Some(live), Some(dying)) => Ok(MemoryHierarchy {
            version: row.version,
            mount: mount.clone(),
            total,
            live,
            dying,
        }),
        // In a container the usual cause is its own cgroup mounts; say
        // which mount would fix it.
        _ => bail!(
            "cannot count dying memory cgroups: {} (in a container, mount the host's /sys/fs/cgroup \
             there, recursively and read-only, as deploy/kubernetes/daemonset.yaml does)",
            row.note
                .as_deref()
                .unwrap_or("the memory hierarchy is not fully visible")
        ),
    }
}

/// The memory hierarchy's root `memory.stat` (v1), or on v2 the root's if
/// the kernel has one there, else the sub-tree holding most dying memcgs.
pub fn memory_stat_path(host: &Host, report: &Report) -> Result<PathBuf> {
    let mount = &report.memory.mount;
    let mut candidates = vec![mount.clone()];
    if let Some(row) = report
        .hierarchies
        .iter()
        .find(|r| r.controller == "memory" && r.version == 2)
    {
        candidates.extend(row.subtrees.iter().map(|s| s.path.clone()));
    }
    candidates
        .into_iter()
        .map(|dir| dir.join("memory.stat"))
        .find(|file| host.path(file).exists())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no memory.stat at the root of {} (nor in a sub-tree with dying memory cgroups)",
                Path::new(mount).display()
            )
        })
}
