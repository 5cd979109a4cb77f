//! The network counters the kernel keeps anyway, read at the start and the
//! end of a window: per-CPU `/proc/net/softnet_stat` (backlog drops,
//! `time_squeeze`), the SNMP counters of `/proc/net/netstat` and
//! `/proc/net/snmp` (listen overflows, backlog drops, retransmits), and
//! `/proc/net/stat/nf_conntrack` when conntrack is loaded.
//!
//! Cheap and harmless on a production node: a handful of small procfs
//! files, generated from per-CPU counters without locks that packets wait
//! for (never a cgroup file). They are netstall's own network namespace's:
//! a pod's listen queue overflows show in the pod's namespace, not the
//! host's (the drop counter, `netstall_kernel::drops`, sees every netns).
//!
//! The parsers are pure functions of the files' text.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
pub use netstall_events::net::{ConntrackDelta, NetCounters, SoftnetDelta};

/// One CPU's softnet_stat line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Softnet {
    pub cpu: u32,
    pub processed: u64,
    pub dropped: u64,
    pub time_squeeze: u64,
    pub flow_limit: u64,
}

/// Parses `/proc/net/softnet_stat`: a line per online CPU, hex columns
/// (processed, dropped, time_squeeze, 0 × 6, received_rps, flow_limit_count,
/// and since 5.10 backlog length and the CPU's number). Older kernels have
/// no CPU column: the line's index stands for it (right unless CPUs are offline).
pub fn parse_softnet(text: &str) -> Result<Vec<Softnet>> {
    let mut cpus = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cols = line
            .split_whitespace()
            .map(|c| u64::from_str_radix(c, 16))
            .collect::<Result<Vec<u64>, _>>()
            .with_context(|| format!("softnet_stat line {}: not hex columns", index + 1))?;
        if cols.len() < 11 {
            bail!(
                "softnet_stat line {}: {} columns, expected at least 11",
                index + 1,
                cols.len()
            );
        }
        let cpu = cols.get(12).map_or(index as u64, |c| *c);
        cpus.push(Softnet {
            cpu: u32::try_from(cpu).context("softnet_stat: CPU number out of range")?,
            processed: cols[0],
            dropped: cols[1],
            time_squeeze: cols[2],
            flow_limit: cols[10],
        });
    }
    Ok(cpus)
}

/// Parses `/proc/net/netstat` or `/proc/net/snmp`: pairs of lines, the
/// names then the values of one group, into `Group.Name` → value.
/// Negative values (`Tcp.MaxConn` is -1) are left out: they are settings.
pub fn parse_snmp(text: &str) -> Result<BTreeMap<String, u64>> {
    let mut counters = BTreeMap::new();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(names) = lines.next() {
        let values = lines
            .next()
            .with_context(|| format!("snmp: a names line without values: {names:.40}"))?;
        let (group, names) = names
            .split_once(':')
            .with_context(|| format!("snmp: no `Group:` in {names:.40}"))?;
        let (group2, values) = values
            .split_once(':')
            .with_context(|| format!("snmp: no `Group:` in {values:.40}"))?;
        if group != group2 {
            bail!("snmp: names of {group} followed by values of {group2}");
        }
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if names.len() != values.len() {
            bail!(
                "snmp: {group} has {} names and {} values",
                names.len(),
                values.len()
            );
        }
        for (name, value) in names.iter().zip(values) {
            let value: i64 = value
                .parse()
                .with_context(|| format!("snmp: {group}.{name} is not a number: {value}"))?;
            if let Ok(value) = u64::try_from(value) {
                counters.insert(format!("{group}.{name}"), value);
            }
        }
    }
    Ok(counters)
}

/// Parses `/proc/net/stat/nf_conntrack`: a header of names, then a line of
/// hex counters per CPU; the counters summed over CPUs (`entries`, a
/// global gauge repeated on every line, taken once).
pub fn parse_conntrack(text: &str) -> Result<HashMap<String, u64>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .context("nf_conntrack stat: empty")?
        .split_whitespace()
        .collect();
    let mut sums: HashMap<String, u64> = HashMap::new();
    for (index, line) in lines.enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() != header.len() {
            bail!(
                "nf_conntrack stat line {}: {} columns for {} names",
                index + 2,
                cols.len(),
                header.len()
            );
        }
        for (name, col) in header.iter().zip(cols) {
            let value = u64::from_str_radix(col, 16)
                .with_context(|| format!("nf_conntrack stat: {name} is not hex: {col}"))?;
            let sum = sums.entry((*name).to_owned()).or_default();
            if *name == "entries" {
                *sum = value;
            } else {
                *sum += value;
            }
        }
    }
    Ok(sums)
}

