//! The catalogue of causes and the rules that rank them. Pure: a verdict is a
//! function of [`Findings`], so it is tested on recorded data.

use std::collections::BTreeMap;

use netstall_core::stall::{Culprit, Detector, Stall};
use netstall_probe::episodes::EpisodeKind;
use serde::Serialize;

use crate::findings::{Findings, TracerState};

/// The causes the doctor knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CauseId {
    /// The story: a memory.stat read (or the periodic flusher) flushing the
    /// stats of many dying memcgs with IRQs off.
    DyingMemcgStatFlush,
    /// A long section with IRQs or bottom halves off, named by its stack.
    IrqsOffSection,
    /// A long non-preemptible syscall while softirqs were pending.
    LongSyscallSoftirqPending,
    /// NET_RX left to ksoftirqd, which did not get the CPU in time.
    KsoftirqdStarved,
    /// Probes stalled but this host's CPUs did not: the path or the far side.
    NotThisHost,
}

impl CauseId {
    pub fn as_str(self) -> &'static str {
        match self {
            CauseId::DyingMemcgStatFlush => "dying-memcg-stat-flush",
            CauseId::IrqsOffSection => "irqs-off-section",
            CauseId::LongSyscallSoftirqPending => "long-syscall-softirq-pending",
            CauseId::KsoftirqdStarved => "ksoftirqd-starved",
            CauseId::NotThisHost => "not-this-host",
        }
    }

    fn title(self) -> &'static str {
        match self {
            CauseId::DyingMemcgStatFlush => {
                "memory.stat reads flush the stats of dying memory cgroups with IRQs off"
            }
            CauseId::IrqsOffSection => "a long IRQs/BH-off section blocks RX processing",
            CauseId::LongSyscallSoftirqPending => {
                "a long non-preemptible syscall delays pending softirqs"
            }
            CauseId::KsoftirqdStarved => "ksoftirqd is starved: deferred RX waits for CPU time",
            CauseId::NotThisHost => "probes stall but this host does not: the path or the far side",
        }
    }

    fn remediation(self) -> Vec<String> {
        let lines: &[&str] = match self {
            CauseId::DyingMemcgStatFlush => &[
                "release the dying memcgs now: `netstall cgroups --remediate 1 --yes` (drop_caches level 1, measured to release them; level 2 does not)",
                "find who creates them: `netstall cgroups --watch 30s` (crash-looping pods, cron jobs, short-lived units)",
                "make the reader cheaper: poll memory.stat less often, or skip the hierarchy root (cadvisor's root stats knob)",
                "keep nodes from accumulating them: drain and reboot nodes whose dying count stays high; upgrade the kernel",
            ],
            CauseId::IrqsOffSection => &[
                "find the owner of the named code path (driver, BPF program, kernel subsystem) from the stack below",
                "move latency-sensitive RX off that CPU (RPS / IRQ affinity) until it is fixed",
            ],
            CauseId::LongSyscallSoftirqPending => &[
                "find why the syscall is slow (its file and stack are below) and make it shorter or rarer",
                "on PREEMPT_NONE kernels, long in-kernel loops hold softirqs: consider PREEMPT_DYNAMIC=voluntary/full",
            ],
            CauseId::KsoftirqdStarved => &[
                "give ksoftirqd CPU time: reduce the load on that CPU or move RX (RPS / IRQ affinity) elsewhere",
                "check netdev_budget / netdev_budget_usecs and the busy tasks on that CPU",
            ],
            CauseId::NotThisHost => &[
                "probe the other layers: `netstall bisect` (NodePort, overlay, pod IP, node IP)",
                "run `netstall doctor` on the far side, or check the network path between the hosts",
            ],
        };
        lines.iter().map(|l| l.to_string()).collect()
    }
}

/// One ranked cause.
#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    pub id: CauseId,
    pub title: String,
    /// 0–1: how sure the evidence makes the doctor.
    pub confidence: f64,
    /// The CPU with the most stalls of this cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Every CPU that stalled with this cause.
    pub cpus: Vec<u32>,
    /// Where it was found, for causes named by their stack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub named: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit: Option<Culprit>,
    pub stalls: usize,
    pub worst_ms: f64,
    pub evidence: Vec<String>,
    pub remediation: Vec<String>,
}

