//! `netstall completions SHELL`: the shell completion script (clap_complete).

use std::process::ExitCode;

use anyhow::Result;
use clap_complete::Shell;

#[derive(clap::Args)]
#[command(
    about = "Print a shell completion script: bash, zsh, fish, elvish or powershell",
    long_about = "Prints the completion script for SHELL on standard output: every command, \
        subcommand and flag of this netstall, with the values of flags that take a fixed set. \
        Install it where your shell looks for completions (see the examples), then start a new shell.",
    after_help = "Examples:\n  \
        netstall completions bash > /etc/bash_completion.d/netstall\n  \
        source <(netstall completions bash)                 this shell only\n  \
        netstall completions zsh > \"${fpath[1]}/_netstall\"\n  \
        netstall completions fish > ~/.config/fish/completions/netstall.fish"
)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: Args, mut command: clap::Command) -> Result<ExitCode> {
    let name = command.get_name().to_string();
    // Into memory first: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    netstall_core::output::write_stdout(&script)?;
    Ok(ExitCode::SUCCESS)
}
