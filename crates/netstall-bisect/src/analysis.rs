//! Reading the matrix: per-path statistics (the table) and the verdict.
//! Pure: takes what each path measured, returns rows and a verdict.
//!
//! 1. Each reachable path is **stalled** when its episode count is
//!    significantly above a healthy floor rate (Poisson test), **clean** when
//!    it is significantly below the least-stalled path's (conditional binomial
//!    test), and **inconclusive** otherwise.
//! 2. A stall in a layer shows on every path through it, so the suspects are
//!    the segments every stalled path crosses, less those a clean path
//!    crosses (single-fault network tomography). A clean ICMP path does not
//!    clear a layer whose TCP path to the same place stalls: ICMP hashes to
//!    one RX CPU per address pair, TCP per 4-tuple.
//! 3. Among the remaining suspects the most specific is named, the rest are
//!    listed as not told apart. Per-flow (RX queue/CPU hashing) against
//!    per-host: some TCP flows never stalled although enough episodes would
//!    have reached them, or ICMP stayed clean while TCP stalled.
//! 4. The sender's side: RTTs come from kernel timestamps taken when a reply
//!    enters the vantage point's RX backlog, so a stall on the sender's own
//!    RX CPU does not show in them; it shows in how late the prober reads the
//!    replies. Backlog releases in that wake-up series, on most paths of one
//!    vantage point, name the sender when the RTTs blame no receiving layer.

use std::collections::BTreeSet;

use netstall_events::probe::Proto;
use netstall_probe::Episode;

use crate::plan::{PathSpec, ProbeKind, Segment, Vantage};
use crate::stats::{self, Interval};
pub use netstall_events::bisect::{Analysis, Layer, PathRow, Scope, Side, Status, Verdict};

/// What one path measured.
#[derive(Debug, Clone)]
pub struct PathOutcome {
    pub spec: PathSpec,
    pub sent: u64,
    pub received: u64,
    /// How long the path was probed.
    pub seconds: f64,
    /// RTTs of the answered probes, µs.
    pub rtts_us: Vec<f64>,
    pub episodes: Vec<Episode>,
    /// Backlog releases among the replies after the kernel stamped them (the
    /// wake-up series): held on the vantage point's own host.
    pub sender_episodes: Vec<Episode>,
    /// Episodes set aside because vCPU steal covered them: the hypervisor
    /// held every path at once, no layer did.
    pub steal_episodes: u64,
    pub flows_total: u16,
    /// Why the path is unreachable (no probe answered, or it could not run).
    pub unreachable: Option<String>,
}

/// How sure the tests must be, and what counts as healthy.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Confidence of every test and interval (0.99: p < 0.01 is significant).
    pub confidence: f64,
    /// Episodes per minute a healthy path may show (the odd spike).
    pub healthy_per_min: f64,
    /// A stall rate worth finding: "no layer adds stalls" is as sure as a
    /// path with this rate would have shown more episodes than seen.
    pub finding_per_min: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            confidence: 0.99,
            healthy_per_min: 1.0,
            finding_per_min: 6.0,
        }
    }
}

impl Settings {
    fn alpha(&self) -> f64 {
        1.0 - self.confidence
    }
}

/// Reads the matrix. Confidence of a blame: (1 − the largest p-value among
/// the stalled paths) × (1 − the largest among the clean paths that cleared
/// a suspect), divided by the number of suspects left. Of "none": 1 − the
/// largest chance that a path stalling at `finding_per_min` would have shown
/// as few episodes as seen.
pub fn analyze(outcomes: &[PathOutcome], settings: &Settings) -> Analysis {
    let mut rows: Vec<PathRow> = outcomes.iter().map(|o| row(o, settings)).collect();
    classify(&mut rows, outcomes, settings);
    let verdict = verdict(&rows, outcomes, settings);
    Analysis {
        paths: rows,
        verdict,
    }
}