/// The doctor's answer (the `"type":"verdict"` JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub healthy: bool,
    /// Kernel stalls over the threshold.
    pub stalls: usize,
    /// The longest stall, kernel or probe-seen.
    pub worst_ms: f64,
    /// Probe episodes across all targets.
    pub episodes: usize,
    pub causes: Vec<Cause>,
    /// When the first stall (kernel or probe) started, REALTIME ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_stall_ns: Option<u64>,
    /// Seconds from the start of the run to the verdict (set by a live run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_verdict_s: Option<f64>,
    /// Seconds from the first stall to the verdict (set by a live run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_first_stall_s: Option<f64>,
}

/// Frames that say how the CPU got somewhere, not what held it.
const GENERIC_FRAMES: &[&str] = &[
    "_raw_spin_unlock",
    "_raw_spin_lock",
    "__local_bh_enable",
    "handle_softirqs",
    "__do_softirq",
    "do_softirq",
    "irq_exit",
    "__irq_exit_rcu",
    "irq_exit_rcu",
    "sysvec_",
    "asm_",
    "common_interrupt",
    "run_ksoftirqd",
    "smpboot_thread_fn",
    "kthread",
    "ret_from_fork",
    "entry_SYSCALL",
    "do_syscall_64",
    "x64_sys_call",
    "bpf_loop",
    "bpf_trace_run",
    "__bpf_trace",
    "__traceiter",
    "trace_softirq",
    "__cond_resched",
    "preempt_schedule",
    "native_",
    "default_idle",
    "cpu_idle",
    "do_idle",
];

/// Frames of the story's mechanism (cgroup v1 memory.stat → rstat flush).
const MEMCG_FLUSH_FRAMES: &[&str] = &[
    "css_rstat_flush",
    "cgroup_rstat_flush",
    "mem_cgroup_flush_stats",
    "memcg1_stat_format",
    "memory_stat_show",
    "memcg_stat_show",
    "mem_cgroup_nr_lru_pages",
    "flush_memcg_stats",
    "do_flush_stats",
];

fn frame_name(frame: &str) -> &str {
    frame.split(['+', ' ']).next().unwrap_or(frame)
}

fn is_generic(frame: &str) -> bool {
    let name = frame_name(frame);
    GENERIC_FRAMES.iter().any(|g| name.starts_with(g))
}

fn touches_memcg_flush(culprit: &Culprit) -> bool {
    culprit
        .kstack
        .iter()
        .any(|f| MEMCG_FLUSH_FRAMES.contains(&frame_name(f)))
        || culprit
            .path
            .as_deref()
            .is_some_and(|p| p.ends_with("memory.stat") || p.ends_with("memory.numa_stat"))
}

/// The frame that names a stack: the BPF program that ran, if one did (its
/// outermost frame: inner ones are its callbacks), else the first frame that
/// is not interrupt, softirq or syscall plumbing.
pub fn naming_frame(kstack: &[String]) -> Option<String> {
    kstack
        .iter()
        .rfind(|f| frame_name(f).starts_with("bpf_prog_"))
        .or_else(|| kstack.iter().find(|f| !is_generic(f)))
        .map(|f| frame_name(f).to_owned())
}

fn cause_key(stall: &Stall) -> (CauseId, Option<String>) {
    let id = classify(stall);
    let named = match id {
        CauseId::IrqsOffSection => stall.culprit.as_ref().and_then(|c| naming_frame(&c.kstack)),
        _ => None,
    };
    (id, named)
}

