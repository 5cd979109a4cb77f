//! The doctor's records: its verdict, and everything the verdict was
//! computed from (saved with `doctor --save`, replayed with `--replay`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kernel::{Culprit, StealSource, Unavailable};
use crate::probe::Episode;

/// The causes the doctor knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    /// The hypervisor did not run the vCPUs (steal).
    VcpuSteal,
    /// Probes to this host stalled and no host evidence lines up.
    Unexplained,
    /// Probes stalled but this host's CPUs did not: the path or the far side.
    NotThisHost,
    /// The kernel dropped packets (a reason other than normal consumption).
    PacketDrops,
    /// TCP resent segments or SYN-ACKs: packets were lost on the way.
    TcpRetransmits,
    /// A CPU's backlog or a listen queue overflowed and dropped packets.
    BacklogOverflow,
    /// nf_conntrack dropped packets (insert races, a full table).
    ConntrackDrops,
    /// A CPU cgroup ran out of its CFS quota: its tasks (a server) waited
    /// for the next period.
    CpuThrottled,
    /// A task's kernel code ran on while others waited for its CPU.
    KernelNonpreemptible,
}

impl CauseId {
    /// The id used in JSON and text output.
    pub fn as_str(self) -> &'static str {
        match self {
            CauseId::DyingMemcgStatFlush => "dying-memcg-stat-flush",
            CauseId::IrqsOffSection => "irqs-off-section",
            CauseId::LongSyscallSoftirqPending => "long-syscall-softirq-pending",
            CauseId::KsoftirqdStarved => "ksoftirqd-starved",
            CauseId::VcpuSteal => "vcpu-steal",
            CauseId::Unexplained => "unexplained",
            CauseId::NotThisHost => "not-this-host",
            CauseId::PacketDrops => "packet-drops",
            CauseId::TcpRetransmits => "tcp-retransmits",
            CauseId::BacklogOverflow => "backlog-overflow",
            CauseId::ConntrackDrops => "conntrack-drops",
            CauseId::CpuThrottled => "cpu-throttled",
            CauseId::KernelNonpreemptible => "kernel-nonpreemptible",
        }
    }

    /// Where the cause lies.
    pub fn origin(self) -> Origin {
        match self {
            CauseId::DyingMemcgStatFlush
            | CauseId::IrqsOffSection
            | CauseId::LongSyscallSoftirqPending
            | CauseId::PacketDrops
            | CauseId::BacklogOverflow
            | CauseId::ConntrackDrops
            | CauseId::CpuThrottled
            | CauseId::KernelNonpreemptible => Origin::ThisNode,
            CauseId::KsoftirqdStarved | CauseId::VcpuSteal | CauseId::Unexplained => {
                Origin::Environment
            }
            // Resent because lost: on the path or the far side, unless this
            // node's drops (their own cause) explain them.
            CauseId::NotThisHost | CauseId::TcpRetransmits => Origin::Elsewhere,
        }
    }
}

/// Where a cause lies, which decides how much of it makes a node unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Something on this node to fix.
    ThisNode,
    /// The node's load or its hypervisor: real delay, nothing broken.
    Environment,
    /// Beyond this host: the network path or the far side.
    Elsewhere,
}

/// How bad one cause is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Degraded,
    Unhealthy,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Degraded => "degraded",
            Severity::Unhealthy => "unhealthy",
        }
    }
}

/// The verdict's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Nothing over the threshold.
    Healthy,
    /// Short delays with their explanation, under every threshold.
    Degraded,
    /// A cause over its threshold.
    Unhealthy,
    /// A source could not run: the doctor cannot say healthy.
    Unknown,
}

impl Status {
    /// The doctor's exit code: 0 healthy or degraded, 1 unhealthy, 2 unknown.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Healthy | Status::Degraded => 0,
            Status::Unhealthy => 1,
            Status::Unknown => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
            Status::Unknown => "unknown",
        }
    }
}

/// One ranked cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    pub id: CauseId,
    pub title: String,
    pub origin: Origin,
    /// `degraded` or `unhealthy`, by the doctor's thresholds.
    pub severity: Severity,
    /// 0–1: how sure the evidence makes the doctor.
    pub confidence: f64,
    /// The CPU with the most stalls of this cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Every CPU that stalled with this cause.
    pub cpus: Vec<u32>,
    /// Where it was found, for causes named by their stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub culprit: Option<Culprit>,
    /// Kernel stalls of this cause.
    pub stalls: usize,
    /// Probe episodes of this cause.
    pub episodes: usize,
    pub worst_ms: f64,
    /// Share of the run's time (on the worst CPU) this cause stalled, %.
    pub time_pct: f64,
    /// Share of all probes its episodes held or lost, %.
    pub probes_pct: f64,
    pub evidence: Vec<String>,
    pub remediation: Vec<String>,
}

