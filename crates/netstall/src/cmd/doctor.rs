//! `netstall doctor`: tracer, probes, CPU sampling and cgroup counts
//! together, correlated into one verdict with evidence.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use netstall_core::duration;
use netstall_core::output::Output;
use netstall_doctor::diagnose::{Severity, Status};
use netstall_doctor::run::{self, DoctorConfig, Progress, Target};
use netstall_doctor::{report, Verdict};

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
    netstall doctor --json | jq 'select(.type==\"verdict\") | .status'"
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
    /// Write a self-contained HTML report here.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
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
    if let Some(path) = &args.report {
        let html = report::render(&run.verdict, &run.findings, &run.extras);
        std::fs::write(path, html)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        out.progress(format!("report written to {}", path.display()));
    }
    Ok(match run.verdict.status {
        Status::Healthy | Status::Degraded => ExitCode::SUCCESS,
        Status::Unhealthy => ExitCode::from(1),
        Status::Unknown => ExitCode::from(2),
    })
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
            out.json(&*stall);
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
    out.json(&run.verdict);
    print_verdict(&run.verdict, out);
    Ok(run)
}

/// The verdict for people.
pub fn print_verdict(verdict: &Verdict, out: Output) {
    out.text(verdict.headline());
    for (rank, cause) in verdict.causes.iter().enumerate() {
        out.text(format!(
            "{}. {} [{}] (confidence {:.0}%{}): {}",
            rank + 1,
            cause.id.as_str(),
            match cause.severity {
                Severity::Unhealthy => "unhealthy",
                Severity::Degraded => "degraded",
            },
            cause.confidence * 100.0,
            cause.cpu.map(|c| format!(", CPU {c}")).unwrap_or_default(),
            cause.title
        ));
        for e in &cause.evidence {
            out.text(format!("   - {e}"));
        }
        out.text("   remediation:");
        for (i, r) in cause.remediation.iter().enumerate() {
            out.text(format!("     {}. {r}", i + 1));
        }
    }
    for cause in &verdict.also {
        out.text(format!(
            "also: {} (degraded, {} episode{}, worst {:.1} ms): {}",
            cause.id.as_str(),
            cause.episodes + cause.stalls,
            if cause.episodes + cause.stalls == 1 {
                ""
            } else {
                "s"
            },
            cause.worst_ms,
            cause.title
        ));
    }
    if verdict.observer.stalls > 0 {
        out.text(format!(
            "observer: netstall's own threads ({}) were seen in {} stall(s), worst {:.1} ms: its cost, not a cause",
            verdict.observer.threads.join(", "),
            verdict.observer.stalls,
            verdict.observer.worst_ms
        ));
    }
    let sources: Vec<String> = verdict
        .sources
        .iter()
        .map(|s| format!("{} {}", s.name, s.state))
        .collect();
    out.text(format!("sources: {}", sources.join(", ")));
    for s in verdict.sources.iter().filter(|s| s.state == "unavailable") {
        out.text(format!("   - {}: {}", s.name, s.detail));
    }
    if let Some(t) = verdict.time_to_verdict_s {
        out.text(format!(
            "time to verdict: {t:.1} s from start{}",
            verdict
                .from_first_stall_s
                .map(|f| format!(", {f:.1} s from the first stall"))
                .unwrap_or_default()
        ));
    }
}
