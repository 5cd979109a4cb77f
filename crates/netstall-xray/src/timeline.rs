//! What sampled CPUs ran, in time order, and what the order tells:
//!
//! * **sample gaps**: a CPU sampled by a software cpu-clock timer cannot be
//!   sampled while its IRQs are off, so a gap much longer than the sampling
//!   period is IRQs-off time; the first sample after it shows where IRQs
//!   came back on (often a `*_unlock_irq*`). On a VM a gap can also be
//!   time the hypervisor did not run the vCPU (steal), which the samples
//!   alone cannot tell apart.
//! * **softirq runs**: consecutive samples inside softirq processing for a
//!   long time: bottom halves held for that long (IRQs on, BHs off), so the
//!   CPU's network RX waited.
//! * **windows**: the samples just before each stall or each ksoftirqd run,
//!   the "grep ksoftirqd -B 100" of the story.
//!
//! Everything here is pure, so it is tested on recorded samples.

pub use netstall_events::xray::{GapKind, Sample, SampleGap, SampleWindow, Trigger};

/// A gap in the samples of one CPU, with the samples that bound it (the
/// record users see is its [`SampleGap`], from [`sample_gap`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    pub kind: GapKind,
    pub cpu: u32,
    /// The last sample before the gap (irqs-off) or the first sample of the
    /// softirq run, as an index into the samples.
    pub first: usize,
    /// The first sample after the gap or the last one of the run.
    pub last: usize,
    pub start_ns: u64,
    pub end_ns: u64,
    pub duration_ms: f64,
}

impl Gap {
    /// The sample that tells the most about the gap: the first one after
    /// an IRQs-off gap (where IRQs came back on), or the first of a softirq run.
    pub fn telling_sample(&self) -> usize {
        match self.kind {
            GapKind::IrqsOff => self.last,
            GapKind::Softirq => self.first,
        }
    }
}

/// How to find stalls.
#[derive(Debug, Clone, Copy)]
pub struct StallRules {
    /// A gap between two samples of one CPU longer than this is IRQs-off time.
    pub min_gap_ns: u64,
    /// Consecutive softirq samples spanning at least this long are a stall.
    pub min_softirq_ns: u64,
}

impl StallRules {
    /// Defaults for sampling at `frequency` Hz: a gap is at least 10 ms and
    /// at least 5 sampling periods, so timer jitter is never a gap.
    pub fn for_frequency(frequency: u64) -> Self {
        let period = 1_000_000_000 / frequency.max(1);
        let floor = (5 * period).max(10_000_000);
        Self {
            min_gap_ns: floor,
            min_softirq_ns: floor,
        }
    }
}

/// Gaps in `samples` (time-ordered, any CPUs), ordered by start time.
pub fn gaps(samples: &[Sample], rules: StallRules) -> Vec<Gap> {
    let mut found = Vec::new();
    for cpu in cpus(samples) {
        let on_cpu: Vec<usize> = (0..samples.len())
            .filter(|&i| samples[i].cpu == cpu)
            .collect();
        for pair in on_cpu.windows(2) {
            let (a, b) = (&samples[pair[0]], &samples[pair[1]]);
            if b.time_ns.saturating_sub(a.time_ns) > rules.min_gap_ns {
                found.push(gap(GapKind::IrqsOff, cpu, samples, pair[0], pair[1]));
            }
        }
        // A run starts and ends at softirq samples; samples whose kernel
        // stack is truncated neither break it nor start one.
        let mut run: Option<(usize, usize)> = None;
        for &i in &on_cpu {
            let sample = &samples[i];
            if sample.in_softirq() {
                run = Some(run.map_or((i, i), |(first, _)| (first, i)));
            } else if !sample.kernel_stack_truncated() {
                if let Some((first, last)) = run.take() {
                    push_softirq_run(&mut found, cpu, samples, first, last, rules);
                }
            }
        }
        if let Some((first, last)) = run {
            push_softirq_run(&mut found, cpu, samples, first, last, rules);
        }
    }
    found.sort_by_key(|s| (s.start_ns, s.cpu));
    found
}

fn push_softirq_run(
    found: &mut Vec<Gap>,
    cpu: u32,
    samples: &[Sample],
    first: usize,
    last: usize,
    rules: StallRules,
) {
    if samples[last].time_ns - samples[first].time_ns >= rules.min_softirq_ns {
        found.push(gap(GapKind::Softirq, cpu, samples, first, last));
    }
}

fn gap(kind: GapKind, cpu: u32, samples: &[Sample], first: usize, last: usize) -> Gap {
    let (start_ns, end_ns) = (samples[first].time_ns, samples[last].time_ns);
    Gap {
        kind,
        cpu,
        first,
        last,
        start_ns,
        end_ns,
        duration_ms: (end_ns - start_ns) as f64 / 1e6,
    }
}

