//! `netstall flame`: folded stacks (or `perf script` text) to an SVG flame
//! graph or flame chart.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use netstall_core::output::Output;
use netstall_xray::flame::{self, FlameOptions};

#[derive(clap::Args)]
#[command(
    about = "Draw an SVG flame graph, or a flame chart (time on the x axis), from folded stacks or perf script text",
    long_about = "Draw an SVG flame graph (stacks merged, width = samples) or, with --chart, \
    a flame chart (time on the x axis, left to right) through the inferno crate.\n\n\
    The input is folded stacks (`netstall collapse` output; for --chart, `netstall collapse \
    --ordered` output) or `perf script` text, which is collapsed first: aggregated for a flame \
    graph, in time order for a chart.",
    after_help = "Examples:\n  \
    perf script | netstall flame > flame.svg\n  \
    netstall collapse perf.txt | netstall flame --title \"cadvisor stall\" -o flame.svg\n  \
    netstall collapse --ordered perf.txt | netstall flame --chart -o chart.svg"
)]
pub struct Args {
    /// Folded stacks or `perf script` output, or `-` for standard input.
    #[arg(default_value = "-")]
    input: PathBuf,
    /// A flame chart: keep samples in input (time) order instead of merging them.
    #[arg(long)]
    chart: bool,
    /// The title at the top of the picture.
    #[arg(long)]
    title: Option<String>,
    /// Write the SVG here instead of to standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn run(args: Args, _out: Output) -> Result<ExitCode> {
    let name = args.input.display().to_string();
    let input = netstall_xray::open_input(&args.input)?;
    let lines = flame::stacks_to_draw(input, args.chart, &name)?;
    let opts = FlameOptions {
        chart: args.chart,
        title: args.title,
    };
    let svg: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(io::stdout().lock()),
    };
    let mut svg = BufWriter::new(svg);
    match flame::render(lines.iter().map(String::as_str), &opts, &mut svg)
        .and_then(|()| svg.flush())
    {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `netstall flame x | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("cannot write the SVG"),
    }
}
