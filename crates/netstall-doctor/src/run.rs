//! Runs the sources together on this node, on one time base: the kernel
//! tracer, probes to the targets, CPU sampling, and the dying-cgroup count;
//! then correlates them into a [`Verdict`].

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netstall_core::clock;
use netstall_core::output::Output;
use netstall_core::privilege::{self, Capability};
use netstall_core::shutdown::Shutdown;
use netstall_core::steal::{self, steal_explains};
use netstall_events::kernel::{Stall, StealSource};
use netstall_kernel::drops::{self, DropsConfig, DropsEvent};
use netstall_kernel::throttle::{self, CpuThrottle, ThrottleConfig, ThrottleEvent};
use netstall_kernel::trace::{self, Stop, TraceConfig, TraceDetector, TraceEvent};
use netstall_probe::http::HttpUrl;
use netstall_probe::{Mode, ProbeConfig};
use netstall_xray::sampler::{self, SamplerConfig};
use netstall_xray::timeline::{self, GapKind, StallRules};

use netstall_events::xray::SampleGap;

use crate::findings::{Extras, Findings, MemcgFindings, SamplerState, TargetFindings, TracerState};
use crate::{diagnose, Verdict};

/// A probe target: `HOST` (ICMP echo), `HOST:PORT` (TCP SYN) or
/// `http://HOST:PORT/PATH` (HTTP GET timing, as `probe --http`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub text: String,
    pub host: String,
    pub port: Option<u16>,
    pub url: Option<HttpUrl>,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.contains("://") {
            let url = HttpUrl::parse(text).map_err(|e| e.to_string())?;
            return Ok(Target {
                text: text.to_owned(),
                host: url.host.clone(),
                port: Some(url.port),
                url: Some(url),
            });
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("invalid port in target '{text}'"))?;
                (host, Some(port))
            }
            None => (text, None),
        };
        if host.is_empty() {
            return Err(format!(
                "invalid target '{text}': use HOST, HOST:PORT or http://HOST:PORT/PATH"
            ));
        }
        Ok(Target {
            text: text.to_owned(),
            host: host.to_owned(),
            port,
            url: None,
        })
    }
}

/// How to run the doctor.
#[derive(Debug, Clone)]
pub struct DoctorConfig {
    pub duration: Duration,
    pub targets: Vec<Target>,
    /// Probe interval per target.
    pub interval: Duration,
    /// TCP flows (source ports) per target, to spread over RX queues/CPUs.
    pub flows: u16,
    /// Probe from this network namespace, pinned to this CPU (a prober on
    /// the stalled CPU could not send during the stall).
    pub probe_netns: Option<String>,
    pub probe_cpu: Option<u32>,
    /// Kernel stalls at least this long are reported.
    pub threshold: Duration,
    /// Sample CPUs (xray) for gaps and the pre-stall flame chart.
    pub sample: bool,
    /// Trace every ICMP echo request (the seq / processing context table).
    pub icmp_seq: bool,
    /// Run even when the tracer or the sampler cannot: the verdict is then
    /// `unknown` instead of an error (never `healthy` while blind).
    pub allow_partial: bool,
    /// Count packet drops and TCP retransmits (`netstall_kernel::drops`) and
    /// read the network counters over the window.
    pub drops: bool,
    /// Read CFS throttling per CPU cgroup (`netstall_kernel::throttle`).
    pub throttle: bool,
}

impl Default for DoctorConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(20),
            targets: Vec::new(),
            interval: Duration::from_millis(10),
            flows: 4,
            probe_netns: None,
            probe_cpu: None,
            threshold: Duration::from_millis(10),
            sample: true,
            icmp_seq: false,
            allow_partial: false,
            drops: true,
            throttle: true,
        }
    }
}

/// What happened while the doctor ran, as it happened.
#[derive(Debug, Clone)]
pub enum Progress {
    Started {
        tracing: bool,
        targets: usize,
        sampling: bool,
    },
    Stall(Box<Stall>),
    /// Every few seconds: how far the run is, and what it found so far.
    Tick {
        elapsed: Duration,
        stalls: usize,
        total: Duration,
    },
    TracerUnavailable(String),
    SamplerUnavailable(String),
    StealUnavailable(String),
    DropsUnavailable(String),
    /// The throttling reader could not run, or has something to say (a
    /// throttled cgroup removed during the run).
    Throttle(String),
    Finished,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct DoctorRun {
    pub verdict: Verdict,
    pub findings: Findings,
    pub extras: Extras,
}

impl DoctorRun {
    /// Writes every record the verdict was computed from, as JSON lines
    /// (what `--replay` reads back).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut lines = String::new();
        for record in self.findings.to_records(&self.extras, Some(&self.verdict)) {
            lines.push_str(&record.to_json_line());
            lines.push('\n');
        }
        std::fs::write(path, lines)
            .with_context(|| format!("cannot write the records {}", path.display()))
    }

