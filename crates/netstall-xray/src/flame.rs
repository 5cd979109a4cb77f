//! Folded stacks to SVG through the inferno crate: a flame graph (stacks
//! merged and sorted) or a flame chart (time on the x axis, from ordered
//! input: one line per sample, in time order).
//!
//! One weighting for both: a frame is as wide as the counts of its lines;
//! from `perf script` text, a sample counts its period as perf printed it (1
//! without one), as `stackcollapse-perf.pl` sums it. A chart from `perf
//! script` text with times also draws the stretches where no sample was taken
//! (see [`TimeAxis`]), so the x axis is time and a stall shows as a gap.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};

use inferno::flamegraph::{self, Options};

use crate::collapse::{self, CollapseOptions, CollapseStats};
use crate::fold::{FoldOptions, Sample};

/// The longest folded line read as one; a longer one is read in pieces
/// (none of which is a valid stack line, so they are skipped).
const MAX_LINE_BYTES: usize = 1 << 20;

/// What [`read_stacks`] found in its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Folded stacks; `skipped` lines were not `stack COUNT`.
    Folded { skipped: u64 },
    /// `perf script` text, collapsed first.
    PerfScript(CollapseStats),
}

/// The lines to draw and how to read their counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Stacks {
    /// `stack COUNT` lines, COUNT a whole number.
    pub lines: Vec<String>,
    /// What a COUNT is worth: 1, or 10^-d when the input had counts with d
    /// decimals (they are drawn as whole numbers scaled by 10^d, as
    /// flamegraph.pl's `--factor` documents, so that fractions keep their
    /// weight instead of being cut).
    pub factor: f64,
    pub input: Input,
}

/// Decimals of a fractional count kept (finer ones are cut).
const MAX_DECIMALS: u32 = 6;
const UNIT: u64 = 10u64.pow(MAX_DECIMALS);

/// Reads folded stacks or `perf script` text as a stream, into the lines
/// to draw (`stack COUNT`): merged per stack for a graph, adjacent repeats
/// merged for a chart. Memory grows with the distinct stacks (a graph) or
/// the changes of stack (a chart), never with the input's size; bytes
/// that XML cannot hold (invalid UTF-8, control characters) become U+FFFD.
/// `perf script` text is folded with `fold`'s options.
pub fn read_stacks(reader: impl Read, chart: bool, fold: &FoldOptions) -> io::Result<Stacks> {
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    // Enough of the input to judge its kind: up to its first real line.
    let mut head = Vec::new();
    loop {
        let start = head.len();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut head)?;
        let line = head[start..].trim_ascii();
        if n == 0 || head.len() >= MAX_LINE_BYTES || !(line.is_empty() || line[0] == b'#') {
            break;
        }
    }
    let folded = looks_folded(&head);
    let input = io::Cursor::new(head).chain(reader);
    let mut lines = Lines::new(chart);
    if folded {
        let mut reader = BufReader::new(input);
        let mut line = Vec::new();
        let mut skipped = 0;
        loop {
            line.clear();
            if (&mut reader)
                .take(MAX_LINE_BYTES as u64)
                .read_until(b'\n', &mut line)?
                == 0
            {
                break;
            }
            let text = line.trim_ascii();
            if text.is_empty() || text[0] == b'#' {
                continue;
            }
            match split_count(text) {
                Some((stack, count, decimals)) => lines.add(stack, count, decimals),
                None => skipped += 1,
            }
        }
        let (lines, factor) = lines.finish();
        let input = Input::Folded { skipped };
        return Ok(Stacks {
            lines,
            factor,
            input,
        });
    }
    let opts = CollapseOptions {
        fold: fold.clone(),
        ..CollapseOptions::default()
    };
    let stats = if chart {
        let mut axis = TimeAxis::default();
        let stats = collapse::ordered(input, &opts, |sample| {
            axis.push(sample, &mut lines);
            Ok(())
        })?;
        axis.finish(&mut lines);
        stats
    } else {
        let collapsed = collapse::aggregate(input, &opts)?;
        for (stack, count) in &collapsed.stacks {
            lines.add(stack, count.saturating_mul(UNIT), 0);
        }
        collapsed.stats
    };
    let (lines, factor) = lines.finish();
    Ok(Stacks {
        lines,
        factor,
        input: Input::PerfScript(stats),
    })
}

