//! Two more of the network causes beside the story's, as the fleet's trend:
//! packets dropped per kernel drop reason (`packet-drops`) and CFS
//! throttling of the CPU cgroups (`cpu-throttled`), counted in the kernel by
//! `netstall-kernel`'s programs (the ones `trace --drops` and the doctor
//! use).
//!
//! Both load once, at the start, while the agent still holds its
//! capabilities (reading them later needs none), and neither can stop the
//! agent: a source that cannot load (an old kernel, no BTF, no cpu
//! controller) is told once on stderr and shows as
//! `netstall_source_up{source} 0`; its series are absent, never zero.
//!
//! * Drops: skb:kfree_skb adds one to its reason's slot of a per-CPU array
//!   (no map that fills, nothing per drop reaching userspace), read at
//!   scrape time. Normal consumption (NO_SOCKET, SOCKET_CLOSE, ...) is not
//!   counted. Machine-wide: every network namespace's drops.
//! * Throttling: the cgroup iterator (never cpu.stat: on cgroup v2 it
//!   flushes rstat, the story's culprit) is read every `cgroup-interval`
//!   with the dying-memcg count, on the same wake-up; each reading costs
//!   about 0.8 µs per cgroup walked. What grew since the last reading is
//!   added to node-wide counters: a cgroup removed between two readings
//!   loses its last interval, a new one counts from zero.

use netstall_kernel::drops::ReasonTotals;
use netstall_kernel::throttle::{Reader, Reading};

use crate::metrics::{Metrics, SourceLabels};

/// The `source` label of each.
pub const PACKET_DROPS: &str = "packet-drops";
pub const CPU_THROTTLING: &str = "cpu-throttling";

/// Loads the drop counter and lets the metrics read it at scrape time.
fn start_packet_drops(metrics: &Metrics) {
    match ReasonTotals::load() {
        Ok(totals) => {
            metrics
                .packet_drops
                .set_reader(Box::new(move || totals.read()));
            source_up(metrics, PACKET_DROPS, true);
        }
        Err(e) => unavailable(metrics, PACKET_DROPS, &e),
    }
}

/// The throttling reader's ring: 2,340 rows (limited or throttled cgroups)
/// per walk, 512 KB of the agent's RSS (the ring's data is mapped twice),
/// where the doctor's 2 MiB would be 4 MB (measured). That is about 780
/// pods of three limited cgroups each (Kubernetes runs at most 110 per node
/// by default); rows that do not fit are told on stderr.
const RING_BYTES: u32 = 256 << 10;

/// The throttling reader and its last reading.
pub struct Throttling {
    reader: Reader,
    before: Option<Reading>,
    reported_error: bool,
    /// Rows lost to a full ring so far (told when it grows).
    lost: u64,
}

impl Throttling {
    /// Loads the cgroup iterator; `None` (said once) when it cannot load.
    pub fn open(metrics: &Metrics) -> Option<Self> {
        match Reader::open_with_ring(Some(RING_BYTES)) {
            Ok(reader) => Some(Self {
                reader,
                before: None,
                reported_error: false,
                lost: 0,
            }),
            Err(e) => {
                unavailable(metrics, CPU_THROTTLING, &e);
                None
            }
        }
    }

    /// Reads every CPU cgroup's counters and adds what grew to the metrics.
    pub fn read(&mut self, metrics: &Metrics) {
        match self.reader.read() {
            Ok(now) => {
                if let Some(before) = &self.before {
                    let growth = growth(before, &now);
                    let none = Vec::new();
                    metrics
                        .cpu_throttled_periods
                        .get_or_create(&none)
                        .inc_by(growth.periods);
                    metrics
                        .cpu_throttled_seconds
                        .get_or_create(&none)
                        .inc_by(growth.throttled_ns as f64 / 1e9);
                    metrics
                        .cpu_throttled_cgroups
                        .get_or_create(&none)
                        .set(i64::try_from(growth.cgroups).unwrap_or(i64::MAX));
                }
                self.before = Some(now);
                self.reported_error = false;
                let lost = self.reader.overflow();
                if lost > self.lost {
                    eprintln!(
                        "netstall agent: CPU throttling: {} cgroups did not fit the reader's ring; their throttling is not counted",
                        lost - self.lost
                    );
                    self.lost = lost;
                }
                source_up(metrics, CPU_THROTTLING, true);
            }
            Err(e) => {
                // Retried at the next interval; the reason is told once.
                if !std::mem::replace(&mut self.reported_error, true) {
                    eprintln!("netstall agent: cannot read CPU throttling: {e:#}");
                }
                source_up(metrics, CPU_THROTTLING, false);
            }
        }
    }
}

