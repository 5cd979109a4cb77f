//! The node agent's records: its start, the peers it probes, its
//! `/healthz` verdict, dying-memcg crossings, remediation steps and proofs,
//! and `kubectl netstall status` lines.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The `/healthz` body (`{"type":"health",...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub node: String,
    /// `ok`, `problem`, or `unknown` (no problem seen, but a source the
    /// verdict needs is not running: the reasons are in `problems`).
    pub status: String,
    /// One short sentence per problem, worst first; then, if any, why the
    /// agent is partly blind.
    pub problems: Vec<String>,
    pub tracer: String,
    pub dying_memcgs: Option<u64>,
    /// Kernel-seen RX stalls over the threshold within the window.
    pub stalls: usize,
    pub worst_stall_ms: Option<f64>,
    pub peers: usize,
    /// Peers toward which probes saw episodes within the window.
    pub peers_with_episodes: Vec<String>,
    pub window_s: u64,
    /// The task holding the CPU in the worst stall (`comm` or `comm/syscall`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_culprit: Option<String>,
    /// The CPU of the worst stall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_cpu: Option<u32>,
    /// When the latest stall or probe episode was seen, ever (REALTIME ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_problem_ns: Option<u64>,
    /// The dying-memcg limit the verdict used (remediation names the cause
    /// `dying-memcg-stat-flush` when the count is over it).
    #[serde(default)]
    pub dying_memcg_limit: u64,
}

/// How far the agent goes, each mode including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Off,
    Condition,
    Cordon,
    Drain,
    Reboot,
}

/// What the proof compares, before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    pub worst_stall_ms: Option<f64>,
    /// Stalls per minute over the problem window.
    pub stall_rate_per_min: f64,
    /// p99 RTT of this node's probes to its peers (a stall on this node's
    /// RX delays the replies), from the histogram since the agent started.
    pub probe_p99_ms: Option<f64>,
    pub dying_memcgs: Option<u64>,
}

/// The proof a remediation ends with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proof {
    pub node: String,
    pub mode: Mode,
    pub cause: String,
    pub before: Snapshot,
    pub after: Snapshot,
    pub cause_gone: bool,
    pub duration_s: f64,
    pub ts_ns: u64,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text.trim() {
            "off" => Mode::Off,
            "condition" => Mode::Condition,
            "cordon" => Mode::Cordon,
            "drain" => Mode::Drain,
            "reboot" => Mode::Reboot,
            other => {
                return Err(format!(
                    "--remediate must be off, condition, cordon, drain or reboot, not '{other}'"
                ))
            }
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Mode::Off => "off",
            Mode::Condition => "condition",
            Mode::Cordon => "cordon",
            Mode::Drain => "drain",
            Mode::Reboot => "reboot",
        };
        f.write_str(name)
    }
}

impl Snapshot {
    pub fn of(report: &HealthReport, probe_p99_ms: Option<f64>) -> Self {
        let minutes = (report.window_s as f64 / 60.0).max(1.0 / 60.0);
        Snapshot {
            worst_stall_ms: report.worst_stall_ms,
            stall_rate_per_min: report.stalls as f64 / minutes,
            probe_p99_ms,
            dying_memcgs: report.dying_memcgs,
        }
    }
}

impl Proof {
    /// The Event message: one line, before → after.
    pub fn message(&self) -> String {
        fn ms(v: Option<f64>) -> String {
            v.map_or("-".into(), |v| format!("{v:.0} ms"))
        }
        fn count(v: Option<u64>) -> String {
            v.map_or("-".into(), |v| v.to_string())
        }
        format!(
            "{}: worst stall {} → {}, {:.1} → {:.1} stalls/min, probe p99 {} → {}, dying memcgs {} → {}; cause gone: {}",
            self.cause,
            ms(self.before.worst_stall_ms),
            ms(self.after.worst_stall_ms),
            self.before.stall_rate_per_min,
            self.after.stall_rate_per_min,
            ms(self.before.probe_p99_ms),
            ms(self.after.probe_p99_ms),
            count(self.before.dying_memcgs),
            count(self.after.dying_memcgs),
            if self.cause_gone { "yes" } else { "no" },
        )
    }
}

/// The `{"type":"agent"}` record at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStart {
    pub node: String,
    pub listen: String,
    pub peers_static: usize,
    pub peers_dns: Option<String>,
    pub peers_kubernetes: Option<String>,
    pub probe_rate: u32,
    pub tracer: bool,
    pub ts_ns: u64,
}

/// The `{"type":"peers"}` record: the subset this node probes, at start and
/// whenever discovery changes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peers {
    pub node: String,
    pub peers: Vec<String>,
    pub peers_known: usize,
    pub ts_ns: u64,
}

/// The `{"type":"memcg-dying"}` record, sent when the count crosses the limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemcgDying {
    pub node: String,
    pub dying: u64,
    pub limit: u64,
    pub over_limit: bool,
}

/// One `{"type":"remediation"}` record per remediation step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemediationStep {
    pub node: String,
    pub mode: Mode,
    pub step: String,
    pub dry_run: bool,
    pub reason: String,
    pub message: String,
    pub ts_ns: u64,
}

/// One node's line of `kubectl netstall status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// The `NetworkStall` condition: `True`, `False`, `Unknown`, or none.
    pub condition: Option<String>,
    pub condition_message: Option<String>,
    /// The agent's one-line verdict (as `netstall check` prints it), or why
    /// there is none (no agent on the node, its /healthz unreachable).
    pub agent: String,
    /// Whether the condition or the agent names a problem.
    pub problem: bool,
}