/// Samples whose spacing sets a chart's usual spacing and weight.
const LEARN_SAMPLES: usize = 64;
/// A stretch with no sample longer than this many usual spacings is a gap.
const GAP_SPACINGS: u64 = 2;

/// Lays a chart's samples on a time axis. Every sample weighs its period,
/// as in a graph; where the input has times, a stretch without samples
/// longer than [`GAP_SPACINGS`] usual spacings becomes a `[no samples: X ms]`
/// frame as wide as the samples that would have fit in it. The usual spacing
/// and weight are the medians over the first [`LEARN_SAMPLES`] samples, which
/// are held until then: memory stays bounded.
#[derive(Default)]
struct TimeAxis {
    learning: Vec<(Vec<u8>, u64, Option<u64>)>,
    /// (spacing in ns, weight) once learnt; spacing 0 when unknown.
    usual: Option<(u64, u64)>,
    last_ns: Option<u64>,
}

impl TimeAxis {
    fn push(&mut self, sample: Sample<'_>, lines: &mut Lines) {
        if self.usual.is_none() {
            self.learning
                .push((sample.stack.to_vec(), sample.weight, sample.time_ns));
            if self.learning.len() == LEARN_SAMPLES {
                self.finish(lines);
            }
            return;
        }
        self.place(sample.stack, sample.weight, sample.time_ns, lines);
    }

    /// Learns from what is held (at the end of a short input too) and
    /// draws it.
    fn finish(&mut self, lines: &mut Lines) {
        if self.usual.is_some() {
            return;
        }
        let mut spacings: Vec<u64> = self
            .learning
            .windows(2)
            .filter_map(|w| w[1].2?.checked_sub(w[0].2?))
            .filter(|&d| d > 0)
            .collect();
        let mut weights: Vec<u64> = self.learning.iter().map(|s| s.1).collect();
        self.usual = Some((median(&mut spacings), median(&mut weights)));
        for (stack, weight, time) in std::mem::take(&mut self.learning) {
            self.place(&stack, weight, time, lines);
        }
    }

    fn place(&mut self, stack: &[u8], weight: u64, time: Option<u64>, lines: &mut Lines) {
        let (spacing, usual_weight) = self.usual.unwrap_or_default();
        if let (Some(last), Some(now)) = (self.last_ns, time) {
            let gap = now.saturating_sub(last);
            if spacing > 0 && gap > GAP_SPACINGS * spacing {
                let missing = (gap - spacing) as f64 / spacing as f64;
                let filler = format!("[no samples: {:.1} ms]", gap as f64 / 1e6);
                let count = (missing * usual_weight as f64 * UNIT as f64) as u64;
                lines.add(filler.as_bytes(), count, 0);
            }
        }
        if time.is_some() {
            self.last_ns = time.max(self.last_ns);
        }
        lines.add(stack, weight.saturating_mul(UNIT), 0);
    }
}

