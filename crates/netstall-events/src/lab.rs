//! The lab's records: its hosts and endpoints (`lab status`, also its
//! state on disk), and what `lab poller`, `lab clean` and `lab zombies` did.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cpu::format_list;

/// The hosts of a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Node1,
    Node2,
    Pod,
    Outside,
}

/// What `lab status` reports; also kept on disk while the lab is up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabStatus {
    pub prefix: String,
    /// The first RX CPU (the usual single-CPU setup); all of them in `rx_cpus`.
    pub rx_cpu: u32,
    pub rx_cpus: Vec<u32>,
    pub hosts: Vec<Host>,
    pub nodeport: Endpoint,
    pub pod: Endpoint,
    /// Responder processes, by PID, that `lab down` stops.
    pub responders: Vec<Responder>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Host {
    pub role: Role,
    pub netns: String,
    pub addrs: Vec<String>,
    /// CPUs its receive processing is steered to (empty: not steered).
    pub rx_cpus: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub addr: String,
    pub tcp: u16,
    pub udp: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Responder {
    pub role: Role,
    pub pid: u32,
}

/// One timed read of memory.stat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollRead {
    pub seq: u32,
    pub pid: u32,
    pub cpu: Option<u32>,
    pub path: PathBuf,
    /// CLOCK_REALTIME at the start of the read.
    pub start_ns: u64,
    pub read_ms: f64,
    pub touched_files: u32,
}

/// What `lab clean` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanReport {
    pub dying_before: u64,
    pub dying_after: u64,
    pub files_removed: u64,
    pub elapsed_ms: u64,
}

/// What `lab zombies` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZombieReport {
    pub created: u32,
    pub failed: u32,
    pub dying_before: u64,
    pub dying_after: u64,
    pub parent: PathBuf,
    pub data_dir: PathBuf,
    pub elapsed_ms: u64,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Client,
        Role::Node1,
        Role::Node2,
        Role::Pod,
        Role::Outside,
    ];

    /// The name used in JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Node1 => "node1",
            Role::Node2 => "node2",
            Role::Pod => "pod",
            Role::Outside => "outside",
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == text)
            .ok_or_else(|| {
                format!("unknown lab host '{text}' (client, node1, node2, pod, outside)")
            })
    }
}

impl LabStatus {
    /// The namespace of `role`.
    pub fn netns(&self, role: Role) -> &str {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .map(|h| h.netns.as_str())
            .unwrap_or_default()
    }
}

/// The lab's hosts, its endpoints, and how to reach the pod.
impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "lab '{}': node RX on CPU {}",
            self.prefix,
            format_list(&self.rx_cpus)
        )?;
        for host in &self.hosts {
            writeln!(
                f,
                "  {:<8} netns {:<12} rx cpu {:<4} {}",
                host.role.name(),
                host.netns,
                format_list(&host.rx_cpus),
                host.addrs.join(", ")
            )?;
        }
        let (nodeport, pod) = (&self.nodeport, &self.pod);
        writeln!(
            f,
            "  NodePort {}:{}/tcp {}:{}/udp -> pod {}:{}/tcp {}/udp",
            nodeport.addr, nodeport.tcp, nodeport.addr, nodeport.udp, pod.addr, pod.tcp, pod.udp
        )?;
        write!(
            f,
            "  try: ip netns exec {} curl -s http://{}:{}/",
            self.netns(Role::Client),
            nodeport.addr,
            nodeport.tcp
        )
    }
}

/// `lab down`: the lab `prefix` is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabDown {
    pub prefix: String,
}

/// `lab drops`: packets forwarded to the lab's pod were dropped at random
/// (an nftables rule on node2) during `start_ns..end_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabDrops {
    pub prefix: String,
    /// The namespace holding the rule (node2's).
    pub netns: String,
    /// Share of the packets to the pod dropped, %.
    pub rate_pct: u32,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl fmt::Display for LabDrops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lab '{}': dropped {}% of the packets forwarded to the pod for {:.1} s (nftables in {}); rule removed",
            self.prefix,
            self.rate_pct,
            self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9,
            self.netns
        )
    }
}

/// `lab throttle`: the lab pod's HTTP server ran in a CPU cgroup with a
/// small CFS quota, shared with a busy process, during `start_ns..end_ns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabThrottle {
    pub prefix: String,
    /// The cgroup's path in the cpu controller's hierarchy.
    pub cgroup: String,
    pub quota_ms: f64,
    pub period_ms: f64,
    /// The pod's HTTP server moved into the cgroup (its pid).
    pub server_pid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl fmt::Display for LabThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lab '{}': the pod's HTTP server (pid {}) shared cgroup {} (quota {:.0} ms per {:.0} ms) with a busy process for {:.1} s; cgroup removed",
            self.prefix,
            self.server_pid,
            self.cgroup,
            self.quota_ms,
            self.period_ms,
            self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
        )
    }
}

