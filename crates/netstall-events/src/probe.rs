//! What a probe session measures: one [`ProbeResult`] per probe (the
//! `{"type":"probe",...}` line of the JSON contract) with the reply's details
//! for the hping3-style text line, the episodes the probes saw, and the
//! session's summary.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The protocol probes are sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Icmp,
    Tcp,
    Udp,
    Http,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Icmp => "icmp",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Http => "http",
        })
    }
}

/// Where a probe's RTT timestamps come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TsSource {
    /// Both ends stamped by the kernel (SO_TIMESTAMPING software TX and RX):
    /// the prober's own scheduling never shows in the RTT.
    Kernel,
    /// At least one end stamped in user space (fallback, or the HTTP path).
    User,
}

/// The reply to one probe, for the text line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reply {
    /// ICMP echo reply.
    Echo {
        ip: Ipv4Addr,
        len: u16,
        ttl: u8,
        /// The reply's Don't Fragment bit.
        #[serde(default)]
        df: bool,
        ip_id: u16,
        icmp_seq: u16,
    },
    /// TCP SYN-ACK or RST to our SYN.
    Tcp {
        ip: Ipv4Addr,
        len: u16,
        ttl: u8,
        #[serde(default)]
        df: bool,
        ip_id: u16,
        sport: u16,
        flags: u8,
        win: u16,
    },
    /// UDP datagram echoed back.
    Udp { ip: Ipv4Addr, len: u16, sport: u16 },
    /// ICMP destination unreachable for a probe. For UDP, port unreachable
    /// (code 3) is the answer of a closed port and counts as a reply.
    Unreachable { ip: Ipv4Addr, code: u8 },
    /// HTTP response: connect time and time to first byte, measured apart so
    /// a stalled SYN-ACK is told from a slow server.
    Http {
        status: u16,
        connect_us: f64,
        ttfb_us: f64,
    },
}

impl Reply {
    /// Whether the reply proves the path works (an unreachable does not,
    /// except a UDP port unreachable, which a closed port sends by design).
    pub fn answers(&self, proto: Proto) -> bool {
        match self {
            Reply::Unreachable { code, .. } => proto == Proto::Udp && *code == 3,
            _ => true,
        }
    }
}

/// One probe and what became of it. Times are CLOCK_REALTIME nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub seq: u64,
    /// Index of the flow (source port / ICMP id) among the session's flows.
    pub flow: u16,
    pub proto: Proto,
    /// Source port of the flow (TCP, UDP); null for ICMP and HTTP.
    pub src_port: Option<u16>,
    /// When the probe left: the kernel's TX timestamp when there is one.
    pub sent_ns: u64,
    /// When the schedule said it should leave.
    pub scheduled_ns: u64,
    /// How late the send was against the schedule (a late send is recorded,
    /// never skipped: no coordinated omission).
    #[serde(
        rename = "late_us",
        serialize_with = "ns_as_us",
        deserialize_with = "us_as_ns"
    )]
    pub late_ns: u64,
    /// Round-trip time; null when lost.
    #[serde(
        rename = "rtt_us",
        serialize_with = "opt_ns_as_us",
        deserialize_with = "opt_us_as_ns"
    )]
    pub rtt_ns: Option<u64>,
    /// How long after the kernel received the reply the prober read it
    /// (user-space wake-up delay, excluded from `rtt_us`).
    #[serde(
        rename = "wake_us",
        serialize_with = "opt_ns_as_us",
        deserialize_with = "opt_us_as_ns"
    )]
    pub wake_ns: Option<u64>,
    #[serde(rename = "ts")]
    pub timestamps: TsSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
}

impl ProbeResult {
    /// When the reply arrived (REALTIME ns), if it did.
    pub fn arrival_ns(&self) -> Option<u64> {
        self.rtt_ns.map(|rtt| self.sent_ns + rtt)
    }
}

fn ns_as_us<S: Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round3(*ns as f64 / 1e3))
}

fn opt_ns_as_us<S: Serializer>(ns: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match ns {
        Some(ns) => ns_as_us(ns, s),
        None => s.serialize_none(),
    }
}

fn us_as_ns<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok((f64::deserialize(d)? * 1e3).round() as u64)
}

fn opt_us_as_ns<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.map(|us| (us * 1e3).round() as u64))
}