/// The median of `values` (0 for none).
fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// `stack COUNT` split in two, COUNT in millionths with its number of
/// decimals (flamegraph.pl reads `\d+(\.\d*)?`); `None` when the line does
/// not end in a count.
fn split_count(line: &[u8]) -> Option<(&[u8], u64, u32)> {
    let space = memchr::memrchr(b' ', line)?;
    let count = std::str::from_utf8(&line[space + 1..]).ok()?;
    let (whole, fraction) = count.split_once('.').unwrap_or((count, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fraction = fraction.trim_end_matches('0');
    let decimals = (fraction.len() as u32).min(MAX_DECIMALS);
    let mut micros: u64 = 0;
    for (i, digit) in fraction.bytes().take(MAX_DECIMALS as usize).enumerate() {
        micros += u64::from(digit - b'0') * 10u64.pow(MAX_DECIMALS - 1 - i as u32);
    }
    let count = whole
        .parse::<u64>()
        .unwrap_or(u64::MAX)
        .saturating_mul(UNIT)
        .saturating_add(micros);
    let stack = line[..space].trim_ascii_end();
    (!stack.is_empty()).then_some((stack, count, decimals))
}

/// Text XML can hold: invalid UTF-8 and control characters become U+FFFD.
fn xml_safe(stack: &[u8]) -> String {
    String::from_utf8_lossy(stack)
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// The lines to draw, merged as they come, counts in millionths.
struct Lines {
    chart: bool,
    /// A chart's runs, in order.
    runs: Vec<(String, u64)>,
    /// A graph's totals.
    totals: HashMap<String, u64>,
    /// The most decimals a count had.
    decimals: u32,
}

impl Lines {
    fn new(chart: bool) -> Self {
        Self {
            chart,
            runs: Vec::new(),
            totals: HashMap::new(),
            decimals: 0,
        }
    }

    fn add(&mut self, stack: &[u8], count: u64, decimals: u32) {
        self.decimals = self.decimals.max(decimals);
        let stack = xml_safe(stack);
        if !self.chart {
            let total = self.totals.entry(stack).or_default();
            *total = total.saturating_add(count);
            return;
        }
        match self.runs.last_mut() {
            Some((last, total)) if *last == stack => *total = total.saturating_add(count),
            _ => self.runs.push((stack, count)),
        }
    }

    /// The lines with whole counts, and what one count is worth.
    fn finish(self) -> (Vec<String>, f64) {
        let pairs: Vec<(String, u64)> = if self.chart {
            self.runs
        } else {
            let mut pairs: Vec<_> = self.totals.into_iter().collect();
            pairs.sort_unstable();
            pairs
        };
        // Sums of counts with d decimals have d decimals at most: exact.
        let per_count = 10u64.pow(MAX_DECIMALS - self.decimals);
        let lines = pairs
            .into_iter()
            .filter(|(_, count)| *count >= per_count)
            .map(|(stack, count)| format!("{stack} {}", count / per_count))
            .collect();
        (lines, 10f64.powi(-(self.decimals as i32)))
    }
}

/// `--minwidth`: pixels, or a percentage of the total with `%`, as
/// flamegraph.pl takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinWidth {
    Pixels(f64),
    Percent(f64),
}

impl std::str::FromStr for MinWidth {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (number, percent) = match text.strip_suffix('%') {
            Some(number) => (number, true),
            None => (text, false),
        };
        let value: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("'{text}' is not a width (pixels, or a percentage with %)"))?;
        Ok(if percent {
            MinWidth::Percent(value)
        } else {
            MinWidth::Pixels(value)
        })
    }
}

/// What to draw: flamegraph.pl's common options, with its names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FlameOptions {
    /// A flame chart: samples stay in input (time) order, left to right.
    #[arg(long, visible_alias = "flamechart")]
    pub chart: bool,
    /// The title; a default that says which kind of picture it is otherwise.
    #[arg(long)]
    pub title: Option<String>,
    /// A second line under the title.
    #[arg(long)]
    pub subtitle: Option<String>,
    /// Image width in pixels [default: 1200].
    #[arg(long, value_parser = clap::value_parser!(u32).range(100..=100_000))]
    pub width: Option<u32>,
    /// Frame height in pixels [default: 16].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub height: Option<u32>,
    /// Leave out frames narrower than this: pixels, or N% of the total [default: 0.1].
    #[arg(long)]
    pub minwidth: Option<MinWidth>,
    /// Font [default: Verdana].
    #[arg(long)]
    pub fonttype: Option<String>,
    /// Font size [default: 12].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub fontsize: Option<u32>,
    /// Average character width, as a fraction of the font size [default: 0.59].
    #[arg(long)]
    pub fontwidth: Option<f64>,
    /// What a count is called [default: samples].
    #[arg(long)]
    pub countname: Option<String>,
    /// What a frame is called in its tooltip [default: Function:].
    #[arg(long)]
    pub nametype: Option<String>,
    /// Palette: hot, mem, io, wakeup, java, js, perl, red, green, blue, aqua, yellow, purple, orange [default: hot].
    #[arg(long)]
    pub colors: Option<String>,
    /// Background: yellow, blue, green, grey, or #rrggbb [default: by palette].
    #[arg(long)]
    pub bgcolors: Option<String>,
    /// Color by a hash of the function name (the same name, the same color).
    #[arg(long)]
    pub hash: bool,
    /// Reverse each stack (leaf first) before merging.
    #[arg(long)]
    pub reverse: bool,
    /// An icicle graph: stacks hang from the top.
    #[arg(long)]
    pub inverted: bool,
    /// Multiply counts by this in the tooltips [default: 1].
    #[arg(long)]
    pub factor: Option<f64>,
    /// Notes kept in the SVG.
    #[arg(long)]
    pub notes: Option<String>,
    /// Differential input: color by the first count's change instead.
    #[arg(long)]
    pub negate: bool,
}

