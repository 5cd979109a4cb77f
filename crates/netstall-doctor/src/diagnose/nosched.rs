//! `kernel-nonpreemptible`: a runnable task waited while one task's kernel
//! code (a syscall, a kernel thread) ran on without a context switch. On
//! PREEMPT_NONE (and VOLUNTARY) kernels nothing preempts kernel code: only
//! its own cond_resched() gives the CPU up, so a long loop without one
//! makes every other task on that CPU wait (SysAK's "nosched"). IRQs stay
//! on, so softirqs still run at IRQ exit and RX itself need not stall: the
//! waiting tasks are the servers that answer, the agents, the probers.
//!
//! Trust: the tracer reports only sections of at least its threshold
//! (10 ms by default) that timer ticks saw, with IRQs on (a late tick is
//! irqs-off's) and another task runnable on the same CPU. A busy node shows
//! a few 10-20 ms sections (measured here under parallel builds: rustc in
//! write() draining per-CPU page lists, an execve): those are context
//! (`also`); one of 100 ms, or three of 20 ms, are the cause, `unhealthy`.

use std::collections::BTreeMap;

use netstall_events::kernel::Nonpreemptible;
use netstall_events::stack;

use super::{plural, round1, round2, thresholds, Cause, CauseId, Severity};
use crate::findings::Findings;

pub const TITLE: &str =
    "a task ran on in kernel code while others waited for its CPU (a non-preemptible kernel section)";

pub const REMEDIATION: &[&str] = &[
    "find why that syscall or kernel thread runs so long without cond_resched() (its stack is below): smaller requests, fewer of them, or a kernel with the fix",
    "make the kernel preemptible: boot PREEMPT_DYNAMIC kernels with preempt=full (or preempt=voluntary); check the mode in /sys/kernel/debug/sched/preempt",
    "until then, keep latency-sensitive tasks off that CPU (cpusets, CPU affinity)",
];

/// The sections of a run as a cause, and whether it is only context (`also`):
/// a cause (`unhealthy`) when one is at least 100 ms or three are at least
/// 20 ms; context otherwise; none without sections.
pub(super) fn cause(findings: &Findings) -> Option<(Cause, bool)> {
    let sections = &findings.nonpreemptible;
    let worst = sections
        .iter()
        .max_by(|a, b| a.duration_ms.total_cmp(&b.duration_ms))?;
    let long = sections
        .iter()
        .filter(|s| s.duration_ms >= thresholds::FAULT_REPEATED_MS)
        .count();
    // A loaded node (builds, memory reclaim) shows a few 10-20 ms sections
    // every few seconds: only long or repeated long ones are a fault.
    let fault =
        worst.duration_ms >= thresholds::FAULT_WORST_MS || long >= thresholds::FAULT_REPEATED;

    // Per CPU: time and sections; the CPU with most time is named.
    let mut per_cpu: BTreeMap<u32, (f64, usize)> = BTreeMap::new();
    for s in sections {
        let e = per_cpu.entry(s.cpu).or_default();
        e.0 += s.duration_ms;
        e.1 += 1;
    }
    let cpu = per_cpu
        .iter()
        .max_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
        .map(|(c, _)| *c);
    let seconds = (findings.end_ns.saturating_sub(findings.start_ns) as f64 / 1e9).max(1e-3);
    let busiest_ms = cpu.map_or(0.0, |c| per_cpu[&c].0);

    let mut evidence = vec![format!(
        "{} section{} of kernel code that ran on while other tasks were runnable on its CPU, worst {:.1} ms, {:.1} ms in all (IRQs on: timer ticks saw each)",
        sections.len(),
        plural(sections.len()),
        worst.duration_ms,
        sections.iter().map(|s| s.duration_ms).sum::<f64>()
    )];
    evidence.push(section_line(worst));
    // Who else ran on in the kernel, by task and syscall.
    let mut by_task: BTreeMap<(String, String), (usize, f64)> = BTreeMap::new();
    for s in sections {
        let e = by_task
            .entry((s.culprit.comm.clone(), syscall_of(s)))
            .or_default();
        e.0 += 1;
        e.1 = e.1.max(s.duration_ms);
    }
    if by_task.len() > 1 {
        let mut tasks: Vec<_> = by_task.into_iter().collect();
        tasks.sort_by_key(|t| std::cmp::Reverse(t.1 .0));
        evidence.extend(tasks.into_iter().take(3).map(|((comm, syscall), (n, w))| {
            format!("{n} × {comm} in {syscall} (worst {w:.1} ms)")
        }));
    }
    Some((
        Cause {
            id: CauseId::KernelNonpreemptible,
            title: TITLE.to_owned(),
            origin: CauseId::KernelNonpreemptible.origin(),
            severity: if fault {
                Severity::Unhealthy
            } else {
                Severity::Degraded
            },
            confidence: round2((0.5 + 0.05 * sections.len().min(6) as f64).min(0.8)),
            cpu,
            cpus: per_cpu.keys().copied().collect(),
            named: Some(syscall_of(worst)),
            culprit: Some(worst.culprit.clone()),
            stalls: sections.len(),
            episodes: 0,
            worst_ms: round1(worst.duration_ms),
            time_pct: round2(busiest_ms / 1e3 / seconds * 100.0),
            probes_pct: 0.0,
            evidence,
            remediation: REMEDIATION.iter().map(|l| l.to_string()).collect(),
        },
        !fault,
    ))
}