/// Which cause explains one kernel stall.
fn classify(stall: &Stall) -> CauseId {
    let culprit = stall.culprit.as_ref();
    if stall.seen_by.contains(&Detector::RstatHold) || culprit.is_some_and(touches_memcg_flush) {
        return CauseId::DyingMemcgStatFlush;
    }
    let in_softirq = culprit.is_some_and(|c| {
        c.context.is_some()
            || c.kstack
                .iter()
                .any(|f| matches!(frame_name(f), "handle_softirqs" | "__do_softirq"))
    });
    let irqs_off = stall.seen_by.contains(&Detector::IrqsOff);
    if in_softirq || irqs_off {
        return CauseId::IrqsOffSection;
    }
    if culprit.is_some_and(|c| c.syscall.is_some()) {
        return CauseId::LongSyscallSoftirqPending;
    }
    if stall.seen_by.contains(&Detector::Ksoftirqd)
        || stall
            .drained_by
            .as_deref()
            .is_some_and(|d| d.starts_with("ksoftirqd"))
    {
        return CauseId::KsoftirqdStarved;
    }
    CauseId::IrqsOffSection
}

fn stall_end_ns(stall: &Stall) -> u64 {
    stall.start_ns + (stall.duration_ms * 1e6) as u64
}

/// How far apart a probe episode and a kernel stall may be and still be one event.
const ALIGN_SLACK_NS: u64 = 30_000_000;

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 <= b.1 + ALIGN_SLACK_NS && b.0 <= a.1 + ALIGN_SLACK_NS
}

/// Ranks the causes behind the findings.
pub fn diagnose(findings: &Findings) -> Verdict {
    let mut groups: BTreeMap<(CauseId, Option<String>), Vec<&Stall>> = BTreeMap::new();
    // A stall only the backlog saw has no culprit of its own; when the task
    // that drained it is the culprit of other stalls, it is the same cause
    // (the holder processes the backlog the moment it lets go of the CPU).
    let mut by_holder: BTreeMap<String, (CauseId, Option<String>)> = BTreeMap::new();
    for stall in findings.stalls.iter().filter(|s| s.culprit.is_some()) {
        let key = cause_key(stall);
        if let Some(c) = &stall.culprit {
            by_holder
                .entry(format!("{}[{}]", c.comm, c.pid))
                .or_insert_with(|| key.clone());
        }
        groups.entry(key).or_default().push(stall);
    }
    for stall in findings.stalls.iter().filter(|s| s.culprit.is_none()) {
        let key = stall
            .drained_by
            .as_ref()
            .and_then(|d| by_holder.get(d).cloned())
            .unwrap_or_else(|| cause_key(stall));
        groups.entry(key).or_default().push(stall);
    }

    let episodes: Vec<(&str, &netstall_probe::episodes::Episode)> = findings
        .targets
        .iter()
        .flat_map(|t| t.episodes.iter().map(move |e| (t.target.as_str(), e)))
        .filter(|(_, e)| e.kind != EpisodeKind::Loss || e.probes >= 3)
        .collect();

    let mut causes: Vec<Cause> = groups
        .into_iter()
        .map(|((id, named), stalls)| cause_from_stalls(id, named, &stalls, findings, &episodes))
        .collect();

    // Probe episodes that no kernel stall explains point away from this host.
    if !matches!(findings.tracer, TracerState::Unavailable { .. }) {
        let unexplained: Vec<_> = episodes
            .iter()
            .filter(|(_, e)| {
                !findings
                    .stalls
                    .iter()
                    .any(|s| overlaps((e.start_ns, e.end_ns), (s.start_ns, stall_end_ns(s))))
            })
            .collect();
        if !unexplained.is_empty() && unexplained.len() * 2 >= episodes.len() {
            causes.push(not_this_host(&unexplained, episodes.len()));
        }
    }

    causes.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then(b.stalls.cmp(&a.stalls))
            .then(b.worst_ms.total_cmp(&a.worst_ms))
    });
    let worst_kernel = findings
        .stalls
        .iter()
        .map(|s| s.duration_ms)
        .fold(0.0, f64::max);
    let worst_probe = episodes
        .iter()
        .map(|(_, e)| e.duration_ms)
        .fold(0.0, f64::max);
    let first_stall_ns = findings
        .stalls
        .iter()
        .map(|s| s.start_ns)
        .chain(episodes.iter().map(|(_, e)| e.start_ns))
        .min();
    Verdict {
        kind: "verdict",
        healthy: causes.is_empty(),
        stalls: findings.stalls.len(),
        worst_ms: round1(worst_kernel.max(worst_probe)),
        episodes: episodes.len(),
        causes,
        first_stall_ns,
        time_to_verdict_s: None,
        from_first_stall_s: None,
    }
}