/// Rounds to three decimals (nanosecond precision for a value in µs).
pub fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// What kind of episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EpisodeKind {
    /// Probes held and released together: an RX backlog drained at once.
    BacklogRelease,
    /// One probe delayed, with no others held with it.
    Spike,
    /// Consecutive probes that got no answer.
    Loss,
}

impl EpisodeKind {
    /// The name used in JSON and text output.
    pub fn name(self) -> &'static str {
        match self {
            EpisodeKind::BacklogRelease => "backlog-release",
            EpisodeKind::Spike => "spike",
            EpisodeKind::Loss => "loss",
        }
    }
}

/// One stall (or loss burst) seen by the probes. Times are REALTIME ns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub kind: EpisodeKind,
    /// Estimated start of the stall (for a loss burst: the first lost send).
    pub start_ns: u64,
    /// Estimated end of the stall.
    pub end_ns: u64,
    pub duration_ms: f64,
    /// How far off `start_ns` (and so the duration) may be: the stall began
    /// somewhere between the last probe that got through and the first held
    /// one, and the estimate is the middle (half an interval with one flow).
    pub uncertainty_ms: f64,
    /// Probes held (or lost) by the episode.
    pub probes: u32,
    pub flows_affected: u16,
    pub flows_total: u16,
    /// Which flows (indices into the session's flows), ascending.
    pub flows: Vec<u16>,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The largest RTT among the held probes (null for a loss burst).
    pub max_rtt_us: Option<f64>,
    /// Where the probes went, when a run probes several: a doctor
    /// `--target`, or an agent's peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The node that probed (the agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The final `{"type":"summary",...}` line of a probe session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
    pub min_us: Option<f64>,
    /// The mean and standard deviation of the RTTs (ping's avg and mdev).
    #[serde(default)]
    pub avg_us: Option<f64>,
    #[serde(default)]
    pub mdev_us: Option<f64>,
    pub p50_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    pub episodes: usize,
    /// Probes sent per second, first send to last.
    pub rate_per_s: Option<f64>,
    /// From the first send to the last, ms (ping's `time`).
    #[serde(default)]
    pub elapsed_ms: Option<f64>,
    /// How far sends were from the absolute schedule: p50, p99 and max, µs.
    pub send_late_p50_us: Option<f64>,
    pub send_late_p99_us: Option<f64>,
    pub send_late_max_us: Option<f64>,
    /// Probes with both ends stamped by the kernel.
    pub kernel_timestamps: u64,
    /// Replies that came after their probe had been given up as lost.
    pub late_replies: u64,
    pub flows: Vec<FlowSummary>,
}

/// One flow's share of the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowSummary {
    pub flow: u16,
    pub src_port: Option<u16>,
    pub sent: u64,
    pub received: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub max_us: Option<f64>,
    /// Episodes that held or lost a probe of this flow.
    pub episodes: usize,
}

/// TCP flags as hping3 prints them (`SA`, `RA`), from the flags byte.
pub fn tcp_flags_text(flags: u8) -> String {
    [
        (0x04, 'R'),
        (0x02, 'S'),
        (0x10, 'A'),
        (0x01, 'F'),
        (0x08, 'P'),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, c)| *c)
    .collect()
}

/// What an ICMP destination-unreachable code means.
pub fn unreachable_text(code: u8) -> &'static str {
    match code {
        0 => "net unreachable",
        1 => "host unreachable",
        2 => "protocol unreachable",
        3 => "port unreachable",
        9 | 10 | 13 => "administratively prohibited",
        _ => "destination unreachable",
    }
}

