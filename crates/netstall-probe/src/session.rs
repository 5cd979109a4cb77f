//! A probe session: a sender on an absolute schedule, a receiver reading
//! replies and TX timestamps, and a collector (the caller's thread) that joins
//! them into [`ProbeResult`]s, then finds episodes and summarizes.
//!
//! The sender and receiver run in the target network namespace, pinned to
//! the chosen CPU; the caller's thread is never moved.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use netstall_core::clock::{monotonic_ns, ClockOffset};
use netstall_core::duration;
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
use netstall_events::probe::SessionReport;

use crate::episodes::{DetectorConfig, Episode, StreamingDetector};
use crate::http::{self, HttpUrl};
use crate::model::{unreachable_text, ProbeResult, Proto, Reply, TsSource};
use crate::summary::{Summary, SummaryBuilder};
use crate::sys::{self, Stamping};
use crate::wire::{IcmpWire, SynWire, UdpWire, Wire, WireConfig};
pub use netstall_events::probe::SessionInfo;

/// The sender wakes this long before a send and spins the rest: a timer
/// wake-up is late by tens of µs on an idle CPU and by hundreds on a busy
/// non-preemptible kernel, a spin by a few hundred ns. Capped at a
/// twentieth of the interval, so spinning costs at most 5% of a CPU.
const MAX_SPIN_NS: u64 = 300_000;
const MIN_SPIN_NS: u64 = 50_000;
/// How often the receiver and collector look at their stop conditions.
const POLL_MS: i32 = 10;
/// HTTP requests in flight at most; beyond it a probe is recorded as lost
/// rather than piling up threads.
const MAX_HTTP_IN_FLIGHT: usize = 512;
/// From this interval up, the sender sleeps far more than it spins, so it may
/// run at real-time priority without taking a CPU from anyone.
const REALTIME_MIN_INTERVAL: Duration = Duration::from_micros(500);
/// How long a session waits, before its first probe, for the kernel to
/// turn RX timestamps on (it does so from a workqueue).
const RX_STAMPS_WAIT: Duration = Duration::from_millis(200);
/// Events the collector handles between two looks at the clock.
const COLLECT_BATCH: usize = 4096;
/// An answered probe whose TX timestamp has not come falls back to the
/// user-space send time once the receiver has since found its queues empty
/// (the stamp, queued before the reply, would have been read), or after this
/// long whatever the receiver does: a backstop, not the rule, so a receiver
/// descheduled on a loaded machine does not lose stamps.
const TX_STAMP_BACKSTOP_NS: u64 = 1_000_000_000;

/// The shortest interval between probes: one send costs the sender about a
/// microsecond, so a shorter schedule could only ever be late.
pub const MIN_INTERVAL: Duration = Duration::from_micros(1);

/// What to probe with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Icmp,
    Syn { port: u16 },
    Udp { port: u16 },
    Http(HttpUrl),
}

impl Mode {
    /// The protocol on the wire.
    pub fn proto(&self) -> Proto {
        match self {
            Mode::Icmp => Proto::Icmp,
            Mode::Syn { .. } => Proto::Tcp,
            Mode::Udp { .. } => Proto::Udp,
            Mode::Http(_) => Proto::Http,
        }
    }

    /// The destination port (TCP, UDP, HTTP).
    pub fn port(&self) -> Option<u16> {
        match self {
            Mode::Icmp => None,
            Mode::Syn { port } | Mode::Udp { port } => Some(*port),
            Mode::Http(url) => Some(url.port),
        }
    }
}

/// A probe session's settings.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub target: Ipv4Addr,
    pub mode: Mode,
    /// Time between consecutive probes (of any flow).
    pub interval: Duration,
    /// Stop after this many probes.
    pub count: Option<u64>,
    /// Stop sending after this long. With neither limit, runs until `stop`.
    pub duration: Option<Duration>,
    /// Source ports (TCP, UDP) or echo identifiers (ICMP) to rotate over.
    pub flows: u16,
    /// How long to wait for a reply before calling the probe lost.
    pub timeout: Duration,
    /// Named network namespace to probe from (`/run/netns/NAME`).
    pub netns: Option<String>,
    /// CPU to pin the sender and receiver to.
    pub cpu: Option<u32>,
    /// Set to stop sending early (Ctrl-C); outstanding replies are still awaited.
    pub stop: Option<Arc<Shutdown>>,
    /// Keep every probe in [`Report::probes`] (the default). Turn it off for
    /// sessions without end: the callback still sees every probe, and memory
    /// stays bounded.
    pub keep_probes: bool,
}