fn cause_from_stalls(
    id: CauseId,
    named: Option<String>,
    stalls: &[&Stall],
    findings: &Findings,
    episodes: &[(&str, &netstall_probe::episodes::Episode)],
) -> Cause {
    let mut per_cpu: BTreeMap<u32, usize> = BTreeMap::new();
    for s in stalls {
        *per_cpu.entry(s.cpu).or_default() += 1;
    }
    let cpu = per_cpu.iter().max_by_key(|(_, n)| **n).map(|(cpu, _)| *cpu);
    let worst = stalls.iter().map(|s| s.duration_ms).fold(0.0, f64::max);
    let culprit = main_culprit(stalls);
    let mut evidence = Vec::new();

    let packets: u64 = stalls.iter().filter_map(|s| s.packets).sum();
    let detectors: std::collections::BTreeSet<&str> = stalls
        .iter()
        .flat_map(|s| s.seen_by.iter().map(|d| d.name()))
        .collect();
    evidence.push(format!(
        "{} stall{} on CPU {}, worst {:.1} ms, {} packet{} waited (detectors: {})",
        stalls.len(),
        plural(stalls.len()),
        netstall_core::cpu::format_list(&per_cpu.keys().copied().collect::<Vec<_>>()),
        worst,
        packets,
        plural(packets as usize),
        detectors.into_iter().collect::<Vec<_>>().join(", ")
    ));
    if let Some(drained) = most_common(stalls.iter().filter_map(|s| s.drained_by.clone())) {
        evidence.push(format!("the backlog was drained by {drained}"));
    }
    if let Some(c) = &culprit {
        evidence.push(culprit_line(c));
        if !c.kstack.is_empty() {
            evidence.push(format!(
                "kernel stack: {}",
                c.kstack
                    .iter()
                    .take(8)
                    .map(|f| frame_name(f))
                    .collect::<Vec<_>>()
                    .join(" ← ")
            ));
        }
    }

    // Probe episodes that line up with these stalls (same time base).
    let matched = episodes
        .iter()
        .filter(|(_, e)| {
            stalls
                .iter()
                .any(|s| overlaps((e.start_ns, e.end_ns), (s.start_ns, stall_end_ns(s))))
        })
        .count();
    if matched > 0 {
        evidence.push(format!(
            "{matched} of {} probe episode{} line up in time with these stalls",
            episodes.len(),
            plural(episodes.len())
        ));
    }
    let gaps: Vec<_> = findings
        .gaps
        .iter()
        .filter(|g| {
            stalls.iter().any(|s| {
                s.cpu == g.cpu
                    && overlaps(
                        (g.start_ns, g.start_ns + (g.duration_ms * 1e6) as u64),
                        (s.start_ns, stall_end_ns(s)),
                    )
            })
        })
        .collect();
    if let Some(g) = gaps
        .iter()
        .max_by(|a, b| a.duration_ms.total_cmp(&b.duration_ms))
    {
        evidence.push(format!(
            "CPU {} went unsampled for {:.1} ms ({} gap{}); sampling resumed in {} at {}",
            g.cpu,
            g.duration_ms,
            gaps.len(),
            plural(gaps.len()),
            g.comm,
            g.resumed_in
                .iter()
                .take(4)
                .map(|f| frame_name(f))
                .collect::<Vec<_>>()
                .join(" ← ")
        ));
    }

    let mut confidence: f64 = match id {
        CauseId::DyingMemcgStatFlush => 0.6,
        CauseId::IrqsOffSection => 0.55,
        CauseId::LongSyscallSoftirqPending => 0.5,
        CauseId::KsoftirqdStarved => 0.45,
        CauseId::NotThisHost => 0.4,
    };
    if id == CauseId::DyingMemcgStatFlush {
        if stalls
            .iter()
            .any(|s| s.seen_by.contains(&Detector::RstatHold))
        {
            confidence += 0.15;
        }
        if culprit.as_ref().is_some_and(|c| {
            c.path
                .as_deref()
                .is_some_and(|p| p.ends_with("memory.stat"))
        }) {
            confidence += 0.1;
        }
        if let Some(m) = &findings.memcg {
            evidence.push(format!(
                "{} dying memory cgroups against {} live (kernel {}){}",
                m.dying,
                m.live,
                m.kernel,
                m.worst_stall_ms
                    .map(|w| format!(": up to ~{w:.0} ms IRQs-off per memory.stat flush"))
                    .unwrap_or_default()
            ));
            if m.dying >= 1000 {
                confidence += 0.1;
            }
        }
    } else if named.is_some() {
        confidence += 0.2;
    }
    if matched > 0 {
        confidence += 0.05;
    }
    if !gaps.is_empty() {
        confidence += 0.05;
    }
    if stalls.len() >= 3 {
        confidence += 0.05;
    }

    let title = match &named {
        Some(frame) => format!("{} (in {frame})", id.title()),
        None => id.title().to_owned(),
    };
    Cause {
        id,
        title,
        confidence: round2(confidence.min(0.99)),
        cpu,
        cpus: per_cpu.keys().copied().collect(),
        named,
        culprit,
        stalls: stalls.len(),
        worst_ms: round1(worst),
        evidence,
        remediation: id.remediation(),
    }
}