    /// Writes what was asked for: the records (`--save`), the HTML report
    /// (`--report`), saying where on stderr.
    pub fn write_files(
        &self,
        save: Option<&Path>,
        report: Option<&Path>,
        out: Output,
    ) -> Result<()> {
        if let Some(path) = save {
            self.save(path)?;
            out.progress(format!("records written to {}", path.display()));
        }
        if let Some(path) = report {
            crate::report::write(path, &self.verdict, &self.findings, &self.extras)?;
            out.progress(format!("report written to {}", path.display()));
        }
        Ok(())
    }
}

/// How many samples before each stall the flame chart shows (the story's `grep -B 100`).
const SAMPLES_BEFORE: usize = 100;
const SAMPLE_HZ: u64 = 999;
const TICK: Duration = Duration::from_secs(5);

/// What the doctor cannot see without these: the tracer needs BPF and
/// perfmon (and syslog for kernel symbols), the sampler perfmon.
const NEEDED: [(Capability, &str); 3] = [
    (Capability::Bpf, "the kernel tracer"),
    (Capability::Perfmon, "the tracer and CPU sampling"),
    (Capability::Syslog, "kernel stack symbols"),
];

/// Refuses to start blind: without the capabilities the tracer and the
/// sampler need, the doctor could only say `healthy` for lack of evidence.
pub fn preflight(config: &DoctorConfig) -> Result<()> {
    let missing: Vec<String> = NEEDED
        .iter()
        .filter(|(cap, _)| !privilege::has(*cap))
        .map(|(cap, what)| format!("{} ({what})", cap.name()))
        .collect();
    if !missing.is_empty() && !config.allow_partial {
        bail!(
            "doctor cannot see the kernel without {}: run as root, or pass --allow-partial for a verdict of `unknown` on what it cannot see",
            missing.join(", ")
        );
    }
    Ok(())
}

/// How often the stats readers' ledger is read during a run.
const LEDGER_EVERY: Duration = Duration::from_secs(5);

/// HTTP targets get a request at most this often (each opens a connection).
const HTTP_EVERY: Duration = Duration::from_millis(50);

/// A send this late is the prober's own scheduling delay worth showing.
const LATE_SEND_NS: u64 = 2_000_000;

/// How often `/proc/stat` is read for steal when the tracer has no steal
/// clock: cheap (no cgroup walk), and fine enough for 10 ms episodes.
const PROC_STAT_EVERY: Duration = Duration::from_millis(5);

/// [`run`] with its progress told on stderr (stalls also as JSON lines as
/// they come); emits the verdict and returns the run.
pub fn run_narrated(config: &DoctorConfig, out: Output) -> Result<DoctorRun> {
    let run = run(config, |progress| match progress {
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
            out.json((*stall).clone());
            out.progress(format!("  {stall}"));
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
        Progress::DropsUnavailable(reason) => {
            out.progress(format!("doctor: drops could not be counted: {reason}"))
        }
        Progress::Throttle(line) => out.progress(format!("doctor: CPU throttling: {line}")),
        Progress::Finished => {}
    })?;
    for target in &run.findings.targets {
        if let Some(error) = &target.error {
            out.progress(format!("doctor: {}: {error}", target.target));
        }
    }
    out.emit(run.verdict.clone());
    Ok(run)
}

