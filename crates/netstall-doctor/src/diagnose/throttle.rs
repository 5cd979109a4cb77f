//! `cpu-throttled`: a CPU cgroup ran out of its CFS quota and the target's
//! server, inside it, answered late (its tasks waited for the next period).
//!
//! The throttling is read in the kernel (`netstall_kernel::throttle`, never
//! cpu.stat). Trust: Kubernetes nodes throttle some pod all the time, so
//! throttling alone is no cause. It must line up with slow answers of an
//! HTTP target, and the cgroup must hold the process that serves it (found
//! by its listening socket) for the cause to make a node unhealthy; without
//! that tie, only a large overlap ([`MIN_LINED_UP`] slow answers, the
//! cgroup throttled in most periods) is reported, and only as `degraded`.

use std::collections::BTreeMap;

use netstall_events::probe::{Episode, EpisodeKind};
use netstall_events::throttle::{CpuThrottle, TargetServer};

use super::{
    overlaps, plural, remediation, round1, round2, title, Cause, CauseId, Grade, Severity,
    TargetEpisode,
};
use crate::findings::{Findings, TargetFindings};

/// An HTTP answer at least this slow may be a throttled one ...
pub const SLOW_ANSWER_MS: f64 = 10.0;
/// ... and at least this many times the target's fast answers (its 5th
/// percentile): a server that is always slow is not slow now.
pub const SLOW_OVER_FAST: f64 = 5.0;
/// Without the server's cgroup, this many slow answers must line up ...
pub const MIN_LINED_UP: usize = 5;
/// ... with a cgroup throttled in at least this share of its periods.
pub const BIG_THROTTLED_SHARE: f64 = 0.5;

/// The target's server that cgroup `cgroup` holds (it or one of its
/// ancestors), if any.
fn holder<'a>(servers: &'a [TargetServer], cgroup: &str) -> Option<&'a TargetServer> {
    servers.iter().find(|s| holds(s, cgroup))
}

/// Whether cgroup `cgroup` holds the server (it or one of its ancestors).
fn holds(server: &TargetServer, cgroup: &str) -> bool {
    server.cgroups.iter().any(|c| {
        c == cgroup
            || (cgroup != "/" && c.starts_with(cgroup) && c[cgroup.len()..].starts_with('/'))
    })
}

fn target<'a>(findings: &'a Findings, text: &str) -> Option<&'a TargetFindings> {
    findings.targets.iter().find(|t| t.target == text)
}

/// The throttling that lines up with `span`: the intervals of cgroups that
/// hold the target's server.
fn lining_up<'a>(
    findings: &'a Findings,
    servers: &'a [TargetServer],
    span: (u64, u64),
) -> impl Iterator<Item = &'a CpuThrottle> + 'a {
    findings
        .throttle
        .iter()
        .filter(move |t| t.throttled > 0 && holder(servers, &t.cgroup).is_some())
        .filter(move |t| overlaps(span, (t.start_ns, t.end_ns)))
}

/// Whether a probe episode toward `target_text` lines up with the
/// throttling of the cgroup that holds the target's server.
pub(super) fn explains(findings: &Findings, target_text: &str, e: &Episode) -> bool {
    target(findings, target_text).is_some_and(|t| {
        lining_up(findings, &t.servers, (e.start_ns, e.end_ns))
            .next()
            .is_some()
    })
}

/// An HTTP target's slow answers: (sent_ns, rtt_ms) at least
/// [`SLOW_ANSWER_MS`] and [`SLOW_OVER_FAST`] × its 5th percentile.
pub fn slow_answers(t: &TargetFindings) -> Vec<(u64, f64)> {
    let mut rtts: Vec<f64> = t.rtts.iter().filter_map(|(_, r)| *r).collect();
    if rtts.is_empty() {
        return Vec::new();
    }
    rtts.sort_by(f64::total_cmp);
    let fast_ms = rtts[(rtts.len() - 1) / 20] / 1e3;
    let bound = SLOW_ANSWER_MS.max(SLOW_OVER_FAST * fast_ms);
    t.rtts
        .iter()
        .filter_map(|(sent, rtt)| Some((*sent, (*rtt)? / 1e3)))
        .filter(|(_, ms)| *ms >= bound)
        .collect()
}

