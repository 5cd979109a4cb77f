//! What `netstall cgroups` reports: every hierarchy's live and dying
//! cgroups, what memory.stat reads cost on this kernel, the canary read,
//! the churn a `--watch` saw and what a remediation did.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How reading memory.stat costs with dying memcgs around, by kernel era.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatEra {
    /// Before 4.16: every read sums ~70 counters over every descendant memcg
    /// and every possible CPU.
    WalkPerCpu,
    /// 4.16-5.1: per-CPU counters batched into atomics ("fix excessive
    /// complexity in memory.stat reporting"), but every read still walks
    /// every descendant, dying ones included.
    WalkDescendants,
    /// 5.2-5.12: recursive counters spilled upward on update; a read no
    /// longer visits descendants, so dying memcgs cost memory, not latency.
    Recursive,
    /// 5.13 on: stats through rstat; a read flushes every memcg with pending
    /// updates in the subtree, dying ones included, with IRQs off.
    RstatFlush,
}

impl StatEra {
    /// Whether a memory.stat read costs time per dying memcg on this era.
    pub fn read_scales_with_dying(self) -> bool {
        self != StatEra::Recursive
    }

    /// Why reads cost what they cost on this era (one sentence of advice).
    pub fn explain(self) -> &'static str {
        match self {
            StatEra::WalkPerCpu => {
                "before 4.16 every memory.stat read sums ~70 counters over every descendant memcg \
                 (dying ones included) and every possible CPU: tens of thousands of dying memcgs make \
                 one read take 100 ms to seconds of non-preemptible kernel work (the story's era); \
                 4.16 batches the per-CPU counters, 5.2 makes reads independent of the count"
            }
            StatEra::WalkDescendants => {
                "on 4.16-5.1 memory.stat reads no longer sum per-CPU counters (4.16) but still walk \
                 every descendant memcg, dying ones included; since 4.19 (stable; 4.20) reclaim no \
                 longer skips the last pages of small memcgs, so memory pressure frees dying memcgs \
                 slowly; 5.2 makes reads independent of the count"
            }
            StatEra::Recursive => {
                "on 5.2-5.12 memory.stat counters are recursive (spilled upward on update): reads do \
                 not visit dying memcgs, which cost memory but not read latency; 5.13 moved the \
                 stats to rstat, which flushes pending updates (dying memcgs included) on read"
            }
            StatEra::RstatFlush => {
                "since 5.13 memory stats use rstat: a memory.stat read (or the periodic flusher) \
                 flushes every memcg with pending updates in the subtree, dying ones included, under \
                 a spinlock with IRQs off, ~2 us per memcg measured on 6.18; that CPU's network RX \
                 waits in its backlog meanwhile"
            }
        }
    }
}

/// One timed read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub path: PathBuf,
    /// open + read to the end + close.
    pub read_ms: f64,
    /// The CPU the read ran on, when pinned.
    pub cpu: Option<u32>,
    pub bytes: usize,
    /// What this read does to an affected node (also in JSON, where no
    /// progress lines are printed).
    pub warning: String,
}

/// What a remediation did (or, without `--yes`, would do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remediation {
    pub level: u8,
    /// The exact write and what it frees.
    pub action: String,
    /// Whether anything was written.
    pub applied: bool,
    pub dying_before: u64,
    pub dying_after: Option<u64>,
    pub released: Option<u64>,
    pub canary_before_ms: Option<f64>,
    pub canary_after_ms: Option<f64>,
    /// Whether at least 90% of the dying memcgs were released; `None` when
    /// nothing was applied or there was nothing to release.
    pub worked: Option<bool>,
    /// How long sync and the write took (the kernel frees synchronously).
    pub write_ms: Option<f64>,
    /// How long the count took to settle afterwards.
    pub settle_ms: Option<f64>,
    /// One sentence: what happened.
    pub verdict: String,
}

/// Churn over the window on one hierarchy, or under one parent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Churn {
    pub created: u64,
    pub removed: u64,
    pub released: u64,
    pub created_per_s: f64,
    pub removed_per_s: f64,
    pub released_per_s: f64,
    /// removed − released per second: how fast dying cgroups pile up.
    pub net_dying_per_s: f64,
}

/// One hierarchy's churn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HierarchyChurn {
    /// `/proc/cgroups` hierarchy id; 0 is cgroup v2.
    pub hierarchy_id: u32,
    /// Its controllers, e.g. `memory` or `cpu,cpuacct`; `cgroup2` for v2.
    pub controllers: String,
    #[serde(flatten)]
    pub churn: Churn,
}

/// A task that created cgroups under a parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creator {
    pub comm: String,
    /// Cgroups it created in the window.
    pub created: u64,
}

