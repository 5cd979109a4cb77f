//! `netstall flame` end to end: SVG flame graphs and charts from recorded data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../netstall-xray/tests/data/collapse")
        .join(name)
}

fn netstall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netstall"))
        .args(args)
        .output()
        .expect("run netstall")
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn flame_graph_from_folded_stacks() {
    let out = netstall(&["flame", arg(&fixture("kernel_heavy.folded"))]);
    assert!(out.status.success(), "{out:?}");
    let svg = String::from_utf8_lossy(&out.stdout);
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("Flame Graph"));
    assert!(svg.contains("<title>dd ("), "the dd process is a frame");
}

#[test]
fn flame_chart_from_perf_script_text_keeps_every_run_of_samples() {
    let svg_path = std::env::temp_dir().join(format!("netstall-chart-{}.svg", std::process::id()));
    let out = netstall(&[
        "flame",
        "--chart",
        "-o",
        arg(&svg_path),
        arg(&fixture("ksoftirqd_spin.perf.txt")),
    ]);
    assert!(out.status.success(), "{out:?}");
    let svg = std::fs::read_to_string(&svg_path).expect("the SVG was written");
    std::fs::remove_file(&svg_path).expect("remove the SVG");
    assert!(svg.contains("Flame Chart"));
    // A chart does not merge samples that come back later: each separate run
    // of ksoftirqd samples is its own frame. The recording has four samples,
    // on two CPUs, interleaved with other tasks.
    let ordered = netstall(&[
        "collapse",
        "--ordered",
        arg(&fixture("ksoftirqd_spin.perf.txt")),
    ]);
    let text = String::from_utf8_lossy(&ordered.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let comm = |line: &str| line.split(';').next().unwrap_or_default().to_string();
    let runs = (0..lines.len())
        .filter(|&i| {
            lines[i].starts_with("ksoftirqd/") && (i == 0 || comm(lines[i - 1]) != comm(lines[i]))
        })
        .count();
    assert!(runs > 1, "the recording has separate ksoftirqd runs");
    let frames = svg.matches("<title>ksoftirqd/").count();
    assert_eq!(frames, runs, "one chart frame per run of ksoftirqd samples");
    let graph = netstall(&["flame", arg(&fixture("ksoftirqd_spin.perf.txt"))]);
    let graph = String::from_utf8_lossy(&graph.stdout);
    assert!(
        graph.matches("<title>ksoftirqd/").count() < frames,
        "a graph merges them"
    );
}

#[test]
fn bad_input_is_an_error_with_exit_code_2() {
    let out = netstall(&["flame", "/nonexistent.folded"]);
    assert_eq!(out.status.code(), Some(2));
    let empty = std::env::temp_dir().join(format!("netstall-empty-{}", std::process::id()));
    std::fs::write(&empty, "not a stack\n").expect("write");
    let out = netstall(&["flame", arg(&empty)]);
    std::fs::remove_file(&empty).expect("remove");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}

/// `netstall flame x | head`: a reader that stops early is not an error.
#[test]
fn a_closed_pipe_is_not_an_error() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_netstall"))
        .args(["flame", "--chart", arg(&fixture("ksoftirqd_spin.perf.txt"))])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run netstall");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut first = [0u8; 100];
    stdout.read_exact(&mut first).expect("the SVG starts");
    drop(stdout); // as `head -c 100` does
    let out = child.wait_with_output().expect("netstall output");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn flamegraph_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/flamegraph")
        .join(name)
}

/// An SVG's frames, sorted: each one's tooltip (`name (N samples, P%)`)
/// and row (its rectangle's y, from the topmost frame's: the two programs
/// pad an inverted graph's top differently).
fn frames(svg: &str) -> Vec<(String, i64)> {
    let mut frames = Vec::new();
    let mut rest = svg;
    while let Some(at) = rest.find("<title>") {
        rest = &rest[at + "<title>".len()..];
        let end = rest.find("</title>").expect("a closed title");
        let title = rest[..end].to_string();
        rest = &rest[end..];
        let y = rest.find("y=\"").map(|at| {
            let y = &rest[at + 3..];
            y[..y.find('"').expect("a closed y")].to_string()
        });
        let y: f64 = y
            .expect("a rect after the title")
            .parse()
            .expect("a number");
        frames.push((title, y.round() as i64));
    }
    let top = frames.iter().map(|(_, y)| *y).min().unwrap_or(0);
    let mut frames: Vec<(String, i64)> = frames.into_iter().map(|(t, y)| (t, y - top)).collect();
    frames.sort();
    frames
}

/// flamegraph.pl's SVG for `input` with `options`.
fn flamegraph_pl(input: &Path, options: &[&str]) -> String {
    let out = Command::new("perl")
        .arg(flamegraph_data("flamegraph.pl"))
        .args(options)
        .arg(input)
        .output()
        .expect("perl (scripts/setup.sh)");
    assert!(out.status.success(), "flamegraph.pl {options:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 SVG")
}