/// A slow answer as an episode of one probe, for grading.
fn answer_episode(sent_ns: u64, ms: f64, target: &str) -> Episode {
    Episode {
        kind: EpisodeKind::Spike,
        start_ns: sent_ns,
        end_ns: sent_ns + (ms * 1e6) as u64,
        duration_ms: ms,
        uncertainty_ms: 0.0,
        probes: 1,
        flows_affected: 1,
        flows_total: 1,
        flows: vec![0],
        first_seq: 0,
        last_seq: 0,
        max_rtt_us: Some(ms * 1e3),
        peer: Some(target.to_owned()),
        node: None,
    }
}

/// Per cgroup over the run: periods, throttled periods, throttled ms, quota.
fn totals(throttle: &[CpuThrottle]) -> BTreeMap<&str, (u64, u64, f64, Option<f64>, f64)> {
    let mut per: BTreeMap<&str, (u64, u64, f64, Option<f64>, f64)> = BTreeMap::new();
    for t in throttle.iter().filter(|t| !t.removed) {
        let e = per.entry(&t.cgroup).or_default();
        e.0 += t.periods;
        e.1 += t.throttled;
        e.2 += t.throttled_ms;
        e.3 = t.quota_ms.or(e.3);
        e.4 = t.period_ms;
    }
    per
}

/// A cgroup whose throttling lines up with a target's slow answers: the
/// cgroup, whether it holds the target's server, the target, the slow
/// answers that line up, and all its slow answers.
type Candidate<'a> = (String, bool, &'a TargetFindings, Vec<(u64, f64)>, usize);

