//! `netstall agent`: the always-on node agent. In one small process:
//!
//! * [`mesh`]: ICMP probes to a bounded [`rendezvous`] subset of peers, read
//!   for stall episodes by the probe crate's detector ([`tracker`]);
//! * [`tracer`]: RX stalls and their culprits from the in-kernel detectors;
//! * [`cgroups`]: cheap periodic dying-memcg counts (never memory.stat);
//! * [`metrics`] on `/metrics`, the [`health`] verdict on `/healthz`
//!   ([`http`]), and a JSON [`events`] log.
//!
//! `netstall check` (node-problem-detector plugin) asks `/healthz` and
//! turns the verdict into exit code 0, 1 or 2 ([`health::check_verdict`]).

pub mod cgroups;
pub mod config;
pub mod events;
pub mod health;
pub mod http;
pub mod icmp;
pub mod mesh;
pub mod metrics;
pub mod rendezvous;
pub mod tracer;
pub mod tracker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use netstall_core::clock::realtime_ns;
use serde::Serialize;

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
    event_errors: std::sync::atomic::AtomicU64,
}

impl State {
    pub fn new(config: &AgentConfig, events: EventLog) -> Self {
        Self {
            node: config.node_name.clone(),
            metrics: Metrics::new(&config.node_name),
            health: Mutex::new(Health::new(
                &config.node_name,
                config.problem_window,
                config.dying_memcg_limit,
            )),
            events: Mutex::new(events),
            event_errors: Default::default(),
        }
    }

    /// Logs an event; a full disk must not stop the agent, so a failure is
    /// reported on stderr once and counted.
    pub fn event<T: Serialize>(&self, event: &T) {
        let result = self.events.lock().expect("event log lock").emit(event);
        if let Err(e) = result {
            if self.event_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("netstall agent: cannot write the event log: {e}");
            }
        }
    }
}

/// The `{"type":"agent"}` event at start.
#[derive(Serialize)]
struct StartEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    listen: String,
    peers: Vec<&'a str>,
    peers_known: usize,
    probe_rate: u32,
    tracer: bool,
    ts_ns: u64,
}

/// Runs the agent until `stop` is set; `on_ready` is called once it serves.
pub fn run(config: &AgentConfig, stop: Arc<AtomicBool>, on_ready: impl FnOnce()) -> Result<()> {
    let events = match &config.event_log {
        Some(path) => EventLog::file(path, events::MAX_FILE_BYTES)?,
        None => EventLog::stdout(),
    };
    let chosen: Vec<Peer> = rendezvous::choose(&config.node_name, &config.peers, config.max_peers)
        .into_iter()
        // A node never probes itself, whatever name it was listed under.
        .filter(|p| config.listen.ip() != std::net::IpAddr::V4(p.addr))
        .cloned()
        .collect();
    let socket = if chosen.is_empty() {
        None
    } else {
        Some(icmp::IcmpSocket::open()?)
    };
    let server = http::bind(config.listen)?;
    let state = Arc::new(State::new(config, events));
    let tracer_state = if config.tracer {
        TracerState::Starting
    } else {
        TracerState::Off
    };
    tracer::set_state(&state, tracer_state);

    std::thread::scope(|scope| -> Result<()> {
        let mesh = socket.as_ref().map(|socket| {
            let mesh_config = mesh::MeshConfig {
                peers: chosen.clone(),
                rate: config.probe_rate,
                threshold: config.stall_threshold,
            };
            let (state, stop) = (&state, &stop);
            scope.spawn(move || {
                let result = mesh::run(&mesh_config, socket, state, stop);
                // Without its prober the agent would serve stale metrics: stop.
                if result.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                result
            })
        });
        scope.spawn(|| {
            cgroups::run(
                config.cgroup_interval,
                config.dying_memcg_limit,
                &state,
                &stop,
            )
        });
        scope.spawn(|| http::serve(&server, &state, &stop));
        if config.tracer {
            scope.spawn(|| tracer::run(config.stall_threshold, &state, &stop));
        }
        state.event(&StartEvent {
            kind: "agent",
            node: &config.node_name,
            listen: config.listen.to_string(),
            peers: chosen.iter().map(|p| p.name.as_str()).collect(),
            peers_known: config.peers.len(),
            probe_rate: config.probe_rate,
            tracer: config.tracer,
            ts_ns: realtime_ns(),
        });
        on_ready();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        match mesh {
            Some(mesh) => mesh
                .join()
                .map_err(|_| anyhow!("the mesh prober panicked"))?,
            None => Ok(()),
        }
    })
}
