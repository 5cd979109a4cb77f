//! The command line: help everywhere, and bad input gives one line and exit 2.

mod common;

use common::*;

use std::process::{Command, Output};

use netstall_testkit::privileged;

/// Asserts exit code 2 and a one-line reason containing `needle`.
fn assert_usage_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains(needle), "expected '{needle}' in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn every_command_has_help() {
    let top = netstall(&["--help"]);
    assert!(top.status.success());
    let top = String::from_utf8_lossy(&top.stdout).into_owned();
    // Every command the top-level help lists, and every lab subcommand.
    let commands: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    for expected in [
        "demo",
        "doctor",
        "probe",
        "trace",
        "xray",
        "collapse",
        "flame",
        "cgroups",
        "bisect",
        "agent",
        "check",
        "lab",
        "responder",
    ] {
        assert!(
            commands.contains(&expected),
            "`netstall --help` does not list {expected}: {commands:?}"
        );
    }
    let mut invocations: Vec<Vec<&str>> = commands.iter().map(|c| vec![*c, "--help"]).collect();
    for sub in [
        "up", "down", "status", "rps", "zombies", "poller", "spin", "clean",
    ] {
        invocations.push(vec!["lab", sub, "--help"]);
    }
    for args in invocations {
        let out = netstall(&args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: netstall"), "{args:?}");
        assert!(text.contains("--json"), "{args:?} lacks --json");
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = netstall(&["lab", "explode"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand 'explode'"));
}

#[test]
fn durations_need_units() {
    let out = netstall(&["lab", "spin", "--cpu", "0", "--ms", "5", "-w", "10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a unit"));
}

#[test]
fn a_cpu_that_does_not_exist_is_named() {
    if !privileged("a_cpu_that_does_not_exist_is_named") {
        return;
    }
    assert_usage_error(
        &netstall(&["lab", "up", "--prefix", "nocpu", "--rx-cpu", "999"]),
        "CPU 999 does not exist",
    );
    assert_usage_error(
        &netstall(&["lab", "spin", "--cpu", "999", "--ms", "5", "-w", "1s"]),
        "CPU 999 does not exist",
    );
    assert_usage_error(
        &netstall(&["lab", "poller", "--cpu", "999", "-w", "1s"]),
        "CPU 999 does not exist",
    );
    assert!(
        !netstall_lab::netns::exists("nocpu-cli"),
        "a refused lab leaves nothing behind"
    );
}

#[test]
fn bad_prefix_is_refused() {
    assert_usage_error(
        &netstall(&["lab", "status", "--prefix", "Bad-Name"]),
        "invalid lab prefix",
    );
}

/// Runs netstall as `nobody` with no capabilities.
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            NETSTALL,
        ])
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

#[test]
fn missing_root_is_named() {
    if !privileged("missing_root_is_named") {
        return;
    }
    assert_usage_error(
        &as_nobody(&["lab", "up", "--prefix", "noroot"]),
        "needs root",
    );
    assert_usage_error(
        &as_nobody(&["lab", "zombies", "--count", "1"]),
        "needs root",
    );
    assert_usage_error(
        &as_nobody(&["lab", "spin", "--cpu", "0", "--ms", "5", "-w", "1s"]),
        "needs CAP_BPF",
    );
}

#[test]
fn missing_cgroup_v1_memory_hierarchy_is_named() {
    if !privileged("missing_cgroup_v1_memory_hierarchy_is_named") {
        return;
    }
    // A private mount namespace without the memory hierarchy: the host's stays as it is.
    let mount =
        netstall_cgroups::mounts::memory_v1_mount().expect("this host has cgroup v1 memory");
    let script = format!("umount -l {} && exec \"$@\"", mount.display());
    let out = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
            NETSTALL,
            "lab",
            "zombies",
            "--count",
            "1",
        ])
        .output()
        .expect("unshare (util-linux)");
    assert_usage_error(&out, "cgroup v1 memory hierarchy is not mounted");
}
