//! A short sampling window on one CPU, opened by a stall there (the
//! agent's `stall-sampling`): stalls recur on the CPU that stalled, so the
//! next one is caught in the act. The [`sampler`]'s cpu-clock samples with
//! their stacks are read into the gaps they show ([`timeline::gaps`]) and
//! the stacks sampled most, with what the window cost.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use netstall_core::clock::realtime_ns;
use netstall_core::shutdown::Shutdown;
use netstall_events::xray::{CpuSampling, FoldedStack};

use crate::sampler::{self, Recording, SamplerConfig};
use crate::timeline::{self, StallRules};

/// Gaps a window keeps, the longest.
pub const TOP_GAPS: usize = 5;
/// Stacks a window keeps, the most sampled.
pub const TOP_STACKS: usize = 10;

/// One window: where, how long, how often.
#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    pub cpu: u32,
    pub window: Duration,
    pub frequency: u64,
}

/// Samples `config.cpu` for the window (or until `stop`), after a stall
/// that ended at `trigger_ns`. The cost is this thread's CPU time: the
/// sampling and the naming of frames (the kernel's own cost of taking a
/// sample lands on the sampled CPU, about a microsecond each).
pub fn sample_after_stall(
    config: &WindowConfig,
    trigger_ns: u64,
    stop: &Shutdown,
) -> Result<CpuSampling> {
    let cpu_before = thread_cpu_ns();
    let start_ns = realtime_ns();
    // Kernel frames only: a stall's culprit is in the kernel, and naming the
    // user frames of whatever ran would cost the agent tens of MB and most
    // of the window's CPU time.
    let recording = sampler::record_kernel(
        &SamplerConfig {
            cpus: vec![config.cpu],
            frequency: config.frequency,
        },
        config.window,
        stop,
    )?;
    let end_ns = realtime_ns();
    let mut sampling = summarize(&recording, config, trigger_ns, start_ns, end_ns);
    sampling.cost_ms = thread_cpu_ns().saturating_sub(cpu_before) as f64 / 1e6;
    Ok(sampling)
}

/// The window's record: its longest gaps and its most sampled stacks.
pub fn summarize(
    recording: &Recording,
    config: &WindowConfig,
    trigger_ns: u64,
    start_ns: u64,
    end_ns: u64,
) -> CpuSampling {
    let samples = &recording.samples;
    let mut gaps = timeline::gaps(samples, StallRules::for_frequency(config.frequency));
    gaps.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
    gaps.truncate(TOP_GAPS);
    let mut counts: HashMap<String, u64> = HashMap::new();
    for sample in samples {
        *counts.entry(sample.folded()).or_default() += 1;
    }
    let mut stacks: Vec<FoldedStack> = counts
        .into_iter()
        .map(|(stack, count)| FoldedStack { stack, count })
        .collect();
    stacks.sort_by(|a, b| b.count.cmp(&a.count).then(a.stack.cmp(&b.stack)));
    stacks.truncate(TOP_STACKS);
    CpuSampling {
        cpu: config.cpu,
        trigger_ns,
        start_ns,
        end_ns,
        frequency_hz: config.frequency,
        samples: samples.len(),
        lost: recording.lost,
        gaps: gaps
            .iter()
            .map(|g| timeline::sample_gap(samples, g))
            .collect(),
        stacks,
        cost_ms: 0.0,
        node: None,
    }
}

/// CPU time of the calling thread, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Sample;

    fn sample(ms: u64, comm: &str, stack: &[&str]) -> Sample {
        Sample {
            time_ns: ms * 1_000_000,
            cpu: 1,
            pid: 7,
            tid: 7,
            comm: comm.into(),
            stack: stack.iter().map(|s| s.to_string()).collect(),
            kernel_depth: stack.len(),
        }
    }

    #[test]
    fn a_window_keeps_its_longest_gaps_and_most_sampled_stacks() {
        // 499 Hz, 2 ms apart, with a 110 ms hole that ends in the flush.
        let mut samples: Vec<Sample> = (0..100).map(|i| sample(i * 2, "app", &["work"])).collect();
        samples.push(sample(
            310,
            "cadvisor",
            &["_raw_spin_unlock_irq", "css_rstat_flush"],
        ));
        samples.extend((0..20).map(|i| sample(312 + i * 2, "cadvisor", &["read"])));
        let recording = Recording { samples, lost: 2 };
        let config = WindowConfig {
            cpu: 1,
            window: Duration::from_secs(2),
            frequency: 499,
        };
        let w = summarize(&recording, &config, 5, 6, 2_000_000_006);
        assert_eq!((w.cpu, w.samples, w.lost, w.trigger_ns), (1, 121, 2, 5));
        assert_eq!(w.gaps.len(), 1, "{:?}", w.gaps);
        assert_eq!(w.gaps[0].comm, "cadvisor");
        assert_eq!(w.gaps[0].duration_ms, 112.0);
        assert_eq!(w.gaps[0].resumed_in[1], "css_rstat_flush");
        assert_eq!(
            w.stacks[0],
            FoldedStack {
                stack: "app;work".into(),
                count: 100
            }
        );
        assert_eq!(w.stacks[1].count, 20);
        assert!(w.to_string().contains("1 gap(s)"), "{w}");
    }
}
