//! The agent's Prometheus metrics (prometheus-client), node_exporter style:
//! base units in the names, `_total` counters, per-node histograms.
//!
//! Cardinality is bounded by design, so a fleet of 10k nodes stays near
//! 0.5M series: a healthy node exports about 25 series; per-peer series
//! exist only for peers toward which an episode was seen, per-CPU stall
//! series only for CPUs that stalled, and culprits are capped at
//! [`MAX_CULPRITS`] label sets (the rest count as `other`).

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Probe RTT buckets (seconds): 100 µs to 1 s, dense where stalls show.
const RTT_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Stall duration buckets (seconds): only over-threshold stalls are observed.
const STALL_BUCKETS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Distinct (comm, syscall) culprit label sets kept before folding into `other`.
pub const MAX_CULPRITS: usize = 20;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtoLabels {
    pub proto: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EpisodeLabels {
    pub peer: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StallLabels {
    pub cpu: String,
    pub detector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CulpritLabels {
    pub comm: String,
    pub syscall: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReaderLabels {
    pub reader: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub node: String,
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub revision: &'static str,
}

/// The git revision this agent was built from (build.rs: `$NETSTALL_REVISION`,
/// else `git rev-parse --short HEAD`, else `unknown`).
pub const REVISION: &str = env!("NETSTALL_REVISION");

fn rtt_histogram() -> Histogram {
    Histogram::new(RTT_BUCKETS)
}

fn stall_histogram() -> Histogram {
    Histogram::new(STALL_BUCKETS)
}

/// Bucket bounds (log2 ns) of the kernel latency histograms: 8 µs to 1 s.
const KERNEL_BOUNDS_LOG2_NS: [u32; 8] = [13, 16, 19, 21, 23, 25, 27, 30];

/// The tracer's in-kernel latency histograms (every packet's backlog wait,
/// every NET_RX softirq delay), summed over CPUs: one
/// histogram per node and detector, so its cost in series is fixed.
///
/// The kernel keeps log2 slots (`[2^i, 2^(i+1))` ns) without a sum; the
/// exported `_sum` is estimated from the slots' midpoints.
#[derive(Debug, Default)]
pub struct KernelLatency {
    /// Detector -> count per log2 slot.
    slots: Mutex<std::collections::BTreeMap<String, [u64; 64]>>,
}

impl KernelLatency {
    /// Adds counts to slots: `(upper bound ns, count)` pairs, bounds powers of two.
    pub fn add(&self, detector: &str, buckets: &[(u64, u64)]) {
        let mut slots = self.slots.lock().expect("kernel latency lock");
        let detector_slots = slots.entry(detector.to_string()).or_insert([0; 64]);
        for &(upper, count) in buckets {
            let slot = upper.max(2).ilog2() as usize - 1;
            detector_slots[slot.min(63)] += count;
        }
    }

    /// (sum s, count, non-cumulative buckets) of one detector.
    fn histogram(slots: &[u64; 64]) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = KERNEL_BOUNDS_LOG2_NS
            .iter()
            .map(|&b| ((1u64 << b) as f64 / 1e9, 0))
            .collect();
        let (mut sum, mut count) = (0.0, 0);
        for (slot, &n) in slots.iter().enumerate().filter(|(_, n)| **n > 0) {
            let upper_log2 = slot as u32 + 1;
            let midpoint_ns = 1.5 * (1u64 << slot) as f64;
            sum += n as f64 * midpoint_ns / 1e9;
            count += n;
            if let Some(i) = KERNEL_BOUNDS_LOG2_NS.iter().position(|&b| upper_log2 <= b) {
                buckets[i].1 += n;
            }
        }
        (sum, count, buckets)
    }
}

impl prometheus_client::collector::Collector for KernelLatency {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let slots = self.slots.lock().expect("kernel latency lock");
        if slots.is_empty() {
            return Ok(());
        }
        let mut metric = encoder.encode_descriptor(
            "netstall_kernel_latency_seconds",
            "In-kernel latency of every event, all CPUs: per-packet backlog wait (rx-backlog), NET_RX raise to run (softirq-delay); sum estimated",
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        for (detector, detector_slots) in slots.iter() {
            let (sum, count, buckets) = KernelLatency::histogram(detector_slots);
            let labels = [("detector", detector.as_str())];
            metric
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum, count, &buckets, None,
                )?;
        }
        Ok(())
    }
}

/// Reads drop totals per kernel reason: `(reason, count)` of each reason
/// with drops.
pub type ReadDrops = Box<dyn Fn() -> anyhow::Result<Vec<(String, u64)>> + Send>;

/// `netstall_packet_drops_total{reason}`, read from the kernel at scrape
/// time ([`crate::kernel_counters`]): absent until a reader is set, and
/// while it fails (unknown is not zero). Series exist only for reasons
/// with drops, at most one per reason of the kernel's enum.
#[derive(Default)]
pub struct PacketDrops {
    read: Mutex<Option<ReadDrops>>,
}

impl PacketDrops {
    /// Reads the totals with `read` from now on.
    pub fn set_reader(&self, read: ReadDrops) {
        *self.read.lock().unwrap_or_else(|p| p.into_inner()) = Some(read);
    }
}

impl std::fmt::Debug for PacketDrops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PacketDrops")
    }
}

