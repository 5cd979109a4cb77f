//! `netstall report`: the doctor's verdict from an agent's flight recorder.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Result;
use netstall_core::{duration, output::Output};
use netstall_doctor::recorded;

#[derive(clap::Args)]
#[command(
    about = "The doctor's verdict and report from what an agent's flight recorder kept",
    long_about = "Reads the stall evidence an agent kept (its --state-dir, or GET /stalls of a running agent) \
    and computes the verdict and HTML report `netstall doctor` would, offline, with no privileges. Exit \
    codes as doctor: 0 healthy or degraded, 1 unhealthy, 2 unknown or error.",
    after_help = "Examples:\n  \
    netstall report --from /var/lib/netstall --since 1h\n  \
    netstall report --from http://10.0.0.7:9977 --json --report node7.html"
)]
pub struct Args {
    /// The agent's --state-dir, or its address (http://HOST:PORT).
    #[arg(long, value_name = "DIR|URL")]
    from: String,
    /// Only the last D (e.g. 30m, 1h) [default: everything kept].
    #[arg(long, value_name = "D", value_parser = duration::parse_nonzero)]
    since: Option<Duration>,
    /// Also write the self-contained HTML report here.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let verdict = recorded::report(&args.from, args.since, args.report.as_deref(), out)?;
    Ok(ExitCode::from(verdict.status.exit_code()))
}
