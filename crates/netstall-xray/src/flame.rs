//! Folded stacks to SVG through the inferno crate: a flame graph (stacks
//! merged and sorted, width = samples) or a flame chart (time on the x axis,
//! from ordered input: one line per sample, in time order).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};

use inferno::flamegraph::{self, Options};

use crate::collapse::{self, CollapseOptions, CollapseStats};

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

/// Reads folded stacks or `perf script` text as a stream, into the lines
/// to draw (`stack COUNT`): merged per stack for a graph, adjacent repeats
/// merged for a chart. Memory grows with the distinct stacks (a graph) or
/// the changes of stack (a chart), never with the input's size; bytes
/// that XML cannot hold (invalid UTF-8, control characters) become U+FFFD.
pub fn read_stacks(reader: impl Read, chart: bool) -> io::Result<(Vec<String>, Input)> {
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
                Some((stack, count)) => lines.add(stack, count),
                None => skipped += 1,
            }
        }
        return Ok((lines.finish(), Input::Folded { skipped }));
    }
    let opts = CollapseOptions::default();
    let stats = if chart {
        collapse::ordered(input, &opts, |stack| {
            lines.add(stack, 1);
            Ok(())
        })?
    } else {
        let collapsed = collapse::aggregate(input, &opts)?;
        for (stack, count) in &collapsed.stacks {
            lines.add(stack, *count);
        }
        collapsed.stats
    };
    Ok((lines.finish(), Input::PerfScript(stats)))
}

/// `stack COUNT` split in two; `None` when it does not end in a count.
fn split_count(line: &[u8]) -> Option<(&[u8], u64)> {
    let space = memchr::memrchr(b' ', line)?;
    let count = std::str::from_utf8(&line[space + 1..]).ok()?.parse().ok()?;
    let stack = line[..space].trim_ascii_end();
    (!stack.is_empty()).then_some((stack, count))
}

