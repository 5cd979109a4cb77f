//! Folded stacks to SVG through the inferno crate: a flame graph (stacks
//! merged and sorted, width = samples) or a flame chart (time on the x axis,
//! from ordered input: one line per sample, in time order).

use std::io::{self, Write};

use inferno::flamegraph::{self, Options};

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

/// The folded lines to draw from `input` (named `name` in errors): folded
/// stacks as they are; `perf script` text collapsed first, in time order
/// for a chart, aggregated for a graph.
pub fn folded_input(input: &[u8], chart: bool, name: &str) -> anyhow::Result<String> {
    let folded = if looks_folded(input) {
        String::from_utf8_lossy(input).into_owned()
    } else {
        let mode = if chart {
            crate::collapse::Mode::Ordered
        } else {
            crate::collapse::Mode::Aggregated
        };
        let mut folded = Vec::new();
        let opts = crate::collapse::CollapseOptions::default();
        let stats = crate::collapse::run(input, &opts, mode, |stack, count| {
            folded.extend_from_slice(stack);
            writeln!(folded, " {count}")
        })?;
        if stats.fold.samples == 0 {
            anyhow::bail!(
                "no stacks in {name}: line {} is neither folded stacks nor `perf script` output",
                stats.fold.first_unrecognized_line.unwrap_or(1)
            );
        }
        String::from_utf8_lossy(&folded).into_owned()
    };
    if folded.trim().is_empty() {
        anyhow::bail!("no stacks in {name}: expected folded stacks or `perf script` output");
    }
    Ok(folded)
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
        assert_eq!(folded_input(b"a;b 3\n", false, "x").unwrap(), "a;b 3\n");
        let perf = b"tt 1 [000] 1.0: 1 cpu-clock:\n\tff f (m)\n\ntt 1 [000] 1.1: 1 cpu-clock:\n\tff f (m)\n\n";
        assert_eq!(folded_input(perf, false, "x").unwrap(), "tt;f 2\n");
        assert_eq!(folded_input(perf, true, "x").unwrap(), "tt;f 1\ntt;f 1\n");
        let err = folded_input(b"hello\n", false, "in.txt").unwrap_err();
        assert!(
            err.to_string().starts_with("no stacks in in.txt: line 1"),
            "{err}"
        );
        let err = folded_input(b"", true, "empty").unwrap_err();
        assert!(err.to_string().starts_with("no stacks in empty"), "{err}");
    }
}
