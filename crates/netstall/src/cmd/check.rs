//! `netstall check`: the node-problem-detector custom plugin. Asks the
//! local agent's /healthz and prints one short line; exit 0 OK, 1 problem,
//! 2 unknown (the agent cannot be asked, or cannot see).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use netstall_agent::health::{check_verdict, CheckStatus, HealthReport};
use netstall_core::duration;
use netstall_core::output::Output;

#[derive(clap::Args)]
#[command(
    about = "node-problem-detector plugin: one line from the agent's verdict; exit 0 OK, 1 problem, 2 unknown",
    long_about = "Asks the netstall agent's /healthz for this node's verdict (recent RX stalls, probes \
        stalled toward most peers, too many dying memory cgroups) and prints one short line. Exit codes \
        follow node-problem-detector's plugin protocol: 0 OK, 1 problem, 2 unknown (the agent is unreachable, \
        or blind: its kernel stall tracer off or unavailable, a worker thread down). --timeout bounds the \
        whole exchange, however slowly the agent answers.",
    after_help = "Examples:\n  \
        netstall check                                   the agent on this node (127.0.0.1:9977)\n  \
        netstall check --agent 10.0.0.7:9977 --timeout 1s\n  \
        netstall check; echo \"exit $?\"                   0 OK, 1 problem, 2 unknown"
)]
pub struct Args {
    /// The agent's /healthz address.
    #[arg(long, default_value = "127.0.0.1:9977")]
    agent: SocketAddr,
    /// How long the whole exchange with the agent may take.
    #[arg(long, default_value = "3s", value_parser = duration::parse_nonzero)]
    timeout: Duration,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let report = netstall_agent::http::get(args.agent, "/healthz", args.timeout)
        .and_then(|body| HealthReport::from_json(&body).map_err(anyhow::Error::msg));
    let (status, line) = match &report {
        Ok(report) => check_verdict(report),
        Err(e) => (
            CheckStatus::Unknown,
            format!("Unknown: {}", format!("{e:#}").replace('\n', " ")),
        ),
    };
    match (&report, out.is_json()) {
        (Ok(report), true) => out.json(report.clone()),
        _ => println!("{line}"),
    }
    Ok(ExitCode::from(status as u8))
}