/// The `cpu-throttled` cause of a run, if its evidence holds; `claimed`
/// are the probe episodes [`explains`] gave it.
pub(super) fn causes(findings: &Findings, claimed: &[TargetEpisode], grade: &Grade) -> Vec<Cause> {
    let per_cgroup = totals(&findings.throttle);
    // For each HTTP target: its slow answers lining up with a cgroup's
    // throttling, by cgroup, and whether that cgroup holds its server.
    let mut best: Option<Candidate<'_>> = None;
    for t in findings.targets.iter().filter(|t| t.proto == "http") {
        let slow = slow_answers(t);
        let mut by_cgroup: BTreeMap<&str, Vec<(u64, f64)>> = BTreeMap::new();
        for &(sent, ms) in &slow {
            let span = (sent, sent + (ms * 1e6) as u64);
            for th in findings
                .throttle
                .iter()
                .filter(|th| th.throttled > 0 && overlaps(span, (th.start_ns, th.end_ns)))
            {
                let answers = by_cgroup.entry(&th.cgroup).or_default();
                if answers.last() != Some(&(sent, ms)) {
                    answers.push((sent, ms));
                }
            }
        }
        for (cgroup, answers) in by_cgroup {
            let tied = holder(&t.servers, cgroup).is_some();
            let (periods, throttled, ..) = per_cgroup.get(cgroup).copied().unwrap_or_default();
            let big = answers.len() >= MIN_LINED_UP
                && throttled as f64 >= BIG_THROTTLED_SHARE * periods.max(1) as f64;
            // The server's own cgroup wins over any other.
            let rank = (tied, answers.len());
            if (tied || big)
                && best
                    .as_ref()
                    .is_none_or(|(_, bt, _, ba, _)| rank > (*bt, ba.len()))
            {
                best = Some((cgroup.to_owned(), tied, t, answers, slow.len()));
            }
        }
    }
    let Some((cgroup, tied, t, answers, slow_total)) = best else {
        return Vec::new();
    };
    let (periods, throttled, throttled_ms, quota_ms, period_ms) =
        per_cgroup.get(cgroup.as_str()).copied().unwrap_or_default();

    let mut evidence = vec![format!(
        "cgroup {cgroup} was throttled in {throttled} of {periods} period{} ({:.0} ms throttled{}) during the run",
        plural(periods as usize),
        throttled_ms,
        quota_ms
            .map(|q| format!(", quota {q:.0} ms per {period_ms:.0} ms"))
            .unwrap_or_default()
    )];
    let worst = answers.iter().map(|a| a.1).fold(0.0, f64::max);
    evidence.push(format!(
        "{} of {} HTTP answer{} from {} were slow (≥ {SLOW_ANSWER_MS:.0} ms and {SLOW_OVER_FAST:.0}× its fast ones, worst {worst:.1} ms); {} of them line up with its throttled periods",
        slow_total,
        t.received,
        plural(t.received as usize),
        t.target,
        answers.len()
    ));
    if let Some(gone) = findings
        .throttle
        .iter()
        .find(|th| th.removed && th.cgroup == cgroup)
    {
        evidence.push(format!(
            "cgroup {cgroup} was removed during the run, {:.1} s in: its throttling is counted until then",
            gone.start_ns.saturating_sub(findings.start_ns) as f64 / 1e9
        ));
    }
    if let Some(s) = holder(&t.servers, &cgroup) {
        evidence.push(format!(
            "{} is served by {}[{}] in cgroup {}",
            t.target,
            s.comm,
            s.pid,
            s.cgroups.join(" → ")
        ));
    }
    if !claimed.is_empty() {
        evidence.push(format!(
            "{} probe episode{} line up with its throttling",
            claimed.len(),
            plural(claimed.len())
        ));
    }
    let others: Vec<String> = per_cgroup
        .iter()
        .filter(|(c, v)| **c != cgroup && v.1 > 0)
        .take(3)
        .map(|(c, v)| format!("{c} ({} throttled period{})", v.1, plural(v.1 as usize)))
        .collect();
    if !others.is_empty() {
        evidence.push(format!("also throttled (context): {}", others.join(", ")));
    }
    evidence.push(
        "throttling read in the kernel (the scheduler's struct cfs_bandwidth, by a BPF cgroup iterator), never from cpu.stat"
            .into(),
    );

    let mut eps: Vec<Episode> = answers
        .iter()
        .map(|&(sent, ms)| answer_episode(sent, ms, &t.target))
        .collect();
    eps.extend(claimed.iter().map(|(_, _, e)| (*e).clone()));
    let refs: Vec<&Episode> = eps.iter().collect();
    let id = CauseId::CpuThrottled;
    let (by_answers, time_pct, probes_pct) = grade.severity(id.origin(), &[], &refs);
    Vec::from([Cause {
        id,
        title: format!("{} (cgroup {cgroup})", title(id)),
        origin: id.origin(),
        // Not tied to the server: context for a person, never a fault.
        severity: if tied { by_answers } else { Severity::Degraded },
        confidence: round2(if tied { 0.85 } else { 0.4 }),
        cpu: None,
        cpus: Vec::new(),
        named: Some(cgroup),
        culprit: None,
        stalls: 0,
        episodes: answers.len() + claimed.len(),
        worst_ms: round1(refs.iter().map(|e| e.duration_ms).fold(worst, f64::max)),
        time_pct,
        probes_pct,
        evidence,
        remediation: remediation(id),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{diagnose, Status};
    use crate::findings::SamplerState;

    const T0: u64 = 1_700_000_000_000_000_000;
    const MS: u64 = 1_000_000;
    const URL: &str = "http://10.244.2.10:8080/";

    /// 20 s of HTTP answers every 50 ms: 1 ms, except those sent while
    /// `slow(i)` holds, which take 45 ms.
    fn http_target(slow: impl Fn(u64) -> bool, server: Option<&str>) -> TargetFindings {
        let rtts: Vec<(u64, Option<f64>)> = (0..400)
            .map(|i| {
                (
                    T0 + i * 50 * MS,
                    Some(if slow(i) { 45_000.0 } else { 1_000.0 }),
                )
            })
            .collect();
        TargetFindings {
            target: URL.into(),
            proto: "http".into(),
            sent: 400,
            received: 400,
            rtts,
            on_this_host: true,
            servers: server
                .map(|c| TargetServer {
                    pid: 4321,
                    comm: "web".into(),
                    cgroups: vec![c.into()],
                })
                .into_iter()
                .collect(),
            ..TargetFindings::default()
        }
    }

    /// `cgroup` throttled in every 250 ms reading of `from_ms..to_ms`.
    fn throttled(cgroup: &str, from_ms: u64, to_ms: u64) -> Vec<CpuThrottle> {
        (from_ms / 250..to_ms / 250)
            .map(|k| CpuThrottle {
                start_ns: T0 + k * 250 * MS,
                end_ns: T0 + (k + 1) * 250 * MS,
                cgroup: cgroup.into(),
                cgroup_id: 7,
                quota_ms: Some(20.0),
                period_ms: 100.0,
                periods: 3,
                throttled: 3,
                throttled_ms: 200.0,
                removed: false,
            })
            .collect()
    }

    fn run(targets: Vec<TargetFindings>, throttle: Vec<CpuThrottle>) -> Findings {
        Findings {
            start_ns: T0,
            end_ns: T0 + 20_000 * MS,
            steal_source: Some(netstall_events::kernel::StealSource::ProcStat),
            throttle_reader: Some(SamplerState::Ran),
            targets,
            throttle,
            ..Findings::default()
        }
    }

    #[test]
    fn slow_answers_while_the_servers_cgroup_is_throttled_are_cpu_throttled() {
        // Throttled from 5 s to 15 s; 3 of 4 answers in that time are slow.
        let findings = run(
            vec![http_target(
                |i| (100..300).contains(&i) && !i.is_multiple_of(4),
                Some("/kubepods/pod1/web"),
            )],
            throttled("/kubepods/pod1", 5_000, 15_000),
        );
        let verdict = diagnose(&findings);
        assert_eq!(verdict.status, Status::Unhealthy, "{verdict}");
        let cause = &verdict.causes[0];
        assert_eq!(cause.id, CauseId::CpuThrottled, "{verdict}");
        assert_eq!(cause.named.as_deref(), Some("/kubepods/pod1"));
        assert_eq!(cause.severity, Severity::Unhealthy);
        let text = cause.evidence.join("\n");
        assert!(text.contains("throttled in 120 of 120 periods"), "{text}");
        assert!(text.contains("150 of 400 HTTP answers"), "{text}");
        assert!(
            text.contains("served by web[4321] in cgroup /kubepods/pod1/web"),
            "{text}"
        );
        assert!(!verdict
            .causes
            .iter()
            .any(|c| c.id == CauseId::DyingMemcgStatFlush));
        // Saved and replayed, the same verdict.
        let saved = Findings::from_records(findings.to_records(&Default::default(), None)).unwrap();
        assert_eq!(
            diagnose(&saved.findings).causes[0].id,
            CauseId::CpuThrottled
        );
    }

    #[test]
    fn routine_throttling_of_another_cgroup_leaves_a_healthy_node_healthy() {
        // A batch job throttled all run long; the server is elsewhere and
        // answers fast but for two stragglers.
        let findings = run(
            vec![http_target(
                |i| i == 50 || i == 210,
                Some("/kubepods/pod2/web"),
            )],
            throttled("/kubepods/batch", 0, 20_000),
        );
        let verdict = diagnose(&findings);
        assert!(
            !verdict.causes.iter().any(|c| c.id == CauseId::CpuThrottled),
            "{verdict}"
        );
        assert_ne!(verdict.status, Status::Unhealthy, "{verdict}");
        // No HTTP target at all: throttling is context, never a cause.
        let verdict = diagnose(&run(Vec::new(), throttled("/kubepods/batch", 0, 20_000)));
        assert_eq!(verdict.status, Status::Healthy, "{verdict}");
    }

    #[test]
    fn without_the_servers_cgroup_only_a_large_overlap_is_told_and_only_degraded() {
        let slow = |i: u64| (100..300).contains(&i) && !i.is_multiple_of(4);
        let findings = run(
            vec![http_target(slow, None)],
            throttled("/kubepods/pod1", 5_000, 15_000),
        );
        let verdict = diagnose(&findings);
        let cause = verdict
            .causes
            .iter()
            .chain(&verdict.also)
            .find(|c| c.id == CauseId::CpuThrottled)
            .unwrap_or_else(|| panic!("{verdict}"));
        assert_eq!(cause.severity, Severity::Degraded);
        assert!(cause.confidence < 0.5);
    }
}