impl ProbeConfig {
    /// A config with the defaults: one flow, 1 s timeout, no namespace or pinning.
    pub fn new(target: Ipv4Addr, mode: Mode, interval: Duration) -> Self {
        Self {
            target,
            mode,
            interval,
            count: None,
            duration: None,
            flows: 1,
            timeout: Duration::from_secs(1),
            netns: None,
            cpu: None,
            stop: None,
            keep_probes: true,
        }
    }

    fn check(&self) -> Result<()> {
        if self.interval < MIN_INTERVAL {
            bail!("the probe interval must be at least {MIN_INTERVAL:?}");
        }
        if self.count == Some(0) {
            bail!("a probe count must be at least 1");
        }
        if self.mode.port() == Some(0) {
            bail!("port 0 cannot be probed: give a port from 1 to 65535");
        }
        if self.flows == 0 {
            bail!("--flows must be at least 1");
        }
        if matches!(self.mode, Mode::Http(_)) && self.flows > 1 {
            bail!("--flows does not apply to --http: every request is a new connection");
        }
        if self.count.is_none() && self.duration.is_none() && self.stop.is_none() {
            bail!("a probe session needs a count, a duration or a stop flag");
        }
        Ok(())
    }
}

/// What a running session reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum SessionEvent<'a> {
    /// A probe, as soon as it is answered or given up.
    Probe(&'a ProbeResult),
    /// An episode, as soon as it is over (in long sessions; the rest at the end).
    Episode(&'a Episode),
}

/// What a session measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub info: SessionInfo,
    /// Every probe in sequence order, if [`ProbeConfig::keep_probes`];
    /// otherwise empty (they went to the callback).
    pub probes: Vec<ProbeResult>,
    /// Every episode, in the order found.
    pub episodes: Vec<Episode>,
    pub summary: Summary,
    /// The first send error, if any send failed.
    pub send_error: Option<String>,
    /// The first ICMP destination unreachable that answered a probe: (from, code).
    pub unreachable: Option<(Ipv4Addr, u8)>,
    /// Why the first failed HTTP request failed (refused, timed out, not HTTP).
    pub http_error: Option<String>,
}

/// An interval the sender can honour: at least [`MIN_INTERVAL`].
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = duration::parse_nonzero(text)?;
    if interval < MIN_INTERVAL {
        return Err(format!(
            "interval '{text}' is too short: at least {MIN_INTERVAL:?}"
        ));
    }
    Ok(interval)
}

/// `netstall probe`'s session: a header line, every probe as it comes
/// (in text only those at or above `slow`, when given), then the episodes
/// and the summary.
pub fn run_printed(config: &ProbeConfig, slow: Option<Duration>, out: Output) -> Result<Report> {
    let slow_ns = slow.map(|d| d.as_nanos() as u64);
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
    let report = run(config, |event| match event {
        SessionEvent::Probe(probe) => {
            out.json(probe.clone());
            if let Some(line) = probe.hping3_line(config.flows > 1) {
                if slow_ns.is_none_or(|slow| probe.rtt_ns.is_some_and(|rtt| rtt >= slow)) {
                    out.text(line);
                }
            }
        }
        // Streamed as soon as they are over; listed again in text at the end.
        SessionEvent::Episode(episode) => out.json(episode.clone()),
    })?;
    report.emit_end(out, true);
    Ok(report)
}

impl Report {
    /// Prints the end of a session: its description, its episodes (unless
    /// they were already streamed as each one ended) and its summary.
    pub fn emit_end(&self, out: Output, episodes_streamed: bool) {
        out.json(self.info.clone());
        if !episodes_streamed {
            for episode in &self.episodes {
                out.json(episode.clone());
            }
        }
        out.json(self.summary.clone());
        out.text(SessionReport {
            info: &self.info,
            episodes: &self.episodes,
            summary: &self.summary,
        });
    }

