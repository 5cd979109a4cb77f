//! `netstall collapse`: `perf script` text to folded stacks.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use netstall_core::output::Output;
use netstall_events::xray::{CollapseSummary, FoldedStack};
use netstall_events::Record;
use netstall_xray::collapse::{self, CollapseOptions, CollapseStats};
use netstall_xray::fold::FoldOptions;
use regex::bytes::Regex;

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
    /// Include the PID with the process name (`comm-PID`).
    #[arg(long)]
    pid: bool,
    /// Include PID and TID with the process name (`comm-PID/TID`).
    #[arg(long)]
    tid: bool,
    /// Annotate kernel frames with `_[k]`.
    #[arg(long)]
    kernel: bool,
    /// Annotate JIT frames (`/tmp/perf-PID.map`) with `_[j]`.
    #[arg(long)]
    jit: bool,
    /// All annotations: --kernel and --jit.
    #[arg(long)]
    all: bool,
    /// Keep the address of frames without a symbol: `[unknown <addr>]`.
    #[arg(long)]
    addrs: bool,
    /// Keep only samples of this event (default: the first event in the input).
    #[arg(long, value_name = "EVENT")]
    event_filter: Option<String>,
    /// Fold a last sample that has no blank line after it (the Perl script drops it).
    #[arg(long)]
    flush_eof: bool,
    /// Folding threads for aggregated output, 1 to 64 (default: one per CPU).
    #[arg(short = 'j', long, value_parser = clap::value_parser!(u16).range(1..=collapse::MAX_THREADS as i64))]
    threads: Option<u16>,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let opts = CollapseOptions {
        fold: FoldOptions {
            include_pid: args.pid,
            include_tid: args.tid,
            annotate_kernel: args.kernel || args.all,
            annotate_jit: args.jit || args.all,
            include_addrs: args.addrs,
            event_filter: args.event_filter.clone().map(String::into_bytes),
        },
        flush_at_eof: args.flush_eof,
        threads: args
            .threads
            .map_or_else(|| CollapseOptions::default().threads, usize::from),
    };
    let mode = match &args.before {
        Some(p) => collapse::Mode::Before {
            pattern: Regex::new(p).with_context(|| format!("invalid --before pattern '{p}'"))?,
            samples: args.samples,
        },
        None if args.ordered => collapse::Mode::Ordered,
        None => collapse::Mode::Aggregated,
    };
    let name = args.input.display().to_string();
    let input: Box<dyn Read> = if name == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(&args.input).with_context(|| format!("cannot read {name}"))?)
    };
    let mut sink = Sink::new(out);
    let stats = collapse::run(input, &opts, mode, |stack, count| sink.stack(stack, count));
    let stats = match stats.and_then(|s| sink.flush().map(|()| s)) {
        Ok(stats) => stats,
        // `netstall collapse big.txt | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e).with_context(|| format!("cannot collapse {name}")),
    };
    report(&stats, &name, out)?;
    Ok(ExitCode::SUCCESS)
}

/// Folded lines to stdout, as text or JSON.
struct Sink {
    out: Output,
    writer: BufWriter<io::StdoutLock<'static>>,
}

impl Sink {
    fn new(out: Output) -> Self {
        Self {
            out,
            writer: BufWriter::with_capacity(1 << 16, io::stdout().lock()),
        }
    }

    fn stack(&mut self, stack: &[u8], count: u64) -> io::Result<()> {
        if self.out.is_json() {
            let record = Record::Stack(FoldedStack {
                stack: String::from_utf8_lossy(stack).into_owned(),
                count,
            });
            writeln!(self.writer, "{}", record.to_json_line())
        } else {
            self.writer.write_all(stack)?;
            writeln!(self.writer, " {count}")
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Says what was skipped (stderr in text mode, a summary object in JSON),
/// and fails when the input held no samples at all but did hold other text.
fn report(stats: &CollapseStats, name: &str, out: Output) -> Result<()> {
    let fold = &stats.fold;
    if stats.cut_parts > 0 {
        out.progress(format!(
            "netstall: {name} ran {} MiB without a blank line ({} time(s)) and was cut at line \
             ends to bound memory: samples with call stacks end in blank lines; `perf script` \
             of a recording made without -g looks like this (record with `perf record -g`)",
            collapse::MAX_PART_BYTES >> 20,
            stats.cut_parts
        ));
    }
    // After the hint above: it says why an input of no samples has none.
    stats.ensure_samples(name)?;
    let lossy = |b: &Option<Vec<u8>>| {
        b.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    if let Some(line) = fold.first_unrecognized_line {
        out.progress(format!(
            "netstall: skipped {} unrecognized line(s), the first at line {line}",
            fold.unrecognized_lines
        ));
    }
    if fold.filtered_samples > 0 {
        out.progress(format!(
            "netstall: kept only {} samples; skipped {} samples of other events such as {} (see --event-filter)",
            lossy(&stats.kept_event).unwrap_or_default(),
            fold.filtered_samples,
            lossy(&fold.filtered_event).unwrap_or_default()
        ));
    }
    if fold.dropped_frames > 0 {
        out.progress(format!(
            "netstall: left out {} frame(s) of samples longer than {} MiB of names",
            fold.dropped_frames,
            netstall_xray::fold::MAX_SAMPLE_BYTES >> 20
        ));
    }
    if stats.unterminated_last_sample && !stats.flushed_last_sample {
        out.progress(
            "netstall: the last sample has no blank line after it and was dropped, \
             as stackcollapse-perf.pl drops it (--flush-eof keeps it)",
        );
    }
    out.json(CollapseSummary {
        samples: fold.samples,
        kept_event: lossy(&stats.kept_event),
        filtered_samples: fold.filtered_samples,
        unrecognized_lines: fold.unrecognized_lines,
        first_unrecognized_line: fold.first_unrecognized_line,
        unterminated_last_sample: stats.unterminated_last_sample,
    });
    Ok(())
}