fn row(o: &PathOutcome, settings: &Settings) -> PathRow {
    let mut rtts = o.rtts_us.clone();
    rtts.sort_by(f64::total_cmp);
    let episodes = o.episodes.len() as u64;
    let per_min = if o.seconds > 0.0 {
        60.0 / o.seconds
    } else {
        0.0
    };
    let flows_stalled = o
        .episodes
        .iter()
        .flat_map(|e| e.flows.iter().copied())
        .collect::<BTreeSet<u16>>()
        .len() as u16;
    let reachable = o.unreachable.is_none();
    PathRow {
        name: o.spec.name.clone(),
        vantage: o.spec.vantage,
        destination: o.spec.destination,
        target: o.spec.target(),
        proto: o.spec.probe.proto(),
        probes: o.sent,
        received: o.received,
        episodes,
        episodes_per_min: round3(episodes as f64 * per_min),
        episodes_per_min_ci: round_interval(stats::rate_interval(
            episodes,
            per_min,
            settings.confidence,
        )),
        p50_us: stats::quantile(&rtts, 0.5).map(round3),
        p99_us: stats::quantile(&rtts, 0.99).map(round3),
        p99_ci_us: round_interval(stats::quantile_interval(&rtts, 0.99, settings.confidence)),
        p999_us: stats::quantile(&rtts, 0.999).map(round3),
        p999_ci_us: round_interval(stats::quantile_interval(&rtts, 0.999, settings.confidence)),
        reachable,
        unreachable_reason: o.unreachable.clone(),
        status: if reachable {
            Status::Inconclusive
        } else {
            Status::Unreachable
        },
        p_value: None,
        flows_total: o.flows_total,
        flows_stalled,
        sender_episodes: o.sender_episodes.len() as u64,
        sender_stalled: false,
        steal_episodes: o.steal_episodes,
        sender_p_value: 1.0,
        segments: o.spec.segments.clone(),
    }
}

/// Sets each reachable row's status and the p-value behind it.
fn classify(rows: &mut [PathRow], outcomes: &[PathOutcome], settings: &Settings) {
    let alpha = settings.alpha();
    for (row, o) in rows.iter_mut().zip(outcomes) {
        if !row.reachable {
            continue;
        }
        let floor = settings.healthy_per_min * o.seconds / 60.0;
        row.sender_p_value = stats::excess_p(row.sender_episodes, floor);
        let p = stats::excess_p(row.episodes, floor);
        if p < alpha {
            row.status = Status::Stalled;
            row.p_value = Some(p);
        }
    }
    compare_vantages(rows, outcomes);
    for row in rows.iter_mut() {
        row.sender_stalled = row.sender_p_value < alpha;
    }
    // The least-stalled path is the one a clean path must be clearly below.
    let reference = rows
        .iter()
        .zip(outcomes)
        .filter(|(r, _)| r.status == Status::Stalled)
        .map(|(r, o)| (r.episodes, o.seconds))
        .min_by(|a, b| (a.0 as f64 / a.1).total_cmp(&(b.0 as f64 / b.1)));
    for (row, o) in rows.iter_mut().zip(outcomes) {
        if row.status != Status::Inconclusive {
            continue;
        }
        match reference {
            None => row.status = Status::Clean,
            Some((stalled, stalled_secs)) => {
                let p = stats::fewer_p(row.episodes, o.seconds, stalled, stalled_secs);
                row.p_value = Some(p);
                if p < alpha {
                    row.status = Status::Clean;
                }
            }
        }
    }
}

/// With two vantage points, replies held on one's own host must also be
/// significantly more frequent there than on the other's: delays common to
/// both (the probers' shared CPU, the machine) are nobody's side.
fn compare_vantages(rows: &mut [PathRow], outcomes: &[PathOutcome]) {
    let totals = |vantage: Vantage| {
        rows.iter()
            .zip(outcomes)
            .filter(|(r, _)| r.vantage == vantage && r.reachable)
            .fold((0u64, 0.0f64, 0usize), |(held, secs, paths), (r, o)| {
                (held + r.sender_episodes, secs + o.seconds, paths + 1)
            })
    };
    let (client, outside) = (totals(Vantage::Client), totals(Vantage::Outside));
    if client.2 == 0 || outside.2 == 0 {
        return;
    }
    for row in rows.iter_mut() {
        let (this, other) = match row.vantage {
            Vantage::Client => (client, outside),
            Vantage::Outside => (outside, client),
        };
        let p = stats::fewer_p(other.0, other.1, this.0, this.1);
        row.sender_p_value = row.sender_p_value.max(p);
    }
}

/// Whether a clean path clears the layers it crosses: not an ICMP path whose
/// TCP sibling (same vantage point and destination) stalled.
fn clears(row: &PathRow, rows: &[PathRow]) -> bool {
    row.status == Status::Clean
        && !(row.proto == Proto::Icmp
            && rows.iter().any(|other| {
                other.status == Status::Stalled
                    && other.proto == Proto::Tcp
                    && other.vantage == row.vantage
                    && other.destination == row.destination
            }))
}

/// Suspects in the order they are preferred when several remain: the most
/// specific first (a layer only some paths cross), the shared network last.
fn specificity(segment: Segment) -> u8 {
    match segment {
        Segment::Nat => 0,
        Segment::Overlay => 1,
        Segment::Pod => 2,
        Segment::Node2 => 3,
        Segment::Node1 => 4,
        Segment::Sender(_) => 5,
        Segment::Network => 6,
    }
}

