//! The sources behind the screen, each on its own thread, all sending
//! [`Update`]s down one channel: the stall tracer (stalls, NET_RX time, BPF
//! cost, ring drops), probes to the targets, CPU sampling (sample gaps) and
//! the dying-memcg count.

use std::net::Ipv4Addr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netstall_core::clock::realtime_ns;
use netstall_core::privilege::{self, Capability};
use netstall_core::shutdown::Shutdown;
use netstall_kernel::trace::{self, Stop, TraceConfig, TraceEvent};
use netstall_probe::{Mode, ProbeConfig, SessionEvent};
use netstall_xray::sampler::{self, SamplerConfig};
use netstall_xray::timeline::{self, GapKind, StallRules};

use crate::model::Update;
use crate::TopConfig;

/// How often the tracer's totals (NET_RX time, BPF cost, drops) are read:
/// each read is a few map lookups, and the lanes' NET_RX resolution is this.
const TOTALS_EVERY: Duration = Duration::from_secs(1);
/// CPU sampling rate for sample gaps: a gap is then at least 25 ms (five
/// periods). Only timestamps are recorded: naming stacks is what costs.
const SAMPLE_HZ: u64 = 199;
/// Sampling runs in chunks this long (a gap across two chunks is missed).
const SAMPLE_CHUNK: Duration = Duration::from_secs(2);
/// Counting cgroups walks the memory hierarchy: not often.
const MEMCG_EVERY: Duration = Duration::from_secs(10);
/// Loading and attaching the tracer takes well under a second here; a
/// kernel that makes the verifier work hard gets this long.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// The running sources.
pub struct Sources {
    pub updates: Receiver<Update>,
    pub detectors: Vec<String>,
    threads: Vec<JoinHandle<()>>,
}