/// Text XML can hold: invalid UTF-8 and control characters become U+FFFD.
fn xml_safe(stack: &[u8]) -> String {
    String::from_utf8_lossy(stack)
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// The lines to draw, merged as they come.
struct Lines {
    chart: bool,
    /// A chart's runs, in order.
    runs: Vec<(String, u64)>,
    /// A graph's totals.
    totals: HashMap<String, u64>,
}

impl Lines {
    fn new(chart: bool) -> Self {
        Self {
            chart,
            runs: Vec::new(),
            totals: HashMap::new(),
        }
    }

    fn add(&mut self, stack: &[u8], count: u64) {
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

    fn finish(self) -> Vec<String> {
        let pairs: Vec<(String, u64)> = if self.chart {
            self.runs
        } else {
            let mut pairs: Vec<_> = self.totals.into_iter().collect();
            pairs.sort_unstable();
            pairs
        };
        pairs
            .into_iter()
            .map(|(stack, count)| format!("{stack} {count}"))
            .collect()
    }
}

/// What to draw.
#[derive(Debug, Clone, Default)]
pub struct FlameOptions {
    /// A flame chart: samples stay in input order, left to right.
    pub chart: bool,
    /// The title; a default that says which kind of picture it is otherwise.
    pub title: Option<String>,
}

/// Renders folded lines (`a;b;c COUNT`) as an SVG.
pub fn render<'a>(
    folded: impl IntoIterator<Item = &'a str>,
    opts: &FlameOptions,
    svg: impl Write,
) -> io::Result<()> {
    let mut options = Options::default();
    options.title = opts.title.clone().unwrap_or_else(|| {
        if opts.chart {
            "Flame Chart (time →)"
        } else {
            "Flame Graph"
        }
        .to_string()
    });
    options.count_name = "samples".to_string();
    let mut lines: Vec<&str> = folded.into_iter().collect();
    if opts.chart {
        // inferno's flame-chart mode lays lines out last-first (it expects
        // newest-first input); give it that so time runs left to right.
        lines.reverse();
        options.flame_chart = true;
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
        .is_some_and(|line| {
            let digits = line.iter().rev().take_while(|b| b.is_ascii_digit()).count();
            digits > 0 && line.len() > digits && line[line.len() - digits - 1] == b' '
        })
}

/// The lines to draw from `input` (named `name` in errors), by
/// [`read_stacks`]: an input with no stack is an error that says why.
pub fn stacks_to_draw(input: impl Read, chart: bool, name: &str) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let (lines, kind) = read_stacks(input, chart).with_context(|| format!("cannot read {name}"))?;
    if lines.is_empty() {
        match kind {
            Input::PerfScript(stats) if stats.fold.unrecognized_lines > 0 => anyhow::bail!(
                "no stacks in {name}: line {} is neither folded stacks nor `perf script` output",
                stats.fold.first_unrecognized_line.unwrap_or(1)
            ),
            _ => {
                anyhow::bail!("no stacks in {name}: expected folded stacks or `perf script` output")
            }
        }
    }
    Ok(lines)
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
    };
    render(
        folded.iter().map(String::as_str),
        &opts,
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
        let opts = FlameOptions { chart, title: None };
        render(lines.iter().copied(), &opts, &mut svg).expect("render");
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
            let (lines, kind) = read_stacks(&input[..], chart).unwrap();
            assert_eq!(kind, Input::Folded { skipped: 0 });
            assert_eq!(lines.len(), 3, "{lines:?}");
            let mut svg = Vec::new();
            let opts = FlameOptions { chart, title: None };
            render(lines.iter().map(String::as_str), &opts, &mut svg).unwrap();
            let svg = String::from_utf8(svg).unwrap();
            well_formed(&svg).unwrap_or_else(|e| panic!("chart={chart}: {e}\n{svg}"));
        }
    }

    #[test]
    fn folded_input_is_merged_as_it_streams() {
        let input = b"# c\n\na;b 1\na;b 2\nnot a stack\na;c 1\na;b 1\n";
        let (graph, kind) = read_stacks(&input[..], false).unwrap();
        assert_eq!(graph, ["a;b 4", "a;c 1"]);
        assert_eq!(kind, Input::Folded { skipped: 1 });
        let (chart, _) = read_stacks(&input[..], true).unwrap();
        assert_eq!(chart, ["a;b 3", "a;c 1", "a;b 1"]);
        let perf = b"app 12 [000] 1.0: 1 cpu-clock: \n\tff main (/bin/app)\n\n";
        let (lines, kind) = read_stacks(&perf[..], false).unwrap();
        assert_eq!(lines, ["app;main 1"]);
        assert!(matches!(kind, Input::PerfScript(s) if s.fold.samples == 1));
    }

    #[test]
    fn folded_and_perf_script_text_are_told_apart() {
        assert!(looks_folded(b"# comment\n\napp;main 12\n"));
        assert!(!looks_folded(
            b"app 12 [000] 1.0: 1001001 cpu-clock: \n\tff main (/bin/app)\n"
        ));
        assert!(!looks_folded(b""));
    }

    #[test]
    fn input_is_drawn_as_folded_or_collapsed_first() {
        assert_eq!(
            stacks_to_draw(&b"a;b 3\n"[..], false, "x").unwrap(),
            ["a;b 3"]
        );
        let perf = b"tt 1 [000] 1.0: 1 cpu-clock:\n\tff f (m)\n\ntt 1 [000] 1.1: 1 cpu-clock:\n\tff f (m)\n\n";
        assert_eq!(stacks_to_draw(&perf[..], false, "x").unwrap(), ["tt;f 2"]);
        assert_eq!(stacks_to_draw(&perf[..], true, "x").unwrap(), ["tt;f 2"]);
        let err = stacks_to_draw(&b"hello\n"[..], false, "in.txt").unwrap_err();
        assert!(
            err.to_string().starts_with("no stacks in in.txt: line 1"),
            "{err}"
        );
        let err = stacks_to_draw(&b""[..], true, "empty").unwrap_err();
        assert!(err.to_string().starts_with("no stacks in empty"), "{err}");
    }
}
