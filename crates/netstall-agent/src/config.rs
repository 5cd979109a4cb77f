//! The agent's settings: a TOML file whose keys are the flags' names
//! (`listen = "…"`, `probe-rate = 10`), every key also a flag; a flag wins
//! over the file, the file over the defaults.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netstall_core::duration;
use serde::{Deserialize, Deserializer};

use crate::kubernetes::ServiceRef;
use crate::remediation::{MinHealthy, Mode, ObjectRef, RemediationConfig, DEFAULT_LEASE};

/// Every setting, each optional: what the file or the command line gave.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentOptions {
    /// Address to serve /metrics and /healthz on [default: 127.0.0.1:9977].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// This node's name in events and /healthz [default: the host name].
    #[arg(long)]
    pub node_name: Option<String>,
    /// Peers to probe: ADDR or NAME=ADDR (IPv4), comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// Also probe the addresses this DNS name resolves to, re-read every 30 s:
    /// in Kubernetes, the agents' headless Service (their endpoints).
    #[arg(long)]
    pub peers_dns: Option<String>,
    /// Also probe the endpoints of this Kubernetes Service, NAMESPACE/SERVICE
    /// (the agents' own), watched through the API and named by node.
    #[arg(long)]
    pub peers_kubernetes: Option<String>,
    /// Probes per second to each peer [default: 10].
    #[arg(long)]
    pub probe_rate: Option<u32>,
    /// Probe at most this many peers, chosen by rendezvous hashing [default: 10].
    #[arg(long)]
    pub max_peers: Option<usize>,
    /// A probe this much slower than the peer's normal RTT, or a kernel RX
    /// stall this long, counts as a stall [default: 10ms].
    #[arg(long, value_parser = duration::parse_nonzero)]
    #[serde(default, deserialize_with = "some_duration")]
    pub stall_threshold: Option<Duration>,
    /// How often dying cgroups are counted (never by reading memory.stat) [default: 30s].
    #[arg(long, value_parser = duration::parse_nonzero)]
    #[serde(default, deserialize_with = "some_duration")]
    pub cgroup_interval: Option<Duration>,
    /// More dying memory cgroups than this make the node unhealthy [default: 10000].
    #[arg(long)]
    pub dying_memcg_limit: Option<u64>,
    /// How long a stall keeps the node unhealthy in /healthz and `netstall check` [default: 5m].
    #[arg(long, value_parser = duration::parse_nonzero)]
    #[serde(default, deserialize_with = "some_duration")]
    pub problem_window: Option<Duration>,
    /// Trace RX stalls in the kernel (eBPF): true or false [default: true].
    #[arg(long, action = clap::ArgAction::Set)]
    pub tracer: Option<bool>,
    /// Count packet drops per kernel drop reason in the kernel (eBPF on
    /// skb:kfree_skb), read at scrape time: true or false [default: true].
    #[arg(long, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub packet_drops: Option<bool>,
    /// Read CPU cgroups' CFS throttling every cgroup-interval (an eBPF
    /// cgroup iterator, never cpu.stat): true or false [default: true].
    #[arg(long, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub cpu_throttling: Option<bool>,
    /// Append the JSON event log to this file ("-": standard output) [default: -].
    #[arg(long)]
    pub event_log: Option<PathBuf>,
    /// Keep the evidence of every stall (the flight recorder) in this
    /// directory, across restarts, for `GET /stalls` and `netstall report
    /// --from` ("-": off) [default: /var/lib/netstall].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The recorder's files together stay within this many bytes; the
    /// oldest go first [default: 67108864 (64 MiB)].
    #[arg(long, value_name = "BYTES")]
    pub state_max_bytes: Option<u64>,
    /// After a stall on a CPU, sample that CPU (cpu-clock, with stacks) for
    /// a short window to catch the next one, into the flight recorder:
    /// true or false [default: true].
    #[arg(long, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub stall_sampling: Option<bool>,
    /// How long a stall-triggered sampling window lasts, at most 30s [default: 2s].
    #[arg(long, value_parser = duration::parse_nonzero)]
    #[serde(default, deserialize_with = "some_duration")]
    pub stall_sampling_window: Option<Duration>,
    /// After a window, stalls open no other for this long, so that sampling
    /// stays rare [default: 10m].
    #[arg(long, value_parser = duration::parse_nonzero)]
    #[serde(default, deserialize_with = "some_duration")]
    pub stall_sampling_cooldown: Option<Duration>,
    /// Act on a bad node through the Kubernetes API: off, condition, cordon,
    /// drain or reboot, each including the ones before it [default: off: no
    /// API write, ever]. See docs/remediation.md.
    #[arg(long, value_name = "MODE")]
    pub remediate: Option<String>,
    /// Report every remediation step (JSON lines, with the Events it would
    /// create) and change nothing: no API write, no drop_caches, no sentinel.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub dry_run: Option<bool>,
    /// The Lease that lets one node at a time cordon, drain or reboot,
    /// NAMESPACE/NAME [default: netstall/netstall-remediation].
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub lease: Option<String>,
    /// How long a Lease not renewed stays held (a crashed or cut-off agent
    /// frees the fleet after this) [default: 5m].
    #[arg(long, value_parser = duration::parse_nonzero)]
    #[serde(default, deserialize_with = "some_duration")]
    pub lease_duration: Option<Duration>,
    /// No cordon, drain or reboot when fewer nodes than this are free of the
    /// NetworkStall condition: a percentage or a count [default: 51%].
    #[arg(long)]
    pub min_healthy: Option<String>,
    /// The file whose existence asks the host to reboot (kured's sentinel,
    /// on a hostPath) [default: /var/run/reboot-required].
    #[arg(long)]
    pub reboot_sentinel: Option<PathBuf>,
    /// Instead of the sentinel, run this command (through /bin/sh -c) to reboot.
    #[arg(long)]
    pub reboot_command: Option<String>,
    /// After cordon, drain or reboot, how long the node must be healthy before
    /// it is uncordoned and the Lease released [default: 5m].
    #[arg(long, value_parser = duration::parse_nonzero)]
    #[serde(default, deserialize_with = "some_duration")]
    pub probation: Option<Duration>,
    /// How long evictions refused by a PodDisruptionBudget (HTTP 429) are
    /// retried before the drain gives up [default: 10m].
    #[arg(long, value_parser = duration::parse_nonzero)]
    #[serde(default, deserialize_with = "some_duration")]
    pub drain_timeout: Option<Duration>,
    /// Quick fix first: when the cause is dying-memcg-stat-flush, drop the
    /// page cache (drop_caches level 1) before any cordon, and escalate only
    /// if the stalls continue.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub remediate_memcg: Option<bool>,
}

fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    duration::parse_nonzero(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The largest config file read: a real one is a few hundred bytes.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl AgentOptions {
    /// Reads a TOML config file.
    ///
    /// At most [`MAX_CONFIG_BYTES`] are read: `--config /dev/zero` (or any
    /// endless file) is an error, not a process that grows until it is killed.
    pub fn from_file(path: &Path) -> Result<Self> {
        use std::io::Read;
        let cannot = || format!("cannot read config file {}", path.display());
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .with_context(cannot)?
            .take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .with_context(cannot)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            anyhow::bail!(
                "config file {} is larger than {} KiB: not an agent config",
                path.display(),
                MAX_CONFIG_BYTES >> 10
            );
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("config file {} is not UTF-8 text", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Parses TOML config text.
    pub fn from_toml(text: &str) -> Result<Self> {
        // toml's messages span several lines (a caret under the bad key); one is enough.
        toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.message().lines().next().unwrap_or("invalid TOML").trim()
            )
        })
    }

    /// These options, with any left unset taken from `fallback`.
    pub fn or(self, fallback: AgentOptions) -> AgentOptions {
        AgentOptions {
            listen: self.listen.or(fallback.listen),
            node_name: self.node_name.or(fallback.node_name),
            peers: self.peers.or(fallback.peers),
            peers_dns: self.peers_dns.or(fallback.peers_dns),
            peers_kubernetes: self.peers_kubernetes.or(fallback.peers_kubernetes),
            probe_rate: self.probe_rate.or(fallback.probe_rate),
            max_peers: self.max_peers.or(fallback.max_peers),
            stall_threshold: self.stall_threshold.or(fallback.stall_threshold),
            cgroup_interval: self.cgroup_interval.or(fallback.cgroup_interval),
            dying_memcg_limit: self.dying_memcg_limit.or(fallback.dying_memcg_limit),
            problem_window: self.problem_window.or(fallback.problem_window),
            tracer: self.tracer.or(fallback.tracer),
            packet_drops: self.packet_drops.or(fallback.packet_drops),
            cpu_throttling: self.cpu_throttling.or(fallback.cpu_throttling),
            event_log: self.event_log.or(fallback.event_log),
            state_dir: self.state_dir.or(fallback.state_dir),
            state_max_bytes: self.state_max_bytes.or(fallback.state_max_bytes),
            stall_sampling: self.stall_sampling.or(fallback.stall_sampling),
            stall_sampling_window: self
                .stall_sampling_window
                .or(fallback.stall_sampling_window),
            stall_sampling_cooldown: self
                .stall_sampling_cooldown
                .or(fallback.stall_sampling_cooldown),
            remediate: self.remediate.or(fallback.remediate),
            dry_run: self.dry_run.or(fallback.dry_run),
            lease: self.lease.or(fallback.lease),
            lease_duration: self.lease_duration.or(fallback.lease_duration),
            min_healthy: self.min_healthy.or(fallback.min_healthy),
            reboot_sentinel: self.reboot_sentinel.or(fallback.reboot_sentinel),
            reboot_command: self.reboot_command.or(fallback.reboot_command),
            probation: self.probation.or(fallback.probation),
            drain_timeout: self.drain_timeout.or(fallback.drain_timeout),
            remediate_memcg: self.remediate_memcg.or(fallback.remediate_memcg),
        }
    }

    /// The settings with defaults filled in, checked.
    pub fn resolve(self) -> Result<AgentConfig> {
        let peers = self
            .peers
            .unwrap_or_default()
            .iter()
            .map(|p| Peer::parse(p))
            .collect::<Result<Vec<_>>>()?;
        let probe_rate = self.probe_rate.unwrap_or(10);
        if !(1..=100).contains(&probe_rate) {
            bail!("--probe-rate must be 1 to 100 probes per second per peer, not {probe_rate}");
        }
        let max_peers = self.max_peers.unwrap_or(10);
        if !(1..=1000).contains(&max_peers) {
            bail!("--max-peers must be 1 to 1000, not {max_peers}");
        }
        let stall_threshold = self.stall_threshold.unwrap_or(Duration::from_millis(10));
        if stall_threshold < Duration::from_millis(1) {
            bail!("--stall-threshold must be at least 1ms");
        }
        let node_name = match self.node_name {
            Some(name) if name.trim().is_empty() => bail!("--node-name must not be empty"),
            Some(name) => name,
            None => host_name(),
        };
        if self
            .peers_dns
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            bail!("--peers-dns must not be empty");
        }
        let peers_kubernetes = self
            .peers_kubernetes
            .as_deref()
            .map(ServiceRef::from_str)
            .transpose()?;
        if peers_kubernetes.is_some() && self.peers_dns.is_some() {
            bail!("--peers-dns and --peers-kubernetes are two ways to find the same agents: choose one");
        }
        let remediation = RemediationConfig {
            mode: self
                .remediate
                .as_deref()
                .map(Mode::from_str)
                .transpose()
                .map_err(anyhow::Error::msg)?
                .unwrap_or(Mode::Off),
            dry_run: self.dry_run.unwrap_or(false),
            lease: self
                .lease
                .as_deref()
                .unwrap_or(DEFAULT_LEASE)
                .parse::<ObjectRef>()
                .context("--lease")?,
            lease_duration: self.lease_duration.unwrap_or(Duration::from_secs(300)),
            min_healthy: self
                .min_healthy
                .as_deref()
                .unwrap_or("51%")
                .parse::<MinHealthy>()?,
            reboot_sentinel: self
                .reboot_sentinel
                .unwrap_or_else(|| PathBuf::from("/var/run/reboot-required")),
            reboot_command: self.reboot_command.filter(|c| !c.trim().is_empty()),
            probation: self.probation.unwrap_or(Duration::from_secs(300)),
            drain_timeout: self.drain_timeout.unwrap_or(Duration::from_secs(600)),
            memcg_quick_fix: self.remediate_memcg.unwrap_or(false),
        };
        if remediation.lease_duration < Duration::from_secs(1) {
            bail!("--lease-duration must be at least 1s");
        }
        let state_max_bytes = self
            .state_max_bytes
            .unwrap_or(crate::recorder::DEFAULT_MAX_BYTES);
        if state_max_bytes < crate::recorder::MIN_MAX_BYTES {
            bail!(
                "--state-max-bytes must be at least {}, not {state_max_bytes}",
                crate::recorder::MIN_MAX_BYTES
            );
        }
        let state_dir = match self.state_dir {
            Some(dir) if dir.as_os_str() == "-" => None,
            Some(dir) if dir.as_os_str().is_empty() => {
                bail!("--state-dir must not be empty (\"-\": off)")
            }
            Some(dir) => Some(dir),
            None => Some(PathBuf::from("/var/lib/netstall")),
        };
        let sampling_window = self
            .stall_sampling_window
            .unwrap_or(crate::sampling::DEFAULT_WINDOW);
        if sampling_window > crate::sampling::MAX_WINDOW {
            bail!("--stall-sampling-window must be at most 30s");
        }
        let stall_sampling = crate::sampling::SamplingConfig {
            on: self.stall_sampling.unwrap_or(true),
            window: sampling_window,
            cooldown: self
                .stall_sampling_cooldown
                .unwrap_or(crate::sampling::DEFAULT_COOLDOWN),
        };
        Ok(AgentConfig {
            state_dir,
            state_max_bytes,
            stall_sampling,
            remediation,
            peers_dns: self.peers_dns,
            peers_kubernetes,
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9977))),
            node_name,
            peers,
            probe_rate,
            max_peers,
            stall_threshold,
            cgroup_interval: self.cgroup_interval.unwrap_or(Duration::from_secs(30)),
            dying_memcg_limit: self.dying_memcg_limit.unwrap_or(10_000),
            problem_window: self.problem_window.unwrap_or(Duration::from_secs(300)),
            tracer: self.tracer.unwrap_or(true),
            packet_drops: self.packet_drops.unwrap_or(true),
            cpu_throttling: self.cpu_throttling.unwrap_or(true),
            event_log: self.event_log.filter(|p| p.as_os_str() != "-"),
        })
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A peer to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The name in metrics' `peer` label (the address when none was given).
    pub name: String,
    pub addr: Ipv4Addr,
}