/// A source of the doctor's evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceName {
    Tracer,
    Sampler,
    Probes,
    Steal,
    Counters,
    /// The drop and retransmit counter, and the network counters.
    Drops,
    /// CFS throttling per CPU cgroup (a BPF cgroup iterator).
    Throttle,
}

impl SourceName {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceName::Tracer => "tracer",
            SourceName::Sampler => "sampler",
            SourceName::Probes => "probes",
            SourceName::Steal => "steal",
            SourceName::Counters => "counters",
            SourceName::Drops => "drops",
            SourceName::Throttle => "throttle",
        }
    }
}

/// Whether a source ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceState {
    Ran,
    /// Ran, but not all of it (a detector missing on this kernel, a target
    /// that could not be probed).
    Partial,
    /// Not asked for.
    Off,
    /// Could not run (privilege, kernel feature).
    Unavailable,
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Ran => "ran",
            SourceState::Partial => "partial",
            SourceState::Off => "off",
            SourceState::Unavailable => "unavailable",
        }
    }
}

/// A source of evidence and whether it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub name: SourceName,
    pub state: SourceState,
    pub detail: String,
}

/// What netstall itself cost while it watched: its own threads seen by the
/// tracer, never a culprit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observer {
    pub stalls: usize,
    /// Probe episodes that lined up with those stalls.
    pub episodes: usize,
    pub worst_ms: f64,
    pub threads: Vec<String>,
}