/// The record of `gap`: the sample that names it is the one after an
/// irqs-off gap (where IRQs came back on) or the first of a softirq run.
pub fn sample_gap(samples: &[Sample], gap: &Gap) -> SampleGap {
    let named = &samples[gap.telling_sample()];
    SampleGap {
        kind: gap.kind,
        cpu: gap.cpu,
        start_ns: gap.start_ns,
        end_ns: gap.end_ns,
        duration_ms: gap.duration_ms,
        comm: named.comm.clone(),
        tid: named.tid,
        // Both innermost first: no reordering.
        resumed_in: named.stack.clone(),
    }
}

/// The distinct CPUs in `samples`, ascending.
pub fn cpus(samples: &[Sample]) -> Vec<u32> {
    let mut cpus: Vec<u32> = samples.iter().map(|s| s.cpu).collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// The first sample of each run of ksoftirqd samples on a CPU.
pub fn ksoftirqd_runs(samples: &[Sample]) -> Vec<usize> {
    let mut starts = Vec::new();
    for cpu in cpus(samples) {
        let mut previous_was_ksoftirqd = false;
        for (i, sample) in samples.iter().enumerate().filter(|(_, s)| s.cpu == cpu) {
            if sample.is_ksoftirqd() && !previous_was_ksoftirqd {
                starts.push(i);
            }
            previous_was_ksoftirqd = sample.is_ksoftirqd();
        }
    }
    starts.sort_unstable();
    starts
}

/// Up to `count` samples of `at`'s CPU before sample `at` (oldest first),
/// then `at` itself: indexes into `samples`.
pub fn window_before(samples: &[Sample], at: usize, count: usize) -> Vec<usize> {
    let cpu = samples[at].cpu;
    let mut window: Vec<usize> = samples[..at]
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, s)| s.cpu == cpu)
        .take(count)
        .map(|(i, _)| i)
        .collect();
    window.reverse();
    window.push(at);
    window
}

/// The samples of one CPU leading up to a trigger, as indexes into the samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub trigger: Trigger,
    pub cpu: u32,
    /// When the trigger happened: the stall's start or ksoftirqd's first sample.
    pub at_ns: u64,
    /// Oldest first. For an IRQs-off stall the last one is the sample that
    /// ended the gap (where IRQs came back on).
    pub samples: Vec<usize>,
}

impl Window {
    /// The `window` record: the window with its samples themselves.
    pub fn record(&self, samples: &[Sample]) -> SampleWindow {
        SampleWindow {
            trigger: self.trigger,
            cpu: self.cpu,
            at_ns: self.at_ns,
            samples: self.samples.iter().map(|&i| samples[i].clone()).collect(),
        }
    }
}

/// The `count` samples before each trigger on its CPU.
pub fn windows(samples: &[Sample], gaps: &[Gap], trigger: Trigger, count: usize) -> Vec<Window> {
    match trigger {
        Trigger::Stall => gaps
            .iter()
            .map(|stall| {
                let mut window = window_before(samples, stall.first, count);
                if stall.kind == GapKind::IrqsOff {
                    window.push(stall.last);
                }
                Window {
                    trigger,
                    cpu: stall.cpu,
                    at_ns: stall.start_ns,
                    samples: window,
                }
            })
            .collect(),
        Trigger::Ksoftirqd => ksoftirqd_runs(samples)
            .into_iter()
            .map(|at| Window {
                trigger,
                cpu: samples[at].cpu,
                at_ns: samples[at].time_ns,
                samples: window_before(samples, at, count),
            })
            .collect(),
    }
}

