//! Stall episodes toward one peer, found in a sliding window of its recent
//! probes with the probe crate's detector (the same reading `netstall probe`
//! does), each reported once, after it settled.
//!
//! Pure: fed with finished probes (answered or given up), no I/O.

use std::collections::VecDeque;
use std::time::Duration;

use netstall_probe::{detect, DetectorConfig, Episode, ProbeResult};

/// The recent probes of one peer and what was already reported.
#[derive(Debug)]
pub struct PeerTracker {
    window: VecDeque<ProbeResult>,
    capacity: usize,
    detector: DetectorConfig,
    /// An episode is reported once probes sent this long after its end are in.
    settle_ns: u64,
    /// The last probe of the latest reported episode.
    reported_through_seq: Option<u64>,
    /// A probe slower than this, or lost, may start an episode; without one
    /// in the window the detector has nothing to find and is not run.
    notable_rtt_ns: u64,
    /// How many notable probes the window holds, and the newest one's seq.
    notable_in_window: usize,
    newest_notable_seq: Option<u64>,
}

impl PeerTracker {
    /// A tracker for probes sent every `interval`, keeping `capacity` of
    /// them; a probe `threshold` slower than the window's median RTT is a spike.
    pub fn new(interval: Duration, threshold: Duration, capacity: usize) -> Self {
        let mut detector = DetectorConfig::new(interval, 1);
        detector.min_spike = Some(threshold);
        Self {
            window: VecDeque::with_capacity(capacity),
            capacity: capacity.max(8),
            detector,
            settle_ns: 2 * interval.as_nanos() as u64 + threshold.as_nanos() as u64,
            reported_through_seq: None,
            // Every episode has such a probe: a spike is `threshold` over the
            // median RTT; in a release, probes sent an interval apart arrive
            // together, so the first waited most of an interval.
            notable_rtt_ns: threshold.min(interval / 2).as_nanos() as u64,
            notable_in_window: 0,
            newest_notable_seq: None,
        }
    }

    fn is_notable(&self, probe: &ProbeResult) -> bool {
        probe.rtt_ns.is_none_or(|rtt| rtt >= self.notable_rtt_ns)
    }

    /// Adds a finished probe (replies come back out of order; the window
    /// keeps the newest `capacity` by arrival into the tracker).
    pub fn record(&mut self, probe: ProbeResult) {
        if self.window.len() == self.capacity {
            let oldest = self.window.pop_front().expect("the window is full");
            if self.is_notable(&oldest) {
                self.notable_in_window -= 1;
            }
        }
        if self.is_notable(&probe) {
            self.notable_in_window += 1;
            self.newest_notable_seq = self.newest_notable_seq.max(Some(probe.seq));
        }
        self.window.push_back(probe);
    }