    /// Why the target must be called unreachable: no probe was answered.
    pub fn unreachable_reason(&self) -> Option<String> {
        if self.summary.sent == 0 || self.summary.received > 0 {
            return None;
        }
        let target = self.info.target;
        if let Some(error) = &self.send_error {
            return Some(format!("cannot send to {target}: {error}"));
        }
        if let Some(error) = &self.http_error {
            let port = self.info.port.map(|p| format!(":{p}")).unwrap_or_default();
            return Some(format!(
                "no HTTP answer from {target}{port} to any of {} requests: {error}",
                self.summary.sent
            ));
        }
        Some(match self.unreachable {
            Some((from, code)) => format!(
                "target {target} is unreachable: ICMP {} from {from}",
                unreachable_text(code)
            ),
            None => format!(
                "target {target} is unreachable: no reply to any of {} probes",
                self.summary.sent
            ),
        })
    }
}

enum Event {
    Sent(Sent),
    SendFailed {
        sent: Sent,
        error: io::Error,
    },
    TxStamp {
        socket: usize,
        key: u32,
        kernel_ns: u64,
    },
    Reply {
        seq: u64,
        reply: Reply,
        kernel_ns: Option<u64>,
        read_mono_ns: u64,
    },
    /// An HTTP request that failed (refused, reset, timed out, not HTTP).
    Failed {
        seq: u64,
        error: String,
    },
    /// The receiver read every queue empty: everything queued before
    /// `mono_ns` has been forwarded.
    Drained {
        mono_ns: u64,
    },
    Done,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    flow: u16,
    /// Socket index and OPT_ID key of the TX timestamp to expect, if any.
    tx_key: Option<(usize, u32)>,
    scheduled_mono_ns: u64,
    sent_mono_ns: u64,
}

/// Runs a probe session to its end, calling `on_event` for every probe as
/// soon as it is answered or given up, and for every episode once it is
/// over; returns the episodes and the summary. Memory stays bounded however
/// long the session runs.
pub fn run(config: &ProbeConfig, mut on_event: impl FnMut(SessionEvent<'_>)) -> Result<Report> {
    config.check()?;
    let (events_tx, events) = mpsc::channel();
    let finished = Arc::new(AtomicBool::new(false));
    let (info, sender) = start(config, events_tx, Arc::clone(&finished))?;
    let mut collector = Collector::new(config, &info);
    let result = collector.collect(&events, &mut on_event);
    finished.store(true, Ordering::Relaxed);
    sender
        .join()
        .map_err(|_| anyhow!("the probe sender thread panicked"))?;
    result?;

    let Collector {
        detector,
        mut episodes,
        summary,
        late_replies,
        send_error,
        unreachable,
        http_error,
        mut kept,
        ..
    } = collector;
    kept.sort_by_key(|p| p.seq);
    for episode in detector.finish() {
        on_event(SessionEvent::Episode(&episode));
        episodes.push(episode);
    }
    Ok(Report {
        info,
        probes: kept,
        summary: summary.finish(&episodes, late_replies),
        episodes,
        send_error,
        unreachable,
        http_error,
    })
}

/// Starts the sender (which starts the receiver) and waits until both are
/// set up, so setup errors come back here as one-line reasons.
fn start(
    config: &ProbeConfig,
    events: Sender<Event>,
    finished: Arc<AtomicBool>,
) -> Result<(SessionInfo, JoinHandle<()>)> {
    let (setup_tx, setup_rx) = mpsc::channel::<Result<SessionInfo>>();
    let config = config.clone();
    let handle = std::thread::Builder::new()
        .name("probe-sender".into())
        .spawn(move || {
            let wire = match set_up(&config) {
                Ok(wire) => wire,
                Err(e) => {
                    let _ = setup_tx.send(Err(e));
                    return;
                }
            };
            let receiver = wire.as_ref().map(|wire| {
                let wire = Arc::clone(wire);
                let events = events.clone();
                std::thread::Builder::new()
                    .name("probe-receiver".into())
                    .spawn(move || receive(wire.as_ref(), &events, &finished))
            });
            let receiver = match receiver.transpose() {
                Ok(r) => r,
                Err(e) => {
                    let _ = setup_tx.send(Err(anyhow!("cannot start the receiver thread: {e}")));
                    return;
                }
            };
            let realtime = config.interval >= REALTIME_MIN_INTERVAL && sys::make_realtime();
            let _ = setup_tx.send(Ok(session_info(&config, wire.as_deref(), realtime)));
            send_all(&config, wire.as_deref(), &events);
            let _ = events.send(Event::Done);
            if let Some(receiver) = receiver {
                let _ = receiver.join();
            }
        })
        .context("cannot start the probe sender thread")?;
    match setup_rx.recv() {
        Ok(Ok(info)) => Ok((info, handle)),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            bail!("the probe sender stopped during setup")
        }
    }
}

