//! `netstall agent`: the always-on node agent. In one small process:
//!
//! * [`mesh`]: ICMP probes to a bounded [`rendezvous`] subset of peers
//!   (static, from DNS or from the Kubernetes API: [`discovery`],
//!   [`kubernetes`]), read for stall episodes by the probe crate's detector
//!   ([`tracker`]);
//! * [`tracer`]: RX stalls and their culprits from the in-kernel detectors;
//! * [`cgroups`]: cheap periodic dying-memcg counts (never memory.stat);
//! * [`netcounters`]: backlog, retransmit, listen-queue and conntrack drops
//!   from the kernel's own counters, read at scrape time;
//! * [`kernel_counters`]: drops per kernel drop reason and CPU cgroups'
//!   throttling, counted in the kernel (eBPF);
//! * [`recorder`]: the evidence of every stall, on disk, bounded, for
//!   `GET /stalls` and `netstall report --from`;
//! * [`sampling`]: after a stall on a CPU, a short sampling window there
//!   (rare: a cooldown), into the recorder;
//! * [`metrics`] on `/metrics`, the [`health`] verdict on `/healthz`
//!   ([`http`]), and a JSON [`events`] log;
//! * opt-in (`--remediate`), [`remediation`] (the state machine, pure) and
//!   [`remediator`] (its Kubernetes API side): the `NetworkStall` node
//!   condition, and one node at a time under a Lease, cordon, drain, reboot
//!   and the proof.
//!
//! `netstall check` (node-problem-detector plugin) asks `/healthz` and
//! turns the verdict into exit code 0, 1 or 2 ([`health::check_verdict`]).

pub mod cgroups;
pub mod config;
pub mod discovery;
pub mod events;
pub mod health;
pub mod http;
pub mod icmp;
pub mod kernel_counters;
pub mod kubernetes;
pub mod ledger;
pub mod mesh;
pub mod metrics;
pub mod netcounters;
pub mod process;
pub mod recorder;
pub mod remediation;
pub mod remediator;
pub mod rendezvous;
pub mod sampling;
pub mod tracer;
pub mod tracker;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use netstall_core::clock::realtime_ns;
use netstall_core::privilege::{self, Capability};
use netstall_core::shutdown::Shutdown;
use netstall_events::agent::{AgentStart, Peers};
use netstall_events::doctor::MemcgCount;
use netstall_events::Record;

pub use config::{AgentConfig, AgentOptions, Peer};
use events::EventLog;
use health::{Health, TracerState};
use metrics::Metrics;

/// What the agent's parts share.
pub struct State {
    pub node: String,
    pub metrics: Metrics,
    pub health: Mutex<Health>,
    events: Mutex<EventLog>,
    event_errors: AtomicU64,
    /// The flight recorder, when `--state-dir` is on and could be opened.
    recorder: Option<Mutex<recorder::Recorder>>,
    recorder_errors: AtomicU64,
    /// The latest dying-memcg count, and whether the recorder has it.
    memcg: Mutex<(Option<MemcgCount>, bool)>,
    /// Stall-triggered sampling, when on.
    sampling: Option<sampling::Triggers>,
}

impl State {
    pub fn new(config: &AgentConfig, events: EventLog) -> Self {
        let metrics = Metrics::new(&config.node_name);
        metrics
            .memcg_dying_limit
            .set(i64::try_from(config.dying_memcg_limit).unwrap_or(i64::MAX));
        Self {
            node: config.node_name.clone(),
            metrics,
            health: Mutex::new(Health::new(
                &config.node_name,
                config.problem_window,
                config.dying_memcg_limit,
            )),
            events: Mutex::new(events),
            event_errors: Default::default(),
            recorder: None,
            recorder_errors: Default::default(),
            memcg: Mutex::default(),
            sampling: None,
        }
    }

    /// The same state, opening a sampling window after a stall (through
    /// `triggers`, whose receiver [`sampling::run`] reads).
    pub fn with_sampling(self, triggers: sampling::Triggers) -> Self {
        Self {
            sampling: Some(triggers),
            ..self
        }
    }

