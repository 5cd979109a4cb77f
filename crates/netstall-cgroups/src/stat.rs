//! cgroup v2 `cgroup.stat`: how many cgroups (and controller states) live
//! and die at and beneath one cgroup.
//!
//! ```text
//! nr_descendants 41
//! nr_subsys_memory 42
//! nr_dying_descendants 1200
//! nr_dying_subsys_memory 1187
//! ```
//!
//! `nr_subsys_<c>` / `nr_dying_subsys_<c>` (kernel 6.11+) count the cgroup
//! itself too; `nr_descendants` / `nr_dying_descendants` do not. Older kernels
//! have only the two `nr_*descendants` lines.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

/// One parsed `cgroup.stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStat {
    /// Live cgroups beneath this one (itself excluded).
    pub nr_descendants: u64,
    /// Removed cgroups beneath this one the kernel still holds.
    pub nr_dying_descendants: u64,
    /// Per controller: live states at and beneath this cgroup.
    pub live_subsys: BTreeMap<String, u64>,
    /// Per controller: dying states at and beneath this cgroup.
    pub dying_subsys: BTreeMap<String, u64>,
}

impl CgroupStat {
    /// Dying states of `controller`, when this kernel reports them.
    pub fn dying_of(&self, controller: &str) -> Option<u64> {
        self.dying_subsys.get(controller).copied()
    }

    /// Live states of `controller`, when this kernel reports them.
    pub fn live_of(&self, controller: &str) -> Option<u64> {
        self.live_subsys.get(controller).copied()
    }
}

/// Parses `cgroup.stat` text. Unknown keys are ignored (the kernel adds
/// some now and then); a line that is not `key number` is an error.
pub fn parse(text: &str) -> Result<CgroupStat> {
    let mut stat = CgroupStat::default();
    let mut seen_descendants = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || format!("cgroup.stat line {}: unexpected format: {line:?}", i + 1);
        let (key, value) = line.split_once(' ').with_context(bad)?;
        let value: u64 = value.trim().parse().with_context(bad)?;
        if let Some(controller) = key.strip_prefix("nr_dying_subsys_") {
            stat.dying_subsys.insert(controller.to_owned(), value);
        } else if let Some(controller) = key.strip_prefix("nr_subsys_") {
            stat.live_subsys.insert(controller.to_owned(), value);
        } else if key == "nr_descendants" {
            stat.nr_descendants = value;
            seen_descendants = true;
        } else if key == "nr_dying_descendants" {
            stat.nr_dying_descendants = value;
        }
    }
    if !seen_descendants {
        bail!("cgroup.stat has no nr_descendants line (not a cgroup v2 cgroup.stat?)");
    }
    Ok(stat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_descendants_and_per_controller_counts() {
        let stat = parse(
            "nr_descendants 41\nnr_subsys_cpu 12\nnr_subsys_memory 42\n\
             nr_dying_descendants 1200\nnr_dying_subsys_cpu 0\nnr_dying_subsys_memory 1187\n",
        )
        .unwrap();
        assert_eq!(stat.nr_descendants, 41);
        assert_eq!(stat.nr_dying_descendants, 1200);
        assert_eq!(stat.dying_of("memory"), Some(1187));
        assert_eq!(stat.live_of("memory"), Some(42));
        assert_eq!(stat.dying_of("io"), None);
    }

    #[test]
    fn older_kernels_have_only_descendant_counts() {
        let stat = parse("nr_descendants 3\nnr_dying_descendants 7\n").unwrap();
        assert_eq!(stat.nr_dying_descendants, 7);
        assert!(stat.dying_subsys.is_empty());
    }

    #[test]
    fn malformed_text_is_an_error_naming_the_line() {
        let err = parse("nr_descendants 3\nnr_dying_descendants many\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(parse("memory 4 12046 1\n").is_err());
    }
}
