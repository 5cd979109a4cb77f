//! Is this node healthy? What the agent saw recently, judged: the answer of
//! `/healthz` and, through it, of `netstall check` (node-problem-detector).
//!
//! Pure: events go in with their times, the verdict comes out for a given
//! "now"; nothing here reads a clock.

use std::collections::VecDeque;
use std::time::Duration;

pub use netstall_events::agent::HealthReport;

/// Recent events kept for the verdict, at most (older ones are forgotten
/// first; a node with that many stalls is unhealthy either way).
const MAX_RECENT: usize = 1000;

/// (time ns, CPU, duration ms) of one kernel-seen RX stall.
type StallAt = (u64, u32, f64);

/// What the agent's tracing source is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TracerState {
    Off,
    /// Loading the BPF programs.
    Starting,
    Running,
    Unavailable(String),
}

impl TracerState {
    /// `off`, `running` or `unavailable: <why>`.
    pub fn describe(&self) -> String {
        match self {
            TracerState::Off => "off".into(),
            TracerState::Starting => "starting".into(),
            TracerState::Running => "running".into(),
            TracerState::Unavailable(why) => format!("unavailable: {why}"),
        }
    }
}

/// The node's recent history.
#[derive(Debug)]
pub struct Health {
    node: String,
    window_ns: u64,
    dying_limit: u64,
    /// (time ns, CPU, duration ms) of kernel-seen RX stalls.
    stalls: VecDeque<StallAt>,
    /// The culprit of each stall in `stalls` (same order), when known.
    culprits: VecDeque<Option<String>>,
    /// The latest stall or episode ever seen (not windowed): remediation's
    /// probation counts from it.
    last_problem_ns: Option<u64>,
    /// (time ns, peer) of probe episodes.
    episodes: VecDeque<(u64, String)>,
    dying: Option<u64>,
    peers: usize,
    pub tracer: TracerState,
    /// Worker threads that are not running, with why: while one is down,
    /// a quiet node is not known to be healthy.
    workers_down: std::collections::BTreeMap<&'static str, String>,
}

impl Health {
    pub fn new(node: &str, window: Duration, dying_limit: u64) -> Self {
        Self {
            node: node.to_string(),
            window_ns: window.as_nanos() as u64,
            dying_limit,
            stalls: VecDeque::new(),
            culprits: VecDeque::new(),
            last_problem_ns: None,
            episodes: VecDeque::new(),
            dying: None,
            peers: 0,
            tracer: TracerState::Off,
            workers_down: Default::default(),
        }
    }

    pub fn stall(&mut self, at_ns: u64, cpu: u32, duration_ms: f64) {
        self.stall_by(at_ns, cpu, duration_ms, None);
    }

    /// A stall with its culprit (`comm` or `comm/syscall`).
    pub fn stall_by(&mut self, at_ns: u64, cpu: u32, duration_ms: f64, culprit: Option<String>) {
        push_bounded(&mut self.stalls, (at_ns, cpu, duration_ms));
        push_bounded(&mut self.culprits, culprit);
        self.saw_problem(at_ns);
    }

    pub fn episode(&mut self, at_ns: u64, peer: &str) {
        push_bounded(&mut self.episodes, (at_ns, peer.to_string()));
        self.saw_problem(at_ns);
    }

    fn saw_problem(&mut self, at_ns: u64) {
        self.last_problem_ns = Some(self.last_problem_ns.map_or(at_ns, |t| t.max(at_ns)));
    }

    pub fn dying_memcgs(&mut self, dying: u64) {
        self.dying = Some(dying);
    }

    pub fn peers(&mut self, peers: usize) {
        self.peers = peers;
    }

    /// A worker thread stopped (`why`): the verdict is unknown until it runs again.
    pub fn worker_down(&mut self, worker: &'static str, why: &str) {
        self.workers_down.insert(worker, why.to_string());
    }

    /// A worker thread runs (again).
    pub fn worker_up(&mut self, worker: &'static str) {
        self.workers_down.remove(worker);
    }

