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
