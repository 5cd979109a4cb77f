//! `netstall trace`: eBPF stall detectors with culprit attribution.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use netstall_core::duration;
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
use netstall_kernel::trace::{self, Stop, TraceConfig};

#[derive(clap::Args)]
#[command(
    about = "Trace every RX stall on every CPU and name its culprit (eBPF)",
    long_about = "Trace every RX stall on every CPU with eBPF tracepoints: how long, which packets \
        waited, who drained them, and who held the CPU (task, syscall, file, kernel stack).\n\n\
        Detectors: rx-backlog (per-packet backlog wait), irqs-off (local timer gaps on a busy \
        CPU), softirq-delay (NET_RX blocked -> run), ksoftirqd (NET_RX takeovers), rstat-hold \
        (cgroup rstat flush with IRQs off). Needs CAP_BPF, CAP_PERFMON and CAP_SYSLOG.\n\n\
        Exit code 2 on errors (missing privileges or kernel features name what is missing).",
    after_help = "Examples:\n  \
        sudo netstall trace -w 60s\n  \
        sudo netstall trace --cpus 0-3 --threshold 5ms --syscalls\n  \
        sudo netstall trace --icmp-seq --json > trace.jsonl\n  \
        sudo netstall trace -w 30s --self-cost                what each BPF program cost\n  \
        sudo netstall trace -w 60s --record stalls.rec         the raw records too, for a bug report"
)]
pub struct Args {
    /// How long to trace (default: until Ctrl-C).
    #[arg(short = 'w', long = "duration", value_parser = duration::parse_nonzero)]
    duration: Option<Duration>,
    /// Report stalls at least this long.
    #[arg(long, default_value = "10ms", value_parser = duration::parse_nonzero)]
    threshold: Duration,
    /// Only these CPUs, e.g. 0 or 0-3,8.
    #[arg(long)]
    cpus: Option<String>,
    /// Print every ICMP echo request processed: TGID PID COMM ICMP_SEQ, marking ksoftirqd.
    #[arg(long)]
    icmp_seq: bool,
    /// Also print syscalls slower than the threshold (with the file of fd-based calls).
    #[arg(long)]
    syscalls: bool,
    /// Print each BPF program's run count and ns/event (kernel BPF stats) at the end.
    #[arg(long)]
    self_cost: bool,
    /// Also count packet drops (with the kernel's reason) and TCP retransmits, every second.
    #[arg(long)]
    drops: bool,
    /// Also write the raw kernel records, and what decoding them needs, to FILE (replays offline).
    #[arg(long, value_name = "FILE")]
    record: Option<std::path::PathBuf>,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let config = TraceConfig {
        threshold: args.threshold,
        cpus: args
            .cpus
            .as_deref()
            .map(netstall_core::cpu::parse_list)
            .transpose()?,
        icmp: args.icmp_seq,
        syscalls: args.syscalls.then_some(args.threshold),
        self_cost: args.self_cost,
        steal: true,
        record: args.record.clone(),
        drops: args.drops,
        ..TraceConfig::default()
    };
    let stop = Stop {
        duration: args.duration,
        shutdown: Some(Shutdown::on_signals()?),
    };
    trace::run_printed(&config, &stop, out)?;
    Ok(ExitCode::SUCCESS)
}
