//! Stall episodes, read from a probe series the way a person reads hping3's
//! sawtooth — and without a fixed cut-off.
//!
//! When a CPU stops processing received packets, probes that reach it wait in
//! its backlog and are all processed at once when it resumes: their arrival
//! times collapse to one instant while their RTTs fall by one send interval
//! per probe (127, 117, 106 ms…). That signature, not a threshold, makes a
//! **backlog release**; it is found whatever the stall's length, as long as
//! it holds at least two probes (a 20 ms stall at 2 ms spacing holds ten).
//! A single probe delayed well past the session's normal spread is a
//! **spike**; a run of unanswered probes is a **loss** burst.
//!
//! Pure functions over recorded results: [`detect`] is what `netstall probe`,
//! the doctor and bisect call.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::model::ProbeResult;

pub use netstall_events::probe::{Episode, EpisodeKind};

/// How to read a series.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    /// The session's send interval (between consecutive probes of any flow).
    pub interval: Duration,
    /// Flows in the session.
    pub flows_total: u16,
    /// Smallest delay above the baseline that makes a lone probe a spike.
    /// `None`: the larger of half an interval, 2 ms and 8× the series' spread.
    pub min_spike: Option<Duration>,
}

impl DetectorConfig {
    /// The default reading of a session sending every `interval` over `flows_total` flows.
    pub fn new(interval: Duration, flows_total: u16) -> Self {
        Self {
            interval,
            flows_total,
            min_spike: None,
        }
    }
}

/// The normal RTT of a series and how much it varies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// Median RTT.
    pub rtt_ns: u64,
    /// Interquartile range of the RTTs: the healthy spread (unmoved while
    /// fewer than a quarter of the probes are delayed).
    pub spread_ns: u64,
}

impl Baseline {
    /// The baseline of the received probes in `probes`; `None` if none came back.
    pub fn of(probes: &[ProbeResult]) -> Option<Self> {
        let mut rtts: Vec<u64> = probes.iter().filter_map(|p| p.rtt_ns).collect();
        if rtts.is_empty() {
            return None;
        }
        rtts.sort_unstable();
        let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q).round() as usize];
        Some(Self {
            rtt_ns: at(0.5),
            spread_ns: at(0.75) - at(0.25),
        })
    }
}

/// Finds the episodes in a session's results (any order), sorted by start.
pub fn detect(probes: &[ProbeResult], config: &DetectorConfig) -> Vec<Episode> {
    let mut sorted: Vec<&ProbeResult> = probes.iter().collect();
    sorted.sort_by_key(|p| p.seq);
    let mut episodes = Vec::new();
    if let Some(baseline) = Baseline::of(probes) {
        episodes.extend(delays(&sorted, baseline, config));
    }
    episodes.extend(losses(&sorted, config));
    episodes.sort_by_key(|e| (e.start_ns, e.first_seq));
    episodes
}

/// Episode detection over an endless session in bounded memory: probes are
/// pushed as they complete, and once the window is full the episodes that
/// are over are returned and the probes before them dropped. A long session
/// gives the same episodes as [`detect`] over all of it, as long as each
/// window holds enough probes for a baseline (it holds tens of thousands).
#[derive(Debug)]
pub struct StreamingDetector {
    config: DetectorConfig,
    window: Vec<ProbeResult>,
    capacity: usize,
    /// Episodes starting at or after this seq have not been returned yet.
    boundary: u64,
}

/// Probes a [`StreamingDetector`] holds at most (about 10 MB).
pub const STREAM_WINDOW: usize = 65_536;

/// Probes kept before the boundary when the window slides, so an episode
/// just after it still sees the probe before its first held one.
const STREAM_MARGIN: usize = 1_024;

impl StreamingDetector {
    /// A detector holding at most [`STREAM_WINDOW`] probes.
    pub fn new(config: DetectorConfig) -> Self {
        Self::with_window(config, STREAM_WINDOW)
    }

    /// A detector holding at most `capacity` probes (at least 4 × the margin).
    pub fn with_window(config: DetectorConfig, capacity: usize) -> Self {
        Self {
            config,
            window: Vec::new(),
            capacity: capacity.max(4 * STREAM_MARGIN),
            boundary: 0,
        }
    }

