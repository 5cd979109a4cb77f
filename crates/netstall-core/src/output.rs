//! How results reach the user: JSON lines (`--json`) or text.
//!
//! Every JSON line is a [`Record`] (its `"type"` names it); one object per
//! line so output can be streamed into `jq`, a log pipeline or a test, and
//! read back with [`netstall_events::read_records`].

use std::io::Write;

use netstall_events::Record;

/// Text for people, or one JSON object per line for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Where a command prints its results.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: Format,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self {
            format: if json { Format::Json } else { Format::Text },
        }
    }

    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints a record as one JSON line (in JSON mode only).
    pub fn json(&self, record: impl Into<Record>) {
        if self.is_json() {
            print_json_line(&record.into());
        }
    }

    /// Prints a record: its JSON line, or in text mode its text form (if
    /// it has one).
    pub fn emit(&self, record: impl Into<Record>) {
        let record = record.into();
        if self.is_json() {
            print_json_line(&record);
        } else if let Some(text) = record.text() {
            self.text(text);
        }
    }

    /// Prints a line of text (in text mode only).
    pub fn text(&self, line: impl std::fmt::Display) {
        if !self.is_json() {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(out, "{line}");
        }
    }

    /// Progress and narration: stderr, text mode only, so JSON stdout stays clean.
    pub fn progress(&self, line: impl std::fmt::Display) {
        if !self.is_json() {
            eprintln!("{line}");
        }
    }
}

/// Writes one record and a newline to stdout, flushing so consumers see it now.
pub fn print_json_line(record: &Record) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(out, "{}", record.to_json_line());
    let _ = out.flush();
}

/// Writes a generated text (a completion script, a manual page) to standard
/// output. A reader that stops early (`| head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}