fn not_this_host(
    unexplained: &[&(&str, &netstall_probe::episodes::Episode)],
    total: usize,
) -> Cause {
    let worst = unexplained
        .iter()
        .map(|(_, e)| e.duration_ms)
        .fold(0.0, f64::max);
    let targets: std::collections::BTreeSet<&str> = unexplained.iter().map(|(t, _)| *t).collect();
    Cause {
        id: CauseId::NotThisHost,
        title: CauseId::NotThisHost.title().to_owned(),
        confidence: round2((0.4 + 0.05 * unexplained.len() as f64).min(0.8)),
        cpu: None,
        cpus: Vec::new(),
        named: None,
        culprit: None,
        stalls: 0,
        worst_ms: round1(worst),
        evidence: vec![
            format!(
                "{} of {total} probe episode{} (worst {worst:.1} ms, toward {}) match no stall on any CPU of this host",
                unexplained.len(),
                plural(total),
                targets.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ],
        remediation: CauseId::NotThisHost.remediation(),
    }
}

/// The culprit most stalls name (by comm), with the richest details seen for it.
fn main_culprit(stalls: &[&Stall]) -> Option<Culprit> {
    let comm = most_common(
        stalls
            .iter()
            .filter_map(|s| s.culprit.as_ref().map(|c| c.comm.clone())),
    )?;
    stalls
        .iter()
        .filter_map(|s| s.culprit.as_ref())
        .filter(|c| c.comm == comm)
        .max_by_key(|c| {
            (c.path.is_some() as u8) + (c.syscall.is_some() as u8) + (!c.kstack.is_empty()) as u8
        })
        .cloned()
}

fn culprit_line(c: &Culprit) -> String {
    let mut line = format!("culprit {}[{}]", c.comm, c.pid);
    if let Some(context) = &c.context {
        line.push_str(&format!(" in {context}"));
    }
    if let Some(syscall) = &c.syscall {
        line.push_str(&format!(" {syscall}({})", c.path.as_deref().unwrap_or("")));
    }
    if let Some(ms) = c.syscall_ms {
        line.push_str(&format!(" {ms:.1} ms"));
    }
    if let Some(cgroup) = &c.cgroup {
        line.push_str(&format!(", cgroup {cgroup}"));
    }
    line
}

fn most_common(items: impl Iterator<Item = String>) -> Option<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(item, _)| item)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{MemcgFindings, TargetFindings};
    use netstall_probe::episodes::Episode;

    const T0: u64 = 1_700_000_000_000_000_000;

    fn stall(cpu: u32, at_ms: u64, ms: f64, seen_by: Vec<Detector>, culprit: Culprit) -> Stall {
        Stall {
            kind: "stall",
            detector: seen_by[0],
            cpu,
            start_ns: T0 + at_ms * 1_000_000,
            duration_ms: ms,
            seen_by,
            packets: Some(12),
            max_wait_ms: Some(ms),
            drained_by: Some(format!("ksoftirqd/{cpu}")),
            culprit: Some(culprit),
        }
    }

    fn poller_culprit() -> Culprit {
        Culprit {
            comm: "cadvisor".into(),
            pid: 4242,
            tid: 4242,
            syscall: Some("read".into()),
            path: Some("/sys/fs/cgroup/memory/memory.stat".into()),
            syscall_ms: Some(24.0),
            kstack: [
                "_raw_spin_unlock_irq+0x1d",
                "css_rstat_flush+0x2bb",
                "memcg1_stat_format+0x1c",
                "memory_stat_show+0xc3",
                "seq_read_iter+0x10f",
                "vfs_read+0xbb",
            ]
            .map(String::from)
            .to_vec(),
            ..Culprit::default()
        }
    }

    fn spinner_culprit() -> Culprit {
        Culprit {
            comm: "rustc".into(),
            kstack: [
                "read_tsc+0x5",
                "bpf_prog_e9fddd7885dc0d56_wait_until+0x20",
                "bpf_loop+0x5c",
                "bpf_prog_4a0c1b2d3e4f5a6b_spin_in_softirq+0x4f",
                "bpf_trace_run1+0x7c",
                "handle_softirqs+0x1c4",
                "irq_exit_rcu+0x62",
            ]
            .map(String::from)
            .to_vec(),
            ..Culprit::default()
        }
    }

    fn episode(at_ms: u64, ms: f64) -> Episode {
        Episode {
            kind: EpisodeKind::BacklogRelease,
            start_ns: T0 + at_ms * 1_000_000,
            end_ns: T0 + at_ms * 1_000_000 + (ms * 1e6) as u64,
            duration_ms: ms,
            uncertainty_ms: 5.0,
            probes: 10,
            flows_affected: 1,
            flows_total: 1,
            flows: vec![0],
            first_seq: 1,
            last_seq: 10,
            max_rtt_us: Some(ms * 1e3),
        }
    }

    fn target(episodes: Vec<Episode>) -> TargetFindings {
        TargetFindings {
            target: "192.168.50.1:30080".into(),
            proto: "tcp".into(),
            sent: 1000,
            received: 1000,
            p50_us: Some(80.0),
            p99_us: Some(24_000.0),
            max_us: Some(26_000.0),
            episodes,
            rtts: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn no_stalls_and_no_episodes_is_healthy() {
        let verdict = diagnose(&Findings {
            targets: vec![target(vec![])],
            ..Findings::default()
        });
        assert!(verdict.healthy);
        assert!(verdict.causes.is_empty());
        assert_eq!(verdict.first_stall_ns, None);
    }

    #[test]
    fn the_story_is_named_with_its_culprit_and_cpu() {
        let findings = Findings {
            stalls: (0..4)
                .map(|i| {
                    stall(
                        0,
                        1000 * i,
                        24.0,
                        vec![Detector::RstatHold, Detector::RxBacklog],
                        poller_culprit(),
                    )
                })
                .collect(),
            targets: vec![target(
                (0..4).map(|i| episode(1000 * i + 2, 22.0)).collect(),
            )],
            memcg: Some(MemcgFindings {
                kernel: "6.18.44".into(),
                live: 8,
                dying: 12_000,
                worst_stall_ms: Some(24.0),
            }),
            ..Findings::default()
        };
        let verdict = diagnose(&findings);
        assert!(!verdict.healthy);
        let top = &verdict.causes[0];
        assert_eq!(top.id, CauseId::DyingMemcgStatFlush);
        assert_eq!(top.cpu, Some(0));
        assert_eq!(top.culprit.as_ref().unwrap().comm, "cadvisor");
        assert!(top.confidence >= 0.9, "{}", top.confidence);
        assert!(top
            .evidence
            .iter()
            .any(|e| e.contains("12000 dying memory cgroups")));
        assert!(top
            .evidence
            .iter()
            .any(|e| e.contains("4 of 4 probe episodes line up")));
        assert!(top
            .evidence
            .iter()
            .any(|e| e.contains("css_rstat_flush ← memcg1_stat_format ← memory_stat_show")));
        assert!(top.remediation[0].contains("--remediate 1"));
        assert_eq!(
            verdict.causes.len(),
            1,
            "every episode is explained: {:?}",
            verdict.causes
        );
        let json = serde_json::to_value(&verdict).unwrap();
        assert_eq!(json["type"], "verdict");
        assert_eq!(json["causes"][0]["id"], "dying-memcg-stat-flush");
    }

    #[test]
    fn a_softirq_busy_wait_is_named_by_its_stack_not_memcg() {
        let findings = Findings {
            stalls: (0..3)
                .map(|i| {
                    stall(
                        1,
                        1000 * i,
                        50.0,
                        vec![Detector::RxBacklog, Detector::SoftirqDelay],
                        spinner_culprit(),
                    )
                })
                .collect(),
            memcg: Some(MemcgFindings {
                kernel: "6.18.44".into(),
                live: 8,
                dying: 20,
                worst_stall_ms: Some(0.0),
            }),
            ..Findings::default()
        };
        let verdict = diagnose(&findings);
        assert_eq!(verdict.causes.len(), 1);
        let cause = &verdict.causes[0];
        assert_eq!(cause.id, CauseId::IrqsOffSection);
        assert_eq!(
            cause.named.as_deref(),
            Some("bpf_prog_4a0c1b2d3e4f5a6b_spin_in_softirq")
        );
        assert_eq!(cause.cpu, Some(1));
        assert!(verdict
            .causes
            .iter()
            .all(|c| c.id != CauseId::DyingMemcgStatFlush));
    }

    #[test]
    fn episodes_without_kernel_stalls_point_away_from_this_host() {
        let findings = Findings {
            targets: vec![target(vec![episode(100, 40.0), episode(1100, 40.0)])],
            ..Findings::default()
        };
        let verdict = diagnose(&findings);
        assert!(!verdict.healthy);
        assert_eq!(verdict.causes[0].id, CauseId::NotThisHost);
        assert_eq!(verdict.worst_ms, 40.0);
        assert_eq!(verdict.first_stall_ns, Some(T0 + 100_000_000));
        // Without the tracer, the doctor cannot tell: it does not claim it.
        let blind = Findings {
            tracer: TracerState::Unavailable {
                reason: "needs CAP_BPF".into(),
            },
            ..findings
        };
        assert!(diagnose(&blind).causes.is_empty());
    }

    #[test]
    fn a_long_syscall_without_memcg_frames_is_its_own_cause() {
        let culprit = Culprit {
            comm: "backup".into(),
            pid: 7,
            tid: 7,
            syscall: Some("fsync".into()),
            path: Some("/var/lib/db/big".into()),
            kstack: vec!["ext4_sync_file+0x10".into()],
            ..Culprit::default()
        };
        let verdict = diagnose(&Findings {
            stalls: vec![stall(0, 0, 15.0, vec![Detector::Ksoftirqd], culprit)],
            ..Findings::default()
        });
        assert_eq!(verdict.causes[0].id, CauseId::LongSyscallSoftirqPending);
    }

    #[test]
    fn a_backlog_only_stall_drained_by_a_culprit_joins_its_cause() {
        let mut orphan = stall(0, 5000, 40.0, vec![Detector::RxBacklog], poller_culprit());
        orphan.culprit = None;
        orphan.drained_by = Some("cadvisor[4242]".into());
        let findings = Findings {
            stalls: vec![
                stall(0, 0, 24.0, vec![Detector::RstatHold], poller_culprit()),
                orphan,
            ],
            ..Findings::default()
        };
        let verdict = diagnose(&findings);
        assert_eq!(verdict.causes.len(), 1, "{:?}", verdict.causes);
        assert_eq!(verdict.causes[0].stalls, 2);
    }

    #[test]
    fn naming_skips_plumbing_frames() {
        let stack = [
            "_raw_spin_unlock_irq+0x1d",
            "handle_softirqs+0x10",
            "mlx5e_napi_poll+0x30",
        ]
        .map(String::from);
        assert_eq!(naming_frame(&stack).as_deref(), Some("mlx5e_napi_poll"));
    }
}
