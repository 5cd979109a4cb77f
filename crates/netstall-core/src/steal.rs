//! vCPU steal: lining up the time a hypervisor took from the VM's CPUs with
//! the latency episodes a prober saw.
//!
//! On a VM the hypervisor sometimes stops every vCPU at once (measured here:
//! ~25 ms pauses, steal on both CPUs over the same window). Packets then wait
//! with nothing inside the VM to blame. An episode that steal covers is named
//! `vcpu-steal`, not pinned on a task or on the network.
//!
//! Steal arrives as [`Steal`] windows: from the tracer's steal clock (ns, at
//! every tick) or, without it, from `/proc/stat` sampled by
//! [`watch_proc_stat`].

use std::time::Duration;

use anyhow::{Context, Result};

use crate::clock::realtime_ns;
use crate::shutdown::Shutdown;
use netstall_events::kernel::{Steal, StealSource};

/// How far around an episode steal is still looked for: a window's edges
/// are only as exact as the looks that bound it (a tick, a sample).
pub const STEAL_LOOK_SLACK_NS: u64 = 12_000_000;

/// The steal of one CPU (or of every CPU when `cpu` is `None`, the most on
/// any one of them) that may have fallen inside `[start_ns, end_ns]` widened
/// by the slack, in ns. A window only says how much was stolen somewhere in
/// it (a pause is one burst, not spread evenly), so a window that overlaps
/// counts up to the overlap.
pub fn steal_during(steals: &[Steal], cpu: Option<u32>, start_ns: u64, end_ns: u64) -> u64 {
    let from = start_ns.saturating_sub(STEAL_LOOK_SLACK_NS);
    let to = end_ns.saturating_add(STEAL_LOOK_SLACK_NS);
    let mut per_cpu: Vec<(u32, u64)> = Vec::new();
    for s in steals.iter().filter(|s| cpu.is_none_or(|c| c == s.cpu)) {
        let overlap = s.end_ns.min(to).saturating_sub(s.start_ns.max(from));
        if overlap == 0 {
            continue;
        }
        let counted = ((s.steal_ms * 1e6) as u64).min(overlap);
        match per_cpu.iter_mut().find(|(c, _)| *c == s.cpu) {
            Some((_, sum)) => *sum += counted,
            None => per_cpu.push((s.cpu, counted)),
        }
    }
    per_cpu.into_iter().map(|(_, ns)| ns).max().unwrap_or(0)
}

/// Whether steal explains a delay of `delay_ns` seen over
/// `[start_ns, end_ns]`: at least half of it was stolen (a stolen vCPU also
/// delays what runs right after it, so steal rarely covers all of it).
pub fn steal_explains(steals: &[Steal], cpu: Option<u32>, start_ns: u64, end_ns: u64) -> bool {
    let delay_ns = end_ns.saturating_sub(start_ns);
    delay_ns > 0 && steal_during(steals, cpu, start_ns, end_ns) * 2 >= delay_ns
}

/// The per-CPU `steal` column of `/proc/stat`, in USER_HZ ticks, by CPU.
pub fn parse_proc_stat(text: &str) -> Result<Vec<(u32, u64)>> {
    let mut out = Vec::new();
    for line in text.lines() {
        // `cpuN …` lines; the all-CPU line is `cpu  …`.
        let Some(rest) = line
            .strip_prefix("cpu")
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let Some(Ok(cpu)) = fields.next().map(str::parse::<u32>) else {
            continue;
        };
        // user nice system idle iowait irq softirq steal
        let steal = fields
            .nth(7)
            .with_context(|| format!("/proc/stat: cpu{cpu} has no steal column"))?
            .parse::<u64>()
            .with_context(|| format!("/proc/stat: cpu{cpu}'s steal is not a number"))?;
        out.push((cpu, steal));
    }
    anyhow::ensure!(!out.is_empty(), "/proc/stat lists no CPU");
    Ok(out)
}

/// Turns successive `/proc/stat` samples into [`Steal`] windows.
#[derive(Debug)]
pub struct ProcStatSteal {
    tick_ns: u64,
    last: Option<(u64, Vec<(u32, u64)>)>,
}

impl ProcStatSteal {
    /// `user_hz` is `sysconf(_SC_CLK_TCK)`, the unit of `/proc/stat`.
    pub fn new(user_hz: u64) -> Self {
        Self {
            tick_ns: 1_000_000_000 / user_hz.max(1),
            last: None,
        }
    }

