//! `netstall collapse` end to end: the real binary on recorded `perf script` files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../netstall-xray/tests/data/collapse")
        .join(name)
}

fn netstall(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_netstall"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run netstall");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("netstall output")
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn aggregated_output_matches_stackcollapse_perf_pl_from_a_file_and_from_stdin() {
    let input = fixture("ksoftirqd_spin.perf.txt");
    let expected = std::fs::read(fixture("ksoftirqd_spin.folded")).expect("expected output");
    let from_file = netstall(&["collapse", arg(&input)], b"");
    assert!(from_file.status.success(), "{from_file:?}");
    assert!(from_file.stdout == expected, "file output differs");
    let from_stdin = netstall(
        &["collapse", "-j", "1"],
        &std::fs::read(&input).expect("fixture"),
    );
    assert!(from_stdin.stdout == expected, "stdin output differs");
    let tid = netstall(&["collapse", "--tid", arg(&input)], b"");
    let expected_tid = std::fs::read(fixture("ksoftirqd_spin.tid.folded")).expect("expected");
    assert!(tid.stdout == expected_tid, "--tid output differs");
}

/// `--before ksoftir --samples 100` is `grep ksoftir -B 100` on the ordered
/// output, without grep's `--` separators.
#[test]
fn before_equals_grep_b_on_the_ordered_output() {
    let input = fixture("ksoftirqd_spin.perf.txt");
    let ordered = netstall(&["collapse", "--ordered", arg(&input)], b"");
    assert!(ordered.status.success());
    let mut grep = Command::new("grep")
        .args(["ksoftir", "-B", "100"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run grep");
    grep.stdin
        .take()
        .expect("piped stdin")
        .write_all(&ordered.stdout)
        .expect("feed grep");
    let grep = grep.wait_with_output().expect("grep output");
    let expected: String = String::from_utf8_lossy(&grep.stdout)
        .lines()
        .filter(|l| *l != "--")
        .map(|l| format!("{l}\n"))
        .collect();
    let before = netstall(
        &[
            "collapse",
            "--before",
            "ksoftir",
            "--samples",
            "100",
            arg(&input),
        ],
        b"",
    );
    assert!(before.status.success());
    let ours = String::from_utf8_lossy(&before.stdout);
    assert_eq!(ours, expected);
    let matches = ours.lines().filter(|l| l.contains("ksoftir")).count();
    assert_eq!(matches, 4, "the recording has four ksoftirqd samples");
    assert!(
        ours.lines().count() > 100,
        "windows hold the samples before them"
    );
}

#[test]
fn ordered_output_has_one_line_per_sample_with_count_one() {
    let input = fixture("user_fp.perf.txt");
    let ordered = netstall(&["collapse", "--ordered", arg(&input)], b"");
    let text = String::from_utf8_lossy(&ordered.stdout);
    assert_eq!(text.lines().count(), 1000, "user_fp has 1000 samples");
    assert!(text.lines().all(|l| l.ends_with(" 1")));
}

#[test]
fn truncated_input_drops_the_last_sample_and_says_so() {
    let input = std::fs::read(fixture("user_fp.perf.txt")).expect("fixture");
    let truncated = &input[..input.len() - 1];
    let out = netstall(&["collapse", "--ordered"], truncated);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 999);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no blank line after it"), "{stderr}");
    let kept = netstall(&["collapse", "--ordered", "--flush-eof"], truncated);
    assert_eq!(String::from_utf8_lossy(&kept.stdout).lines().count(), 1000);
}

#[test]
fn bad_input_is_a_one_line_error_with_exit_code_2() {
    let missing = netstall(&["collapse", "/nonexistent/perf.txt"], b"");
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/perf.txt"), "{stderr}");

    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let out = netstall(&["collapse"], &garbage);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 1"), "{stderr}");

    let bad_pattern = netstall(&["collapse", "--before", "("], b"");
    assert_eq!(bad_pattern.status.code(), Some(2));
}

#[test]
fn json_mode_prints_stacks_and_a_summary() {
    let input = fixture("multi_event.perf.txt");
    let out = netstall(&["--json", "collapse", arg(&input)], b"");
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let summary = lines.last().expect("a summary");
    assert_eq!(summary["type"], "collapse");
    assert_eq!(summary["samples"], 11);
    assert_eq!(summary["kept_event"], "page-faults");
    assert_eq!(summary["filtered_samples"], 594);
    let total: u64 = lines[..lines.len() - 1]
        .iter()
        .map(|l| {
            assert_eq!(l["type"], "stack");
            l["count"].as_u64().expect("a count")
        })
        .sum();
    let expected: u64 = std::fs::read_to_string(fixture("multi_event.folded"))
        .expect("expected output")
        .lines()
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .expect("a count")
        })
        .sum();
    assert_eq!(total, expected);
}

/// Peak resident memory (kB) of `pid` so far.
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// `perf script` of a recording without -g has no blank line at all: an
/// endless stream of it (or of `/dev/zero`) must not grow collapse.
#[test]
fn an_endless_stream_without_blank_lines_stays_bounded() {
    for (ordered, line) in [
        (
            false,
            &b"app 12 [000] 1.000: 1001 cpu-clock:  ffffffff main (/bin/app)\n"[..],
        ),
        (true, &[0u8; 4096][..]),
    ] {
        let mut args = vec!["collapse"];
        if ordered {
            args.push("--ordered");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_netstall"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run netstall");
        let pid = child.id();
        let mut stdin = child.stdin.take().expect("piped stdin");
        let block = line.repeat((1 << 20) / line.len());
        let started = std::time::Instant::now();
        let mut fed = 0usize;
        while started.elapsed() < std::time::Duration::from_secs(4) {
            stdin.write_all(&block).expect("collapse reads on");
            fed += block.len();
        }
        let peak = peak_rss_kb(pid);
        drop(stdin); // end of input: it finishes and reports
        let out = child.wait_with_output().expect("netstall output");
        assert!(fed > 16 << 20, "only {} MiB fed in 4 s", fed >> 20);
        assert!(
            peak < 100 * 1024,
            "peak RSS {peak} kB after {} MiB",
            fed >> 20
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("without -g"), "{stderr}");
    }
}

#[test]
fn too_many_threads_is_a_one_line_usage_error() {
    let out = netstall(&["collapse", "-j", "65535"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("65535"), "{stderr}");
}