/// FlameGraph's own test inputs, through flamegraph.pl and through
/// `netstall flame` with the options both have: the same frames (name,
/// count, share, row). `perf script` text goes through flame's collapse
/// options and is compared with the Perl pipeline's collapsed file.
#[test]
fn flame_draws_the_frames_flamegraph_pl_draws() {
    let folded = [
        "perf-dd-stacks-01-collapsed-pid.txt",
        "perf-js-stacks-01-collapsed-all.txt",
        "perf-java-stacks-02-collapsed-tid.txt",
        "perf-numa-stacks-01-collapsed-kernel.txt",
        "perf-java-faults-01-collapsed-jit.txt",
        "perf-cycles-instructions-01-collapsed-addrs.txt",
        "perf-mirageos-stacks-01-collapsed-all.txt",
    ];
    let option_sets: [&[&str]; 8] = [
        &[],
        &["--inverted"],
        &["--reverse"],
        &["--minwidth", "3"],
        &["--minwidth", "2%"],
        &["--countname", "bytes", "--factor", "2"],
        &["--width", "800", "--height", "20", "--fontsize", "10"],
        &[
            "--hash",
            "--colors",
            "java",
            "--title",
            "t",
            "--subtitle",
            "s",
        ],
    ];
    let mut compared = 0;
    for name in folded {
        let input = flamegraph_data(name);
        for options in option_sets {
            let perl = frames(&flamegraph_pl(&input, options));
            let out = netstall(&[&["flame"], options, &[arg(&input)]].concat());
            assert!(out.status.success(), "{name} {options:?}: {out:?}");
            let ours = frames(&String::from_utf8_lossy(&out.stdout));
            assert!(perl.len() > 1, "{name} {options:?}: {perl:?}");
            assert_eq!(ours, perl, "{name} {options:?}");
            compared += perl.len();
        }
    }
    // perf script text, collapsed by flame itself with collapse's options.
    for (perf, option, collapsed) in [
        (
            "perf-dd-stacks-01.txt",
            "--pid",
            "perf-dd-stacks-01-collapsed-pid.txt",
        ),
        (
            "perf-js-stacks-01.txt",
            "--all",
            "perf-js-stacks-01-collapsed-all.txt",
        ),
    ] {
        let perl = frames(&flamegraph_pl(&flamegraph_data(collapsed), &[]));
        let out = netstall(&["flame", option, arg(&flamegraph_data(perf))]);
        assert!(out.status.success(), "{perf}: {out:?}");
        assert_eq!(
            frames(&String::from_utf8_lossy(&out.stdout)),
            perl,
            "{perf} {option}"
        );
    }
    assert!(compared > 500, "{compared} frames compared");
}

/// Fractional counts (the first line's too) weigh what they say, as in
/// flamegraph.pl; an input without stacks still gets its error picture.
#[test]
fn fractional_counts_and_empty_input_as_flamegraph_pl() {
    let dir = std::env::temp_dir().join(format!("netstall-flame-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fractional = dir.join("fractional.folded");
    std::fs::write(
        &fractional,
        "main;a 2.5\nmain;b 1\nmain;a 0.25\nmain;c 0.125\nbad line\n",
    )
    .expect("write");
    let out = netstall(&["flame", arg(&fractional)]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "{}: ignored 1 lines with invalid format (not `stack COUNT`)",
            fractional.display()
        )
    );
    assert_eq!(
        frames(&String::from_utf8_lossy(&out.stdout)),
        frames(&flamegraph_pl(&fractional, &[]))
    );
    let empty = dir.join("empty.folded");
    std::fs::write(&empty, "").expect("write");
    let out = netstall(&["flame", arg(&empty)]);
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let svg = String::from_utf8_lossy(&out.stdout);
    assert!(
        svg.contains("ERROR: No valid input provided to flamegraph"),
        "{svg}"
    );
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
}

/// stackcollapse-perf.pl's options that need addr2line: one line each,
/// naming what to use instead.
#[test]
fn perl_options_without_an_equivalent_are_refused_in_one_line() {
    let input = flamegraph_data("perf-dd-stacks-01.txt");
    for (command, option, instead) in [
        ("collapse", "--inline", "perf script --inline"),
        ("collapse", "--context", "perf script -F+srcline"),
        ("collapse", "--srcline", "perf script -F+srcline"),
        ("flame", "--inline", "perf script --inline"),
    ] {
        let out = netstall(&[command, option, arg(&input)]);
        assert_eq!(out.status.code(), Some(2), "{command} {option}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(option) && stderr.contains(instead),
            "{stderr}"
        );
    }
}
