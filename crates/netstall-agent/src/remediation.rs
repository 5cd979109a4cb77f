//! Remediation, the pure part: what a bad node is, which step comes next,
//! which pods a drain evicts, who holds the fleet's Lease, and the proof.
//! No I/O and no clock here: [`crate::remediator`] reads the node, the
//! Lease and the health report, asks [`next_step`], and does the step.
//!
//! The state machine (docs/remediation.md):
//!
//! ```text
//! healthy ──bad──► flagged (condition True, Event)
//!    ▲                │ mode ≥ cordon
//!    │                ▼
//!    │   [quick fix: drop_caches 1, once, if --remediate-memcg and the cause is dying memcgs;
//!    │    stalls stop for --probation → healthy]
//!    │                │ stalls continue; min-healthy met; Lease taken
//!    │                ▼
//!    │            cordoned ──mode ≥ drain──► drained ──mode reboot──► rebooting
//!    │                │                        │                          │ host restarted
//!    │                ▼                        ▼                          ▼
//!    └── uncordon, condition False, Lease released, proof ◄── probation (healthy for --probation)
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::health::HealthReport;
pub use netstall_events::agent::{Mode, Proof, Snapshot};

/// The node condition type this agent owns.
pub const CONDITION: &str = "NetworkStall";

/// The Node annotation holding an ongoing remediation's [`Record`]: it
/// survives the agent's restart and the node's reboot, and shows in
/// `kubectl describe node`.
pub const ANNOTATION: &str = "netstall.io/remediation";

/// The default Lease, `NAMESPACE/NAME`.
pub const DEFAULT_LEASE: &str = "netstall/netstall-remediation";

/// A node is bad with at least this many kernel-seen RX stalls over the
/// threshold within the problem window (one stall is not a bad node)...
pub const MIN_STALLS: usize = 3;
// ...or when probes toward at least 2 peers, and at least half of them,
// saw episodes (the health verdict's own rule: this node's RX delays the
// replies to all of its probes).

/// A namespaced object, `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl FromStr for ObjectRef {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                })
            }
            _ => bail!("wants NAMESPACE/NAME, not '{text}'"),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `--min-healthy`: a share of the nodes, or a count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinHealthy {
    Percent(f64),
    Count(usize),
}

impl FromStr for MinHealthy {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        let bad = || {
            anyhow::anyhow!("--min-healthy wants a percentage (51%) or a node count, not '{text}'")
        };
        match text.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(bad());
                }
                Ok(MinHealthy::Percent(p))
            }
            None => Ok(MinHealthy::Count(text.parse().map_err(|_| bad())?)),
        }
    }
}

impl fmt::Display for MinHealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinHealthy::Percent(p) => write!(f, "{p}%"),
            MinHealthy::Count(n) => write!(f, "{n}"),
        }
    }
}

impl MinHealthy {
    /// Whether `healthy` of `total` nodes are enough to take one more out.
    pub fn met(self, healthy: usize, total: usize) -> bool {
        match self {
            MinHealthy::Percent(p) => total > 0 && healthy as f64 * 100.0 >= p * total as f64,
            MinHealthy::Count(n) => healthy >= n,
        }
    }
}

/// The remediation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RemediationConfig {
    pub mode: Mode,
    pub dry_run: bool,
    pub lease: ObjectRef,
    pub lease_duration: Duration,
    pub min_healthy: MinHealthy,
    pub reboot_sentinel: PathBuf,
    pub reboot_command: Option<String>,
    pub probation: Duration,
    pub drain_timeout: Duration,
    pub memcg_quick_fix: bool,
}

/// The cause id the doctor uses for the story's failure.
pub const DYING_MEMCG_CAUSE: &str = "dying-memcg-stat-flush";

/// The agent's verdict for remediation, from its health report.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub bad: bool,
    /// A cause id (`dying-memcg-stat-flush`, `unexplained`).
    pub cause: String,
    /// One line: culprit, CPU, worst stall.
    pub message: String,
}