/// The doctor's answer (the `"type":"verdict"` JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub status: Status,
    /// `status` is healthy or degraded (kept for scripts that read it).
    pub healthy: bool,
    /// Kernel stalls over the threshold (the observer's own excluded).
    pub stalls: usize,
    /// The longest stall, kernel or probe-seen.
    pub worst_ms: f64,
    /// Probe episodes across all targets.
    pub episodes: usize,
    /// Share of the run's time some CPU stalled, % (worst CPU).
    pub time_pct: f64,
    /// Share of probes held or lost in episodes, %.
    pub probes_pct: f64,
    pub causes: Vec<Cause>,
    /// Minor findings that do not set the status: environment causes beside
    /// an unhealthy verdict (steal, load), and lone short tick gaps nothing
    /// corroborates (no packet waited, no probe felt them). Real, shown with
    /// their evidence, and not what makes the node unhealthy.
    pub also: Vec<Cause>,
    /// Which sources ran: a verdict is only as good as what it saw.
    pub sources: Vec<Source>,
    pub observer: Observer,
    /// When the first stall (kernel or probe) started, REALTIME ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_stall_ns: Option<u64>,
    /// Seconds from the start of the run to the verdict (set by a live run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_verdict_s: Option<f64>,
    /// Seconds from the first stall to the verdict (set by a live run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_first_stall_s: Option<f64>,
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl Verdict {
    /// The sources that could not run among those a verdict needs.
    pub fn blind_to(&self) -> Vec<SourceName> {
        self.sources
            .iter()
            .filter(|s| {
                s.state == SourceState::Unavailable
                    && matches!(s.name, SourceName::Tracer | SourceName::Sampler)
            })
            .map(|s| s.name)
            .collect()
    }

    /// `VERDICT: unhealthy: dying-memcg-stat-flush on CPU 0, culprit cadvisor[6649]
    /// read(/sys/fs/cgroup/memory/memory.stat), worst 117.2 ms (...)`.
    pub fn headline(&self) -> String {
        // The top cause, where, and who: what a reader acts on first.
        let top = self.causes.first().map(|c| {
            let culprit = c.culprit.as_ref().map(|k| {
                let call = match (&k.syscall, &k.path) {
                    (Some(syscall), Some(path)) => format!(" {syscall}({path})"),
                    (Some(syscall), None) => format!(" {syscall}"),
                    _ => String::new(),
                };
                format!(", culprit {}[{}]{call}", k.comm, k.pid)
            });
            format!(
                "{}{}{}, worst {:.1} ms",
                c.id.as_str(),
                c.cpu
                    .map(|cpu| format!(" on CPU {cpu}"))
                    .unwrap_or_default(),
                culprit.unwrap_or_default(),
                c.worst_ms
            )
        });
        match (self.status, top) {
            (Status::Healthy, _) if self.also.is_empty() => {
                "VERDICT: healthy: no RX stall over the threshold, no probe episode".into()
            }
            (Status::Healthy, _) => format!(
                "VERDICT: healthy: nothing to act on ({} minor finding{} below, worst {:.1} ms)",
                self.also.len(),
                plural(self.also.len()),
                self.also.iter().map(|c| c.worst_ms).fold(0.0, f64::max)
            ),
            (Status::Unknown, _) => format!(
                "VERDICT: unknown: {} could not run; the doctor cannot say healthy",
                self.blind_to()
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            (status, Some(top)) => format!(
                "VERDICT: {}: {top} ({} cause{}, {} kernel stall{}, {} probe episode{}, {:.2}% of the time, {:.2}% of probes)",
                status.as_str(),
                self.causes.len(),
                plural(self.causes.len()),
                self.stalls,
                plural(self.stalls),
                self.episodes,
                plural(self.episodes),
                self.time_pct,
                self.probes_pct
            ),
            (status, None) => format!("VERDICT: {}", status.as_str()),
        }
    }
}

/// The verdict for people: the headline, each cause with its evidence and
/// remediation, the minor causes, the observer's cost and the sources.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.headline())?;
        for (rank, cause) in self.causes.iter().enumerate() {
            writeln!(
                f,
                "{}. {} [{}] (confidence {:.0}%{}): {}",
                rank + 1,
                cause.id.as_str(),
                cause.severity.as_str(),
                cause.confidence * 100.0,
                cause.cpu.map(|c| format!(", CPU {c}")).unwrap_or_default(),
                cause.title
            )?;
            for e in &cause.evidence {
                writeln!(f, "   - {e}")?;
            }
            writeln!(f, "   remediation:")?;
            for (i, r) in cause.remediation.iter().enumerate() {
                writeln!(f, "     {}. {r}", i + 1)?;
            }
        }
        for cause in &self.also {
            let counts: Vec<String> = [(cause.stalls, "stall"), (cause.episodes, "episode")]
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| format!("{n} {what}{}", plural(*n)))
                .collect();
            writeln!(
                f,
                "also: {} (degraded, {}, worst {:.1} ms): {}",
                cause.id.as_str(),
                counts.join(", "),
                cause.worst_ms,
                cause.title
            )?;
        }
        if self.observer.stalls > 0 {
            writeln!(
                f,
                "observer: netstall's own threads ({}) were seen in {} stall(s), worst {:.1} ms: its cost, not a cause",
                self.observer.threads.join(", "),
                self.observer.stalls,
                self.observer.worst_ms
            )?;
        }
        let sources: Vec<String> = self
            .sources
            .iter()
            .map(|s| format!("{} {}", s.name.as_str(), s.state.as_str()))
            .collect();
        write!(f, "sources: {}", sources.join(", "))?;
        // What a blind or partial source could not see (a detector missing
        // on this kernel says what it would have shown).
        for s in self
            .sources
            .iter()
            .filter(|s| matches!(s.state, SourceState::Unavailable | SourceState::Partial))
        {
            write!(f, "\n   - {}: {}", s.name.as_str(), s.detail)?;
        }
        if let Some(t) = self.time_to_verdict_s {
            write!(
                f,
                "\ntime to verdict: {t:.1} s from start{}",
                self.from_first_stall_s
                    .map(|s| format!(", {s:.1} s from the first stall"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

/// Whether the kernel tracer ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum TracerState {
    /// Traced every CPU with these detectors; `missing` could not load
    /// here, each with why.
    Ran {
        detectors: Vec<String>,
        missing: Vec<Unavailable>,
    },
    /// Could not run; the reason says why (privilege, kernel feature).
    Unavailable { reason: String },
}

impl Default for TracerState {
    fn default() -> Self {
        TracerState::Ran {
            detectors: Vec::new(),
            missing: Vec::new(),
        }
    }
}

/// Whether the CPU sampler ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum SamplerState {
    #[default]
    Ran,
    /// Not asked for (`--no-sample`).
    Off,
    /// Could not run; the reason says why.
    Unavailable { reason: String },
}

/// The first record of a saved doctor run: what ran, over which window, on
/// which host. The rest of the run's records follow it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DoctorRun {
    /// When the run started and ended.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Host name, kernel, command line (the report's header).
    #[serde(default)]
    pub host: String,
    pub tracer: TracerState,
    pub sampler: SamplerState,
    /// Where steal windows came from; `None` when steal could not be measured.
    pub steal_source: Option<StealSource>,
    /// netstall's own process: its threads are the observer, never a culprit.
    pub self_pid: u32,
    /// Dying memory cgroups after remediation, when the run remediated (the demo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dying_after: Option<u64>,
    /// Whether the drop and retransmit counter ran (absent in runs saved
    /// before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_counter: Option<SamplerState>,
    /// Whether the CPU throttling reader ran (absent in runs saved before
    /// it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<SamplerState>,
}

/// Probes toward one target during a doctor run, with the episodes they saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeTarget {
    /// As the user gave it (`HOST[:PORT]`).
    pub target: String,
    /// `icmp`, `tcp`, `udp`.
    pub proto: String,
    pub sent: u64,
    pub received: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub max_us: Option<f64>,
    pub episodes: Vec<Episode>,
    /// (sent_ns, rtt_us) of every probe, for the report's timeline.
    pub rtts: Vec<(u64, Option<f64>)>,
    /// Why the target could not be probed at all, if so.
    pub error: Option<String>,
    /// The target is an address of this host (any of its network
    /// namespaces): its probes never left this machine.
    pub on_this_host: bool,
    /// (scheduled_ns, late_ms) of the sends that left at least 2 ms after
    /// their schedule: the prober's own scheduling delay.
    pub late_sends: Vec<(u64, f64)>,
    /// The processes on this host that listen for the target (HTTP
    /// targets), with their CPU cgroups: one, unless several network
    /// namespaces use the same address (labs side by side).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<crate::throttle::TargetServer>,
}

