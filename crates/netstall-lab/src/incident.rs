//! The story's incident in the lab, as `netstall demo` stages it: the lab,
//! dying memory cgroups, and a cadvisor-like poller on the RX CPU, all
//! removed again however the run ends.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::{clean, topology, zombies};

/// The name the culprit runs under, as in the story.
pub const POLLER_COMM: &str = "cadvisor";

/// A lab with the incident's injectors; dropping it stops the poller,
/// releases the zombies and (unless kept) removes the lab.
pub struct IncidentLab {
    pub status: topology::LabStatus,
    prefix: String,
    keep: bool,
    exe: PathBuf,
    poller: Option<Child>,
}

/// The poller's first read: the slow `memory.stat` read strace showed in the story.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstRead {
    pub pid: u64,
    pub path: String,
    pub read_ms: f64,
}

impl IncidentLab {
    /// Builds the lab `prefix` with node RX on `rx_cpu`; its responders
    /// (and later the poller) are this executable.
    pub fn up(prefix: &str, rx_cpu: u32, keep: bool) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let status = topology::up(&topology::LabConfig {
            prefix: prefix.to_owned(),
            rx_cpus: vec![rx_cpu],
            responder_exe: exe.clone(),
        })?;
        Ok(Self {
            status,
            prefix: prefix.to_owned(),
            keep,
            exe,
            poller: None,
        })
    }

    /// Creates `count` dying memory cgroups for this lab.
    pub fn make_zombies(&self, count: u32) -> Result<zombies::ZombieReport> {
        let paths = zombies::ZombiePaths::for_host(&self.prefix)?;
        zombies::create(&paths, count, |_| {})
    }

    /// Starts `netstall lab poller` (as [`POLLER_COMM`]) pinned to `cpu`,
    /// reading memory.stat every second, and returns its first read.
    pub fn start_poller(&mut self, cpu: u32) -> Result<Option<FirstRead>> {
        let mut child = spawn_poller(&self.exe, &self.prefix, cpu)?;
        let stdout = child.stdout.take().context("poller stdout")?;
        self.poller = Some(child);
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines
            .next()
            .and_then(|line| line.ok())
            .and_then(|line| parse_first_read(&line));
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(first)
    }

    /// Whether the lab stays up when this is dropped.
    pub fn kept(&self) -> bool {
        self.keep
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

fn spawn_poller(exe: &Path, prefix: &str, cpu: u32) -> Result<Child> {
    Command::new(exe)
        .args(["lab", "poller", "--prefix", prefix, "--cpu"])
        .arg(cpu.to_string())
        .args(["--comm", POLLER_COMM])
        .args(["--interval", "1s", "-w", "10m", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the poller")
}

/// The fields of a poller's JSON line that tell the story.
fn parse_first_read(line: &str) -> Option<FirstRead> {
    let read: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(FirstRead {
        pid: read["pid"].as_u64().unwrap_or(0),
        path: read["path"].as_str().unwrap_or("memory.stat").to_owned(),
        read_ms: read["read_ms"].as_f64().unwrap_or(0.0),
    })
}

impl Drop for IncidentLab {
    fn drop(&mut self) {
        if let Some(mut poller) = self.poller.take() {
            let _ = poller.kill();
            let _ = poller.wait();
        }
        if let Ok(paths) = zombies::ZombiePaths::for_host(&self.prefix) {
            let _ = clean::clean(&paths);
        }
        if !self.keep {
            let _ = topology::down(&self.prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poller_line_gives_its_first_read_and_garbage_gives_none() {
        let line = r#"{"type":"poll","seq":0,"pid":42,"cpu":0,"path":"/sys/fs/cgroup/memory/memory.stat","start_ns":1,"read_ms":97.5,"touched_files":3}"#;
        assert_eq!(
            parse_first_read(line),
            Some(FirstRead {
                pid: 42,
                path: "/sys/fs/cgroup/memory/memory.stat".into(),
                read_ms: 97.5
            })
        );
        assert_eq!(parse_first_read("not json"), None);
    }
}