/// In the sender thread: namespace, pinning, sockets.
fn set_up(config: &ProbeConfig) -> Result<Option<Arc<dyn Wire>>> {
    if let Some(netns) = &config.netns {
        sys::enter_netns(netns)?;
    }
    if let Some(cpu) = config.cpu {
        netstall_core::cpu::check_online(&[cpu])?;
        sys::pin_to_cpu(cpu)?;
    }
    sys::tighten_timer_slack();
    let wire_config = WireConfig {
        target: config.target,
        port: config.mode.port().unwrap_or(0),
        flows: config.flows,
        token: session_token(),
    };
    let wire: Option<Arc<dyn Wire>> = match &config.mode {
        Mode::Icmp => {
            sys::route_source(config.target)?;
            Some(Arc::new(IcmpWire::open(wire_config)?))
        }
        Mode::Syn { .. } => Some(Arc::new(SynWire::open(wire_config)?)),
        Mode::Udp { .. } => Some(Arc::new(UdpWire::open(wire_config)?)),
        Mode::Http(_) => {
            sys::route_source(config.target)?;
            None
        }
    };
    if wire.is_some() {
        // The wire's sockets asked for RX stamps; the first probes get
        // them only once the kernel has turned them on.
        sys::wait_for_rx_timestamps(RX_STAMPS_WAIT);
    }
    Ok(wire)
}

/// A per-session random token: replies to other probers' packets never match.
fn session_token() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n == bytes.len() as isize {
        u64::from_ne_bytes(bytes)
    } else {
        // Good enough uniqueness without the syscall: time and pid mixed.
        monotonic_ns() ^ ((std::process::id() as u64) << 40)
    }
}

fn session_info(config: &ProbeConfig, wire: Option<&dyn Wire>, realtime: bool) -> SessionInfo {
    SessionInfo {
        realtime_sender: realtime,
        target: config.target,
        proto: config.mode.proto(),
        port: config.mode.port(),
        interval_us: config.interval.as_nanos() as f64 / 1e3,
        flows_total: config.flows,
        src_ports: (0..config.flows)
            .map(|f| wire.and_then(|w| w.src_port(f)))
            .collect(),
        timestamps: wire
            .map_or("user space (HTTP)", |w| w.stamping().describe())
            .to_string(),
    }
}

/// A duration in nanoseconds, saturating (durations from the command line
/// are at most a year, far below the limit).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A wait longer than this (a slow schedule, `-i 1h`) waits on the stop
/// request until this close to the send, so Ctrl-C ends it at once.
const STOPPABLE_WAIT_NS: u64 = 20_000_000;

/// Waits until CLOCK_MONOTONIC reaches `target_ns`: sleeps on an absolute
/// deadline `spin_ns` before it, then spins. False when `stop` came first.
fn wait_until(target_ns: u64, spin_ns: u64, stop: Option<&Shutdown>) -> bool {
    loop {
        let now = monotonic_ns();
        if target_ns <= now.saturating_add(spin_ns) {
            break;
        }
        let left = target_ns - spin_ns - now;
        match stop {
            Some(stop) if left > STOPPABLE_WAIT_NS => {
                if stop.wait(Duration::from_nanos(left - STOPPABLE_WAIT_NS)) {
                    return false;
                }
            }
            // An interrupted sleep (EINTR) comes round again: never a long spin.
            _ => sys::sleep_until_monotonic(target_ns - spin_ns),
        }
    }
    while monotonic_ns() < target_ns {
        std::hint::spin_loop();
    }
    true
}

