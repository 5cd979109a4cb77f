//! How results reach the user: JSON lines (`--json`) or text.
//!
//! Every JSON object carries a `"type"`; one object per line so output can be
//! streamed into `jq`, a log pipeline or a test.

use std::io::Write;

use serde::Serialize;

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

    /// Prints `value` as one JSON line (in JSON mode only).
    pub fn json<T: Serialize>(&self, value: &T) {
        if self.is_json() {
            print_json_line(value);
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

/// Writes one JSON object and a newline to stdout, flushing so consumers see it now.
pub fn print_json_line<T: Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    if serde_json::to_writer(&mut out, value).is_ok() {
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}
