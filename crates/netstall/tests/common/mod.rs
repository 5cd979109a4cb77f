//! Helpers shared by the CLI integration tests: run the built binary, read
//! its JSON lines. Each test binary uses a subset of them.
#![allow(dead_code)]

use std::process::{Command, Output};

use serde_json::Value;

pub const NETSTALL: &str = env!("CARGO_BIN_EXE_netstall");

/// `--state-dir -`: a test's agent keeps no flight recorder, so no test
/// writes into the machine's /var/lib/netstall (the recorder's tests give
/// theirs a directory of their own, in a [`TempDir`]).
pub const NO_RECORDER: [&str; 2] = ["--state-dir", "-"];

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

/// The PromQL of every panel of the Grafana dashboard, as Grafana sends it:
/// `$node` is every node, `$__rate_interval` a minute, `$__range` an hour.
pub fn dashboard_queries() -> Vec<String> {
    let text =
        std::fs::read_to_string(repo_file("deploy/grafana/netstall-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$node", ".*")
        })
        .collect()
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

/// What the kernel saw while a test ran: every stall of at least 2 ms and
/// every bit of vCPU steal, from `netstall trace` in the background. Tests
/// on a VM use it to tell the delays they cause from the machine's own
/// (a hypervisor pause, a real IRQs-off section elsewhere) with evidence,
/// instead of retrying or widening margins.
pub struct KernelWatch {
    child: Option<std::process::Child>,
    lines: Option<std::thread::JoinHandle<Vec<Value>>>,
}

/// The kernel's evidence, from a [`KernelWatch`].
#[derive(Debug, Default)]
pub struct Seen {
    pub steal: Vec<netstall_events::kernel::Steal>,
    /// (cpu, start_ns, end_ns, detector) of every stall.
    pub stalls: Vec<(u32, u64, u64, String)>,
}

/// A kernel stall and a probe episode this close are one event.
const KERNEL_SLACK_NS: u64 = 15_000_000;

impl KernelWatch {
    /// Starts tracing (stalls >= 2 ms, steal) and waits until it is attached.
    pub fn start() -> KernelWatch {
        let mut child = Command::new(NETSTALL)
            .args(["trace", "--threshold", "2ms", "-w", "15m", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start netstall trace");
        let stdout = child.stdout.take().expect("trace stdout");
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let lines = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if value["type"] == "trace-start" {
                    let _ = started_tx.send(());
                }
                lines.push(value);
            }
            lines
        });
        started_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("netstall trace attached");
        KernelWatch {
            child: Some(child),
            lines: Some(lines),
        }
    }

    /// Stops tracing (SIGINT: the tracer flushes what it assembled) and
    /// returns what it saw.
    pub fn finish(mut self) -> Seen {
        let mut child = self.child.take().expect("running");
        // SAFETY: a signal to the child we started, by its PID.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let _ = child.wait();
        let lines = self
            .lines
            .take()
            .expect("reader")
            .join()
            .unwrap_or_default();
        let mut seen = Seen::default();
        for l in &lines {
            if l["type"] == "steal" {
                seen.steal.push(netstall_events::kernel::Steal {
                    cpu: l["cpu"].as_u64().unwrap_or(0) as u32,
                    start_ns: l["start_ns"].as_u64().unwrap_or(0),
                    end_ns: l["end_ns"].as_u64().unwrap_or(0),
                    steal_ms: l["steal_ms"].as_f64().unwrap_or(0.0),
                    source: netstall_events::kernel::StealSource::StealClock,
                });
            } else if l["type"] == "stall" {
                let start = l["start_ns"].as_u64().unwrap_or(0);
                let end = start + (l["duration_ms"].as_f64().unwrap_or(0.0) * 1e6) as u64;
                seen.stalls.push((
                    l["cpu"].as_u64().unwrap_or(0) as u32,
                    start,
                    end,
                    l["detector"].as_str().unwrap_or("?").to_owned(),
                ));
            }
        }
        seen
    }
}

impl Drop for KernelWatch {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Seen {
    /// The steal (ms, most on any CPU) that may have fallen in a window.
    pub fn steal_ms(&self, start_ns: u64, end_ns: u64) -> f64 {
        netstall_core::steal::steal_during(&self.steal, None, start_ns, end_ns) as f64 / 1e6
    }

    /// The longest kernel stall (ms, any CPU) that lines up with a window.
    pub fn stall_ms(&self, start_ns: u64, end_ns: u64) -> f64 {
        self.stalls
            .iter()
            .filter(|(_, s, e, _)| {
                *s <= end_ns + KERNEL_SLACK_NS && start_ns <= e + KERNEL_SLACK_NS
            })
            .map(|(_, s, e, _)| (e - s) as f64 / 1e6)
            .fold(0.0, f64::max)
    }

    /// Whether the kernel accounts for a probe episode: steal or a stall
    /// covering at least half of it.
    pub fn explains(&self, episode: &Value) -> bool {
        let start = episode["start_ns"].as_u64().unwrap_or(0);
        let end = episode["end_ns"].as_u64().unwrap_or(0);
        let ms = episode["duration_ms"].as_f64().unwrap_or(0.0);
        self.steal_ms(start, end).max(self.stall_ms(start, end)) * 2.0 >= ms
    }
}

/// Busy loops on every CPU (and, with `walk`, a filesystem walk), the way a
/// loaded node looks, stopped when dropped (by PID: only what it started).
pub struct Load(Vec<std::process::Child>);

impl Load {
    /// One busy loop per online CPU and a filesystem walk, for at most `limit`.
    pub fn both_cpus(limit: std::time::Duration) -> Load {
        let secs = limit.as_secs().max(1).to_string();
        let mut children = Vec::new();
        for _ in 0..2 {
            children.push(
                Command::new("timeout")
                    .args([&secs, "sh", "-c", "while :; do :; done"])
                    .spawn()
                    .expect("start a busy loop"),
            );
        }
        children.push(
            Command::new("timeout")
                .args([
                    &secs,
                    "sh",
                    "-c",
                    "while :; do find / -xdev >/dev/null 2>&1; done",
                ])
                .spawn()
                .expect("start a filesystem walk"),
        );
        Load(children)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: signals to the children we started, by PID. `timeout`
            // passes SIGTERM on to its command.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}