/// Judges a health report: bad by [`MIN_STALLS`] stalls or the peers' rule.
pub fn judge(report: &HealthReport) -> Verdict {
    let peers_rule = report.problems.iter().any(|p| p.starts_with("probes to "));
    let bad = report.stalls >= MIN_STALLS || peers_rule;
    let dying_over = report
        .dying_memcgs
        .is_some_and(|d| d > report.dying_memcg_limit);
    let cause = if dying_over {
        DYING_MEMCG_CAUSE
    } else {
        "unexplained"
    };
    let mut parts = Vec::new();
    if let Some(culprit) = &report.worst_culprit {
        parts.push(format!("culprit {culprit}"));
    }
    if let (Some(cpu), Some(ms)) = (report.worst_cpu, report.worst_stall_ms) {
        parts.push(format!(
            "CPU {cpu}, worst stall {ms:.0} ms ({} stalls in {}s)",
            report.stalls, report.window_s
        ));
    }
    if peers_rule {
        parts.push(format!(
            "probes to {} of {} peers stalled",
            report.peers_with_episodes.len(),
            report.peers
        ));
    }
    if let Some(d) = report.dying_memcgs.filter(|_| dying_over) {
        parts.push(format!("{d} dying memory cgroups"));
    }
    let message = if parts.is_empty() {
        "no RX stalls".to_string()
    } else {
        parts.join("; ")
    };
    Verdict {
        bad,
        cause: cause.to_string(),
        message,
    }
}

/// `dying-memcg-stat-flush` → `DyingMemcgStatFlush`: a condition's reason.
pub fn camel_case(id: &str) -> String {
    id.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            first.into_iter().chain(chars).collect::<String>()
        })
        .collect()
}

/// An ongoing destructive remediation, kept in the Node's [`ANNOTATION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub phase: Phase,
    pub cause: String,
    pub started_ns: u64,
    /// When the current phase began.
    pub phase_ns: u64,
    pub before: Snapshot,
    /// The host's boot id when the reboot was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The node was already cordoned (by someone else) when this began: it
    /// is left cordoned at the end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub was_cordoned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Cordoned,
    Drained,
    Rebooting,
    Probation,
}

/// What the node looks like to the remediator this tick.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub mode: Mode,
    pub verdict: &'a Verdict,
    /// The NetworkStall condition's status on the Node is True.
    pub condition_true: bool,
    pub record: Option<&'a Record>,
    /// The drop_caches quick fix was applied at this time (this run).
    pub quick_fix_ns: Option<u64>,
    pub memcg_quick_fix: bool,
    /// The latest stall or episode (REALTIME ns).
    pub last_problem_ns: Option<u64>,
    /// When this agent started (REALTIME ns): after a restart, probation
    /// counts from here at the earliest.
    pub agent_start_ns: u64,
    pub now_ns: u64,
    pub probation: Duration,
    /// The host restarted since the reboot was asked for.
    pub rebooted: bool,
}

/// The one step to take now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Set the condition True and tell it (Event).
    Flag,
    /// The node is healthy again: condition False, proof (no destructive step was taken).
    Clear,
    /// drop_caches level 1 on the node.
    QuickFix,
    /// Take the Lease (checking min-healthy first) and cordon.
    Cordon,
    /// Evict the node's pods.
    Drain,
    /// Write the sentinel or run the reboot command.
    Reboot,
    /// The reboot was asked for; the host has not restarted yet.
    AwaitReboot,
    /// Enter probation (the node stays cordoned).
    Probation,
    /// Cordoned and waiting for the node to be healthy for the probation.
    AwaitHealthy,
    /// Healthy for the probation: uncordon, condition False, Lease released, proof.
    Finish,
}

fn healthy_for(s: &Situation, since_ns: u64) -> bool {
    let quiet_from = s
        .last_problem_ns
        .unwrap_or(0)
        .max(since_ns)
        .max(s.agent_start_ns);
    !s.verdict.bad && s.now_ns.saturating_sub(quiet_from) >= s.probation.as_nanos() as u64
}

