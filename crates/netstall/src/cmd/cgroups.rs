//! `netstall cgroups`: dying memory cgroups, who makes them, a guarded
//! memory.stat canary, kernel-era advice and a verified remediation ladder.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use netstall_cgroups::remediate::Level;
use netstall_cgroups::report::{self, Extras};
use netstall_cgroups::Host;
use netstall_core::duration;
use netstall_core::output::Output;

#[derive(clap::Args)]
#[command(
    about = "Dying (zombie) cgroups: counts, who makes them, a memory.stat canary, advice, remediation",
    long_about = "Counts dying cgroups per controller and hierarchy (cgroup v1: /proc/cgroups minus live \
        directories; v2: cgroup.stat), says which mount holds the memory controller, and what the count \
        means on this kernel (worst memory.stat stall).\n\n\
        Nothing is written and memory.stat is not read unless asked: --canary times ONE read (on an \
        affected node that read stalls its CPU); --remediate LEVEL shows what it would write and needs \
        --yes to write drop_caches, then re-counts and reports whether it worked.",
    after_help = "Examples:\n  \
        netstall cgroups                         counts and advice; reads no memory.stat\n  \
        sudo netstall cgroups --watch 10s        who creates and removes cgroups, who reads their stats\n  \
        sudo netstall cgroups --canary --cpu 3   time ONE memory.stat read, on CPU 3\n  \
        sudo netstall cgroups --remediate 1      what dropping the page cache would write\n  \
        sudo netstall cgroups --remediate 1 --yes   write it, count again, tell whether it worked"
)]
pub struct Args {
    /// Watch cgroup creation/removal/release for this long (e.g. 10s): top parents by churn and rates,
    /// and the stats readers' ledger (flushes, IRQs-off time per reader).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nonzero)]
    watch: Option<Duration>,
    /// Time one read of the memory hierarchy's root memory.stat (it stalls the CPU on an affected node).
    #[arg(long)]
    canary: bool,
    /// The CPU the canary read runs on.
    #[arg(long, requires = "canary")]
    cpu: Option<u32>,
    /// Drop caches at this level (1 page cache, 2 slab, 3 both), then re-count (and re-time the canary).
    #[arg(long, value_name = "LEVEL", value_parser = Level::parse)]
    remediate: Option<Level>,
    /// Really write drop_caches for --remediate (without it: a dry run).
    #[arg(long, requires = "remediate")]
    yes: bool,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let extras = Extras {
        canary: args.canary,
        canary_cpu: args.cpu,
        watch: args.watch,
        remediate: args.remediate,
        write: args.yes,
    };
    out.emit(report::report_with(&Host::live(), &extras, out)?);
    Ok(ExitCode::SUCCESS)
}
