//! `netstall probe`: precise probes on an absolute schedule, hping3-style
//! lines, stall episodes and a summary.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Result};
use netstall_core::duration;
use netstall_core::output::Output;
use netstall_probe::session::unreachable_text;
use netstall_probe::{
    Episode, ProbeConfig, ProbeResult, Reply, Report, SessionEvent, SessionInfo, Summary,
};
use serde::Serialize;

#[derive(clap::Args)]
#[command(
    about = "Probe a target precisely (ICMP, TCP SYN, UDP, HTTP) and find stall episodes",
    long_about = "Sends a probe every INTERVAL on an absolute schedule (a late send is recorded late, never \
        skipped), takes RTTs from kernel timestamps, prints hping3-style lines (so `egrep 'rtt=[0-9]{3}\\.'` \
        still works), then the stall episodes found in the series and a summary.\n\n\
        Episode kinds: backlog-release (probes held and released together, RTTs falling by one interval \
        per probe: an RX backlog drained at once), spike (one probe delayed), loss (unanswered probes).\n\n\
        ICMP and TCP SYN use raw sockets and need CAP_NET_RAW; --netns needs CAP_SYS_ADMIN.",
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
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// Time between probes (of all flows together).
    #[arg(short = 'i', long, default_value = "10ms", value_parser = duration::parse_nonzero)]
    interval: Duration,
    /// Stop after this many probes.
    #[arg(short = 'c', long, conflicts_with = "duration")]
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
    config.stop = Some(super::stop_on_signal()?);
    // Probes are printed as they come; a session without end must not keep them.
    config.keep_probes = false;
    Ok(config)
}

#[derive(Serialize)]
struct Typed<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    value: &'a T,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let config = config(&args)?;
    let slow_ns = args.slow.map(|d| d.as_nanos() as u64);
    let port = config
        .mode
        .port()
        .map(|p| format!(" port {p}"))
        .unwrap_or_default();
    out.text(format!(
        "PROBE {} ({}{port}): {} flow(s), one probe every {:?}",
        config.target,
        config.mode.proto(),
        config.flows,
        config.interval
    ));
    let report = netstall_probe::run(&config, |event| match event {
        SessionEvent::Probe(probe) => {
            out.json(&Typed {
                kind: "probe",
                value: probe,
            });
            if let Some(line) = probe_line(probe, config.flows > 1) {
                if slow_ns.is_none_or(|slow| probe.rtt_ns.is_some_and(|rtt| rtt >= slow)) {
                    out.text(line);
                }
            }
        }
        // Streamed as soon as they are over; listed again in text at the end.
        SessionEvent::Episode(episode) => out.json(&Typed {
            kind: "episode",
            value: episode,
        }),
    })?;
    print_end(&report, out, true);
    if let Some(reason) = report.unreachable_reason() {
        bail!(reason);
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// The hping3-style line of a reply; `None` for a lost probe.
pub(crate) fn probe_line(probe: &ProbeResult, show_flow: bool) -> Option<String> {
    let reply = probe.reply.as_ref()?;
    let flow = if show_flow {
        format!(" flow={}", probe.flow)
    } else {
        String::new()
    };
    let rtt = probe
        .rtt_ns
        .map(|rtt| format!(" rtt={} ms", ms(rtt)))
        .unwrap_or_default();
    let seq = probe.seq;
    Some(match reply {
        Reply::Echo { ip, len, ttl, ip_id, icmp_seq } => {
            format!("len={len} ip={ip} ttl={ttl} id={ip_id} icmp_seq={icmp_seq} seq={seq}{flow}{rtt}")
        }
        Reply::Tcp { ip, len, ttl, ip_id, sport, flags, win } => format!(
            "len={len} ip={ip} ttl={ttl} id={ip_id} sport={sport} flags={} seq={seq} win={win}{flow}{rtt}",
            netstall_probe::packet::tcp_flags_text(*flags)
        ),
        Reply::Udp { ip, len, sport } => format!("len={len} ip={ip} sport={sport} seq={seq}{flow}{rtt}"),
        Reply::Unreachable { ip, code } => format!(
            "ICMP {} from ip={ip} seq={seq}{flow}{rtt}",
            unreachable_text(*code)
        ),
        Reply::Http { status, connect_us, ttfb_us } => format!(
            "status={status} seq={seq} connect={:.3} ms ttfb={:.3} ms{rtt}",
            connect_us / 1e3,
            ttfb_us / 1e3
        ),
    })
}

/// Prints the end of a session: its description, episodes and summary.
pub(crate) fn print_report(report: &Report, out: Output) {
    print_end(report, out, false);
}

fn print_end(report: &Report, out: Output, episodes_streamed: bool) {
    out.json(&Typed {
        kind: "session",
        value: &report.info,
    });
    if !episodes_streamed {
        for episode in &report.episodes {
            out.json(&Typed {
                kind: "episode",
                value: episode,
            });
        }
    }
    out.json(&Typed {
        kind: "summary",
        value: &report.summary,
    });
    if out.is_json() {
        return;
    }
    print_text_report(&report.info, &report.episodes, &report.summary, out);
}

fn wall_clock(ns: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

fn us_as_ms(us: Option<f64>) -> String {
    us.map_or("-".into(), |us| format!("{:.3}", us / 1e3))
}

fn print_text_report(info: &SessionInfo, episodes: &[Episode], s: &Summary, out: Output) {
    let port = info.port.map(|p| format!(" port {p}")).unwrap_or_default();
    out.text(format!(
        "--- {} {}{port} netstall probe statistics ---",
        info.target, info.proto
    ));
    out.text(format!(
        "{} probes sent, {} received, {:.1}% loss; every {} µs, {} flow(s); timestamps: {} ({} of {} replies)",
        s.sent, s.received, s.loss_pct, info.interval_us, info.flows_total, info.timestamps, s.kernel_timestamps, s.received
    ));
    out.text(format!(
        "rtt min/p50/p90/p99/p99.9/max = {}/{}/{}/{}/{}/{} ms",
        us_as_ms(s.min_us),
        us_as_ms(s.p50_us),
        us_as_ms(s.p90_us),
        us_as_ms(s.p99_us),
        us_as_ms(s.p999_us),
        us_as_ms(s.max_us)
    ));
    out.text(format!(
        "send schedule: late p50 {} ms, p99 {} ms, max {} ms",
        us_as_ms(s.send_late_p50_us),
        us_as_ms(s.send_late_p99_us),
        us_as_ms(s.send_late_max_us)
    ));
    out.text(format!("episodes: {}", episodes.len()));
    for e in episodes {
        let max_rtt = e
            .max_rtt_us
            .map(|us| format!(", max rtt {:.1} ms", us / 1e3))
            .unwrap_or_default();
        out.text(format!(
            "  {:<15} {}  {:.1} ms  {} probes (seq {}-{})  flows {}/{} {:?}{max_rtt}",
            serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            wall_clock(e.start_ns),
            e.duration_ms,
            e.probes,
            e.first_seq,
            e.last_seq,
            e.flows_affected,
            e.flows_total,
            e.flows
        ));
    }
    if s.flows.len() > 1 {
        out.text("per flow:");
        for f in &s.flows {
            let port = f
                .src_port
                .map(|p| format!(" sport {p}"))
                .unwrap_or_default();
            out.text(format!(
                "  flow {:>3}{port}: {}/{} received, p50 {} ms, p99 {} ms, max {} ms, {} episode(s)",
                f.flow,
                f.received,
                f.sent,
                us_as_ms(f.p50_us),
                us_as_ms(f.p99_us),
                us_as_ms(f.max_us),
                f.episodes
            ));
        }
    }
}
