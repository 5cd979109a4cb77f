//! The network causes: packet drops with the kernel's reason, TCP
//! retransmits, backlog and listen-queue overflows, conntrack drops.
//!
//! Trust: normal consumption never reaches here (the kernel program does
//! not count those reasons), and a few stray drops or retransmits are not a
//! cause: each needs a probe episode lining up with it, or a count that no
//! healthy node shows in one run ([`MIN_DROPS`], ...). Without an episode a
//! cause is `degraded` unless its count alone is a fault ([`FAULT_DROPS`], ...).

use std::collections::{BTreeMap, BTreeSet};

use netstall_events::net::{PacketDrops, RetransmitKind, Retransmits};
use netstall_probe::episodes::Episode;

use super::{
    overlaps, plural, remediation, round1, round2, targets_of, title, worst_episode, Cause,
    CauseId, Grade, Severity, TargetEpisode, ALIGN_SLACK_NS,
};
use crate::findings::Findings;

/// Drop reasons of a queue that overflowed: `backlog-overflow`, not `packet-drops`.
pub const BACKLOG_REASONS: &[&str] = &["CPU_BACKLOG", "TCP_LISTEN_OVERFLOW", "SOCKET_BACKLOG"];

/// Without a probe episode lining up, fewer drops than this in a run are
/// not a cause (a malformed packet, a martian: every node has a few).
pub const MIN_DROPS: u64 = 10;
/// ... and this many are a fault by themselves.
pub const FAULT_DROPS: u64 = 100;
/// The same for retransmits.
pub const MIN_RETRANSMITS: u64 = 10;
pub const FAULT_RETRANSMITS: u64 = 100;
/// Packets a queue overflow or conntrack dropped that make a fault: each
/// is a lost SYN (1 s) or DNS query (5 s).
pub const FAULT_QUEUE_DROPS: u64 = 3;

fn cause_of_reason(reason: &str) -> CauseId {
    if BACKLOG_REASONS.contains(&reason) {
        CauseId::BacklogOverflow
    } else {
        CauseId::PacketDrops
    }
}

fn around(start_ns: u64, end_ns: u64) -> (u64, u64) {
    (
        start_ns.saturating_sub(ALIGN_SLACK_NS),
        end_ns + ALIGN_SLACK_NS,
    )
}

/// The network cause a probe episode lines up with: a drop (its reason's
/// cause) first, then a retransmit.
pub(super) fn explains(findings: &Findings, e: &Episode) -> Option<CauseId> {
    let episode = (e.start_ns, e.end_ns);
    let dropped = findings
        .drops
        .iter()
        .filter(|d| overlaps(episode, around(d.start_ns, d.end_ns)))
        .max_by_key(|d| d.count);
    if let Some(d) = dropped {
        return Some(cause_of_reason(&d.reason));
    }
    findings
        .retransmits
        .iter()
        .any(|r| overlaps(episode, around(r.start_ns, r.end_ns)))
        .then_some(CauseId::TcpRetransmits)
}

/// A drop site: reason, location, device.
type Site = (String, String, Option<String>);

/// One line per drop site, most drops first (at most `limit`).
fn site_lines(drops: &[&PacketDrops], limit: usize) -> Vec<String> {
    let mut sites: BTreeMap<Site, (u64, BTreeSet<u32>)> = BTreeMap::new();
    for d in drops {
        let site = sites
            .entry((d.reason.clone(), d.location.clone(), d.device()))
            .or_default();
        site.0 += d.count;
        site.1.insert(d.cpu);
    }
    let mut sites: Vec<_> = sites.into_iter().collect();
    sites.sort_by_key(|s| std::cmp::Reverse(s.1 .0));
    sites
        .into_iter()
        .take(limit)
        .map(|((reason, location, device), (count, cpus))| {
            format!(
                "{count} × reason {reason} at {location}, CPU {}{}",
                netstall_core::cpu::format_list(&cpus.into_iter().collect::<Vec<_>>()),
                device.map(|d| format!(", device {d}")).unwrap_or_default()
            )
        })
        .collect()
}

fn cpus_of(drops: &[&PacketDrops]) -> (Option<u32>, Vec<u32>) {
    let mut per_cpu: BTreeMap<u32, u64> = BTreeMap::new();
    for d in drops {
        *per_cpu.entry(d.cpu).or_default() += d.count;
    }
    let top = per_cpu.iter().max_by_key(|(_, n)| **n).map(|(c, _)| *c);
    (top, per_cpu.into_keys().collect())
}