fn names(rows: &[PathRow], status: Status) -> Vec<String> {
    rows.iter()
        .filter(|r| r.status == status)
        .map(|r| r.name.clone())
        .collect()
}

fn verdict(rows: &[PathRow], outcomes: &[PathOutcome], settings: &Settings) -> Verdict {
    let stalled: Vec<&PathRow> = rows
        .iter()
        .filter(|r| r.status == Status::Stalled)
        .collect();
    let mut verdict = Verdict {
        layer: Layer::None,
        host: None,
        side: None,
        scope: None,
        confidence: 0.0,
        summary: String::new(),
        segment: None,
        not_told_apart: Vec::new(),
        stalled: names(rows, Status::Stalled),
        clean: names(rows, Status::Clean),
        inconclusive: names(rows, Status::Inconclusive),
        unreachable: names(rows, Status::Unreachable),
        tails_separate: None,
    };
    let sender = sender_side(rows);
    if stalled.is_empty() {
        if let Some((vantage, p)) = sender {
            blame_sender(&mut verdict, vantage, p);
            return verdict;
        }
        let worst = rows
            .iter()
            .zip(outcomes)
            .filter(|(r, _)| r.reachable)
            .map(|(r, o)| {
                stats::shortfall_p(r.episodes, settings.finding_per_min * o.seconds / 60.0)
            })
            .fold(None, |worst: Option<f64>, p| {
                Some(worst.map_or(p, |w| w.max(p)))
            });
        verdict.confidence = worst.map_or(0.0, |p| round3(1.0 - p));
        verdict.summary = if worst.is_some() {
            "no layer adds stalls".into()
        } else {
            "no path could be probed".into()
        };
        return verdict;
    }

    let clearing: Vec<&PathRow> = rows.iter().filter(|r| clears(r, rows)).collect();
    let mut suspects: BTreeSet<Segment> = stalled[0].segments.iter().copied().collect();
    for r in &stalled[1..] {
        suspects.retain(|s| r.segments.contains(s));
    }
    for r in &clearing {
        suspects.retain(|s| !r.segments.contains(s));
    }
    let mut suspects: Vec<Segment> = suspects.into_iter().collect();
    suspects.sort_by_key(|s| specificity(*s));

    let stalled_p = stalled.iter().filter_map(|r| r.p_value).fold(0.0, f64::max);
    let clearing_p = clearing
        .iter()
        .filter_map(|r| r.p_value)
        .fold(0.0, f64::max);
    verdict.tails_separate = tails_separate(&stalled, &clearing);

    let receiver_found = suspects
        .first()
        .is_some_and(|s| !matches!(s, Segment::Sender(_) | Segment::Network));
    if let (false, Some((vantage, p))) = (receiver_found, sender) {
        blame_sender(&mut verdict, vantage, p);
        return verdict;
    }
    let Some((&blamed, rest)) = suspects.split_first() else {
        // No single layer explains the stalled paths: several layers stall,
        // or the network does in ways the matrix cannot place.
        verdict.layer = Layer::Network;
        verdict.confidence = round3((1.0 - stalled_p) * (1.0 - clearing_p) / 2.0);
        verdict.summary =
            "stalls on paths that share no single layer: several layers (or the network) stall"
                .into();
        return verdict;
    };
    verdict.segment = Some(blamed);
    verdict.not_told_apart = rest.to_vec();
    verdict.confidence = round3((1.0 - stalled_p) * (1.0 - clearing_p) / suspects.len() as f64);
    let sender_suspected = suspects.iter().any(|s| matches!(s, Segment::Sender(_)));
    (verdict.layer, verdict.host, verdict.side) = match blamed {
        Segment::Nat => (Layer::Nat, Some("node1".into()), Some(Side::Receiver)),
        Segment::Overlay => (Layer::Overlay, None, Some(Side::Receiver)),
        Segment::Node1 => (Layer::HostRx, Some("node1".into()), Some(Side::Receiver)),
        Segment::Node2 => (Layer::HostRx, Some("node2".into()), Some(Side::Receiver)),
        Segment::Pod => (Layer::HostRx, Some("pod".into()), Some(Side::Receiver)),
        Segment::Sender(v) => (Layer::HostRx, Some(v.name().into()), Some(Side::Sender)),
        Segment::Network => (Layer::Network, None, None),
    };
    if sender_suspected && verdict.side == Some(Side::Receiver) {
        // The sender's own host was not cleared: the side is not known.
        verdict.side = None;
    }
    if blamed != Segment::Network {
        verdict.scope = Some(scope(&stalled, rows, outcomes, settings));
    }
    verdict.summary = describe(&verdict, rest);
    verdict
}