/// `lab backlog`: net.core.netdev_max_backlog made tiny and bursts of UDP
/// sent toward the lab's pod during `start_ns..end_ns`, so the RX CPUs'
/// input backlogs overflowed for real; the sysctl is back to `previous`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabBacklog {
    pub prefix: String,
    /// net.core.netdev_max_backlog during the injection ...
    pub max_backlog: u32,
    /// ... and before it (restored at the end).
    pub previous: u32,
    /// The CPU the sender ran on (off the RX CPUs, so that they fall behind).
    pub sender_cpu: Option<u32>,
    pub bursts: u32,
    pub sent: u64,
    /// Packets the kernel dropped from CPU input backlogs meanwhile
    /// (softnet_stat, every netns), and on which CPUs.
    pub softnet_dropped: u64,
    pub drop_cpus: Vec<u32>,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl fmt::Display for LabBacklog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lab '{}': netdev_max_backlog {} for {:.1} s, {} burst{} ({} packets) toward the pod; {} dropped from CPU {} backlog{}; netdev_max_backlog back to {}",
            self.prefix,
            self.max_backlog,
            self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9,
            self.bursts,
            if self.bursts == 1 { "" } else { "s" },
            self.sent,
            self.softnet_dropped,
            format_list(&self.drop_cpus),
            if self.drop_cpus.len() == 1 { "" } else { "s" },
            self.previous
        )
    }
}

/// `lab nosched`: `sections` non-preemptible kernel sections of `ms` each
/// held `cpu` while another task waited for it, during `start_ns..end_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabNosched {
    pub cpu: u32,
    pub ms: u64,
    pub sections: u32,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl fmt::Display for LabNosched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "held CPU {} in kernel code {} time{} for {} ms each, with a task waiting, over {:.1} s",
            self.cpu,
            self.sections,
            if self.sections == 1 { "" } else { "s" },
            self.ms,
            self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
        )
    }
}

impl fmt::Display for LabDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lab '{}' removed", self.prefix)
    }
}

impl fmt::Display for ZombieReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "created {} dying memory cgroups in {:.1} s ({} failed); dying now {} (was {})",
            self.created,
            self.elapsed_ms as f64 / 1e3,
            self.failed,
            self.dying_after,
            self.dying_before
        )
    }
}

impl fmt::Display for CleanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "removed {} files; dying memory cgroups {} -> {} in {:.1} s",
            self.files_removed,
            self.dying_before,
            self.dying_after,
            self.elapsed_ms as f64 / 1e3
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::{parse_line, Record};

    #[test]
    fn backlog_injection_says_what_it_set_dropped_and_restored() {
        // docs/json.md's example.
        let line = r#"{"type":"lab-backlog","prefix":"demo","max_backlog":10,"previous":1000,"sender_cpu":1,"bursts":30,"sent":150000,"softnet_dropped":141210,"drop_cpus":[0],"start_ns":1764840001000000000,"end_ns":1764840031000000000}"#;
        let Ok(Record::LabBacklog(b)) = parse_line(line) else {
            panic!("docs/json.md's lab-backlog example parses");
        };
        assert_eq!(
            b.to_string(),
            "lab 'demo': netdev_max_backlog 10 for 30.0 s, 30 bursts (150000 packets) toward the pod; \
             141210 dropped from CPU 0 backlog; netdev_max_backlog back to 1000"
        );
    }

    #[test]
    fn status_lists_hosts_endpoints_and_how_to_try_them() {
        // docs/json.md's example.
        let line = r#"{"type":"lab","prefix":"demo","rx_cpu":1,"rx_cpus":[1],"hosts":[{"role":"client","netns":"demo-cli","addrs":["192.168.50.2"],"rx_cpus":[]}],"nodeport":{"addr":"192.168.50.1","tcp":30080,"udp":30081},"pod":{"addr":"10.244.2.10","tcp":8080,"udp":9000},"responders":[{"role":"pod","pid":4321}]}"#;
        let Ok(Record::Lab(status)) = parse_line(line) else {
            panic!("docs/json.md's lab example parses");
        };
        assert_eq!(
            status.to_string(),
            "lab 'demo': node RX on CPU 1\n  \
             client   netns demo-cli     rx cpu      192.168.50.2\n  \
             NodePort 192.168.50.1:30080/tcp 192.168.50.1:30081/udp -> pod 10.244.2.10:8080/tcp 9000/udp\n  \
             try: ip netns exec demo-cli curl -s http://192.168.50.1:30080/"
        );
    }
}
