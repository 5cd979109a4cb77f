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

/// A file of this repository, by its path from the top.
pub fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A scratch directory, unique to the test, removed when the test ends.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "netstall-test-{}",
            netstall_testkit::unique_prefix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A lab (`netstall lab up`) under a unique prefix, removed when the test
/// ends, however it ends.
pub struct Lab {
    pub prefix: String,
    /// What `lab up --json` printed (the `"type":"lab"` status).
    pub status: Value,
}

impl Lab {
    /// Builds the lab with every host's RX on `rx_cpu`.
    pub fn up(rx_cpu: &str) -> Lab {
        let prefix = netstall_testkit::unique_prefix();
        let out = netstall(&[
            "lab", "up", "--prefix", &prefix, "--rx-cpu", rx_cpu, "--json",
        ]);
        assert!(
            out.status.success(),
            "lab up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = serde_json::from_slice(&out.stdout).expect("lab up prints its status as JSON");
        Lab { prefix, status }
    }

    /// The network namespace of one role (`client`, `n1`, `out`…).
    pub fn netns(&self, role: &str) -> String {
        format!("{}-{}", self.prefix, role)
    }

    /// Steers one host's RX (every host's with `None`) to `rx_cpu`.
    pub fn rps(&self, host: Option<&str>, rx_cpu: &str) {
        let mut args = vec!["lab", "rps", "--prefix", &self.prefix, "--rx-cpu", rx_cpu];
        if let Some(host) = host {
            args.extend(["--host", host]);
        }
        let out = netstall(&args);
        assert!(
            out.status.success(),
            "lab rps: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = netstall(&["lab", "down", "--prefix", &self.prefix]);
    }
}

/// Runs `f` on a thread inside the named network namespace.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        netstall_lab::netns::enter(&netns).expect("enter netns");
        f()
    })
    .join()
    .expect("thread in netns")
}
