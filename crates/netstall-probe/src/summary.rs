//! Summary statistics of a session (loss, RTT percentiles from an HDR
//! histogram, send-schedule deviation), overall and per flow. Pure.

use hdrhistogram::Histogram;

use crate::episodes::Episode;
use std::collections::BTreeMap;

use crate::model::{round3, ProbeResult, TsSource};

/// RTTs are recorded in nanoseconds from 1 ns to 1 hour, 3 significant digits.
const HIST_MAX_NS: u64 = 3_600_000_000_000;

/// An HDR histogram of nanosecond values with the quantiles we report, and
/// the exact extremes (the histogram keeps 3 significant digits).
#[derive(Debug, Clone)]
pub struct NsHistogram {
    hist: Histogram<u64>,
    min: u64,
    max: u64,
    /// Exact sums for the mean and deviation ping prints.
    sum: u128,
    sum_of_squares: u128,
}

impl Default for NsHistogram {
    fn default() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds"),
            min: u64::MAX,
            max: 0,
            sum: 0,
            sum_of_squares: 0,
        }
    }
}

impl NsHistogram {
    /// Records one value (clamped to the histogram's range).
    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns.clamp(1, HIST_MAX_NS));
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        self.sum += u128::from(ns);
        self.sum_of_squares += u128::from(ns) * u128::from(ns);
    }

    /// How many values were recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The value at quantile `q` (0..=1) in µs, `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        // Capped at the exact maximum: the histogram rounds up within its precision.
        (!self.is_empty())
            .then(|| round3(self.hist.value_at_quantile(q).min(self.max) as f64 / 1e3))
    }

    /// The smallest value, µs.
    pub fn min_us(&self) -> Option<f64> {
        (!self.is_empty()).then(|| round3(self.min as f64 / 1e3))
    }

    /// The mean, µs (exact, not from the histogram).
    pub fn mean_us(&self) -> Option<f64> {
        (!self.is_empty()).then(|| round3(self.sum as f64 / self.len() as f64 / 1e3))
    }

    /// The standard deviation, µs: ping's `mdev`, sqrt(mean(x²) − mean(x)²).
    pub fn mdev_us(&self) -> Option<f64> {
        (!self.is_empty()).then(|| {
            let n = self.len() as f64;
            let mean = self.sum as f64 / n;
            let variance = (self.sum_of_squares as f64 / n - mean * mean).max(0.0);
            round3(variance.sqrt() / 1e3)
        })
    }

    /// The largest value, µs.
    pub fn max_us(&self) -> Option<f64> {
        (!self.is_empty()).then(|| round3(self.max as f64 / 1e3))
    }
}

pub use netstall_events::probe::{FlowSummary, Summary};

/// Summarizes a session's results and episodes.
pub fn summarize(probes: &[ProbeResult], episodes: &[Episode], late_replies: u64) -> Summary {
    let mut builder = SummaryBuilder::default();
    for p in probes {
        builder.add(p);
    }
    builder.finish(episodes, late_replies)
}

/// Accumulates a summary probe by probe, in constant memory per flow, so a
/// session of any length can be summarized without keeping its probes.
#[derive(Debug, Clone, Default)]
pub struct SummaryBuilder {
    rtt: NsHistogram,
    late: NsHistogram,
    kernel_timestamps: u64,
    flows: BTreeMap<u16, FlowAccumulator>,
    first_sent_ns: Option<u64>,
    last_sent_ns: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct FlowAccumulator {
    src_port: Option<u16>,
    sent: u64,
    rtt: NsHistogram,
}

impl SummaryBuilder {
    /// Accounts for one completed probe.
    pub fn add(&mut self, p: &ProbeResult) {
        self.late.record(p.late_ns);
        self.first_sent_ns = Some(self.first_sent_ns.map_or(p.sent_ns, |t| t.min(p.sent_ns)));
        self.last_sent_ns = Some(self.last_sent_ns.map_or(p.sent_ns, |t| t.max(p.sent_ns)));
        let flow = self.flows.entry(p.flow).or_default();
        flow.src_port = p.src_port;
        flow.sent += 1;
        if let Some(ns) = p.rtt_ns {
            self.rtt.record(ns);
            flow.rtt.record(ns);
            if p.timestamps == TsSource::Kernel {
                self.kernel_timestamps += 1;
            }
        }
    }