/// The vantage point whose own host held replies on most of its paths, with
/// the largest p-value among those paths; the one with the most such paths.
fn sender_side(rows: &[PathRow]) -> Option<(Vantage, f64)> {
    [Vantage::Client, Vantage::Outside]
        .into_iter()
        .filter_map(|vantage| {
            let reachable: Vec<&PathRow> = rows
                .iter()
                .filter(|r| r.vantage == vantage && r.reachable)
                .collect();
            let held: Vec<&PathRow> = reachable
                .iter()
                .copied()
                .filter(|r| r.sender_stalled)
                .collect();
            let p = held.iter().map(|r| r.sender_p_value).fold(0.0, f64::max);
            (!held.is_empty() && 2 * held.len() > reachable.len()).then_some((
                vantage,
                held.len(),
                p,
            ))
        })
        .max_by_key(|(_, held, _)| *held)
        .map(|(vantage, _, p)| (vantage, p))
}

fn blame_sender(verdict: &mut Verdict, vantage: Vantage, p: f64) {
    verdict.layer = Layer::HostRx;
    verdict.host = Some(vantage.name().into());
    verdict.side = Some(Side::Sender);
    verdict.scope = Some(Scope::PerHost);
    verdict.segment = Some(Segment::Sender(vantage));
    verdict.not_told_apart.clear();
    verdict.confidence = round3(1.0 - p);
    verdict.summary = format!(
        "sending host RX processing on {} (replies held on the vantage point's own host)",
        vantage.name()
    );
}

fn tails_separate(stalled: &[&PathRow], clearing: &[&PathRow]) -> Option<bool> {
    if clearing.is_empty() {
        return None;
    }
    let lowest_stalled = stalled
        .iter()
        .map(|r| r.p99_ci_us.low)
        .collect::<Option<Vec<f64>>>()?
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    let highest_clean = clearing
        .iter()
        .map(|r| r.p99_ci_us.high)
        .collect::<Option<Vec<f64>>>()?
        .into_iter()
        .fold(f64::NEG_INFINITY, f64::max);
    Some(lowest_stalled > highest_clean)
}

/// Per-flow when ICMP stayed clean while TCP to the same place stalled, or a
/// stalled TCP path has flows that never stalled although its episodes would
/// have reached every flow if all were exposed.
fn scope(
    stalled: &[&PathRow],
    rows: &[PathRow],
    outcomes: &[PathOutcome],
    settings: &Settings,
) -> Scope {
    let icmp_spared = stalled.iter().any(|tcp| {
        tcp.proto == Proto::Tcp
            && rows.iter().any(|icmp| {
                icmp.proto == Proto::Icmp
                    && icmp.status == Status::Clean
                    && icmp.vantage == tcp.vantage
                    && icmp.destination == tcp.destination
            })
    });
    let flows_spared = stalled.iter().any(|r| {
        let Some(o) = outcomes.iter().find(|o| o.spec.name == r.name) else {
            return false;
        };
        if !matches!(o.spec.probe, ProbeKind::Tcp { .. }) {
            return false;
        }
        let memberships: u64 = o.episodes.iter().map(|e| e.flows.len() as u64).sum();
        let spared = r.flows_total.saturating_sub(r.flows_stalled);
        stats::missing_flows_p(r.flows_total, spared, memberships) < settings.alpha()
    });
    if icmp_spared || flows_spared {
        Scope::PerFlow
    } else {
        Scope::PerHost
    }
}

fn segment_words(segment: Segment) -> String {
    match segment {
        Segment::Sender(v) => format!("the sending host ({})", v.name()),
        Segment::Network => "the network".into(),
        Segment::Node1 => "host RX on node1".into(),
        Segment::Nat => "the NodePort NAT on node1".into(),
        Segment::Overlay => "the overlay".into(),
        Segment::Node2 => "host RX on node2".into(),
        Segment::Pod => "the pod's network namespace".into(),
    }
}