/// What the CPU cgroups' throttling grew by between two readings.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Growth {
    /// Periods that ran out of quota.
    pub periods: u64,
    pub throttled_ns: u64,
    /// Cgroups with at least one such period.
    pub cgroups: usize,
}

/// Sums what grew from `before` to `now` over the cgroups: one absent from
/// `before` was created since and counts from zero. Pure.
pub fn growth(before: &Reading, now: &Reading) -> Growth {
    let mut out = Growth::default();
    for (id, (_, c)) in now {
        let b = before.get(id).map(|(_, c)| *c).unwrap_or_default();
        let periods = c.nr_throttled.saturating_sub(b.nr_throttled);
        out.periods += periods;
        out.throttled_ns += c.throttled_ns.saturating_sub(b.throttled_ns);
        out.cgroups += usize::from(periods > 0);
    }
    out
}

fn source_up(metrics: &Metrics, source: &'static str, up: bool) {
    metrics
        .source_up
        .get_or_create(&SourceLabels { source })
        .set(i64::from(up));
}

fn unavailable(metrics: &Metrics, source: &'static str, e: &anyhow::Error) {
    let why = format!("{e:#}").replace('\n', " ");
    eprintln!("netstall agent: the {source} source is unavailable: {why}");
    source_up(metrics, source, false);
}

/// Loads the sources `packet_drops` and `cpu_throttling` turn on.
pub fn start(metrics: &Metrics, packet_drops: bool, cpu_throttling: bool) -> Option<Throttling> {
    if packet_drops {
        start_packet_drops(metrics);
    }
    let throttling = cpu_throttling.then(|| Throttling::open(metrics)).flatten();
    if packet_drops || cpu_throttling {
        // Loading parsed the kernel's BTF: give that freed heap back.
        // SAFETY: malloc_trim only releases free memory of this process's heap.
        unsafe { libc::malloc_trim(0) };
    }
    throttling
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstall_kernel::throttle::Counters;
    use std::collections::HashMap;

    #[test]
    fn growth_sums_what_grew_and_counts_new_cgroups_from_zero() {
        let c = |throttled, throttled_ns| Counters {
            quota_ns: 20_000_000,
            period_ns: 100_000_000,
            throttled_ns,
            nr_periods: 100,
            nr_throttled: throttled,
        };
        let before: Reading = HashMap::from([
            (7, ("web".into(), c(90, 7_000_000_000))),
            (8, ("idle".into(), c(1, 80_000_000))),
            (9, ("gone".into(), c(50, 900_000_000))),
        ]);
        let now: Reading = HashMap::from([
            (7, ("web".into(), c(93, 7_240_000_000))),
            (8, ("idle".into(), c(1, 80_000_000))),
            (10, ("new".into(), c(2, 150_000_000))),
        ]);
        assert_eq!(
            growth(&before, &now),
            Growth {
                periods: 5,
                throttled_ns: 390_000_000,
                cgroups: 2,
            }
        );
        assert_eq!(growth(&now, &now), Growth::default());
    }

    #[test]
    fn a_source_that_cannot_load_is_down_and_its_series_absent() {
        let metrics = Metrics::new("n");
        unavailable(&metrics, PACKET_DROPS, &anyhow::anyhow!("no BTF"));
        metrics
            .packet_drops
            .set_reader(Box::new(|| anyhow::bail!("unreadable")));
        let text = metrics.encode_prometheus();
        assert!(
            text.contains("netstall_source_up{source=\"packet-drops\"} 0"),
            "{text}"
        );
        assert!(!text.contains("netstall_packet_drops_total"), "{text}");
        assert!(!text.contains("netstall_cpu_throttled"), "{text}");
        metrics
            .packet_drops
            .set_reader(Box::new(|| Ok(vec![("NETFILTER_DROP".into(), 3)])));
        let text = metrics.encode_prometheus();
        assert!(
            text.contains("netstall_packet_drops_total{reason=\"NETFILTER_DROP\"} 3"),
            "{text}"
        );
    }
}
