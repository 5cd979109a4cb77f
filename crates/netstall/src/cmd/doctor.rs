//! `netstall doctor`: tracer, probes, CPU sampling and cgroup counts
//! together, correlated into one verdict with evidence.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Result;
use netstall_core::{duration, output::Output};
use netstall_doctor::replay;
use netstall_doctor::run::{self, DoctorConfig, Target};

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
    /// Probe this target while watching: HOST (ICMP echo), HOST:PORT (TCP SYN) or http://HOST:PORT/PATH (HTTP GET). Repeatable.
    #[arg(long = "target", value_name = "TARGET")]
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
    /// Do not count packet drops and TCP retransmits (eBPF, on by default).
    #[arg(long)]
    no_drops: bool,
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
        let verdict = replay::replay(path, args.report.as_deref(), out)?;
        return Ok(ExitCode::from(verdict.status.exit_code()));
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
        drops: !args.no_drops,
        ..DoctorConfig::default()
    };
    let run = run::run_narrated(&config, out)?;
    run.write_files(args.save.as_deref(), args.report.as_deref(), out)?;
    Ok(ExitCode::from(run.verdict.status.exit_code()))
}