impl prometheus_client::collector::Collector for PacketDrops {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Ok(totals)) = read.as_ref().map(|read| read()) else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "netstall_packet_drops",
            "Packets the kernel dropped (skb:kfree_skb), by its drop reason, all network namespaces; normal consumption (NO_SOCKET, SOCKET_CLOSE, ...) not counted",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, count) in totals {
            let labels = [("reason", reason.as_str())];
            prometheus_client::metrics::counter::ConstCounter::new(count)
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Every metric the agent exports, registered once.
pub struct Metrics {
    registry: Registry,
    pub probe_rtt: Family<ProtoLabels, Histogram, fn() -> Histogram>,
    pub probes_sent: Family<ProtoLabels, Counter>,
    pub probes_lost: Family<ProtoLabels, Counter>,
    episodes: Family<EpisodeLabels, Counter>,
    /// The episode label sets created so far, to drop those of peers no
    /// longer probed (the family cannot list them).
    episodes_known: Mutex<HashSet<EpisodeLabels>>,
    pub peers_probed: Gauge,
    pub rx_stall: Family<StallLabels, Histogram, fn() -> Histogram>,
    culprit_seconds: Family<CulpritLabels, Counter<f64, AtomicU64>>,
    /// The culprit label sets created so far (the family cannot be asked).
    culprits_known: Mutex<HashSet<CulpritLabels>>,
    /// Absent when the tracer is turned off (`--tracer false`): only an
    /// agent that should trace can have its tracer down.
    pub tracer_up: Family<NoLabels, Gauge>,
    pub tracer_failures: Counter,
    pub ring_drops: Counter,
    /// Stall-triggered sampling windows, and the agent's CPU time in them.
    pub sampling_windows: Counter,
    pub sampling_cpu_seconds: Counter<f64, AtomicU64>,
    /// Absent until the first count succeeds: an unknown count is not zero.
    pub memcg_dying: Family<NoLabels, Gauge>,
    pub memcg_cgroups: Family<NoLabels, Gauge>,
    /// `--dying-memcg-limit`, so that alerts compare against the agent's
    /// own limit instead of a number copied into the rule.
    pub memcg_dying_limit: Gauge,
    pub kernel_latency: Arc<KernelLatency>,
    /// HTTP connections closed unserved: over the total or per-client cap.
    /// Absent until one is, to keep a healthy node's series budget.
    pub http_rejected: Family<NoLabels, Counter>,
    /// Worker threads that panicked (each is restarted after a pause).
    pub worker_failures: Family<WorkerLabels, Counter>,
    /// The stats readers' ledger ([`crate::ledger`]): bounded readers.
    pub stat_flush_seconds: Family<ReaderLabels, Counter<f64, AtomicU64>>,
    pub stat_flushes: Family<ReaderLabels, Counter>,
    /// The kernel counters' sources (drops, throttling): 1 reading, 0
    /// unavailable; absent when turned off.
    pub source_up: Family<SourceLabels, Gauge>,
    pub packet_drops: Arc<PacketDrops>,
    /// CFS throttling of every CPU cgroup, from the agent's readings; absent
    /// until the second reading (the first is the baseline).
    pub cpu_throttled_periods: Family<NoLabels, Counter>,
    pub cpu_throttled_seconds: Family<NoLabels, Counter<f64, AtomicU64>>,
    pub cpu_throttled_cgroups: Family<NoLabels, Gauge>,
}

/// The label set of a series that has none, in a family (so that the
/// series can be absent until its value is known).
pub type NoLabels = Vec<(&'static str, &'static str)>;

impl Metrics {
    pub fn new(node: &str) -> Self {
        let mut registry = Registry::default();
        let info = Family::<InfoLabels, Gauge>::default();
        info.get_or_create(&InfoLabels {
            node: node.to_string(),
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        registry.register(
            "netstall_agent_info",
            "The agent's node name and version (always 1)",
            info,
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                revision: REVISION,
            })
            .set(1);
        registry.register(
            "netstall_build_info",
            "The version and git revision this agent was built from (always 1)",
            build,
        );
        let m = Self {
            probe_rtt: Family::new_with_constructor(rtt_histogram),
            probes_sent: Family::default(),
            probes_lost: Family::default(),
            episodes: Family::default(),
            episodes_known: Mutex::default(),
            peers_probed: Gauge::default(),
            rx_stall: Family::new_with_constructor(stall_histogram),
            culprit_seconds: Family::default(),
            culprits_known: Mutex::default(),
            tracer_up: Family::default(),
            tracer_failures: Counter::default(),
            ring_drops: Counter::default(),
            sampling_windows: Counter::default(),
            sampling_cpu_seconds: Counter::default(),
            memcg_dying: Family::default(),
            memcg_cgroups: Family::default(),
            memcg_dying_limit: Gauge::default(),
            kernel_latency: Arc::default(),
            http_rejected: Family::default(),
            worker_failures: Family::default(),
            stat_flush_seconds: Family::default(),
            stat_flushes: Family::default(),
            source_up: Family::default(),
            packet_drops: Arc::default(),
            cpu_throttled_periods: Family::default(),
            cpu_throttled_seconds: Family::default(),
            cpu_throttled_cgroups: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "netstall_probe_rtt_seconds",
            "Round-trip time of mesh probes to this node's peers, all peers together",
            m.probe_rtt.clone(),
        );
        registry.register(
            "netstall_probe_sent",
            "Mesh probes sent",
            m.probes_sent.clone(),
        );
        registry.register(
            "netstall_probe_lost",
            "Mesh probes that got no reply within the timeout",
            m.probes_lost.clone(),
        );
        registry.register(
            "netstall_probe_episodes",
            "Stall episodes (backlog release, spike, loss) seen in probes toward a peer",
            m.episodes.clone(),
        );
        registry.register(
            "netstall_probe_peers",
            "Peers this node probes (its rendezvous subset)",
            m.peers_probed.clone(),
        );
        registry.register(
            "netstall_rx_stall_seconds",
            "RX stalls over the threshold seen by the in-kernel detectors, by CPU and detector",
            m.rx_stall.clone(),
        );
        registry.register(
            "netstall_stall_culprit_seconds",
            "Stall time attributed to the task (comm) and syscall holding the CPU",
            m.culprit_seconds.clone(),
        );
        registry.register(
            "netstall_stat_flush_seconds",
            "Time each stats reader held a cgroup rstat lock with IRQs off, flushing cgroup stats (top readers; the rest as reader=\"other\")",
            m.stat_flush_seconds.clone(),
        );
        registry.register(
            "netstall_stat_flushes",
            "Memory-cgroup stat flushes each stats reader ran (top readers; the rest as reader=\"other\")",
            m.stat_flushes.clone(),
        );
        registry.register(
            "netstall_tracer_up",
            "1 when the in-kernel stall tracer runs, 0 while it starts or is unavailable; absent when turned off",
            m.tracer_up.clone(),
        );
        registry.register(
            "netstall_tracer_failures",
            "Tracing windows that ended in an internal error (the tracer restarts after each)",
            m.tracer_failures.clone(),
        );
        registry.register(
            "netstall_tracer_ring_drops",
            "Kernel events dropped because the tracer's ring buffer was full",
            m.ring_drops.clone(),
        );
        registry.register(
            "netstall_stall_sampling_windows",
            "CPU-sampling windows opened by a stall (stall-sampling; rare: a cooldown after each)",
            m.sampling_windows.clone(),
        );
        registry.register(
            "netstall_stall_sampling_cpu_seconds",
            "CPU time the agent spent in stall-triggered sampling windows",
            m.sampling_cpu_seconds.clone(),
        );
        registry.register(
            "netstall_memcg_dying",
            "Dying (removed but still charged) memory cgroups",
            m.memcg_dying.clone(),
        );
        registry.register(
            "netstall_memcg_cgroups",
            "Memory cgroups the kernel holds, live and dying",
            m.memcg_cgroups.clone(),
        );
        registry.register(
            "netstall_memcg_dying_limit",
            "More dying memory cgroups than this make the node unhealthy (--dying-memcg-limit)",
            m.memcg_dying_limit.clone(),
        );
        registry.register(
            "netstall_http_rejected",
            "HTTP connections closed unserved because the total or per-client connection cap was reached",
            m.http_rejected.clone(),
        );
        registry.register(
            "netstall_worker_failures",
            "Agent worker threads that panicked, by worker (each is restarted after a pause)",
            m.worker_failures.clone(),
        );
        registry.register(
            "netstall_source_up",
            "1 when a kernel counter source (packet-drops, cpu-throttling) reads, 0 when it is unavailable; absent when turned off",
            m.source_up.clone(),
        );
        registry.register(
            "netstall_cpu_throttled_periods",
            "CFS periods in which a CPU cgroup ran out of quota, summed over the node's CPU cgroups (nr_throttled, read in the kernel, never from cpu.stat)",
            m.cpu_throttled_periods.clone(),
        );
        registry.register(
            "netstall_cpu_throttled_seconds",
            "Time CPU cgroups' runqueues spent throttled, summed over the node's CPU cgroups and CPUs (throttled_time)",
            m.cpu_throttled_seconds.clone(),
        );
        registry.register(
            "netstall_cpu_throttled_cgroups",
            "CPU cgroups throttled between the agent's last two readings (every cgroup-interval)",
            m.cpu_throttled_cgroups.clone(),
        );
        registry.register_collector(Box::new(Arc::clone(&m.packet_drops)));
        registry.register_collector(Box::new(Arc::clone(&m.kernel_latency)));
        registry.register_collector(Box::new(crate::process::ProcessCollector::default()));
        registry.register_collector(Box::new(crate::netcounters::NetCollector::default()));
        Self { registry, ..m }
    }

    /// Counts one episode toward `peer`.
    pub fn count_episode(&self, peer: &str, kind: &'static str) {
        let labels = EpisodeLabels {
            peer: peer.to_string(),
            kind,
        };
        self.episodes.get_or_create(&labels).inc();
        self.episodes_known
            .lock()
            .expect("episode set lock")
            .insert(labels);
    }

    /// Drops the episode series of peers not in `probed`: as the mesh
    /// changes over days, series of departed peers must not pile up.
    pub fn retain_episode_peers(&self, probed: &[&str]) {
        self.episodes_known
            .lock()
            .expect("episode set lock")
            .retain(|labels| {
                let keep = probed.contains(&labels.peer.as_str());
                if !keep {
                    self.episodes.remove(labels);
                }
                keep
            });
    }

    /// Counts `seconds` of stall against a culprit, folding new label sets
    /// into `other` once [`MAX_CULPRITS`] exist.
    pub fn add_culprit_time(&self, comm: &str, syscall: &str, seconds: f64) {
        let labels = CulpritLabels {
            comm: comm.to_string(),
            syscall: syscall.to_string(),
        };
        let mut known = self.culprits_known.lock().expect("culprit set lock");
        let labels = if known.contains(&labels) || known.len() < MAX_CULPRITS - 1 {
            known.insert(labels.clone());
            labels
        } else {
            CulpritLabels {
                comm: "other".into(),
                syscall: "other".into(),
            }
        };
        self.culprit_seconds.get_or_create(&labels).inc_by(seconds);
    }

    /// The Prometheus text format (0.0.4), what `promtool check metrics` reads.
    pub fn encode_prometheus(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The OpenMetrics text format, for scrapers that ask for it.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(text: &str) -> usize {
        text.lines().filter(|l| !l.starts_with('#')).count()
    }

    #[test]
    fn a_healthy_node_exports_few_series() {
        let m = Metrics::new("node1");
        let icmp = ProtoLabels { proto: "icmp" };
        m.probe_rtt.get_or_create(&icmp).observe(0.00006);
        m.probes_sent.get_or_create(&icmp).inc();
        m.probes_lost.get_or_create(&icmp).inc_by(0);
        m.peers_probed.set(10);
        let text = m.encode_prometheus();
        assert!(
            !text.contains("netstall_memcg_dying "),
            "unknown is not 0: {text}"
        );
        m.memcg_dying.get_or_create(&Vec::new()).set(7);
        let text = m.encode_prometheus();
        assert!(text.contains("\nnetstall_memcg_dying 7\n"), "{text}");
        assert!(series(&text) <= 50, "{} series:\n{text}", series(&text));
        assert!(
            text.contains("netstall_probe_sent_total{proto=\"icmp\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("netstall_agent_info{node=\"node1\""),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(m.encode_openmetrics().ends_with("# EOF\n"));
    }

    #[test]
    fn build_limit_and_own_footprint_are_exported() {
        let m = Metrics::new("node1");
        m.memcg_dying_limit.set(2500);
        let text = m.encode_prometheus();
        let build = format!(
            "netstall_build_info{{version=\"{}\",revision=\"{REVISION}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{build} not in\n{text}");
        assert!(!REVISION.is_empty());
        assert!(
            text.contains("\nnetstall_memcg_dying_limit 2500\n"),
            "{text}"
        );
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
        // The tracer's state is absent until it is known to be wanted.
        assert!(!text.contains("netstall_tracer_up"), "{text}");
        m.tracer_up.get_or_create(&Vec::new()).set(0);
        assert!(m.encode_prometheus().contains("\nnetstall_tracer_up 0\n"));
    }

    #[test]
    fn kernel_log2_slots_become_one_histogram_per_detector() {
        let m = Metrics::new("n");
        // Two windows: 1000 packets waited 1-2 us, 3 waited 32-64 ms, one 2-4 s.
        m.kernel_latency
            .add("rx-backlog", &[(2048, 600), (1 << 26, 3)]);
        m.kernel_latency
            .add("rx-backlog", &[(2048, 400), (1 << 32, 1)]);
        let text = m.encode_prometheus();
        for line in [
            "netstall_kernel_latency_seconds_bucket{detector=\"rx-backlog\",le=\"8.192e-06\"} 1000",
            "netstall_kernel_latency_seconds_bucket{detector=\"rx-backlog\",le=\"0.033554432\"} 1000",
            "netstall_kernel_latency_seconds_bucket{detector=\"rx-backlog\",le=\"0.134217728\"} 1003",
            "netstall_kernel_latency_seconds_bucket{detector=\"rx-backlog\",le=\"+Inf\"} 1004",
            "netstall_kernel_latency_seconds_count{detector=\"rx-backlog\"} 1004",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn departed_peers_lose_their_episode_series() {
        let m = Metrics::new("n");
        m.count_episode("node2", "spike");
        m.count_episode("node3", "loss");
        m.retain_episode_peers(&["node3"]);
        let text = m.encode_prometheus();
        assert!(!text.contains("peer=\"node2\""), "{text}");
        assert!(
            text.contains("netstall_probe_episodes_total{peer=\"node3\",kind=\"loss\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn culprit_label_sets_are_capped() {
        let m = Metrics::new("n");
        for i in 0..100 {
            m.add_culprit_time(&format!("task{i}"), "read", 0.5);
        }
        let text = m.encode_prometheus();
        let culprit_series = text
            .lines()
            .filter(|l| l.starts_with("netstall_stall_culprit_seconds_total{"))
            .count();
        assert_eq!(culprit_series, MAX_CULPRITS);
        assert!(
            text.contains(
                "netstall_stall_culprit_seconds_total{comm=\"other\",syscall=\"other\"} 40.5"
            ),
            "{text}"
        );
    }
}