/// Runs every source for `config.duration` and returns the verdict.
pub fn run(config: &DoctorConfig, mut progress: impl FnMut(Progress)) -> Result<DoctorRun> {
    if config.duration < Duration::from_secs(1) {
        bail!("-w must be at least 1s");
    }
    preflight(config)?;
    let targets: Vec<(Target, std::net::Ipv4Addr)> = config
        .targets
        .iter()
        .map(|t| Ok((t.clone(), netstall_probe::resolve(&t.host)?)))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let start_ns = clock::realtime_ns();
    let stop = Arc::new(Shutdown::new()?);

    let memcg = memcg_findings();
    let host_addresses = netstall_probe::local::host_addresses();

    // The tracer streams stalls back as they are assembled.
    let (events_tx, events_rx) = mpsc::channel::<TraceEvent>();
    let trace_config = TraceConfig {
        threshold: config.threshold,
        icmp: config.icmp_seq,
        steal: true,
        // The stats readers' ledger, read as the run goes.
        totals_every: Some(LEDGER_EVERY),
        ..TraceConfig::default()
    };
    let trace_stop = Stop {
        duration: None,
        shutdown: Some(stop.clone()),
    };
    let tracer = thread::Builder::new()
        .name("doctor-trace".into())
        .spawn(move || {
            trace::run(&trace_config, &trace_stop, |event| {
                let _ = events_tx.send(event);
            })
        })?;

    // Probe and sample only once the detectors are attached, so every
    // stall the probes see could be seen by the tracer too.
    let mut early = Vec::new();
    let mut tracer_state = None;
    let mut steal_clock = false;
    let attach_deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < attach_deadline {
        match events_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(TraceEvent::Started(start)) => {
                steal_clock = start.detectors.contains(&TraceDetector::Steal);
                tracer_state = Some(TracerState::Ran {
                    detectors: start.detectors.iter().map(|d| d.to_string()).collect(),
                    missing: start.unavailable.clone(),
                });
                break;
            }
            Ok(event) => early.push(event),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }

    // Drops and retransmits, counted in the kernel and read every second;
    // the network counters read now and at the end.
    let counters_before = config
        .drops
        .then(|| netstall_netstat::snapshot_now(clock::realtime_ns()));
    let drop_counter = config.drops.then(|| {
        let stop = Stop {
            duration: None,
            shutdown: Some(stop.clone()),
        };
        thread::Builder::new()
            .name("doctor-drops".into())
            .spawn(move || {
                let mut events = Vec::new();
                drops::run(&DropsConfig::default(), &stop, |e| events.push(e)).map(|_| events)
            })
    });

    // CFS throttling per CPU cgroup, read in the kernel (never cpu.stat).
    let throttle_reader = config.throttle.then(|| {
        let stop = Stop {
            duration: None,
            shutdown: Some(stop.clone()),
        };
        thread::Builder::new()
            .name("doctor-throttle".into())
            .spawn(move || {
                let mut events = Vec::new();
                throttle::run(&ThrottleConfig::default(), &stop, |e| events.push(e)).map(|_| events)
            })
    });
    // The processes serving HTTP targets on this host, with their cgroups.
    let mut servers: Vec<Vec<crate::server::TargetServer>> = targets
        .iter()
        .map(|(t, ip)| {
            t.url
                .as_ref()
                .map(|u| crate::server::find(*ip, u.port))
                .unwrap_or_default()
        })
        .collect();

    let tracing = tracer_state.is_some();
    // Without the tracer's steal clock, /proc/stat tells steal apart.
    let proc_stat = (!steal_clock).then(|| {
        let stop = stop.clone();
        thread::Builder::new()
            .name("doctor-steal".into())
            .spawn(move || steal::watch_proc_stat(&stop, PROC_STAT_EVERY))
    });

    let sampling = config.sample;
    let sampler = sampling.then(|| {
        let stop = stop.clone();
        let duration = config.duration;
        thread::Builder::new()
            .name("doctor-xray".into())
            .spawn(move || {
                let cpus = netstall_core::cpu::online()?;
                sampler::record(
                    &SamplerConfig {
                        cpus,
                        frequency: SAMPLE_HZ,
                    },
                    duration,
                    &stop,
                )
            })
    });

    let probers: Vec<_> = targets
        .iter()
        .map(|(target, ip)| {
            let (mode, interval) = match (&target.url, target.port) {
                // A new connection per request: not faster than HTTP_EVERY.
                (Some(url), _) => (Mode::Http(url.clone()), config.interval.max(HTTP_EVERY)),
                (None, Some(port)) => (Mode::Syn { port }, config.interval),
                (None, None) => (Mode::Icmp, config.interval),
            };
            let mut probe = ProbeConfig::new(*ip, mode, interval);
            probe.duration = Some(config.duration);
            probe.flows = if target.port.is_some() && target.url.is_none() {
                config.flows
            } else {
                1
            };
            probe.netns = config.probe_netns.clone();
            probe.cpu = config.probe_cpu;
            probe.stop = Some(stop.clone());
            let text = target.text.clone();
            thread::Builder::new()
                .name(format!("doctor-probe-{text}"))
                .spawn(move || (text, netstall_probe::run(&probe, |_| {})))
        })
        .collect::<std::io::Result<_>>()?;
    progress(Progress::Started {
        tracing,
        targets: targets.len(),
        sampling,
    });

    let mut findings = Findings {
        start_ns,
        memcg,
        self_pid: std::process::id(),
        steal_source: steal_clock.then_some(StealSource::StealClock),
        sampler: if sampling {
            SamplerState::Ran
        } else {
            SamplerState::Off
        },
        ..Findings::default()
    };
    if let Some(state) = tracer_state {
        findings.tracer = state;
    }
    for event in early {
        collect(event, &mut findings, &mut progress);
    }
    let watch_start = Instant::now();
    let deadline = watch_start + config.duration;
    let mut next_tick = watch_start + TICK;
    while Instant::now() < deadline {
        if Instant::now() >= next_tick {
            next_tick += TICK;
            progress(Progress::Tick {
                elapsed: watch_start.elapsed(),
                stalls: findings.stalls.len(),
                total: config.duration,
            });
        }
        match events_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => collect(event, &mut findings, &mut progress),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The tracer ended early: it could not load. Keep probing.
            Err(mpsc::RecvTimeoutError::Disconnected) => thread::sleep(Duration::from_millis(100)),
        }
    }
    stop.request();

    match tracer.join() {
        Ok(Ok(_report)) => {}
        Ok(Err(e)) => {
            let reason = format!("{e:#}");
            progress(Progress::TracerUnavailable(reason.clone()));
            findings.tracer = TracerState::Unavailable { reason };
        }
        Err(_) => {
            findings.tracer = TracerState::Unavailable {
                reason: "the tracer thread panicked".into(),
            }
        }
    }
    // Stalls assembled while the tracer wound down.
    for event in events_rx.try_iter() {
        collect(event, &mut findings, &mut progress);
    }
    findings.end_ns = clock::realtime_ns();

    if let Some(handle) = drop_counter {
        let joined = handle.context("start the drop counter")?.join();
        findings.drop_counter = Some(match joined {
            Ok(Ok(events)) => {
                for event in events {
                    match event {
                        DropsEvent::Drop(d) => findings.drops.push(d),
                        DropsEvent::Retransmit(r) => findings.retransmits.push(r),
                        DropsEvent::Started => {}
                    }
                }
                SamplerState::Ran
            }
            Ok(Err(e)) => {
                let reason = format!("{e:#}");
                progress(Progress::DropsUnavailable(reason.clone()));
                SamplerState::Unavailable { reason }
            }
            Err(_) => SamplerState::Unavailable {
                reason: "the drop counter panicked".into(),
            },
        });
    }
    if let Some(handle) = throttle_reader {
        let joined = handle.context("start the throttling reader")?.join();
        findings.throttle_reader = Some(match joined {
            Ok(Ok(events)) => {
                for event in events {
                    match event {
                        ThrottleEvent::Throttle(t) => findings.throttle.push(t),
                        ThrottleEvent::Vanished { cgroup, last_ns } => {
                            progress(Progress::Throttle(format!(
                                "cgroup {cgroup} was removed during the run: its throttling is counted until {:.1} s in",
                                last_ns.saturating_sub(start_ns) as f64 / 1e9
                            )));
                            findings.throttle.push(CpuThrottle {
                                start_ns: last_ns,
                                end_ns: last_ns,
                                cgroup,
                                cgroup_id: 0,
                                quota_ms: None,
                                period_ms: 0.0,
                                periods: 0,
                                throttled: 0,
                                throttled_ms: 0.0,
                                removed: true,
                            });
                        }
                        ThrottleEvent::Lost(rows) => progress(Progress::Throttle(format!(
                            "{rows} cgroup readings lost to a full ring (more than ~20,000 limited cgroups): some cgroups are missing"
                        ))),
                        ThrottleEvent::Started { .. } => {}
                    }
                }
                SamplerState::Ran
            }
            Ok(Err(e)) => {
                let reason = format!("{e:#}");
                progress(Progress::Throttle(format!("could not be read: {reason}")));
                SamplerState::Unavailable { reason }
            }
            Err(_) => SamplerState::Unavailable {
                reason: "the throttling reader panicked".into(),
            },
        });
    }
    if let Some(before) = counters_before {
        let after = netstall_netstat::snapshot_now(findings.end_ns);
        match (before, after) {
            (Ok(before), Ok(after)) => {
                findings.net = Some(netstall_netstat::delta(&before, &after))
            }
            (Err(e), _) | (_, Err(e)) => progress(Progress::DropsUnavailable(format!(
                "network counters: {e:#}"
            ))),
        }
    }

    if let Some(handle) = proc_stat {
        match handle.context("start the steal watcher")?.join() {
            Ok(Ok(steals)) => {
                findings.steal = steals;
                findings.steal_source = Some(StealSource::ProcStat);
            }
            Ok(Err(e)) => progress(Progress::StealUnavailable(format!("{e:#}"))),
            Err(_) => progress(Progress::StealUnavailable(
                "the steal watcher panicked".into(),
            )),
        }
    }

    for ((prober, (_, ip)), server) in probers.into_iter().zip(&targets).zip(&mut servers) {
        let (text, result) = prober
            .join()
            .map_err(|_| anyhow::anyhow!("a prober thread panicked"))?;
        let mut target = target_findings(text, result);
        target.on_this_host = netstall_probe::local::is_on_this_host(*ip, &host_addresses);
        for server in server.iter_mut() {
            crate::server::refresh(server);
        }
        target.servers = std::mem::take(server);
        findings.targets.push(target);
    }

    let mut extras = Extras {
        host: host_line(),
        ..Extras::default()
    };
    if let Some(handle) = sampler {
        match handle.context("start the sampler")?.join() {
            Ok(Ok(recording)) => {
                let (gaps, chart) = read_samples(&recording.samples, &findings.stalls);
                // A gap the hypervisor's steal covers is not IRQs off.
                findings.gaps = gaps
                    .into_iter()
                    .filter(|g| !steal_explains(&findings.steal, Some(g.cpu), g.start_ns, g.end_ns))
                    .collect();
                extras.chart = chart;
            }
            Ok(Err(e)) => {
                let reason = format!("{e:#}");
                progress(Progress::SamplerUnavailable(reason.clone()));
                findings.sampler = SamplerState::Unavailable { reason };
            }
            Err(_) => {
                let reason = "the sampler thread panicked".to_string();
                progress(Progress::SamplerUnavailable(reason.clone()));
                findings.sampler = SamplerState::Unavailable { reason };
            }
        }
    }
    findings.stalls.sort_by_key(|s| (s.start_ns, s.cpu));

    let mut verdict = diagnose(&findings);
    let now_ns = clock::realtime_ns();
    verdict.time_to_verdict_s = Some(round1(started.elapsed().as_secs_f64()));
    verdict.from_first_stall_s = verdict
        .first_stall_ns
        .map(|first| round1(now_ns.saturating_sub(first) as f64 / 1e9));
    progress(Progress::Finished);
    Ok(DoctorRun {
        verdict,
        findings,
        extras,
    })
}

