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
//! * [`recording`]: a run's raw records, written and replayed offline.
//! * [`ledger`]: the stats readers' ledger summed per reader (pure).
//! * [`run`]: load, attach, stream [`TraceEvent`]s until stopped, report;
//!   [`run_printed`]: the same, each event printed as `netstall trace` shows it.
//!
//! Library use (the doctor): build a [`TraceConfig`], call [`run`] with a
//! [`Stop`] (deadline and/or shutdown request) and a callback; every timestamp is
//! CLOCK_REALTIME ns.

pub mod assemble;
pub mod event;
pub mod ledger;
pub mod recording;
pub mod syscall_names;

mod load;
mod printed;
pub(crate) mod symbols;

use std::sync::Arc;
use std::time::{Duration, Instant};

use netstall_core::shutdown::Shutdown;
pub use netstall_events::kernel::TraceDetector;
use netstall_events::kernel::{IcmpEcho, Nonpreemptible, SlowSyscall, Stall, Steal};

pub use load::run;
pub use printed::run_printed;

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
    /// histograms, the stats readers' ledger) this often, and once when
    /// stopped: a tracer that runs for days is read without being reloaded.
    pub totals_every: Option<Duration>,
    /// Report vCPU steal ([`TraceEvent::Steal`]). Off, steal still keeps
    /// hypervisor pauses from reading as irqs-off, but sends no events: an
    /// always-on agent that does not use them is not woken by them.
    pub steal: bool,
    /// Also write every raw ring-buffer record, with what decoding it
    /// needs, to this file ([`recording`]).
    pub record: Option<std::path::PathBuf>,
    /// Also count packet drops and TCP retransmits ([`crate::drops`]), in
    /// [`run_printed`]: a program of its own, reported per second.
    pub drops: bool,
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
            record: None,
            drops: false,
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

    pub(crate) fn should_stop(&self, started: Instant) -> bool {
        self.duration.is_some_and(|d| started.elapsed() >= d)
            || self.shutdown.as_ref().is_some_and(|s| s.is_requested())
    }

    /// How long until the duration is up (`Duration::MAX` without one).
    pub(crate) fn left(&self, started: Instant) -> Duration {
        self.duration
            .map_or(Duration::MAX, |d| d.saturating_sub(started.elapsed()))
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
    /// A non-preemptible kernel section (others waited for the CPU).
    Nonpreemptible(Nonpreemptible),
    /// The running totals, every [`TraceConfig::totals_every`].
    Totals(TraceTotals),
}

impl From<recording::Replayed> for TraceEvent {
    fn from(replayed: recording::Replayed) -> Self {
        match replayed {
            recording::Replayed::Stall(s) => TraceEvent::Stall(s),
            recording::Replayed::Icmp(i) => TraceEvent::Icmp(i),
            recording::Replayed::Syscall(s) => TraceEvent::Syscall(s),
            recording::Replayed::Steal(s) => TraceEvent::Steal(s),
            recording::Replayed::Nonpreemptible(n) => TraceEvent::Nonpreemptible(n),
        }
    }
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
    /// The stats readers' ledger since tracing began (empty when the
    /// rstat-hold detector is not loaded).
    pub flush_ledger: Vec<FlushLedger>,
}

/// One stats reader's running totals in the kernel's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushLedger {
    pub comm: String,
    /// Its cgroup (v2 id).
    pub cgroup_id: u64,
    /// Memory-cgroup stat flushes it ran.
    pub flushes: u64,
    /// Time it held a cgroup rstat lock (IRQs off), ns.
    pub locked_ns: u64,
}

pub use netstall_events::kernel::{Histogram, ProgramCost, TraceReport, TraceStart, Unavailable};
