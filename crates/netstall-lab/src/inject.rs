//! Network fault injectors beside the story's: `lab drops` drops a share of
//! the packets forwarded to the lab's pod, at random, with an nftables rule
//! in node2's namespace. Bounded and reversible: the rule lives in its own
//! table, removed when the injection ends (and with the namespace by `lab down`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
pub use netstall_events::lab::LabDrops;

use crate::command::{run, run_with_input};
use crate::topology::{self, Role};

/// The table the rule lives in.
const TABLE: &str = "netstall_drops";
/// The pod's address (`topology`'s layout).
const POD_ADDR: &str = "10.244.2.10";
/// An injection longer than this is a mistake, not an experiment.
pub const MAX_DROPS_FOR: Duration = Duration::from_secs(3600);

/// A random-drop rule in node2's forward path; removed when dropped.
pub struct DropRule {
    netns: String,
}

impl DropRule {
    /// Drops `rate_pct`% (1–100) of the packets node2 forwards to the pod.
    pub fn add(prefix: &str, rate_pct: u32) -> Result<Self> {
        if !(1..=100).contains(&rate_pct) {
            bail!("--rate must be a percentage from 1 to 100, not {rate_pct}");
        }
        netstall_core::privilege::require_root("lab drops")?;
        if !topology::exists(prefix) {
            bail!("no lab '{prefix}': run `netstall lab up --prefix {prefix}` first");
        }
        let netns = topology::netns_name(prefix, Role::Node2);
        // numgen draws 0..99 per packet: below the rate, the packet is dropped.
        let rules = format!(
            "table inet {TABLE} {{\n  chain forward {{ type filter hook forward priority -10; policy accept;\n    ip daddr {POD_ADDR} numgen random mod 100 < {rate_pct} drop\n  }}\n}}\n"
        );
        // A table left by an injection that was killed is replaced.
        let _ = run(
            "ip",
            &[
                "netns", "exec", &netns, "nft", "delete", "table", "inet", TABLE,
            ],
        );
        run_with_input(
            "ip",
            &["netns", "exec", &netns, "nft", "-f", "-"],
            Some(&rules),
        )
        .context("adding the drop rule with nftables")?;
        Ok(Self { netns })
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }
}

impl Drop for DropRule {
    fn drop(&mut self) {
        let _ = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.netns,
                "nft",
                "delete",
                "table",
                "inet",
                TABLE,
            ],
        );
    }
}

/// `lab drops`: drops `rate_pct`% of the packets to the pod for `duration`
/// (or until Ctrl-C), then removes the rule.
pub fn drops_printed(
    prefix: &str,
    rate_pct: u32,
    duration: Duration,
    out: Output,
) -> Result<LabDrops> {
    if duration > MAX_DROPS_FOR {
        bail!("-w must be at most {}s", MAX_DROPS_FOR.as_secs());
    }
    let shutdown = Shutdown::on_signals()?;
    let rule = DropRule::add(prefix, rate_pct)?;
    let start_ns = netstall_core::clock::realtime_ns();
    out.progress(format!(
        "lab '{prefix}': dropping {rate_pct}% of the packets to the pod {POD_ADDR} for {duration:?} (nftables in {}); Ctrl-C ends early",
        rule.netns()
    ));
    let deadline = Instant::now() + duration;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if shutdown.wait(left.min(Duration::from_millis(200))) {
            break;
        }
    }
    let report = LabDrops {
        prefix: prefix.to_owned(),
        netns: rule.netns().to_owned(),
        rate_pct,
        start_ns,
        end_ns: netstall_core::clock::realtime_ns(),
    };
    drop(rule);
    out.emit(report.clone());
    Ok(report)
}
