//! Running the matrix: one probe session per path, all at once (threads),
//! with the same interval and duration, from each path's vantage point.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use netstall_probe::{Mode, ProbeConfig, Report, SessionEvent};

use crate::analysis::PathOutcome;
use crate::plan::{PathSpec, ProbeKind, Vantage};

/// How to probe the paths.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Named network namespace of each vantage point (`None`: this one).
    pub client_netns: Option<String>,
    pub outside_netns: Option<String>,
    /// CPU every prober is pinned to (keep it off the CPU you suspect).
    pub cpu: Option<u32>,
    /// Time between probes of one path (all its flows together).
    pub interval: Duration,
    /// How long every path is probed.
    pub duration: Duration,
    /// TCP source ports / ICMP identifiers rotated on each path.
    pub flows: u16,
    /// How long to wait for a reply before calling a probe lost.
    pub timeout: Duration,
    /// Set to stop every path early (Ctrl-C).
    pub stop: Option<Arc<AtomicBool>>,
}

/// Probes every path concurrently and returns what each measured, in the
/// order given. A path that cannot run or gets no answer comes back with
/// its reason in `unreachable`; the others are not disturbed.
pub fn run(paths: &[PathSpec], config: &RunConfig) -> Vec<PathOutcome> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(index, path)| {
                // Staggered starts, so the paths' probes do not leave in bursts.
                let offset = config.interval.mul_f64(index as f64 / paths.len() as f64);
                scope.spawn(move || {
                    std::thread::sleep(offset);
                    probe_path(path, config)
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(paths)
            .map(|(handle, path)| {
                handle
                    .join()
                    .unwrap_or_else(|_| failed(path, config, "the probe thread panicked".into()))
            })
            .collect()
    })
}

fn probe_path(path: &PathSpec, config: &RunConfig) -> PathOutcome {
    let mode = match path.probe {
        ProbeKind::Tcp { port } => Mode::Syn { port },
        ProbeKind::Icmp => Mode::Icmp,
    };
    let mut probe = ProbeConfig::new(path.addr, mode, config.interval);
    probe.duration = Some(config.duration);
    probe.flows = config.flows;
    probe.timeout = config.timeout;
    probe.cpu = config.cpu;
    probe.stop = config.stop.clone();
    probe.netns = match path.vantage {
        Vantage::Client => config.client_netns.clone(),
        Vantage::Outside => config.outside_netns.clone(),
    };
    // The session keeps no probes: the RTTs (for the quantile intervals)
    // and the send span are taken as they come.
    let mut rtts_us = Vec::new();
    let mut sent_span: Option<(u64, u64)> = None;
    let result = netstall_probe::run(&probe, |event| {
        if let SessionEvent::Probe(p) = event {
            rtts_us.extend(p.rtt_ns.map(|ns| ns as f64 / 1e3));
            sent_span = Some(sent_span.map_or((p.sent_ns, p.sent_ns), |(first, last)| {
                (first.min(p.sent_ns), last.max(p.sent_ns))
            }));
        }
    });
    match result {
        Ok(report) => {
            let seconds = sent_span.map_or(0.0, |(first, last)| {
                (last - first) as f64 / 1e9 + config.interval.as_secs_f64()
            });
            outcome(path, config, &report, rtts_us, seconds)
        }
        Err(e) => failed(path, config, format!("{e:#}")),
    }
}

fn outcome(
    path: &PathSpec,
    config: &RunConfig,
    report: &Report,
    rtts_us: Vec<f64>,
    seconds: f64,
) -> PathOutcome {
    PathOutcome {
        spec: path.clone(),
        sent: report.summary.sent,
        received: report.summary.received,
        seconds,
        rtts_us,
        episodes: report.episodes.clone(),
        flows_total: config.flows,
        unreachable: report.unreachable_reason(),
    }
}

fn failed(path: &PathSpec, config: &RunConfig, reason: String) -> PathOutcome {
    PathOutcome {
        spec: path.clone(),
        sent: 0,
        received: 0,
        seconds: 0.0,
        rtts_us: Vec::new(),
        episodes: Vec::new(),
        flows_total: config.flows,
        unreachable: Some(reason),
    }
}
