//! `netstall trace`: every RX stall on every CPU, how long, which packets
//! waited, who drained them and who held the CPU (task, syscall, file,
//! kernel stack); optionally every ICMP echo request with its processing
//! context, and slow syscalls.
//!
//! * `src/bpf/trace.bpf.c`: the detectors (tracepoints only), aggregating
//!   in per-CPU maps and sending only over-threshold events.
//! * [`event`]: typed events and their decoding (pure).
//! * [`assemble`]: events on one CPU that overlap in time become one
//!   [`Stall`] with its culprit (pure).
//! * [`format`]: one-line text (pure).
//! * [`run`]: load, attach, stream [`TraceEvent`]s until stopped, report.
//!
//! Library use (the doctor): build a [`TraceConfig`], call [`run`] with a
//! [`Stop`] (deadline and/or shutdown request) and a callback; every timestamp is
//! CLOCK_REALTIME ns.

pub mod assemble;
pub mod event;
pub mod format;
pub mod syscall_names;

mod load;
mod symbols;

use std::sync::Arc;
use std::time::{Duration, Instant};

use netstall_core::shutdown::Shutdown;
use netstall_core::stall::{Detector, IcmpEcho, SlowSyscall, Stall, Steal};
use serde::{Serialize, Serializer};

pub use load::run;

/// What to trace.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// Report stalls at least this long.
    pub threshold: Duration,
    /// A packet "waited" if its backlog wait was at least this long.
    pub packet_floor: Duration,
    /// Only these CPUs (all when `None`).
    pub cpus: Option<Vec<u32>>,
    /// Report every ICMP echo request processed.
    pub icmp: bool,
    /// Trace syscalls and report those at least this long; culprits' syscalls then
    /// also get their duration. Without it, a culprit's syscall and file are read
    /// from its registers at the stall, at no per-syscall cost.
    pub syscalls: Option<Duration>,
    /// Measure each BPF program's run count and time (kernel BPF stats).
    pub self_cost: bool,
    /// How long a stall stays open for more evidence before it is reported.
    pub settle: Duration,
    /// Also stream the running totals (ring-buffer drops, latency
    /// histograms) this often: a tracer that runs for days is read
    /// without being reloaded.
    pub totals_every: Option<Duration>,
    /// Report vCPU steal ([`TraceEvent::Steal`]). Off, steal still keeps
    /// hypervisor pauses from reading as irqs-off, but sends no events: an
    /// always-on agent that does not use them is not woken by them.
    pub steal: bool,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            threshold: Duration::from_millis(10),
            packet_floor: Duration::from_millis(1),
            cpus: None,
            icmp: false,
            syscalls: None,
            self_cost: false,
            settle: Duration::from_millis(500),
            totals_every: None,
            steal: false,
        }
    }
}

/// When to stop tracing: after a duration (counted from when the detectors
/// are attached) or when a shutdown is requested, whichever comes first.
/// With neither, it runs forever.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    pub duration: Option<Duration>,
    pub shutdown: Option<Arc<Shutdown>>,
}

impl Stop {
    /// Stop after tracing for `duration`.
    pub fn after(duration: Duration) -> Self {
        Self {
            duration: Some(duration),
            shutdown: None,
        }
    }

    fn should_stop(&self, started: Instant) -> bool {
        self.duration.is_some_and(|d| started.elapsed() >= d)
            || self.shutdown.as_ref().is_some_and(|s| s.is_requested())
    }

    /// How long until the duration is up (`Duration::MAX` without one).
    fn left(&self, started: Instant) -> Duration {
        self.duration
            .map_or(Duration::MAX, |d| d.saturating_sub(started.elapsed()))
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

    pub fn name(self) -> &'static str {
        match self {
            TraceDetector::Stall(d) => d.name(),
            TraceDetector::Steal => "steal",
            TraceDetector::Syscalls => "syscalls",
            TraceDetector::Icmp => "icmp",
        }
    }
}

impl std::fmt::Display for TraceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl Serialize for TraceDetector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// What the tracer streams.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceEvent {
    /// The detectors are attached: from now on, stalls are seen.
    Started(TraceStart),
    Stall(Stall),
    Icmp(IcmpEcho),
    Syscall(SlowSyscall),
    /// vCPU steal of at least the packet floor on one CPU (the hypervisor
    /// ran something else): always reported, rarely printed.
    Steal(Steal),
    /// The running totals, every [`TraceConfig::totals_every`].
    Totals(TraceTotals),
}

/// What the in-kernel aggregation counted since tracing began.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceTotals {
    /// Events lost because the ring buffer was full.
    pub ring_drops: u64,
    pub histograms: Vec<Histogram>,
    /// Time spent in NET_RX softirq runs on each CPU (index = CPU), ns.
    pub net_rx_ns: Vec<u64>,
    /// Time every attached BPF program ran, ns (with [`TraceConfig::self_cost`]).
    pub bpf_run_ns: Option<u64>,
}

/// Tracing has begun (every detector attached).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceStart {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts_ns: u64,
    pub detectors: Vec<TraceDetector>,
    /// Detectors that could not be loaded on this kernel, with the reason.
    pub unavailable: Vec<Unavailable>,
}

/// One BPF program's cost, from the kernel's BPF stats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramCost {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub program: String,
    pub detector: TraceDetector,
    pub run_count: u64,
    pub run_time_ns: u64,
    pub ns_per_event: Option<f64>,
}

/// Per-CPU log2 histogram: `buckets[cpu][i]` counts values in [2^i, 2^(i+1)) ns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub detector: Detector,
    pub cpu: u32,
    /// `[upper bound ns, count]` for each non-empty log2 bucket.
    pub buckets: Vec<(u64, u64)>,
}

/// What a finished trace saw, beyond the streamed events.
#[derive(Debug, Clone, Serialize)]
pub struct TraceReport {
    #[serde(rename = "type")]
    pub kind: &'static str,
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
    #[serde(skip)]
    pub histograms: Vec<Histogram>,
    #[serde(skip)]
    pub self_cost: Vec<ProgramCost>,
}

/// A detector this kernel could not load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unavailable {
    pub detector: TraceDetector,
    pub reason: String,
}