/// The SNMP counters worth reporting when they grow: drops, overflows and
/// retransmits. Anything else (octets, segments) grows on every node.
pub const WATCHED: &[&str] = &[
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPBacklogDrop",
    "TcpExt.TCPRcvQDrop",
    "TcpExt.PFMemallocDrop",
    "TcpExt.TCPTimeouts",
    "TcpExt.TCPSynRetrans",
    "TcpExt.TCPLostRetransmit",
    "TcpExt.TCPReqQFullDrop",
    "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.TCPZeroWindowDrop",
    "Tcp.RetransSegs",
    "Tcp.InErrs",
    "Ip.InDiscards",
    "Udp.RcvbufErrors",
    "Udp.SndbufErrors",
    "Udp.InErrors",
];

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub at_ns: u64,
    pub softnet: Vec<Softnet>,
    pub snmp: BTreeMap<String, u64>,
    /// `None`: nf_conntrack is not loaded (its stat file is missing).
    pub conntrack: Option<HashMap<String, u64>>,
}

/// Where the files are: `/proc/net` on a live node, a directory of
/// recorded files in tests.
#[derive(Debug, Clone)]
pub struct Files {
    pub root: PathBuf,
}

impl Files {
    pub fn live() -> Self {
        Self {
            root: PathBuf::from("/proc/net"),
        }
    }

    fn read(&self, name: &str) -> Result<Option<String>> {
        let path = self.root.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// Reads every file now. softnet_stat, netstat and snmp must be there;
    /// nf_conntrack's file only when it is loaded.
    pub fn snapshot(&self, at_ns: u64) -> Result<Snapshot> {
        let need = |name: &str| -> Result<String> {
            self.read(name)?
                .with_context(|| format!("{} is missing", self.root.join(name).display()))
        };
        let mut snmp = parse_snmp(&need("netstat")?).context("/proc/net/netstat")?;
        snmp.extend(parse_snmp(&need("snmp")?).context("/proc/net/snmp")?);
        Ok(Snapshot {
            at_ns,
            softnet: parse_softnet(&need("softnet_stat")?)?,
            snmp,
            conntrack: self
                .read("stat/nf_conntrack")?
                .map(|t| parse_conntrack(&t))
                .transpose()?,
        })
    }
}

/// Reads the live counters now.
pub fn snapshot_now(at_ns: u64) -> Result<Snapshot> {
    Files::live().snapshot(at_ns)
}

/// What grew between two snapshots: CPUs with backlog drops or squeezes,
/// the [`WATCHED`] SNMP counters that grew, conntrack's trouble counters.
/// A counter that went down (a CPU came online, a wrap) counts as 0. Pure.
pub fn delta(before: &Snapshot, after: &Snapshot) -> NetCounters {
    let softnet = after
        .softnet
        .iter()
        .filter_map(|now| {
            let then = before
                .softnet
                .iter()
                .find(|s| s.cpu == now.cpu)
                .copied()
                .unwrap_or(Softnet {
                    cpu: now.cpu,
                    ..Softnet::default()
                });
            let d = SoftnetDelta {
                cpu: now.cpu,
                processed: now.processed.saturating_sub(then.processed),
                dropped: now.dropped.saturating_sub(then.dropped),
                time_squeeze: now.time_squeeze.saturating_sub(then.time_squeeze),
                flow_limit: now.flow_limit.saturating_sub(then.flow_limit),
            };
            (d.dropped + d.time_squeeze + d.flow_limit > 0).then_some(d)
        })
        .collect();
    let snmp = WATCHED
        .iter()
        .filter_map(|name| {
            let grew = after
                .snmp
                .get(*name)?
                .saturating_sub(before.snmp.get(*name).copied().unwrap_or(0));
            (grew > 0).then(|| ((*name).to_owned(), grew))
        })
        .collect();
    let conntrack = after.conntrack.as_ref().map(|now| {
        let empty = HashMap::new();
        let then = before.conntrack.as_ref().unwrap_or(&empty);
        let grew = |name: &str| {
            now.get(name)
                .copied()
                .unwrap_or(0)
                .saturating_sub(then.get(name).copied().unwrap_or(0))
        };
        ConntrackDelta {
            entries: now.get("entries").copied().unwrap_or(0),
            insert_failed: grew("insert_failed"),
            drop: grew("drop"),
            early_drop: grew("early_drop"),
            invalid: grew("invalid"),
            clash_resolve: grew("clashres"),
        }
    });
    NetCounters {
        start_ns: before.at_ns,
        end_ns: after.at_ns,
        softnet,
        snmp,
        conntrack,
    }
}

/// Recorded files for tests: `tests/data` of this crate.
pub fn recorded(dir: &Path) -> Files {
    Files {
        root: dir.to_path_buf(),
    }
}
