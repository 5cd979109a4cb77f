//! `netstall doctor`: tracer, probes, CPU sampling and cgroup counts
//! together, correlated into one verdict with evidence.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use netstall_core::duration;
use netstall_core::output::Output;
use netstall_doctor::diagnose::Status;
use netstall_doctor::findings::Extras;
use netstall_doctor::run::{self, DoctorConfig, Progress, Target};
use netstall_doctor::{report, Findings, Verdict};

#[derive(clap::Args)]
#[command(
    about = "One verdict with evidence: tracer, probes, CPU sampling and cgroup counts together",
    long_about = "Runs the eBPF stall tracer on every CPU, probes the given targets, samples the \
    CPUs (sample gaps = IRQs off; the samples before each stall), and counts dying memory cgroups \
    (never reading memory.stat), all on one time base; then prints a verdict: the ranked causes, each \
    with its severity, confidence, CPU, culprit, evidence and remediation.\n\n\
    Status: healthy (nothing over the threshold), degraded (short delays with their explanation, \
    e.g. vCPU steal on a busy VM), unhealthy (a cause over its threshold), unknown (a source could \
    not run). How it decides: docs/doctor.md.\n\n\
    Exit codes: 0 healthy or degraded, 1 unhealthy, 2 unknown or error. Needs root (CAP_BPF, \
    CAP_PERFMON, CAP_SYSLOG, CAP_NET_RAW); without them it refuses, unless --allow-partial.",
    after_help = "Examples:\n  \
    netstall doctor -w 30s                               watch every CPU for 30 s\n  \
    netstall doctor --target 10.0.0.7:8080 --cpu 1       probe a pod's port from CPU 1 while watching\n  \
    netstall doctor --netns client --target 192.168.50.1 --report doctor.html\n  \
    netstall doctor --json | jq 'select(.type==\"verdict\") | .status'\n  \
    netstall doctor -w 60s --save run.jsonl --report run.html   keep what the verdict was made from\n  \
    netstall doctor --replay run.jsonl --json            the same verdict again, offline, no privileges\n  \
    netstall doctor --replay run.html --report again.html   from a report: it embeds its records"
)]
pub struct Args {
    /// How long to watch.
    #[arg(short = 'w', long = "duration", default_value = "20s", value_parser = duration::parse_nonzero)]
    duration: Duration,
    /// Probe this target while watching: HOST (ICMP echo) or HOST:PORT (TCP SYN). Repeatable.
    #[arg(long = "target", value_name = "HOST[:PORT]")]
    targets: Vec<Target>,
    /// Time between probes to each target.
    #[arg(short = 'i', long, default_value = "10ms", value_parser = duration::parse_nonzero)]
    interval: Duration,
    /// TCP source ports per target, spread over RX queues/CPUs like real connections.
    #[arg(long, default_value_t = 4)]
    flows: u16,
    /// Probe from this network namespace (from `ip netns`).
    #[arg(long)]
    netns: Option<String>,
    /// Pin the probers to this CPU (keep them off the CPU that stalls).
    #[arg(long)]
    cpu: Option<u32>,
    /// Report kernel stalls at least this long.
    #[arg(long, default_value = "10ms", value_parser = duration::parse_nonzero)]
    threshold: Duration,
    /// Do not sample CPUs (no sample gaps, no pre-stall flame chart).
    #[arg(long)]
    no_sample: bool,
    /// Also record which context processed every ICMP echo request.
    #[arg(long)]
    icmp_seq: bool,
    /// Run even without the privileges or kernel features the tracer and the
    /// sampler need: the verdict is then `unknown` (exit 2), never `healthy`.
    #[arg(long)]
    allow_partial: bool,
    /// Write a self-contained HTML report here (it embeds the run's records,
    /// so `--replay` reads it back).
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Write every record the verdict was computed from (JSON lines: the run,
    /// stalls, steal, probe targets with their episodes, dying-memcg count,
    /// sample gaps, ICMP echoes, the flame chart's stacks, the verdict).
    #[arg(long, value_name = "FILE.jsonl")]
    save: Option<PathBuf>,
    /// Do not watch: recompute the verdict (and with --report, the report)
    /// from a file written by --save or --report, here or on another
    /// machine. Needs no privileges.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["targets", "netns", "cpu", "icmp_seq", "allow_partial", "save"])]
    replay: Option<PathBuf>,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    if let Some(path) = &args.replay {
        return replay(path, args.report.as_deref(), out);
    }
    let config = DoctorConfig {
        duration: args.duration,
        targets: args.targets,
        interval: args.interval,
        flows: args.flows,
        probe_netns: args.netns,
        probe_cpu: args.cpu,
        threshold: args.threshold,
        sample: !args.no_sample,
        icmp_seq: args.icmp_seq,
        allow_partial: args.allow_partial,
    };
    let run = diagnose(&config, out)?;
    if let Some(path) = &args.save {
        let mut lines = String::new();
        for record in run.findings.to_records(&run.extras, Some(&run.verdict)) {
            lines.push_str(&record.to_json_line());
            lines.push('\n');
        }
        std::fs::write(path, lines)
            .with_context(|| format!("cannot write the records {}", path.display()))?;
        out.progress(format!("records written to {}", path.display()));
    }
    if let Some(path) = &args.report {
        write_report(path, &run.verdict, &run.findings, &run.extras, out)?;
    }
    Ok(exit_code(run.verdict.status))
}

fn exit_code(status: Status) -> ExitCode {
    match status {
        Status::Healthy | Status::Degraded => ExitCode::SUCCESS,
        Status::Unhealthy => ExitCode::from(1),
        Status::Unknown => ExitCode::from(2),
    }
}

fn write_report(
    path: &Path,
    verdict: &Verdict,
    findings: &Findings,
    extras: &Extras,
    out: Output,
) -> Result<()> {
    let html = report::render(verdict, findings, extras);
    std::fs::write(path, html)
        .with_context(|| format!("cannot write the report {}", path.display()))?;
    out.progress(format!("report written to {}", path.display()));
    Ok(())
}

/// `--replay`: the verdict (and report) of a saved run, offline.
fn replay(path: &Path, report_path: Option<&Path>, out: Output) -> Result<ExitCode> {
    let saved = netstall_doctor::replay::read(path)?;
    let verdict = netstall_doctor::diagnose(&saved.findings);
    out.progress(format!(
        "doctor: replaying {} ({}; {} stall(s), {} target(s))",
        path.display(),
        saved.extras.host,
        saved.findings.stalls.len(),
        saved.findings.targets.len()
    ));
    out.emit(verdict.clone());
    if let Some(report_path) = report_path {
        write_report(report_path, &verdict, &saved.findings, &saved.extras, out)?;
    }
    Ok(exit_code(verdict.status))
}

/// Runs the doctor with live progress, prints the verdict, and returns the run.
pub fn diagnose(config: &DoctorConfig, out: Output) -> Result<run::DoctorRun> {
    let run = run::run(config, |progress| match progress {
        Progress::Started {
            targets, sampling, ..
        } => out.progress(format!(
            "doctor: tracing every CPU{}{} for {:?}...",
            if targets > 0 {
                format!(", probing {targets} target(s)")
            } else {
                String::new()
            },
            if sampling { ", sampling CPUs" } else { "" },
            config.duration
        )),
        Progress::Stall(stall) => {
            out.json((*stall).clone());
            out.progress(format!(
                "  {}",
                netstall_kernel::trace::format::stall_line(&stall)
            ));
        }
        Progress::Tick {
            elapsed,
            stalls,
            total,
        } => out.progress(format!(
            "doctor: {:.0}/{:.0} s, {stalls} stall(s) so far",
            elapsed.as_secs_f64(),
            total.as_secs_f64()
        )),
        Progress::TracerUnavailable(reason) => {
            out.progress(format!("doctor: the kernel tracer could not run: {reason}"))
        }
        Progress::SamplerUnavailable(reason) => {
            out.progress(format!("doctor: CPU sampling could not run: {reason}"))
        }
        Progress::StealUnavailable(reason) => {
            out.progress(format!("doctor: vCPU steal could not be read: {reason}"))
        }
        Progress::Finished => {}
    })?;
    for target in &run.findings.targets {
        if let Some(error) = &target.error {
            out.progress(format!("doctor: {}: {error}", target.target));
        }
    }
    out.emit(run.verdict.clone());
    Ok(run)
}
