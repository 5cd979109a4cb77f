//! `/proc/cgroups`: per controller, its v1 hierarchy id and how many cgroups
//! the kernel holds (live and dying alike).

use anyhow::{Context, Result};

/// One line of `/proc/cgroups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerLine {
    pub subsys: String,
    /// 0 when the controller is on cgroup v2 or unmounted.
    pub hierarchy: u32,
    pub num_cgroups: u64,
    pub enabled: bool,
}

/// Parses `/proc/cgroups` text; malformed lines are an error naming the line.
pub fn parse(text: &str) -> Result<Vec<ControllerLine>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bad = || format!("/proc/cgroups line {}: unexpected format: {line:?}", i + 1);
            if fields.len() < 4 {
                anyhow::bail!(bad());
            }
            Ok(ControllerLine {
                subsys: fields[0].to_owned(),
                hierarchy: fields[1].parse().with_context(bad)?,
                num_cgroups: fields[2].parse().with_context(bad)?,
                enabled: fields[3] == "1",
            })
        })
        .collect()
}

/// Reads and parses this host's `/proc/cgroups`.
pub fn read() -> Result<Vec<ControllerLine>> {
    let text = std::fs::read_to_string("/proc/cgroups").context("cannot read /proc/cgroups")?;
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_table() {
        let table = parse(
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\nmemory\t4\t12046\t1\n",
        )
        .unwrap();
        assert_eq!(table[1].subsys, "memory");
        assert_eq!(table[1].num_cgroups, 12046);
        assert!(parse("memory x 1 1\n")
            .unwrap_err()
            .to_string()
            .contains("line 1"));
    }
}