/// A network cause, graded: by its episodes like every cause, and by its
/// count (`fault`: unhealthy alone).
#[allow(clippy::too_many_arguments)]
fn cause(
    id: CauseId,
    named: Option<String>,
    (cpu, cpus): (Option<u32>, Vec<u32>),
    episodes: &[TargetEpisode],
    fault: bool,
    mut evidence: Vec<String>,
    confidence: f64,
    grade: &Grade,
) -> Cause {
    let eps: Vec<&Episode> = episodes.iter().map(|(_, _, e)| *e).collect();
    let (by_episodes, time_pct, probes_pct) = grade.severity(id.origin(), &[], &eps);
    let severity = if fault {
        Severity::Unhealthy
    } else {
        by_episodes
    };
    if !episodes.is_empty() {
        evidence.push(format!(
            "{} probe episode{} (worst {:.1} ms, toward {}) line up with them",
            episodes.len(),
            plural(episodes.len()),
            worst_episode(episodes),
            targets_of(episodes)
        ));
    }
    Cause {
        id,
        title: title(id).to_owned(),
        origin: id.origin(),
        severity,
        confidence: round2(if episodes.is_empty() {
            confidence
        } else {
            (confidence + 0.25).min(0.95)
        }),
        cpu,
        cpus,
        named,
        culprit: None,
        stalls: 0,
        episodes: episodes.len(),
        worst_ms: round1(worst_episode(episodes)),
        time_pct,
        probes_pct,
        evidence,
        remediation: remediation(id),
    }
}

fn retransmit_lines(retransmits: &[Retransmits]) -> Vec<String> {
    let total: u64 = retransmits.iter().map(|r| r.count).sum();
    let of = |pred: &dyn Fn(&Retransmits) -> bool| -> u64 {
        retransmits
            .iter()
            .filter(|r| pred(r))
            .map(|r| r.count)
            .sum()
    };
    let syn = of(&|r| r.kind == RetransmitKind::Segment && r.state == "SYN_SENT");
    let synack = of(&|r| r.kind == RetransmitKind::Synack);
    let mut flows: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in retransmits {
        *flows
            .entry((
                r.flow(),
                format!("{:?}", r.kind).to_lowercase() + " " + &r.state,
            ))
            .or_default() += r.count;
    }
    let mut flows: Vec<_> = flows.into_iter().collect();
    flows.sort_by_key(|f| std::cmp::Reverse(f.1));
    let mut lines = vec![format!(
        "{total} retransmit{} ({syn} SYN{}, {synack} SYN-ACK{}, {} data) in {} flow{}",
        plural(total as usize),
        plural(syn as usize),
        plural(synack as usize),
        total - syn - synack,
        flows.len(),
        plural(flows.len())
    )];
    lines.extend(
        flows
            .into_iter()
            .take(3)
            .map(|((flow, what), n)| format!("{n} × {flow} ({what})")),
    );
    lines
}