/// flamegraph.pl's horizontal padding (each side), in pixels: its
/// `--minwidth` in pixels is measured on the width inside it.
const XPAD: f64 = 10.0;

impl FlameOptions {
    /// inferno's options for these, with counts worth `factor` each.
    fn inferno(&self, factor: f64) -> io::Result<Options<'static>> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        let mut options = Options::default();
        options.title = self.title.clone().unwrap_or_else(|| {
            if self.chart {
                "Flame Chart (time →)"
            } else {
                "Flame Graph"
            }
            .to_string()
        });
        options.subtitle.clone_from(&self.subtitle);
        options.count_name = self.countname.clone().unwrap_or_else(|| "samples".into());
        let width = self.width.map_or(1200, |w| w as usize);
        options.image_width = Some(width);
        if let Some(height) = self.height {
            options.frame_height = height as usize;
        }
        // inferno's minimum width is a percentage; flamegraph.pl's default
        // (0.1 pixel) in inferno's terms, so both leave out the same frames.
        options.min_width = match self.minwidth.unwrap_or(MinWidth::Pixels(0.1)) {
            MinWidth::Percent(p) => p,
            MinWidth::Pixels(px) => px * 100.0 / (width as f64 - 2.0 * XPAD),
        };
        if let Some(font) = &self.fonttype {
            options.font_type.clone_from(font);
        }
        if let Some(size) = self.fontsize {
            options.font_size = size as usize;
        }
        if let Some(fontwidth) = self.fontwidth {
            options.font_width = fontwidth;
        }
        if let Some(name) = &self.nametype {
            options.name_type.clone_from(name);
        }
        if let Some(colors) = &self.colors {
            options.colors = colors.parse().map_err(invalid)?;
        }
        if let Some(bg) = &self.bgcolors {
            options.bgcolors = Some(bg.parse().map_err(invalid)?);
        }
        options.hash = self.hash;
        options.reverse_stack_order = self.reverse;
        if self.inverted {
            options.direction = flamegraph::Direction::Inverted;
        }
        options.factor = self.factor.unwrap_or(1.0) * factor;
        if let Some(notes) = &self.notes {
            options.notes.clone_from(notes);
        }
        options.negate_differentials = self.negate;
        options.flame_chart = self.chart;
        Ok(options)
    }
}

/// Renders folded lines (`a;b;c COUNT`, each count worth `factor`) as an
/// SVG. No lines: flamegraph.pl's error picture, and an error.
pub fn render<'a>(
    folded: impl IntoIterator<Item = &'a str>,
    opts: &FlameOptions,
    factor: f64,
    svg: impl Write,
) -> io::Result<()> {
    let mut options = opts.inferno(factor)?;
    let mut lines: Vec<&str> = folded.into_iter().collect();
    if opts.chart {
        // inferno's flame-chart mode lays lines out last-first (it expects
        // newest-first input); give it that so time runs left to right.
        lines.reverse();
    }
    flamegraph::from_lines(&mut options, lines, svg)
}

/// Whether text looks like folded stacks (each line ends in ` COUNT`) rather
/// than `perf script` output, judged on its first line that is not blank or
/// a comment.
pub fn looks_folded(text: &[u8]) -> bool {
    text.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .find(|line| !line.is_empty() && line[0] != b'#')
        .is_some_and(|line| split_count(line).is_some())
}

/// Draws `input` (named `name` in messages) as an SVG on `svg`, calling
/// `warn` with what was left out (lines that are not stacks, samples of
/// another event). An input with no stack still gets flamegraph.pl's error
/// picture, and is then an error that says why.
pub fn draw(
    input: impl Read,
    name: &str,
    opts: &FlameOptions,
    fold: &FoldOptions,
    svg: impl Write,
    mut warn: impl FnMut(String),
) -> anyhow::Result<()> {
    use anyhow::Context;
    let stacks =
        read_stacks(input, opts.chart, fold).with_context(|| format!("cannot read {name}"))?;
    match &stacks.input {
        Input::Folded { skipped } if *skipped > 0 => warn(format!(
            "{name}: ignored {skipped} lines with invalid format (not `stack COUNT`)"
        )),
        Input::Folded { .. } => {}
        Input::PerfScript(stats) => {
            stats.cut_note(name).into_iter().for_each(&mut warn);
            stats.skipped_notes().into_iter().for_each(&mut warn);
        }
    }
    let rendered = render(
        stacks.lines.iter().map(String::as_str),
        opts,
        stacks.factor,
        svg,
    );
    if stacks.lines.is_empty() {
        match stacks.input {
            Input::PerfScript(stats) if stats.fold.unrecognized_lines > 0 => anyhow::bail!(
                "no stacks in {name}: line {} is neither folded stacks nor `perf script` output",
                stats.fold.first_unrecognized_line.unwrap_or(1)
            ),
            _ => {
                anyhow::bail!("no stacks in {name}: expected folded stacks or `perf script` output")
            }
        }
    }
    rendered.context("cannot write the SVG")
}

