//! The kernel tracing source: RX stalls seen by the in-kernel detectors,
//! with their culprit, into the stall histogram, the culprit counter, the
//! health verdict and the event log.
//!
//! The detectors themselves live in `netstall-kernel`; this module adapts
//! what they report to the agent, so the agent runs (probes, cgroup counts)
//! whether or not the tracer can load, and says which.

use serde::Serialize;

use crate::health::TracerState;
use crate::metrics::StallLabels;
use crate::State;

/// One over-threshold RX stall, as the agent records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StallObservation {
    /// The detector that measured it (`irqs-off`, `rx-backlog`, ...).
    pub detector: String,
    pub cpu: u32,
    pub start_ns: u64,
    pub duration_ms: f64,
    /// The task holding the CPU and the syscall it was in, when known.
    pub comm: Option<String>,
    pub syscall: Option<String>,
}

/// The `{"type":"stall"}` event.
#[derive(Debug, Serialize)]
struct StallEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    #[serde(flatten)]
    stall: &'a StallObservation,
}

/// Records one stall everywhere it shows.
pub fn record(state: &State, stall: &StallObservation) {
    let seconds = stall.duration_ms / 1e3;
    state
        .metrics
        .rx_stall
        .get_or_create(&StallLabels {
            cpu: stall.cpu.to_string(),
            detector: stall.detector.clone(),
        })
        .observe(seconds);
    if let Some(comm) = &stall.comm {
        let syscall = stall.syscall.as_deref().unwrap_or("none");
        state.metrics.add_culprit_time(comm, syscall, seconds);
    }
    state
        .health
        .lock()
        .expect("health lock")
        .stall(stall.start_ns, stall.cpu, stall.duration_ms);
    state.event(&StallEvent {
        kind: "stall",
        node: &state.node,
        stall,
    });
}

/// Sets the tracer's state in the metrics and the health report.
pub fn set_state(state: &State, tracer: TracerState) {
    state
        .metrics
        .tracer_up
        .set(i64::from(tracer == TracerState::Running));
    state.health.lock().expect("health lock").tracer = tracer;
}
