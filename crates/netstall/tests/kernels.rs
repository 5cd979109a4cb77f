//! The kernel matrix's short form (`scripts/kernel-matrix.sh --short`, docs/kernels.md): Debian's
//! newest 6.1 cloud kernel booted under qemu (TCG) with this build of netstall inside. The tracer
//! loads there with every detector 6.1 can carry, and the one it cannot (rstat-hold: its
//! tracepoints arrived after 6.1) is named with why; the line is a `kernel-run` record.

mod common;

use common::*;

use std::process::Command;

use netstall_testkit::{privileged, unique_prefix};

#[test]
fn debian_6_1_boots_under_qemu_and_the_tracer_loads_what_it_can() {
    if !privileged("debian_6_1_boots_under_qemu_and_the_tracer_loads_what_it_can") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("netstall-kernels-{}", unique_prefix()));
    let out = Command::new(repo_file("scripts/kernel-matrix.sh"))
        .args(["--short", "--json"])
        .env("NETSTALL", NETSTALL)
        .env("KERNEL_MATRIX_DIR", &dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "one kernel, one line: {lines:?}");
    let run = &lines[0];
    assert_eq!(run["type"], "kernel-run");
    assert!(
        run["kernel"].as_str().unwrap().starts_with("6.1.0-"),
        "{run}"
    );
    let loaded: Vec<&str> = run["detectors_loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    for detector in [
        "rx-backlog",
        "softirq-delay",
        "irqs-off",
        "ksoftirqd",
        "steal",
    ] {
        assert!(
            loaded.contains(&detector),
            "{detector} does not load on 6.1: {run}"
        );
    }
    let missing = run["detectors_missing"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{run}");
    assert_eq!(missing[0]["detector"], "rstat-hold", "{run}");
    assert!(
        missing[0]["why"]
            .as_str()
            .unwrap()
            .contains("does not load"),
        "{run}"
    );
    // The spin is measured, not required: TCG's late timer ticks blur it (docs/kernels.md).
    assert!(run["spin_found"].is_boolean(), "{run}");
    eprintln!("{run}\n{stderr}");
}
