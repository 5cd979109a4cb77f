//! `netstall xray`'s session: sample the CPUs, then print the sample gaps,
//! the windows of samples before each trigger, and the summary.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
use netstall_events::xray::XraySummary;

use crate::flame;
use crate::sampler::{self, SamplerConfig};
use crate::timeline::{self, StallRules, Trigger};

/// What to sample, and what to print of it.
#[derive(Debug, Clone)]
pub struct XrayConfig {
    pub sampler: SamplerConfig,
    pub duration: Duration,
    /// Print the samples before each of these.
    pub before: Option<Trigger>,
    /// How many samples `before` prints before each one.
    pub samples: usize,
    /// Shortest sample gap and softirq run reported (default: from the frequency).
    pub gap: Option<Duration>,
    /// Also write a flame chart of the whole recording here.
    pub svg: Option<PathBuf>,
}

/// Samples for `config.duration` and prints what the samples show; returns
/// the summary (also printed last).
pub fn run_printed(xray: &XrayConfig, out: Output) -> Result<XraySummary> {
    let config = &xray.sampler;
    netstall_core::cpu::check_online(&config.cpus)?;
    out.progress(format!(
        "xray: sampling CPU {} at {} Hz for {:?}",
        netstall_core::cpu::format_list(&config.cpus),
        config.frequency,
        xray.duration
    ));
    let recording = sampler::record(config, xray.duration, &Shutdown::new()?)?;
    let samples = &recording.samples;
    let mut rules = StallRules::for_frequency(config.frequency);
    if let Some(gap) = xray.gap {
        rules.min_gap_ns = gap.as_nanos() as u64;
        rules.min_softirq_ns = gap.as_nanos() as u64;
    }
    let gaps = timeline::gaps(samples, rules);

    for gap in &gaps {
        out.emit(timeline::sample_gap(samples, gap));
    }

    if let Some(trigger) = xray.before {
        for window in timeline::windows(samples, &gaps, trigger, xray.samples) {
            out.emit(window.record(samples));
        }
    }

    if let Some(path) = &xray.svg {
        flame::write_chart(samples, &config.cpus, path)?;
    }

    let summary = XraySummary {
        cpus: config.cpus.clone(),
        frequency_hz: config.frequency,
        duration_ms: xray.duration.as_millis() as u64,
        samples: samples.len(),
        lost: recording.lost,
        gaps: gaps.len(),
        ksoftirqd_runs: timeline::ksoftirqd_runs(samples).len(),
    };
    out.emit(summary.clone());
    Ok(summary)
}
