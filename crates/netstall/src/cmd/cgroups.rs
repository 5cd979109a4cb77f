//! `netstall cgroups`: dying memory cgroups, who makes them, a guarded
//! memory.stat canary, kernel-era advice and a verified remediation ladder.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use netstall_cgroups::remediate::{self, Level};
use netstall_cgroups::report::{self, Report};
use netstall_cgroups::watch::WatchReport;
use netstall_cgroups::{canary, watch, Host};
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
        --yes to write drop_caches, then re-counts and reports whether it worked."
)]
pub struct Args {
    /// Watch cgroup creation/removal/release for this long (e.g. 10s): top parents by churn and rates.
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
    let host = Host::live();
    let mut report = report::report(&host)?;

    if args.canary {
        let path = report::memory_stat_path(&host, &report)?;
        out.progress(canary::warning(&path, args.cpu));
        report.canary = Some(canary::read_once(&host, &path, args.cpu)?);
        report.refresh_advice();
    }
    if let Some(duration) = args.watch {
        out.progress(format!(
            "watching cgroup mkdir/rmdir/release for {duration:?}..."
        ));
        report.watch = Some(watch::watch(&host, duration)?);
    }
    if let Some(level) = args.remediate {
        if args.yes {
            out.progress(format!(
                "remediation: writing {} to /proc/sys/vm/drop_caches, then re-counting...",
                level.number()
            ));
        }
        report.remediation = Some(remediate::for_report(&host, &report, level, args.yes)?);
    }

    out.json(&report);
    if !out.is_json() {
        print_text(&report, out);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(report: &Report, out: Output) {
    let memory = &report.memory;
    out.text(format!(
        "kernel {}; memory controller on cgroup v{} at {}",
        report.kernel,
        memory.version,
        memory.mount.display()
    ));
    out.text(format!(
        "{:<12} {:>2}  {:<28} {:>8} {:>8} {:>8}",
        "CONTROLLER", "V", "MOUNT", "TOTAL", "LIVE", "DYING"
    ));
    let num = |n: Option<u64>| n.map_or("?".to_owned(), |n| n.to_string());
    for row in &report.hierarchies {
        let mount = row
            .mount
            .as_ref()
            .map_or("(not mounted)".to_owned(), |m| m.display().to_string());
        out.text(format!(
            "{:<12} {:>2}  {:<28} {:>8} {:>8} {:>8}",
            row.controller,
            row.version,
            mount,
            num(row.total),
            num(row.live),
            num(row.dying)
        ));
        for subtree in &row.subtrees {
            out.text(format!(
                "{:>16}{} holds {} dying",
                "",
                subtree.path.display(),
                subtree.dying
            ));
        }
        if let Some(note) = &row.note {
            out.text(format!("{:>16}note: {note}", ""));
        }
    }
    if let (Some(ms), Some(high)) = (report.worst_stall_ms, report.worst_stall_ms_high) {
        out.text(format!(
            "worst memory.stat stall at {} dying memcgs: ≈{ms:.1} ms (up to {high:.1} ms on a busy CPU)",
            memory.dying
        ));
    }
    if let Some(c) = &report.canary {
        let cpu = c.cpu.map_or(String::new(), |cpu| format!(" on CPU {cpu}"));
        out.text(format!(
            "canary: {} read in {:.3} ms{cpu}",
            c.path.display(),
            c.read_ms
        ));
    }
    if let Some(w) = &report.watch {
        print_watch(w, out);
    }
    if let Some(r) = &report.remediation {
        out.text(format!("remediation: {}", r.action));
        out.text(format!("  {}", r.verdict));
    }
    out.text("advice:");
    for line in &report.advice {
        out.text(format!("  - {line}"));
    }
}

fn print_watch(w: &WatchReport, out: Output) {
    out.text(format!(
        "watch ({}, {:.1} s): dying memory cgroups {} -> {}",
        w.source, w.seconds, w.memory_dying_start, w.memory_dying_end
    ));
    out.text(format!(
        "  {:<24} {:>10} {:>10} {:>11} {:>12}",
        "HIERARCHY", "CREATED/s", "REMOVED/s", "RELEASED/s", "NET DYING/s"
    ));
    for h in &w.hierarchies {
        out.text(format!(
            "  {:<24} {:>10.1} {:>10.1} {:>11.1} {:>12.1}",
            h.controllers,
            h.churn.created_per_s,
            h.churn.removed_per_s,
            h.churn.released_per_s,
            h.churn.net_dying_per_s
        ));
    }
    if !w.top_parents.is_empty() {
        out.text(format!(
            "  {:<40} {:<12} {:>10} {:>12}  CREATED BY",
            "TOP PARENTS BY CHURN", "HIERARCHY", "CREATED/s", "NET DYING/s"
        ));
    }
    for p in &w.top_parents {
        let name = p
            .path
            .as_ref()
            .map_or(p.cgroup.clone(), |d| d.display().to_string());
        let creators: Vec<String> = p
            .creators
            .iter()
            .map(|c| format!("{} ({})", c.comm, c.created))
            .collect();
        out.text(format!(
            "  {:<40} {:<12} {:>10.1} {:>12.1}  {}",
            name,
            p.controllers,
            p.churn.created_per_s,
            p.churn.net_dying_per_s,
            creators.join(", ")
        ));
    }
    if let Some(note) = &w.note {
        out.text(format!("  note: {note}"));
    }
}
