//! The stats readers' ledger: what each reader of cgroup stats (cadvisor,
//! kubelet, the kernel's periodic flusher) costs the node in memory-cgroup
//! stat flushes and in time with the rstat lock held, IRQs off on its CPU.
//!
//! The kernel counts per (comm, cgroup) from the rstat and memcg
//! tracepoints (`flush_ledger` in trace.bpf.c); every tracer totals report
//! adds the increments here, to the metrics
//! `netstall_stat_flush_seconds_total{reader}` and
//! `netstall_stat_flushes_total{reader}`, and to the window the recorder
//! keeps after a stall (`stat-flush` records).
//!
//! Bounded cardinality: a reader gets its own label once it has held the
//! lock [`READER_FLOOR`] in all, while fewer than [`MAX_READERS`] have one;
//! the rest count as `reader="other"`. Kernel workers are one reader
//! (`kworker/u8:3` and `kworker/1:2` are `kworker`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use netstall_events::kernel::StatFlush;
pub use netstall_kernel::trace::ledger::{reader_name, TOP_IN_WINDOW};
use netstall_kernel::trace::ledger::{top_records, ReaderSum};
use netstall_kernel::trace::FlushLedger;

use crate::metrics::{Metrics, ReaderLabels};

/// Readers with their own label, at most.
pub const MAX_READERS: usize = 5;
/// Lock time a reader must have held before it gets its own label.
pub const READER_FLOOR: Duration = Duration::from_millis(100);
/// Readers (comm, cgroup) remembered; the kernel's map holds as many.
const MAX_TRACKED: usize = 256;

/// Running totals, labels given, and the current window.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The kernel's last totals per (comm, cgroup), to add increments only.
    seen: HashMap<(String, u64), (u64, u64)>,
    /// Lock time per reader so far (to reach the floor).
    locked_ns: HashMap<String, u64>,
    labelled: HashSet<String>,
    window: HashMap<String, ReaderSum>,
    window_start_ns: u64,
}

impl Ledger {
    pub fn new(now_ns: u64) -> Self {
        Self {
            window_start_ns: now_ns,
            ..Self::default()
        }
    }

    /// Adds the increments of the kernel's totals to the metrics and the
    /// window. A tracer that restarted counts from zero again, and an entry
    /// the kernel's LRU evicted comes back from zero: a total lower than
    /// the last is all new.
    pub fn advance(&mut self, metrics: &Metrics, totals: &[FlushLedger]) {
        for entry in totals {
            let key = (entry.comm.clone(), entry.cgroup_id);
            let (flushes0, locked0) = self.seen.get(&key).copied().unwrap_or((0, 0));
            let flushes = if entry.flushes >= flushes0 {
                entry.flushes - flushes0
            } else {
                entry.flushes
            };
            let locked = if entry.locked_ns >= locked0 {
                entry.locked_ns - locked0
            } else {
                entry.locked_ns
            };
            if self.seen.len() < MAX_TRACKED || self.seen.contains_key(&key) {
                self.seen.insert(key, (entry.flushes, entry.locked_ns));
            }
            if flushes == 0 && locked == 0 {
                continue;
            }
            let reader = reader_name(&entry.comm).to_owned();
            let label = self.label(&reader, locked);
            let labels = ReaderLabels { reader: label };
            if locked > 0 {
                metrics
                    .stat_flush_seconds
                    .get_or_create(&labels)
                    .inc_by(locked as f64 / 1e9);
            }
            if flushes > 0 {
                metrics.stat_flushes.get_or_create(&labels).inc_by(flushes);
            }
            if self.window.len() < MAX_TRACKED || self.window.contains_key(&reader) {
                self.window
                    .entry(reader)
                    .or_default()
                    .add(flushes, locked, entry.cgroup_id);
            }
        }
        if self.seen.len() >= MAX_TRACKED {
            // The kernel's LRU has moved on: forget what it forgot.
            let current: HashSet<(&str, u64)> = totals
                .iter()
                .map(|e| (e.comm.as_str(), e.cgroup_id))
                .collect();
            self.seen
                .retain(|(comm, id), _| current.contains(&(comm.as_str(), *id)));
        }
    }

