//! One module per command: argument definitions and the glue to the crate
//! that does the work. Nothing here should be more than a few lines per command.

pub mod agent;
pub mod bisect;
pub mod cgroups;
pub mod check;
pub mod collapse;
pub mod completions;
pub mod copy_binary;
pub mod demo;
pub mod doctor;
pub mod flame;
pub mod kubectl;
pub mod lab;
pub mod man;
pub mod probe;
pub mod responder;
pub mod top;
pub mod trace;
pub mod xray;

use std::sync::Arc;

use anyhow::{Context, Result};
use netstall_core::shutdown::Shutdown;

/// Writes a generated text (a completion script, a manual page) to standard
/// output. A reader that stops early (`| head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// What SIGINT and SIGTERM request for the long-running commands (probe,
/// trace, agent): the command finishes cleanly (summary printed, programs
/// detached) instead of dying mid-way.
pub fn stop_on_signal() -> Result<Arc<Shutdown>> {
    Shutdown::on_signals().context("cannot set up the SIGINT/SIGTERM handling")
}
