//! What the kernel tracer reports (`netstall trace`, the doctor, the agent):
//! RX stalls on a CPU with their culprit, processed ICMP echo requests, slow
//! syscalls, vCPU steal, and the tracer's own start, cost and totals.
//!
//! All `*_ns` are CLOCK_REALTIME nanoseconds.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stack;

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
    /// Non-preemptible kernel sections: a task's kernel code ran on while
    /// others were runnable on its CPU, read at ticks.
    Nosched,
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
    pub const ALL: [TraceDetector; 9] = [
        TraceDetector::Stall(Detector::RxBacklog),
        TraceDetector::Stall(Detector::SoftirqDelay),
        TraceDetector::Stall(Detector::IrqsOff),
        TraceDetector::Stall(Detector::Ksoftirqd),
        TraceDetector::Stall(Detector::RstatHold),
        TraceDetector::Steal,
        TraceDetector::Syscalls,
        TraceDetector::Icmp,
        TraceDetector::Nosched,
    ];

    /// What this detector adds to a verdict: said when it could not load,
    /// so a partial verdict names the evidence it lacks.
    pub fn evidence(self) -> &'static str {
        match self {
            TraceDetector::Stall(Detector::RxBacklog) => {
                "how long packets waited in a CPU's backlog (the stall as the network saw it)"
            }
            TraceDetector::Stall(Detector::SoftirqDelay) => {
                "how long a raised NET_RX softirq waited to run"
            }
            TraceDetector::Stall(Detector::IrqsOff) => {
                "the IRQs-off window, the syscall in progress and its file, the stack at IRQ re-enable"
            }
            TraceDetector::Stall(Detector::Ksoftirqd) => {
                "when ksoftirqd took RX processing over from the interrupted task"
            }
            TraceDetector::Stall(Detector::RstatHold) => {
                "who held the cgroup rstat lock and how long, and the memcg stats flush behind it"
            }
            TraceDetector::Steal => "the hypervisor's steal at every tick (else /proc/stat every 5 ms)",
            TraceDetector::Syscalls => "each slow syscall with its duration and file",
            TraceDetector::Icmp => "when each ICMP echo request was processed",
            TraceDetector::Nosched => {
                "a task's kernel code that ran on while others waited for its CPU, with its syscall and stack"
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TraceDetector::Stall(d) => d.name(),
            TraceDetector::Steal => "steal",
            TraceDetector::Syscalls => "syscalls",
            TraceDetector::Icmp => "icmp",
            TraceDetector::Nosched => "nosched",
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
    pub end_ns: u64,
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
    pub end_ns: u64,
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

/// A non-preemptible kernel section: for `duration_ms` another task was
/// runnable on `cpu` while `culprit` ran on in kernel code (a syscall, or a
/// kernel thread) without a context switch, seen by `ticks` timer ticks
/// (IRQs were on: not an irqs-off stall). On PREEMPT_NONE and VOLUNTARY
/// kernels only cond_resched() gives the CPU up there (SysAK's "nosched").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nonpreemptible {
    pub cpu: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub duration_ms: f64,
    pub ticks: u64,
    /// The most tasks seen waiting for the CPU meanwhile.
    pub waiting: u32,
    /// The task, its syscall (and file) and its kernel stack at the tick
    /// that crossed the threshold.
    pub culprit: Culprit,
}

/// `NOSCHED cpu=1 52.0 ms: dd (pid 42) in write, 1 task waiting; write_zero <- ...`
impl fmt::Display for Nonpreemptible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.culprit;
        write!(
            f,
            "NOSCHED cpu={} {:.1} ms: {} (pid {}){}, {} task{} waiting",
            self.cpu,
            self.duration_ms,
            c.comm,
            c.pid,
            c.syscall
                .as_deref()
                .map(|s| format!(" in {s}"))
                .unwrap_or_default(),
            self.waiting,
            if self.waiting == 1 { "" } else { "s" }
        )?;
        if !c.kstack.is_empty() {
            write!(
                f,
                "; {}",
                c.kstack
                    .iter()
                    .take(6)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" <- ")
            )?;
        }
        Ok(())
    }
}