impl Sources {
    /// Waits for every source to end (after the stop was requested).
    pub fn join(self) {
        drop(self.updates);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Fails, naming the capability, before anything starts.
pub fn check(config: &TopConfig) -> Result<Vec<(String, Ipv4Addr, Mode)>> {
    if let Some(cpus) = &config.cpus {
        netstall_core::cpu::check_online(cpus)?;
    }
    netstall_kernel::require_bpf("netstall top")?;
    privilege::require(&[Capability::Syslog], "netstall top (kernel symbols)")?;
    if !config.targets.is_empty() {
        privilege::require(&[Capability::NetRaw], "netstall top --target (raw sockets)")?;
    }
    config
        .targets
        .iter()
        .map(|t| {
            let ip = netstall_probe::resolve(&t.host)?;
            let mode = match t.port {
                Some(port) => Mode::Syn { port },
                None => Mode::Icmp,
            };
            Ok((t.text.clone(), ip, mode))
        })
        .collect()
}

/// Starts the tracer and waits until it is attached (an error then is the
/// command's error), then the other sources.
pub fn start(config: &TopConfig, stop: &Arc<Shutdown>) -> Result<Sources> {
    let targets = check(config)?;
    let (tx, updates) = mpsc::channel();
    let mut threads = Vec::new();

    let (started_tx, started_rx) = mpsc::channel();
    threads.push(tracer(config, stop.clone(), tx.clone(), started_tx)?);
    let detectors = match started_rx.recv_timeout(ATTACH_TIMEOUT) {
        Ok(Ok(detectors)) => detectors,
        Ok(Err(e)) => {
            stop.request();
            bail!("{e}");
        }
        Err(_) => {
            stop.request();
            bail!(
                "the tracer did not attach within {} s",
                ATTACH_TIMEOUT.as_secs()
            );
        }
    };

    for (index, (text, ip, mode)) in targets.into_iter().enumerate() {
        threads.push(prober(
            config,
            index,
            text,
            ip,
            mode,
            stop.clone(),
            tx.clone(),
        )?);
    }
    if config.sample {
        let cpus = match &config.cpus {
            Some(c) => c.clone(),
            None => netstall_core::cpu::online()?,
        };
        threads.push(sampler_thread(cpus, stop.clone(), tx.clone())?);
    }
    threads.push(memcg_thread(stop.clone(), tx)?);
    Ok(Sources {
        updates,
        detectors,
        threads,
    })
}

type Started = std::result::Result<Vec<String>, String>;

fn tracer(
    config: &TopConfig,
    stop: Arc<Shutdown>,
    tx: Sender<Update>,
    started: Sender<Started>,
) -> Result<JoinHandle<()>> {
    // The kernel's BPF run-time statistics (the tracer's cost) need
    // CAP_SYS_ADMIN; without it, the view runs and says what is missing.
    let self_cost = privilege::has(Capability::SysAdmin);
    if !self_cost {
        let _ = tx.send(Update::Note(
            "tracer cost needs CAP_SYS_ADMIN (BPF stats)".into(),
        ));
    }
    let trace_config = TraceConfig {
        threshold: config.threshold,
        cpus: config.cpus.clone(),
        self_cost,
        totals_every: Some(TOTALS_EVERY),
        // A stall shows a little sooner; later evidence for it is rare.
        settle: Duration::from_millis(300),
        ..TraceConfig::default()
    };
    thread::Builder::new()
        .name("top-trace".into())
        .spawn(move || {
            let trace_stop = Stop {
                duration: None,
                shutdown: Some(stop),
            };
            let mut started = Some(started);
            let result = trace::run(&trace_config, &trace_stop, |event| {
                let update = match event {
                    TraceEvent::Started(s) => {
                        if let Some(tx) = started.take() {
                            let _ = tx.send(Ok(s
                                .detectors
                                .iter()
                                .map(|d| d.name().to_string())
                                .collect()));
                        }
                        for u in &s.unavailable {
                            let _ = tx.send(Update::Note(format!("no {}", u.detector)));
                        }
                        return;
                    }
                    TraceEvent::Stall(stall) => Update::Stall(Box::new(stall)),
                    TraceEvent::Totals(t) => Update::Totals {
                        ts_ns: realtime_ns(),
                        net_rx_ns: t.net_rx_ns,
                        bpf_run_ns: t.bpf_run_ns,
                        ring_drops: t.ring_drops,
                    },
                    // ICMP rows and slow syscalls are not asked for; what
                    // else the tracer may learn to say, the screen does not show yet.
                    _ => return,
                };
                let _ = tx.send(update);
            });
            if let Err(e) = result {
                let message = format!("{e:#}").replace('\n', " ");
                match started.take() {
                    Some(started) => {
                        let _ = started.send(Err(message));
                    }
                    None => {
                        let _ = tx.send(Update::Note(format!("tracer stopped: {message}")));
                    }
                }
            }
        })
        .context("start the tracer thread")
}

fn prober(
    config: &TopConfig,
    index: usize,
    text: String,
    ip: Ipv4Addr,
    mode: Mode,
    stop: Arc<Shutdown>,
    tx: Sender<Update>,
) -> Result<JoinHandle<()>> {
    let mut probe = ProbeConfig::new(ip, mode.clone(), config.interval);
    probe.flows = if matches!(mode, Mode::Syn { .. }) {
        config.flows
    } else {
        1
    };
    probe.netns = config.netns.clone();
    probe.cpu = config.probe_cpu;
    probe.stop = Some(stop);
    // Runs until stopped: the callback has every probe, memory stays bounded.
    probe.keep_probes = false;
    thread::Builder::new()
        .name(format!("top-probe-{index}"))
        .spawn(move || {
            let result = netstall_probe::run(&probe, |event| {
                let update = match event {
                    SessionEvent::Probe(p) => Update::Probe {
                        target: index,
                        sent_ns: p.sent_ns,
                        rtt_us: p.rtt_ns.map(|ns| ns as f64 / 1e3),
                    },
                    SessionEvent::Episode(e) => Update::Episode {
                        target: index,
                        start_ns: e.start_ns,
                        duration_ms: e.duration_ms,
                    },
                };
                let _ = tx.send(update);
            });
            if let Err(e) = result {
                let _ = tx.send(Update::Note(format!("{text}: {e:#}")));
            }
        })
        .context("start a prober thread")
}

fn sampler_thread(
    cpus: Vec<u32>,
    stop: Arc<Shutdown>,
    tx: Sender<Update>,
) -> Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("top-xray".into())
        .spawn(move || {
            let config = SamplerConfig {
                cpus,
                frequency: SAMPLE_HZ,
            };
            let rules = StallRules::for_frequency(SAMPLE_HZ);
            while !stop.is_requested() {
                match sampler::record_times(&config, SAMPLE_CHUNK, &stop) {
                    Ok(recording) => {
                        for gap in timeline::gaps(&recording.samples, rules)
                            .into_iter()
                            .filter(|s| s.kind == GapKind::IrqsOff)
                        {
                            let _ = tx.send(Update::SampleGap {
                                cpu: gap.cpu,
                                start_ns: gap.start_ns,
                                duration_ms: gap.duration_ms,
                            });
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Update::Note(format!("no sampling: {e:#}")));
                        return;
                    }
                }
            }
        })
        .context("start the sampler thread")
}

fn memcg_thread(stop: Arc<Shutdown>, tx: Sender<Update>) -> Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("top-memcg".into())
        .spawn(move || {
            let host = netstall_cgroups::host::Host::live();
            loop {
                match netstall_cgroups::report::memory_count(&host) {
                    Ok(memory) => {
                        let _ = tx.send(Update::DyingMemcgs(memory.dying));
                    }
                    Err(e) => {
                        let _ = tx.send(Update::Note(format!("no memcg count: {e:#}")));
                        return;
                    }
                }
                if stop.wait(MEMCG_EVERY) {
                    return;
                }
            }
        })
        .context("start the memcg counter thread")
}

/// This process's CPU time so far (user + system, all threads), ns.
pub fn own_cpu_ns() -> u64 {
    // SAFETY: a zeroed rusage is valid, and getrusage only writes into it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}
