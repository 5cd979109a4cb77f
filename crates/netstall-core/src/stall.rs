//! What `netstall trace` reports, and what `doctor` correlates: RX stalls on a
//! CPU with their culprit, processed ICMP echo requests, slow syscalls.
//!
//! All `*_ns` are CLOCK_REALTIME nanoseconds (see [`crate::clock`]); the JSON
//! shape is the interface contract in design.md.

use serde::Serialize;

/// The kernel mechanism a stall was detected by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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

/// Who held the CPU during a stall.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Culprit {
    pub comm: String,
    pub pid: u32,
    pub tid: u32,
    /// The syscall the task was in, e.g. `read`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// The file of an fd-based syscall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How long that syscall took, when it ended while tracing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall_ms: Option<f64>,
    /// The task's cgroup (the memory controller's, else the unified one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Set when the CPU was inside a softirq, e.g. `softirq TIMER`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Symbolized kernel stack, innermost frame first.
    pub kstack: Vec<String>,
}

/// One RX stall on one CPU, assembled from every detector that saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stall {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The detector whose measurement gives `start_ns` and `duration_ms`.
    pub detector: Detector,
    pub cpu: u32,
    pub start_ns: u64,
    pub duration_ms: f64,
    /// Every detector that saw this stall.
    pub seen_by: Vec<Detector>,
    /// Packets that waited in the backlog (at least the packet floor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// The longest backlog wait of those packets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<f64>,
    /// The task whose context processed the backlog afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drained_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit: Option<Culprit>,
}

/// An ICMP echo request, at the point the kernel processed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IcmpEcho {
    #[serde(rename = "type")]
    pub kind: &'static str,
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowSyscall {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub comm: String,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub syscall: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub start_ns: u64,
    pub duration_ms: f64,
    pub ret: i64,
}

/// Where a [`Steal`] measurement comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Steal {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub cpu: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub steal_ms: f64,
    pub source: StealSource,
}
