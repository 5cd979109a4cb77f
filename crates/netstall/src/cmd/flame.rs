//! `netstall flame`: folded stacks (or `perf script` text) to an SVG flame
//! graph or flame chart.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use netstall_core::output::Output;
use netstall_xray::flame::{self, FlameOptions};
use netstall_xray::fold::FoldArgs;

#[derive(clap::Args)]
#[command(
    about = "Draw an SVG flame graph, or a flame chart (time on the x axis), from folded stacks or perf script text",
    long_about = "Draw an SVG flame graph (stacks merged) or, with --chart, a flame chart (time \
    on the x axis, left to right) through the inferno crate. Width is the samples' weight in \
    both: from perf script text, each sample's period (1 without one); a chart from perf script \
    text with times draws stretches without samples as `[no samples: X ms]` frames.\n\n\
    The input is folded stacks (`netstall collapse` output; for --chart, `netstall collapse \
    --ordered` output) or `perf script` text, which is collapsed first (with collapse's \
    options): aggregated for a flame graph, in time order for a chart. Options are \
    flamegraph.pl's; counts may be fractional; lines that are not `stack COUNT` are counted \
    on stderr; an input with no stacks still gets flamegraph.pl's error SVG, and exit 2.",
    after_help = "Examples:\n  \
    perf script | netstall flame > flame.svg\n  \
    netstall collapse perf.txt | netstall flame --title \"cadvisor stall\" -o flame.svg\n  \
    perf script | netstall flame --kernel --colors java --minwidth 0.5% > flame.svg\n  \
    netstall collapse --ordered perf.txt | netstall flame --chart -o chart.svg"
)]
pub struct Args {
    /// Folded stacks or `perf script` output, or `-` for standard input.
    #[arg(default_value = "-")]
    input: PathBuf,
    #[command(flatten)]
    flame: FlameOptions,
    #[command(flatten)]
    fold: FoldArgs,
    /// Write the SVG here instead of to standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let fold = args.fold.options()?;
    let name = args.input.display().to_string();
    let input = netstall_xray::open_input(&args.input)?;
    let svg: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let mut svg = BufWriter::new(svg);
    let drawn = flame::draw(input, &name, &args.flame, &fold, &mut svg, |w| {
        out.progress(w)
    });
    match drawn.and_then(|()| Ok(svg.flush()?)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `netstall flame x | head` is not an error.
        Err(e)
            if e.downcast_ref::<io::Error>().map(io::Error::kind)
                == Some(io::ErrorKind::BrokenPipe) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}