    /// The label `reader`'s new lock time counts under.
    fn label(&mut self, reader: &str, locked_ns: u64) -> String {
        if self.labelled.contains(reader) {
            return reader.to_owned();
        }
        let total = self.locked_ns.entry(reader.to_owned()).or_default();
        *total += locked_ns;
        let floor = u64::try_from(READER_FLOOR.as_nanos()).unwrap_or(u64::MAX);
        if *total >= floor && self.labelled.len() < MAX_READERS && reader != "other" {
            self.locked_ns.remove(reader);
            self.labelled.insert(reader.to_owned());
            return reader.to_owned();
        }
        if self.locked_ns.len() > MAX_TRACKED {
            // Bounded: the lightest readers start over.
            let lightest = self
                .locked_ns
                .iter()
                .min_by_key(|(_, ns)| **ns)
                .map(|(r, _)| r.clone());
            if let Some(r) = lightest {
                self.locked_ns.remove(&r);
            }
        }
        "other".to_owned()
    }

    /// The window since the last call as `stat-flush` records: the
    /// heaviest readers, the rest summed as `other`; and a new window.
    pub fn take_window(&mut self, node: &str, now_ns: u64) -> Vec<StatFlush> {
        let start_ns = std::mem::replace(&mut self.window_start_ns, now_ns);
        let readers: Vec<(String, ReaderSum)> = self.window.drain().collect();
        top_records(readers, start_ns, now_ns, Some(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(comm: &str, cgroup_id: u64, flushes: u64, locked_ms: u64) -> FlushLedger {
        FlushLedger {
            comm: comm.into(),
            cgroup_id,
            flushes,
            locked_ns: locked_ms * 1_000_000,
        }
    }

    fn series(text: &str, name: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(name))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn heavy_readers_get_a_label_light_and_late_ones_are_other() {
        let metrics = Metrics::new("n");
        let mut ledger = Ledger::new(0);
        // Light readers (the periodic flusher in three kworkers) stay other.
        ledger.advance(
            &metrics,
            &[
                entry("kworker/u8:1", 1, 3, 1),
                entry("kworker/u8:2", 1, 3, 1),
                entry("cadvisor", 7, 10, 300),
            ],
        );
        // Increments only: the same totals again add nothing.
        ledger.advance(&metrics, &[entry("cadvisor", 7, 10, 300)]);
        for i in 0..10 {
            ledger.advance(&metrics, &[entry(&format!("reader{i}"), 9, 1, 200)]);
        }
        let text = metrics.encode_prometheus();
        let seconds = series(&text, "netstall_stat_flush_seconds_total{");
        assert_eq!(seconds.len(), MAX_READERS + 1, "{seconds:?}");
        assert!(
            text.contains("netstall_stat_flush_seconds_total{reader=\"cadvisor\"} 0.3\n"),
            "{text}"
        );
        assert!(
            text.contains("netstall_stat_flushes_total{reader=\"cadvisor\"} 10\n"),
            "{text}"
        );
        // kworkers (2 ms) and the readers past the fifth label (6 × 200 ms).
        let other: f64 = series(&text, "netstall_stat_flush_seconds_total{reader=\"other\"}")[0]
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((other - 1.202).abs() < 1e-9, "{text}");
        let window = ledger.take_window("n", 30_000_000_000);
        assert_eq!(window.len(), TOP_IN_WINDOW + 1);
        assert_eq!(window[0].reader, "cadvisor");
        assert_eq!(window[0].cgroup_id, Some(7));
        assert_eq!(window[0].locked_ms, 300.0);
        assert_eq!(window.last().unwrap().reader, "other");
        assert_eq!(
            window[0].to_string(),
            "cadvisor spent 300.0 ms of IRQs-off time flushing stats (10 flushes) in the last 30 s"
        );
        assert!(ledger.take_window("n", 60_000_000_000).is_empty());
    }

    #[test]
    fn a_restarted_tracer_or_an_evicted_entry_counts_from_zero() {
        let metrics = Metrics::new("n");
        let mut ledger = Ledger::new(0);
        ledger.advance(&metrics, &[entry("cadvisor", 7, 10, 500)]);
        ledger.advance(&metrics, &[entry("cadvisor", 7, 2, 100)]);
        assert!(metrics
            .encode_prometheus()
            .contains("netstall_stat_flush_seconds_total{reader=\"cadvisor\"} 0.6\n"));
        assert_eq!(reader_name("kworker/1:2"), "kworker");
        assert_eq!(reader_name("cadvisor"), "cadvisor");
    }
}
