//! What CPU sampling reports (`netstall xray`, the doctor): the samples,
//! the gaps in them, the windows before a trigger, and the folded stacks
//! of `netstall collapse`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stack;

/// One symbolized sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// CLOCK_REALTIME.
    pub time_ns: u64,
    pub cpu: u32,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// Frames, innermost first ([`crate::stack`]'s order): the kernel
    /// frames down from the leaf, then the user frames under them.
    pub stack: Vec<String>,
    /// How many kernel frames the call chain had (0: sampled in user mode).
    /// They come first in `stack`, less netstall's own BPF frames (removed),
    /// so `stack` may hold fewer.
    pub kernel_depth: usize,
}

impl Sample {
    /// `comm;root;...;leaf`, the folded form (root first: the stack reversed).
    pub fn folded(&self) -> String {
        let mut line = self.comm.replace(' ', "_");
        if !self.stack.is_empty() {
            line.push(';');
            line.push_str(&stack::folded(&self.stack));
        }
        line
    }

    /// Whether a frame named `name` is on the stack.
    pub fn has_frame(&self, name: &str) -> bool {
        self.stack.iter().any(|f| f == name)
    }

    /// Running in softirq processing (the kernel's softirq loop is on the stack).
    pub fn in_softirq(&self) -> bool {
        stack::in_softirq(&self.stack)
    }

    /// In the kernel, but the kernel stack did not unwind past a frame or
    /// two (seen in samples that land inside BPF programs), so whether it
    /// is in a softirq cannot be told.
    pub fn kernel_stack_truncated(&self) -> bool {
        (1..=2).contains(&self.kernel_depth)
    }

    pub fn is_ksoftirqd(&self) -> bool {
        self.comm.starts_with("ksoftirqd/")
    }
}

/// Why a CPU went without samples that show it processing network RX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GapKind {
    /// No samples at all: IRQs were off (or, on a VM, the vCPU did not run).
    IrqsOff,
    /// Samples inside softirq processing the whole time: BHs were off.
    Softirq,
}

/// A gap in one CPU's samples: software cpu-clock samples cannot land while
/// IRQs are off, so the gap is evidence, and the sample that ends it names
/// where IRQs came back on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleGap {
    pub kind: GapKind,
    pub cpu: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub duration_ms: f64,
    /// The task of the sample after the gap (irqs-off) or of the first
    /// sample of the softirq run.
    pub comm: String,
    pub tid: u32,
    /// That sample's stack, innermost frame first.
    pub resumed_in: Vec<String>,
}

impl fmt::Display for SampleGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            GapKind::IrqsOff => "no samples (IRQs off); back on in",
            GapKind::Softirq => "in softirq (BHs off), first in",
        };
        write!(
            f,
            "sample-gap  CPU {}  {:>7.1} ms  {what} {} {}: {}",
            self.cpu,
            self.duration_ms,
            self.comm,
            self.tid,
            self.resumed_in.join(stack::ARROW)
        )
    }
}

/// What a window of samples leads up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Each sample gap.
    Stall,
    /// Each run of ksoftirqd samples.
    Ksoftirqd,
}

/// The samples of one CPU leading up to a trigger (the story's
/// `grep ksoftirqd -B 100`), oldest first, the trigger's sample last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleWindow {
    pub trigger: Trigger,
    pub cpu: u32,
    pub at_ns: u64,
    pub samples: Vec<Sample>,
}

impl fmt::Display for SampleWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--- {} samples before the {} on CPU {}",
            self.samples.len(),
            match self.trigger {
                Trigger::Stall => "stall",
                Trigger::Ksoftirqd => "ksoftirqd run",
            },
            self.cpu
        )?;
        for s in &self.samples {
            let offset_ms = (s.time_ns as f64 - self.at_ns as f64) / 1e6;
            write!(
                f,
                "\n{offset_ms:>+9.1} ms  {} {}  {}",
                s.comm,
                s.tid,
                s.folded()
            )?;
        }
        Ok(())
    }
}

/// A short CPU-sampling window the agent opened on one CPU after a stall
/// there, to catch the next one in the act (cpu-clock samples with their
/// stacks): the gaps it saw (IRQs off, long softirq runs) and the stacks
/// it sampled most, with what the window cost the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuSampling {
    pub cpu: u32,
    /// The end of the stall that opened the window.
    pub trigger_ns: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub frequency_hz: u64,
    pub samples: usize,
    /// Samples the kernel dropped because its ring buffer was full.
    pub lost: u64,
    /// The longest gaps in the window, longest first.
    pub gaps: Vec<SampleGap>,
    /// The stacks sampled most (`comm;root;...;leaf`), most first.
    pub stacks: Vec<FoldedStack>,
    /// CPU time the agent spent on the window (sampling and naming frames), ms.
    pub cost_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl fmt::Display for CpuSampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu-sampling  CPU {}  {:.1} s at {} Hz after a stall: {} samples, {} gap(s), cost {:.1} ms CPU",
            self.cpu,
            self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9,
            self.frequency_hz,
            self.samples,
            self.gaps.len(),
            self.cost_ms
        )?;
        for gap in &self.gaps {
            write!(f, "\n  {gap}")?;
        }
        for stack in &self.stacks {
            write!(f, "\n  {stack}")?;
        }
        Ok(())
    }
}

/// The end of an `xray` recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XraySummary {
    pub cpus: Vec<u32>,
    pub frequency_hz: u64,
    pub duration_ms: u64,
    pub samples: usize,
    /// Samples the kernel dropped because a ring buffer was full.
    pub lost: u64,
    pub gaps: usize,
    pub ksoftirqd_runs: usize,
}

impl fmt::Display for XraySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "xray: {} samples ({} lost), {} sample gap(s), {} ksoftirqd run(s)",
            self.samples, self.lost, self.gaps, self.ksoftirqd_runs
        )
    }
}

/// One folded stack of `netstall collapse --json` (`a;b;c` and its count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldedStack {
    pub stack: String,
    pub count: u64,
}

impl fmt::Display for FoldedStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.stack, self.count)
    }
}

/// What `netstall collapse` read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollapseSummary {
    pub samples: u64,
    pub kept_event: Option<String>,
    pub filtered_samples: u64,
    pub unrecognized_lines: u64,
    pub first_unrecognized_line: Option<u64>,
    pub unterminated_last_sample: bool,
}