    /// A stall on `cpu` ended at `end_ns`: a sampling window may open there.
    pub fn stall_on(&self, cpu: u32, end_ns: u64) {
        if let Some(triggers) = &self.sampling {
            triggers.stall(cpu, end_ns, realtime_ns());
        }
    }

    /// The same state, keeping stall evidence in `recorder`.
    pub fn with_recorder(self, recorder: recorder::Recorder) -> Self {
        Self {
            recorder: Some(Mutex::new(recorder)),
            ..self
        }
    }

    /// The recorder's directory, when it records.
    pub fn recorder_dir(&self) -> Option<std::path::PathBuf> {
        let recorder = self.recorder.as_ref()?;
        Some(
            recorder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .dir()
                .to_path_buf(),
        )
    }

    /// The latest dying-memcg count (what the recorder writes after a stall).
    pub fn set_memcg(&self, count: MemcgCount) {
        let mut memcg = self.memcg.lock().unwrap_or_else(|p| p.into_inner());
        if memcg.0.as_ref() != Some(&count) {
            *memcg = (Some(count), false);
        }
    }

    /// Keeps a record of a stall's evidence in the recorder (when on): the
    /// stall, then the dying-memcg count if it changed since the last
    /// stall; probe episodes, the ledger and the agent's start as they
    /// come. A failing disk must not stop the agent: the first failure is
    /// told on stderr.
    pub fn record(&self, record: &Record) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let mut records = vec![record];
        let memcg;
        if matches!(record, Record::Stall(_)) {
            let mut latest = self.memcg.lock().unwrap_or_else(|p| p.into_inner());
            if let (Some(count), false) = &*latest {
                memcg = Record::MemcgCount(count.clone());
                records.push(&memcg);
                latest.1 = true;
            }
        }
        let mut recorder = recorder.lock().unwrap_or_else(|p| p.into_inner());
        for record in records {
            if let Err(e) = recorder.write(record) {
                if self.recorder_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("netstall agent: cannot write the flight recorder: {e:#}");
                }
            }
        }
    }

    /// Logs an event; a full disk must not stop the agent, so only the
    /// first failure is reported (on stderr).
    pub fn event(&self, event: impl Into<Record>) {
        let event = event.into();
        if matches!(
            event,
            Record::Stall(_)
                | Record::Episode(_)
                | Record::Agent(_)
                | Record::StatFlush(_)
                | Record::CpuSampling(_)
        ) {
            self.record(&event);
        }
        let result = self.events.lock().expect("event log lock").emit(&event);
        if let Err(e) = result {
            if self.event_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("netstall agent: cannot write the event log: {e}");
            }
        }
    }
}

/// How often the peers' DNS name is read again.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

/// How often a node without peers looks whether discovery found some.
const NO_PEERS_CHECK: Duration = Duration::from_secs(1);

/// Starts a named thread (the name shows in `top -H` and in stack dumps).
fn spawn<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    work: impl FnOnce() -> T + Send + 'scope,
) -> Result<std::thread::ScopedJoinHandle<'scope, T>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn_scoped(scope, work)
        .with_context(|| format!("cannot start the agent's {name} thread"))
}

/// Runs a closure when dropped: on every way out of a scope.
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// The peers this node probes: a rendezvous subset of all known ones,
/// never itself.
fn choose_peers(config: &AgentConfig, discovered: &[Peer]) -> (Vec<Peer>, usize) {
    let all = discovery::merge(&config.peers, discovered);
    let listen_ip = config.listen.ip();
    let candidates: Vec<Peer> = all
        .into_iter()
        .filter(|p| IpAddr::V4(p.addr) != listen_ip && !discovery::is_local(p.addr))
        .collect();
    let chosen = rendezvous::choose(&config.node_name, &candidates, config.max_peers)
        .into_iter()
        .cloned()
        .collect();
    (chosen, candidates.len())
}

