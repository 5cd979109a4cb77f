//! The agent's flight recorder and the stats readers' ledger, for real: the
//! story's poller reading memory.stat over thousands of dying memcgs under
//! an agent with `--state-dir`; the ledger names the poller in /metrics,
//! `netstall report --from` names the story's cause with the poller as its
//! culprit, the evidence survives a restart, and the recorder stays within
//! its limit while stalls keep coming.

mod common;

use common::*;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netstall_testkit::{privileged, unique_prefix, MachineLock};
use serde_json::Value;

/// A process this test started, stopped (SIGTERM, then SIGKILL) by PID.
struct Running(Child);

impl Running {
    fn start(command: &mut Command) -> Running {
        Running(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {command:?}: {e}")),
        )
    }

    fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.end();
    }
}

/// Releases the test's dying cgroups however it ends.
struct Zombies(String);

impl Drop for Zombies {
    fn drop(&mut self) {
        let _ = netstall(&["lab", "clean", "--prefix", &self.0]);
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn agent(addr: SocketAddr, dir: &Path, max_bytes: &str, threshold: &str) -> Running {
    let agent = Running::start(Command::new(NETSTALL).args([
        "agent",
        "--listen",
        &addr.to_string(),
        "--node-name",
        "rec1",
        "--state-dir",
        dir.to_str().unwrap(),
        "--state-max-bytes",
        max_bytes,
        "--stall-threshold",
        threshold,
    ]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while netstall_agent::http::get(addr, "/healthz", Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < deadline, "agent at {addr} never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    agent
}

fn poller(prefix: &str, interval: &str, seconds: u32) -> Running {
    Running::start(Command::new(NETSTALL).args([
        "lab",
        "poller",
        "--prefix",
        prefix,
        "--cpu",
        "0",
        "--comm",
        "zpoller",
        "--interval",
        interval,
        "-w",
        &format!("{seconds}s"),
    ]))
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// `netstall report --from FROM --json`: its verdict, and its stderr.
fn report(from: &str) -> (Value, String, Option<i32>) {
    let out = netstall(&["report", "--from", from, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = json_lines(&out);
    let verdict = of_type(&lines, "verdict")
        .first()
        .map(|v| (*v).clone())
        .unwrap_or_else(|| panic!("no verdict from {from}: {stderr}"));
    (verdict, stderr, out.status.code())
}

fn assert_story(verdict: &Value, stderr: &str) {
    let cause = &verdict["causes"][0];
    assert_eq!(cause["id"], "dying-memcg-stat-flush", "{verdict}\n{stderr}");
    assert_eq!(cause["culprit"]["comm"], "zpoller", "{verdict}");
    let evidence: Vec<&str> = cause["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        evidence
            .iter()
            .any(|e| e.contains("dying memory cgroups against")),
        "{evidence:?}"
    );
    assert!(
        evidence
            .iter()
            .any(|e| e.starts_with("zpoller spent ")
                && e.contains("of IRQs-off time flushing stats")),
        "{evidence:?}"
    );
}

#[test]
fn the_recorder_keeps_the_storys_evidence_and_the_ledger_names_the_poller() {
    if !privileged("the_recorder_keeps_the_storys_evidence_and_the_ledger_names_the_poller") {
        return;
    }
    let _lock = MachineLock::acquire();
    let prefix = unique_prefix();
    let dir = std::env::temp_dir().join(format!("netstall-recorder-{prefix}"));
    let small = std::env::temp_dir().join(format!("netstall-recorder-{prefix}-small"));
    let _dirs = TempDirs(vec![dir.clone(), small.clone()]);
    let made = netstall(&["lab", "zombies", "--prefix", &prefix, "--count", "12000"]);
    let _zombies = Zombies(prefix.clone());
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    // The incident for 30 s under an agent with a recorder.
    let addr = free_addr();
    let running = agent(addr, &dir, "67108864", "10ms");
    let poll = poller(&prefix, "1s", 30);
    let started = Instant::now();
    let series = "netstall_stat_flush_seconds_total{reader=\"zpoller\"}";
    let mut flushed = None;
    while started.elapsed() < Duration::from_secs(50) {
        let text = netstall_agent::http::get(addr, "/metrics", Duration::from_secs(2)).unwrap();
        flushed = metric(&text, series).filter(|s| *s > 0.0);
        if flushed.is_some() && started.elapsed() >= Duration::from_secs(30) {
            assert!(
                metric(&text, "netstall_stat_flushes_total{reader=\"zpoller\"}").unwrap() >= 1.0,
                "{text}"
            );
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let flushed = flushed.unwrap_or_else(|| panic!("no {series} > 0 in /metrics"));
    eprintln!("ledger: zpoller held the rstat lock {flushed:.3} s");
    drop(poll);
    // The running agent answers GET /stalls, and report reads it.
    let body = netstall_agent::http::get(addr, "/stalls?since=1h", Duration::from_secs(5)).unwrap();
    assert!(
        body.lines().any(|l| l.contains("\"type\":\"stall\"")),
        "{body}"
    );
    let (verdict, stderr, code) = report(&format!("http://{addr}"));
    assert_story(&verdict, &stderr);
    assert_eq!(code, Some(1), "unhealthy: {verdict}");
    running.stop();

    // From the directory, with the agent gone, and again after a restart.
    let (verdict, stderr, _) = report(dir.to_str().unwrap());
    assert_story(&verdict, &stderr);
    let stalls = verdict["stalls"].as_u64().unwrap();
    let restarted = agent(addr, &dir, "67108864", "10ms");
    let (after, stderr, _) = report(&format!("http://{addr}"));
    assert_story(&after, &stderr);
    assert!(after["stalls"].as_u64().unwrap() >= stalls, "{after}");
    restarted.stop();

    // Stalls without pause (a read every 50 ms, each flush holding IRQs
    // off a few ms: over a 1 ms threshold) for 15 s: the recorder stays
    // within a small limit, deleting its oldest segments, and what it keeps
    // still reads. (15 s fill about 13 KiB here: the 2-minute form,
    // bench/recorder.sh, sees the oldest segments deleted; the unit tests
    // of crates/netstall-agent/src/recorder.rs do too.)
    let limit = 16 * 1024;
    let running = agent(addr, &small, &limit.to_string(), "1ms");
    let poll = poller(&prefix, "50ms", 15);
    let started = Instant::now();
    let mut most = 0;
    while started.elapsed() < Duration::from_secs(16) {
        most = most.max(dir_bytes(&small));
        assert!(most <= limit, "{most} > {limit}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(poll);
    running.stop();
    let mut segments: Vec<String> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    segments.sort();
    eprintln!("small recorder: at most {most} of {limit} bytes; left: {segments:?}");
    assert!(
        segments.len() >= 2,
        "the stalls never rotated the recorder: at most {most} bytes"
    );
    let (verdict, stderr, _) = report(small.to_str().unwrap());
    assert_eq!(
        verdict["causes"][0]["id"], "dying-memcg-stat-flush",
        "{verdict}\n{stderr}"
    );
}

/// Removes the test's directories however it ends.
struct TempDirs(Vec<std::path::PathBuf>);

impl Drop for TempDirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn report_skips_a_torn_last_line_with_a_warning() {
    let dir = std::env::temp_dir().join(format!("netstall-torn-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let _dirs = TempDirs(vec![dir.clone()]);
    let now = netstall_core::clock::realtime_ns();
    let stall =
        netstall_events::Record::Stall(netstall_agent::tracer::cadvisor_stall(now - 1_000_000_000));
    let line = stall.to_json_line();
    // A kill -9 mid-write: the second copy of the line never ended.
    std::fs::write(
        dir.join("stalls-0000000007.jsonl"),
        format!("{line}\n{}", &line[..line.len() / 2]),
    )
    .unwrap();
    let out = netstall(&[
        "report",
        "--from",
        dir.to_str().unwrap(),
        "--since",
        "1h",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("stalls-0000000007.jsonl:2: skipped a torn"),
        "{stderr}"
    );
    let lines = json_lines(&out);
    let verdict = of_type(&lines, "verdict")[0];
    assert_eq!(verdict["stalls"], 1, "{verdict}");
    assert_eq!(
        verdict["causes"][0]["culprit"]["comm"], "cadvisor",
        "{verdict}"
    );
}

#[test]
fn report_bad_input_is_one_line_and_not_zero() {
    let missing = std::env::temp_dir().join(format!("netstall-missing-{}", unique_prefix()));
    let empty = std::env::temp_dir().join(format!("netstall-empty-{}", unique_prefix()));
    std::fs::create_dir_all(&empty).unwrap();
    let _dirs = TempDirs(vec![empty.clone()]);
    // A server that is not an agent: answers 404 to everything.
    let foreign = TcpListener::bind("127.0.0.1:0").unwrap();
    let foreign_addr = foreign.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in foreign.incoming().take(1) {
            use std::io::{Read, Write};
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.0 404 Not Found\r\n\r\nno\n");
        }
    });
    let closed = free_addr();
    for (from, expect) in [
        (
            missing.to_str().unwrap().to_owned(),
            "cannot read the recorder directory",
        ),
        (empty.to_str().unwrap().to_owned(), "no recorder segments"),
        (format!("http://{closed}"), "cannot connect"),
        (format!("http://{foreign_addr}"), "HTTP 404"),
    ] {
        let out = netstall(&["report", "--from", &from]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{from}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{from}: {stderr}");
        assert!(stderr.contains(expect), "{from}: {stderr}");
    }
}

/// Stall-triggered sampling: a stall on CPU 0 (the lab's RX CPU, a spin
/// every 500 ms while the pod is pinged every 2 ms) opens one sampling
/// window on CPU 0, which catches the next stalls there (softirq runs
/// named by their stacks) and goes to the recorder as a `cpu-sampling`
/// record with its cost; the stalls after it open none (the cooldown).
#[test]
fn stall_sampling_catches_the_next_stall_once_per_cooldown() {
    if !privileged("stall_sampling_catches_the_next_stall_once_per_cooldown") {
        return;
    }
    let _lock = MachineLock::acquire();
    let dir = std::env::temp_dir().join(format!("netstall-sampling-{}", unique_prefix()));
    let _dirs = TempDirs(vec![dir.clone()]);
    let lab = Lab::up("0");
    let addr = free_addr();
    let agent = Running::start(
        Command::new("taskset")
            .args(["-c", "1", NETSTALL, "agent", "--listen", &addr.to_string()])
            .args(["--node-name", "samp1", "--state-dir", dir.to_str().unwrap()])
            .args(["--stall-threshold", "20ms", "--event-log", "/dev/null"])
            .args(["--stall-sampling-window", "3s"])
            .args(["--stall-sampling-cooldown", "1h"]),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !netstall_agent::http::get(addr, "/healthz", Duration::from_secs(1))
        .is_ok_and(|h| h.contains("\"tracer\":\"running\""))
    {
        assert!(Instant::now() < deadline, "the agent's tracer never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pod = lab.status["pod"]["addr"].as_str().unwrap().to_string();
    let ping = Running::start(
        Command::new("ip")
            .args(["netns", "exec", &lab.netns("cli"), "taskset", "-c", "1"])
            .args(["ping", "-q", "-i", "0.002", "-w", "8", &pod])
            .stderr(Stdio::null()),
    );
    let spin = netstall(&[
        "lab", "spin", "--cpu", "0", "--ms", "30", "--every", "500ms", "-w", "7s",
    ]);
    assert!(spin.status.success(), "{spin:?}");
    drop(ping);
    // The window (3 s) ends within the spins; then its record is written.
    let mut windows = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while windows.is_none() && Instant::now() < deadline {
        let text = netstall_agent::http::get(addr, "/metrics", Duration::from_secs(2)).unwrap();
        windows = metric(&text, "netstall_stall_sampling_windows_total ").filter(|&n| n >= 1.0);
        std::thread::sleep(Duration::from_millis(300));
    }
    agent.stop();
    assert_eq!(
        windows,
        Some(1.0),
        "one window, whatever the stalls after it"
    );

    let records: Vec<Value> = std::fs::read_dir(&dir)
        .unwrap()
        .flat_map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let stalls: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "stall" && r["cpu"] == 0)
        .collect();
    let sampled: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "cpu-sampling")
        .collect();
    assert!(stalls.len() >= 3, "{} stalls on CPU 0", stalls.len());
    assert_eq!(sampled.len(), 1, "{sampled:?}");
    let w = sampled[0];
    eprintln!(
        "window: {} samples, cost {} ms, gaps {}, top stacks {}",
        w["samples"], w["cost_ms"], w["gaps"], w["stacks"]
    );
    assert_eq!(w["cpu"], 0);
    assert_eq!(w["node"], "samp1");
    // 3 s at 499 Hz, less what the spins hid.
    assert!(w["samples"].as_u64().unwrap() >= 500, "{w}");
    assert!(w["cost_ms"].as_f64().unwrap() > 0.0, "{w}");
    assert!(!w["stacks"].as_array().unwrap().is_empty(), "{w}");
    // Opened by the first stall, after it; the next stalls fall inside.
    let first_end = stalls.iter().map(|s| s["end_ns"].as_u64().unwrap()).min();
    assert_eq!(w["trigger_ns"].as_u64(), first_end, "{w}");
    let (start, end) = (
        w["start_ns"].as_u64().unwrap(),
        w["end_ns"].as_u64().unwrap(),
    );
    let inside = stalls
        .iter()
        .filter(|s| (start..=end).contains(&s["start_ns"].as_u64().unwrap()))
        .count();
    assert!(inside >= 2, "{inside} stalls inside the window");
    let caught = w["gaps"].as_array().unwrap();
    assert!(
        caught
            .iter()
            .any(|g| g["duration_ms"].as_f64().unwrap() >= 20.0),
        "no stall caught in the window's samples: {caught:?}"
    );
}