/// Writes a recording's samples to `path` as a flame chart: one column
/// per sample, in time order, titled with the CPUs sampled.
pub fn write_chart(
    samples: &[crate::timeline::Sample],
    cpus: &[u32],
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let folded: Vec<String> = samples
        .iter()
        .map(|s| format!("{} 1", s.folded()))
        .collect();
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let opts = FlameOptions {
        chart: true,
        title: Some(format!(
            "netstall xray: CPU {}, time →",
            netstall_core::cpu::format_list(cpus)
        )),
        ..FlameOptions::default()
    };
    render(
        folded.iter().map(String::as_str),
        &opts,
        1.0,
        std::io::BufWriter::new(file),
    )
    .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The x position of the first `<rect>` of the frame titled `name`.
    fn x_of(svg: &str, name: &str) -> f64 {
        let at = svg
            .find(&format!("<title>{name} "))
            .unwrap_or_else(|| panic!("no frame {name} in the SVG"));
        let rect = &svg[at..];
        let x = rect.find("x=\"").expect("a rect with x") + 3;
        let end = rect[x..].find('"').expect("closing quote") + x;
        rect[x..end]
            .trim_end_matches('%')
            .parse()
            .expect("a number")
    }

    fn render_to_string(lines: &[&str], chart: bool) -> String {
        let mut svg = Vec::new();
        let opts = FlameOptions {
            chart,
            ..FlameOptions::default()
        };
        render(lines.iter().copied(), &opts, 1.0, &mut svg).expect("render");
        String::from_utf8(svg).expect("utf-8 SVG")
    }

    #[test]
    fn flame_chart_keeps_time_order_left_to_right() {
        // Alphabetically `zzz_first` sorts last; only a chart keeps it first.
        let lines = ["app;zzz_first 1", "app;mmm_second 1", "app;aaa_third 1"];
        let svg = render_to_string(&lines, true);
        let (first, second, third) = (
            x_of(&svg, "zzz_first"),
            x_of(&svg, "mmm_second"),
            x_of(&svg, "aaa_third"),
        );
        assert!(first < second && second < third, "{first} {second} {third}");
        assert!(svg.contains("Flame Chart"));
    }

    #[test]
    fn flame_chart_does_not_merge_stacks_that_come_back_later() {
        let lines = ["app;a 1", "app;b 1", "app;a 1"];
        let svg = render_to_string(&lines, true);
        assert_eq!(svg.matches("<title>a (").count(), 2, "{svg}");
        let graph = render_to_string(&["app;a 2", "app;b 1"], false);
        assert_eq!(graph.matches("<title>a (").count(), 1);
    }

    #[test]
    fn flame_graph_sorts_unsorted_input() {
        let svg = render_to_string(&["app;zzz 1", "app;aaa 1"], false);
        assert!(x_of(&svg, "aaa") < x_of(&svg, "zzz"));
    }

    /// Whether `svg` is well-formed XML with only characters XML allows.
    fn well_formed(svg: &str) -> Result<(), String> {
        if let Some(c) = svg
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(format!("control character {c:?} in the SVG"));
        }
        let mut reader = quick_xml::Reader::from_str(svg);
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Eof) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("at {}: {e}", reader.buffer_position())),
            }
        }
    }

    #[test]
    fn binary_input_still_makes_well_formed_svg() {
        let mut input = b"app;ma\x01in\xff;<&\">\x1b[31m 3\napp;main 2\n".to_vec();
        input.extend((0u8..=255).filter(|b| *b != b'\n'));
        input.extend_from_slice(b" 1\n");
        for chart in [false, true] {
            let stacks = read_stacks(&input[..], chart, &FoldOptions::default()).unwrap();
            assert_eq!(stacks.input, Input::Folded { skipped: 0 });
            let lines = stacks.lines;
            assert_eq!(lines.len(), 3, "{lines:?}");
            let mut svg = Vec::new();
            let opts = FlameOptions {
                chart,
                ..FlameOptions::default()
            };
            render(lines.iter().map(String::as_str), &opts, 1.0, &mut svg).unwrap();
            let svg = String::from_utf8(svg).unwrap();
            well_formed(&svg).unwrap_or_else(|e| panic!("chart={chart}: {e}\n{svg}"));
        }
    }

    #[test]
    fn folded_input_is_merged_as_it_streams() {
        let input = b"# c\n\na;b 1\na;b 2\nnot a stack\na;c 1\na;b 1\n";
        let fold = FoldOptions::default();
        let graph = read_stacks(&input[..], false, &fold).unwrap();
        assert_eq!(graph.lines, ["a;b 4", "a;c 1"]);
        assert_eq!(graph.input, Input::Folded { skipped: 1 });
        let chart = read_stacks(&input[..], true, &fold).unwrap();
        assert_eq!(chart.lines, ["a;b 3", "a;c 1", "a;b 1"]);
        let perf = b"app 12 [000] 1.0: 1 cpu-clock: \n\tff main (/bin/app)\n\n";
        let stacks = read_stacks(&perf[..], false, &fold).unwrap();
        assert_eq!(stacks.lines, ["app;main 1"]);
        assert!(matches!(stacks.input, Input::PerfScript(s) if s.fold.samples == 1));
        let pid = FoldOptions {
            include_pid: true,
            ..FoldOptions::default()
        };
        let perf = b"app 12/13 [000] 1.0: 1 cpu-clock: \n\tff main (/bin/app)\n\n";
        let stacks = read_stacks(&perf[..], false, &pid).unwrap();
        assert_eq!(stacks.lines, ["app-12;main 1"]);
    }

    #[test]
    fn folded_and_perf_script_text_are_told_apart() {
        assert!(looks_folded(b"# comment\n\napp;main 12\n"));
        assert!(!looks_folded(
            b"app 12 [000] 1.0: 1001001 cpu-clock: \n\tff main (/bin/app)\n"
        ));
        assert!(!looks_folded(b""));
    }

    /// Draws `input` with the default options: the SVG, warnings, result.
    fn draw_text(input: &[u8], chart: bool) -> (String, Vec<String>, anyhow::Result<()>) {
        let mut svg = Vec::new();
        let mut warnings = Vec::new();
        let opts = FlameOptions {
            chart,
            ..FlameOptions::default()
        };
        let result = draw(
            input,
            "in.txt",
            &opts,
            &FoldOptions::default(),
            &mut svg,
            |w| warnings.push(w),
        );
        (String::from_utf8(svg).unwrap(), warnings, result)
    }

    #[test]
    fn input_is_drawn_as_folded_or_collapsed_first() {
        let (svg, warnings, result) = draw_text(b"a;b 3\n", false);
        result.unwrap();
        assert!(
            svg.contains("<title>b (3 samples, 100.00%)</title>"),
            "{svg}"
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let perf = b"tt 1 [000] 1.0: 1 cpu-clock:\n\tff f (m)\n\ntt 1 [000] 1.1: 1 cpu-clock:\n\tff f (m)\n\n";
        for chart in [false, true] {
            let (svg, _, result) = draw_text(perf, chart);
            result.unwrap();
            assert!(
                svg.contains("<title>f (2 samples, 100.00%)</title>"),
                "{svg}"
            );
        }
    }

    #[test]
    fn no_stacks_is_an_error_with_flamegraph_pl_s_error_picture() {
        let (svg, _, result) = draw_text(b"hello\n", false);
        let err = result.unwrap_err().to_string();
        assert!(err.starts_with("no stacks in in.txt: line 1"), "{err}");
        assert!(
            svg.contains("ERROR: No valid input provided to flamegraph"),
            "{svg}"
        );
        well_formed(&svg).unwrap();
        let (svg, _, result) = draw_text(b"", true);
        let err = result.unwrap_err().to_string();
        assert!(err.starts_with("no stacks in in.txt"), "{err}");
        assert!(svg.contains("ERROR: No valid input"), "{svg}");
    }

    #[test]
    fn lines_that_are_not_stacks_are_counted_in_a_warning() {
        let (_, warnings, result) = draw_text(b"a;b 3\nnot a stack\na;c x\n", false);
        result.unwrap();
        assert_eq!(
            warnings,
            ["in.txt: ignored 2 lines with invalid format (not `stack COUNT`)"]
        );
    }

    #[test]
    fn fractional_counts_keep_their_weight() {
        // The first line fractional, then whole and fractional ones.
        let stacks = read_stacks(
            &b"a;b 2.5\na;c 1\na;b 0.25\na;d 3.\n"[..],
            false,
            &FoldOptions::default(),
        )
        .unwrap();
        assert_eq!(stacks.lines, ["a;b 275", "a;c 100", "a;d 300"]);
        assert_eq!(stacks.factor, 0.01);
        let (svg, _, result) = draw_text(b"a;b 2.5\na;c 1\na;b 0.25\n", false);
        result.unwrap();
        // What flamegraph.pl prints for this input: a frame's count
        // rounded, its share taken of the rounded count (3.75 → 4: 106.67%).
        assert!(
            svg.contains("<title>a (4 samples, 106.67%)</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>b (3 samples, 80.00%)</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>c (1 samples, 26.67%)</title>"),
            "{svg}"
        );
        assert_eq!(split_count(b"a 1.5e3"), None);
        assert_eq!(split_count(b"a -1"), None);
        assert_eq!(split_count(b"a .5"), None);
        assert_eq!(split_count(b"a 0.1234567"), Some((&b"a"[..], 123_456, 6)));
    }

    /// `perf script` text: `comm` samples every ms from `start` (seconds),
    /// each with `period` and a two-frame stack.
    fn perf_samples(comm: &str, start: f64, count: usize, period: u64) -> String {
        (0..count)
            .map(|i| {
                let t = start + i as f64 * 0.001;
                format!(
                    "{comm} 10 [000] {t:.6}: {period} cpu-clock:\n\
                     \tffffffff81000001 leaf+0x1 ([kernel.kallsyms])\n\
                     \t55550000 main+0x2 (/usr/bin/{comm})\n\n"
                )
            })
            .collect()
    }

    #[test]
    fn a_chart_from_perf_script_is_on_a_time_axis_and_weighs_periods() {
        // 100 samples 1 ms apart, nothing for 25 ms, 50 more: the gap is a
        // frame as wide as the 24 samples that would have fit in it.
        let mut text = perf_samples("app", 100.0, 100, 1_000_000);
        text.push_str(&perf_samples("app", 100.0 + 0.099 + 0.025, 50, 1_000_000));
        let stacks = read_stacks(text.as_bytes(), true, &FoldOptions::default()).unwrap();
        assert_eq!(
            stacks.lines,
            [
                "app;main;leaf 100000000",
                "[no samples: 25.0 ms] 24000000",
                "app;main;leaf 50000000",
            ]
        );
        // A graph weighs the same samples the same way, without the gap.
        let graph = read_stacks(text.as_bytes(), false, &FoldOptions::default()).unwrap();
        assert_eq!(graph.lines, ["app;main;leaf 150000000"]);
        // Spacing within the usual (less than twice it) is not a gap.
        let mut text = perf_samples("app", 1.0, 70, 1);
        text.push_str(&perf_samples("app", 1.0 + 0.069 + 0.0019, 3, 1));
        let stacks = read_stacks(text.as_bytes(), true, &FoldOptions::default()).unwrap();
        assert_eq!(stacks.lines, ["app;main;leaf 73"]);
        // Short input (fewer samples than it learns from) still gets gaps.
        let mut text = perf_samples("app", 5.0, 3, 1);
        text.push_str(&perf_samples("app", 5.010, 2, 1));
        let stacks = read_stacks(text.as_bytes(), true, &FoldOptions::default()).unwrap();
        assert_eq!(
            stacks.lines,
            [
                "app;main;leaf 3",
                "[no samples: 8.0 ms] 7",
                "app;main;leaf 2"
            ]
        );
        let (svg, _, result) = draw_text(text.as_bytes(), true);
        result.unwrap();
        assert!(svg.contains("<title>[no samples: 8.0 ms] ("), "{svg}");
    }

    #[test]
    fn a_chart_without_times_has_no_gaps() {
        let text = "app 10 cpu-clock:\n\tffff leaf+0x1 ([kernel.kallsyms])\n\n".repeat(5);
        let stacks = read_stacks(text.as_bytes(), true, &FoldOptions::default()).unwrap();
        assert_eq!(stacks.lines, ["app;leaf 5"]);
    }
}
