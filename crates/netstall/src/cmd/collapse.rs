//! `netstall collapse`: `perf script` text to folded stacks.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use netstall_core::output::Output;
use netstall_xray::collapse::{self, CollapseOptions};
use netstall_xray::fold::FoldArgs;

#[derive(clap::Args)]
#[command(
    about = "Fold `perf script` output into stacks: aggregated (as stackcollapse-perf.pl) or in time order",
    long_about = "Fold `perf script` output into stacks (`comm;root;...;leaf COUNT`).\n\n\
    By default the output is what FlameGraph's stackcollapse-perf.pl prints for the same input \
    and options, byte for byte: identical stacks summed (by period where perf printed one) and \
    sorted. --ordered prints one line per sample instead, in time order, each with count 1; \
    --before PATTERN keeps only the --samples lines before each line matching PATTERN, as \
    `grep PATTERN -B N` would, without the `--` separators.\n\n\
    Like the Perl script, a last sample with no blank line after it is dropped (--flush-eof \
    keeps it), only the first event type seen is kept (or --event-filter's), and a task name \
    ending in a space and digits (`worker 1`) loses the digits to the TID.",
    after_help = "Examples:\n  \
    perf script | netstall collapse > stacks.folded\n  \
    netstall collapse perf.txt | netstall flame > flame.svg\n  \
    netstall collapse --ordered perf.txt | netstall flame --chart > chart.svg\n  \
    netstall collapse --ordered --before ksoftirqd --samples 100 perf.txt   the samples before each ksoftirqd"
)]
pub struct Args {
    /// A file of `perf script` output, or `-` for standard input.
    #[arg(default_value = "-")]
    input: PathBuf,
    /// One line per sample, in time order, instead of aggregated stacks.
    #[arg(long)]
    ordered: bool,
    /// Print only the samples before each sample matching this regular
    /// expression (and that sample); implies --ordered.
    #[arg(long, value_name = "PATTERN")]
    before: Option<String>,
    /// How many samples --before keeps before each match.
    #[arg(long, default_value_t = 100, requires = "before")]
    samples: usize,
    #[command(flatten)]
    fold: FoldArgs,
    /// Fold a last sample that has no blank line after it (the Perl script drops it).
    #[arg(long)]
    flush_eof: bool,
    /// Folding threads for aggregated output, 1 to 64 (default: one per CPU).
    #[arg(short = 'j', long, value_parser = clap::value_parser!(u16).range(1..=collapse::MAX_THREADS as i64))]
    threads: Option<u16>,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let opts = CollapseOptions {
        fold: args.fold.options()?,
        flush_at_eof: args.flush_eof,
        threads: args
            .threads
            .map_or_else(|| CollapseOptions::default().threads, usize::from),
    };
    let mode = collapse::Mode::new(args.ordered, args.before.as_deref(), args.samples)?;
    collapse::run_printed(&args.input, &opts, mode, out)?;
    Ok(ExitCode::SUCCESS)
}