/// The ledger: what one stats reader cost the node in cgroup-stat flushes
/// over `[start_ns, end_ns]`, counted in the kernel from the rstat and memcg
/// tracepoints. `reader` is its comm, `other` for the readers beyond the
/// top ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatFlush {
    pub reader: String,
    /// The reader's cgroup (v2 id), when one cgroup holds all its flushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// Memory-cgroup stat flushes it ran (`memcg_flush_stats` that flushed).
    pub flushes: u64,
    /// Time it held a cgroup rstat lock, with IRQs off on its CPU, ms.
    pub locked_ms: f64,
    pub start_ns: u64,
    pub end_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
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

/// Frames shown in a stall's line (the JSON carries the whole stack).
pub const FRAMES_SHOWN: usize = 5;

/// `STALL cpu=1 irqs-off 117.2 ms, 12 packets waited, drained by ksoftirqd/1;
/// culprit kubelet[4242] read(/sys/…/memory.stat) 118 ms: css_rstat_flush ← …`
impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "STALL cpu={} {} {:.1} ms",
            self.cpu,
            self.detector.name(),
            self.duration_ms
        )?;
        let others: Vec<&str> = self
            .seen_by
            .iter()
            .filter(|d| **d != self.detector)
            .map(|d| d.name())
            .collect();
        if !others.is_empty() {
            write!(f, " (also {})", others.join(", "))?;
        }
        if let Some(n) = self.packets {
            let plural = if n == 1 { "" } else { "s" };
            write!(f, ", {n} packet{plural} waited")?;
            if let Some(w) = self.max_wait_ms {
                write!(f, " (max {w:.1} ms)")?;
            }
        }
        if let Some(by) = &self.drained_by {
            write!(f, ", drained by {by}")?;
        }
        if let Some(c) = &self.culprit {
            write!(f, "; culprit {c}")?;
        }
        Ok(())
    }
}

/// `kubelet[4242] read(/sys/…/memory.stat) 118 ms: css_rstat_flush ← …`:
/// who, in which syscall and on which file, and the frames that name it.
impl fmt::Display for Culprit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Kernel threads (`ksoftirqd/1`) and the idle task are named alone.
        if self.pid == 0 || self.comm.contains('/') {
            write!(f, "{}", self.comm)?;
        } else {
            write!(f, "{}[{}]", self.comm, self.pid)?;
        }
        if let Some(ctx) = &self.context {
            write!(f, " in {ctx}")?;
        }
        if let Some(sc) = &self.syscall {
            write!(f, " {sc}({})", self.path.as_deref().unwrap_or(""))?;
            if let Some(ms) = self.syscall_ms {
                write!(f, " {ms:.0} ms")?;
            }
        }
        if let Some(cg) = &self.cgroup {
            write!(f, " cgroup={cg}")?;
        }
        let frames = stack::meaningful_frames(&self.kstack, FRAMES_SHOWN);
        if !frames.is_empty() {
            write!(f, ": {}", stack::line(&frames))?;
        }
        Ok(())
    }
}

impl IcmpEcho {
    /// The header of the ICMP table (the story's bcc tool's columns).
    pub const HEADER: &'static str = "TGID    PID     COMM             ICMP_SEQ  ICMP_ID  CPU";
}

/// One row of the ICMP table; deferred processing is marked.
impl fmt::Display for IcmpEcho {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<7} {:<7} {:<16} {:<9} {:<8} {}{}",
            self.pid,
            self.tid,
            self.comm,
            self.seq,
            self.id,
            self.cpu,
            if self.ksoftirqd { "  <- ksoftirqd" } else { "" }
        )
    }
}

/// `SYSCALL cadvisor[42] read(/sys/…/memory.stat) 25.3 ms = 889 cpu=1`
impl fmt::Display for SlowSyscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SYSCALL {}[{}] {}({}) {:.1} ms = {} cpu={}",
            self.comm,
            self.pid,
            self.syscall,
            self.path.as_deref().unwrap_or(""),
            self.duration_ms,
            self.ret,
            self.cpu
        )
    }
}

