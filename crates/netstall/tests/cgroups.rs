//! `netstall cgroups` for real: 12,000 dying memory cgroups made by the lab,
//! counted exactly, their creator named by the watch at the real rate, the
//! remediation ladder judged by what the kernel actually did, and the
//! environment errors (in private mount namespaces).

mod common;

use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use netstall_testkit::{privileged, unique_prefix, MachineLock};
use serde_json::Value;

const ZOMBIES: u64 = 12_000;

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "netstall failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// The memory hierarchy's mount, read here independently of the crate.
fn memory_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find(|l| l.contains(" - cgroup ") && l.split(',').any(|o| o == "memory"))
        .map(|l| PathBuf::from(l.split(' ').nth(4).unwrap()))
        .expect("a cgroup v1 memory mount")
}

/// `num_cgroups` of memory in /proc/cgroups.
fn proc_memory_total() -> u64 {
    std::fs::read_to_string("/proc/cgroups")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("memory\t"))
        .and_then(|l| l.split('\t').nth(2))
        .and_then(|n| n.parse().ok())
        .expect("memory line in /proc/cgroups")
}

fn live_dirs(dir: &Path) -> u64 {
    1 + std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| live_dirs(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// /proc/cgroups minus the live directories, as a person would count.
fn independent_dying() -> u64 {
    proc_memory_total() - live_dirs(&memory_mount())
}

/// The lab's dying memcgs: made in the background, cleaned up however the test ends.
struct Zombies {
    prefix: String,
    maker: Option<Child>,
}

impl Zombies {
    fn start(count: u64) -> Self {
        let prefix = unique_prefix();
        let maker = Command::new(NETSTALL)
            .args(["--json", "lab", "zombies", "--prefix", &prefix])
            .args(["--count", &count.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lab zombies");
        Zombies {
            prefix,
            maker: Some(maker),
        }
    }

    fn parent(&self) -> PathBuf {
        memory_mount().join(format!("netstall-{}", self.prefix))
    }

    /// One file per zombie made so far.
    fn made(&self) -> u64 {
        std::fs::read_dir(format!("/var/tmp/netstall/{}/zombies", self.prefix))
            .map(|d| d.count() as u64)
            .unwrap_or(0)
    }

    /// Zombies whose file was written in [start_ns, end_ns] (CLOCK_REALTIME).
    fn made_between(&self, start_ns: u64, end_ns: u64) -> u64 {
        std::fs::read_dir(format!("/var/tmp/netstall/{}/zombies", self.prefix))
            .unwrap()
            .flatten()
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64)
            .filter(|&ns| (start_ns..=end_ns).contains(&ns))
            .count() as u64
    }

    fn wait_made(&self, n: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.made() < n {
            assert!(
                Instant::now() < deadline,
                "lab zombies made only {}",
                self.made()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `lab zombies` to finish; returns its report.
    fn finish(&mut self) -> Value {
        let out = self
            .maker
            .take()
            .unwrap()
            .wait_with_output()
            .expect("wait for lab zombies");
        json_of(&out)
    }
}

impl Drop for Zombies {
    fn drop(&mut self) {
        if let Some(mut maker) = self.maker.take() {
            let _ = maker.kill();
            let _ = maker.wait();
        }
        let _ = netstall(&["lab", "clean", "--prefix", &self.prefix]);
    }
}

#[test]
fn watch_names_the_lab_as_top_creator_at_the_real_rate_and_the_count_is_exact() {
    if !privileged("watch_names_the_lab_as_top_creator_at_the_real_rate_and_the_count_is_exact") {
        return;
    }
    let _lock = MachineLock::acquire();
    let mut zombies = Zombies::start(ZOMBIES);
    // Let creation get going, then watch 10 s of it.
    zombies.wait_made(300, Duration::from_secs(60));
    let watch = json_of(&netstall(&["--json", "cgroups", "--watch", "10s"]));
    let w = &watch["watch"];
    // The real rate over the same window: each zombie's file is written
    // inside its cgroup just before the rmdir, so its mtime dates it.
    let (start_ns, end_ns) = (
        w["start_ns"].as_u64().unwrap(),
        w["end_ns"].as_u64().unwrap(),
    );
    let made_in_window = zombies.made_between(start_ns, end_ns);
    let real_rate = made_in_window as f64 / ((end_ns - start_ns) as f64 / 1e9);
    assert!(
        made_in_window >= 1000,
        "only {made_in_window} zombies made during the watch"
    );

    let w = &watch["watch"];
    assert_eq!(w["source"], "tracepoints");
    let top = &w["top_parents"][0];
    eprintln!("real rate {real_rate:.1}/s; top parent {top}");
    assert_eq!(top["path"], zombies.parent().to_str().unwrap());
    assert_eq!(top["controllers"], "memory");
    assert_eq!(
        top["creators"][0]["comm"], "netstall",
        "lab zombies makes them"
    );
    for rate in ["created_per_s", "removed_per_s", "net_dying_per_s"] {
        let seen = top[rate].as_f64().unwrap();
        assert!(
            (seen - real_rate).abs() <= 0.2 * real_rate,
            "{rate} {seen:.1}/s vs real {real_rate:.1}/s"
        );
    }
    assert_eq!(w["dropped"], 0);

    let made = zombies.finish();
    assert_eq!(made["created"], ZOMBIES);

    // The count equals /proc/cgroups minus the live directories, exactly:
    // taken when an independent count is the same before and after it.
    let mut reported = None;
    for _ in 0..10 {
        let before = independent_dying();
        let report = json_of(&netstall(&["--json", "cgroups"]));
        if independent_dying() == before {
            reported = Some((before, report));
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (expected, report) = reported.expect("the count never held still");
    let memory = report["hierarchies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["controller"] == "memory")
        .unwrap()
        .clone();
    eprintln!("memory row {memory}");
    assert_eq!(memory["dying"], expected);
    assert_eq!(
        memory["total"].as_u64().unwrap() - memory["live"].as_u64().unwrap(),
        expected
    );
    assert!(expected >= 11_000, "only {expected} dying");
    assert_eq!(report["memory"]["dying"], expected);
    assert!(report["worst_stall_ms"].as_f64().unwrap() >= 22.0);
}

fn remediation(args: &[&str]) -> Value {
    let mut all = vec!["--json", "cgroups"];
    all.extend_from_slice(args);
    json_of(&netstall(&all))["remediation"].clone()
}

#[test]
fn the_remediation_ladder_reports_what_the_kernel_actually_did() {
    if !privileged("the_remediation_ladder_reports_what_the_kernel_actually_did") {
        return;
    }
    let _lock = MachineLock::acquire();
    let mut zombies = Zombies::start(ZOMBIES);
    zombies.finish();
    let start = independent_dying();
    assert!(start >= 11_000, "only {start} dying");

    // Without --yes nothing is written: a plan, and the zombies stay.
    let plan = remediation(&["--remediate", "1"]);
    assert_eq!(plan["applied"], false);
    assert!(plan["dying_after"].is_null());
    assert!(plan["verdict"].as_str().unwrap().contains("--yes"));
    let still = independent_dying();
    assert!(
        still * 100 >= start * 99,
        "dying went {start} -> {still} without --yes"
    );

    // The canary times the real stall: with every zombie's stats dirtied
    // (the lab poller touches their page cache, reading /dev/null instead of
    // memory.stat), one read flushes 12,000 memcgs, ~25 ms here. The
    // kernel's periodic flusher may get there first, so up to 3 tries.
    let mut reads = Vec::new();
    for _ in 0..3 {
        let touch = netstall(&[
            "lab",
            "poller",
            "--prefix",
            &zombies.prefix,
            "--path",
            "/dev/null",
            "-w",
            "1ms",
        ]);
        assert!(touch.status.success(), "{touch:?}");
        let report = json_of(&netstall(&["--json", "cgroups", "--canary", "--cpu", "1"]));
        let ms = report["canary"]["read_ms"].as_f64().unwrap();
        reads.push(ms);
        // The advice follows the canary: affected from its threshold on,
        // "fast now" below it (a read the periodic flusher partly beat).
        let advice = report["advice"].to_string();
        if ms >= netstall_cgroups::advice::AFFECTED_CANARY_MS {
            assert!(advice.contains("this node is affected"), "{advice}");
            break;
        }
        assert!(advice.contains("fast now"), "{advice}");
    }
    eprintln!("canary reads after touching: {reads:?} ms");
    assert!(reads.iter().any(|&ms| ms >= 5.0), "no slow read: {reads:?}");

    // Level 2 (slab): whatever happens, the report says it as it is.
    let slab = remediation(&["--remediate", "2", "--yes"]);
    eprintln!("level 2: {}", slab["verdict"]);
    assert_eq!(slab["applied"], true);
    let (before, after) = (
        slab["dying_before"].as_u64().unwrap(),
        slab["dying_after"].as_u64().unwrap(),
    );
    assert_eq!(slab["worked"], after * 10 <= before);
    let recount = independent_dying();
    assert!(
        recount.abs_diff(after) <= before / 100,
        "reported {after}, recount {recount}"
    );

    // Level 1 (page cache) with the canary timed before and after, while a
    // watch sees the lab's zombies released.
    let watcher = Command::new(NETSTALL)
        .args(["--json", "cgroups", "--watch", "12s"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the watch");
    std::thread::sleep(Duration::from_secs(2));
    let cache = remediation(&["--remediate", "1", "--yes", "--canary", "--cpu", "1"]);
    eprintln!("level 1: {}", cache["verdict"]);
    let (before, after) = (
        cache["dying_before"].as_u64().unwrap(),
        cache["dying_after"].as_u64().unwrap(),
    );
    assert!(before >= 11_000, "before {before}");
    assert!(
        after * 10 < before,
        "after {after} is not below 10% of {before}"
    );
    assert_eq!(cache["worked"], true);
    assert!(cache["canary_before_ms"].as_f64().is_some());
    assert!(cache["canary_after_ms"].as_f64().is_some());

    let watch = json_of(&watcher.wait_with_output().unwrap())["watch"].clone();
    let lab = watch["top_parents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == zombies.parent().to_str().unwrap())
        .unwrap_or_else(|| panic!("the lab's parent is not among {}", watch["top_parents"]))
        .clone();
    eprintln!("release watch: {lab}");
    let released = lab["released"].as_u64().unwrap();
    assert!(released >= ZOMBIES * 9 / 10, "saw {released} released");
    assert!(lab["net_dying_per_s"].as_f64().unwrap() < 0.0);
    assert_eq!(watch["dropped"], 0);
    assert!(independent_dying() * 10 < before);
}

/// Runs netstall in a private mount namespace after `setup` (shell) ran there.
fn in_private_mounts(setup: &str, args: &str) -> Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("{setup} && exec {NETSTALL} {args}"))
        .output()
        .expect("unshare")
}

fn one_line_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "exit code: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("netstall: error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn missing_cgroups_unreadable_files_and_odd_mounts_are_one_line_errors() {
    if !privileged("missing_cgroups_unreadable_files_and_odd_mounts_are_one_line_errors") {
        return;
    }
    let line = one_line_error(&in_private_mounts("umount -R -l /sys/fs/cgroup", "cgroups"));
    assert!(line.contains("no cgroup filesystem is mounted"), "{line}");

    // drop_caches is write-only, even for root: reading it fails (EACCES).
    let line = one_line_error(&in_private_mounts(
        "mount --bind /proc/sys/vm/drop_caches /proc/cgroups",
        "cgroups --json",
    ));
    assert!(line.contains("cannot read /proc/cgroups"), "{line}");

    // A container's view: only a sub-tree of the memory hierarchy. The
    // cgroup is the test's own, live and empty, so it leaves no dying memcg.
    let _lock = MachineLock::acquire();
    let own = memory_mount().join(format!("netstall-{}", unique_prefix()));
    std::fs::create_dir(&own).unwrap();
    let out = in_private_mounts(
        &format!(
            "mount --bind {own} /mnt && umount -l {mount}",
            own = own.display(),
            mount = memory_mount().display()
        ),
        "cgroups",
    );
    std::fs::remove_dir(&own).unwrap();
    let line = one_line_error(&out);
    assert!(line.contains("only the sub-tree /netstall-"), "{line}");
}

/// `cgroup.stat` of the live cgroup v2 mount, parsed here independently.
fn live_v2() -> Option<(PathBuf, Vec<(String, u64)>)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mountinfo
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .map(|l| PathBuf::from(l.split(' ').nth(4).unwrap()))?;
    let stat = std::fs::read_to_string(mount.join("cgroup.stat")).unwrap();
    let pairs = stat
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect();
    Some((mount, pairs))
}

#[test]
fn the_live_hybrid_host_reports_v1_memory_and_v2_rows_from_cgroup_stat() {
    let report = json_of(&netstall(&["--json", "cgroups"]));
    let rows = report["hierarchies"].as_array().unwrap();
    let memory = rows.iter().find(|h| h["controller"] == "memory").unwrap();
    assert_eq!(memory["version"], 1, "memory is on v1 here");
    assert_eq!(memory["mount"], memory_mount().to_str().unwrap());
    assert_eq!(report["memory"]["mount"], memory_mount().to_str().unwrap());
    let Some((mount, stat)) = live_v2() else {
        return;
    };
    let get = |key: &str| stat.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
    let v2: Vec<&Value> = rows.iter().filter(|h| h["version"] == 2).collect();
    assert!(!v2.is_empty(), "the hybrid's cgroup2 side is listed");
    for row in v2 {
        assert_eq!(row["mount"], mount.to_str().unwrap());
        let controller = row["controller"].as_str().unwrap();
        let (live, dying) = if controller == "cgroup" {
            (
                get("nr_descendants").unwrap() + 1,
                get("nr_dying_descendants").unwrap(),
            )
        } else {
            (
                get(&format!("nr_subsys_{controller}")).unwrap(),
                get(&format!("nr_dying_subsys_{controller}")).unwrap(),
            )
        };
        // Counts can move between the two reads only if something churns on v2.
        assert!(row["live"].as_u64().unwrap().abs_diff(live) <= 2, "{row}");
        assert!(row["dying"].as_u64().unwrap().abs_diff(dying) <= 2, "{row}");
    }
}

#[test]
fn without_bpf_the_watch_polls_and_says_why() {
    if !privileged("without_bpf_the_watch_polls_and_says_why") {
        return;
    }
    let drop_caps = "-bpf,-perfmon,-sys_admin";
    let out = Command::new("setpriv")
        .args([
            "--bounding-set",
            drop_caps,
            "--inh-caps",
            drop_caps,
            NETSTALL,
        ])
        .args(["--json", "cgroups", "--watch", "1s"])
        .output()
        .expect("setpriv");
    let report = json_of(&out);
    let w = &report["watch"];
    assert_eq!(w["source"], "polling");
    assert!(w["note"].as_str().unwrap().contains("CAP_BPF"), "{w}");
    assert!(w["hierarchies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["controllers"] == "memory"));
}

#[test]
fn remediate_needs_a_valid_level_and_yes_needs_remediate() {
    let out = netstall(&["cgroups", "--remediate", "4"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1, 2 or 3"));
    let out = netstall(&["cgroups", "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    let out = netstall(&["cgroups", "--cpu", "1"]);
    assert_eq!(out.status.code(), Some(2), "--cpu needs --canary");
}

/// The watch's stats readers' ledger, from the in-kernel tracer: the lab's
/// cadvisor-like poller (its stats kept dirty over 1,000 dying memcgs, so
/// that every read flushes) is a reader with flushes and IRQs-off time,
/// in JSON and in the table.
#[test]
fn watch_shows_the_stats_readers_ledger_with_the_poller() {
    if !privileged("watch_shows_the_stats_readers_ledger_with_the_poller") {
        return;
    }
    let _lock = MachineLock::acquire();
    let mut zombies = Zombies::start(1000);
    zombies.finish();
    let mut poller = Command::new(NETSTALL)
        .args(["lab", "poller", "--prefix", &zombies.prefix, "--cpu", "0"])
        .args(["--comm", "zledger", "--interval", "200ms", "-w", "40s"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start lab poller");
    let watched = netstall(&["--json", "cgroups", "--watch", "6s"]);
    let text = netstall(&["cgroups", "--watch", "4s"]);
    let _ = poller.kill();
    let _ = poller.wait();
    let watch = json_of(&watched)["watch"].clone();
    assert!(watch["ledger_note"].is_null(), "{watch}");
    let ledger = watch["ledger"].as_array().expect("a ledger");
    eprintln!("ledger: {ledger:?}");
    let poller = ledger
        .iter()
        .find(|r| r["reader"] == "zledger")
        .unwrap_or_else(|| panic!("the poller is not a reader: {ledger:?}"));
    assert!(poller["flushes"].as_u64().unwrap() >= 1, "{poller}");
    assert!(poller["locked_ms"].as_f64().unwrap() > 0.0, "{poller}");
    let window_s =
        (poller["end_ns"].as_u64().unwrap() - poller["start_ns"].as_u64().unwrap()) as f64 / 1e9;
    assert!((1.0..=6.5).contains(&window_s), "{window_s} s");
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success(), "{table}");
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("zledger "))
        .unwrap_or_else(|| panic!("no zledger row:\n{table}"));
    assert!(table.contains("STATS READERS"), "{table}");
    assert!(table.contains("(all)"), "{table}");
    eprintln!("{row}");
}
