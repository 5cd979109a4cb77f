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
}