/// Runs the agent until a shutdown is requested; `on_ready` is called once
/// it serves, with the address it listens on (`--listen :0` picks a port).
///
/// Every thread sleeps until it has something to do or the shutdown wakes
/// it: none polls, because each idle wake-up costs CPU on every node.
pub fn run(
    config: &AgentConfig,
    stop: Arc<Shutdown>,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> Result<()> {
    let events = match &config.event_log {
        Some(path) => EventLog::file(path, events::MAX_FILE_BYTES)?,
        None => EventLog::stdout(),
    };
    let kubernetes = config
        .peers_kubernetes
        .clone()
        .map(kubernetes::KubernetesPeers::connect)
        .transpose()?;
    // Off (the default): no client, no thread, no API request at all.
    let remediator = if config.remediation.mode == remediation::Mode::Off {
        None
    } else {
        Some(remediator::Remediator::connect(
            config.remediation.clone(),
            &config.node_name,
            config.dying_memcg_limit,
        )?)
    };
    let socket = if config.peers.is_empty() && config.peers_dns.is_none() && kubernetes.is_none() {
        None
    } else {
        Some(icmp::IcmpSocket::open()?)
    };
    let server = http::bind(config.listen)?;
    let mut state = State::new(config, events);
    if let Some(dir) = &config.state_dir {
        // Without its recorder the agent still watches: it says so once.
        match recorder::Recorder::open(dir, config.state_max_bytes) {
            Ok(recorder) => state = state.with_recorder(recorder),
            Err(e) => eprintln!("netstall agent: the flight recorder is off: {e:#}"),
        }
    }
    // Sampling needs the tracer's stalls (and its capabilities).
    let sampling_triggers = if config.tracer && config.stall_sampling.on {
        let (triggers, receiver) = sampling::Triggers::new(&config.stall_sampling);
        state = state.with_sampling(triggers);
        Some(receiver)
    } else {
        None
    };
    // The kernel counters load while the agent holds its capabilities:
    // reading them needs none.
    let throttling =
        kernel_counters::start(&state.metrics, config.packet_drops, config.cpu_throttling);
    // The recorder's directory is open: the capabilities go now.
    drop_capabilities(config)?;
    let state = Arc::new(state);
    let tracer_state = if config.tracer {
        TracerState::Starting
    } else {
        TracerState::Off
    };
    tracer::set_state(&state, tracer_state);
    let discovered: Mutex<Vec<Peer>> = Mutex::default();
    let peers_generation = AtomicU64::new(0);
    // Why the mesh prober ended the agent, if it did.
    let mesh_error: Mutex<Option<anyhow::Error>> = Mutex::default();

    std::thread::scope(|scope| -> Result<()> {
        // However this scope ends, every thread is told to end.
        let _end = Defer(|| {
            stop.request();
            if let Some(triggers) = &state.sampling {
                triggers.close();
            }
        });
        if let Some(receiver) = sampling_triggers {
            let (state, stop) = (&state, &stop);
            spawn(scope, "sampling", move || {
                supervise("sampling", state, stop, || {
                    sampling::run(&config.stall_sampling, &receiver, state, stop)
                })
            })?;
        }
        if let Some(name) = &config.peers_dns {
            let (discovered, peers_generation, stop) = (&discovered, &peers_generation, &stop);
            let state = &state;
            spawn(scope, "dns-peers", move || {
                supervise("dns-peers", state, stop, || {
                    discover(name, discovered, peers_generation, stop)
                });
            })?;
        }
        if let Some(kubernetes) = kubernetes {
            let (discovered, peers_generation, stop) = (&discovered, &peers_generation, &stop);
            spawn(scope, "k8s-peers", move || {
                kubernetes.watch(stop, |peers| {
                    *discovered.lock().expect("discovery lock") = peers;
                    peers_generation.fetch_add(1, Ordering::Relaxed);
                });
            })?;
        }
        if let Some(remediator) = remediator {
            let (state, stop) = (&state, &stop);
            spawn(scope, "remediate", move || remediator.run(state, stop))?;
        }
        if let Some(socket) = socket.as_ref() {
            let (state, stop) = (&state, &stop);
            let (discovered, peers_generation, mesh_error) =
                (&discovered, &peers_generation, &mesh_error);
            spawn(scope, "mesh", move || {
                supervise("mesh", state, stop, || {
                    let result =
                        probe_mesh(config, socket, state, stop, discovered, peers_generation);
                    // Without its prober the agent would serve stale metrics: stop.
                    if let Err(e) = result {
                        *mesh_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        stop.request();
                    }
                })
            })?;
        }
        {
            let (state, stop, mut throttling) = (&state, &stop, throttling);
            spawn(scope, "cgroups", move || {
                supervise("cgroups", state, stop, || {
                    cgroups::run(
                        config.cgroup_interval,
                        config.dying_memcg_limit,
                        throttling.as_mut(),
                        state,
                        stop,
                    )
                })
            })?;
        }
        spawn(scope, "http", || {
            supervise("http", &state, &stop, || {
                if let Err(e) = http::serve(&server, &state, &stop) {
                    eprintln!("netstall agent: {e:#}");
                    state
                        .health
                        .lock()
                        .expect("health lock")
                        .worker_down("http", &format!("{e:#}"));
                }
            })
        })?;
        if config.tracer {
            spawn(scope, "tracer", || {
                tracer::run(config.stall_threshold, &state, &stop)
            })?;
        }
        state.event(AgentStart {
            node: config.node_name.clone(),
            listen: server.local_addr().to_string(),
            peers_static: config.peers.len(),
            peers_dns: config.peers_dns.clone(),
            peers_kubernetes: config.peers_kubernetes.as_ref().map(ToString::to_string),
            probe_rate: config.probe_rate,
            tracer: config.tracer,
            ts_ns: realtime_ns(),
        });
        on_ready(server.local_addr());
        while !stop.wait(Duration::MAX) {}
        Ok(())
    })?;
    match mesh_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What the tracer may need again, for as long as the agent runs: loading
/// its programs (a restart after a failure) and reading kernel symbols.
pub const TRACER_CAPABILITIES: [Capability; 3] =
    [Capability::Bpf, Capability::Perfmon, Capability::Syslog];

/// Drops every capability the agent no longer needs, before any thread
/// starts (capabilities are per thread; threads inherit them): its sockets
/// are open, so CAP_NET_RAW and the rest go. Only the tracer's stay
/// permitted, and none effective: the tracer thread raises them itself
/// ([`tracer::run`]). The bounding set shrinks too (where CAP_SETPCAP
/// allows), so no program the agent runs gets the others back; except
/// with a reboot command, which is the operator's and may need them.
/// docs/agent.md, "Capabilities".
fn drop_capabilities(config: &AgentConfig) -> Result<()> {
    let keep: &[Capability] = if config.tracer {
        &TRACER_CAPABILITIES
    } else {
        &[]
    };
    privilege::drop_all_but(keep, config.remediation.reboot_command.is_none())?;
    privilege::set_effective(&[])
}

/// The pause before a panicked worker runs again: doubled after each
/// panic up to [`MAX_RESTART_PAUSE`], back to the start after a worker
/// ran that long without one.
const MIN_RESTART_PAUSE: Duration = Duration::from_secs(1);
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(60);

/// Runs a worker's `work` until it returns. A panic must not leave the
/// agent quietly blind until shutdown: it is counted
/// (`netstall_worker_failures_total{worker}`), `/healthz` says the worker
/// is down (so `netstall check` answers Unknown, not OK), and `work` runs
/// again after a pause that backs off.
pub fn supervise(name: &'static str, state: &State, stop: &Shutdown, mut work: impl FnMut()) {
    let mut pause = MIN_RESTART_PAUSE;
    loop {
        let started = std::time::Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut work));
        // The panic may have left a lock poisoned; what it guards is
        // plain data, still consistent enough to serve.
        state.health.clear_poison();
        state.events.clear_poison();
        if outcome.is_ok() || stop.is_requested() {
            return;
        }
        state
            .metrics
            .worker_failures
            .get_or_create(&metrics::WorkerLabels { worker: name })
            .inc();
        state
            .health
            .lock()
            .expect("health lock")
            .worker_down(name, "it panicked; restarting");
        if started.elapsed() >= MAX_RESTART_PAUSE {
            pause = MIN_RESTART_PAUSE;
        }
        eprintln!("netstall agent: the {name} worker panicked; restarting in {pause:?}");
        if stop.wait(pause) {
            return;
        }
        pause = (pause * 2).min(MAX_RESTART_PAUSE);
        state.health.lock().expect("health lock").worker_up(name);
    }
}

