//! The network causes beside the story's, as counters the kernel keeps
//! anyway (`netstall-netstat`): packets dropped from full CPU input
//! backlogs and NET_RX's budget squeezes (per-CPU softnet_stat, summed:
//! one series each however many CPUs), TCP retransmits and listen-queue
//! overflows (SNMP), conntrack drops. Each is a cause `netstall doctor`
//! names (`backlog-overflow`, `tcp-retransmits`, `conntrack-drops`);
//! here they are the fleet's trend of them, five series per node.
//!
//! Read at scrape time from a handful of small procfs files generated from
//! per-CPU counters (tens of µs, no lock a packet waits for, never a
//! cgroup file), never in the background: an idle agent does not wake up
//! for them. The SNMP counters are the agent's network namespace's (the
//! host's with `hostNetwork`, as deployed); softnet_stat is the machine's.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use netstall_netstat::{Files, Snapshot};

/// Counter name (without `_total`), help, value in a snapshot.
type Family = (&'static str, &'static str, fn(&Snapshot) -> u64);

const FAMILIES: [Family; 5] = [
    (
        "netstall_softnet_dropped",
        "Packets dropped because a CPU's input backlog was full (softnet_stat, all CPUs; net.core.netdev_max_backlog)",
        |s| s.softnet.iter().map(|c| c.dropped).sum(),
    ),
    (
        "netstall_softnet_time_squeeze",
        "Times NET_RX stopped with work left, out of budget (softnet_stat time_squeeze, all CPUs; net.core.netdev_budget)",
        |s| s.softnet.iter().map(|c| c.time_squeeze).sum(),
    ),
    (
        "netstall_tcp_retransmits",
        "TCP segments retransmitted (Tcp.RetransSegs of the agent's network namespace)",
        |s| s.snmp.get("Tcp.RetransSegs").copied().unwrap_or(0),
    ),
    (
        "netstall_tcp_listen_overflows",
        "Connections dropped because a listen queue was full (TcpExt.ListenOverflows of the agent's network namespace)",
        |s| s.snmp.get("TcpExt.ListenOverflows").copied().unwrap_or(0),
    ),
    (
        "netstall_conntrack_drops",
        "Packets conntrack dropped: insert races (the 5 s DNS delays) and a full table (insert_failed + drop + early_drop; 0 without nf_conntrack)",
        |s| {
            s.conntrack.as_ref().map_or(0, |c| {
                ["insert_failed", "drop", "early_drop"]
                    .iter()
                    .map(|k| c.get(*k).copied().unwrap_or(0))
                    .sum()
            })
        },
    ),
];

/// Encodes [`FAMILIES`] from the files at each scrape.
#[derive(Debug)]
pub struct NetCollector {
    files: Files,
}

impl Default for NetCollector {
    fn default() -> Self {
        Self {
            files: Files::live(),
        }
    }
}

impl NetCollector {
    /// Reads recorded files instead of /proc/net (tests).
    pub fn from(files: Files) -> Self {
        Self { files }
    }
}

impl Collector for NetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Unreadable files: the series are absent (unknown is not zero).
        let Ok(snapshot) = self.files.snapshot(0) else {
            return Ok(());
        };
        for (name, help, value) in FAMILIES {
            let counter = ConstCounter::new(value(&snapshot));
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn counters_come_from_the_recorded_files_summed_over_cpus() {
        let dir = std::env::temp_dir().join(format!("netstall-netcounters-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("stat")).unwrap();
        // Two CPUs: dropped 0x10 + 0x5, time_squeeze 0x2 + 0x1.
        std::fs::write(
            dir.join("softnet_stat"),
            "00000100 00000010 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n\
             00000200 00000005 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("netstat"),
            "TcpExt: ListenOverflows ListenDrops\nTcpExt: 7 7\n",
        )
        .unwrap();
        std::fs::write(dir.join("snmp"), "Tcp: RetransSegs InErrs\nTcp: 42 0\n").unwrap();
        std::fs::write(
            dir.join("stat/nf_conntrack"),
            "entries insert_failed drop early_drop\n00000003 00000001 00000002 00000000\n00000003 00000001 00000000 00000004\n",
        )
        .unwrap();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(NetCollector::from(Files { root: dir.clone() })));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "netstall_softnet_dropped_total 21",
            "netstall_softnet_time_squeeze_total 3",
            "netstall_tcp_retransmits_total 42",
            "netstall_tcp_listen_overflows_total 7",
            "netstall_conntrack_drops_total 8",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        // Without nf_conntrack: no conntrack drops, not an unknown.
        std::fs::remove_file(dir.join("stat/nf_conntrack")).unwrap();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("netstall_conntrack_drops_total 0"), "{text}");
        // Unreadable files: absent.
        std::fs::remove_file(dir.join("softnet_stat")).unwrap();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("netstall_softnet"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