    /// Episodes not reported before whose end is settled: probes sent well
    /// after them have come back (or were given up).
    pub fn new_episodes(&mut self) -> Vec<Episode> {
        // A healthy peer (nearly always) costs no detection at all.
        let unreported_notable = self.notable_in_window > 0
            && self
                .newest_notable_seq
                .is_some_and(|n| self.reported_through_seq.is_none_or(|r| n > r));
        if !unreported_notable {
            return Vec::new();
        }
        let Some(newest_sent) = self.window.iter().map(|p| p.sent_ns).max() else {
            return Vec::new();
        };
        let fresh: Vec<Episode> = detect(self.window.make_contiguous(), &self.detector)
            .into_iter()
            .filter(|e| self.reported_through_seq.is_none_or(|s| e.first_seq > s))
            .filter(|e| e.end_ns.saturating_add(self.settle_ns) <= newest_sent)
            .collect();
        if let Some(last) = fresh.iter().map(|e| e.last_seq).max() {
            self.reported_through_seq = Some(last);
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use netstall_probe::{EpisodeKind, Proto, TsSource};

    use super::*;

    const MS: u64 = 1_000_000;

    /// A probe sent at `sent_ms` (100 ms apart, seq = sent_ms / 100) with an RTT.
    fn probe(seq: u64, rtt_us: Option<u64>) -> ProbeResult {
        let sent_ns = 1_700_000_000_000 * MS + seq * 100 * MS;
        ProbeResult {
            seq,
            flow: 0,
            proto: Proto::Icmp,
            src_port: None,
            sent_ns,
            scheduled_ns: sent_ns,
            late_ns: 0,
            rtt_ns: rtt_us.map(|us| us * 1000),
            wake_ns: None,
            timestamps: TsSource::User,
            reply: None,
        }
    }

    fn tracker() -> PeerTracker {
        PeerTracker::new(Duration::from_millis(100), Duration::from_millis(10), 300)
    }

    /// Recorded shape of a 10 Hz ICMP series toward a peer whose RX CPU
    /// stalls 50 ms every second: about one probe in two lands in a stall.
    fn rtt_us(seq: u64) -> u64 {
        let jitter = (seq * 7919) % 40;
        match seq % 10 {
            3 => 38_000 + jitter,
            8 if seq % 20 == 8 => 21_000 + jitter,
            _ => 60 + jitter,
        }
    }

    #[test]
    fn each_delayed_probe_is_one_spike_reported_once() {
        let mut t = tracker();
        let mut episodes = Vec::new();
        for seq in 0..100 {
            t.record(probe(seq, Some(rtt_us(seq))));
            episodes.extend(t.new_episodes());
        }
        // 10 at seq%10==3, 5 at seq%20==8; the last one may not be settled yet.
        assert!(
            (14..=15).contains(&episodes.len()),
            "{} episodes: {episodes:?}",
            episodes.len()
        );
        assert!(episodes.iter().all(|e| e.kind == EpisodeKind::Spike));
        let mut seqs: Vec<u64> = episodes.iter().map(|e| e.first_seq).collect();
        seqs.dedup();
        assert_eq!(seqs.len(), episodes.len(), "an episode was reported twice");
    }

    #[test]
    fn a_healthy_peer_has_no_episodes() {
        let mut t = tracker();
        for seq in 0..300 {
            t.record(probe(seq, Some(60 + (seq * 31) % 200)));
            assert!(t.new_episodes().is_empty());
        }
    }

    #[test]
    fn lost_probes_make_a_loss_episode_once_replies_resume() {
        let mut t = tracker();
        let mut episodes = Vec::new();
        for seq in 0..60 {
            let rtt = (!(20..25).contains(&seq)).then_some(80);
            t.record(probe(seq, rtt));
            episodes.extend(t.new_episodes());
        }
        assert_eq!(episodes.len(), 1, "{episodes:?}");
        assert_eq!(episodes[0].kind, EpisodeKind::Loss);
        assert_eq!(episodes[0].probes, 5);
    }

    #[test]
    fn a_window_without_slow_or_lost_probes_is_not_read() {
        let mut t = tracker();
        for seq in 0..100 {
            t.record(probe(seq, Some(60 + (seq * 31) % 200)));
        }
        assert_eq!(t.notable_in_window, 0);
        // The same probes once a slow one came, and once it left the window.
        t.record(probe(100, Some(30_000)));
        assert_eq!(t.notable_in_window, 1);
        let mut short = PeerTracker::new(Duration::from_millis(100), Duration::from_millis(10), 8);
        short.record(probe(0, None));
        for seq in 1..=8 {
            short.record(probe(seq, Some(70)));
        }
        assert_eq!(short.notable_in_window, 0, "the lost probe left the window");
    }

    #[test]
    fn the_window_is_bounded() {
        let mut t = PeerTracker::new(Duration::from_millis(100), Duration::from_millis(10), 50);
        for seq in 0..10_000 {
            t.record(probe(seq, Some(70)));
        }
        assert_eq!(t.window.len(), 50);
    }
}
