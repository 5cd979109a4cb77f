//! The remediation ladder: `drop_caches` levels 1, 2 and 3, written only
//! when the user confirmed (`--yes`), then the count is taken again (and the
//! canary re-timed) and the tool reports what actually happened.
//!
//! `sync` runs first, as the kernel documentation advises: drop_caches frees
//! only clean pages, and recently written page cache (what the youngest
//! dying memcgs hold) is still dirty.
//!
//! Which level releases dying memcgs depends on what pins them: page cache
//! (level 1) on current kernels, slab objects (level 2) on kernels before
//! objcg reparenting. Measured on 6.18: level 1 releases them, level 2 does
//! not. Nothing is assumed; the counts decide.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::canary;
use crate::host::Host;
pub use netstall_events::cgroups::Remediation;

const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";

/// Released at least this share of the dying memcgs: it worked.
pub const WORKED_FRACTION: f64 = 0.9;

/// A `drop_caches` level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// 1: free clean page cache.
    PageCache,
    /// 2: free reclaimable slab (dentries, inodes).
    Slab,
    /// 3: both.
    Both,
}

impl Level {
    /// Parses `1`, `2` or `3`.
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim() {
            "1" => Ok(Level::PageCache),
            "2" => Ok(Level::Slab),
            "3" => Ok(Level::Both),
            other => {
                bail!("remediation level must be 1, 2 or 3 (drop_caches levels), not {other:?}")
            }
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Level::PageCache => 1,
            Level::Slab => 2,
            Level::Both => 3,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Level::PageCache => "free clean page cache",
            Level::Slab => "free reclaimable slab objects (dentries, inodes)",
            Level::Both => "free clean page cache and reclaimable slab objects",
        }
    }

    /// The next rung to try when this one did not release them.
    fn next(self) -> &'static str {
        match self {
            Level::Slab => "try level 1 (page cache pins dying memcgs on current kernels)",
            Level::PageCache => "try level 3 (slab objects pin them on older kernels)",
            Level::Both => {
                "what is left is pinned by pages drop_caches cannot free (dirty, mapped, mlocked or \
                 shared with live cgroups): drain and reboot the node"
            }
        }
    }
}

fn action(level: Level) -> String {
    format!(
        "sync; echo {} > {DROP_CACHES} ({})",
        level.number(),
        level.what()
    )
}

/// The dry run: what `--yes` would write. Nothing is touched.
pub fn plan(level: Level, dying_before: u64, canary_before_ms: Option<f64>) -> Remediation {
    Remediation {
        level: level.number(),
        action: action(level),
        applied: false,
        dying_before,
        dying_after: None,
        released: None,
        canary_before_ms,
        canary_after_ms: None,
        worked: None,
        write_ms: None,
        settle_ms: None,
        verdict: format!(
            "dry run, nothing written: pass --yes to write {} to {DROP_CACHES}",
            level.number()
        ),
    }
}

/// The canary to re-time after the write.
#[derive(Debug, Clone)]
pub struct CanaryAgain<'a> {
    pub path: &'a Path,
    pub cpu: Option<u32>,
    pub before_ms: f64,
}

/// Counts the dying memory cgroups, writes `level` and counts again (the
/// demo's remediation step: no canary).
pub fn apply_counted(host: &Host, level: Level) -> Result<Remediation> {
    let dying_before = crate::report::memory_count(host)?.dying;
    apply(host, level, dying_before, None)
}

/// The remediation step of a `netstall cgroups` report: with `apply`, writes
/// `level` and re-counts (re-reading the report's canary, if it has one);
/// without, only says what it would do.
pub fn for_report(
    host: &Host,
    report: &crate::report::Report,
    level: Level,
    apply_it: bool,
) -> Result<Remediation> {
    let dying_before = crate::report::memory_count(host)?.dying;
    if !apply_it {
        return Ok(plan(
            level,
            dying_before,
            report.canary.as_ref().map(|c| c.read_ms),
        ));
    }
    let again = report.canary.as_ref().map(|c| CanaryAgain {
        path: &c.path,
        cpu: c.cpu,
        before_ms: c.read_ms,
    });
    apply(host, level, dying_before, again)
}

/// Writes `level` to drop_caches on the live host, waits for the count of
/// dying memcgs to settle, re-times the canary if given, and judges.
pub fn apply(
    host: &Host,
    level: Level,
    dying_before: u64,
    canary_again: Option<CanaryAgain>,
) -> Result<Remediation> {
    if !host.is_live() {
        bail!("remediation writes drop_caches: only on the live host");
    }
    netstall_core::privilege::require_root("cgroups --remediate")?;
    let started = Instant::now();
    // SAFETY: sync has no preconditions; it flushes dirty data so the
    // drop below can free it.
    unsafe { libc::sync() };
    std::fs::write(DROP_CACHES, level.number().to_string())
        .with_context(|| format!("cannot write {DROP_CACHES}"))?;
    let write_ms = started.elapsed().as_secs_f64() * 1e3;

    let settle_started = Instant::now();
    let dying_after = settle(
        || Ok(crate::report::memory_count(host)?.dying),
        std::thread::sleep,
    )?;
    let settle_ms = settle_started.elapsed().as_secs_f64() * 1e3;

    let canary_after_ms = match &canary_again {
        Some(c) => Some(canary::read_once(host, c.path, c.cpu)?.read_ms),
        None => None,
    };
    let canary_before_ms = canary_again.as_ref().map(|c| c.before_ms);
    let (worked, verdict) = judge(
        level,
        dying_before,
        dying_after,
        canary_before_ms.zip(canary_after_ms),
    );
    Ok(Remediation {
        level: level.number(),
        action: action(level),
        applied: true,
        dying_before,
        dying_after: Some(dying_after),
        released: Some(dying_before.saturating_sub(dying_after)),
        canary_before_ms,
        canary_after_ms,
        worked,
        write_ms: Some(write_ms),
        settle_ms: Some(settle_ms),
        verdict,
    })
}