/// The network causes of a run, with the episodes [`explains`] gave each.
pub(super) fn causes(
    findings: &Findings,
    episodes: &BTreeMap<CauseId, Vec<TargetEpisode>>,
    grade: &Grade,
) -> Vec<Cause> {
    let none = Vec::new();
    let eps = |id| episodes.get(&id).unwrap_or(&none);
    let mut causes = Vec::new();
    let seconds = findings.end_ns.saturating_sub(findings.start_ns) as f64 / 1e9;

    // packet-drops: every reason but the queues'.
    let drops: Vec<&PacketDrops> = findings
        .drops
        .iter()
        .filter(|d| cause_of_reason(&d.reason) == CauseId::PacketDrops)
        .collect();
    let dropped: u64 = drops.iter().map(|d| d.count).sum();
    if dropped >= MIN_DROPS || (dropped > 0 && !eps(CauseId::PacketDrops).is_empty()) {
        let mut per_reason: BTreeMap<&str, u64> = BTreeMap::new();
        for d in &drops {
            *per_reason.entry(&d.reason).or_default() += d.count;
        }
        let main = per_reason
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(r, _)| (*r).to_owned());
        let mut evidence = vec![format!(
            "{dropped} packet{} dropped in {seconds:.0} s (reasons as the kernel names them)",
            plural(dropped as usize)
        )];
        evidence.extend(site_lines(&drops, 5));
        let resent: u64 = findings.retransmits.iter().map(|r| r.count).sum();
        if resent > 0 {
            evidence.push(format!(
                "{resent} TCP retransmit{} in the same run: senders resent what was lost",
                plural(resent as usize)
            ));
        }
        causes.push(cause(
            CauseId::PacketDrops,
            main,
            cpus_of(&drops),
            eps(CauseId::PacketDrops),
            dropped >= FAULT_DROPS,
            evidence,
            0.6,
            grade,
        ));
    }

    // tcp-retransmits.
    let resent: u64 = findings.retransmits.iter().map(|r| r.count).sum();
    if resent >= MIN_RETRANSMITS || (resent > 0 && !eps(CauseId::TcpRetransmits).is_empty()) {
        let mut evidence = retransmit_lines(&findings.retransmits);
        if let Some(net) = &findings.net {
            for name in [
                "Tcp.RetransSegs",
                "TcpExt.TCPTimeouts",
                "TcpExt.TCPSynRetrans",
            ] {
                if net.snmp(name) > 0 {
                    evidence.push(format!("{name} +{} (netstall's netns)", net.snmp(name)));
                }
            }
        }
        causes.push(cause(
            CauseId::TcpRetransmits,
            None,
            (None, Vec::new()),
            eps(CauseId::TcpRetransmits),
            resent >= FAULT_RETRANSMITS,
            evidence,
            0.5,
            grade,
        ));
    }

    // backlog-overflow: a CPU's backlog, a listen queue, a socket backlog.
    let queue_drops: Vec<&PacketDrops> = findings
        .drops
        .iter()
        .filter(|d| cause_of_reason(&d.reason) == CauseId::BacklogOverflow)
        .collect();
    let by_reason = |reason: &str| -> u64 {
        queue_drops
            .iter()
            .filter(|d| d.reason == reason)
            .map(|d| d.count)
            .sum()
    };
    let mut evidence = Vec::new();
    let mut cpus: BTreeSet<u32> = queue_drops.iter().map(|d| d.cpu).collect();
    let (mut backlog, mut listen, mut socket) = (
        by_reason("CPU_BACKLOG"),
        by_reason("TCP_LISTEN_OVERFLOW"),
        by_reason("SOCKET_BACKLOG"),
    );
    if let Some(net) = &findings.net {
        let softnet_dropped: u64 = net.softnet.iter().map(|c| c.dropped).sum();
        backlog = backlog.max(softnet_dropped);
        listen = listen.max(net.snmp("TcpExt.ListenOverflows"));
        socket = socket.max(net.snmp("TcpExt.TCPBacklogDrop"));
        for c in net.softnet.iter().filter(|c| c.dropped > 0) {
            cpus.insert(c.cpu);
            evidence.push(format!(
                "CPU {}: {} packet{} dropped from its input backlog (softnet_stat; net.core.netdev_max_backlog), NET_RX out of budget {} time{} (time_squeeze)",
                c.cpu,
                c.dropped,
                plural(c.dropped as usize),
                c.time_squeeze,
                plural(c.time_squeeze as usize)
            ));
        }
        for name in [
            "TcpExt.ListenOverflows",
            "TcpExt.ListenDrops",
            "TcpExt.TCPBacklogDrop",
        ] {
            if net.snmp(name) > 0 {
                evidence.push(format!("{name} +{} (netstall's netns)", net.snmp(name)));
            }
        }
    }
    evidence.extend(site_lines(&queue_drops, 3));
    let overflowed = backlog + listen + socket;
    if overflowed > 0 {
        evidence.insert(
            0,
            format!(
                "{overflowed} packet{} dropped by full queues: {backlog} CPU backlog, {listen} listen queue, {socket} socket backlog",
                plural(overflowed as usize)
            ),
        );
        let top = queue_drops
            .iter()
            .max_by_key(|d| d.count)
            .map(|d| d.reason.clone());
        let cpus: Vec<u32> = cpus.into_iter().collect();
        causes.push(cause(
            CauseId::BacklogOverflow,
            top,
            (cpus.first().copied().filter(|_| cpus.len() == 1), cpus),
            eps(CauseId::BacklogOverflow),
            overflowed >= FAULT_QUEUE_DROPS,
            evidence,
            0.6,
            grade,
        ));
    }

    // conntrack-drops.
    if let Some(ct) = findings.net.as_ref().and_then(|n| n.conntrack.as_ref()) {
        if ct.dropped() > 0 {
            causes.push(cause(
                CauseId::ConntrackDrops,
                None,
                (None, Vec::new()),
                &[],
                ct.dropped() >= FAULT_QUEUE_DROPS,
                vec![format!(
                    "nf_conntrack: insert_failed +{}, drop +{}, early_drop +{} in {seconds:.0} s ({} entries at the end; /proc/net/stat/nf_conntrack)",
                    ct.insert_failed, ct.drop, ct.early_drop, ct.entries
                )],
                0.6,
                grade,
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{diagnose, Status};
    use crate::findings::TargetFindings;
    use netstall_events::net::{ConntrackDelta, NetCounters, SoftnetDelta};
    use netstall_probe::episodes::EpisodeKind;

    const T0: u64 = 1_700_000_000_000_000_000;
    const MS: u64 = 1_000_000;

    fn run_of(seconds: u64) -> Findings {
        Findings {
            start_ns: T0,
            end_ns: T0 + seconds * 1_000 * MS,
            steal_source: Some(netstall_events::kernel::StealSource::ProcStat),
            drop_counter: Some(crate::findings::SamplerState::Ran),
            ..Findings::default()
        }
    }

    fn drops(at_ms: u64, reason: &str, count: u64) -> PacketDrops {
        PacketDrops {
            start_ns: T0 + at_ms * MS,
            end_ns: T0 + (at_ms + 900) * MS,
            reason: reason.into(),
            location: "nft_do_chain".into(),
            cpu: 1,
            ifindex: Some(7),
            interface: None,
            netns: Some(4026532461),
            count,
        }
    }

    /// A SYN probe held 1 s: its SYN was dropped and resent.
    fn delayed_probe(at_ms: u64) -> Episode {
        Episode {
            kind: EpisodeKind::BacklogRelease,
            start_ns: T0 + at_ms * MS,
            end_ns: T0 + (at_ms + 1000) * MS,
            duration_ms: 1000.0,
            uncertainty_ms: 10.0,
            probes: 1,
            flows_affected: 1,
            flows_total: 4,
            flows: vec![2],
            first_seq: 7,
            last_seq: 7,
            max_rtt_us: Some(1_000_000.0),
            peer: None,
            node: None,
        }
    }

    fn target(episodes: Vec<Episode>) -> TargetFindings {
        TargetFindings {
            target: "10.244.2.10:8080".into(),
            proto: "tcp".into(),
            sent: 2000,
            received: 2000,
            episodes,
            ..TargetFindings::default()
        }
    }

    fn ids(status_and_causes: &crate::diagnose::Verdict) -> Vec<&'static str> {
        status_and_causes
            .causes
            .iter()
            .map(|c| c.id.as_str())
            .collect()
    }

    #[test]
    fn a_few_stray_drops_leave_a_healthy_node_healthy() {
        let mut findings = run_of(20);
        findings.drops = vec![drops(3000, "IP_INADDRERRORS", MIN_DROPS - 1)];
        findings.retransmits = Vec::new();
        let verdict = diagnose(&findings);
        assert_eq!(verdict.status, Status::Healthy, "{verdict:?}");
        assert!(verdict.causes.is_empty());
        assert!(verdict
            .sources
            .iter()
            .any(|s| s.name.as_str() == "drops" && s.state.as_str() == "ran"));
    }

    #[test]
    fn probe_episodes_lining_up_with_netfilter_drops_are_packet_drops_not_the_path() {
        let mut findings = run_of(20);
        findings.drops = (0..10)
            .map(|s| drops(s * 1000, "NETFILTER_DROP", 3))
            .collect();
        findings.targets = vec![target(vec![delayed_probe(2050), delayed_probe(6100)])];
        let verdict = diagnose(&findings);
        assert_eq!(verdict.status, Status::Unhealthy, "{verdict:?}");
        assert_eq!(ids(&verdict), ["packet-drops"], "{verdict:?}");
        let cause = &verdict.causes[0];
        assert_eq!(cause.named.as_deref(), Some("NETFILTER_DROP"));
        assert_eq!(cause.episodes, 2);
        assert_eq!(cause.cpu, Some(1));
        assert!(
            cause
                .evidence
                .iter()
                .any(|e| e.contains("30 × reason NETFILTER_DROP at nft_do_chain")
                    && e.contains("ifindex 7")),
            "{:?}",
            cause.evidence
        );
        // Without the drop counter the same episodes are the path's.
        findings.drops.clear();
        let verdict = diagnose(&findings);
        assert_eq!(ids(&verdict), ["not-this-host"]);
    }

    #[test]
    fn drops_alone_are_degraded_until_they_are_many() {
        let mut findings = run_of(20);
        findings.drops = vec![drops(1000, "QDISC_DROP", 20)];
        let verdict = diagnose(&findings);
        assert_eq!(verdict.status, Status::Degraded, "{verdict:?}");
        assert_eq!(ids(&verdict), ["packet-drops"]);
        findings.drops = vec![drops(1000, "QDISC_DROP", FAULT_DROPS)];
        assert_eq!(diagnose(&findings).status, Status::Unhealthy);
    }

    #[test]
    fn backlog_and_listen_overflows_and_conntrack_races_are_named_with_their_counters() {
        let mut findings = run_of(20);
        findings.drops = vec![drops(1000, "CPU_BACKLOG", 40)];
        findings.net = Some(NetCounters {
            start_ns: T0,
            end_ns: T0 + 20_000 * MS,
            softnet: vec![SoftnetDelta {
                cpu: 1,
                processed: 100_000,
                dropped: 40,
                time_squeeze: 7,
                flow_limit: 0,
            }],
            snmp: [("TcpExt.ListenOverflows".to_string(), 2)].into(),
            conntrack: Some(ConntrackDelta {
                entries: 400,
                insert_failed: 3,
                ..ConntrackDelta::default()
            }),
        });
        let verdict = diagnose(&findings);
        assert_eq!(verdict.status, Status::Unhealthy);
        let mut got = ids(&verdict);
        got.sort();
        assert_eq!(got, ["backlog-overflow", "conntrack-drops"], "{verdict:?}");
        let backlog = verdict
            .causes
            .iter()
            .find(|c| c.id == CauseId::BacklogOverflow)
            .unwrap();
        assert_eq!(backlog.named.as_deref(), Some("CPU_BACKLOG"));
        assert_eq!(backlog.cpu, Some(1));
        assert!(
            backlog.evidence[0].contains("42 packets dropped by full queues"),
            "{:?}",
            backlog.evidence
        );
        assert!(backlog.evidence.iter().any(|e| e.contains("time_squeeze")));
        let ct = verdict
            .causes
            .iter()
            .find(|c| c.id == CauseId::ConntrackDrops)
            .unwrap();
        assert!(ct.evidence[0].contains("insert_failed +3"));
        // time_squeeze alone (a busy node) is not a cause.
        if let Some(net) = findings.net.as_mut() {
            net.softnet[0].dropped = 0;
            net.snmp.clear();
            net.conntrack = None;
        }
        findings.drops.clear();
        assert_eq!(diagnose(&findings).status, Status::Healthy);
    }

    #[test]
    fn retransmits_name_their_flows() {
        let mut findings = run_of(20);
        findings.retransmits = (0..12)
            .map(|i| Retransmits {
                start_ns: T0 + i * 1000 * MS,
                end_ns: T0 + i * 1000 * MS,
                kind: RetransmitKind::Segment,
                state: "SYN_SENT".into(),
                saddr: "10.200.0.1".into(),
                sport: 40000 + i as u16,
                daddr: "10.200.0.2".into(),
                dport: 80,
                netns: None,
                count: 1,
            })
            .collect();
        let verdict = diagnose(&findings);
        assert_eq!(ids(&verdict), ["tcp-retransmits"]);
        assert_eq!(verdict.status, Status::Degraded);
        let c = &verdict.causes[0];
        assert!(
            c.evidence[0].starts_with("12 retransmits (12 SYNs, 0 SYN-ACKs, 0 data) in 12 flows"),
            "{:?}",
            c.evidence
        );
    }

    #[test]
    fn a_saved_run_keeps_its_drops() {
        let mut findings = run_of(20);
        findings.drops = vec![drops(1000, "NETFILTER_DROP", 12)];
        let records = findings.to_records(&crate::findings::Extras::default(), None);
        let saved = Findings::from_records(records).unwrap();
        assert_eq!(saved.findings.drops, findings.drops);
        assert_eq!(saved.findings.drop_counter, findings.drop_counter);
    }
}
