//! `netstall bisect`'s record: every probed path of the matrix with its
//! numbers, and the verdict on which layer adds the stalls.

use std::fmt;

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

/// The table of paths, what was set aside, and the verdict.
impl fmt::Display for BisectRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = format!("{:.0}%", self.confidence * 100.0);
        writeln!(
            f,
            "{:<21} {:<19} {:<5} {:>6} {:>6} {:>5} {:>5} {:>22} {:>9} {:>22} {:>9} {:>22}  status",
            "path",
            "target",
            "proto",
            "sent",
            "recv",
            "eps",
            "held",
            format!("eps/min [{level}]"),
            "p99 ms",
            format!("p99 [{level}]"),
            "p99.9 ms",
            format!("p99.9 [{level}]"),
        )?;
        for r in &self.analysis.paths {
            let rate = format!(
                "{:.1} [{:.1}, {:.1}]",
                r.episodes_per_min,
                r.episodes_per_min_ci.low.unwrap_or(0.0),
                r.episodes_per_min_ci.high.unwrap_or(0.0)
            );
            let status = match (&r.unreachable_reason, r.status) {
                (Some(reason), _) => format!("unreachable: {reason}"),
                (None, status) => format!("{status:?}").to_lowercase(),
            };
            writeln!(
                f,
                "{:<21} {:<19} {:<5} {:>6} {:>6} {:>5} {:>5} {:>22} {:>9} {:>22} {:>9} {:>22}  {}",
                r.name,
                r.target,
                r.proto,
                r.probes,
                r.received,
                r.episodes,
                r.sender_episodes,
                rate,
                ms(r.p99_us),
                r.p99_ci_us.in_ms(),
                ms(r.p999_us),
                r.p999_ci_us.in_ms(),
                status
            )?;
        }
        writeln!(
            f,
            "eps: stall episodes in the RTTs; held: replies held on the vantage point's own host \
             (after the kernel received them)"
        )?;
        let stolen: u64 = self.analysis.paths.iter().map(|r| r.steal_episodes).sum();
        if stolen > 0 {
            writeln!(
                f,
                "set aside: {stolen} episode(s) covered by vCPU steal (the hypervisor held every path at once)"
            )?;
        }
        let v = &self.analysis.verdict;
        write!(f, "verdict: {} (confidence {:.3})", v.summary, v.confidence)?;
        if let Some(separate) = v.tails_separate {
            write!(
                f,
                "\ntails: stalled paths' p99 {} the clean paths'",
                if separate {
                    "significantly above"
                } else {
                    "not significantly above"
                }
            )?;
        }
        Ok(())
    }
}

/// Microseconds as milliseconds with three decimals; `-` when unknown.
fn ms(us: Option<f64>) -> String {
    us.map_or("-".into(), |us| format!("{:.3}", us / 1e3))
}

impl Interval {
    /// A microsecond interval in milliseconds: `[low, high]`, `∞` when unbounded above.
    fn in_ms(self) -> String {
        format!(
            "[{}, {}]",
            ms(self.low),
            self.high.map_or("∞".into(), |h| ms(Some(h)))
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::{parse_line, Record};

    /// docs/json.md's example.
    const RUN: &str = r#"{"type":"bisect","interval_us":10000.0,"duration_s":30.0,"flows":4,"confidence":0.95,"paths":[{"name":"client/pod-tcp","vantage":"client","destination":"pod","target":"10.244.2.10:8080","proto":"tcp","probes":3000,"received":3000,"episodes":4,"episodes_per_min":8.0,"episodes_per_min_ci":{"low":2.2,"high":20.5},"p50_us":95.0,"p99_us":48000.0,"p99_ci_us":{"low":30000.0,"high":60000.0},"p999_us":110000.0,"p999_ci_us":{"low":null,"high":null},"reachable":true,"status":"stalled","p_value":0.001,"flows_total":4,"flows_stalled":4,"sender_episodes":0,"sender_stalled":false,"steal_episodes":0,"sender_p_value":1.0,"segments":[{"sender":"client"},"network","overlay","node2","pod"]}],"verdict":{"layer":"host-rx","host":"node2","side":"receiver","scope":"per-host","confidence":0.9,"summary":"node2's RX processing adds the stalls","segment":"node2","not_told_apart":[],"stalled":["client/pod-tcp"],"clean":[],"inconclusive":[],"unreachable":[],"tails_separate":true}}"#;

    #[test]
    fn the_table_has_a_row_per_path_then_the_verdict() {
        let Ok(Record::Bisect(run)) = parse_line(RUN) else {
            panic!("docs/json.md's bisect example parses");
        };
        let text = run.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("path "), "{}", lines[0]);
        assert!(lines[0].contains("eps/min [95%]") && lines[0].ends_with("  status"));
        let row = lines[1];
        assert!(
            row.starts_with("client/pod-tcp        10.244.2.10:8080    tcp"),
            "{row}"
        );
        assert!(row.contains("8.0 [2.2, 20.5]"), "{row}");
        assert!(row.contains("48.000       [30.000, 60.000]"), "{row}");
        assert!(
            row.contains("110.000                 [-, ∞]  stalled"),
            "{row}"
        );
        assert!(lines[2].starts_with("eps: stall episodes"));
        assert_eq!(
            lines[3],
            "verdict: node2's RX processing adds the stalls (confidence 0.900)"
        );
        assert_eq!(
            lines[4],
            "tails: stalled paths' p99 significantly above the clean paths'"
        );
    }
}
