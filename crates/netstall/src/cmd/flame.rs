//! `netstall flame`: folded stacks (or `perf script` text) to an SVG flame
//! graph or flame chart.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use netstall_core::output::Output;
use netstall_xray::collapse::{self, CollapseOptions};
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
    let mut input = Vec::new();
    if name == "-" {
        io::stdin().lock().read_to_end(&mut input)
    } else {
        File::open(&args.input).and_then(|mut f| f.read_to_end(&mut input))
    }
    .with_context(|| format!("cannot read {name}"))?;

    let folded = if flame::looks_folded(&input) {
        String::from_utf8_lossy(&input).into_owned()
    } else {
        fold_perf_script(&input, args.chart, &name)?
    };
    if folded.trim().is_empty() {
        bail!("no stacks in {name}: expected folded stacks or `perf script` output");
    }
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
    flame::render(folded.lines(), &opts, &mut svg)
        .and_then(|()| svg.flush())
        .context("cannot write the SVG")?;
    Ok(ExitCode::SUCCESS)
}

/// Collapses `perf script` text: aggregated for a graph, ordered for a chart.
fn fold_perf_script(input: &[u8], chart: bool, name: &str) -> Result<String> {
    let opts = CollapseOptions::default();
    let mut folded = Vec::new();
    let stats = if chart {
        collapse::ordered(input, &opts, |stack| {
            folded.extend_from_slice(stack);
            folded.extend_from_slice(b" 1\n");
            Ok(())
        })?
    } else {
        let collapsed = collapse::aggregate(input, &opts)?;
        collapsed.write_to(&mut folded)?;
        collapsed.stats
    };
    if stats.fold.samples == 0 {
        bail!(
            "no stacks in {name}: line {} is neither folded stacks nor `perf script` output",
            stats.fold.first_unrecognized_line.unwrap_or(1)
        );
    }
    Ok(String::from_utf8_lossy(&folded).into_owned())
}