fn collect(event: TraceEvent, findings: &mut Findings, progress: &mut impl FnMut(Progress)) {
    match event {
        TraceEvent::Stall(stall) => {
            progress(Progress::Stall(Box::new(stall.clone())));
            findings.stalls.push(stall);
        }
        TraceEvent::Icmp(echo) => findings.icmp.push(echo),
        TraceEvent::Steal(steal) => findings.steal.push(steal),
        TraceEvent::Nonpreemptible(n) => findings.nonpreemptible.push(n),
        // Running totals since the tracer started (about the run's start):
        // the latest is the run's ledger so far.
        TraceEvent::Totals(totals) => {
            findings.flushes = netstall_kernel::trace::ledger::window_of(
                &totals.flush_ledger,
                findings.start_ns,
                clock::realtime_ns(),
                None,
            );
        }
        TraceEvent::Started(_) | TraceEvent::Syscall(_) => {}
    }
}

fn memcg_findings() -> Option<MemcgFindings> {
    let report = netstall_cgroups::report::report(&netstall_cgroups::host::Host::live()).ok()?;
    Some(MemcgFindings {
        kernel: report.kernel.clone(),
        live: report.memory.live,
        dying: report.memory.dying,
        worst_stall_ms: report.worst_stall_ms,
    })
}