/// Dying memory cgroups, counted from /proc/cgroups and the hierarchy
/// (never by reading memory.stat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemcgCount {
    pub kernel: String,
    pub live: u64,
    pub dying: u64,
    /// The worst IRQs-off time one memory.stat read can take at this count
    /// on this kernel era (about 2 µs per dying memcg with pending updates).
    pub worst_stall_ms: Option<f64>,
}

/// What `netstall demo` concluded (its last record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoResult {
    pub rx_cpu: u32,
    pub poller_comm: String,
    pub zombies: u64,
    /// Baseline probe episodes that vCPU steal does not explain.
    pub baseline_episodes: usize,
    /// Baseline probe episodes during which the hypervisor held a vCPU.
    pub baseline_steal_episodes: usize,
    pub incident_episodes: usize,
    pub incident_max_rtt_ms: Option<f64>,
    pub diagnosed: Option<CauseId>,
    pub culprit: Option<String>,
    pub diagnosed_cpu: Option<u32>,
    pub from_first_stall_s: Option<f64>,
    pub dying_before_remediation: u64,
    pub dying_after_remediation: u64,
    pub healthy_after: bool,
    /// After remediation: probe episodes that steal does not explain.
    pub after_episodes: usize,
    pub after_steal_episodes: usize,
    pub elapsed_s: f64,
}

/// The demo starts a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoStep {
    pub step: u32,
    pub title: String,
}

impl DemoResult {
    /// The demo did what it promises: the doctor named the dying-memcg
    /// flush, and the node was healthy after the remediation.
    pub fn reproduced(&self) -> bool {
        self.diagnosed == Some(CauseId::DyingMemcgStatFlush) && self.healthy_after
    }
}

/// The demo's conclusion, after a blank line.
impl fmt::Display for DemoResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\nDone in {:.0} s: netstall doctor named {} (culprit {}, CPU {}) {:.1} s after the first stall; after remediation the node is {}.",
            self.elapsed_s,
            self.diagnosed.map_or("nothing", CauseId::as_str),
            self.culprit.as_deref().unwrap_or("unknown"),
            self.diagnosed_cpu.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
            self.from_first_stall_s.unwrap_or(0.0),
            if self.healthy_after { "healthy" } else { "still unhealthy" }
        )
    }
}

/// How many steps the demo takes (its headings count them).
pub const DEMO_STEPS: u32 = 7;

/// A step's heading, after a blank line.
impl fmt::Display for DemoStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n[{}/{DEMO_STEPS}] {}", self.step, self.title)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_line, Record};

    #[test]
    fn the_demo_concludes_in_one_sentence_after_a_blank_line() {
        // docs/json.md's example.
        let line = r#"{"type":"demo","rx_cpu":1,"poller_comm":"cadvisor","zombies":25000,"baseline_episodes":0,"baseline_steal_episodes":0,"incident_episodes":9,"incident_max_rtt_ms":117.2,"diagnosed":"dying-memcg-stat-flush","culprit":"cadvisor","diagnosed_cpu":1,"from_first_stall_s":12.3,"dying_before_remediation":25010,"dying_after_remediation":12,"healthy_after":true,"after_episodes":0,"after_steal_episodes":0,"elapsed_s":92.7}"#;
        let Ok(Record::Demo(mut result)) = parse_line(line) else {
            panic!("docs/json.md's demo example parses");
        };
        let text = result.to_string();
        assert!(text.starts_with("\nDone in "), "{text}");
        assert!(text.contains(" s: netstall doctor named "), "{text}");
        result.diagnosed = Some(CauseId::DyingMemcgStatFlush);
        result.healthy_after = true;
        assert!(result.reproduced());
        result.healthy_after = false;
        assert!(!result.reproduced());
        assert!(result.to_string().ends_with("the node is still unhealthy."));
    }

    #[test]
    fn steps_are_counted_out_of_seven() {
        let step = DemoStep {
            step: 3,
            title: "The incident".into(),
        };
        assert_eq!(step.to_string(), "\n[3/7] The incident");
    }
}
