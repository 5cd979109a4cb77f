//! The JSON event log: one object per line, each with a `"type"` (agent
//! start, probe episodes, kernel stalls, dying-cgroup threshold crossings),
//! on standard output or appended to a file that is rotated once it grows
//! past [`MAX_FILE_BYTES`] (one old generation kept: bounded disk).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use netstall_events::Record;

/// Size at which the log file is rotated to `<file>.1`.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

enum Sink {
    Stdout,
    File {
        path: PathBuf,
        file: File,
        written: u64,
    },
}

/// Where events go.
pub struct EventLog {
    sink: Sink,
    max_bytes: u64,
}

impl EventLog {
    pub fn stdout() -> Self {
        Self {
            sink: Sink::Stdout,
            max_bytes: MAX_FILE_BYTES,
        }
    }

    /// Appends to `path` (created if missing), rotating at `max_bytes`.
    pub fn file(path: &Path, max_bytes: u64) -> Result<Self> {
        let file = open(path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            sink: Sink::File {
                path: path.to_path_buf(),
                file,
                written,
            },
            max_bytes,
        })
    }

    /// Writes one event as a JSON line. A failing log never stops the agent:
    /// the error is returned for the caller to count or report once.
    pub fn emit(&mut self, record: &Record) -> io::Result<()> {
        let mut line = record.to_json_line().into_bytes();
        line.push(b'\n');
        match &mut self.sink {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&line)?;
                out.flush()
            }
            Sink::File {
                path,
                file,
                written,
            } => {
                if *written + line.len() as u64 > self.max_bytes && *written > 0 {
                    let mut old = path.clone().into_os_string();
                    old.push(".1");
                    std::fs::rename(&*path, &old)?;
                    *file = open(path).map_err(io::Error::other)?;
                    *written = 0;
                }
                file.write_all(&line)?;
                *written += line.len() as u64;
                Ok(())
            }
        }
    }
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the event log {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_and_the_file_is_rotated() {
        let dir = std::env::temp_dir().join(format!("netstall-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let mut log = EventLog::file(&path, 200).unwrap();
        for i in 0..10 {
            let crossing = netstall_events::agent::MemcgDying {
                node: "n".into(),
                dying: i,
                limit: 5,
                over_limit: i > 5,
            };
            log.emit(&crossing.into()).unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.join("events.jsonl.1")).unwrap();
        assert!(current.len() <= 200 && old.len() <= 200);
        let last = netstall_events::parse_line(current.lines().last().unwrap()).unwrap();
        assert!(matches!(last, Record::MemcgDying(m) if m.dying == 9));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