/// `STEAL cpu=0 25.3 ms stolen by the hypervisor in 26.1 ms`
impl fmt::Display for Steal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "STEAL cpu={} {:.1} ms stolen by the hypervisor in {:.1} ms",
            self.cpu,
            self.steal_ms,
            self.end_ns.saturating_sub(self.start_ns) as f64 / 1e6
        )
    }
}

/// `cadvisor spent 1.9 s of IRQs-off time flushing stats (300 flushes) in the last 5 min`
impl fmt::Display for StatFlush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let window_s = self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9;
        let window = if window_s >= 90.0 {
            format!("{:.0} min", window_s / 60.0)
        } else {
            format!("{window_s:.0} s")
        };
        let spent = if self.locked_ms >= 1000.0 {
            format!("{:.1} s", self.locked_ms / 1e3)
        } else {
            format!("{:.1} ms", self.locked_ms)
        };
        write!(
            f,
            "{} spent {spent} of IRQs-off time flushing stats ({} flush{}) in the last {window}",
            self.reader,
            self.flushes,
            if self.flushes == 1 { "" } else { "es" }
        )
    }
}

/// `COST rx_backlog_enqueue rx-backlog runs=1200 85.3 ns/event`
impl fmt::Display for ProgramCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "COST {:<32} {:<14} runs={:<10} {}",
            self.program,
            self.detector,
            self.run_count,
            self.ns_per_event
                .map(|ns| format!("{ns:.1} ns/event"))
                .unwrap_or_else(|| "-".into())
        )
    }
}

/// `HIST irqs-off cpu=1 <8us:120 <16ms:3`: each non-empty bucket by its bound.
impl fmt::Display for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buckets: Vec<String> = self
            .buckets
            .iter()
            .map(|(le_ns, n)| format!("<{}:{n}", short_ns(*le_ns)))
            .collect();
        write!(
            f,
            "HIST {} cpu={} {}",
            self.detector.name(),
            self.cpu,
            buckets.join(" ")
        )
    }
}

/// `512ns`, `8us`, `16ms`: a log2 bucket bound, short.
fn short_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}us", ns / 1_000),
        1_000_000..1_000_000_000 => format!("{}ms", ns / 1_000_000),
        _ => format!("{}s", ns / 1_000_000_000),
    }
}

/// The trace's last line: what it saw, and what it lost.
impl fmt::Display for TraceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} stalls in {:.1} s; {} packets measured ({} without an enqueue stamp), {} waited >= 1 ms; {} ksoftirqd takeovers; {} events lost (ring buffer full)",
            self.stalls,
            self.duration_ms as f64 / 1e3,
            self.packets,
            self.unmatched_packets,
            self.packets_waited,
            self.ksoftirqd_takeovers,
            self.ring_drops
        )
    }
}

/// A detector this kernel could not load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unavailable {
    pub detector: TraceDetector,
    pub reason: String,
}

/// `rstat-hold: tp_btf/cgroup_rstat_locked does not load: …; it would have
/// shown who held the cgroup rstat lock …`
impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}; it would have shown {}",
            self.detector,
            self.reason,
            self.detector.evidence()
        )
    }
}

/// One kernel of the kernel matrix (`scripts/kernel-matrix.sh`, which boots
/// Debian kernels under qemu): the detectors the tracer loaded there, those
/// it could not with why, whether an injected `lab spin` stall was found on
/// its CPU, the doctor's top cause for the incident (none: not named) on the
/// hybrid layout (memory on cgroup v1) and in a second boot with memory on
/// cgroup v2 only (none also when that boot did not run: the short form),
/// and whether the agent served `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelRun {
    /// `uname -r` inside the VM.
    pub kernel: String,
    pub detectors_loaded: Vec<TraceDetector>,
    pub detectors_missing: Vec<MissingDetector>,
    pub spin_found: bool,
    pub incident_cause: Option<String>,
    #[serde(default)]
    pub incident_cause_v2: Option<String>,
    pub agent_metrics: bool,
}