    /// Adds a completed probe; returns the episodes that are over, if the
    /// window had to slide.
    pub fn push(&mut self, probe: ProbeResult) -> Vec<Episode> {
        self.window.push(probe);
        if self.window.len() < self.capacity {
            return Vec::new();
        }
        self.window.sort_by_key(|p| p.seq);
        // Everything in the older half is over (probes complete within a
        // timeout, far shorter than half a window)...
        let cutoff = self.window[self.window.len() / 2].seq;
        let episodes = detect(&self.window, &self.config);
        // ...except an episode running across the cutoff, which waits.
        let spanning = episodes
            .iter()
            .filter(|e| e.last_seq >= cutoff && e.first_seq < cutoff)
            .map(|e| e.first_seq)
            .min();
        let next_boundary = spanning.unwrap_or(cutoff);
        let done: Vec<Episode> = episodes
            .into_iter()
            .filter(|e| e.first_seq >= self.boundary && e.first_seq < next_boundary)
            .collect();
        self.boundary = next_boundary;
        let keep_from = self
            .window
            .partition_point(|p| p.seq < next_boundary)
            .saturating_sub(STREAM_MARGIN);
        self.window.drain(..keep_from);
        done
    }

    /// The episodes not returned yet, at the end of the session.
    pub fn finish(self) -> Vec<Episode> {
        detect(&self.window, &self.config)
            .into_iter()
            .filter(|e| e.first_seq >= self.boundary)
            .collect()
    }
}

/// Backlog releases and spikes among the received probes (`sorted` by seq).
fn delays(sorted: &[&ProbeResult], baseline: Baseline, config: &DetectorConfig) -> Vec<Episode> {
    let interval = config.interval.as_nanos() as u64;
    // A probe counts as held when it waited clearly longer than the healthy
    // spread; a release needs two of them arriving together, so this can be small.
    let hold_floor = (4 * baseline.spread_ns).max(250_000);
    let spike_floor = config
        .min_spike
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_else(|| (interval / 2).max(2_000_000).max(8 * baseline.spread_ns));
    // Normal arrivals are an interval apart; released ones microseconds apart.
    let collapse_gap = (interval / 4).clamp(50_000, 5_000_000);

    let excess = |p: &ProbeResult| p.rtt_ns.unwrap_or(0).saturating_sub(baseline.rtt_ns);
    let mut by_arrival: Vec<&ProbeResult> = sorted
        .iter()
        .copied()
        .filter(|p| p.rtt_ns.is_some())
        .collect();
    by_arrival.sort_by_key(|p| (p.arrival_ns(), p.seq));

    // Clusters of probes that arrived together...
    let mut clusters: Vec<Vec<&ProbeResult>> = Vec::new();
    for p in by_arrival {
        let joins = clusters
            .last()
            .and_then(|c| c.last())
            .and_then(|last| Some(p.arrival_ns()? - last.arrival_ns()?))
            .is_some_and(|gap| gap <= collapse_gap);
        match clusters.last_mut() {
            Some(cluster) if joins => cluster.push(p),
            _ => clusters.push(vec![p]),
        }
    }
    // ...keeping the probes that were held: two or more make a release, a
    // lone one delayed past the spike floor a spike.
    let groups: Vec<Vec<&ProbeResult>> = clusters
        .into_iter()
        .map(|cluster| {
            let mut held: Vec<&ProbeResult> = cluster
                .into_iter()
                .filter(|p| excess(p) >= hold_floor)
                .collect();
            held.sort_by_key(|p| p.seq);
            held
        })
        .filter(|held| held.len() > 1 || held.first().is_some_and(|p| excess(p) >= spike_floor))
        .collect();

    // Flows that go through the stalled CPU: every flow held by some release.
    let stalled_flows: BTreeSet<u16> = groups
        .iter()
        .filter(|held| held.len() > 1)
        .flat_map(|held| held.iter().map(|p| p.flow))
        .collect();
    groups
        .iter()
        .map(|held| {
            let kind = if held.len() == 1 {
                EpisodeKind::Spike
            } else {
                EpisodeKind::BacklogRelease
            };
            delay_episode(kind, held, sorted, baseline, config, &stalled_flows)
        })
        .collect()
}

