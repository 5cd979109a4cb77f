//! `netstall`: find, explain and fix sporadic network stalls on Linux and
//! Kubernetes nodes. This binary is thin: it parses the command line and
//! hands each command to the crate that does the work.

mod cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use netstall_core::output::Output;

#[derive(Parser)]
#[command(
    name = "netstall",
    version,
    about = "Find, explain and fix sporadic network stalls on Linux and Kubernetes nodes",
    long_about = "Find, explain and fix sporadic network stalls on Linux and Kubernetes nodes.\n\n\
        Exit codes: 0 ok, 1 a finding (stalls found / node unhealthy) for checks, \
        2 usage or environment error.",
    after_help = "Examples:\n  \
        sudo netstall demo                              the incident, reproduced and diagnosed\n  \
        sudo netstall doctor -w 30s --report doctor.html\n  \
        sudo netstall probe 10.0.0.7 -i 10ms -w 60s\n  \
        netstall probe --help                           every command has its own examples\n  \
        source <(netstall completions bash)             completion for this shell\n\n\
        Manual: netstall man | man -l -",
    propagate_version = true
)]
struct Cli {
    /// Print one JSON object per line (each with a "type") instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

// No doc comments on these variants: clap would take a variant's one-line
// doc comment as its `about` and reset its `long_about`, hiding the long
// help and examples that each command's `Args` carries (`#[command(...)]`
// in its cmd module).
#[derive(Subcommand)]
enum Command {
    Cgroups(cmd::cgroups::Args),
    Demo(cmd::demo::Args),
    Doctor(cmd::doctor::Args),
    Report(cmd::report::Args),
    Lab(cmd::lab::Args),
    Responder(cmd::responder::Args),
    Probe(cmd::probe::Args),
    Trace(cmd::trace::Args),
    Top(cmd::top::Args),
    Collapse(cmd::collapse::Args),
    Flame(cmd::flame::Args),
    Agent(Box<cmd::agent::Args>),
    Check(cmd::check::Args),
    Xray(cmd::xray::Args),
    Bisect(cmd::bisect::Args),
    Kubectl(cmd::kubectl::Args),
    CopyBinary(cmd::copy_binary::Args),
    Completions(cmd::completions::Args),
    Man(cmd::man::Args),
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
            let line = format!("{} (see --help)", usage_error_line(&e.render().to_string()));
            eprintln!("netstall: {line}");
            if asks_for_json() {
                print_failure(line.trim_start_matches("error: "));
            }
            return ExitCode::from(2);
        }
    };
    let out = Output::new(cli.json);
    let result = match cli.command {
        Command::Cgroups(args) => cmd::cgroups::run(args, out),
        Command::Demo(args) => cmd::demo::run(args, out),
        Command::Doctor(args) => cmd::doctor::run(args, out),
        Command::Report(args) => cmd::report::run(args, out),
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
        Command::Completions(args) => cmd::completions::run(args, Cli::command()),
        Command::Man(args) => cmd::man::run(args, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, whatever the chain of causes: `a: b: c`.
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("netstall: error: {message}");
            if out.is_json() {
                print_failure(&message);
            }
            ExitCode::from(2)
        }
    }
}

/// Whether the command line asked for JSON, read before clap could parse
/// it (a usage error is JSON too then).
fn asks_for_json() -> bool {
    std::env::args()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// The `error` record, last on standard output.
fn print_failure(message: &str) {
    let failure = netstall_events::Failure {
        message: message.to_string(),
        exit_code: 2,
    };
    // A closed standard output leaves only the stderr line: nothing more to do.
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        netstall_events::Record::Error(failure).to_json_line()
    );
}
