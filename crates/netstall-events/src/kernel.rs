//! What the kernel tracer reports (`netstall trace`, the doctor, the agent):
//! RX stalls on a CPU with their culprit, processed ICMP echo requests, slow
//! syscalls, vCPU steal, and the tracer's own start, cost and totals.
//!
//! All `*_ns` are CLOCK_REALTIME nanoseconds.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kernel mechanism a stall was detected by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Detector {
    /// No local timer interrupt on a busy CPU: IRQs were off.
    IrqsOff,
    /// A cgroup rstat flush held its lock (IRQs off) this long.
    RstatHold,
    /// NET_RX could not run (raised inside a long softirq or BH-off section).
    SoftirqDelay,
    /// ksoftirqd/N took over NET_RX after it had been pending this long.
    Ksoftirqd,
    /// Packets waited in the per-CPU backlog this long.
    RxBacklog,
}

impl Detector {
    /// The name used in JSON and text output.
    pub fn name(self) -> &'static str {
        match self {
            Detector::IrqsOff => "irqs-off",
            Detector::RstatHold => "rstat-hold",
            Detector::SoftirqDelay => "softirq-delay",
            Detector::Ksoftirqd => "ksoftirqd",
            Detector::RxBacklog => "rx-backlog",
        }
    }
}

/// What the tracer can load, each a set of BPF programs: a stall detector,
/// or one of the other event sources. Named in JSON and text as
/// [`TraceDetector::name`] (`irqs-off`, `steal`, `icmp`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TraceDetector {
    Stall(Detector),
    /// vCPU steal, read at ticks and idle exits.
    Steal,
    /// Slow syscalls (`--syscalls`).
    Syscalls,
    /// ICMP echo requests processed (`--icmp-seq`).
    Icmp,
}

impl TraceDetector {
    /// Every stall detector, in the order they are loaded.
    pub const STALLS: [TraceDetector; 5] = [
        TraceDetector::Stall(Detector::RxBacklog),
        TraceDetector::Stall(Detector::SoftirqDelay),
        TraceDetector::Stall(Detector::IrqsOff),
        TraceDetector::Stall(Detector::Ksoftirqd),
        TraceDetector::Stall(Detector::RstatHold),
    ];

    /// Every detector, stall detectors first.
    pub const ALL: [TraceDetector; 8] = [
        TraceDetector::Stall(Detector::RxBacklog),
        TraceDetector::Stall(Detector::SoftirqDelay),
        TraceDetector::Stall(Detector::IrqsOff),
        TraceDetector::Stall(Detector::Ksoftirqd),
        TraceDetector::Stall(Detector::RstatHold),
        TraceDetector::Steal,
        TraceDetector::Syscalls,
        TraceDetector::Icmp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TraceDetector::Stall(d) => d.name(),
            TraceDetector::Steal => "steal",
            TraceDetector::Syscalls => "syscalls",
            TraceDetector::Icmp => "icmp",
        }
    }
}

impl fmt::Display for TraceDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for TraceDetector {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        TraceDetector::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| format!("unknown detector `{name}`"))
    }
}

impl Serialize for TraceDetector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TraceDetector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Who held the CPU during a stall.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Culprit {
    pub comm: String,
    pub pid: u32,
    pub tid: u32,
    /// The syscall the task was in, e.g. `read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// The file of an fd-based syscall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How long that syscall took, when it ended while tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall_ms: Option<f64>,
    /// The task's cgroup (the memory controller's, else the unified one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Set when the CPU was inside a softirq, e.g. `softirq TIMER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Symbolized kernel stack, innermost frame first.
    #[serde(default)]
    pub kstack: Vec<String>,
}

/// One RX stall on one CPU, assembled from every detector that saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    /// The detector whose measurement gives `start_ns` and `duration_ms`.
    pub detector: Detector,
    pub cpu: u32,
    pub start_ns: u64,
    pub duration_ms: f64,
    /// Every detector that saw this stall.
    pub seen_by: Vec<Detector>,
    /// Packets that waited in the backlog (at least the packet floor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// The longest backlog wait of those packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<f64>,
    /// The task whose context processed the backlog afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub culprit: Option<Culprit>,
    /// The node it happened on (the agent's event log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// An ICMP echo request, at the point the kernel processed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpEcho {
    pub seq: u16,
    pub id: u16,
    pub cpu: u32,
    pub comm: String,
    pub pid: u32,
    pub tid: u32,
    /// Processed by ksoftirqd (deferred) rather than at IRQ exit.
    pub ksoftirqd: bool,
    pub ts_ns: u64,
}

/// A syscall over the threshold (or a stall culprit's syscall).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowSyscall {
    pub comm: String,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub syscall: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub start_ns: u64,
    pub duration_ms: f64,
    pub ret: i64,
}

/// Where a [`Steal`] measurement comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StealSource {
    /// The runqueue's steal clock, read by the tracer at each tick (ns).
    StealClock,
    /// The `steal` column of `/proc/stat`, sampled (1 / USER_HZ steps).
    ProcStat,
}

/// vCPU steal: for `steal_ms` of the window `[start_ns, end_ns]`, the
/// hypervisor ran something else instead of this virtual CPU. No tracer
/// inside the VM sees anything then: packets just wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Steal {
    pub cpu: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub steal_ms: f64,
    pub source: StealSource,
}

/// Tracing has begun (every detector attached).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStart {
    pub ts_ns: u64,
    pub detectors: Vec<TraceDetector>,
    /// Detectors that could not be loaded on this kernel, with the reason.
    pub unavailable: Vec<Unavailable>,
}

/// One BPF program's cost, from the kernel's BPF stats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramCost {
    pub program: String,
    pub detector: TraceDetector,
    pub run_count: u64,
    pub run_time_ns: u64,
    pub ns_per_event: Option<f64>,
}

/// Per-CPU log2 histogram: `buckets[cpu][i]` counts values in [2^i, 2^(i+1)) ns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub detector: Detector,
    pub cpu: u32,
    /// `[upper bound ns, count]` for each non-empty log2 bucket.
    pub buckets: Vec<(u64, u64)>,
}

/// What a finished trace saw, beyond the streamed events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceReport {
    pub duration_ms: u64,
    pub stalls: u64,
    /// Events lost because the ring buffer was full (never silently).
    pub ring_drops: u64,
    /// Packets whose backlog wait was measured, and those that waited.
    pub packets: u64,
    pub packets_waited: u64,
    pub ksoftirqd_takeovers: u64,
    /// Packets received without an enqueue stamp to measure from (their
    /// slot was reused, or they entered the stack before tracing began).
    pub unmatched_packets: u64,
    /// Detectors that could not be loaded on this kernel, with the reason.
    pub unavailable: Vec<Unavailable>,
    /// Per-CPU latency histograms (their own `histogram` records).
    #[serde(skip)]
    pub histograms: Vec<Histogram>,
    /// Each program's cost (their own `self-cost` records).
    #[serde(skip)]
    pub self_cost: Vec<ProgramCost>,
}

/// A detector this kernel could not load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unavailable {
    pub detector: TraceDetector,
    pub reason: String,
}

/// One stall injected by `lab spin` (the `"spin"` record), in the REALTIME
/// time base: what the detectors are tested against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InjectedStall {
    pub cpu: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub duration_ms: f64,
    /// The softirq vector the wait ran in (never NET_RX).
    pub vec: u32,
}

impl std::fmt::Display for InjectedStall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stalled CPU {} for {:.1} ms (softirq vector {})",
            self.cpu, self.duration_ms, self.vec
        )
    }
}