/// An episode from its held probes (ascending seq, at least one).
///
/// The stall ended when the first held probe was released: its arrival less
/// the return half of a normal RTT. It began after the previous probe of a
/// flow that goes through the stalled CPU got through, and before the first
/// held one reached it, so the estimate takes the middle of that gap: the
/// error is at most half of it (half an interval with one flow).
fn delay_episode(
    kind: EpisodeKind,
    held: &[&ProbeResult],
    sorted: &[&ProbeResult],
    baseline: Baseline,
    config: &DetectorConfig,
    stalled_flows: &BTreeSet<u16>,
) -> Episode {
    let first = held[0];
    let flows: BTreeSet<u16> = held.iter().map(|p| p.flow).collect();
    let first_index = sorted.partition_point(|p| p.seq < first.seq);
    let previous_sent = sorted[..first_index]
        .iter()
        .rev()
        .find(|p| flows.contains(&p.flow) || stalled_flows.contains(&p.flow))
        .map(|p| p.sent_ns);
    let interval = config.interval.as_nanos() as u64;
    let gap = previous_sent
        .map(|prev| first.sent_ns.saturating_sub(prev))
        .unwrap_or(interval);
    let rtt = first.rtt_ns.unwrap_or(baseline.rtt_ns);
    let end_ns = first.sent_ns + rtt - baseline.rtt_ns / 2;
    let start_ns = (first.sent_ns + baseline.rtt_ns / 2).saturating_sub(gap / 2);
    let max_rtt = held.iter().filter_map(|p| p.rtt_ns).max().unwrap_or(rtt);
    Episode {
        kind,
        start_ns,
        end_ns,
        duration_ms: end_ns.saturating_sub(start_ns) as f64 / 1e6,
        uncertainty_ms: (gap / 2) as f64 / 1e6,
        probes: held.len() as u32,
        flows_affected: flows.len() as u16,
        flows_total: config.flows_total,
        flows: flows.into_iter().collect(),
        first_seq: first.seq,
        last_seq: held[held.len() - 1].seq,
        max_rtt_us: Some(crate::model::round3(max_rtt as f64 / 1e3)),
        peer: None,
        node: None,
    }
}

