//! CPU numbers and lists (`0`, `0-3,6`) checked against the CPUs that exist.

use anyhow::{bail, Context, Result};

/// CPUs that are online now, from `/sys/devices/system/cpu/online`.
pub fn online() -> Result<Vec<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .context("cannot read /sys/devices/system/cpu/online")?;
    parse_list(text.trim())
}

/// Parses a kernel-style CPU list: `0`, `0-3`, `0,2-3`. Sorted, without duplicates.
pub fn parse_list(text: &str) -> Result<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim) {
        let range = match part.split_once('-') {
            Some((a, b)) => parse_one(a)?..=parse_one(b)?,
            None => {
                let n = parse_one(part)?;
                n..=n
            }
        };
        if range.is_empty() {
            bail!("invalid CPU range '{part}'");
        }
        cpus.extend(range);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// The largest CPU number Linux supports (`NR_CPUS` is at most 8192): a
/// list is checked against it before a range is built, so `0-4294967295`
/// is an error at once, not billions of entries.
pub const MAX_CPU: u32 = 8191;

fn parse_one(text: &str) -> Result<u32> {
    let n: u32 = text
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid CPU number '{text}'"))?;
    if n > MAX_CPU {
        bail!("CPU {n} is beyond the largest CPU number Linux supports ({MAX_CPU})");
    }
    Ok(n)
}

/// Parses a CPU list and checks every CPU is online.
pub fn parse_online_list(text: &str) -> Result<Vec<u32>> {
    let cpus = parse_list(text)?;
    check_online(&cpus)?;
    Ok(cpus)
}

/// Fails with a one-line reason naming the first CPU that is not online.
pub fn check_online(cpus: &[u32]) -> Result<()> {
    let online = online()?;
    if let Some(missing) = cpus.iter().find(|c| !online.contains(c)) {
        bail!(
            "CPU {missing} does not exist or is offline (online CPUs: {})",
            format_list(&online)
        );
    }
    Ok(())
}

/// The hexadecimal mask the kernel takes in `rps_cpus` and affinity files.
pub fn mask_hex(cpus: &[u32]) -> String {
    let mut words = vec![0u32; cpus.iter().max().map_or(1, |m| *m as usize / 32 + 1)];
    for &c in cpus {
        words[c as usize / 32] |= 1 << (c % 32);
    }
    words
        .iter()
        .rev()
        .map(|w| format!("{w:08x}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub use netstall_events::cpu::format_list;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_format() {
        assert_eq!(parse_list("0").unwrap(), vec![0]);
        assert_eq!(parse_list("3,0-1").unwrap(), vec![0, 1, 3]);
        assert_eq!(format_list(&[0, 1, 2, 5]), "0-2,5");
        assert!(parse_list("2-1").is_err());
        assert!(parse_list("x").is_err());
    }

    #[test]
    fn a_huge_range_is_refused_before_it_is_built() {
        let started = std::time::Instant::now();
        let err = parse_list("0-4294967295").unwrap_err().to_string();
        assert_eq!(
            err,
            "CPU 4294967295 is beyond the largest CPU number Linux supports (8191)"
        );
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert_eq!(parse_list("8191").unwrap(), vec![8191]);
    }

    #[test]
    fn masks_are_kernel_style() {
        assert_eq!(mask_hex(&[1]), "00000002");
        assert_eq!(mask_hex(&[0, 1]), "00000003");
        assert_eq!(mask_hex(&[33]), "00000002,00000000");
    }

    #[test]
    fn a_cpu_that_does_not_exist_is_named() {
        let err = parse_online_list("4095").unwrap_err().to_string();
        assert!(err.contains("CPU 4095 does not exist"), "{err}");
    }
}