/// One parent cgroup's churn (its children come and go).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentChurn {
    /// The parent, relative to the hierarchy root (`/kubepods/burstable/pod1`).
    pub cgroup: String,
    /// The parent's directory, where the hierarchy is mounted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub hierarchy_id: u32,
    pub controllers: String,
    #[serde(flatten)]
    pub churn: Churn,
    /// Who created its children (mkdir), busiest first: containerd, kubelet, systemd...
    pub creators: Vec<Creator>,
}

/// How `--watch` saw cgroups come and go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChurnSource {
    /// The cgroup mkdir/rmdir/release tracepoints: every event, with its creator.
    Tracepoints,
    /// /proc/cgroups read periodically: counts only.
    Polling,
}

impl ChurnSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ChurnSource::Tracepoints => "tracepoints",
            ChurnSource::Polling => "polling",
        }
    }
}

/// What `--watch` saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchReport {
    pub source: ChurnSource,
    /// The window, CLOCK_REALTIME.
    pub start_ns: u64,
    pub end_ns: u64,
    pub seconds: f64,
    pub hierarchies: Vec<HierarchyChurn>,
    /// Parents by churn, busiest first (tracepoints only).
    pub top_parents: Vec<ParentChurn>,
    /// Dying memory cgroups at the start and end of the window.
    pub memory_dying_start: u64,
    pub memory_dying_end: u64,
    /// Events lost (the ring buffer was full).
    pub dropped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The stats readers' ledger over the window (from the in-kernel
    /// tracer's start): per reader, memcg stat flushes and the time it held
    /// the rstat lock with IRQs off; the heaviest first, the rest `other`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ledger: Vec<crate::kernel::StatFlush>,
    /// Why there is no ledger (the tracer could not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_note: Option<String>,
}

/// One controller on one hierarchy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hierarchy {
    /// The controller (`memory`, `cpu`...), or `cgroup` for the v2 cgroups themselves.
    pub controller: String,
    /// 1 or 2.
    pub version: u8,
    /// Where the hierarchy is mounted; `None` when it is not mounted here.
    pub mount: Option<PathBuf>,
    /// Live + dying; `None` when it cannot be known.
    pub total: Option<u64>,
    pub live: Option<u64>,
    pub dying: Option<u64>,
    /// v2: the sub-trees holding the most dying cgroups of this controller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtrees: Vec<Subtree>,
    /// Why a number is missing or approximate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A v2 sub-tree and the dying cgroups at and beneath it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subtree {
    pub path: PathBuf,
    pub dying: u64,
}

/// Where the memory controller is, and its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryHierarchy {
    pub version: u8,
    pub mount: PathBuf,
    pub total: u64,
    pub live: u64,
    pub dying: u64,
}

/// `netstall cgroups`'s report (the `"type":"cgroups"` JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Kernel release (`uname -r`).
    pub kernel: String,
    pub hierarchies: Vec<Hierarchy>,
    pub memory: MemoryHierarchy,
    /// How memory.stat reads cost on this kernel; `None` if the release is unparsable.
    pub stat_era: Option<StatEra>,
    /// IRQs-off time of one memory.stat read at the current count with all
    /// dying memcgs dirty (typical per-memcg cost), `None` where reads do not scale with it.
    pub worst_stall_ms: Option<f64>,
    /// The same at the highest per-memcg cost measured (a busy CPU).
    pub worst_stall_ms_high: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<Remediation>,
    pub advice: Vec<String>,
}