/// Runs of consecutive unanswered probes (`sorted` by seq).
fn losses(sorted: &[&ProbeResult], config: &DetectorConfig) -> Vec<Episode> {
    let interval = config.interval.as_nanos() as u64;
    sorted
        .chunk_by(|a, b| a.rtt_ns.is_none() == b.rtt_ns.is_none())
        .filter(|run| run[0].rtt_ns.is_none())
        .map(|run| {
            let flows: BTreeSet<u16> = run.iter().map(|p| p.flow).collect();
            let start_ns = run[0].sent_ns;
            let end_ns = run[run.len() - 1].sent_ns + interval;
            Episode {
                kind: EpisodeKind::Loss,
                start_ns,
                end_ns,
                duration_ms: (end_ns - start_ns) as f64 / 1e6,
                uncertainty_ms: interval as f64 / 1e6,
                probes: run.len() as u32,
                flows_affected: flows.len() as u16,
                flows_total: config.flows_total,
                flows: flows.into_iter().collect(),
                first_seq: run[0].seq,
                last_seq: run[run.len() - 1].seq,
                max_rtt_us: None,
                peer: None,
                node: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Proto, TsSource};

    const MS: u64 = 1_000_000;
    const US: u64 = 1_000;

    fn probe(seq: u64, flow: u16, sent_ns: u64, rtt_ns: Option<u64>) -> ProbeResult {
        ProbeResult {
            seq,
            flow,
            proto: Proto::Icmp,
            src_port: None,
            sent_ns,
            scheduled_ns: sent_ns,
            late_ns: 0,
            rtt_ns,
            wake_ns: None,
            timestamps: TsSource::Kernel,
            reply: None,
        }
    }

    /// A healthy series: `count` probes every `interval`, RTT 80–120 µs
    /// (a deterministic wobble), one flow per probe in round robin.
    fn healthy(count: u64, interval: u64, flows: u16) -> Vec<ProbeResult> {
        (0..count)
            .map(|i| {
                let rtt = 80 * US + (i * 7919 % 41) * US;
                probe(
                    i,
                    (i % flows as u64) as u16,
                    1_000 * MS + i * interval,
                    Some(rtt),
                )
            })
            .collect()
    }

    /// Holds every probe of `stalled_flows` that reaches the RX CPU during
    /// [start, start+len): released together at the end.
    fn stall(series: &mut [ProbeResult], start: u64, len: u64, stalled_flows: &[u16]) {
        for p in series.iter_mut() {
            let at_cpu = p.sent_ns + 40 * US;
            if stalled_flows.contains(&p.flow) && at_cpu >= start && at_cpu < start + len {
                // Released at the end in send order, a few µs apart.
                let release = start + len + (p.seq % 1000) * 5 * US / 1000;
                p.rtt_ns = Some(release - p.sent_ns + 40 * US);
            }
        }
    }

    fn config(interval: u64, flows: u16) -> DetectorConfig {
        DetectorConfig::new(Duration::from_nanos(interval), flows)
    }

    #[test]
    fn a_healthy_series_has_no_episodes() {
        let series = healthy(6000, 10 * MS, 1);
        assert!(detect(&series, &config(10 * MS, 1)).is_empty());
    }

    #[test]
    fn a_50ms_stall_at_10ms_is_one_backlog_release() {
        let mut series = healthy(300, 10 * MS, 1);
        let t0 = 1_000 * MS;
        // Stall starting 3 ms after probe 100 was sent.
        stall(&mut series, t0 + 1003 * MS, 50 * MS, &[0]);
        let episodes = detect(&series, &config(10 * MS, 1));
        assert_eq!(episodes.len(), 1, "{episodes:#?}");
        let e = &episodes[0];
        assert_eq!(e.kind, EpisodeKind::BacklogRelease);
        assert_eq!(e.probes, 5);
        assert_eq!((e.first_seq, e.last_seq), (101, 105));
        assert!((e.duration_ms - 50.0).abs() <= 5.0, "{}", e.duration_ms);
        assert!(e.start_ns.abs_diff(t0 + 1003 * MS) <= 5 * MS);
    }

    #[test]
    fn stall_durations_are_within_half_an_interval_wherever_the_stall_starts() {
        for phase in (0..10).map(|p| p * MS) {
            let mut series = healthy(300, 10 * MS, 1);
            stall(&mut series, 2_000 * MS + phase, 50 * MS, &[0]);
            let episodes = detect(&series, &config(10 * MS, 1));
            assert_eq!(episodes.len(), 1, "phase {phase}: {episodes:#?}");
            let error = (episodes[0].duration_ms - 50.0).abs();
            assert!(error <= 5.1, "phase {phase}: {}", episodes[0].duration_ms);
        }
    }

    #[test]
    fn a_20ms_stall_at_2ms_spacing_is_found() {
        let mut series = healthy(2000, 2 * MS, 1);
        for k in 0..3 {
            stall(
                &mut series,
                1_500 * MS + k * 1_000 * MS + 700 * US,
                20 * MS,
                &[0],
            );
        }
        let episodes = detect(&series, &config(2 * MS, 1));
        assert_eq!(episodes.len(), 3, "{episodes:#?}");
        for e in &episodes {
            assert_eq!(e.kind, EpisodeKind::BacklogRelease);
            assert!((e.duration_ms - 20.0).abs() <= 2.0, "{}", e.duration_ms);
            assert!((9..=11).contains(&e.probes), "{}", e.probes);
        }
    }

    #[test]
    fn only_the_stalled_flows_are_reported() {
        let mut series = healthy(2000, 4 * MS, 16);
        let stalled = [1, 4, 5, 9, 12, 14];
        stall(&mut series, 2_000 * MS, 50 * MS, &stalled);
        stall(&mut series, 4_000 * MS, 50 * MS, &stalled);
        let episodes = detect(&series, &config(4 * MS, 16));
        assert_eq!(episodes.len(), 2, "{episodes:#?}");
        for e in &episodes {
            assert_eq!(e.kind, EpisodeKind::BacklogRelease);
            assert_eq!(e.flows_total, 16);
            assert!(e.flows.iter().all(|f| stalled.contains(f)), "{:?}", e.flows);
            assert!(e.flows_affected >= 3);
            // The first held probe may be up to 16 / 6 intervals after the
            // previous one of a stalled flow: the error is half that gap.
            assert!((e.duration_ms - 50.0).abs() <= 10.0, "{}", e.duration_ms);
        }
    }

    #[test]
    fn a_lone_late_probe_is_a_spike_and_small_wobble_is_not() {
        let mut series = healthy(1000, 10 * MS, 1);
        series[500].rtt_ns = Some(7 * MS);
        series[700].rtt_ns = Some(1_500 * US); // under the 5 ms spike floor at 10 ms
        let episodes = detect(&series, &config(10 * MS, 1));
        assert_eq!(episodes.len(), 1, "{episodes:#?}");
        assert_eq!(episodes[0].kind, EpisodeKind::Spike);
        assert_eq!(episodes[0].first_seq, 500);
    }

    #[test]
    fn consecutive_losses_make_one_burst() {
        let mut series = healthy(100, 10 * MS, 2);
        for p in &mut series[40..44] {
            p.rtt_ns = None;
        }
        series[90].rtt_ns = None;
        let episodes = detect(&series, &config(10 * MS, 2));
        let kinds: Vec<_> = episodes.iter().map(|e| (e.kind, e.probes)).collect();
        assert_eq!(kinds, [(EpisodeKind::Loss, 4), (EpisodeKind::Loss, 1)]);
        assert_eq!(episodes[0].flows, [0, 1]);
        assert_eq!(episodes[0].duration_ms, 40.0);
    }

    #[test]
    fn the_story_sawtooth_is_a_backlog_release() {
        // hping3 at 10 ms in the story: 127, 117, 106 ms... as they came
        // back, between normal RTTs.
        let sawtooth = [
            127.1, 117.0, 106.8, 96.9, 86.8, 76.8, 66.9, 56.8, 46.8, 36.9, 26.8, 16.9, 6.8,
        ];
        let rtts: Vec<f64> = [0.5; 50]
            .iter()
            .chain(&sawtooth)
            .chain(&[0.6; 50])
            .copied()
            .collect();
        let series: Vec<ProbeResult> = rtts
            .iter()
            .enumerate()
            .map(|(i, ms)| {
                probe(
                    i as u64,
                    0,
                    1_000 * MS + i as u64 * 10 * MS,
                    Some((ms * 1e6) as u64),
                )
            })
            .collect();
        let episodes = detect(&series, &config(10 * MS, 1));
        assert_eq!(episodes.len(), 1, "{episodes:#?}");
        assert_eq!(episodes[0].kind, EpisodeKind::BacklogRelease);
        assert_eq!(episodes[0].probes, 13);
        assert!(
            (episodes[0].duration_ms - 131.6).abs() < 1.0,
            "{}",
            episodes[0].duration_ms
        );
    }

    #[test]
    fn streaming_finds_what_batch_finds_in_bounded_memory() {
        // 40 000 probes at 2 ms with a 20 ms stall every second and a loss
        // burst, streamed through a window of 4096.
        let mut series = healthy(40_000, 2 * MS, 4);
        for k in 1..80 {
            stall(
                &mut series,
                1_000 * MS + k * 1_000 * MS + 300 * US,
                20 * MS,
                &[0, 1, 2, 3],
            );
        }
        for p in &mut series[20_479..20_483] {
            p.rtt_ns = None;
        }
        let batch = detect(&series, &config(2 * MS, 4));
        let mut streaming = StreamingDetector::with_window(config(2 * MS, 4), 4096);
        let mut streamed = Vec::new();
        for p in series {
            streamed.extend(streaming.push(p));
            assert!(streaming.window.len() <= 4096);
        }
        streamed.extend(streaming.finish());
        assert_eq!(batch.len(), 80, "{batch:#?}");
        let key = |e: &Episode| (e.kind, e.first_seq, e.last_seq, e.probes);
        assert_eq!(
            streamed.iter().map(key).collect::<Vec<_>>(),
            batch.iter().map(key).collect::<Vec<_>>()
        );
    }

    #[test]
    fn nothing_came_back() {
        let series: Vec<ProbeResult> = (0..5).map(|i| probe(i, 0, i * 10 * MS, None)).collect();
        let episodes = detect(&series, &config(10 * MS, 1));
        assert_eq!(episodes.len(), 1);
        assert_eq!(episodes[0].kind, EpisodeKind::Loss);
        assert!(detect(&[], &config(10 * MS, 1)).is_empty());
    }
}
