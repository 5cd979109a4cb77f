//! `lab backlog`: CPU input backlogs that overflow for real. A packet
//! received on a veth (and any device without its own NAPI queue) waits in
//! its RX CPU's input backlog until NET_RX runs; past
//! `net.core.netdev_max_backlog` packets the kernel drops it (drop reason
//! `CPU_BACKLOG`, softnet_stat's second column). The injector makes that
//! limit tiny and sends bursts of UDP from the lab's client toward the pod
//! from a CPU off the RX CPUs: the RX CPU, which carries each packet through
//! node1, the VXLAN overlay and node2, falls behind and drops, as a node
//! does when a burst meets a small backlog.
//!
//! First, do no harm: the sysctl is host-wide (it is not per network
//! namespace), so its old value is written to [`SAVED`] before it changes
//! and restored at the end, on Ctrl-C, and by the next injection if this one
//! was killed. Traffic stays inside the lab's namespaces (to the pod's
//! discard port), every burst and the run are bounded.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netstall_core::duration;
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
pub use netstall_events::lab::LabBacklog;
use netstall_events::lab::Role;

use crate::topology;

/// The host-wide limit of every CPU's input backlog.
const SYSCTL: &str = "/proc/sys/net/core/netdev_max_backlog";
/// The value before an injection, kept while it runs: a killed injection
/// leaves it, and the next one restores that value rather than its own.
pub const SAVED: &str = "/run/netstall/netdev_max_backlog.saved";
/// The pod's discard port: no listener, so nothing answers the burst (the
/// kernel's ICMP port-unreachable replies are rate-limited).
const DISCARD_PORT: u16 = 9;
/// An injection longer than this is a mistake, not an experiment.
pub const MAX_FOR: Duration = Duration::from_secs(3600);
const MAX_BURST: u32 = 100_000;
const PAYLOAD: [u8; 64] = [0x6e; 64];

/// `netstall lab backlog`'s arguments.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    sudo netstall lab backlog -w 60s                      backlog 10, 5000 packets a second\n  \
    sudo netstall lab backlog --max-backlog 1 --burst 20000 --every 500ms -w 2m")]
pub struct Args {
    /// Name prefix of the lab.
    #[arg(long, default_value = "nst")]
    pub prefix: String,
    /// net.core.netdev_max_backlog during the injection (host-wide; restored after).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_backlog: u32,
    /// UDP packets per burst.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=MAX_BURST as i64))]
    pub burst: u32,
    /// Time between bursts.
    #[arg(long, default_value = "1s", value_parser = duration::parse_nonzero)]
    pub every: Duration,
    /// How long to keep injecting.
    #[arg(short = 'w', long = "duration", value_parser = duration::parse_nonzero)]
    pub duration: Duration,
}

fn read_sysctl(path: &Path) -> Result<u32> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds '{}', not a number", path.display(), text.trim()))
}

/// net.core.netdev_max_backlog set to a value while this lives; the old
/// value comes back when it is dropped (also on an error or Ctrl-C).
pub struct MaxBacklog {
    previous: u32,
}

impl MaxBacklog {
    pub fn set(value: u32) -> Result<Self> {
        let saved = Path::new(SAVED);
        // A killed injection left its saved value: that one is the node's.
        let previous = match read_sysctl(saved) {
            Ok(v) => v,
            Err(_) => {
                let v = read_sysctl(Path::new(SYSCTL))?;
                std::fs::create_dir_all(saved.parent().unwrap_or(Path::new("/run")))?;
                std::fs::write(saved, format!("{v}\n"))
                    .with_context(|| format!("cannot write {SAVED}"))?;
                v
            }
        };
        std::fs::write(SYSCTL, format!("{value}\n"))
            .with_context(|| format!("cannot set {SYSCTL} to {value}"))?;
        Ok(Self { previous })
    }

    pub fn previous(&self) -> u32 {
        self.previous
    }
}

