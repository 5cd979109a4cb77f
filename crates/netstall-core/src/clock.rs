//! One time base for every event: CLOCK_REALTIME nanoseconds.
//!
//! Kernel events carry `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) while socket
//! timestamps are CLOCK_REALTIME. Sources convert once, with a [`ClockOffset`]
//! sampled at start, so a probe episode lines up with a kernel stall.

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

/// REALTIME − MONOTONIC, sampled once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    realtime_minus_monotonic_ns: i128,
}

impl ClockOffset {
    /// Samples the offset, taking the tightest of a few bracketed readings so
    /// a preemption between the two clock reads does not skew it.
    pub fn sample() -> Self {
        let mut best: Option<(u64, i128)> = None;
        for _ in 0..5 {
            let m0 = monotonic_ns();
            let r = realtime_ns();
            let m1 = monotonic_ns();
            let width = m1 - m0;
            let offset = r as i128 - (m0 + width / 2) as i128;
            if best.is_none_or(|(w, _)| width < w) {
                best = Some((width, offset));
            }
        }
        Self {
            realtime_minus_monotonic_ns: best.expect("sampled at least once").1,
        }
    }

    /// Converts a CLOCK_MONOTONIC timestamp to CLOCK_REALTIME.
    pub fn to_realtime(&self, monotonic_ns: u64) -> u64 {
        (monotonic_ns as i128 + self.realtime_minus_monotonic_ns).max(0) as u64
    }
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
}
