//! The evidence the story's engineers gathered by hand, picked out of a
//! doctor run (`netstall demo` shows it): which contexts processed the ICMP
//! echo requests around the longest stall, and which probe episodes the
//! hypervisor (vCPU steal) explains rather than the node.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use netstall_core::shutdown::Shutdown;
use netstall_core::steal;
use netstall_events::kernel::{IcmpEcho, Stall, Steal};
use netstall_probe::{Episode, ProbeConfig, Report};

use crate::findings::Findings;

/// How far before and after a stall an ICMP echo still counts as "around" it.
const AROUND_NS: u64 = 30_000_000;
/// At most this many echoes are shown (the story's table had a dozen).
const MAX_AROUND: usize = 12;
/// How often `/proc/stat` is read for vCPU steal beside a probe run.
const STEAL_EVERY: Duration = Duration::from_millis(5);

/// The longest stall whose culprit is known.
pub fn longest_explained_stall(stalls: &[Stall]) -> Option<&Stall> {
    stalls
        .iter()
        .filter(|s| s.culprit.is_some())
        .max_by(|a, b| a.duration_ms.total_cmp(&b.duration_ms))
}

/// The echoes processed on `cpu` from 30 ms before `start_ns` to 30 ms
/// after `end_ns`, in the order recorded, at most a dozen.
pub fn icmp_around(echoes: &[IcmpEcho], cpu: u32, start_ns: u64, end_ns: u64) -> Vec<&IcmpEcho> {
    echoes
        .iter()
        .filter(|e| {
            e.cpu == cpu && e.ts_ns + AROUND_NS >= start_ns && e.ts_ns <= end_ns + AROUND_NS
        })
        .take(MAX_AROUND)
        .collect()
}

/// The echoes around the longest stall with a culprit (none without one).
pub fn icmp_around_longest_stall(findings: &Findings) -> Vec<&IcmpEcho> {
    let Some(stall) = longest_explained_stall(&findings.stalls) else {
        return Vec::new();
    };
    let end_ns = stall.start_ns + (stall.duration_ms * 1e6) as u64;
    icmp_around(&findings.icmp, stall.cpu, stall.start_ns, end_ns)
}

/// How many of `episodes` vCPU steal explains (the hypervisor held a vCPU
/// for at least half of the episode).
pub fn explained_by_steal(episodes: &[Episode], steals: &[Steal]) -> usize {
    episodes
        .iter()
        .filter(|e| steal::steal_explains(steals, None, e.start_ns, e.end_ns))
        .count()
}

/// Runs the probe session beside a `/proc/stat` steal watch, so an episode
/// the hypervisor caused can be told apart from one the node caused.
pub fn probe_with_steal_watch(config: &ProbeConfig) -> Result<(Report, Vec<Steal>)> {
    let stop = Arc::new(Shutdown::new()?);
    let watch = {
        let stop = stop.clone();
        std::thread::spawn(move || steal::watch_proc_stat(&stop, STEAL_EVERY))
    };
    let report = netstall_probe::run(config, |_| {});
    stop.request();
    let steals = watch
        .join()
        .map_err(|_| anyhow::anyhow!("the steal watcher panicked"))??;
    Ok((report?, steals))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(seq: u16, cpu: u32, ts_ns: u64) -> IcmpEcho {
        IcmpEcho {
            seq,
            id: 7,
            cpu,
            comm: "ksoftirqd/0".into(),
            pid: 15,
            tid: 15,
            ksoftirqd: true,
            ts_ns,
        }
    }

    #[test]
    fn echoes_around_a_stall_are_those_of_its_cpu_within_30_ms() {
        let ms = 1_000_000;
        let echoes = vec![
            echo(1, 0, 1_000 * ms), // 30 ms before the start: in
            echo(2, 0, 999 * ms),   // 31 ms before: out
            echo(3, 1, 1_050 * ms), // another CPU: out
            echo(4, 0, 1_050 * ms), // inside: in
            echo(5, 0, 1_160 * ms), // 30 ms after the end: in
            echo(6, 0, 1_161 * ms), // 31 ms after: out
        ];
        let seqs: Vec<u16> = icmp_around(&echoes, 0, 1_030 * ms, 1_130 * ms)
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [1, 4, 5]);
    }

    #[test]
    fn at_most_a_dozen_echoes_are_kept_in_order() {
        let echoes: Vec<IcmpEcho> = (0..20).map(|i| echo(i, 2, 5_000 + i as u64)).collect();
        let around = icmp_around(&echoes, 2, 5_000, 6_000);
        assert_eq!(around.len(), 12);
        assert_eq!(around[0].seq, 0);
        assert_eq!(around[11].seq, 11);
    }
}