impl Drop for MaxBacklog {
    fn drop(&mut self) {
        if std::fs::write(SYSCTL, format!("{}\n", self.previous)).is_ok() {
            let _ = std::fs::remove_file(SAVED);
        } else {
            eprintln!(
                "netstall: warning: could not restore {SYSCTL} to {} (kept in {SAVED})",
                self.previous
            );
        }
    }
}

/// A CPU to send from: one the lab does not receive on, so that the RX CPU
/// has to keep up with a sender that does nothing else.
fn sender_cpu(rx_cpus: &[u32]) -> Option<u32> {
    let online = netstall_core::cpu::online().ok()?;
    online.into_iter().find(|c| !rx_cpus.contains(c))
}

/// Sends `burst` packets as fast as one socket can; returns how many left.
fn send_burst(socket: &UdpSocket, to: SocketAddrV4, burst: u32) -> u64 {
    let mut sent = 0;
    for _ in 0..burst {
        // A full device queue or an ICMP error is the point of the burst.
        if socket.send_to(&PAYLOAD, to).is_ok() {
            sent += 1;
        }
    }
    sent
}

/// `lab backlog`: runs the injection for `args.duration` (or until
/// Ctrl-C), prints and returns what it did.
pub fn run_printed(args: &Args, out: Output) -> Result<LabBacklog> {
    if args.duration > MAX_FOR {
        bail!("-w must be at most {}s", MAX_FOR.as_secs());
    }
    netstall_core::privilege::require_root("lab backlog")?;
    let status = topology::status(&args.prefix)?;
    let shutdown = Shutdown::on_signals()?;
    let cpu = sender_cpu(&status.rx_cpus);
    let pod: Ipv4Addr = status.pod.addr.parse().context("the lab's pod address")?;
    let to = SocketAddrV4::new(pod, DISCARD_PORT);
    let client = status.netns(Role::Client).to_owned();
    let before = netstall_netstat::snapshot_now(0)?;
    let limit = MaxBacklog::set(args.max_backlog)?;
    let start_ns = netstall_core::clock::realtime_ns();
    out.progress(format!(
        "lab '{}': netdev_max_backlog {} (was {}), {} UDP packets to {to} every {:?} from the client{} for {:?}; Ctrl-C ends early",
        args.prefix,
        args.max_backlog,
        limit.previous(),
        args.burst,
        args.every,
        cpu.map(|c| format!(" on CPU {c}")).unwrap_or_default(),
        args.duration
    ));
    let (burst, every, duration) = (args.burst, args.every, args.duration);
    let stop = shutdown.clone();
    // The sender's own thread: it enters the client's namespace and its CPU.
    let sender = std::thread::spawn(move || -> Result<(u32, u64)> {
        netstall_core::sys::enter_netns(&client)?;
        if let Some(cpu) = cpu {
            netstall_core::sys::pin_to_cpu(cpu)?;
        }
        let socket = UdpSocket::bind("0.0.0.0:0").context("UDP socket in the client")?;
        let deadline = Instant::now() + duration;
        let (mut bursts, mut sent) = (0, 0);
        while Instant::now() < deadline && !stop.is_requested() {
            sent += send_burst(&socket, to, burst);
            bursts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if stop.wait(left.min(every)) {
                break;
            }
        }
        Ok((bursts, sent))
    });
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?;
    let end_ns = netstall_core::clock::realtime_ns();
    let previous = limit.previous();
    drop(limit);
    let (bursts, sent) = sent?;
    let counters = netstall_netstat::delta(&before, &netstall_netstat::snapshot_now(0)?);
    let dropping: Vec<_> = counters.softnet.iter().filter(|c| c.dropped > 0).collect();
    let report = LabBacklog {
        prefix: args.prefix.clone(),
        max_backlog: args.max_backlog,
        previous,
        sender_cpu: cpu,
        bursts,
        sent,
        softnet_dropped: dropping.iter().map(|c| c.dropped).sum(),
        drop_cpus: dropping.iter().map(|c| c.cpu).collect(),
        start_ns,
        end_ns,
    };
    out.emit(report.clone());
    Ok(report)
}
