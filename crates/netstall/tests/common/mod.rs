//! Helpers shared by the CLI integration tests: run the built binary, read
//! its JSON lines. Each test binary uses a subset of them.
#![allow(dead_code)]

use std::process::{Command, Output};

use serde_json::Value;

pub const NETSTALL: &str = env!("CARGO_BIN_EXE_netstall");

/// Runs `netstall args…` to completion.
pub fn netstall(args: &[&str]) -> Output {
    Command::new(NETSTALL)
        .args(args)
        .output()
        .expect("run netstall")
}

/// Every stdout line as JSON; a line that is not JSON fails the test.
pub fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The lines of one `"type"`.
pub fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}