/// The section's syscall, or what ran it (a kernel thread).
fn syscall_of(s: &Nonpreemptible) -> String {
    s.culprit
        .syscall
        .clone()
        .unwrap_or_else(|| "a kernel thread".to_owned())
}

fn section_line(s: &Nonpreemptible) -> String {
    let c = &s.culprit;
    format!(
        "CPU {}: {} (pid {}, tid {}) in {}{} for {:.1} ms, {} task{} waiting; at {}",
        s.cpu,
        c.comm,
        c.pid,
        c.tid,
        syscall_of(s),
        c.path
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default(),
        s.duration_ms,
        s.waiting,
        plural(s.waiting as usize),
        stack::line(&stack::top_frames(&c.kstack, 5))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{diagnose, Status};
    use netstall_events::kernel::Culprit;

    const T0: u64 = 1_700_000_000_000_000_000;
    const MS: u64 = 1_000_000;

    fn run_of(sections: Vec<Nonpreemptible>) -> Findings {
        Findings {
            start_ns: T0,
            end_ns: T0 + 10_000 * MS,
            steal_source: Some(netstall_events::kernel::StealSource::ProcStat),
            nonpreemptible: sections,
            ..Findings::default()
        }
    }

    fn section(at_ms: u64, ms: u64) -> Nonpreemptible {
        Nonpreemptible {
            cpu: 1,
            start_ns: T0 + at_ms * MS,
            end_ns: T0 + (at_ms + ms) * MS,
            duration_ms: ms as f64,
            ticks: ms / 4,
            waiting: 1,
            culprit: Culprit {
                comm: "dd".into(),
                pid: 42,
                tid: 42,
                syscall: Some("write".into()),
                path: Some("/dev/sda".into()),
                kstack: vec!["clear_page_erms".into(), "iov_iter_zero".into()],
                ..Culprit::default()
            },
        }
    }

    #[test]
    fn repeated_sections_name_the_task_syscall_and_stack() {
        let findings = run_of(vec![
            section(1000, 30),
            section(3000, 52),
            section(5000, 25),
        ]);
        let verdict = diagnose(&findings);
        assert_eq!(verdict.status, Status::Unhealthy, "{verdict:?}");
        let cause = &verdict.causes[0];
        assert_eq!(cause.id, CauseId::KernelNonpreemptible);
        assert_eq!(cause.cpu, Some(1));
        assert_eq!(cause.named.as_deref(), Some("write"));
        assert_eq!(cause.worst_ms, 52.0);
        assert_eq!(cause.culprit.as_ref().unwrap().comm, "dd");
        assert!(
            cause.evidence[1].starts_with("CPU 1: dd (pid 42, tid 42) in write (/dev/sda) for 52.0 ms, 1 task waiting; at clear_page_erms"),
            "{:?}",
            cause.evidence
        );
    }

    #[test]
    fn one_long_section_is_a_fault_and_a_short_one_only_context() {
        let verdict = diagnose(&run_of(vec![section(1000, 150)]));
        assert_eq!(verdict.status, Status::Unhealthy);
        let verdict = diagnose(&run_of(vec![section(1000, 12)]));
        assert_eq!(verdict.status, Status::Healthy, "{verdict:?}");
        assert_eq!(verdict.also[0].id, CauseId::KernelNonpreemptible);
        // What a loaded node shows: short ones, or two long ones.
        for sections in [
            vec![section(1000, 14), section(3000, 19), section(5000, 11)],
            vec![section(1000, 30), section(3000, 45)],
        ] {
            let verdict = diagnose(&run_of(sections));
            assert_eq!(verdict.status, Status::Healthy, "{verdict:?}");
            assert_eq!(verdict.also[0].id, CauseId::KernelNonpreemptible);
        }
        let verdict = diagnose(&run_of(Vec::new()));
        assert!(verdict.also.is_empty() && verdict.causes.is_empty());
    }
}
