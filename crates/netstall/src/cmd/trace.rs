//! `netstall trace`: eBPF stall detectors with culprit attribution.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use netstall_core::duration;
use netstall_core::output::Output;
use netstall_kernel::trace::{self, format, Stop, TraceConfig, TraceEvent};

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
    /// Also write the raw kernel records, with what decoding them needs, to FILE: a recording that
    /// replays offline (attach it to a bug report).
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
        ..TraceConfig::default()
    };
    let stop = Stop {
        duration: args.duration,
        shutdown: Some(super::stop_on_signal()?),
    };
    let mut icmp_header = args.icmp_seq;
    let report = trace::run(&config, &stop, |event| match event {
        TraceEvent::Started(start) => {
            out.json(start.clone());
            for missing in &start.unavailable {
                out.progress(format!(
                    "note: detector {} unavailable: {}",
                    missing.detector, missing.reason
                ));
            }
            out.progress(format!(
                "tracing RX stalls >= {:?} with {}{} ({})...",
                args.threshold,
                start
                    .detectors
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                args.duration
                    .map(|d| format!(" for {d:?}"))
                    .unwrap_or_default(),
                if args.duration.is_some() {
                    "Ctrl-C ends early"
                } else {
                    "Ctrl-C to end"
                }
            ));
        }
        TraceEvent::Stall(stall) => {
            out.json(stall.clone());
            out.text(format::stall_line(&stall));
        }
        TraceEvent::Icmp(icmp) => {
            if std::mem::take(&mut icmp_header) {
                out.text(format::ICMP_HEADER);
            }
            out.json(icmp.clone());
            out.text(format::icmp_row(&icmp));
        }
        TraceEvent::Syscall(syscall) => {
            out.json(syscall.clone());
            out.text(format::syscall_line(&syscall));
        }
        // Steal as long as a stall: the CPU did not run, nothing inside to blame.
        TraceEvent::Steal(steal) => {
            if steal.steal_ms * 1e6 >= args.threshold.as_nanos() as f64 {
                out.json(steal.clone());
                out.text(format::steal_line(&steal));
            }
        }
        // Not asked for (`totals_every` unset): the summary has them.
        TraceEvent::Totals(_) => {}
    })?;

    for cost in &report.self_cost {
        out.json(cost.clone());
        out.text(format!(
            "COST {:<32} {:<14} runs={:<10} {}",
            cost.program,
            cost.detector,
            cost.run_count,
            cost.ns_per_event
                .map(|ns| format!("{ns:.1} ns/event"))
                .unwrap_or_else(|| "-".into())
        ));
    }
    for hist in &report.histograms {
        out.json(hist.clone());
        let buckets: Vec<String> = hist
            .buckets
            .iter()
            .map(|(le_ns, n)| format!("<{}:{n}", short_ns(*le_ns)))
            .collect();
        out.text(format!(
            "HIST {} cpu={} {}",
            hist.detector.name(),
            hist.cpu,
            buckets.join(" ")
        ));
    }
    out.json(report.clone());
    out.text(format!(
        "{} stalls in {:.1} s; {} packets measured ({} without an enqueue stamp), {} waited >= 1 ms; {} ksoftirqd takeovers; {} events lost (ring buffer full)",
        report.stalls,
        report.duration_ms as f64 / 1e3,
        report.packets,
        report.unmatched_packets,
        report.packets_waited,
        report.ksoftirqd_takeovers,
        report.ring_drops
    ));
    if report.ring_drops > 0 {
        out.progress(format!(
            "warning: {} events were lost because the ring buffer was full",
            report.ring_drops
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `512ns`, `8us`, `16ms`: a log2 bucket bound, short.
fn short_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}us", ns / 1_000),
        1_000_000..1_000_000_000 => format!("{}ms", ns / 1_000_000),
        _ => format!("{}s", ns / 1_000_000_000),
    }
}