impl Peer {
    /// Parses `ADDR` or `NAME=ADDR`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let (name, addr) = match text.split_once('=') {
            Some((name, addr)) => (name.trim(), addr.trim()),
            None => (text, text),
        };
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| anyhow::anyhow!("peer '{text}': '{addr}' is not an IPv4 address"))?;
        if name.is_empty() {
            bail!("peer '{text}': empty name");
        }
        Ok(Peer {
            name: name.to_string(),
            addr,
        })
    }
}

/// The agent's settings, complete.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    pub node_name: String,
    /// Every statically known peer; the agent probes a rendezvous subset of
    /// them and of those found through `peers_dns`.
    pub peers: Vec<Peer>,
    pub peers_dns: Option<String>,
    pub peers_kubernetes: Option<ServiceRef>,
    pub probe_rate: u32,
    pub max_peers: usize,
    pub stall_threshold: Duration,
    pub cgroup_interval: Duration,
    pub dying_memcg_limit: u64,
    pub problem_window: Duration,
    pub tracer: bool,
    /// Drops per kernel reason ([`crate::kernel_counters`]).
    pub packet_drops: bool,
    /// CFS throttling of the CPU cgroups ([`crate::kernel_counters`]).
    pub cpu_throttling: bool,
    /// `None`: standard output.
    pub event_log: Option<PathBuf>,
    /// The flight recorder's directory; `None`: off.
    pub state_dir: Option<PathBuf>,
    pub state_max_bytes: u64,
    /// Stall-triggered CPU sampling (only with the tracer).
    pub stall_sampling: crate::sampling::SamplingConfig,
    pub remediation: RemediationConfig,
}

