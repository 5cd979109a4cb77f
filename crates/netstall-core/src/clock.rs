//! One time base for every event: CLOCK_REALTIME nanoseconds.
//!
//! Kernel events carry `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) while socket
//! timestamps are CLOCK_REALTIME. Sources convert once, with a [`ClockOffset`],
//! so a probe episode lines up with a kernel stall. The offset is sampled
//! again every [`RESAMPLE_EVERY_NS`]: an agent runs for weeks, and a step of
//! the wall clock (NTP, an operator) must not shift every later event
//! against the health window.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_REALTIME now, in nanoseconds.
pub fn realtime_ns() -> u64 {
    read(libc::CLOCK_REALTIME)
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}

/// How often the REALTIME − MONOTONIC offset is sampled again.
pub const RESAMPLE_EVERY_NS: u64 = 10_000_000_000;

/// The process's current offset, shared by every [`ClockOffset`].
static OFFSET_NS: AtomicI64 = AtomicI64::new(0);
/// When (MONOTONIC ns) it was sampled; 0 before the first time.
static SAMPLED_AT_NS: AtomicU64 = AtomicU64::new(0);

/// REALTIME − MONOTONIC: sampled when made, and again whenever a
/// conversion finds the last sample older than [`RESAMPLE_EVERY_NS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    _shared: (),
}

impl ClockOffset {
    /// Samples the offset now.
    pub fn sample() -> Self {
        resample();
        Self { _shared: () }
    }

    /// REALTIME − MONOTONIC as the last conversion used it (what a
    /// recording of monotonic times keeps to convert them later).
    pub fn offset_ns(&self) -> i64 {
        OFFSET_NS.load(Ordering::Relaxed)
    }

    /// Converts a CLOCK_MONOTONIC timestamp to CLOCK_REALTIME.
    pub fn to_realtime(&self, monotonic_ns: u64) -> u64 {
        let now = read(libc::CLOCK_MONOTONIC);
        if now.saturating_sub(SAMPLED_AT_NS.load(Ordering::Relaxed)) >= RESAMPLE_EVERY_NS {
            resample();
        }
        (monotonic_ns as i128 + OFFSET_NS.load(Ordering::Relaxed) as i128).max(0) as u64
    }
}

/// Samples the offset, taking the tightest of a few bracketed readings so
/// a preemption between the two clock reads does not skew it.
fn resample() {
    let mut best: Option<(u64, i64)> = None;
    for _ in 0..5 {
        let m0 = monotonic_ns();
        let r = realtime_ns();
        let m1 = monotonic_ns();
        let width = m1 - m0;
        let offset = r as i64 - (m0 + width / 2) as i64;
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, offset));
        }
    }
    OFFSET_NS.store(best.expect("sampled at least once").1, Ordering::Relaxed);
    SAMPLED_AT_NS.store(monotonic_ns().max(1), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converted_monotonic_now_is_realtime_now() {
        let offset = ClockOffset::sample();
        let converted = offset.to_realtime(monotonic_ns());
        let real = realtime_ns();
        assert!(
            real.abs_diff(converted) < 5_000_000,
            "{real} vs {converted}"
        );
    }

    #[test]
    fn a_stale_offset_is_sampled_again() {
        let offset = ClockOffset::sample();
        // As if the last sample were older than the limit, and wrong (a
        // wall-clock step since): the next conversion samples again.
        SAMPLED_AT_NS.store(1, Ordering::Relaxed);
        OFFSET_NS.fetch_add(3_600_000_000_000, Ordering::Relaxed);
        let converted = offset.to_realtime(monotonic_ns());
        assert!(realtime_ns().abs_diff(converted) < 5_000_000);
        assert!(SAMPLED_AT_NS.load(Ordering::Relaxed) > 1);
    }
}