fn describe(verdict: &Verdict, rest: &[Segment]) -> String {
    let mut text = match (verdict.layer, verdict.side) {
        (Layer::Nat, _) => "the NodePort NAT on node1 adds stalls".to_string(),
        (Layer::Overlay, _) => "the overlay adds stalls".to_string(),
        (Layer::HostRx, Some(Side::Sender)) => format!(
            "sending host RX processing on {}",
            verdict.host.as_deref().unwrap_or("the sender")
        ),
        (Layer::HostRx, Some(Side::Receiver)) => match verdict.host.as_deref() {
            Some("node1") => "receiving host RX processing on node1 (the NodePort's node)".into(),
            Some("pod") => "receiving RX processing for the pod (its veth, on its node)".into(),
            host => format!(
                "receiving host RX processing on {}",
                host.unwrap_or("the receiver")
            ),
        },
        (Layer::HostRx, None) => format!(
            "host RX processing on {}",
            verdict.host.as_deref().unwrap_or("a host")
        ),
        (Layer::Network, _) => "the network between the hosts".to_string(),
        (Layer::None, _) => "no layer adds stalls".to_string(),
    };
    match verdict.scope {
        Some(Scope::PerFlow) => text.push_str(", per flow (RX queue/CPU hashing)"),
        Some(Scope::PerHost) => text.push_str(", per host (every flow)"),
        None => {}
    }
    if !rest.is_empty() {
        let others: Vec<String> = rest.iter().map(|s| segment_words(*s)).collect();
        text.push_str(&format!("; not told apart from {}", others.join(", ")));
    }
    text
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn round_interval(i: Interval) -> Interval {
    Interval {
        low: i.low.map(round3),
        high: i.high.map(round3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{matrix, Destination, OutsideView, Targets, Topology};
    use netstall_probe::EpisodeKind;

    const SECONDS: f64 = 20.0;
    const FLOWS: u16 = 8;

    fn lab_paths(outside: bool) -> Vec<PathSpec> {
        let targets = Targets {
            nodeport: Some(([192, 168, 50, 1].into(), 30080)),
            pod: Some(([10, 244, 2, 10].into(), 8080)),
            node: Some([172, 31, 0, 2].into()),
            node_port: 8080,
        };
        let view = OutsideView {
            nodeport: Some(([172, 31, 0, 1].into(), 30080)),
        };
        matrix(&targets, outside.then_some(&view), Topology::Lab)
    }

    /// A backlog release holding `flows` (one probe each), `index` episodes in.
    fn episode(index: u64, flows: Vec<u16>) -> Episode {
        let start_ns = 1_000_000_000 + index * 500_000_000;
        Episode {
            kind: EpisodeKind::BacklogRelease,
            start_ns,
            end_ns: start_ns + 30_000_000,
            duration_ms: 30.0,
            uncertainty_ms: 5.0,
            probes: flows.len() as u32,
            flows_affected: flows.len() as u16,
            flows_total: FLOWS,
            first_seq: index * 50,
            last_seq: index * 50 + flows.len() as u64 - 1,
            max_rtt_us: Some(30_000.0),
            peer: None,
            node: None,
            flows,
        }
    }

    /// `count` episodes of three consecutive flows each, rotating over the
    /// flows the way a stall every 500 ms meets a 10 ms schedule.
    fn stalls(count: u64, flows: &[u16]) -> Vec<Episode> {
        (0..count)
            .map(|i| {
                let at = (i as usize * 2) % flows.len();
                let held = (0..3).map(|k| flows[(at + k) % flows.len()]).collect();
                episode(i, held)
            })
            .collect()
    }

    /// A path probed every 10 ms for 20 s, healthy RTTs of about 60 µs, and
    /// 30 ms of extra RTT for three probes per episode.
    fn outcome(spec: &PathSpec, episodes: Vec<Episode>) -> PathOutcome {
        let sent = (SECONDS * 100.0) as u64;
        let mut rtts_us: Vec<f64> = (0..sent).map(|i| 55.0 + (i % 10) as f64).collect();
        for (i, e) in episodes.iter().enumerate() {
            for k in 0..e.flows.len() {
                rtts_us[(i * 50 + k) % sent as usize] = 30_000.0 - 10_000.0 * k as f64;
            }
        }
        PathOutcome {
            spec: spec.clone(),
            sent,
            received: sent,
            seconds: SECONDS,
            rtts_us,
            episodes,
            sender_episodes: Vec::new(),
            steal_episodes: 0,
            flows_total: FLOWS,
            unreachable: None,
        }
    }

    fn run(paths: &[PathSpec], episodes: impl Fn(&PathSpec) -> Vec<Episode>) -> Analysis {
        let outcomes: Vec<PathOutcome> = paths.iter().map(|p| outcome(p, episodes(p))).collect();
        analyze(&outcomes, &Settings::default())
    }

    fn all_flows(spec: &PathSpec, count: u64) -> Vec<Episode> {
        let flows: Vec<u16> = if spec.probe == ProbeKind::Icmp {
            vec![0]
        } else {
            (0..FLOWS).collect()
        };
        stalls(count, &flows)
    }

    fn row<'a>(analysis: &'a Analysis, name: &str) -> &'a PathRow {
        analysis.paths.iter().find(|r| r.name == name).unwrap()
    }

    #[test]
    fn a_stall_on_node2s_rx_is_receiving_host_rx_on_node2() {
        let paths = lab_paths(true);
        let analysis = run(&paths, |p| {
            if p.crosses(Segment::Node2) {
                all_flows(p, 40)
            } else {
                Vec::new()
            }
        });
        let v = &analysis.verdict;
        assert_eq!(v.layer, Layer::HostRx, "{v:#?}");
        assert_eq!(v.host.as_deref(), Some("node2"));
        assert_eq!(v.side, Some(Side::Receiver));
        assert_eq!(v.scope, Some(Scope::PerHost));
        assert!(v.not_told_apart.is_empty(), "{v:#?}");
        assert!(v.confidence > 0.99, "{v:#?}");
        assert_eq!(
            v.summary,
            "receiving host RX processing on node2, per host (every flow)"
        );
        assert_eq!(v.clean, ["client/node1-tcp", "client/node1-icmp"]);
        assert_eq!(v.stalled.len(), 12);
        assert_eq!(v.tails_separate, Some(true));
        let clean = row(&analysis, "client/node1-icmp");
        assert_eq!(clean.status, Status::Clean);
        assert!(clean.p_value.unwrap() < 1e-6);
        let np = row(&analysis, "client/nodeport-tcp");
        assert_eq!(np.episodes, 40);
        assert_eq!(np.episodes_per_min, 120.0);
        let ci = np.episodes_per_min_ci;
        assert!(
            ci.low.unwrap() < 120.0 && 120.0 < ci.high.unwrap(),
            "{ci:?}"
        );
        assert!(np.p99_ci_us.low.unwrap() > 1_000.0, "{np:#?}");
    }

    #[test]
    fn a_stall_only_on_node1_blames_the_nodeport_hop_and_clears_the_direct_paths() {
        let paths = lab_paths(true);
        let analysis = run(&paths, |p| {
            if p.crosses(Segment::Node1) {
                all_flows(p, 40)
            } else {
                Vec::new()
            }
        });
        let v = &analysis.verdict;
        assert_eq!(
            (v.layer, v.host.as_deref(), v.side),
            (Layer::HostRx, Some("node1"), Some(Side::Receiver)),
            "{v:#?}"
        );
        assert!(v.stalled.contains(&"client/nodeport-tcp".to_string()));
        for direct in [
            "outside/pod-tcp",
            "outside/pod-icmp",
            "outside/node2-tcp",
            "outside/node2-icmp",
        ] {
            assert_eq!(row(&analysis, direct).status, Status::Clean, "{direct}");
        }
    }

    #[test]
    fn without_a_second_vantage_point_the_sender_is_not_told_apart() {
        let paths = lab_paths(false);
        let analysis = run(&paths, |p| all_flows(p, 40));
        let v = &analysis.verdict;
        assert_eq!((v.layer, v.host.as_deref()), (Layer::HostRx, Some("node1")));
        assert_eq!(v.side, None, "the client's own host is still a suspect");
        assert_eq!(
            v.not_told_apart,
            [Segment::Sender(Vantage::Client), Segment::Network]
        );
        assert!(v.confidence < 0.34, "{v:#?}");
        assert!(
            v.summary
                .contains("not told apart from the sending host (client)"),
            "{}",
            v.summary
        );
    }

    #[test]
    fn stalls_only_behind_the_nodeport_blame_nat() {
        let paths = lab_paths(true);
        let analysis = run(&paths, |p| {
            if p.crosses(Segment::Nat) {
                all_flows(p, 30)
            } else {
                Vec::new()
            }
        });
        let v = &analysis.verdict;
        assert_eq!(v.layer, Layer::Nat, "{v:#?}");
        assert_eq!(
            v.summary,
            "the NodePort NAT on node1 adds stalls, per host (every flow)"
        );
    }

    #[test]
    fn stalls_on_the_overlay_paths_only_blame_the_overlay() {
        let paths = lab_paths(true);
        let analysis = run(&paths, |p| {
            if p.crosses(Segment::Overlay) {
                all_flows(p, 30)
            } else {
                Vec::new()
            }
        });
        assert_eq!(
            analysis.verdict.layer,
            Layer::Overlay,
            "{:#?}",
            analysis.verdict
        );
    }

    #[test]
    fn no_injection_is_no_layer() {
        let paths = lab_paths(true);
        // The odd spike is healthy.
        let analysis = run(&paths, |p| {
            if p.name == "client/pod-tcp" {
                stalls(1, &[3])
            } else {
                Vec::new()
            }
        });
        let v = &analysis.verdict;
        assert_eq!(v.layer, Layer::None, "{v:#?}");
        assert_eq!(v.summary, "no layer adds stalls");
        assert_eq!(v.stalled, Vec::<String>::new());
        assert_eq!(v.clean.len(), 14);
        // A path stalling 6 times a minute shows 2 episodes in 20 s on average;
        // one with at most one episode is 1 - P(X <= 1 | 2) = 0.594 sure.
        assert!((v.confidence - 0.594).abs() < 0.001, "{v:#?}");
    }

    #[test]
    fn a_few_episodes_are_not_enough_to_blame() {
        let paths = lab_paths(true);
        let analysis = run(&paths, |p| {
            if p.crosses(Segment::Node2) {
                all_flows(p, 2)
            } else {
                Vec::new()
            }
        });
        assert_eq!(
            analysis.verdict.layer,
            Layer::None,
            "{:#?}",
            analysis.verdict
        );
        assert!(analysis.verdict.confidence < 0.5);
    }

    #[test]
    fn a_path_as_bad_as_the_stalled_ones_is_not_called_clean() {
        let paths = lab_paths(true);
        // The client's node1 paths: 2 episodes in 20 s, neither significantly
        // above the healthy floor nor significantly below the stalled paths' 6.
        let analysis = run(&paths, |p| {
            if p.crosses(Segment::Node2) {
                all_flows(p, 6)
            } else if p.vantage == Vantage::Client {
                all_flows(p, 2)
            } else {
                Vec::new()
            }
        });
        assert_eq!(
            row(&analysis, "client/node1-tcp").status,
            Status::Inconclusive
        );
        assert!(analysis
            .verdict
            .inconclusive
            .contains(&"client/node1-icmp".to_string()));
    }

    #[test]
    fn an_unreachable_pod_is_reported_and_the_rest_still_judged() {
        let paths = lab_paths(true);
        let mut outcomes: Vec<PathOutcome> = paths
            .iter()
            .map(|p| {
                let episodes = if p.crosses(Segment::Node2) {
                    all_flows(p, 40)
                } else {
                    Vec::new()
                };
                outcome(p, episodes)
            })
            .collect();
        for o in outcomes
            .iter_mut()
            .filter(|o| o.spec.destination == Destination::Pod)
        {
            o.received = 0;
            o.rtts_us.clear();
            o.episodes.clear();
            o.unreachable = Some("target 10.244.2.99 is unreachable: ICMP host unreachable".into());
        }
        let analysis = analyze(&outcomes, &Settings::default());
        let v = &analysis.verdict;
        assert_eq!(v.unreachable.len(), 4, "{v:#?}");
        let pod = row(&analysis, "client/pod-icmp");
        assert!(!pod.reachable && pod.status == Status::Unreachable);
        assert_eq!(pod.p99_us, None);
        assert_eq!((v.layer, v.host.as_deref()), (Layer::HostRx, Some("node2")));
        let json = serde_json::to_value(&analysis).unwrap();
        assert_eq!(json["paths"][1]["reachable"], false);
        assert!(json["paths"][1]["unreachable_reason"]
            .as_str()
            .unwrap()
            .contains("unreachable"));
    }

    #[test]
    fn tcp_flows_that_never_stall_and_clean_icmp_mean_per_flow() {
        let paths = lab_paths(false);
        // Half the flows hash to the stalled RX CPU on node2; ICMP does not.
        let analysis = run(&paths, |p| match p.probe {
            ProbeKind::Tcp { .. } if p.crosses(Segment::Node2) => stalls(40, &[1, 3, 4, 6]),
            _ => Vec::new(),
        });
        let v = &analysis.verdict;
        assert_eq!(
            (v.layer, v.host.as_deref()),
            (Layer::HostRx, Some("node2")),
            "{v:#?}"
        );
        assert_eq!(v.scope, Some(Scope::PerFlow));
        assert_eq!(row(&analysis, "client/pod-tcp").flows_stalled, 4);
        assert!(
            v.summary.ends_with("per flow (RX queue/CPU hashing)"),
            "{}",
            v.summary
        );
    }

    #[test]
    fn stalls_with_no_common_layer_are_not_pinned_on_one() {
        let paths = lab_paths(true);
        // node1-only from the client and node2-only from outside: no single layer.
        let analysis = run(&paths, |p| match p.name.as_str() {
            "client/node1-icmp" | "outside/node2-icmp" => all_flows(p, 40),
            _ => Vec::new(),
        });
        assert_eq!(
            analysis.verdict.layer,
            Layer::Network,
            "{:#?}",
            analysis.verdict
        );
        assert!(analysis.verdict.segment.is_none());
    }

    /// The matrix with RTT episodes from `episodes` and replies held on the
    /// vantage point's own host (wake-up series) from `held`.
    fn run_with_held(
        paths: &[PathSpec],
        episodes: impl Fn(&PathSpec) -> Vec<Episode>,
        held: impl Fn(&PathSpec) -> Vec<Episode>,
    ) -> Analysis {
        let outcomes: Vec<PathOutcome> = paths
            .iter()
            .map(|p| PathOutcome {
                sender_episodes: held(p),
                steal_episodes: 0,
                ..outcome(p, episodes(p))
            })
            .collect();
        analyze(&outcomes, &Settings::default())
    }

    #[test]
    fn replies_held_on_the_clients_own_host_are_the_sender_side() {
        let paths = lab_paths(true);
        let analysis = run_with_held(
            &paths,
            |_| Vec::new(),
            |p| {
                if p.vantage == Vantage::Client {
                    stalls(40, &[0])
                } else {
                    Vec::new()
                }
            },
        );
        let v = &analysis.verdict;
        assert_eq!(
            (v.layer, v.host.as_deref(), v.side),
            (Layer::HostRx, Some("client"), Some(Side::Sender)),
            "{v:#?}"
        );
        assert_eq!(v.segment, Some(Segment::Sender(Vantage::Client)));
        assert!(v.confidence > 0.99);
        assert!(v
            .summary
            .starts_with("sending host RX processing on client"));
        let client = row(&analysis, "client/pod-icmp");
        assert!(client.sender_stalled && client.sender_episodes == 40);
        assert!(!row(&analysis, "outside/pod-icmp").sender_stalled);
    }

    #[test]
    fn held_replies_explain_rtt_stalls_that_share_no_receiving_layer() {
        // As measured with the client's RX on the stalled CPU: only the TCP
        // replies of the nodes' own sockets carry the wait in their RTT.
        let paths = lab_paths(true);
        let analysis = run_with_held(
            &paths,
            |p| match p.name.as_str() {
                "client/node1-tcp" | "client/node2-tcp" => all_flows(p, 24),
                _ => Vec::new(),
            },
            |p| {
                if p.vantage == Vantage::Client {
                    stalls(24, &[0])
                } else {
                    Vec::new()
                }
            },
        );
        let v = &analysis.verdict;
        assert_eq!(
            (v.host.as_deref(), v.side),
            (Some("client"), Some(Side::Sender)),
            "{v:#?}"
        );
    }

    #[test]
    fn replies_held_as_often_from_both_vantage_points_are_nobodys_side() {
        // The probers share one CPU: its hiccups delay every reply alike.
        let paths = lab_paths(true);
        let analysis = run_with_held(&paths, |_| Vec::new(), |_| stalls(3, &[0]));
        let v = &analysis.verdict;
        assert_eq!(v.layer, Layer::None, "{v:#?}");
        assert!(analysis.paths.iter().all(|r| !r.sender_stalled));
        // With one vantage point there is nothing to compare with: 3 in 20 s
        // is above the healthy floor.
        let analysis = run_with_held(&lab_paths(false), |_| Vec::new(), |_| stalls(3, &[0]));
        assert_eq!(analysis.verdict.side, Some(Side::Sender));
    }

    #[test]
    fn a_receiving_layer_found_in_the_rtts_outranks_a_few_held_replies() {
        let paths = lab_paths(true);
        let analysis = run_with_held(
            &paths,
            |p| {
                if p.crosses(Segment::Node2) {
                    all_flows(p, 40)
                } else {
                    Vec::new()
                }
            },
            |p| {
                if p.name == "client/pod-tcp" {
                    stalls(10, &[0])
                } else {
                    Vec::new()
                }
            },
        );
        let v = &analysis.verdict;
        assert_eq!(
            (v.host.as_deref(), v.side),
            (Some("node2"), Some(Side::Receiver))
        );
        assert!(row(&analysis, "client/pod-tcp").sender_stalled);
    }

    #[test]
    fn the_json_line_has_the_contract_fields() {
        let paths = lab_paths(false);
        let analysis = run(&paths, |_| Vec::new());
        let json = serde_json::to_value(&analysis).unwrap();
        for field in [
            "name",
            "target",
            "proto",
            "probes",
            "episodes",
            "p99_us",
            "reachable",
        ] {
            assert!(json["paths"][0].get(field).is_some(), "{field}");
        }
        assert_eq!(json["verdict"]["layer"], "none");
        assert!(json["verdict"]["confidence"].is_number());
        assert_eq!(json["paths"][0]["proto"], "tcp");
        assert_eq!(json["paths"][0]["target"], "192.168.50.1:30080");
    }
}
