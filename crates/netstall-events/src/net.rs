//! Packet drops and TCP retransmits (`netstall trace --drops`, the doctor),
//! counted in the kernel and reported per interval, and the network
//! counters read over a window (softnet, SNMP, conntrack).
//!
//! All `*_ns` are CLOCK_REALTIME nanoseconds.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Packets the kernel dropped at one site during `start_ns..end_ns`: the
/// first and the last drop of the interval (`skb:kfree_skb`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketDrops {
    pub start_ns: u64,
    pub end_ns: u64,
    /// The drop reason as this kernel names it (`enum skb_drop_reason`
    /// without `SKB_DROP_REASON_`), e.g. `NETFILTER_DROP`.
    pub reason: String,
    /// The kernel function that freed the packet.
    pub location: String,
    pub cpu: u32,
    /// The packet's device, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
    /// The device's name, when it is in netstall's own network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The network namespace (inode number) of the device, else of the socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    pub count: u64,
}

impl PacketDrops {
    /// Where the packet was, for people: `eth0`, `ifindex 7 (netns 4026532461)`.
    pub fn device(&self) -> Option<String> {
        match (&self.interface, self.ifindex) {
            (Some(name), _) => Some(name.clone()),
            (None, Some(index)) => Some(match self.netns {
                Some(ns) => format!("ifindex {index} (netns {ns})"),
                None => format!("ifindex {index}"),
            }),
            (None, None) => None,
        }
    }
}

impl fmt::Display for PacketDrops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "drop       {:>6} × {} at {} on CPU {}",
            self.count, self.reason, self.location, self.cpu
        )?;
        if let Some(device) = self.device() {
            write!(f, " ({device})")?;
        }
        Ok(())
    }
}

/// What was resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetransmitKind {
    /// A segment (`tcp:tcp_retransmit_skb`): data after an RTO or a loss,
    /// or a SYN (state `SYN_SENT`).
    Segment,
    /// A SYN-ACK (`tcp:tcp_retransmit_synack`): the client's ACK was lost.
    Synack,
}

/// One TCP flow's retransmits during `start_ns..end_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retransmits {
    pub start_ns: u64,
    pub end_ns: u64,
    pub kind: RetransmitKind,
    /// The socket's TCP state, e.g. `ESTABLISHED`, `SYN_SENT`.
    pub state: String,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    pub count: u64,
}

impl Retransmits {
    /// `10.0.0.1:40000 → 10.0.0.2:80` (IPv6 addresses in brackets).
    pub fn flow(&self) -> String {
        let at = |addr: &str, port: u16| {
            if addr.contains(':') {
                format!("[{addr}]:{port}")
            } else {
                format!("{addr}:{port}")
            }
        };
        format!(
            "{} → {}",
            at(&self.saddr, self.sport),
            at(&self.daddr, self.dport)
        )
    }
}

impl fmt::Display for Retransmits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            RetransmitKind::Segment => "retransmit",
            RetransmitKind::Synack => "syn-ack   ",
        };
        write!(
            f,
            "{what} {:>6} × {} ({})",
            self.count,
            self.flow(),
            self.state
        )
    }
}

/// One CPU's softnet counters over a window (`/proc/net/softnet_stat`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftnetDelta {
    pub cpu: u32,
    pub processed: u64,
    /// Packets dropped because the CPU's backlog was full (netdev_max_backlog).
    pub dropped: u64,
    /// NET_RX runs that ended with work left (budget or time used up).
    pub time_squeeze: u64,
    /// Packets dropped by the flow limit.
    pub flow_limit: u64,
}

/// nf_conntrack's trouble counters over a window (`/proc/net/stat/nf_conntrack`, all CPUs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackDelta {
    /// Connections tracked at the end.
    pub entries: u64,
    /// Inserts that lost a race (the 5 s DNS delays: the packet is dropped).
    pub insert_failed: u64,
    /// Packets dropped because the table was full.
    pub drop: u64,
    pub early_drop: u64,
    pub invalid: u64,
    /// Races resolved without a drop (kernels ≥ 5.x).
    pub clash_resolve: u64,
}

impl ConntrackDelta {
    /// Packets conntrack itself dropped in the window.
    pub fn dropped(&self) -> u64 {
        self.insert_failed + self.drop + self.early_drop
    }
}

/// The network counters that grew during `start_ns..end_ns`, read at both
/// ends from /proc (netstall's own network namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetCounters {
    pub start_ns: u64,
    pub end_ns: u64,
    /// CPUs whose backlog dropped or whose NET_RX was squeezed.
    pub softnet: Vec<SoftnetDelta>,
    /// SNMP counters that grew (`/proc/net/netstat`, `/proc/net/snmp`), as
    /// `Group.Name`: `TcpExt.ListenOverflows`, `Tcp.RetransSegs`, ...
    pub snmp: std::collections::BTreeMap<String, u64>,
    /// When nf_conntrack is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<ConntrackDelta>,
}

impl NetCounters {
    /// An SNMP counter's growth (0 when it did not grow).
    pub fn snmp(&self, name: &str) -> u64 {
        self.snmp.get(name).copied().unwrap_or(0)
    }
}

impl fmt::Display for NetCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "counters   {:.1} s:",
            self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
        )?;
        let mut any = false;
        for cpu in &self.softnet {
            any = true;
            write!(
                f,
                " cpu{} backlog drops {} squeezed {};",
                cpu.cpu, cpu.dropped, cpu.time_squeeze
            )?;
        }
        for (name, value) in &self.snmp {
            any = true;
            write!(f, " {name} +{value};")?;
        }
        if let Some(ct) = self.conntrack.as_ref().filter(|c| c.dropped() > 0) {
            any = true;
            write!(
                f,
                " conntrack insert_failed {} drop {} early_drop {};",
                ct.insert_failed, ct.drop, ct.early_drop
            )?;
        }
        if !any {
            write!(f, " no drops, overflows or retransmits")?;
        }
        Ok(())
    }
}
