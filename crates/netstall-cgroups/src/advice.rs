//! What the counts mean on this kernel: the memory.stat cost by kernel era,
//! the worst stall at the current count, and what to do. Pure functions.

pub use netstall_events::cgroups::StatEra;

/// IRQs-off time per dying memcg with pending stat updates during one
/// memory.stat flush, measured on 6.18 with bench/cgroups.sh (median: 12k
/// dirty zombies 25 ms, 30k 70 ms). The flush cost scales with dirty
/// memcgs, so this times the dying count is the stall when all of them were
/// touched since the last flush: the worst case of a node, typically.
pub const IRQS_OFF_NS_PER_DYING_MEMCG: u64 = 2_000;

/// The highest per-memcg cost measured there (4.6 us, on a busy 2-vCPU VM):
/// the upper end of the estimate.
pub const IRQS_OFF_NS_PER_DYING_MEMCG_HIGH: u64 = 5_000;

/// From this many dying memcgs on, the worst flush (≈2 ms) is worth a line.
pub const CONCERN_DYING: u64 = 1_000;

/// From this many, the worst flush (≈20 ms+) delays packets the way the
/// story's nodes did.
pub const STALL_DYING: u64 = 10_000;

/// A canary read of memory.stat this slow says the node is affected: every
/// reader stalls its CPU about as long (a network RX stall of tens of ms).
pub const AFFECTED_CANARY_MS: f64 = 10.0;

/// A kernel `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    /// How memory.stat reads cost on this kernel.
    pub fn stat_era(self) -> StatEra {
        if self < KernelVersion::at(4, 16) {
            StatEra::WalkPerCpu
        } else if self < KernelVersion::at(5, 2) {
            StatEra::WalkDescendants
        } else if self < KernelVersion::at(5, 13) {
            StatEra::Recursive
        } else {
            StatEra::RstatFlush
        }
    }

    /// Parses the start of a release string such as `6.18.44-fc-v769` or `4.9.0-8-amd64`.
    pub fn parse(release: &str) -> Option<Self> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self { major, minor })
    }

    const fn at(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

/// The IRQs-off (or non-preemptible) time of one memory.stat read with all
/// dying memcgs dirty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StallEstimate {
    /// At the typical (median) measured cost per memcg.
    pub ms: f64,
    /// At the highest measured cost per memcg (a busy CPU).
    pub high_ms: f64,
}

/// The worst stall of one memory.stat read at `dying` dying memcgs on this
/// era; `None` where reads do not scale with the count.
pub fn worst_stall(era: StatEra, dying: u64) -> Option<StallEstimate> {
    era.read_scales_with_dying().then(|| StallEstimate {
        ms: (dying * IRQS_OFF_NS_PER_DYING_MEMCG) as f64 / 1e6,
        high_ms: (dying * IRQS_OFF_NS_PER_DYING_MEMCG_HIGH) as f64 / 1e6,
    })
}

/// What the advice is built from.
#[derive(Debug, Clone)]
pub struct MemoryState<'a> {
    pub kernel_release: &'a str,
    /// 1 or 2: the hierarchy holding the memory controller.
    pub version: u8,
    pub live: u64,
    pub dying: u64,
    /// A canary read's duration, if one was taken.
    pub canary_ms: Option<f64>,
}

/// Advice lines for people, most important first.
pub fn advise(state: &MemoryState) -> Vec<String> {
    let mut advice = Vec::new();
    let Some(kernel) = KernelVersion::parse(state.kernel_release) else {
        advice.push(format!(
            "cannot tell the kernel era from release {:?}; advice below assumes a current kernel",
            state.kernel_release
        ));
        return advise_counts(state, StatEra::RstatFlush, advice);
    };
    let era = kernel.stat_era();
    advise_counts(state, era, advice)
}