fn ms3(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn us_as_ms(us: Option<f64>) -> String {
    us.map_or("-".into(), |us| format!("{:.3}", us / 1e3))
}

fn wall_clock(ns: u64) -> String {
    humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
        .to_string()
}

impl ProbeResult {
    /// The hping3-style line of a reply (`len=46 ip=… flags=SA seq=1485 win=…
    /// rtt=127.100 ms`, so `egrep 'rtt=[0-9]{3}\.'` works); `None` for a lost probe.
    pub fn hping3_line(&self, show_flow: bool) -> Option<String> {
        let reply = self.reply.as_ref()?;
        let flow = if show_flow {
            format!(" flow={}", self.flow)
        } else {
            String::new()
        };
        let rtt = self
            .rtt_ns
            .map(|rtt| format!(" rtt={} ms", ms3(rtt)))
            .unwrap_or_default();
        let seq = self.seq;
        // hping3's fields in hping3's order (`DF` when the bit is set), so
        // its column positions hold; netstall's flow (with --flows) before
        // the RTT, which ends the line as in hping3.
        let df = |df: bool| if df { " DF" } else { "" };
        Some(match reply {
            Reply::Echo { ip, len, ttl, df: dont_fragment, ip_id, icmp_seq } => format!(
                "len={len} ip={ip} ttl={ttl}{} id={ip_id} icmp_seq={icmp_seq}{flow}{rtt}",
                df(*dont_fragment)
            ),
            Reply::Tcp { ip, len, ttl, df: dont_fragment, ip_id, sport, flags, win } => format!(
                "len={len} ip={ip} ttl={ttl}{} id={ip_id} sport={sport} flags={} seq={seq} win={win}{flow}{rtt}",
                df(*dont_fragment),
                tcp_flags_text(*flags)
            ),
            Reply::Udp { ip, len, sport } => {
                format!("len={len} ip={ip} sport={sport} seq={seq}{flow}{rtt}")
            }
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
}

/// `  backlog-release  2026-12-04T13:00:00.123456Z  117.2 ms  12 probes (seq 100-111)  flows 4/4 [0, 1, 2, 3], max rtt 117.2 ms`
impl fmt::Display for Episode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max_rtt = self
            .max_rtt_us
            .map(|us| format!(", max rtt {:.1} ms", us / 1e3))
            .unwrap_or_default();
        write!(
            f,
            "  {:<15} {}  {:.1} ms  {} probes (seq {}-{})  flows {}/{} {:?}{max_rtt}",
            self.kind.name(),
            wall_clock(self.start_ns),
            self.duration_ms,
            self.probes,
            self.first_seq,
            self.last_seq,
            self.flows_affected,
            self.flows_total,
            self.flows
        )
    }
}

/// The end of a probe session for people: the statistics, every episode,
/// and each flow's share.
pub struct SessionReport<'a> {
    pub info: &'a SessionInfo,
    pub episodes: &'a [Episode],
    pub summary: &'a Summary,
}

/// A percentage as C's `%g` writes it (ping's loss): at most 6 significant
/// digits, no trailing zeros: `0`, `20`, `33.3333`.
fn like_printf_g(value: f64) -> String {
    let digits = if value.abs() >= 1.0 {
        5usize.saturating_sub(value.abs().log10().floor() as usize)
    } else {
        5
    };
    let text = format!("{value:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

impl fmt::Display for SessionReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (info, s) = (self.info, self.summary);
        let port = info.port.map(|p| format!(" port {p}")).unwrap_or_default();
        // First ping's own two lines, worded as ping words them, so that
        // whatever reads ping's statistics reads these; then netstall's.
        writeln!(f, "--- {} ping statistics ---", info.target)?;
        writeln!(
            f,
            "{} packets transmitted, {} received, {}% packet loss, time {:.0}ms",
            s.sent,
            s.received,
            like_printf_g(s.loss_pct),
            s.elapsed_ms.unwrap_or(0.0)
        )?;
        if s.received > 0 {
            writeln!(
                f,
                "rtt min/avg/max/mdev = {}/{}/{}/{} ms",
                us_as_ms(s.min_us),
                us_as_ms(s.avg_us),
                us_as_ms(s.max_us),
                us_as_ms(s.mdev_us)
            )?;
        }
        writeln!(
            f,
            "netstall: {}{port}, every {} µs, {} flow(s); timestamps: {} ({} of {} replies)",
            info.proto,
            info.interval_us,
            info.flows_total,
            info.timestamps,
            s.kernel_timestamps,
            s.received
        )?;
        writeln!(
            f,
            "rtt min/p50/p90/p99/p99.9/max = {}/{}/{}/{}/{}/{} ms",
            us_as_ms(s.min_us),
            us_as_ms(s.p50_us),
            us_as_ms(s.p90_us),
            us_as_ms(s.p99_us),
            us_as_ms(s.p999_us),
            us_as_ms(s.max_us)
        )?;
        writeln!(
            f,
            "send schedule: late p50 {} ms, p99 {} ms, max {} ms",
            us_as_ms(s.send_late_p50_us),
            us_as_ms(s.send_late_p99_us),
            us_as_ms(s.send_late_max_us)
        )?;
        write!(f, "episodes: {}", self.episodes.len())?;
        for e in self.episodes {
            write!(f, "\n{e}")?;
        }
        if s.flows.len() > 1 {
            write!(f, "\nper flow:")?;
            for flow in &s.flows {
                let port = flow
                    .src_port
                    .map(|p| format!(" sport {p}"))
                    .unwrap_or_default();
                write!(
                    f,
                    "\n  flow {:>3}{port}: {}/{} received, p50 {} ms, p99 {} ms, max {} ms, {} episode(s)",
                    flow.flow,
                    flow.received,
                    flow.sent,
                    us_as_ms(flow.p50_us),
                    us_as_ms(flow.p99_us),
                    us_as_ms(flow.max_us),
                    flow.episodes
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names of a reply line, column by column (`DF` is a field).
    fn columns(line: &str) -> Vec<&str> {
        line.split_whitespace()
            .map(|w| w.split('=').next().unwrap())
            .collect()
    }

    #[test]
    fn reply_lines_keep_hping3s_columns() {
        // Recorded here: hping3 3.0.0 against 127.0.0.1 (`-S -p 1`, `-1`).
        let hping3_tcp =
            "len=40 ip=127.0.0.1 ttl=64 DF id=0 sport=1 flags=RA seq=0 win=0 rtt=1.0 ms";
        let hping3_icmp = "len=28 ip=127.0.0.1 ttl=64 id=62785 icmp_seq=0 rtt=0.7 ms";
        let probe = |reply| ProbeResult {
            seq: 0,
            flow: 0,
            proto: Proto::Tcp,
            src_port: Some(40000),
            sent_ns: 1,
            scheduled_ns: 1,
            late_ns: 0,
            rtt_ns: Some(17_000),
            wake_ns: None,
            timestamps: TsSource::Kernel,
            reply: Some(reply),
        };
        let tcp = probe(Reply::Tcp {
            ip: Ipv4Addr::LOCALHOST,
            len: 40,
            ttl: 64,
            df: true,
            ip_id: 0,
            sport: 1,
            flags: 0x14,
            win: 0,
        })
        .hping3_line(false)
        .unwrap();
        assert_eq!(
            tcp,
            "len=40 ip=127.0.0.1 ttl=64 DF id=0 sport=1 flags=RA seq=0 win=0 rtt=0.017 ms"
        );
        assert_eq!(columns(&tcp), columns(hping3_tcp));
        let icmp = probe(Reply::Echo {
            ip: Ipv4Addr::LOCALHOST,
            len: 28,
            ttl: 64,
            df: false,
            ip_id: 62785,
            icmp_seq: 0,
        })
        .hping3_line(false)
        .unwrap();
        assert_eq!(columns(&icmp), columns(hping3_icmp));
    }

    #[test]
    fn a_probe_serializes_to_the_contract() {
        let p = ProbeResult {
            seq: 7,
            flow: 2,
            proto: Proto::Tcp,
            src_port: Some(40002),
            sent_ns: 1_000_000_000,
            scheduled_ns: 999_990_000,
            late_ns: 10_000,
            rtt_ns: Some(127_100_500),
            wake_ns: Some(3_000),
            timestamps: TsSource::Kernel,
            reply: None,
        };
        let v: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["src_port"], 40002);
        assert_eq!(v["rtt_us"], 127100.5);
        assert_eq!(v["late_us"], 10.0);
        assert_eq!(v["ts"], "kernel");
        let back: ProbeResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
        let lost = ProbeResult { rtt_ns: None, ..p };
        let v: serde_json::Value = serde_json::to_value(&lost).unwrap();
        assert!(v["rtt_us"].is_null());
        assert_eq!(lost.arrival_ns(), None);
    }
}

/// What a session is, for the header line and the `{"type":"session"}` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub target: Ipv4Addr,
    pub proto: Proto,
    pub port: Option<u16>,
    pub interval_us: f64,
    pub flows_total: u16,
    /// Source port of each flow (null for ICMP and HTTP).
    pub src_ports: Vec<Option<u16>>,
    /// Which timestamps the RTTs come from.
    pub timestamps: String,
    /// Whether the sender runs at real-time priority (SCHED_FIFO 1), keeping
    /// its schedule under load; it does when permitted and the interval is ≥ 500 µs.
    pub realtime_sender: bool,
}