/// Re-reads the peers' DNS name until `stop`, bumping `generation` on change.
fn discover(name: &str, discovered: &Mutex<Vec<Peer>>, generation: &AtomicU64, stop: &Shutdown) {
    let mut reported_error = false;
    loop {
        match discovery::resolve(name) {
            Ok(peers) => {
                reported_error = false;
                let mut current = discovered.lock().expect("discovery lock");
                if *current != peers {
                    *current = peers;
                    generation.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A DNS hiccup keeps the last known peers; it is told once.
            Err(e) if !reported_error => {
                reported_error = true;
                eprintln!("netstall agent: {e:#}");
            }
            Err(_) => {}
        }
        if stop.wait(DISCOVERY_INTERVAL) {
            return;
        }
    }
}

/// Probes the chosen peers, choosing again whenever discovery changes them.
fn probe_mesh(
    config: &AgentConfig,
    socket: &icmp::IcmpSocket,
    state: &State,
    stop: &Shutdown,
    discovered: &Mutex<Vec<Peer>>,
    peers_generation: &AtomicU64,
) -> Result<()> {
    while !stop.is_requested() {
        let generation = peers_generation.load(Ordering::Relaxed);
        let (chosen, known) =
            choose_peers(config, &discovered.lock().expect("discovery lock").clone());
        state.event(Peers {
            node: state.node.clone(),
            peers: chosen.iter().map(|p| p.name.clone()).collect(),
            peers_known: known,
            ts_ns: realtime_ns(),
        });
        state.metrics.peers_probed.set(chosen.len() as i64);
        let names: Vec<&str> = chosen.iter().map(|p| p.name.as_str()).collect();
        state.metrics.retain_episode_peers(&names);
        state
            .health
            .lock()
            .expect("health lock")
            .peers(chosen.len());
        if chosen.is_empty() {
            // Discovery bumps the generation when peers come: look once a second.
            while peers_generation.load(Ordering::Relaxed) == generation
                && !stop.wait(NO_PEERS_CHECK)
            {}
            continue;
        }
        let mesh_config = mesh::MeshConfig {
            peers: chosen,
            rate: config.probe_rate,
            threshold: config.stall_threshold,
        };
        mesh::run(
            &mesh_config,
            socket,
            state,
            stop,
            (peers_generation, generation),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_panicked_worker_shows_in_healthz_and_a_metric_and_runs_again() {
        let config = AgentOptions::default().resolve().unwrap();
        let state = State::new(&config, EventLog::stdout());
        state.health.lock().unwrap().tracer = TracerState::Running;
        let stop = Shutdown::new().unwrap();
        let runs = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            // However the checks end, the worker is told to stop (before
            // the scope waits for it).
            let _stop = Defer(|| stop.request());
            scope.spawn(|| {
                supervise("cgroups", &state, &stop, || {
                    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("a worker bug (expected by this test)");
                    }
                    stop.wait(Duration::MAX);
                })
            });
            // Within the restart pause (1 s, after the panic message and
            // its backtrace are printed): down, counted.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let status = || state.health.lock().unwrap().report(realtime_ns()).status;
            while status() != "unknown" && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let report = state.health.lock().unwrap().report(realtime_ns());
            assert_eq!(report.status, "unknown", "{report:?}");
            assert!(report.problems[0].contains("cgroups worker"), "{report:?}");
            let metrics = state.metrics.encode_prometheus();
            assert!(
                metrics.contains("netstall_worker_failures_total{worker=\"cgroups\"} 1"),
                "{metrics}"
            );
            // After it: running again, and the verdict is back.
            while (runs.load(Ordering::SeqCst) < 2 || status() != "ok")
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(runs.load(Ordering::SeqCst), 2);
            let report = state.health.lock().unwrap().report(realtime_ns());
            assert_eq!(report.status, "ok", "{report:?}");
            stop.request();
        });
    }
}
