//! `netstall man`: the manual page (clap_mangen), from the same definitions
//! as `--help`, so the two cannot disagree.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

#[derive(clap::Args)]
#[command(
    about = "Print the manual page (roff), or write one page per command to a directory",
    long_about = "Prints netstall(1) in roff on standard output: the commands, the global options, \
        the exit codes. With --dir, writes netstall.1 and one page per command and subcommand \
        (netstall-probe.1, netstall-lab-up.1, ...) into DIR, ready for a man1 directory.",
    after_help = "Examples:\n  \
        netstall man | man -l -\n  \
        netstall man > netstall.1\n  \
        sudo netstall man --dir /usr/local/share/man/man1 && man netstall-probe"
)]
pub struct Args {
    /// Write every command's page into this directory instead of printing netstall(1).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(args: Args, command: clap::Command) -> Result<ExitCode> {
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .context("cannot render the manual page")?;
            netstall_core::output::write_stdout(&page)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