/// `netstall cgroups` for people: the hierarchies, the worst stall, the
/// canary, the churn, the remediation and the advice.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let report = self;
        let memory = &report.memory;
        writeln!(
            f,
            "kernel {}; memory controller on cgroup v{} at {}",
            report.kernel,
            memory.version,
            memory.mount.display()
        )?;
        writeln!(
            f,
            "{:<12} {:>2}  {:<28} {:>8} {:>8} {:>8}",
            "CONTROLLER", "V", "MOUNT", "TOTAL", "LIVE", "DYING"
        )?;
        let num = |n: Option<u64>| n.map_or("?".to_owned(), |n| n.to_string());
        for row in &report.hierarchies {
            let mount = row
                .mount
                .as_ref()
                .map_or("(not mounted)".to_owned(), |m| m.display().to_string());
            writeln!(
                f,
                "{:<12} {:>2}  {:<28} {:>8} {:>8} {:>8}",
                row.controller,
                row.version,
                mount,
                num(row.total),
                num(row.live),
                num(row.dying)
            )?;
            for subtree in &row.subtrees {
                writeln!(
                    f,
                    "{:>16}{} holds {} dying",
                    "",
                    subtree.path.display(),
                    subtree.dying
                )?;
            }
            if let Some(note) = &row.note {
                writeln!(f, "{:>16}note: {note}", "")?;
            }
        }
        if let (Some(ms), Some(high)) = (report.worst_stall_ms, report.worst_stall_ms_high) {
            writeln!(f,
            "worst memory.stat stall at {} dying memcgs: ≈{ms:.1} ms (up to {high:.1} ms on a busy CPU)",
            memory.dying
        )?;
        }
        if let Some(c) = &report.canary {
            let cpu = c.cpu.map_or(String::new(), |cpu| format!(" on CPU {cpu}"));
            writeln!(
                f,
                "canary: {} read in {:.3} ms{cpu}",
                c.path.display(),
                c.read_ms
            )?;
        }
        if let Some(w) = &report.watch {
            write!(f, "{w}")?;
        }
        if let Some(r) = &report.remediation {
            writeln!(f, "remediation: {}", r.action)?;
            writeln!(f, "  {}", r.verdict)?;
        }
        writeln!(f, "advice:")?;
        for line in &report.advice {
            writeln!(f, "  - {line}")?;
        }
        Ok(())
    }
}

/// What `--watch` saw, as a table.
impl fmt::Display for WatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self;
        writeln!(
            f,
            "watch ({}, {:.1} s): dying memory cgroups {} -> {}",
            w.source.as_str(),
            w.seconds,
            w.memory_dying_start,
            w.memory_dying_end
        )?;
        writeln!(
            f,
            "  {:<24} {:>10} {:>10} {:>11} {:>12}",
            "HIERARCHY", "CREATED/s", "REMOVED/s", "RELEASED/s", "NET DYING/s"
        )?;
        for h in &w.hierarchies {
            writeln!(
                f,
                "  {:<24} {:>10.1} {:>10.1} {:>11.1} {:>12.1}",
                h.controllers,
                h.churn.created_per_s,
                h.churn.removed_per_s,
                h.churn.released_per_s,
                h.churn.net_dying_per_s
            )?;
        }
        if !w.top_parents.is_empty() {
            writeln!(
                f,
                "  {:<40} {:<12} {:>10} {:>12}  CREATED BY",
                "TOP PARENTS BY CHURN", "HIERARCHY", "CREATED/s", "NET DYING/s"
            )?;
        }
        for p in &w.top_parents {
            let name = p
                .path
                .as_ref()
                .map_or(p.cgroup.clone(), |d| d.display().to_string());
            let creators: Vec<String> = p
                .creators
                .iter()
                .map(|c| format!("{} ({})", c.comm, c.created))
                .collect();
            writeln!(
                f,
                "  {:<40} {:<12} {:>10.1} {:>12.1}  {}",
                name,
                p.controllers,
                p.churn.created_per_s,
                p.churn.net_dying_per_s,
                creators.join(", ")
            )?;
        }
        if let Some(note) = &w.note {
            writeln!(f, "  note: {note}")?;
        }
        write_ledger(f, &w.ledger)?;
        if let Some(note) = &w.ledger_note {
            writeln!(f, "  stats readers' ledger: {note}")?;
        }
        Ok(())
    }
}

/// The ledger as a table: each reader, then all of them together.
fn write_ledger(f: &mut fmt::Formatter<'_>, ledger: &[crate::kernel::StatFlush]) -> fmt::Result {
    let Some(first) = ledger.first() else {
        return Ok(());
    };
    let seconds = first.end_ns.saturating_sub(first.start_ns) as f64 / 1e9;
    writeln!(
        f,
        "  {:<24} {:>8} {:>10} {:>14} {:>10}",
        format!("STATS READERS ({seconds:.1} s)"),
        "FLUSHES",
        "FLUSHES/s",
        "IRQS-OFF ms",
        "% OF A CPU"
    )?;
    let row = |f: &mut fmt::Formatter<'_>, name: &str, flushes: u64, ms: f64| {
        let per_s = |x: f64| if seconds > 0.0 { x / seconds } else { 0.0 };
        writeln!(
            f,
            "  {name:<24} {flushes:>8} {:>10.1} {ms:>14.1} {:>10.3}",
            per_s(flushes as f64),
            per_s(ms) / 10.0
        )
    };
    for r in ledger {
        row(f, &r.reader, r.flushes, r.locked_ms)?;
    }
    let flushes = ledger.iter().map(|r| r.flushes).sum();
    row(
        f,
        "(all)",
        flushes,
        ledger.iter().map(|r| r.locked_ms).sum(),
    )
}