    /// The steal since the previous sample, one window per CPU that had any.
    pub fn sample(&mut self, at_ns: u64, per_cpu: Vec<(u32, u64)>) -> Vec<Steal> {
        let mut out = Vec::new();
        if let Some((since, last)) = &self.last {
            for (cpu, ticks) in &per_cpu {
                let before = last.iter().find(|(c, _)| c == cpu).map(|(_, t)| *t);
                let stolen = before.map_or(0, |b| ticks.saturating_sub(b));
                if stolen > 0 {
                    out.push(Steal {
                        cpu: *cpu,
                        start_ns: *since,
                        end_ns: at_ns,
                        steal_ms: (stolen * self.tick_ns) as f64 / 1e6,
                        source: StealSource::ProcStat,
                    });
                }
            }
        }
        self.last = Some((at_ns, per_cpu));
        out
    }
}

/// USER_HZ, the unit of `/proc/stat`.
pub fn user_hz() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Samples `/proc/stat` every `every` until `stop`, returning the steal
/// windows seen. `/proc/stat` is cheap (no cgroup walk), so a 5 ms period
/// costs little and still lines up with 10 ms episodes.
pub fn watch_proc_stat(stop: &Shutdown, every: Duration) -> Result<Vec<Steal>> {
    let mut watch = ProcStatSteal::new(user_hz());
    let mut out = Vec::new();
    loop {
        let text = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
        out.extend(watch.sample(realtime_ns(), parse_proc_stat(&text)?));
        if stop.wait(every) {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steal(cpu: u32, start_ms: u64, end_ms: u64, steal_ms: f64) -> Steal {
        Steal {
            cpu,
            start_ns: start_ms * 1_000_000,
            end_ns: end_ms * 1_000_000,
            steal_ms,
            source: StealSource::StealClock,
        }
    }

    // Shaped like this VM's /proc/stat (2 vCPUs) around a 25 ms pause, both
    // CPUs' steal moving at once (recorded samples: netstall-doctor's testdata).
    const BEFORE: &str = "cpu  15004 12 5093 842113 410 0 391 977 0 0\n\
        cpu0 7533 6 2581 420917 205 0 230 487 0 0\n\
        cpu1 7471 6 2512 421196 205 0 161 490 0 0\n\
        intr 1 2 3\n";
    const AFTER: &str = "cpu  15005 12 5093 842114 410 0 391 982 0 0\n\
        cpu0 7533 6 2581 420918 205 0 230 490 0 0\n\
        cpu1 7472 6 2512 421196 205 0 161 492 0 0\n";

    #[test]
    fn proc_stat_samples_become_steal_windows_per_cpu() {
        assert_eq!(parse_proc_stat(BEFORE).unwrap(), vec![(0, 487), (1, 490)]);
        let mut watch = ProcStatSteal::new(100);
        assert!(watch
            .sample(1_000_000_000, parse_proc_stat(BEFORE).unwrap())
            .is_empty());
        let windows = watch.sample(1_030_000_000, parse_proc_stat(AFTER).unwrap());
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0].cpu, 0);
        assert_eq!(windows[0].steal_ms, 30.0);
        assert_eq!(windows[1].steal_ms, 20.0);
        assert_eq!(windows[0].source, StealSource::ProcStat);
        // A 25 ms probe episode inside those samples is steal.
        assert!(steal_explains(&windows, None, 1_004_000_000, 1_029_000_000));
    }

    #[test]
    fn malformed_proc_stat_is_an_error_not_a_panic() {
        assert!(parse_proc_stat("").is_err());
        assert!(parse_proc_stat("cpu0 1 2 3\n").is_err());
        assert!(parse_proc_stat("cpu0 1 2 3 4 5 6 7 x 0 0\n").is_err());
    }

    #[test]
    fn steal_counts_up_to_the_overlap_and_only_near_the_episode() {
        let ms = |ms: u64| ms * 1_000_000;
        let steals = [steal(0, 100, 200, 50.0), steal(1, 100, 125, 25.0)];
        assert_eq!(steal_during(&steals, Some(0), ms(100), ms(200)), ms(50));
        // Every CPU: the most that may have been stolen from any one of them
        // (CPU 0's 50 ms may lie in the 37 ms its window shares with the look).
        assert_eq!(steal_during(&steals, None, ms(100), ms(125)), ms(37));
        // A pause anywhere in a long window may be the one near the episode,
        // but no more of it than the (slack-widened) overlap.
        assert_eq!(steal_during(&steals, Some(0), ms(180), ms(190)), ms(32));
        let long = [steal(0, 0, 3000, 26.0)];
        assert!(steal_explains(&long, Some(0), ms(1500), ms(1525)));
        // Far away: nothing.
        assert_eq!(steal_during(&steals, None, ms(400), ms(425)), 0);
        // A 25 ms episode where 25 ms were stolen is steal; a 100 ms one is not.
        assert!(steal_explains(&steals, Some(1), ms(100), ms(125)));
        assert!(!steal_explains(&steals, Some(1), ms(100), ms(300)));
    }
}