fn target_findings(text: String, result: Result<netstall_probe::Report>) -> TargetFindings {
    match result {
        Ok(report) => {
            let proto = report.info.proto.to_string();
            TargetFindings {
                target: text,
                proto,
                sent: report.summary.sent,
                received: report.summary.received,
                p50_us: report.summary.p50_us,
                p99_us: report.summary.p99_us,
                max_us: report.summary.max_us,
                rtts: report
                    .probes
                    .iter()
                    .map(|p| (p.sent_ns, p.rtt_ns.map(|ns| ns as f64 / 1e3)))
                    .collect(),
                error: report.unreachable_reason().or_else(|| http_errors(&report)),
                late_sends: report
                    .probes
                    .iter()
                    .filter(|p| p.late_ns >= LATE_SEND_NS)
                    .map(|p| (p.scheduled_ns, p.late_ns as f64 / 1e6))
                    .collect(),
                episodes: report.episodes,
                on_this_host: false,
                servers: Vec::new(),
            }
        }
        Err(e) => TargetFindings {
            target: text,
            proto: String::new(),
            sent: 0,
            received: 0,
            p50_us: None,
            p99_us: None,
            max_us: None,
            episodes: Vec::new(),
            rtts: Vec::new(),
            error: Some(format!("{e:#}")),
            on_this_host: false,
            late_sends: Vec::new(),
            servers: Vec::new(),
        },
    }
}