impl AgentConfig {
    /// The settings as the `agent-config` record (`--print-config`).
    pub fn record(&self) -> netstall_events::agent::AgentConfig {
        netstall_events::agent::AgentConfig {
            listen: self.listen.to_string(),
            node_name: self.node_name.clone(),
            peers: self
                .peers
                .iter()
                .map(|p| format!("{}={}", p.name, p.addr))
                .collect(),
            peers_dns: self.peers_dns.clone(),
            peers_kubernetes: self.peers_kubernetes.as_ref().map(ToString::to_string),
            probe_rate: self.probe_rate,
            max_peers: self.max_peers,
            stall_threshold_ms: duration::as_ms(self.stall_threshold),
            cgroup_interval_ms: duration::as_ms(self.cgroup_interval),
            dying_memcg_limit: self.dying_memcg_limit,
            problem_window_ms: duration::as_ms(self.problem_window),
            tracer: self.tracer,
            packet_drops: self.packet_drops,
            cpu_throttling: self.cpu_throttling,
            event_log: self.event_log.as_ref().map(|p| p.display().to_string()),
            state_dir: self.state_dir.as_ref().map(|p| p.display().to_string()),
            state_max_bytes: self.state_max_bytes,
            stall_sampling: self.stall_sampling.on,
            stall_sampling_window_ms: duration::as_ms(self.stall_sampling.window),
            stall_sampling_cooldown_ms: duration::as_ms(self.stall_sampling.cooldown),
            remediate: self.remediation.mode,
            dry_run: self.remediation.dry_run,
            lease: self.remediation.lease.to_string(),
            lease_duration_ms: duration::as_ms(self.remediation.lease_duration),
            min_healthy: self.remediation.min_healthy.to_string(),
            reboot_sentinel: self.remediation.reboot_sentinel.display().to_string(),
            reboot_command: self.remediation.reboot_command.clone(),
            probation_ms: duration::as_ms(self.remediation.probation),
            drain_timeout_ms: duration::as_ms(self.remediation.drain_timeout),
            remediate_memcg: self.remediation.memcg_quick_fix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_config_file_is_refused_with_bounded_memory() {
        let error = AgentOptions::from_file(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "config file /dev/zero is larger than 1024 KiB: not an agent config"
        );
    }

    #[test]
    fn toml_keys_are_the_flag_names_and_flags_win() {
        let file = AgentOptions::from_toml(
            r#"
            listen = "0.0.0.0:9977"
            node-name = "node1"
            peers = ["node2=172.31.0.2", "172.31.0.3"]
            probe-rate = 20
            stall-threshold = "5ms"
            tracer = false
            packet-drops = false
            "#,
        )
        .unwrap();
        let flags = AgentOptions {
            probe_rate: Some(5),
            ..Default::default()
        };
        let config = flags.or(file).resolve().unwrap();
        assert_eq!(config.listen, "0.0.0.0:9977".parse().unwrap());
        assert_eq!(config.node_name, "node1");
        assert_eq!(config.probe_rate, 5);
        assert_eq!(config.stall_threshold, Duration::from_millis(5));
        assert!(!config.tracer);
        assert!(!config.packet_drops && config.cpu_throttling);
        assert_eq!(
            config.peers,
            vec![
                Peer {
                    name: "node2".into(),
                    addr: Ipv4Addr::new(172, 31, 0, 2)
                },
                Peer {
                    name: "172.31.0.3".into(),
                    addr: Ipv4Addr::new(172, 31, 0, 3)
                },
            ]
        );
    }

    #[test]
    fn defaults_are_loopback_and_ten_peers_at_ten_hertz() {
        let config = AgentOptions::default().resolve().unwrap();
        assert_eq!(config.listen, "127.0.0.1:9977".parse().unwrap());
        assert_eq!((config.probe_rate, config.max_peers), (10, 10));
        assert!(config.tracer && config.packet_drops && config.cpu_throttling);
        assert_eq!(config.event_log, None);
    }

    #[test]
    fn bad_input_is_named() {
        let err = AgentOptions::from_toml("probe-rat = 3").unwrap_err();
        assert!(err.to_string().contains("probe-rat"), "{err}");
        let err = AgentOptions::from_toml("stall-threshold = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
        let bad_peer = AgentOptions {
            peers: Some(vec!["node9=nowhere".into()]),
            ..Default::default()
        };
        assert!(bad_peer
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("nowhere"));
        let bad_rate = AgentOptions {
            probe_rate: Some(0),
            ..Default::default()
        };
        assert!(bad_rate.resolve().is_err());
    }
}
