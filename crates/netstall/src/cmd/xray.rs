//! `netstall xray`: sample CPUs as an ordered timeline; report sample gaps
//! (IRQs off), long softirq runs (BHs off) and the samples before them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
use netstall_events::xray::{SampleWindow, XraySummary};
use netstall_xray::flame;
use netstall_xray::sampler::{self, SamplerConfig};
use netstall_xray::timeline::{self, StallRules, Trigger};

#[derive(clap::Args)]
#[command(
    about = "Sample CPUs as an ordered timeline: sample gaps (IRQs off), softirq stalls, the samples before ksoftirqd",
    long_about = "Sample the given CPUs (software cpu-clock, kernel and user stacks, \
    symbolized) and keep the samples in time order.\n\n\
    Reports stalls seen in the samples: a gap with no sample at all (the cpu-clock timer \
    cannot fire while IRQs are off; the first sample after the gap shows where they came \
    back on) and long runs inside softirq processing (bottom halves held, so network RX \
    waits). --before prints the samples before each stall or each ksoftirqd run.",
    after_help = "Examples:\n  \
    sudo netstall xray --cpu 3 -w 10s\n  \
    sudo netstall xray --cpu 0-1 --before stall --samples 50\n  \
    sudo netstall xray --cpu 3 --before ksoftirqd --json > xray.jsonl\n  \
    sudo netstall xray --cpu 3 --gap 5ms --svg chart.svg"
)]
pub struct Args {
    /// CPUs to sample: `11`, `0-3`, `0,2`.
    #[arg(long, value_parser = netstall_core::cpu::parse_list)]
    cpu: CpuList,
    /// How long to sample.
    #[arg(short = 'w', long, default_value = "10s", value_parser = netstall_core::duration::parse_nonzero)]
    duration: Duration,
    /// Samples per second per CPU.
    #[arg(short = 'F', long, default_value_t = 999, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    frequency: u64,
    /// Print the samples before each stall or each ksoftirqd run.
    #[arg(long, value_enum)]
    before: Option<Before>,
    /// How many samples --before prints before each one.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Shortest gap between two samples of a CPU reported as IRQs off, and
    /// shortest softirq run reported (default: 10 ms, at least 5 sample periods).
    #[arg(long, value_parser = netstall_core::duration::parse_nonzero)]
    gap: Option<Duration>,
    /// Also write a flame chart of the whole recording (time on the x axis).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// A whole CPU list in one argument (`0-3`), not one CPU per occurrence.
type CpuList = Vec<u32>;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Before {
    Stall,
    Ksoftirqd,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let config = SamplerConfig {
        cpus: args.cpu.clone(),
        frequency: args.frequency,
    };
    netstall_core::cpu::check_online(&config.cpus)?;
    out.progress(format!(
        "xray: sampling CPU {} at {} Hz for {:?}",
        netstall_core::cpu::format_list(&config.cpus),
        config.frequency,
        args.duration
    ));
    let recording = sampler::record(&config, args.duration, &Shutdown::new()?)?;
    let samples = &recording.samples;
    let mut rules = StallRules::for_frequency(args.frequency);
    if let Some(gap) = args.gap {
        rules.min_gap_ns = gap.as_nanos() as u64;
        rules.min_softirq_ns = gap.as_nanos() as u64;
    }
    let gaps = timeline::gaps(samples, rules);

    for gap in &gaps {
        out.emit(timeline::sample_gap(samples, gap));
    }

    if let Some(before) = args.before {
        let trigger = match before {
            Before::Stall => Trigger::Stall,
            Before::Ksoftirqd => Trigger::Ksoftirqd,
        };
        for window in timeline::windows(samples, &gaps, trigger, args.samples) {
            out.emit(SampleWindow {
                trigger: window.trigger,
                cpu: window.cpu,
                at_ns: window.at_ns,
                samples: window.samples.iter().map(|&i| samples[i].clone()).collect(),
            });
        }
    }

    if let Some(path) = &args.svg {
        flame::write_chart(samples, &config.cpus, path)?;
    }

    let ksoftirqd_runs = timeline::ksoftirqd_runs(samples).len();
    out.emit(XraySummary {
        cpus: config.cpus.clone(),
        frequency_hz: config.frequency,
        duration_ms: args.duration.as_millis() as u64,
        samples: samples.len(),
        lost: recording.lost,
        gaps: gaps.len(),
        ksoftirqd_runs,
    });
    Ok(ExitCode::SUCCESS)
}