    /// Why the agent cannot see what the verdict needs, one sentence each:
    /// a quiet report from a blind agent would be a false "OK".
    fn blind(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        match &self.tracer {
            TracerState::Running => {}
            TracerState::Off => {
                reasons.push("the kernel stall tracer is off: RX stalls cannot be seen".into())
            }
            TracerState::Starting => reasons.push("the kernel stall tracer is starting".into()),
            TracerState::Unavailable(why) => {
                reasons.push(format!("the kernel stall tracer is unavailable: {why}"))
            }
        }
        for (worker, why) in &self.workers_down {
            reasons.push(format!("the agent's {worker} worker is not running: {why}"));
        }
        reasons
    }

    /// The verdict as of `now_ns` (REALTIME).
    pub fn report(&self, now_ns: u64) -> HealthReport {
        let since = now_ns.saturating_sub(self.window_ns);
        let recent_stalls: Vec<(&StallAt, &Option<String>)> = self
            .stalls
            .iter()
            .zip(&self.culprits)
            .filter(|s| s.0 .0 >= since)
            .collect();
        let worst_with_culprit = recent_stalls
            .iter()
            .copied()
            .max_by(|a, b| a.0 .2.total_cmp(&b.0 .2));
        let worst = worst_with_culprit.map(|(s, _)| s);
        let mut peers_with_episodes: Vec<String> = self
            .episodes
            .iter()
            .filter(|e| e.0 >= since)
            .map(|e| e.1.clone())
            .collect();
        peers_with_episodes.sort();
        peers_with_episodes.dedup();

        let window = humanize(self.window_ns);
        let mut problems = Vec::new();
        if let Some(&(_, cpu, ms)) = worst {
            problems.push(format!(
                "{} RX stalls in {window}, worst {ms:.0} ms on CPU {cpu}",
                recent_stalls.len()
            ));
        }
        // This node's own RX stalling delays the replies to all of its probes.
        let stalled_peers = peers_with_episodes.len();
        if stalled_peers >= 2 && 2 * stalled_peers >= self.peers {
            problems.push(format!(
                "probes to {stalled_peers} of {} peers stalled in {window}",
                self.peers
            ));
        }
        if let Some(dying) = self.dying.filter(|&d| d > self.dying_limit) {
            problems.push(format!(
                "{dying} dying memory cgroups (limit {})",
                self.dying_limit
            ));
        }
        // A problem seen is a problem; without one, a blind agent does not know.
        let blind = self.blind();
        let status = if !problems.is_empty() {
            "problem"
        } else if !blind.is_empty() {
            "unknown"
        } else {
            "ok"
        };
        problems.extend(blind);
        HealthReport {
            node: self.node.clone(),
            status: status.into(),
            problems,
            tracer: self.tracer.describe(),
            dying_memcgs: self.dying,
            stalls: recent_stalls.len(),
            worst_stall_ms: worst.map(|s| s.2),
            peers: self.peers,
            peers_with_episodes,
            window_s: self.window_ns / 1_000_000_000,
            worst_culprit: worst_with_culprit.and_then(|(_, c)| c.clone()),
            worst_cpu: worst.map(|s| s.1),
            last_problem_ns: self.last_problem_ns,
            dying_memcg_limit: self.dying_limit,
        }
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() == MAX_RECENT {
        queue.pop_front();
    }
    queue.push_back(item);
}

fn humanize(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// node-problem-detector's plugin exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Ok = 0,
    Problem = 1,
    Unknown = 2,
}

/// `netstall check`'s verdict and its one short line from a health report.
pub fn check_verdict(report: &HealthReport) -> (CheckStatus, String) {
    if report.status == "unknown" {
        let why = report.problems.join("; ");
        return (CheckStatus::Unknown, format!("Unknown: {why}"));
    }
    match report.problems.as_slice() {
        [] => {
            let dying = report
                .dying_memcgs
                .map_or(String::new(), |d| format!(", {d} dying memcgs"));
            (
                CheckStatus::Ok,
                format!("OK: no RX stalls in {}s{dying}", report.window_s),
            )
        }
        [first] => (CheckStatus::Problem, format!("NetStall: {first}")),
        [first, rest @ ..] => (
            CheckStatus::Problem,
            format!("NetStall: {first} (+{} more)", rest.len()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const NOW: u64 = 1_800_000_000 * S;

    fn health() -> Health {
        let mut h = Health::new("node2", Duration::from_secs(300), 10_000);
        h.peers(4);
        h.tracer = TracerState::Running;
        h
    }

    #[test]
    fn a_blind_agent_does_not_say_ok() {
        let mut h = health();
        h.tracer = TracerState::Off;
        let (status, line) = check_verdict(&h.report(NOW));
        assert_eq!(status, CheckStatus::Unknown);
        assert_eq!(
            line,
            "Unknown: the kernel stall tracer is off: RX stalls cannot be seen"
        );
        h.tracer = TracerState::Unavailable("needs CAP_BPF".into());
        let (status, line) = check_verdict(&h.report(NOW));
        assert_eq!(status, CheckStatus::Unknown);
        assert!(line.contains("needs CAP_BPF"), "{line}");

        h.tracer = TracerState::Running;
        h.worker_down("cgroups", "panicked; restarting");
        let (status, line) = check_verdict(&h.report(NOW));
        assert_eq!(status, CheckStatus::Unknown);
        assert!(line.contains("cgroups worker"), "{line}");
        h.worker_up("cgroups");
        assert_eq!(check_verdict(&h.report(NOW)).0, CheckStatus::Ok);

        // What was seen still counts: stalls make a problem, blind or not.
        h.tracer = TracerState::Off;
        h.episode(NOW - S, "node1");
        h.episode(NOW - S, "node3");
        let (status, line) = check_verdict(&h.report(NOW));
        assert_eq!(status, CheckStatus::Problem);
        assert!(line.starts_with("NetStall: probes to 2 of 4"), "{line}");
    }

    #[test]
    fn a_quiet_node_is_ok() {
        let mut h = health();
        h.dying_memcgs(12);
        let r = h.report(NOW);
        assert_eq!(r.status, "ok");
        let (status, line) = check_verdict(&r);
        assert_eq!(status, CheckStatus::Ok);
        assert_eq!(line, "OK: no RX stalls in 300s, 12 dying memcgs");
    }

    #[test]
    fn recent_stalls_make_a_problem_and_old_ones_expire() {
        let mut h = health();
        h.stall(NOW - 10 * S, 0, 52.0);
        h.stall(NOW - 5 * S, 0, 117.0);
        let (status, line) = check_verdict(&h.report(NOW));
        assert_eq!(status, CheckStatus::Problem);
        assert_eq!(line, "NetStall: 2 RX stalls in 5m, worst 117 ms on CPU 0");
        assert_eq!(h.report(NOW + 400 * S).status, "ok");
    }

    #[test]
    fn episodes_toward_most_peers_point_at_this_node() {
        let mut h = health();
        h.episode(NOW - S, "node1");
        assert_eq!(
            h.report(NOW).status,
            "ok",
            "one peer is that peer's problem"
        );
        h.episode(NOW - S, "node3");
        h.dying_memcgs(50_000);
        let r = h.report(NOW);
        assert_eq!(r.peers_with_episodes, ["node1", "node3"]);
        let (status, line) = check_verdict(&r);
        assert_eq!(status, CheckStatus::Problem);
        assert_eq!(
            line,
            "NetStall: probes to 2 of 4 peers stalled in 5m (+1 more)"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut h = health();
        for i in 0..10 * MAX_RECENT as u64 {
            h.stall(NOW + i, 1, 20.0);
            h.episode(NOW + i, "p");
        }
        assert_eq!(h.stalls.len(), MAX_RECENT);
        assert_eq!(h.episodes.len(), MAX_RECENT);
    }
}
