//! `netstall probe`: precise probes on an absolute schedule, hping3-style
//! lines, stall episodes and a summary.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use netstall_core::duration;
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
use netstall_probe::ProbeConfig;

#[derive(clap::Args)]
#[command(
    about = "Probe a target precisely (ICMP, TCP SYN, UDP, HTTP) and find stall episodes",
    long_about = "Sends a probe every INTERVAL on an absolute schedule (a late send is recorded late, never \
        skipped), takes RTTs from kernel timestamps, prints hping3-style lines (so `egrep 'rtt=[0-9]{3}\\.'` \
        still works), then the stall episodes found in the series and a summary.\n\n\
        Episode kinds: backlog-release (probes held and released together, RTTs falling by one interval \
        per probe: an RX backlog drained at once), spike (one probe delayed), loss (unanswered probes).\n\n\
        ICMP and TCP SYN use raw sockets and need CAP_NET_RAW; --netns needs CAP_SYS_ADMIN.",
    after_help = "Examples:\n  \
        sudo netstall probe 10.0.0.7 -w 60s                   ICMP echo every 10 ms for a minute\n  \
        sudo netstall probe 10.0.0.7 --syn -p 30080 --flows 8 -c 1000\n  \
        netstall probe 10.0.0.7 --udp -p 9000 -i 20ms\n  \
        netstall probe --http http://10.0.0.7:8080/healthz -i 100ms\n  \
        sudo netstall probe 10.0.0.7 | egrep 'rtt=[0-9]{3}\\.'     the probes of 100 ms or more",
    group = clap::ArgGroup::new("mode").args(["icmp", "syn", "udp", "http"])
)]
pub struct Args {
    /// Host or IPv4 address to probe (optional with --http, which names its host).
    #[arg(required_unless_present = "http")]
    target: Option<String>,
    /// ICMP echo (the default).
    #[arg(long)]
    icmp: bool,
    /// TCP SYN to --port; SYN-ACK and RST both count as replies.
    #[arg(long, requires = "port")]
    syn: bool,
    /// UDP to an echo responder on --port (a closed port's ICMP port unreachable counts as the reply).
    #[arg(long, requires = "port")]
    udp: bool,
    /// HTTP GET on a fresh connection per probe; connect time and time to first byte apart.
    #[arg(long, value_name = "URL")]
    http: Option<String>,
    /// Destination port for --syn and --udp.
    #[arg(short = 'p', long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Time between probes (of all flows together), at least 1us.
    #[arg(short = 'i', long, default_value = "10ms", value_parser = netstall_probe::session::parse_interval)]
    interval: Duration,
    /// Stop after this many probes.
    #[arg(short = 'c', long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop after this long (without -c or -w: until Ctrl-C).
    #[arg(short = 'w', long = "duration", value_parser = duration::parse_nonzero)]
    duration: Option<Duration>,
    /// Rotate this many flows: source ports for TCP and UDP (spread over RX
    /// queues/CPUs the way real connections are), echo identifiers for ICMP.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    flows: u16,
    /// Print only replies at or above this RTT (episodes and summary always).
    #[arg(long, value_parser = duration::parse)]
    slow: Option<Duration>,
    /// How long to wait for a reply before calling a probe lost.
    #[arg(long, default_value = "1s", value_parser = duration::parse_nonzero)]
    timeout: Duration,
    /// Probe from this named network namespace (e.g. a lab's client, nst-cli).
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
    /// Pin the prober to this CPU (keep it off the CPU you suspect).
    #[arg(long)]
    cpu: Option<u32>,
}

fn config(args: &Args) -> Result<ProbeConfig> {
    let (mode, host) = netstall_probe::mode_and_host(&netstall_probe::ModeRequest {
        target: args.target.as_deref(),
        http: args.http.as_deref(),
        syn: args.syn,
        udp: args.udp,
        port: args.port,
    })?;
    let mut config = ProbeConfig::new(netstall_probe::resolve(&host)?, mode, args.interval);
    config.count = args.count;
    config.duration = args.duration;
    config.flows = args.flows;
    config.timeout = args.timeout;
    config.netns = args.netns.clone();
    config.cpu = args.cpu;
    config.stop = Some(Shutdown::on_signals()?);
    // Probes are printed as they come; a session without end must not keep them.
    config.keep_probes = false;
    Ok(config)
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let config = config(&args)?;
    let report = netstall_probe::run_printed(&config, args.slow, out)?;
    if let Some(reason) = report.unreachable_reason() {
        bail!(reason);
    }
    Ok(ExitCode::SUCCESS)
}