/// `netstall agent --print-config`: the settings in effect, after the
/// config file, the flags and the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentConfig {
    pub listen: String,
    pub node_name: String,
    /// `NAME=ADDR` of each static peer.
    pub peers: Vec<String>,
    pub peers_dns: Option<String>,
    pub peers_kubernetes: Option<String>,
    pub probe_rate: u32,
    pub max_peers: usize,
    pub stall_threshold_ms: f64,
    pub cgroup_interval_ms: f64,
    pub dying_memcg_limit: u64,
    pub problem_window_ms: f64,
    pub tracer: bool,
    /// Drops per kernel reason, counted in the kernel.
    #[serde(default)]
    pub packet_drops: bool,
    /// CFS throttling of the CPU cgroups, read in the kernel.
    #[serde(default)]
    pub cpu_throttling: bool,
    pub event_log: Option<String>,
    /// The flight recorder's directory (`None`: off).
    #[serde(default)]
    pub state_dir: Option<String>,
    #[serde(default)]
    pub state_max_bytes: u64,
    /// Stall-triggered CPU sampling.
    #[serde(default)]
    pub stall_sampling: bool,
    #[serde(default)]
    pub stall_sampling_window_ms: f64,
    #[serde(default)]
    pub stall_sampling_cooldown_ms: f64,
    pub remediate: Mode,
    pub dry_run: bool,
    pub lease: String,
    pub lease_duration_ms: f64,
    pub min_healthy: String,
    pub reboot_sentinel: String,
    pub reboot_command: Option<String>,
    pub probation_ms: f64,
    pub drain_timeout_ms: f64,
    pub remediate_memcg: bool,
}

/// The config file that gives exactly these settings: TOML with the keys
/// `--config` reads (the flags' names), durations as `10ms`, `5m`; a
/// setting without a value (no DNS peers, say) is left out.
impl fmt::Display for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A JSON string is a valid TOML basic string (the same escapes).
        let quoted = |s: &str| serde_json::to_string(s).expect("a string serializes");
        let duration = |ms: f64| {
            let d = std::time::Duration::from_nanos((ms * 1e6).round() as u64);
            quoted(&humantime::format_duration(d).to_string())
        };
        let peers: Vec<String> = self.peers.iter().map(|p| quoted(p)).collect();
        writeln!(f, "listen = {}", quoted(&self.listen))?;
        writeln!(f, "node-name = {}", quoted(&self.node_name))?;
        writeln!(f, "peers = [{}]", peers.join(", "))?;
        if let Some(dns) = &self.peers_dns {
            writeln!(f, "peers-dns = {}", quoted(dns))?;
        }
        if let Some(service) = &self.peers_kubernetes {
            writeln!(f, "peers-kubernetes = {}", quoted(service))?;
        }
        writeln!(f, "probe-rate = {}", self.probe_rate)?;
        writeln!(f, "max-peers = {}", self.max_peers)?;
        writeln!(f, "stall-threshold = {}", duration(self.stall_threshold_ms))?;
        writeln!(f, "cgroup-interval = {}", duration(self.cgroup_interval_ms))?;
        writeln!(f, "dying-memcg-limit = {}", self.dying_memcg_limit)?;
        writeln!(f, "problem-window = {}", duration(self.problem_window_ms))?;
        writeln!(f, "tracer = {}", self.tracer)?;
        writeln!(f, "packet-drops = {}", self.packet_drops)?;
        writeln!(f, "cpu-throttling = {}", self.cpu_throttling)?;
        if let Some(log) = &self.event_log {
            writeln!(f, "event-log = {}", quoted(log))?;
        }
        writeln!(
            f,
            "state-dir = {}",
            quoted(self.state_dir.as_deref().unwrap_or("-"))
        )?;
        writeln!(f, "state-max-bytes = {}", self.state_max_bytes)?;
        writeln!(f, "stall-sampling = {}", self.stall_sampling)?;
        writeln!(
            f,
            "stall-sampling-window = {}",
            duration(self.stall_sampling_window_ms)
        )?;
        writeln!(
            f,
            "stall-sampling-cooldown = {}",
            duration(self.stall_sampling_cooldown_ms)
        )?;
        writeln!(f, "remediate = {}", quoted(&self.remediate.to_string()))?;
        writeln!(f, "dry-run = {}", self.dry_run)?;
        writeln!(f, "lease = {}", quoted(&self.lease))?;
        writeln!(f, "lease-duration = {}", duration(self.lease_duration_ms))?;
        writeln!(f, "min-healthy = {}", quoted(&self.min_healthy))?;
        writeln!(f, "reboot-sentinel = {}", quoted(&self.reboot_sentinel))?;
        if let Some(command) = &self.reboot_command {
            writeln!(f, "reboot-command = {}", quoted(command))?;
        }
        writeln!(f, "probation = {}", duration(self.probation_ms))?;
        writeln!(f, "drain-timeout = {}", duration(self.drain_timeout_ms))?;
        writeln!(f, "remediate-memcg = {}", self.remediate_memcg)
    }
}

/// The agent released dying memcgs itself (`--remediate-memcg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemediationQuickFix {
    pub node: String,
    pub remediation: crate::cgroups::Remediation,
}

impl HealthReport {
    /// Reads an agent's `/healthz` body (one `health` record).
    pub fn from_json(body: &str) -> Result<Self, String> {
        match crate::parse_line(body.trim()) {
            Ok(crate::Record::Health(report)) => Ok(report),
            Ok(other) => Err(format!(
                "the agent's /healthz is not a health report but a `{}` record",
                other.type_name()
            )),
            Err(e) => Err(format!("the agent's /healthz is not a health report: {e}")),
        }
    }
}