/// Sends every probe on the absolute schedule `start + seq × interval`.
/// A late send goes out at once and is recorded late; none is skipped.
fn send_all(config: &ProbeConfig, wire: Option<&dyn Wire>, events: &Sender<Event>) {
    let interval = nanos(config.interval);
    let spin_ns = (interval / 20).clamp(MIN_SPIN_NS, MAX_SPIN_NS);
    // A short lead so the first probe, too, leaves on its schedule.
    let start = monotonic_ns() + 1_000_000;
    let end = config.duration.map(|d| start.saturating_add(nanos(d)));
    let mut tx_keys: Vec<u32> = vec![0; wire.map_or(0, |w| w.fds().len())];
    let http_in_flight = Arc::new(AtomicUsize::new(0));
    for seq in 0u64.. {
        // Beyond the clock's range is beyond any end: stop there.
        let Some(scheduled) = seq
            .checked_mul(interval)
            .and_then(|offset| start.checked_add(offset))
        else {
            break;
        };
        // The end is checked against the schedule and against the clock:
        // a sender that cannot keep up (a 1 µs interval) falls ever further
        // behind its schedule, and must still stop at `-w`.
        if config.count.is_some_and(|c| seq >= c)
            || end.is_some_and(|e| scheduled >= e || monotonic_ns() >= e)
            || config.stop.as_ref().is_some_and(|s| s.is_requested())
        {
            break;
        }
        if !wait_until(scheduled, spin_ns, config.stop.as_deref()) {
            break;
        }
        let flow = (seq % config.flows as u64) as u16;
        let mut sent = Sent {
            seq,
            flow,
            tx_key: None,
            scheduled_mono_ns: scheduled,
            sent_mono_ns: monotonic_ns(),
        };
        let outcome = match (wire, &config.mode) {
            (Some(wire), _) => wire.send(seq, flow).map(|socket| {
                if wire.stamping() == Stamping::TxRx {
                    sent.tx_key = Some((socket, tx_keys[socket]));
                    tx_keys[socket] = tx_keys[socket].wrapping_add(1);
                }
            }),
            (None, Mode::Http(url)) => spawn_http(config, url, seq, &http_in_flight, events),
            (None, _) => unreachable!("every mode but HTTP has a wire"),
        };
        let event = match outcome {
            Ok(()) => Event::Sent(sent),
            Err(error) => Event::SendFailed { sent, error },
        };
        if events.send(event).is_err() {
            break;
        }
    }
}