fn advise_counts(state: &MemoryState, era: StatEra, mut advice: Vec<String>) -> Vec<String> {
    let dying = state.dying;
    let worst = worst_stall(era, dying);
    if dying < CONCERN_DYING {
        advice.push(format!(
            "{dying} dying memory cgroups ({} live): too few to stall memory.stat readers",
            state.live
        ));
    } else {
        let severity = if dying >= STALL_DYING {
            "enough to stall network RX for tens of ms or more on the CPU that reads memory.stat"
        } else {
            "a few ms of stall per memory.stat read at worst"
        };
        let estimate = match worst {
            Some(w) => format!(
                "; worst read ≈ {:.0} ms, up to {:.0} ms on a busy CPU ({severity})",
                w.ms, w.high_ms
            ),
            None => "; on this kernel era reads do not scale with them".to_owned(),
        };
        advice.push(format!(
            "{dying} dying memory cgroups against {} live{estimate}",
            state.live
        ));
    }
    advice.push(era.explain().to_owned());
    if let Some(ms) = state.canary_ms {
        // The per-memcg cost only means something when the read did flush.
        let per = (dying > 0 && ms >= 1.0).then(|| ms * 1e3 / dying as f64);
        let measured = match per {
            Some(us) => format!(" (≈{us:.2} us per dying memcg)"),
            None => String::new(),
        };
        let verdict = if ms >= AFFECTED_CANARY_MS {
            "this node is affected: every reader of memory.stat (cadvisor, kubelet, node agents) stalls its CPU like this"
        } else {
            "fast now; stats touched since the last flush can still make the next read slow"
        };
        advice.push(format!(
            "canary: memory.stat took {ms:.2} ms{measured}; {verdict}"
        ));
    }
    if dying >= CONCERN_DYING {
        advice.push(
            "find who creates them: `netstall cgroups --watch 30s` (top parents by churn; a crash-looping pod shows up there)"
                .to_owned(),
        );
        advice.push(
            "release page-cache-pinned ones: `netstall cgroups --remediate 1 --yes [--canary]` (drop clean page cache, \
             then re-count; level 2 drops slab only and, on current kernels, releases none)"
                .to_owned(),
        );
        let upgrade = match era {
            StatEra::WalkPerCpu | StatEra::WalkDescendants => {
                "upgrade the kernel (5.2+ stops walking dying memcgs on read); meanwhile drain and reboot nodes that keep accumulating them"
            }
            StatEra::Recursive | StatEra::RstatFlush => {
                "if they keep coming back, fix the churn at its source (short-lived cgroups writing page cache) or drain and reboot the node"
            }
        };
        advice.push(upgrade.to_owned());
        if state.version == 1 {
            advice.push(
                "memory is on cgroup v1: on v2 (kernel 6.11+) cgroup.stat also counts dying memcgs per subtree".to_owned(),
            );
        }
    }
    advice
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(release: &str, dying: u64) -> MemoryState<'_> {
        MemoryState {
            kernel_release: release,
            version: 1,
            live: 240,
            dying,
            canary_ms: None,
        }
    }

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v769"),
            Some(KernelVersion::at(6, 18))
        );
        assert_eq!(
            KernelVersion::parse("4.9.0-8-amd64"),
            Some(KernelVersion::at(4, 9))
        );
        assert_eq!(KernelVersion::parse("5.13"), Some(KernelVersion::at(5, 13)));
        assert_eq!(KernelVersion::parse("garbage"), None);
    }

    #[test]
    fn eras_follow_the_known_memory_stat_changes() {
        let era = |r| KernelVersion::parse(r).unwrap().stat_era();
        assert_eq!(era("4.9.0"), StatEra::WalkPerCpu);
        assert_eq!(era("4.15.18"), StatEra::WalkPerCpu);
        assert_eq!(era("4.16.0"), StatEra::WalkDescendants);
        assert_eq!(era("4.19.100"), StatEra::WalkDescendants);
        assert_eq!(era("5.2.0"), StatEra::Recursive);
        assert_eq!(era("5.12.9"), StatEra::Recursive);
        assert_eq!(era("5.13.0"), StatEra::RstatFlush);
        assert_eq!(era("6.18.44"), StatEra::RstatFlush);
    }

    #[test]
    fn the_worst_stall_scales_two_to_five_us_per_dying_memcg() {
        let story = worst_stall(StatEra::RstatFlush, 50_000).unwrap();
        assert_eq!((story.ms, story.high_ms), (100.0, 250.0));
        assert_eq!(worst_stall(StatEra::RstatFlush, 12_000).unwrap().ms, 24.0);
        assert_eq!(worst_stall(StatEra::Recursive, 50_000), None);
    }

    #[test]
    fn advice_follows_the_count_and_era() {
        let quiet = advise(&state("6.18.44", 75));
        assert!(quiet[0].contains("too few"), "{quiet:?}");
        assert!(!quiet.iter().any(|a| a.contains("--remediate")));

        let story = advise(&state("6.18.44", 70_000));
        assert!(story[0].contains("70000 dying"), "{story:?}");
        assert!(story[0].contains("140 ms, up to 350 ms"), "{story:?}");
        assert!(story.iter().any(|a| a.contains("--remediate 1 --yes")));
        assert!(story.iter().any(|a| a.contains("--watch")));

        let old = advise(&state("4.9.0-8-amd64", 70_000));
        assert!(old.iter().any(|a| a.contains("upgrade the kernel")));
        let recursive = advise(&state("5.4.0", 70_000));
        assert!(recursive[0].contains("do not scale"), "{recursive:?}");
    }

    #[test]
    fn a_canary_read_is_judged_per_dying_memcg() {
        let mut s = state("6.18.44", 12_000);
        s.canary_ms = Some(24.0);
        let advice = advise(&s);
        let canary = advice.iter().find(|a| a.starts_with("canary")).unwrap();
        assert!(canary.contains("2.00 us per dying memcg"), "{canary}");
        assert!(canary.contains("affected"), "{canary}");
    }

    #[test]
    fn an_unknown_release_says_so() {
        let advice = advise(&state("custom", 5));
        assert!(advice[0].contains("cannot tell the kernel era"));
    }
}
