//! What the doctor's sources measured during one run. Everything is on the
//! CLOCK_REALTIME nanosecond time base, so a probe episode, a kernel stall and
//! a gap in CPU samples can be lined up.

use netstall_core::stall::{IcmpEcho, Stall, Steal, StealSource};
use netstall_probe::episodes::Episode;
use serde::Serialize;

/// Everything the diagnosis is made from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings {
    /// When the run started and ended.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Stalls the tracer reported (empty when it could not run: see `tracer`).
    pub stalls: Vec<Stall>,
    /// Whether the tracer ran, with which detectors; why not, otherwise.
    pub tracer: TracerState,
    /// Whether the CPU sampler ran.
    pub sampler: SamplerState,
    /// vCPU steal windows (the hypervisor ran something else).
    pub steal: Vec<Steal>,
    /// Where `steal` came from; `None` when steal could not be measured.
    pub steal_source: Option<StealSource>,
    /// netstall's own process: its threads are the observer, never a culprit.
    pub self_pid: u32,
    /// One entry per probed target.
    pub targets: Vec<TargetFindings>,
    /// Dying memory cgroups, counted at the start (never by reading memory.stat).
    pub memcg: Option<MemcgFindings>,
    /// Gaps in CPU samples: a CPU that should have been sampled and was not.
    pub gaps: Vec<SampleGap>,
    /// ICMP echo requests seen by the tracer (the story's seq/context table).
    pub icmp: Vec<IcmpEcho>,
}

/// Whether the kernel tracer ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum TracerState {
    /// Traced every CPU with these detectors; `missing` could not load here.
    Ran {
        detectors: Vec<String>,
        missing: Vec<String>,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum SamplerState {
    #[default]
    Ran,
    /// Not asked for (`--no-sample`).
    Off,
    /// Could not run; the reason says why.
    Unavailable { reason: String },
}

/// Probes toward one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetFindings {
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
}

/// The dying memory cgroup count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemcgFindings {
    pub kernel: String,
    pub live: u64,
    pub dying: u64,
    /// The worst IRQs-off time one memory.stat read can take at this count
    /// on this kernel era (about 2 µs per dying memcg with pending updates).
    pub worst_stall_ms: Option<f64>,
}

/// A CPU that went unsampled: software cpu-clock samples cannot land while
/// IRQs are off, so the gap is evidence, and the first sample after it
/// names where they came back on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleGap {
    pub cpu: u32,
    pub start_ns: u64,
    pub duration_ms: f64,
    /// The task of the first sample after the gap.
    pub comm: String,
    /// Its kernel stack, innermost first.
    pub resumed_in: Vec<String>,
}