fn spawn_http(
    config: &ProbeConfig,
    url: &HttpUrl,
    seq: u64,
    in_flight: &Arc<AtomicUsize>,
    events: &Sender<Event>,
) -> io::Result<()> {
    if in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_HTTP_IN_FLIGHT {
        in_flight.fetch_sub(1, Ordering::Relaxed);
        return Err(io::Error::other("too many HTTP requests in flight"));
    }
    let addr = SocketAddrV4::new(config.target, url.port);
    let (url, timeout) = (url.clone(), config.timeout);
    let (events, in_flight) = (events.clone(), Arc::clone(in_flight));
    std::thread::Builder::new()
        .name("probe-http".into())
        .spawn(move || {
            let event = match http::request(addr, &url, timeout) {
                Ok(t) => Event::Reply {
                    seq,
                    reply: Reply::Http {
                        status: t.status,
                        connect_us: t.connect_ns as f64 / 1e3,
                        ttfb_us: t.ttfb_ns as f64 / 1e3,
                    },
                    kernel_ns: None,
                    read_mono_ns: t.first_byte_mono_ns,
                },
                Err(error) => Event::Failed {
                    seq,
                    error: error.to_string(),
                },
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = events.send(event);
        })
        .map(drop)
}

/// Reads replies and TX timestamps until the session is finished.
fn receive(wire: &dyn Wire, events: &Sender<Event>, finished: &AtomicBool) {
    let fds = wire.fds();
    let mut buf = vec![0u8; 65536];
    while !finished.load(Ordering::Relaxed) {
        // Taken before the poll: whatever is queued by then shows as ready
        // and is read until its queue is empty.
        let round_start = monotonic_ns();
        let Ok(ready) = sys::poll(&fds, POLL_MS) else {
            break;
        };
        for (socket, (&fd, (readable, errors))) in fds.iter().zip(ready).enumerate() {
            if !(readable || errors) {
                continue;
            }
            // Small batches from each queue in turn, the error queue first: a
            // probe's TX timestamp is queued before its reply can arrive, so
            // reading in step keeps a timestamp from lagging behind its reply.
            loop {
                let stamps = read_batch(
                    fd,
                    &mut buf,
                    true,
                    |msg, data| error_queue_event(wire, socket, msg, data),
                    events,
                );
                let replies = read_batch(
                    fd,
                    &mut buf,
                    false,
                    |msg, data| {
                        let (seq, reply) = wire.reply(socket, data)?;
                        Some(Event::Reply {
                            seq,
                            reply,
                            kernel_ns: msg.kernel_ns,
                            read_mono_ns: monotonic_ns(),
                        })
                    },
                    events,
                );
                if stamps + replies == 0 || finished.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
        // Every queue was read until empty: nothing queued before
        // `round_start` is still waiting.
        if !finished.load(Ordering::Relaxed) {
            let _ = events.send(Event::Drained {
                mono_ns: round_start,
            });
        }
    }
}

/// Messages read from one queue per turn.
const BATCH: usize = 32;

/// Reads up to [`BATCH`] messages from one queue of `fd`, forwarding the
/// events `to_event` makes of them; returns how many were read.
fn read_batch(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
    errqueue: bool,
    mut to_event: impl FnMut(&sys::Received, &[u8]) -> Option<Event>,
    events: &Sender<Event>,
) -> usize {
    let mut read = 0;
    while read < BATCH {
        let Ok(Some(msg)) = sys::recv(fd, buf, errqueue) else {
            break;
        };
        read += 1;
        if let Some(event) = to_event(&msg, &buf[..msg.len]) {
            let _ = events.send(event);
        }
    }
    read
}

/// A TX timestamp, or the ICMP error answering a probe (UDP port unreachable).
fn error_queue_event(
    wire: &dyn Wire,
    socket: usize,
    msg: &sys::Received,
    data: &[u8],
) -> Option<Event> {
    let error = msg.error?;
    if error.origin == sys::ORIGIN_TIMESTAMPING {
        return Some(Event::TxStamp {
            socket,
            key: error.data,
            kernel_ns: msg.kernel_ns?,
        });
    }
    let (seq, reply) = wire.icmp_error(socket, &error, data)?;
    Some(Event::Reply {
        seq,
        reply,
        kernel_ns: msg.kernel_ns,
        read_mono_ns: monotonic_ns(),
    })
}

/// Joins sends, TX timestamps and replies into results.
struct Collector {
    proto: Proto,
    src_ports: Vec<Option<u16>>,
    timeout_ns: u64,
    offset: ClockOffset,
    pending: HashMap<u64, Pending>,
    tx_stamps: HashMap<(usize, u32), u64>,
    /// Everything queued before this (monotonic ns) has been read.
    drained_mono_ns: u64,
    /// The probe each expected TX timestamp belongs to.
    stamp_waiters: HashMap<(usize, u32), u64>,
    /// The highest sequence number sent so far, plus one.
    next_seq: u64,
    detector: StreamingDetector,
    episodes: Vec<Episode>,
    summary: SummaryBuilder,
    late_replies: u64,
    send_error: Option<String>,
    unreachable: Option<(Ipv4Addr, u8)>,
    http_error: Option<String>,
    /// Every probe, when the caller asked to keep them.
    kept: Vec<ProbeResult>,
    keep_probes: bool,
}

#[derive(Default)]
struct Pending {
    sent: Option<Sent>,
    reply: Option<(Reply, Option<u64>, u64)>,
}

impl Collector {
    fn new(config: &ProbeConfig, info: &SessionInfo) -> Self {
        Self {
            proto: info.proto,
            src_ports: info.src_ports.clone(),
            timeout_ns: config.timeout.as_nanos() as u64,
            offset: ClockOffset::sample(),
            pending: HashMap::new(),
            tx_stamps: HashMap::new(),
            drained_mono_ns: 0,
            stamp_waiters: HashMap::new(),
            next_seq: 0,
            detector: StreamingDetector::new(DetectorConfig::new(config.interval, config.flows)),
            episodes: Vec::new(),
            summary: SummaryBuilder::default(),
            late_replies: 0,
            send_error: None,
            unreachable: None,
            http_error: None,
            kept: Vec::new(),
            keep_probes: config.keep_probes,
        }
    }

    /// Handles events until the sender is done and every probe is settled.
    /// Timeouts are judged only when caught up with the queue: a reply still
    /// queued behind a busy collector is not late.
    fn collect(
        &mut self,
        events: &Receiver<Event>,
        on_event: &mut impl FnMut(SessionEvent<'_>),
    ) -> Result<()> {
        let mut done = false;
        let mut last_expiry = 0;
        loop {
            let mut next = match events.recv_timeout(Duration::from_millis(POLL_MS as u64)) {
                Ok(event) => Some(event),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    done = true;
                    None
                }
            };
            let mut caught_up = true;
            for handled in 0.. {
                match next.take() {
                    Some(Event::Done) => done = true,
                    Some(event) => self.handle(event, on_event),
                    None => {}
                }
                if handled == COLLECT_BATCH {
                    caught_up = false;
                    break;
                }
                match events.try_recv() {
                    Ok(event) => next = Some(event),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        done = true;
                        break;
                    }
                }
            }
            let now = monotonic_ns();
            if caught_up && now >= last_expiry + POLL_MS as u64 * 1_000_000 {
                self.expire(now, on_event);
                last_expiry = now;
            }
            if done && caught_up && self.pending.values().all(|p| p.sent.is_none()) {
                return Ok(());
            }
        }
    }

    fn handle(&mut self, event: Event, on_event: &mut impl FnMut(SessionEvent<'_>)) {
        match event {
            Event::Sent(sent) => {
                self.next_seq = self.next_seq.max(sent.seq + 1);
                if let Some(key) = sent.tx_key {
                    self.stamp_waiters.insert(key, sent.seq);
                }
                self.pending.entry(sent.seq).or_default().sent = Some(sent);
                self.try_finish(sent.seq, false, on_event);
            }
            Event::SendFailed { sent, error } => {
                self.next_seq = self.next_seq.max(sent.seq + 1);
                self.send_error.get_or_insert_with(|| error.to_string());
                self.pending.remove(&sent.seq);
                let result = self.result(&sent, None);
                self.emit(result, on_event);
            }
            Event::TxStamp {
                socket,
                key,
                kernel_ns,
            } => {
                self.tx_stamps.insert((socket, key), kernel_ns);
                if let Some(seq) = self.stamp_waiters.remove(&(socket, key)) {
                    self.try_finish(seq, false, on_event);
                }
            }
            Event::Reply {
                seq,
                reply,
                kernel_ns,
                read_mono_ns,
            } => {
                let known = self.pending.get(&seq).is_some_and(|p| p.reply.is_none());
                if !known && seq < self.next_seq {
                    // Given up already, or a duplicate.
                    self.late_replies += 1;
                    return;
                }
                self.pending.entry(seq).or_default().reply = Some((reply, kernel_ns, read_mono_ns));
                self.try_finish(seq, false, on_event);
            }
            Event::Failed { seq, error } => {
                self.http_error.get_or_insert(error);
                if let Some(Pending {
                    sent: Some(sent), ..
                }) = self.pending.remove(&seq)
                {
                    let result = self.result(&sent, None);
                    self.emit(result, on_event);
                }
            }
            Event::Drained { mono_ns } => {
                self.drained_mono_ns = self.drained_mono_ns.max(mono_ns);
            }
            Event::Done => {}
        }
    }

    /// Finishes probe `seq` once it is sent and answered, and its TX
    /// timestamp is in, or overdue: the receiver may read a reply before the
    /// timestamp that was queued first, but only within one round of its
    /// queues. Only `expire`, run when caught up with the receiver's events,
    /// may call it overdue (`may_give_up`), and only once the receiver has
    /// drained its queues after reading the reply: a receiver or collector
    /// descheduled under load would otherwise give up on a stamp waiting
    /// right behind the reply.
    fn try_finish(
        &mut self,
        seq: u64,
        may_give_up: bool,
        on_event: &mut impl FnMut(SessionEvent<'_>),
    ) {
        let Some(Pending {
            sent: Some(sent),
            reply: Some((_, _, read_mono_ns)),
        }) = self.pending.get(&seq)
        else {
            return;
        };
        let stamp_due = sent
            .tx_key
            .is_some_and(|key| !self.tx_stamps.contains_key(&key));
        let overdue = self.drained_mono_ns > *read_mono_ns
            || monotonic_ns() >= read_mono_ns + TX_STAMP_BACKSTOP_NS;
        if stamp_due && !(may_give_up && overdue) {
            return;
        }
        let Some(Pending {
            sent: Some(sent),
            reply,
        }) = self.pending.remove(&seq)
        else {
            return;
        };
        let result = self.result(&sent, reply);
        self.emit(result, on_event);
    }

    /// Gives up on probes unanswered for longer than the timeout, and on TX
    /// timestamps overdue for answered probes.
    fn expire(&mut self, now: u64, on_event: &mut impl FnMut(SessionEvent<'_>)) {
        let (mut lost, mut answered) = (Vec::new(), Vec::new());
        for (seq, p) in &self.pending {
            match (&p.sent, &p.reply) {
                (Some(sent), None) if now > sent.sent_mono_ns + self.timeout_ns => lost.push(*seq),
                (Some(_), Some(_)) => answered.push(*seq),
                _ => {}
            }
        }
        for seq in lost {
            if let Some(Pending {
                sent: Some(sent), ..
            }) = self.pending.remove(&seq)
            {
                let result = self.result(&sent, None);
                self.emit(result, on_event);
            }
        }
        for seq in answered {
            self.try_finish(seq, true, on_event);
        }
    }

    fn emit(&mut self, result: ProbeResult, on_event: &mut impl FnMut(SessionEvent<'_>)) {
        on_event(SessionEvent::Probe(&result));
        self.summary.add(&result);
        if let (None, Some(Reply::Unreachable { ip, code })) = (self.unreachable, &result.reply) {
            self.unreachable = Some((*ip, *code));
        }
        if self.keep_probes {
            self.kept.push(result.clone());
        }
        for episode in self.detector.push(result) {
            on_event(SessionEvent::Episode(&episode));
            self.episodes.push(episode);
        }
    }

    /// The result of probe `sent` given its reply (reply, kernel RX ns, read time).
    fn result(&mut self, sent: &Sent, reply: Option<(Reply, Option<u64>, u64)>) -> ProbeResult {
        let tx_kernel = sent.tx_key.and_then(|key| {
            self.stamp_waiters.remove(&key);
            self.tx_stamps.remove(&key)
        });
        let user_sent_ns = self.offset.to_realtime(sent.sent_mono_ns);
        let (mut sent_ns, mut rtt_ns, mut wake_ns, mut timestamps) =
            (user_sent_ns, None, None, TsSource::User);
        let mut shown = None;
        if let Some((reply, rx_kernel, read_mono)) = reply {
            let read_ns = self.offset.to_realtime(read_mono);
            if let Reply::Http {
                connect_us,
                ttfb_us,
                ..
            } = reply
            {
                // Timed inside the request: connect start to first byte.
                let rtt = ((connect_us + ttfb_us) * 1e3) as u64;
                rtt_ns = Some(rtt);
                sent_ns = read_ns.saturating_sub(rtt);
            } else if reply.answers(self.proto) {
                if let Some(tx) = tx_kernel {
                    sent_ns = tx;
                }
                let rx = rx_kernel.unwrap_or(read_ns);
                rtt_ns = Some(rx.saturating_sub(sent_ns));
                wake_ns = rx_kernel.map(|rx| read_ns.saturating_sub(rx));
                if tx_kernel.is_some() && rx_kernel.is_some() {
                    timestamps = TsSource::Kernel;
                }
            }
            shown = Some(reply);
        } else if let Some(tx) = tx_kernel {
            sent_ns = tx;
        }
        ProbeResult {
            seq: sent.seq,
            flow: sent.flow,
            proto: self.proto,
            src_port: self.src_ports.get(sent.flow as usize).copied().flatten(),
            sent_ns,
            scheduled_ns: self.offset.to_realtime(sent.scheduled_mono_ns),
            late_ns: sent.sent_mono_ns.saturating_sub(sent.scheduled_mono_ns),
            rtt_ns,
            wake_ns,
            timestamps,
            reply: shown,
        }
    }
}
