//! The kernel tracing source: RX stalls seen by the in-kernel detectors,
//! with their culprit, into the stall histogram, the culprit counter, the
//! health verdict and the event log.
//!
//! The detectors themselves live in `netstall-kernel`; this module adapts
//! what they report to the agent, so the agent runs (probes, cgroup counts)
//! whether or not the tracer can load, and says which.
//!
//! The tracer is loaded once and runs for the agent's lifetime (no gap in
//! coverage, no reload cost); every [`TOTALS_EVERY`] it streams the kernel's
//! running totals (ring-buffer drops, per-CPU latency histograms), whose
//! increments go to the metrics.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use netstall_core::privilege::{self, Capability};
use netstall_core::shutdown::Shutdown;
use netstall_events::kernel::{Culprit, Detector, Stall};
use netstall_kernel::trace::{self, Stop, TraceConfig, TraceEvent, TraceTotals};

use netstall_core::clock::realtime_ns;

use crate::health::TracerState;
use crate::ledger::Ledger;
use crate::metrics::StallLabels;
use crate::State;

/// How often ring-buffer drops, the latency histograms and the stats
/// readers' ledger are read from the kernel's maps.
pub const TOTALS_EVERY: Duration = Duration::from_secs(30);

/// How long the tracer pauses after a failure before it loads again.
const RESTART_DELAY: Duration = Duration::from_secs(10);

/// Traces RX stalls of at least `threshold` until `stop`. When the tracer
/// cannot load (privileges, kernel), says why in the metrics and /healthz
/// and returns: the rest of the agent keeps running.
pub fn run(threshold: Duration, state: &State, stop: &Arc<Shutdown>) {
    let config = TraceConfig {
        threshold,
        totals_every: Some(TOTALS_EVERY),
        ..TraceConfig::default()
    };
    let until_stopped = Stop {
        duration: None,
        shutdown: Some(Arc::clone(stop)),
    };
    while !stop.is_requested() {
        let mut seen = SeenTotals::default();
        // Loading needs the tracer's capabilities in effect; once it runs,
        // only CAP_SYSLOG (kernel symbols are read at the first stall).
        // Without them, loading says which is missing.
        if let Err(e) = privilege::set_effective(&crate::TRACER_CAPABILITIES) {
            eprintln!("netstall agent: {e:#}");
        }
        let traced = std::panic::catch_unwind(AssertUnwindSafe(|| {
            trace::run(&config, &until_stopped, |event| match event {
                TraceEvent::Started(_) => {
                    if let Err(e) = privilege::set_effective(&[Capability::Syslog]) {
                        eprintln!("netstall agent: {e:#}");
                    }
                    set_state(state, TracerState::Running);
                    // Loading parsed the kernel's BTF: give that freed heap
                    // back to the system instead of keeping it resident.
                    // SAFETY: malloc_trim only releases free memory of this process's heap.
                    unsafe { libc::malloc_trim(0) };
                }
                TraceEvent::Stall(stall) => {
                    seen.stalls += 1;
                    record(state, &stall);
                }
                TraceEvent::Totals(totals) => seen.advance(state, &totals),
                TraceEvent::Icmp(_)
                | TraceEvent::Syscall(_)
                | TraceEvent::Steal(_)
                | TraceEvent::Nonpreemptible(_) => {}
            })
        }));
        match traced {
            Ok(Ok(report)) => seen.advance(
                state,
                &TraceTotals {
                    ring_drops: report.ring_drops,
                    histograms: report.histograms,
                    net_rx_ns: Vec::new(),
                    bpf_run_ns: None,
                    flush_ledger: Vec::new(),
                },
            ),
            Ok(Err(e)) => {
                let why = format!("{e:#}").replace('\n', " ");
                eprintln!("netstall agent: the kernel stall tracer is unavailable: {why}");
                set_state(state, TracerState::Unavailable(why));
                return;
            }
            // A bug must not end the node's tracing for the agent's
            // lifetime: it is counted (the panic message is on stderr) and
            // tracing starts again after a pause.
            Err(_) => {
                state.metrics.tracer_failures.inc();
                set_state(
                    state,
                    TracerState::Unavailable("the tracer failed; restarting".into()),
                );
                stop.wait(RESTART_DELAY);
            }
        }
    }
}

