//! The stats readers' ledger, summed: the kernel's running totals per
//! (comm, cgroup) (`flush_ledger` in trace.bpf.c, read as
//! [`FlushLedger`]) as `stat-flush` records per reader, the heaviest
//! first, the rest as `other`. Pure: the agent (per 30 s window), the
//! doctor (per run) and `netstall cgroups --watch` (per watch) share it.

use std::collections::HashMap;

use netstall_events::kernel::StatFlush;

use super::FlushLedger;

/// `stat-flush` records kept per window: the heaviest readers, then `other`.
pub const TOP_IN_WINDOW: usize = 5;

/// The reader's name: its comm, kernel workers folded into one
/// (`kworker/u8:3` and `kworker/1:2` are `kworker`).
pub fn reader_name(comm: &str) -> &str {
    match comm.split_once('/') {
        Some((kind @ ("kworker" | "ksoftirqd" | "kswapd0"), _)) => kind,
        _ => comm,
    }
}

/// One reader's sums over a window.
#[derive(Debug, Default, Clone)]
pub struct ReaderSum {
    pub flushes: u64,
    pub locked_ns: u64,
    /// The reader's cgroup while it is always the same one.
    cgroup: Option<Option<u64>>,
}

impl ReaderSum {
    pub fn add(&mut self, flushes: u64, locked_ns: u64, cgroup_id: u64) {
        self.flushes += flushes;
        self.locked_ns += locked_ns;
        self.cgroup = match self.cgroup {
            None => Some(Some(cgroup_id)),
            Some(Some(id)) if id == cgroup_id => Some(Some(id)),
            Some(_) => Some(None),
        };
    }
}

/// The kernel's running totals as `stat-flush` records over
/// `[start_ns, end_ns]` (a tracer that started at `start_ns`).
pub fn window_of(
    totals: &[FlushLedger],
    start_ns: u64,
    end_ns: u64,
    node: Option<&str>,
) -> Vec<StatFlush> {
    let mut readers: HashMap<String, ReaderSum> = HashMap::new();
    for entry in totals.iter().filter(|e| e.flushes > 0 || e.locked_ns > 0) {
        readers
            .entry(reader_name(&entry.comm).to_owned())
            .or_default()
            .add(entry.flushes, entry.locked_ns, entry.cgroup_id);
    }
    top_records(readers.into_iter().collect(), start_ns, end_ns, node)
}

/// The [`TOP_IN_WINDOW`] heaviest readers, then the rest as `other`.
pub fn top_records(
    mut readers: Vec<(String, ReaderSum)>,
    start_ns: u64,
    end_ns: u64,
    node: Option<&str>,
) -> Vec<StatFlush> {
    readers.sort_by(|a, b| b.1.locked_ns.cmp(&a.1.locked_ns).then(a.0.cmp(&b.0)));
    let record = |reader: String, w: &ReaderSum| StatFlush {
        reader,
        cgroup_id: w.cgroup.flatten(),
        flushes: w.flushes,
        locked_ms: w.locked_ns as f64 / 1e6,
        start_ns,
        end_ns,
        node: node.map(str::to_owned),
    };
    let mut records: Vec<StatFlush> = Vec::new();
    let mut other = ReaderSum::default();
    for (i, (reader, w)) in readers.iter().enumerate() {
        if i < TOP_IN_WINDOW && reader != "other" {
            records.push(record(reader.clone(), w));
        } else {
            other.flushes += w.flushes;
            other.locked_ns += w.locked_ns;
        }
    }
    if other.flushes > 0 || other.locked_ns > 0 {
        records.push(record("other".into(), &other));
    }
    records
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

    #[test]
    fn a_run_sums_kworkers_as_one_and_keeps_the_heaviest() {
        let run = window_of(
            &[
                entry("kworker/u8:1", 1, 3, 1),
                entry("kworker/0:2", 1, 3, 1),
                entry("cadvisor", 7, 10, 300),
            ],
            0,
            20_000_000_000,
            None,
        );
        assert_eq!(run.len(), 2);
        assert_eq!(
            (run[0].reader.as_str(), run[0].cgroup_id),
            ("cadvisor", Some(7))
        );
        assert_eq!((run[1].reader.as_str(), run[1].flushes), ("kworker", 6));
        let many: Vec<FlushLedger> = (0..8)
            .map(|i| entry(&format!("r{i}"), i, 1, i + 1))
            .collect();
        let top = window_of(&many, 0, 1, None);
        assert_eq!(top.len(), TOP_IN_WINDOW + 1);
        assert_eq!(top[0].reader, "r7");
        assert_eq!((top[5].reader.as_str(), top[5].flushes), ("other", 3));
    }
}
