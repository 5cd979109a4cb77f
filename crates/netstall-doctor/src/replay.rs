//! `doctor --replay`: a saved run (JSON lines from `--save`, or the records
//! an HTML report from `--report` embeds) read back into the findings the
//! verdict is computed from. Pure file reading: no privileges needed.

use std::io::BufReader;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use netstall_core::output::Output;

use crate::findings::{Findings, Saved};
use crate::report;
use crate::Verdict;

/// `doctor --replay`: the verdict of a saved run, emitted, and with
/// `report_path` its report written again.
pub fn replay(path: &Path, report_path: Option<&Path>, out: Output) -> Result<Verdict> {
    let saved = read(path)?;
    let verdict = crate::diagnose(&saved.findings);
    out.progress(format!(
        "doctor: replaying {} ({}; {} stall(s), {} target(s))",
        path.display(),
        saved.extras.host,
        saved.findings.stalls.len(),
        saved.findings.targets.len()
    ));
    out.emit(verdict.clone());
    if let Some(report_path) = report_path {
        report::write(report_path, &verdict, &saved.findings, &saved.extras)?;
        out.progress(format!("report written to {}", report_path.display()));
    }
    Ok(verdict)
}

/// Reads a run saved by `doctor --save` or `--report`.
pub fn read(path: &Path) -> Result<Saved> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open {} to replay", path.display()))?;
    let mut reader = BufReader::new(file);
    let is_html = {
        use std::io::BufRead;
        let head = reader
            .fill_buf()
            .with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8_lossy(&head[..head.len().min(64)]).to_ascii_lowercase();
        text.trim_start().starts_with("<!doctype html") || text.trim_start().starts_with("<html")
    };
    let records = if is_html {
        let mut html = String::new();
        std::io::Read::read_to_string(&mut reader, &mut html)
            .with_context(|| format!("cannot read {}", path.display()))?;
        report::records_of(&html).map_err(|e| anyhow!("{}: {e}", path.display()))?
    } else {
        netstall_events::read_records(reader).map_err(|e| anyhow!("{}: {e}", path.display()))?
    };
    Findings::from_records(records).map_err(|e| anyhow!("{}: {e}", path.display()))
}
