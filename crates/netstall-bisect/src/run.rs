//! Running the matrix: one probe session per path, all at once (threads),
//! with the same interval and duration, from each path's vantage point.

use std::sync::Arc;
use std::time::Duration;

use netstall_core::shutdown::Shutdown;
use netstall_core::steal;
use netstall_events::kernel::Steal;
use netstall_probe::{
    DetectorConfig, Episode, EpisodeKind, Mode, ProbeConfig, ProbeResult, Report, SessionEvent,
    StreamingDetector,
};

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
    pub stop: Option<Arc<Shutdown>>,
}

/// How often `/proc/stat` is read for vCPU steal while the matrix runs.
const STEAL_EVERY: Duration = Duration::from_millis(5);

/// Probes every path concurrently and returns what each measured, in the
/// order given. A path that cannot run or gets no answer comes back with
/// its reason in `unreachable`; the others are not disturbed. Episodes
/// that vCPU steal covers are set aside (counted in `steal_episodes`): a
/// hypervisor pause holds every path at once and says nothing of a layer.
pub fn run(paths: &[PathSpec], config: &RunConfig) -> Vec<PathOutcome> {
    let stop = Arc::new(match Shutdown::new() {
        Ok(stop) => stop,
        Err(_) => return probe_all(paths, config),
    });
    let watch = {
        let stop = stop.clone();
        std::thread::spawn(move || steal::watch_proc_stat(&stop, STEAL_EVERY))
    };
    let mut outcomes = probe_all(paths, config);
    stop.request();
    // Without /proc/stat, nothing is set aside.
    let steals = watch.join().ok().and_then(Result::ok).unwrap_or_default();
    for outcome in &mut outcomes {
        set_aside_steal(outcome, &steals);
    }
    outcomes
}

/// Removes the episodes steal covers (at least half of each) from `outcome`.
pub fn set_aside_steal(outcome: &mut PathOutcome, steals: &[Steal]) {
    let covered = |e: &Episode| steal::steal_explains(steals, None, e.start_ns, e.end_ns);
    let before = outcome.episodes.len() + outcome.sender_episodes.len();
    outcome.episodes.retain(|e| !covered(e));
    outcome.sender_episodes.retain(|e| !covered(e));
    outcome.steal_episodes +=
        (before - outcome.episodes.len() - outcome.sender_episodes.len()) as u64;
}

fn probe_all(paths: &[PathSpec], config: &RunConfig) -> Vec<PathOutcome> {
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
    // The session keeps no probes: the RTTs (for the quantile intervals),
    // the send span and the wake-up series are taken as they come.
    let mut rtts_us = Vec::new();
    let mut sent_span: Option<(u64, u64)> = None;
    let mut wake = WakeSeries::new(config);
    let result = netstall_probe::run(&probe, |event| {
        if let SessionEvent::Probe(p) = event {
            rtts_us.extend(p.rtt_ns.map(|ns| ns as f64 / 1e3));
            sent_span = Some(sent_span.map_or((p.sent_ns, p.sent_ns), |(first, last)| {
                (first.min(p.sent_ns), last.max(p.sent_ns))
            }));
            wake.push(p);
        }
    });
    match result {
        Ok(report) => {
            let seconds = sent_span.map_or(0.0, |(first, last)| {
                (last - first) as f64 / 1e9 + config.interval.as_secs_f64()
            });
            let mut outcome = outcome(path, config, &report, rtts_us, seconds);
            outcome.sender_episodes = wake.finish();
            outcome
        }
        Err(e) => failed(path, config, format!("{e:#}")),
    }
}

/// Episodes among the replies after the kernel received them: each answered
/// probe enters the detector with its wake-up delay (kernel RX stamp to the
/// prober reading it) as its RTT. Replies held in the vantage point's own RX
/// backlog come out together with delays falling by one interval each: a
/// backlog release. Lone late wake-ups (scheduling) are not counted.
struct WakeSeries {
    detector: StreamingDetector,
    releases: Vec<Episode>,
}

impl WakeSeries {
    fn new(config: &RunConfig) -> Self {
        Self {
            detector: StreamingDetector::new(DetectorConfig::new(config.interval, config.flows)),
            releases: Vec::new(),
        }
    }

    fn push(&mut self, probe: &ProbeResult) {
        let (Some(_), Some(wake_ns)) = (probe.rtt_ns, probe.wake_ns) else {
            return;
        };
        let held = ProbeResult {
            rtt_ns: Some(wake_ns),
            reply: None,
            ..probe.clone()
        };
        let over = self.detector.push(held);
        self.releases.extend(backlog_releases(over));
    }

    fn finish(self) -> Vec<Episode> {
        let Self {
            detector,
            mut releases,
        } = self;
        releases.extend(backlog_releases(detector.finish()));
        releases
    }
}

fn backlog_releases(episodes: Vec<Episode>) -> impl Iterator<Item = Episode> {
    episodes
        .into_iter()
        .filter(|e| e.kind == EpisodeKind::BacklogRelease)
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
        sender_episodes: Vec::new(),
        steal_episodes: 0,
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
        sender_episodes: Vec::new(),
        steal_episodes: 0,
        flows_total: config.flows,
        unreachable: Some(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{matrix, Targets, Topology};

    fn episode(start_ms: u64, ms: f64) -> Episode {
        Episode {
            kind: EpisodeKind::BacklogRelease,
            start_ns: start_ms * 1_000_000,
            end_ns: start_ms * 1_000_000 + (ms * 1e6) as u64,
            duration_ms: ms,
            uncertainty_ms: 1.0,
            probes: 3,
            flows_affected: 1,
            flows_total: 1,
            flows: vec![0],
            first_seq: 1,
            last_seq: 3,
            max_rtt_us: Some(ms * 1e3),
            peer: None,
            node: None,
        }
    }

    #[test]
    fn episodes_steal_covers_are_set_aside_and_counted() {
        let targets = Targets {
            nodeport: Some(([192, 168, 50, 1].into(), 30080)),
            pod: Some(([10, 244, 2, 10].into(), 8080)),
            node: None,
            node_port: 8080,
        };
        let spec = matrix(&targets, None, Topology::Lab).remove(0);
        let config = RunConfig {
            client_netns: None,
            outside_netns: None,
            cpu: None,
            interval: Duration::from_millis(10),
            duration: Duration::from_secs(1),
            flows: 1,
            timeout: Duration::from_secs(1),
            stop: None,
        };
        let mut outcome = failed(&spec, &config, String::new());
        outcome.episodes = vec![episode(1000, 25.0), episode(5000, 40.0)];
        let steal = [Steal {
            cpu: 1,
            start_ns: 998_000_000,
            end_ns: 1_026_000_000,
            steal_ms: 25.2,
            source: netstall_events::kernel::StealSource::ProcStat,
        }];
        set_aside_steal(&mut outcome, &steal);
        assert_eq!(outcome.episodes.len(), 1);
        assert_eq!(outcome.episodes[0].start_ns, 5_000_000_000);
        assert_eq!(outcome.steal_episodes, 1);
    }
}