/// A detector a kernel of the matrix would not load, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissingDetector {
    pub detector: TraceDetector,
    pub why: String,
}

/// `KERNEL 6.1.0-57-cloud-amd64: 4 detectors (missing rstat-hold); spin found;
/// incident: dying-memcg-stat-flush (cgroup v2: dying-memcg-stat-flush); /metrics served`
impl fmt::Display for KernelRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let missing: Vec<&str> = self
            .detectors_missing
            .iter()
            .map(|m| m.detector.name())
            .collect();
        write!(
            f,
            "KERNEL {}: {} detectors{}; spin {}; incident: {} (cgroup v2: {}); /metrics {}",
            self.kernel,
            self.detectors_loaded.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(" (missing {})", missing.join(", "))
            },
            if self.spin_found {
                "found"
            } else {
                "NOT found"
            },
            self.incident_cause.as_deref().unwrap_or("not named"),
            self.incident_cause_v2.as_deref().unwrap_or("not named"),
            if self.agent_metrics {
                "served"
            } else {
                "NOT served"
            }
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stall() -> Stall {
        Stall {
            detector: Detector::IrqsOff,
            cpu: 1,
            start_ns: 1,
            end_ns: 117_240_001,
            duration_ms: 117.24,
            seen_by: vec![Detector::IrqsOff, Detector::RstatHold, Detector::RxBacklog],
            packets: Some(12),
            max_wait_ms: Some(116.0),
            drained_by: Some("ksoftirqd/1".into()),
            culprit: Some(Culprit {
                comm: "kubelet".into(),
                pid: 4242,
                tid: 4242,
                syscall: Some("read".into()),
                path: Some("/sys/fs/cgroup/memory/memory.stat".into()),
                syscall_ms: Some(118.2),
                cgroup: None,
                context: None,
                kstack: [
                    "_raw_spin_unlock_irq",
                    "css_rstat_flush",
                    "memcg1_stat_format",
                    "memory_stat_show",
                    "seq_read_iter",
                    "vfs_read",
                    "ksys_read",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            }),
            node: None,
        }
    }

    #[test]
    fn stall_line_reads_like_the_story() {
        assert_eq!(
            stall().to_string(),
            "STALL cpu=1 irqs-off 117.2 ms (also rstat-hold, rx-backlog), 12 packets waited \
             (max 116.0 ms), drained by ksoftirqd/1; culprit kubelet[4242] \
             read(/sys/fs/cgroup/memory/memory.stat) 118 ms: css_rstat_flush ← \
             memcg1_stat_format ← memory_stat_show ← seq_read_iter ← vfs_read"
        );
    }

    #[test]
    fn stall_without_packets_or_culprit_is_short() {
        let mut s = stall();
        s.seen_by = vec![Detector::IrqsOff];
        s.packets = None;
        s.drained_by = None;
        s.culprit = None;
        assert_eq!(s.to_string(), "STALL cpu=1 irqs-off 117.2 ms");
    }

    #[test]
    fn icmp_rows_mark_ksoftirqd() {
        let mut e = IcmpEcho {
            seq: 770,
            id: 9,
            cpu: 11,
            comm: "ksoftirqd/11".into(),
            pid: 64,
            tid: 64,
            ksoftirqd: true,
            ts_ns: 0,
        };
        assert!(e.to_string().ends_with("11  <- ksoftirqd"));
        assert!(e
            .to_string()
            .starts_with("64      64      ksoftirqd/11     770"));
        e.ksoftirqd = false;
        assert!(e.to_string().ends_with(" 11"));
    }

    #[test]
    fn histogram_buckets_are_named_by_their_short_bound() {
        let hist = Histogram {
            detector: Detector::IrqsOff,
            cpu: 1,
            buckets: vec![(512, 4), (8_192, 120), (16_777_216, 3), (2_147_483_648, 1)],
        };
        assert_eq!(
            hist.to_string(),
            "HIST irqs-off cpu=1 <512ns:4 <8us:120 <16ms:3 <2s:1"
        );
    }
}
