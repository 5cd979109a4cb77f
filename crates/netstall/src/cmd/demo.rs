//! `netstall demo`: the story's incident, reproduced for real in the lab,
//! diagnosed, remediated, and shown gone.

use std::process::ExitCode;

use anyhow::Result;
use netstall_core::output::Output;
use netstall_doctor::demo::{self, DemoConfig};

#[derive(clap::Args)]
#[command(
    about = "Reproduce the incident for real in the lab, diagnose it, fix it, prove it is gone",
    long_about = "Builds the lab (client -> NodePort -> VXLAN -> node2 -> pod), probes it healthy, \
    injects the incident for real (dying memory cgroups + a cadvisor-like memory.stat reader on the RX CPU), \
    shows the probes' sawtooth, lets `netstall doctor` name the cause and culprit, remediates \
    (drop_caches level 1), proves it is gone, and removes everything. About a minute; needs root and 2 CPUs.",
    after_help = "Examples:\n  \
    sudo netstall demo\n  \
    sudo netstall demo --zombies 50000 --report demo.html\n  \
    sudo netstall demo --keep          then explore: netstall lab status --prefix demo"
)]
pub struct Args {
    /// Dying memory cgroups to create (about 2 µs of IRQs-off each per memory.stat flush).
    #[arg(long, default_value_t = 25_000)]
    zombies: u32,
    /// Keep the lab up at the end (remove it with `netstall lab down --prefix PREFIX`).
    #[arg(long)]
    keep: bool,
    /// Lab name prefix.
    #[arg(long, default_value = "demo")]
    prefix: String,
    /// Also write the incident's HTML report here.
    #[arg(long, value_name = "FILE.html")]
    report: Option<std::path::PathBuf>,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let config = DemoConfig {
        zombies: args.zombies,
        keep: args.keep,
        prefix: args.prefix,
        report: args.report,
    };
    Ok(if demo::run(&config, out)?.reproduced() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