/// An HTTP target that answered with errors (4xx, 5xx): its timing is kept,
/// but the URL or the server needs fixing first.
fn http_errors(report: &netstall_probe::Report) -> Option<String> {
    let statuses: Vec<u16> = report
        .probes
        .iter()
        .filter_map(|p| match p.reply {
            Some(netstall_probe::Reply::Http { status, .. }) => Some(status),
            _ => None,
        })
        .collect();
    let bad: Vec<u16> = statuses.iter().copied().filter(|s| *s >= 400).collect();
    let first = *bad.first()?;
    Some(format!(
        "answered HTTP {first} to {} of {} requests (timing kept; check the URL and the server)",
        bad.len(),
        statuses.len()
    ))
}

/// Sample gaps (IRQs off) with where sampling resumed, and the samples
/// before each kernel stall on its CPU (or before each gap when the tracer
/// saw none), folded, in time order: the report's flame chart.
fn read_samples(samples: &[timeline::Sample], stalls: &[Stall]) -> (Vec<SampleGap>, Vec<String>) {
    let found = timeline::gaps(samples, StallRules::for_frequency(SAMPLE_HZ));
    let gaps: Vec<SampleGap> = found
        .iter()
        .filter(|s| s.kind == GapKind::IrqsOff)
        // Resumed in user mode: the timer would have fired the moment IRQs
        // came back on, in the kernel; the CPU did not run (steal) instead.
        // Resumed in netstall's own thread: the observer's rhythm, not a stall.
        .filter(|s| {
            let resumed = &samples[s.last];
            resumed.kernel_depth > 0 && resumed.pid != std::process::id()
        })
        .map(|s| timeline::sample_gap(samples, s))
        .collect();
    let anchors: Vec<(u32, u64)> = if stalls.is_empty() {
        gaps.iter().map(|g| (g.cpu, g.start_ns)).collect()
    } else {
        stalls.iter().map(|s| (s.cpu, s.start_ns)).collect()
    };
    let mut chart = Vec::new();
    for (cpu, at) in anchors.iter().take(20) {
        let before: Vec<&timeline::Sample> = samples
            .iter()
            .filter(|s| s.cpu == *cpu && s.time_ns <= *at + 1_000_000)
            .collect();
        let from = before.len().saturating_sub(SAMPLES_BEFORE);
        chart.extend(before[from..].iter().map(|s| s.folded()));
    }
    (gaps, chart)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn host_line() -> String {
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct we own.
    unsafe { libc::uname(&mut uts) };
    let field = |f: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates each field.
        unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    format!(
        "host {} · kernel {} · {} CPUs",
        field(&uts.nodename),
        field(&uts.release),
        netstall_core::cpu::online().map(|c| c.len()).unwrap_or(0)
    )
}