/// The next step, by the state machine in this module's doc.
pub fn next_step(s: &Situation) -> Step {
    if s.mode == Mode::Off {
        return Step::Nothing;
    }
    match s.record {
        None => {
            if !s.verdict.bad {
                // Healthy again: with the quick fix, only once the stalls have
                // stayed away for the probation.
                let quiet = match s.quick_fix_ns {
                    Some(fix) => healthy_for(s, fix),
                    None => true,
                };
                return if s.condition_true && quiet {
                    Step::Clear
                } else {
                    Step::Nothing
                };
            }
            if !s.condition_true {
                return Step::Flag;
            }
            if s.mode == Mode::Condition {
                return Step::Nothing;
            }
            let wants_quick_fix = s.memcg_quick_fix && s.verdict.cause == DYING_MEMCG_CAUSE;
            match s.quick_fix_ns {
                None if wants_quick_fix => Step::QuickFix,
                // Escalate only when a stall came after the fix.
                Some(fix) if s.last_problem_ns.is_none_or(|t| t <= fix) => Step::Nothing,
                _ => Step::Cordon,
            }
        }
        Some(record) => match record.phase {
            Phase::Cordoned if s.mode >= Mode::Drain => Step::Drain,
            Phase::Drained if s.mode >= Mode::Reboot => Step::Reboot,
            Phase::Rebooting if !s.rebooted => Step::AwaitReboot,
            Phase::Cordoned | Phase::Drained | Phase::Rebooting => Step::Probation,
            Phase::Probation => {
                if healthy_for(s, record.phase_ns) {
                    Step::Finish
                } else {
                    Step::AwaitHealthy
                }
            }
        },
    }
}

/// A pod on the node, as the drain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub owner_kinds: Vec<String>,
    /// Has the kubelet's `kubernetes.io/config.mirror` annotation (a static pod).
    pub mirror: bool,
    /// `app.kubernetes.io/name` label.
    pub app: Option<String>,
    /// Succeeded or Failed: nothing left to move.
    pub finished: bool,
}

/// Why a pod is left alone, or `None` to evict it.
pub fn skip_reason(pod: &PodInfo) -> Option<&'static str> {
    if pod.mirror {
        Some("mirror pod")
    } else if pod.owner_kinds.iter().any(|k| k == "DaemonSet") {
        Some("DaemonSet pod")
    } else if pod.app.as_deref() == Some("netstall-agent") {
        Some("the node's own agent")
    } else if pod.finished {
        Some("finished")
    } else {
        None
    }
}

/// The Lease as read from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub renew_ns: Option<u64>,
    pub duration_s: Option<i32>,
}

/// Who may take the Lease now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCall {
    /// Ours already: renew.
    Renew,
    /// Free or expired: take it.
    Take,
    /// Held by another node until it expires.
    HeldBy(String),
}

pub fn lease_call(lease: &LeaseView, me: &str, now_ns: u64) -> LeaseCall {
    match &lease.holder {
        Some(h) if h == me => LeaseCall::Renew,
        Some(h) if !h.is_empty() => {
            let expires = lease.renew_ns.unwrap_or(0)
                + u64::from(lease.duration_s.unwrap_or(0).max(0) as u32) * 1_000_000_000;
            if now_ns < expires {
                LeaseCall::HeldBy(h.clone())
            } else {
                LeaseCall::Take
            }
        }
        _ => LeaseCall::Take,
    }
}

/// Whether the cause is gone: the node is not bad, and for dying memcgs,
/// their count is back within the limit.
pub fn cause_gone(verdict: &Verdict, after: &Snapshot, dying_limit: u64) -> bool {
    !verdict.bad
        && (verdict.cause != DYING_MEMCG_CAUSE
            || after.dying_memcgs.is_none_or(|d| d <= dying_limit))
}