/// Time between counts while the kernel frees released cgroups (RCU, workqueues).
const SETTLE_POLL: Duration = Duration::from_millis(250);
/// The count is settled when it has not gone down for this long...
const SETTLE_STABLE: Duration = Duration::from_secs(2);
/// ...or after this long in any case.
const SETTLE_MAX: Duration = Duration::from_secs(20);

/// Counts until the count stops going down; returns the last count.
/// `count` and `sleep` are injected so the loop is tested without a kernel.
pub fn settle(
    mut count: impl FnMut() -> Result<u64>,
    mut sleep: impl FnMut(Duration),
) -> Result<u64> {
    let mut last = count()?;
    let mut waited = Duration::ZERO;
    let mut unchanged_for = Duration::ZERO;
    while waited < SETTLE_MAX && unchanged_for < SETTLE_STABLE {
        sleep(SETTLE_POLL);
        waited += SETTLE_POLL;
        let now = count()?;
        if now < last {
            unchanged_for = Duration::ZERO;
        } else {
            unchanged_for += SETTLE_POLL;
        }
        last = now;
    }
    Ok(last)
}

/// Whether it worked, and the sentence saying what happened.
pub fn judge(
    level: Level,
    before: u64,
    after: u64,
    canary_ms: Option<(f64, f64)>,
) -> (Option<bool>, String) {
    let canary = canary_ms
        .map(|(b, a)| format!("; memory.stat read {b:.2} ms before, {a:.2} ms after"))
        .unwrap_or_default();
    if before == 0 {
        return (
            None,
            format!(
                "level {}: there were no dying memory cgroups to release ({after} now){canary}",
                level.number()
            ),
        );
    }
    let released = before.saturating_sub(after);
    let share = released as f64 / before as f64;
    let worked = share >= WORKED_FRACTION;
    let outcome = if worked {
        "it worked".to_owned()
    } else {
        format!("it did not work here; {}", level.next())
    };
    (
        Some(worked),
        format!(
            "level {} released {released} of {before} dying memory cgroups ({:.1}%, {after} left): {outcome}{canary}",
            level.number(),
            share * 100.0
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_bad_ones_are_refused() {
        assert_eq!(Level::parse("1").unwrap(), Level::PageCache);
        assert_eq!(Level::parse("3").unwrap().number(), 3);
        let err = Level::parse("4").unwrap_err().to_string();
        assert!(err.contains("1, 2 or 3"), "{err}");
    }

    #[test]
    fn a_plan_writes_nothing_and_says_how() {
        let plan = plan(Level::PageCache, 12_000, Some(24.0));
        assert!(!plan.applied);
        assert_eq!(plan.dying_after, None);
        assert_eq!(plan.worked, None);
        assert!(plan.verdict.contains("--yes"));
        assert_eq!(
            plan.action,
            "sync; echo 1 > /proc/sys/vm/drop_caches (free clean page cache)"
        );
    }

    #[test]
    fn applying_away_from_the_live_host_is_refused() {
        let err = apply(&Host::at("/nonexistent"), Level::PageCache, 10, None).unwrap_err();
        assert!(err.to_string().contains("live host"));
    }

    #[test]
    fn the_judge_reports_what_happened() {
        let (worked, verdict) = judge(Level::PageCache, 12_000, 40, Some((24.0, 0.02)));
        assert_eq!(worked, Some(true));
        assert!(verdict.contains("released 11960 of 12000"), "{verdict}");
        assert!(
            verdict.contains("24.00 ms before, 0.02 ms after"),
            "{verdict}"
        );

        let (worked, verdict) = judge(Level::Slab, 12_000, 11_990, None);
        assert_eq!(worked, Some(false));
        assert!(verdict.contains("did not work"), "{verdict}");
        assert!(verdict.contains("try level 1"), "{verdict}");

        // 89% is not 90%.
        assert_eq!(judge(Level::Both, 1000, 110, None).0, Some(false));
        assert_eq!(judge(Level::PageCache, 0, 0, None).0, None);
    }

    #[test]
    fn settling_waits_while_the_count_falls_and_stops_when_flat() {
        let mut counts = vec![
            12_000, 9_000, 4_000, 100, 60, 60, 60, 60, 60, 60, 60, 60, 60,
        ]
        .into_iter();
        let mut slept = Duration::ZERO;
        let after = settle(|| Ok(counts.next().unwrap_or(60)), |d| slept += d).unwrap();
        assert_eq!(after, 60);
        // 4 falling polls, then 2 s flat.
        assert_eq!(slept, SETTLE_POLL * 4 + SETTLE_STABLE);

        let mut slept = Duration::ZERO;
        let mut n = 100_000u64;
        let after = settle(
            || {
                n -= 1;
                Ok(n)
            },
            |d| slept += d,
        )
        .unwrap();
        assert_eq!(slept, SETTLE_MAX, "bounded even if it keeps falling");
        assert!(after < 100_000);
    }
}
