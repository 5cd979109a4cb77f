//! `netstall xray`: sample CPUs as an ordered timeline; report sample gaps
//! (IRQs off), long softirq runs (BHs off) and the samples before them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use netstall_core::output::Output;
use netstall_xray::sampler::SamplerConfig;
use netstall_xray::session::{self, XrayConfig};
use netstall_xray::timeline::Trigger;

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
    let config = XrayConfig {
        sampler: SamplerConfig {
            cpus: args.cpu,
            frequency: args.frequency,
        },
        duration: args.duration,
        before: args.before.map(|before| match before {
            Before::Stall => Trigger::Stall,
            Before::Ksoftirqd => Trigger::Ksoftirqd,
        }),
        samples: args.samples,
        gap: args.gap,
        svg: args.svg,
    };
    session::run_printed(&config, out)?;
    Ok(ExitCode::SUCCESS)
}