/// Up to `count` samples of `cpu` taken before `at_ns` (oldest first): the
/// window before an event found by another source, such as a stall from
/// the kernel tracer. Empty when the CPU has no sample before `at_ns`.
pub fn window_before_time(samples: &[Sample], cpu: u32, at_ns: u64, count: usize) -> Vec<usize> {
    let end = samples.partition_point(|s| s.time_ns < at_ns);
    let mut window: Vec<usize> = (0..end)
        .rev()
        .filter(|&i| samples[i].cpu == cpu)
        .take(count)
        .collect();
    window.reverse();
    window
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, cpu: u32, comm: &str, stack: &[&str]) -> Sample {
        Sample {
            time_ns: ms * 1_000_000,
            cpu,
            pid: 1,
            tid: 1,
            comm: comm.to_string(),
            stack: stack.iter().map(|s| s.to_string()).collect(),
            // A fully unwound kernel stack unless a test says otherwise.
            kernel_depth: 3,
        }
    }

    /// CPU 0 sampled every ms; a 50 ms hole after 10 ms (IRQs off in a
    /// memory.stat read), and a 30 ms softirq run from 100 ms.
    fn recorded() -> Vec<Sample> {
        let mut samples = Vec::new();
        for ms in 0..=10 {
            samples.push(sample(ms, 0, "poller", &["memory_stat_show", "read"]));
        }
        samples.push(sample(
            60,
            0,
            "poller",
            &["_raw_spin_unlock_irq", "css_rstat_flush", "read"],
        ));
        for ms in 61..100 {
            samples.push(sample(ms, 0, "app", &["main"]));
            samples.push(sample(ms, 1, "other", &["work"]));
        }
        for ms in 100..130 {
            samples.push(sample(
                ms,
                0,
                "app",
                &["spin", "handle_softirqs", "irq_exit", "main"],
            ));
        }
        samples.push(sample(
            130,
            0,
            "ksoftirqd/0",
            &["net_rx_action", "handle_softirqs", "run_ksoftirqd"],
        ));
        samples.push(sample(131, 0, "app", &["main"]));
        samples
    }

    #[test]
    fn a_hole_in_the_samples_is_irqs_off_and_the_next_sample_says_where_they_came_back() {
        let samples = recorded();
        let found = gaps(&samples, StallRules::for_frequency(999));
        let gap = found
            .iter()
            .find(|s| s.kind == GapKind::IrqsOff)
            .expect("the gap");
        assert_eq!((gap.cpu, gap.duration_ms), (0, 50.0));
        assert!(samples[gap.last].has_frame("_raw_spin_unlock_irq"));
        assert_eq!(
            found.iter().filter(|s| s.kind == GapKind::IrqsOff).count(),
            1
        );
    }

    #[test]
    fn a_long_softirq_run_is_a_stall_and_ksoftirqd_does_not_end_it_early() {
        let samples = recorded();
        let found = gaps(&samples, StallRules::for_frequency(999));
        let run = found
            .iter()
            .find(|s| s.kind == GapKind::Softirq)
            .expect("the run");
        // 100..=129 in the app's softirq, then 130 in ksoftirqd's: one run.
        assert_eq!(run.duration_ms, 30.0);
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn samples_with_a_truncated_kernel_stack_do_not_break_a_softirq_run() {
        let mut samples = Vec::new();
        for ms in 0..40 {
            if ms % 7 == 3 {
                let mut truncated = sample(ms, 0, "app", &["__x86_indirect_thunk_rax"]);
                truncated.kernel_depth = 1;
                samples.push(truncated);
            } else {
                samples.push(sample(
                    ms,
                    0,
                    "app",
                    &["spin", "handle_softirqs", "irq_exit"],
                ));
            }
        }
        samples.push(sample(40, 0, "app", &["more", "work", "main"]));
        let found = gaps(&samples, StallRules::for_frequency(999));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].duration_ms, 39.0);
    }

    #[test]
    fn short_softirq_runs_and_other_cpus_are_not_stalls() {
        let mut samples = Vec::new();
        for ms in 0..100 {
            let softirq = ms % 20 < 5;
            let stack: &[&str] = if softirq {
                &["handle_softirqs"]
            } else {
                &["main"]
            };
            samples.push(sample(ms, 1, "app", stack));
        }
        assert!(gaps(&samples, StallRules::for_frequency(999)).is_empty());
    }

    #[test]
    fn window_before_ksoftirqd_holds_that_cpus_samples_only() {
        let samples = recorded();
        let runs = ksoftirqd_runs(&samples);
        assert_eq!(runs.len(), 1);
        let window = window_before(&samples, runs[0], 5);
        assert_eq!(window.len(), 6);
        assert!(window.iter().all(|&i| samples[i].cpu == 0));
        assert!(samples[*window.last().unwrap()].is_ksoftirqd());
        assert!(samples[window[0]].has_frame("spin"));
    }

    #[test]
    fn stall_window_ends_with_the_sample_where_irqs_came_back_on() {
        let samples = recorded();
        let found = gaps(&samples, StallRules::for_frequency(999));
        let windows = windows(&samples, &found, Trigger::Stall, 3);
        assert_eq!(windows.len(), 2);
        let irqs_off = &windows[0];
        assert_eq!(
            irqs_off.samples.len(),
            5,
            "3 before, the last before the gap, the one after"
        );
        let last = &samples[*irqs_off.samples.last().unwrap()];
        assert!(last.has_frame("_raw_spin_unlock_irq"));
        assert!(samples[irqs_off.samples[0]].has_frame("memory_stat_show"));
    }

    #[test]
    fn window_before_an_outside_event_time() {
        let samples = recorded();
        let window = window_before_time(&samples, 0, 60_500_000, 4);
        let times: Vec<u64> = window
            .iter()
            .map(|&i| samples[i].time_ns / 1_000_000)
            .collect();
        assert_eq!(times, [8, 9, 10, 60]);
        assert!(window_before_time(&samples, 1, 61_000_000, 4).is_empty());
    }

    #[test]
    fn folded_form_has_comm_first() {
        let s = sample(0, 0, "io thread", &["read", "main"]);
        assert_eq!(s.folded(), "io_thread;main;read");
    }
}
