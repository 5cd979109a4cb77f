//! `netstall`: find, explain and fix sporadic network stalls on Linux and
//! Kubernetes nodes. This binary is thin: it parses the command line and
//! hands each command to the crate that does the work.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use netstall_core::output::Output;

#[derive(Parser)]
#[command(
    name = "netstall",
    version,
    about = "Find, explain and fix sporadic network stalls on Linux and Kubernetes nodes",
    long_about = "Find, explain and fix sporadic network stalls on Linux and Kubernetes nodes.\n\n\
        Exit codes: 0 ok, 1 a finding (stalls found / node unhealthy) for checks, \
        2 usage or environment error.",
    propagate_version = true
)]
struct Cli {
    /// Print one JSON object per line (each with a "type") instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dying cgroups: counts, who makes them, a memory.stat canary, advice, verified remediation.
    Cgroups(cmd::cgroups::Args),
    /// Reproduce the incident for real in the lab, diagnose it, fix it, prove it is gone.
    Demo(cmd::demo::Args),
    /// One verdict with evidence: tracer, probes, CPU sampling and cgroup counts together.
    Doctor(cmd::doctor::Args),
    /// Build, inspect and break the incident lab (network namespaces, injectors).
    Lab(cmd::lab::Args),
    /// Run the TCP/HTTP and UDP echo responders used by the lab and by your own tests.
    Responder(cmd::responder::Args),
    /// Probe a target precisely (ICMP, TCP SYN, UDP, HTTP) and find stall episodes.
    Probe(cmd::probe::Args),
    /// Trace every RX stall on every CPU and name its culprit (eBPF).
    Trace(cmd::trace::Args),
    // Its about, long help and examples are on `cmd::top::Args` (a doc
    // comment here would replace the long help).
    Top(cmd::top::Args),
    /// Fold `perf script` output into stacks: aggregated (as stackcollapse-perf.pl) or in time order.
    Collapse(cmd::collapse::Args),
    /// Draw an SVG flame graph, or a flame chart (time on the x axis), from folded stacks or perf script text.
    Flame(cmd::flame::Args),
    /// Always-on node agent: stall histograms, peer mesh probing, Prometheus /metrics, /healthz.
    Agent(Box<cmd::agent::Args>),
    /// node-problem-detector plugin: the agent's verdict in one line; exit 0 OK, 1 problem, 2 unknown.
    Check(cmd::check::Args),
    /// Sample CPUs as an ordered timeline: sample gaps (IRQs off), softirq stalls, the samples before ksoftirqd.
    Xray(cmd::xray::Args),
    /// The layer-by-layer experiment: NodePort vs pod vs node IP, TCP vs ICMP, sender vs receiver.
    Bisect(cmd::bisect::Args),
    /// On a cluster (also `kubectl netstall`): the doctor on one node in a short-lived pod; every node's status.
    Kubectl(cmd::kubectl::Args),
    /// Copy this binary to a path (the image has no shell; node-problem-detector's pod gets its plugin so).
    CopyBinary(cmd::copy_binary::Args),
}

/// The command line, with `kubectl netstall ARGS` (this binary installed as
/// `kubectl-netstall`, kubectl's plugin convention) read as `netstall kubectl ARGS`.
fn command_line() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    if invoked_as.as_deref() == Some("kubectl-netstall") {
        args.insert(1, "kubectl".into());
    }
    args
}

/// clap's usage error in one line: the reason and what it lists (a missing
/// argument's name), without the usage block and tips that follow it.
fn usage_error_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .take_while(|l| {
            !(l.starts_with("Usage:")
                || l.starts_with("For more information")
                || l.starts_with("tip:"))
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(command_line()) {
        Ok(cli) => cli,
        // --help, --version, and help for a bare `netstall lab`: in full.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
        // A usage error: one line, like every other error.
        Err(e) => {
            eprintln!(
                "netstall: {} (see --help)",
                usage_error_line(&e.render().to_string())
            );
            return ExitCode::from(2);
        }
    };
    let out = Output::new(cli.json);
    let result = match cli.command {
        Command::Cgroups(args) => cmd::cgroups::run(args, out),
        Command::Demo(args) => cmd::demo::run(args, out),
        Command::Doctor(args) => cmd::doctor::run(args, out),
        Command::Lab(args) => cmd::lab::run(args, out),
        Command::Responder(args) => cmd::responder::run(args, out),
        Command::Probe(args) => cmd::probe::run(args, out),
        Command::Trace(args) => cmd::trace::run(args, out),
        Command::Top(args) => cmd::top::run(args, out),
        Command::Collapse(args) => cmd::collapse::run(args, out),
        Command::Flame(args) => cmd::flame::run(args, out),
        Command::Agent(args) => cmd::agent::run(*args, out),
        Command::Check(args) => cmd::check::run(args, out),
        Command::Xray(args) => cmd::xray::run(args, out),
        Command::Bisect(args) => cmd::bisect::run(args, out),
        Command::Kubectl(args) => cmd::kubectl::run(args, out),
        Command::CopyBinary(args) => cmd::copy_binary::run(args, out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, whatever the chain of causes: `a: b: c`.
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("netstall: error: {message}");
            ExitCode::from(2)
        }
    }
}