/// p99 (upper bound of its bucket, ms) from Prometheus text histogram
/// lines `NAME_bucket{...,le="X"} N` for `metric`.
pub fn p99_from_text(text: &str, metric: &str) -> Option<f64> {
    let prefix = format!("{metric}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, n)| *n >= 0.99 * total)
        .map(|(le, _)| {
            if le.is_finite() {
                le * 1e3
            } else {
                f64::INFINITY
            }
        })
        .filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn report(stalls: usize, dying: u64) -> HealthReport {
        HealthReport {
            node: "node-a".into(),
            status: if stalls > 0 { "problem" } else { "ok" }.into(),
            problems: vec![],
            tracer: "running".into(),
            dying_memcgs: Some(dying),
            stalls,
            worst_stall_ms: (stalls > 0).then_some(117.0),
            peers: 4,
            peers_with_episodes: vec![],
            window_s: 300,
            worst_culprit: (stalls > 0).then(|| "cadvisor/read".to_string()),
            worst_cpu: (stalls > 0).then_some(3),
            last_problem_ns: None,
            dying_memcg_limit: 10_000,
        }
    }

    #[test]
    fn one_stall_is_not_a_bad_node_three_are() {
        assert!(!judge(&report(1, 0)).bad);
        assert!(!judge(&report(2, 0)).bad);
        let v = judge(&report(3, 50_000));
        assert!(v.bad);
        assert_eq!(v.cause, DYING_MEMCG_CAUSE);
        assert_eq!(camel_case(&v.cause), "DyingMemcgStatFlush");
        assert_eq!(
            v.message,
            "culprit cadvisor/read; CPU 3, worst stall 117 ms (3 stalls in 300s); 50000 dying memory cgroups"
        );
        assert_eq!(judge(&report(5, 10)).cause, "unexplained");
    }

    #[test]
    fn modes_parse_in_order_and_bad_ones_are_named() {
        let modes: Vec<Mode> = ["off", "condition", "cordon", "drain", "reboot"]
            .iter()
            .map(|m| m.parse().unwrap())
            .collect();
        assert!(modes.windows(2).all(|w| w[0] < w[1]));
        let err = "restart".parse::<Mode>().unwrap_err().to_string();
        assert!(err.contains("restart") && err.contains("reboot"), "{err}");
    }

    #[test]
    fn min_healthy_is_a_share_or_a_count() {
        let half: MinHealthy = "51%".parse().unwrap();
        assert!(half.met(2, 3));
        assert!(!half.met(1, 2));
        assert!(!half.met(0, 0));
        let two: MinHealthy = "2".parse().unwrap();
        assert!(two.met(2, 10) && !two.met(1, 10));
        for bad in ["", "x%", "150%", "-1"] {
            assert!(bad.parse::<MinHealthy>().is_err(), "{bad}");
        }
    }

    fn situation<'a>(verdict: &'a Verdict, record: Option<&'a Record>) -> Situation<'a> {
        Situation {
            mode: Mode::Reboot,
            verdict,
            condition_true: true,
            record,
            quick_fix_ns: None,
            memcg_quick_fix: false,
            last_problem_ns: Some(100 * S),
            agent_start_ns: 0,
            now_ns: 110 * S,
            probation: Duration::from_secs(60),
            rebooted: false,
        }
    }

    fn record(phase: Phase, phase_ns: u64) -> Record {
        Record {
            phase,
            cause: "unexplained".into(),
            started_ns: 0,
            phase_ns,
            before: Snapshot::default(),
            boot_id: None,
            was_cordoned: false,
        }
    }

    #[test]
    fn a_bad_node_walks_the_states_in_order() {
        let bad = judge(&report(3, 0));
        let mut s = situation(&bad, None);
        s.condition_true = false;
        assert_eq!(next_step(&s), Step::Flag);
        s.condition_true = true;
        assert_eq!(next_step(&s), Step::Cordon);
        s.mode = Mode::Condition;
        assert_eq!(next_step(&s), Step::Nothing);
        s.mode = Mode::Off;
        assert_eq!(next_step(&s), Step::Nothing);
        s.mode = Mode::Reboot;
        let r = record(Phase::Cordoned, 0);
        s.record = Some(&r);
        assert_eq!(next_step(&s), Step::Drain);
        s.mode = Mode::Cordon;
        assert_eq!(next_step(&s), Step::Probation);
        s.mode = Mode::Reboot;
        let r = record(Phase::Drained, 0);
        s.record = Some(&r);
        assert_eq!(next_step(&s), Step::Reboot);
        let r = record(Phase::Rebooting, 0);
        s.record = Some(&r);
        assert_eq!(next_step(&s), Step::AwaitReboot);
        s.rebooted = true;
        assert_eq!(next_step(&s), Step::Probation);
        // Probation: healthy for 60 s after the last stall and the phase start.
        let healthy = judge(&report(0, 0));
        s.verdict = &healthy;
        let r = record(Phase::Probation, 105 * S);
        s.record = Some(&r);
        assert_eq!(next_step(&s), Step::AwaitHealthy);
        s.now_ns = 165 * S;
        assert_eq!(next_step(&s), Step::Finish);
        // An agent restarted at 150 s counts from its start.
        s.agent_start_ns = 150 * S;
        assert_eq!(next_step(&s), Step::AwaitHealthy);
    }

    #[test]
    fn the_quick_fix_comes_first_and_escalation_only_if_stalls_continue() {
        let bad = judge(&report(3, 50_000));
        let mut s = situation(&bad, None);
        s.memcg_quick_fix = true;
        assert_eq!(next_step(&s), Step::QuickFix);
        s.quick_fix_ns = Some(105 * S);
        assert_eq!(next_step(&s), Step::Nothing, "no stall since the fix");
        s.last_problem_ns = Some(106 * S);
        assert_eq!(next_step(&s), Step::Cordon, "stalls continued");
        // Healthy after the fix: cleared once quiet for the probation.
        let healthy = judge(&report(0, 0));
        s.verdict = &healthy;
        s.last_problem_ns = Some(104 * S);
        s.now_ns = 120 * S;
        assert_eq!(next_step(&s), Step::Nothing);
        s.now_ns = 170 * S;
        assert_eq!(next_step(&s), Step::Clear);
    }

    #[test]
    fn drains_skip_daemonsets_mirrors_and_the_agent() {
        let pod = |owner: &str, mirror: bool, app: Option<&str>| PodInfo {
            namespace: "default".into(),
            name: "p".into(),
            owner_kinds: vec![owner.to_string()],
            mirror,
            app: app.map(String::from),
            finished: false,
        };
        assert_eq!(skip_reason(&pod("ReplicaSet", false, None)), None);
        assert_eq!(
            skip_reason(&pod("DaemonSet", false, None)),
            Some("DaemonSet pod")
        );
        assert_eq!(skip_reason(&pod("Node", true, None)), Some("mirror pod"));
        assert_eq!(
            skip_reason(&pod("", false, Some("netstall-agent"))),
            Some("the node's own agent")
        );
    }

    #[test]
    fn a_lease_is_taken_when_free_or_expired() {
        let held = LeaseView {
            holder: Some("node-b".into()),
            renew_ns: Some(100 * S),
            duration_s: Some(30),
        };
        assert_eq!(
            lease_call(&held, "node-a", 120 * S),
            LeaseCall::HeldBy("node-b".into())
        );
        assert_eq!(lease_call(&held, "node-a", 131 * S), LeaseCall::Take);
        assert_eq!(lease_call(&held, "node-b", 120 * S), LeaseCall::Renew);
        let free = LeaseView {
            holder: None,
            renew_ns: None,
            duration_s: None,
        };
        assert_eq!(lease_call(&free, "node-a", 0), LeaseCall::Take);
    }

    #[test]
    fn p99_comes_from_the_histogram_text() {
        let text = "netstall_probe_rtt_seconds_bucket{proto=\"icmp\",le=\"0.0001\"} 90\n\
                    netstall_probe_rtt_seconds_bucket{proto=\"icmp\",le=\"0.05\"} 98\n\
                    netstall_probe_rtt_seconds_bucket{proto=\"icmp\",le=\"0.25\"} 100\n\
                    netstall_probe_rtt_seconds_bucket{proto=\"icmp\",le=\"+Inf\"} 100\n";
        assert_eq!(
            p99_from_text(text, "netstall_probe_rtt_seconds"),
            Some(250.0)
        );
        assert_eq!(p99_from_text("", "netstall_probe_rtt_seconds"), None);
    }
}
