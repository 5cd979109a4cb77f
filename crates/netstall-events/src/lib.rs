//! netstall's records: every JSON line a netstall command writes is one
//! [`Record`], tagged by its `"type"`, and reads back into the same value.
//!
//! The tracer, the prober, the sampler, the doctor, the agent and the
//! reports all speak these types; text and JSON are two renderings of the
//! same records (a record's text form is its `Display`, beside its type).
//! All `*_ns` are CLOCK_REALTIME nanoseconds. The contract, with one example
//! line per type, is docs/json.md.

pub mod agent;
pub mod bisect;
pub mod cgroups;
pub mod cpu;
pub mod doctor;
pub mod kernel;
pub mod lab;
pub mod net;
pub mod probe;
pub mod stack;
pub mod throttle;
pub mod top;
pub mod xray;

use std::fmt;
use std::io::BufRead;

use serde::{Deserialize, Serialize};

/// Declares the record enum, its `"type"` names and its conversions, from
/// one list: a record type is added in exactly one place.
macro_rules! records {
    ($($(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal,)*) => {
        /// Every JSON line netstall writes.
        // Records are made, written and read one at a time (a saved run holds
        // thousands at most): boxing the large ones would cost every user a
        // `Box` for no measurable gain.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum Record {
            $($(#[$doc])* #[serde(rename = $name)] $variant($ty),)*
        }

        /// Every record type, as its `"type"` says it.
        pub const TYPE_NAMES: &[&str] = &[$($name),*];

        impl Record {
            /// The record's `"type"`.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Record::$variant(_) => $name,)*
                }
            }
        }

        $(impl From<$ty> for Record {
            fn from(value: $ty) -> Self {
                Record::$variant(value)
            }
        })*
    };
}

records! {
    // The prober (`probe`, the doctor's and the agent's probes).
    /// A probe session's settings.
    Session(probe::SessionInfo) = "session",
    Probe(probe::ProbeResult) = "probe",
    Episode(probe::Episode) = "episode",
    /// A probe session's summary.
    Summary(probe::Summary) = "summary",

    // The kernel tracer (`trace`, the doctor, the agent).
    TraceStart(kernel::TraceStart) = "trace-start",
    Stall(kernel::Stall) = "stall",
    Icmp(kernel::IcmpEcho) = "icmp",
    Syscall(kernel::SlowSyscall) = "syscall",
    Steal(kernel::Steal) = "steal",
    /// A task's kernel code ran on while others waited for its CPU.
    Nonpreemptible(kernel::Nonpreemptible) = "nonpreemptible",
    /// The stats readers' ledger (the agent, its recorder, the doctor).
    StatFlush(kernel::StatFlush) = "stat-flush",
    Histogram(kernel::Histogram) = "histogram",
    SelfCost(kernel::ProgramCost) = "self-cost",
    TraceSummary(kernel::TraceReport) = "trace-summary",
    /// Packets dropped at one site during an interval (`--drops`).
    Drop(net::PacketDrops) = "drop",
    /// One TCP flow's retransmits during an interval (`--drops`).
    Retransmit(net::Retransmits) = "retransmit",
    /// Network counters that grew over a window (softnet, SNMP, conntrack).
    NetCounters(net::NetCounters) = "net-counters",
    /// One CPU cgroup's CFS throttling during an interval (the doctor).
    CpuThrottle(throttle::CpuThrottle) = "cpu-throttle",

    // CPU sampling (`xray`, the doctor) and stacks (`collapse`).
    SampleGap(xray::SampleGap) = "sample-gap",
    Window(xray::SampleWindow) = "window",
    Xray(xray::XraySummary) = "xray",
    /// The agent's sampling window on a CPU after a stall there.
    CpuSampling(xray::CpuSampling) = "cpu-sampling",
    Stack(xray::FoldedStack) = "stack",
    Collapse(xray::CollapseSummary) = "collapse",

    // The doctor (`doctor`, `demo`): a saved run is its `doctor-run` record,
    // then everything the verdict was computed from, then the verdict.
    DoctorRun(doctor::DoctorRun) = "doctor-run",
    ProbeTarget(doctor::ProbeTarget) = "probe-target",
    MemcgCount(doctor::MemcgCount) = "memcg-count",
    Verdict(doctor::Verdict) = "verdict",
    DemoStep(doctor::DemoStep) = "demo-step",
    Demo(doctor::DemoResult) = "demo",

    // Cgroups, the lab, bisect.
    Cgroups(cgroups::Report) = "cgroups",
    /// Dying memory cgroups released (or, dry, what would be).
    MemcgRemediation(cgroups::Remediation) = "memcg-remediation",
    Lab(lab::LabStatus) = "lab",
    LabDown(lab::LabDown) = "lab-down",
    /// Packets to the lab's pod dropped at random (`lab drops`).
    LabDrops(lab::LabDrops) = "lab-drops",
    /// The pod's server in a CPU cgroup with a small quota (`lab throttle`).
    LabThrottle(lab::LabThrottle) = "lab-throttle",
    /// CPU input backlogs overflowed for real (`lab backlog`).
    LabBacklog(lab::LabBacklog) = "lab-backlog",
    /// Non-preemptible kernel sections injected (`lab nosched`).
    LabNosched(lab::LabNosched) = "lab-nosched",
    Spin(kernel::InjectedStall) = "spin",
    Poll(lab::PollRead) = "poll",
    Clean(lab::CleanReport) = "clean",
    Zombies(lab::ZombieReport) = "zombies",
    Bisect(bisect::BisectRun) = "bisect",
    /// One kernel booted by `scripts/kernel-matrix.sh`: what netstall did on it.
    KernelRun(kernel::KernelRun) = "kernel-run",

    // The node agent, `top`, `kubectl netstall`.
    Agent(agent::AgentStart) = "agent",
    AgentConfig(agent::AgentConfig) = "agent-config",
    Peers(agent::Peers) = "peers",
    Health(agent::HealthReport) = "health",
    MemcgDying(agent::MemcgDying) = "memcg-dying",
    Remediation(agent::RemediationStep) = "remediation",
    RemediationQuickFix(agent::RemediationQuickFix) = "remediation-quick-fix",
    RemediationProof(agent::Proof) = "remediation-proof",
    NodeStatus(agent::NodeStatus) = "node-status",
    TopStatus(top::TopStatus) = "top-status",

    // Any command.
    Error(Failure) = "error",
}