/// The totals one tracer run has reported so far, so that each new report
/// adds only its increments to the metrics (a restarted tracer counts
/// from zero again).
struct SeenTotals {
    ring_drops: u64,
    /// Count per (detector, CPU, bucket upper bound).
    buckets: HashMap<(&'static str, u32, u64), u64>,
    ledger: Ledger,
    /// Stalls since the last totals: the ledger's window is recorded then.
    stalls: u64,
}

impl Default for SeenTotals {
    fn default() -> Self {
        Self {
            ring_drops: 0,
            buckets: HashMap::new(),
            ledger: Ledger::new(realtime_ns()),
            stalls: 0,
        }
    }
}

impl SeenTotals {
    fn advance(&mut self, state: &State, totals: &TraceTotals) {
        self.ledger.advance(&state.metrics, &totals.flush_ledger);
        let window = self.ledger.take_window(&state.node, realtime_ns());
        // Who flushed stats while the node stalled: evidence worth keeping.
        // A quiet window is only counted (the metrics), never written.
        if std::mem::take(&mut self.stalls) > 0 {
            for flush in window {
                state.event(flush);
            }
        }
        state
            .metrics
            .ring_drops
            .inc_by(totals.ring_drops.saturating_sub(self.ring_drops));
        self.ring_drops = self.ring_drops.max(totals.ring_drops);
        for histogram in &totals.histograms {
            let increments: Vec<(u64, u64)> = histogram
                .buckets
                .iter()
                .map(|&(upper, count)| {
                    let key = (histogram.detector.name(), histogram.cpu, upper);
                    let before = self.buckets.insert(key, count).unwrap_or(0);
                    (upper, count.saturating_sub(before))
                })
                .filter(|&(_, n)| n > 0)
                .collect();
            state
                .metrics
                .kernel_latency
                .add(histogram.detector.name(), &increments);
        }
    }
}

/// Records one stall everywhere it shows: the histogram, the culprits'
/// time, the health window and the event log (with the node's name).
pub fn record(state: &State, stall: &Stall) {
    let seconds = stall.duration_ms / 1e3;
    state
        .metrics
        .rx_stall
        .get_or_create(&StallLabels {
            cpu: stall.cpu.to_string(),
            detector: stall.detector.name().to_string(),
        })
        .observe(seconds);
    let culprit = stall.culprit.as_ref();
    if let Some(c) = culprit {
        let syscall = c.syscall.as_deref().unwrap_or("none");
        state.metrics.add_culprit_time(&c.comm, syscall, seconds);
    }
    state.health.lock().expect("health lock").stall_by(
        stall.start_ns,
        stall.cpu,
        stall.duration_ms,
        culprit.map(|c| match &c.syscall {
            Some(syscall) => format!("{}/{syscall}", c.comm),
            None => c.comm.clone(),
        }),
    );
    state.event(Stall {
        node: Some(state.node.clone()),
        ..stall.clone()
    });
    state.stall_on(stall.cpu, stall.end_ns);
}

/// Sets the tracer's state in the metrics and the health report.
pub fn set_state(state: &State, tracer: TracerState) {
    let up = &state.metrics.tracer_up;
    if tracer == TracerState::Off {
        up.remove(&Vec::new());
    } else {
        up.get_or_create(&Vec::new())
            .set(i64::from(tracer == TracerState::Running));
    }
    state.health.lock().expect("health lock").tracer = tracer;
}

/// The story's stall as the kernel tracer reports it: 117 ms of IRQs off on
/// CPU 3, by cadvisor in read() (for tests of what a stall does to the agent).
pub fn cadvisor_stall(start_ns: u64) -> Stall {
    Stall {
        detector: Detector::IrqsOff,
        cpu: 3,
        start_ns,
        end_ns: start_ns + 117_000_000,
        duration_ms: 117.0,
        seen_by: vec![Detector::IrqsOff],
        packets: None,
        max_wait_ms: None,
        drained_by: None,
        culprit: Some(Culprit {
            comm: "cadvisor".into(),
            syscall: Some("read".into()),
            ..Culprit::default()
        }),
        node: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventLog;
    use crate::AgentOptions;

    #[test]
    fn a_stall_shows_in_the_histogram_culprits_health_and_log() {
        let dir = std::env::temp_dir().join(format!("netstall-tracer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("events.jsonl");
        let config = AgentOptions {
            node_name: Some("node1".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let state = State::new(&config, EventLog::file(&log, 1 << 20).unwrap());
        let now = netstall_core::clock::realtime_ns();
        record(&state, &cadvisor_stall(now));

        let text = state.metrics.encode_prometheus();
        assert!(
            text.contains(
                "netstall_rx_stall_seconds_bucket{cpu=\"3\",detector=\"irqs-off\",le=\"0.25\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "netstall_stall_culprit_seconds_total{comm=\"cadvisor\",syscall=\"read\"} 0.117"
            ),
            "{text}"
        );
        let health = state.health.lock().unwrap().report(now);
        assert_eq!(health.stalls, 1);
        assert_eq!(health.worst_stall_ms, Some(117.0));
        let line = std::fs::read_to_string(&log).unwrap();
        let event: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(event["type"], "stall");
        assert_eq!(event["node"], "node1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