    /// The summary, given every episode of the session.
    pub fn finish(&self, episodes: &[Episode], late_replies: u64) -> Summary {
        let rtt = &self.rtt;
        let sent = self.late.len();
        let received = rtt.len();
        let rate_per_s = match (self.first_sent_ns, self.last_sent_ns) {
            (Some(first), Some(last)) if last > first => {
                Some(round3((sent - 1) as f64 * 1e9 / (last - first) as f64))
            }
            _ => None,
        };
        Summary {
            sent,
            received,
            loss_pct: if sent == 0 {
                0.0
            } else {
                round3(100.0 * (sent - received) as f64 / sent as f64)
            },
            min_us: rtt.min_us(),
            avg_us: rtt.mean_us(),
            mdev_us: rtt.mdev_us(),
            p50_us: rtt.quantile_us(0.5),
            p90_us: rtt.quantile_us(0.9),
            p99_us: rtt.quantile_us(0.99),
            p999_us: rtt.quantile_us(0.999),
            max_us: rtt.max_us(),
            episodes: episodes.len(),
            rate_per_s,
            elapsed_ms: match (self.first_sent_ns, self.last_sent_ns) {
                (Some(first), Some(last)) => Some(round3((last - first) as f64 / 1e6)),
                _ => None,
            },
            send_late_p50_us: self.late.quantile_us(0.5),
            send_late_p99_us: self.late.quantile_us(0.99),
            send_late_max_us: self.late.max_us(),
            kernel_timestamps: self.kernel_timestamps,
            late_replies,
            flows: self
                .flows
                .iter()
                .map(|(&flow, acc)| FlowSummary {
                    flow,
                    src_port: acc.src_port,
                    sent: acc.sent,
                    received: acc.rtt.len(),
                    p50_us: acc.rtt.quantile_us(0.5),
                    p99_us: acc.rtt.quantile_us(0.99),
                    max_us: acc.rtt.max_us(),
                    episodes: episodes.iter().filter(|e| e.flows.contains(&flow)).count(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episodes::EpisodeKind;
    use crate::model::Proto;

    fn probe(seq: u64, flow: u16, rtt_us: Option<u64>) -> ProbeResult {
        ProbeResult {
            seq,
            flow,
            proto: Proto::Udp,
            src_port: Some(40000 + flow),
            sent_ns: seq * 10_000_000,
            scheduled_ns: seq * 10_000_000,
            late_ns: seq * 1_000,
            rtt_ns: rtt_us.map(|us| us * 1_000),
            wake_ns: None,
            timestamps: TsSource::Kernel,
            reply: None,
        }
    }

    #[test]
    fn quantiles_loss_and_flows() {
        // 1000 probes over 2 flows, RTT = seq µs + 1, every 10th lost.
        let probes: Vec<ProbeResult> = (0..1000)
            .map(|i| probe(i, (i % 2) as u16, (i % 10 != 9).then_some(i + 1)))
            .collect();
        let episode = Episode {
            kind: EpisodeKind::Loss,
            start_ns: 0,
            end_ns: 1,
            duration_ms: 0.0,
            uncertainty_ms: 0.0,
            probes: 1,
            flows_affected: 1,
            flows_total: 2,
            flows: vec![1],
            first_seq: 9,
            last_seq: 9,
            max_rtt_us: None,
            peer: None,
            node: None,
        };
        let s = summarize(&probes, &[episode], 3);
        assert_eq!((s.sent, s.received), (1000, 900));
        assert_eq!(s.loss_pct, 10.0);
        assert_eq!(s.min_us, Some(1.0));
        assert_eq!(s.max_us, Some(999.0));
        // The median of 1..=999 without every 10th is near 500 (3 significant digits).
        let p50 = s.p50_us.unwrap();
        assert!((495.0..=505.0).contains(&p50), "{p50}");
        assert!(s.p99_us.unwrap() >= 985.0);
        assert_eq!(s.send_late_max_us, Some(999.0));
        assert_eq!(s.kernel_timestamps, 900);
        assert_eq!(s.late_replies, 3);
        // 1000 probes 10 ms apart: 100 per second.
        assert_eq!(s.rate_per_s, Some(100.0));
        assert_eq!(s.flows.len(), 2);
        assert_eq!(s.flows[0].received, 500);
        assert_eq!(s.flows[1].received, 400);
        assert_eq!(s.flows[1].src_port, Some(40001));
        assert_eq!((s.flows[0].episodes, s.flows[1].episodes), (0, 1));
    }

    #[test]
    fn an_empty_session_has_no_quantiles() {
        let s = summarize(&[], &[], 0);
        assert_eq!((s.sent, s.received, s.loss_pct), (0, 0, 0.0));
        assert_eq!(s.p50_us, None);
    }
}