/// A command that failed. With `--json` it is the last line on standard
/// output, so that a program reading the records learns why they stop;
/// the same sentence goes to standard error for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// One line: what went wrong and, where there is one, what to do.
    pub message: String,
    /// The exit code the command ends with.
    pub exit_code: u8,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "netstall: error: {}", self.message)
    }
}

impl Record {
    /// The record as one JSON line (without the newline).
    pub fn to_json_line(&self) -> String {
        // Records hold only strings, numbers, options, vectors and maps
        // with string keys: serializing them cannot fail.
        serde_json::to_string(self).expect("a record serializes")
    }

    /// The record's text form for people, where it has one (records only
    /// meant for programs, such as a trace's start, have none).
    pub fn text(&self) -> Option<String> {
        let text = match self {
            Record::Stall(r) => r.to_string(),
            Record::Icmp(r) => r.to_string(),
            Record::Syscall(r) => r.to_string(),
            Record::Steal(r) => r.to_string(),
            Record::Nonpreemptible(r) => r.to_string(),
            Record::StatFlush(r) => r.to_string(),
            Record::Histogram(r) => r.to_string(),
            Record::SelfCost(r) => r.to_string(),
            Record::TraceSummary(r) => r.to_string(),
            Record::Drop(r) => r.to_string(),
            Record::Retransmit(r) => r.to_string(),
            Record::NetCounters(r) => r.to_string(),
            Record::Cgroups(r) => r.to_string(),
            Record::Lab(r) => r.to_string(),
            Record::LabDown(r) => r.to_string(),
            Record::LabDrops(r) => r.to_string(),
            Record::LabThrottle(r) => r.to_string(),
            Record::CpuThrottle(r) => r.to_string(),
            Record::LabBacklog(r) => r.to_string(),
            Record::LabNosched(r) => r.to_string(),
            Record::Zombies(r) => r.to_string(),
            Record::Clean(r) => r.to_string(),
            Record::Spin(r) => r.to_string(),
            Record::SampleGap(r) => r.to_string(),
            Record::Window(r) => r.to_string(),
            Record::Xray(r) => r.to_string(),
            Record::CpuSampling(r) => r.to_string(),
            Record::Stack(r) => r.to_string(),
            Record::Verdict(r) => r.to_string(),
            Record::AgentConfig(r) => r.to_string(),
            Record::Bisect(r) => r.to_string(),
            Record::KernelRun(r) => r.to_string(),
            Record::DemoStep(r) => r.to_string(),
            Record::Demo(r) => r.to_string(),
            _ => return None,
        };
        Some(text.trim_end().to_owned())
    }
}

/// A line of JSON-lines input that is not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ReadError {}

/// Parses one JSON line into a record; the error says what is wrong
/// (unknown type, missing or mistyped field, not JSON).
pub fn parse_line(line: &str) -> Result<Record, String> {
    serde_json::from_str(line).map_err(|e| {
        let mut what = e.to_string();
        // The caller names the line; serde's position is within it.
        if let Some(at) = what.rfind(" at line ") {
            what.truncate(at);
            if e.column() > 0 {
                what += &format!(" (column {})", e.column());
            }
        }
        // serde's "unknown variant `x`, expected one of ..." lists every
        // type: name the one that is unknown and stop there.
        match what.strip_prefix("unknown variant ") {
            Some(rest) => format!(
                "unknown record type {}",
                rest.split(',').next().unwrap_or(rest)
            ),
            None => what,
        }
    })
}

/// Reads JSON-lines records, skipping blank lines; the first line that is
/// not a record (or cannot be read) ends the read with its line number.
pub fn read_records(input: impl BufRead) -> Result<Vec<Record>, ReadError> {
    let mut records = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line = line.map_err(|e| ReadError {
            line: index + 1,
            message: format!("cannot read: {e}"),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        records.push(parse_line(&line).map_err(|message| ReadError {
            line: index + 1,
            message,
        })?);
    }
    Ok(records)
}
