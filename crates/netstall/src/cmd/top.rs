//! `netstall top`: a live terminal view of RX stalls per CPU.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use netstall_core::duration;
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
use netstall_doctor::run::Target;
use netstall_top::TopConfig;

#[derive(clap::Args)]
#[command(
    about = "Live terminal view: stalls per CPU, their culprits, probe RTTs (like top, for stalls)",
    long_about = "A live view of the last 60 s, redrawn a few times a second: a lane per CPU with \
        stall blocks by detector (S softirq-delay, I irqs-off, B rx-backlog, K ksoftirqd, \
        R rstat-hold), sample gaps (G) and NET_RX softirq time (▁..█); the culprits table (task, \
        syscall and file, stalls, worst, total, the frame that names the stack; Enter opens the \
        worst stall with its stack and the packets that waited); with --target, an RTT sparkline, \
        episodes and loss per target; a status line with dying memory cgroups, the tracer's cost \
        (BPF run time per second), ring-buffer drops and this view's own CPU use.\n\n\
        Keys: q or Ctrl-C quit, p pause, Tab and arrows move, Enter opens, ? help. Works in 80x24 \
        over ssh, no mouse. When stdout is not a terminal (or with --json) it prints plain lines: \
        each stall as it comes and a status line every 5 s.\n\n\
        Needs CAP_BPF, CAP_PERFMON and CAP_SYSLOG (and CAP_NET_RAW with --target); exit 2 \
        with a one-line reason otherwise, before the terminal is touched.",
    after_help = "Examples:\n  netstall top\n  netstall top --cpus 0-3 --threshold 5ms\n  \
        netstall top --target 10.0.0.7:443 --target 10.0.0.8\n  \
        netstall top -w 30s > stalls.txt        # plain lines, 30 s"
)]
pub struct Args {
    /// Probe this target too: HOST (ICMP echo) or HOST:PORT (TCP SYN). Repeatable.
    #[arg(long = "target", value_name = "HOST[:PORT]")]
    targets: Vec<Target>,
    /// Only these CPUs, e.g. 0 or 0-3,8.
    #[arg(long)]
    cpus: Option<String>,
    /// Show stalls at least this long.
    #[arg(long, default_value = "10ms", value_parser = duration::parse_nonzero)]
    threshold: Duration,
    /// Redraw this often (at least 200ms).
    #[arg(long, default_value = "500ms", value_parser = duration::parse_nonzero)]
    refresh: Duration,
    /// Time between probes to each target (20 ms: at least two probes in any 50 ms stall, at half
    /// the prober's cost at 10 ms).
    #[arg(short = 'i', long, default_value = "20ms", value_parser = duration::parse_nonzero)]
    interval: Duration,
    /// TCP source ports per target, spread over RX queues/CPUs.
    #[arg(long, default_value_t = 4)]
    flows: u16,
    /// Probe from this network namespace (from `ip netns`).
    #[arg(long)]
    netns: Option<String>,
    /// Pin the probers to this CPU (keep them off the CPU that stalls).
    #[arg(long)]
    probe_cpu: Option<u32>,
    /// Do not sample CPUs (no sample gaps in the lanes).
    #[arg(long)]
    no_sample: bool,
    /// End after this long (default: until q, Ctrl-C or SIGTERM).
    #[arg(short = 'w', long = "duration", value_parser = duration::parse_nonzero)]
    duration: Option<Duration>,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let config = TopConfig {
        targets: args.targets,
        interval: args.interval,
        flows: args.flows,
        netns: args.netns,
        probe_cpu: args.probe_cpu,
        cpus: args
            .cpus
            .as_deref()
            .map(netstall_core::cpu::parse_list)
            .transpose()?,
        threshold: args.threshold,
        refresh: args.refresh,
        sample: !args.no_sample,
        duration: args.duration,
    };
    netstall_top::run(&config, Shutdown::on_signals()?, out)?;
    Ok(ExitCode::SUCCESS)
}
