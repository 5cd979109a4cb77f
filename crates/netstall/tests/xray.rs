//! `netstall xray` live, against the lab's injectors (root; machine lock held).
//! CPU 0 is the stalled and sampled CPU; nothing here probes from it.

mod common;

use common::*;

use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use netstall_testkit::{privileged, unique_prefix, MachineLock};
use serde_json::Value;

/// `netstall --json xray --cpu 0 ...` in the background.
fn xray(duration: &str, before: &str, extra: &[&str]) -> Child {
    Command::new(NETSTALL)
        .args(["--json", "xray", "--cpu", "0", "-w", duration])
        .args(["--before", before, "--samples", "100"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xray")
}

fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// With `lab spin --ms 50` on CPU 0, xray reports a ~50 ms stall per
/// injected stall, where the injector says it was, and prints the 100
/// samples before it. The spin keeps IRQs on, so samples keep landing: the
/// stall is a 50 ms run of samples inside softirq processing.
#[test]
fn spin_stalls_are_reported_with_the_samples_before_them() {
    if !privileged("spin_stalls_are_reported_with_the_samples_before_them") {
        return;
    }
    let _lock = MachineLock::acquire();
    let svg = std::env::temp_dir().join(format!("netstall-xray-{}.svg", unique_prefix()));
    let sampling = xray("4s", "stall", &["--svg", svg.to_str().expect("utf-8 path")]);
    thread::sleep(Duration::from_millis(1000));
    let spin = netstall(&[
        "--json", "lab", "spin", "--cpu", "0", "--ms", "50", "--every", "1s", "-w", "2500ms",
    ]);
    let injected = json_lines(&spin);
    let lines = json_lines(&sampling.wait_with_output().expect("xray output"));
    assert!(injected.len() >= 2, "{injected:?}");

    let stalls = of_type(&lines, "sample-gap");
    for spin in &injected {
        let start = spin["start_ns"].as_u64().expect("start_ns");
        let stall = stalls
            .iter()
            .find(|s| s["start_ns"].as_u64().expect("start_ns").abs_diff(start) < 5_000_000)
            .unwrap_or_else(|| panic!("no stall near the one injected at {start}: {stalls:?}"));
        assert_eq!(stall["kind"], "softirq");
        assert_eq!(stall["cpu"], 0);
        let ms = stall["duration_ms"].as_f64().expect("duration_ms");
        // Wide margins: sample spacing (1 ms) and a loaded CI host.
        assert!(
            (40.0..=65.0).contains(&ms),
            "a 50 ms stall measured as {ms} ms"
        );
        let window = of_type(&lines, "window")
            .into_iter()
            .find(|w| w["at_ns"] == stall["start_ns"])
            .expect("a window before the stall");
        let samples = window["samples"].as_array().expect("samples");
        assert_eq!(samples.len(), 101, "100 before it and its first sample");
        assert!(samples
            .windows(2)
            .all(|w| w[0]["time_ns"].as_u64() <= w[1]["time_ns"].as_u64()));
        assert!(samples
            .iter()
            .all(|s| s["cpu"] == 0 && s["comm"].is_string()));
    }
    let summary = of_type(&lines, "xray")[0];
    // 4,000 expected at 999 Hz for 4 s; a loaded host loses some.
    assert!(
        summary["samples"].as_u64().expect("samples") > 2000,
        "{summary}"
    );

    // The flame chart of the recording shows the stalls as softirq frames.
    let chart = std::fs::read_to_string(&svg).expect("the flame chart was written");
    std::fs::remove_file(&svg).expect("remove the chart");
    assert!(chart.trim_end().ends_with("</svg>"));
    assert!(
        chart.contains("<title>handle_softirqs ("),
        "softirq frames in the chart"
    );
}

/// Releases the test's dying cgroups even when an assertion fails.
struct ZombieCleanup(String);

impl Drop for ZombieCleanup {
    fn drop(&mut self) {
        let _ = netstall(&["lab", "clean", "--prefix", &self.0]);
    }
}

/// The story: a cadvisor-like poller reads memory.stat on CPU 0 while 12k
/// dying memcgs have pending stats; each read flushes them with IRQs off.
/// xray sees no samples for the flush, and the sample that ends the gap is
/// the poller in read() → memory_stat_show → css_rstat_flush.
#[test]
fn zombie_poller_leaves_irqs_off_gaps_ended_in_memory_stat_show() {
    if !privileged("zombie_poller_leaves_irqs_off_gaps_ended_in_memory_stat_show") {
        return;
    }
    let _lock = MachineLock::acquire();
    let prefix = unique_prefix();
    let _cleanup = ZombieCleanup(prefix.clone());
    let made = netstall(&["lab", "zombies", "--prefix", &prefix, "--count", "12000"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let comm = format!("xr{}", &prefix[prefix.len() - 6..]);
    let sampling = xray("5s", "stall", &[]);
    thread::sleep(Duration::from_millis(500));
    let poller = netstall(&[
        "lab",
        "poller",
        "--prefix",
        &prefix,
        "--cpu",
        "0",
        "--comm",
        &comm,
        "--interval",
        "500ms",
        "-w",
        "4s",
    ]);
    assert!(
        poller.status.success(),
        "{}",
        String::from_utf8_lossy(&poller.stderr)
    );
    let lines = json_lines(&sampling.wait_with_output().expect("xray output"));

    let gaps: Vec<&Value> = of_type(&lines, "sample-gap")
        .into_iter()
        .filter(|s| s["kind"] == "irqs-off" && s["comm"] == comm.as_str())
        .collect();
    // The poller's flushes end its gaps in memory.stat's read. On a busy VM
    // the poller may also end an unrelated tick gap (the hypervisor held the
    // vCPU; seen in CI: 11 ms, resumed in a page fault of its own): most of
    // its gaps, and at least 3, must be the flush.
    let in_flush = |gap: &&Value| {
        let resumed_in = |frame: &str| {
            gap["resumed_in"]
                .as_array()
                .is_some_and(|s| s.iter().any(|f| f == frame))
        };
        resumed_in("ksys_read") && (resumed_in("memory_stat_show") || resumed_in("css_rstat_flush"))
    };
    let flushes: Vec<&Value> = gaps.iter().copied().filter(in_flush).collect();
    assert!(
        flushes.len() >= 3 && flushes.len() * 2 > gaps.len(),
        "expected IRQs-off gaps ended by {comm} in memory.stat's flush, got {:?}",
        of_type(&lines, "sample-gap")
    );
    for gap in &flushes {
        let ms = gap["duration_ms"].as_f64().expect("duration_ms");
        assert!(ms >= 10.0, "a gap of {ms} ms");
        // The window before the stall ends with the same gap-ending sample.
        let window = of_type(&lines, "window")
            .into_iter()
            .find(|w| w["at_ns"] == gap["start_ns"])
            .expect("a window before the gap");
        let last = window["samples"]
            .as_array()
            .and_then(|s| s.last())
            .expect("samples");
        assert_eq!(last["time_ns"], gap["end_ns"], "{last}");
        assert_eq!(last["tid"], gap["tid"], "{last}");
    }
}

#[test]
fn bad_arguments_are_one_line_errors_with_exit_code_2() {
    let out = netstall(&["xray", "--cpu", "4096", "-w", "1s"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("4096"), "{stderr}");
    let out = netstall(&["xray", "--cpu", "0", "-w", "0s"]);
    assert_eq!(out.status.code(), Some(2));
}
