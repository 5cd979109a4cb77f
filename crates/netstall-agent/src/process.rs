//! The agent's own footprint as the standard `process_*` metrics, so the
//! promise (≤ 0.25% of a CPU, ≤ 20 MB resident) can be checked from
//! Prometheus: `rate(process_cpu_seconds_total[5m])` and
//! `process_resident_memory_bytes`, named as every Prometheus client names them.
//!
//! Only these two: the node's series budget (≤ 50) has room for them and no
//! more. A restart shows as a counter reset of `process_cpu_seconds_total`
//! (`resets(...)`), so `process_start_time_seconds` is not needed for that.
//!
//! Read at scrape time from one file, /proc/self/stat (a few µs), never in
//! the background: an idle agent must not wake up for its own metrics.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// CPU time and resident memory of a process, from its `stat` file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

/// Parses /proc/PID/stat (proc(5)): utime and stime (fields 14, 15) in
/// clock ticks, rss (field 24) in pages. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(text: &str, ticks_per_second: u64, page_size: u64) -> Option<ProcessUsage> {
    let after_comm = &text[text.rfind(')')? + 1..];
    // after_comm's first field is field 3 (state).
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    // Saturating: no real counter gets there, but a parser of a file must
    // not panic on any text (found by the proc_stat fuzz target).
    let ticks = field(14)?.saturating_add(field(15)?);
    Some(ProcessUsage {
        cpu_seconds: ticks as f64 / ticks_per_second.max(1) as f64,
        resident_bytes: field(24)?.saturating_mul(page_size),
    })
}

/// Encodes `process_cpu_seconds_total` and `process_resident_memory_bytes`
/// of this process at each scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    ticks_per_second: u64,
    page_size: u64,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        // SAFETY: sysconf has no preconditions; it returns -1 on error.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Self {
            ticks_per_second: u64::try_from(ticks).unwrap_or(100),
            page_size: u64::try_from(page).unwrap_or(4096),
        }
    }
}

impl ProcessCollector {
    /// This process's usage now; `None` if /proc cannot be read.
    pub fn usage(&self) -> Option<ProcessUsage> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        parse_stat(&text, self.ticks_per_second, self.page_size)
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Without /proc the series are absent: unknown is not zero.
        let Some(usage) = self.usage() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(usage.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(usage.resident_bytes as i64);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            rss.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        // A recorded line of the agent, its comm made hostile: spaces and ')'.
        let line = "4242 (net stall) (x)) S 1 4242 4242 0 -1 4194560 1790 0 0 0 \
                    37 12 0 0 20 0 6 0 86213 31911936 2210 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        let usage = parse_stat(line, 100, 4096).unwrap();
        assert_eq!(usage.cpu_seconds, 0.49);
        assert_eq!(usage.resident_bytes, 2210 * 4096);
        assert_eq!(parse_stat("4242 (cut", 100, 4096), None);
        assert_eq!(parse_stat("4242 (short) S 1 2", 100, 4096), None);
    }

    /// The proc_stat fuzz target's crash: utime + stime and rss × page size
    /// beyond u64 overflowed (a panic in debug builds).
    #[test]
    fn huge_counters_saturate_instead_of_overflowing() {
        let max = u64::MAX;
        let line = format!("1 (x) S 1 1 1 0 -1 0 0 0 0 0 {max} {max} 0 0 20 0 1 0 1 1 {max} 0");
        let usage = parse_stat(&line, 100, 4096).unwrap();
        assert_eq!(usage.resident_bytes, u64::MAX);
        assert_eq!(usage.cpu_seconds, u64::MAX as f64 / 100.0);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let collector = ProcessCollector::default();
        // Burn CPU until the tick counter (1/100 s) shows some: a fixed burn
        // of wall time may get no CPU at all on a busy machine. Bounded.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let usage = loop {
            let burst = std::time::Instant::now();
            while burst.elapsed() < std::time::Duration::from_millis(20) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let usage = collector.usage().unwrap();
            if usage.cpu_seconds > 0.0 || start.elapsed() > std::time::Duration::from_secs(20) {
                break usage;
            }
        };
        assert!(usage.cpu_seconds > 0.0, "{usage:?}");
        // A test binary is more than 1 MiB resident and less than 1 GiB.
        const MIB: u64 = 1 << 20;
        assert!(
            (MIB..1024 * MIB).contains(&usage.resident_bytes),
            "{usage:?}"
        );
    }
}
