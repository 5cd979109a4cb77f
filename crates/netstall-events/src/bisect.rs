//! `netstall bisect`'s record: every probed path of the matrix with its
//! numbers, and the verdict on which layer adds the stalls.

use serde::{Deserialize, Serialize};

use crate::probe::Proto;

/// A layer a path crosses. A stall in a segment shows on every path through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Segment {
    /// The vantage point's own host (it sends, and receives the replies).
    Sender(Vantage),
    /// The network between the hosts (shared by every path).
    Network,
    /// Host RX processing on the node that receives the NodePort traffic.
    Node1,
    /// The NodePort's DNAT (kube-proxy).
    Nat,
    /// The overlay (VXLAN/IPIP encapsulation between the nodes).
    Overlay,
    /// Host RX processing on the pod's node.
    Node2,
    /// The pod's own network namespace.
    Pod,
}

/// Where probes leave from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vantage {
    /// The main vantage point (the client; `--netns` or this host).
    Client,
    /// The second vantage point, outside the cluster (`--from-host`).
    Outside,
}

/// What the path aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    NodePort,
    Pod,
    /// The pod's node.
    Node2,
    /// The NodePort's node, without the NodePort.
    Node1,
}

/// A two-sided interval around an estimate. `None` bounds are unbounded
/// (too few samples to bound that side).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: Option<f64>,
    pub high: Option<f64>,
}

/// What a path's numbers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Stalled,
    Clean,
    Inconclusive,
    Unreachable,
}

/// One row of the table (the `paths` of the `bisect` JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathRow {
    pub name: String,
    pub vantage: Vantage,
    pub destination: Destination,
    pub target: String,
    pub proto: Proto,
    /// Probes sent.
    pub probes: u64,
    pub received: u64,
    pub episodes: u64,
    pub episodes_per_min: f64,
    pub episodes_per_min_ci: Interval,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p99_ci_us: Interval,
    pub p999_us: Option<f64>,
    pub p999_ci_us: Interval,
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_reason: Option<String>,
    pub status: Status,
    /// p-value of the test behind `status` (stalled: above the healthy
    /// floor; clean: below the least-stalled path).
    pub p_value: Option<f64>,
    pub flows_total: u16,
    /// Flows that took part in at least one episode.
    pub flows_stalled: u16,
    /// Replies held on the vantage point's own host (see the path outcome).
    pub sender_episodes: u64,
    /// Whether `sender_episodes` is significantly above the healthy floor.
    pub sender_stalled: bool,
    /// Episodes vCPU steal covered, not counted in `episodes`.
    pub steal_episodes: u64,
    pub sender_p_value: f64,
    pub segments: Vec<Segment>,
}

/// Which layer adds stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    Nat,
    Overlay,
    HostRx,
    Network,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Sender,
    Receiver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Only some flows stall: RX queue/CPU hashing.
    PerFlow,
    /// Every flow through the layer stalls.
    PerHost,
}

/// The verdict (the `verdict` of the `bisect` JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub layer: Layer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<Side>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// 0..1: how sure the tests behind the verdict are .
    pub confidence: f64,
    /// The verdict in words.
    pub summary: String,
    /// The segment blamed, and those the matrix could not tell from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<Segment>,
    pub not_told_apart: Vec<Segment>,
    pub stalled: Vec<String>,
    pub clean: Vec<String>,
    pub inconclusive: Vec<String>,
    pub unreachable: Vec<String>,
    /// Whether the tails agree: every stalled path's p99 is significantly
    /// above every clean path's (their intervals do not overlap).
    pub tails_separate: Option<bool>,
}

/// The table and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub paths: Vec<PathRow>,
    pub verdict: Verdict,
}

impl Vantage {
    pub fn name(self) -> &'static str {
        match self {
            Vantage::Client => "client",
            Vantage::Outside => "outside",
        }
    }
}

impl Destination {
    pub fn name(self) -> &'static str {
        match self {
            Destination::NodePort => "nodeport",
            Destination::Pod => "pod",
            Destination::Node2 => "node2",
            Destination::Node1 => "node1",
        }
    }
}

/// The `{"type":"bisect"}` record: the run's settings and its analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BisectRun {
    pub interval_us: f64,
    pub duration_s: f64,
    pub flows: u16,
    /// The confidence level the tests were run at.
    pub confidence: f64,
    #[serde(flatten)]
    pub analysis: Analysis,
}
