//! `netstall report --from DIR|URL`: the doctor's verdict and report,
//! computed from what an agent's flight recorder kept (its `--state-dir`,
//! or its `GET /stalls`), through the same path as `doctor --replay`: the
//! recorder's records become a saved run ([`Findings::from_records`]).
//!
//! The agent's records are not a doctor run: there is no `doctor-run`
//! header, and probe episodes come one by one with their peer. This module
//! supplies the header (the window, whether the agent's tracer ran) and
//! groups the episodes by peer into probe targets.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use netstall_core::clock::realtime_ns;
use netstall_core::output::Output;
use netstall_events::doctor::{DoctorRun, ProbeTarget, SamplerState, TracerState};
use netstall_events::Record;

use crate::findings::{Findings, Saved};
use crate::{report, Verdict};

/// Where the recorder's records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An agent's `--state-dir`.
    Dir(PathBuf),
    /// An agent's address (`http://HOST:PORT`): its `GET /stalls`.
    Agent(String),
}

impl Source {
    /// `http://…` is an agent; anything else a directory.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("http://") || text.starts_with("https://") {
            Source::Agent(text.to_owned())
        } else {
            Source::Dir(PathBuf::from(text))
        }
    }
}

/// How long an agent has to answer.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The recorded records of the last `since` (all with `None`), oldest
/// first, and the warnings about lines that had to be skipped.
pub fn fetch(source: &Source, since: Option<Duration>) -> Result<(Vec<Record>, Vec<String>)> {
    let now = realtime_ns();
    let since_ns = since.map_or(0, |d| {
        now.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    });
    match source {
        Source::Dir(dir) => {
            let mut records = Vec::new();
            let scanned = netstall_agent::recorder::scan(dir, since_ns, |r, _| records.push(r))?;
            Ok((records, scanned.warnings))
        }
        Source::Agent(url) => {
            let addr = agent_addr(url)?;
            let path = match since {
                Some(d) => format!("/stalls?since={}s", d.as_secs().max(1)),
                None => "/stalls".to_owned(),
            };
            let body = netstall_agent::http::get(addr, &path, AGENT_TIMEOUT)
                .map_err(|e| anyhow!("{url}: {e:#}: not a netstall agent with its recorder on?"))?;
            let records = netstall_events::read_records(body.as_bytes())
                .map_err(|e| anyhow!("{url}/stalls is not an agent's recorder: {e}"))?;
            Ok((records, Vec::new()))
        }
    }
}

/// `http://HOST:PORT[/]` as an address.
fn agent_addr(url: &str) -> Result<SocketAddr> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{url}: only http:// agents are supported (the agent serves plain HTTP)");
    };
    let host = rest.trim_end_matches('/');
    if host.contains('/') {
        bail!("{url}: give the agent's address (http://HOST:PORT), not a path");
    }
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:9977")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("{url}: cannot resolve {with_port}"))?
        .next()
        .ok_or_else(|| anyhow!("{url}: {with_port} resolves to no address"))
}

/// The recorder's records as a saved doctor run over `[start_ns, end_ns]`.
pub fn as_run(records: Vec<Record>, start_ns: u64, end_ns: u64, origin: &str) -> Result<Saved> {
    let mut tracer = None;
    let mut node = None;
    let mut targets: Vec<ProbeTarget> = Vec::new();
    let mut rest = Vec::new();
    let mut first = end_ns;
    for record in records {
        match record {
            Record::Agent(a) => {
                first = first.min(a.ts_ns);
                tracer = Some(a.tracer);
                node = Some(a.node);
            }
            Record::Episode(e) => {
                first = first.min(e.start_ns);
                let peer = e.peer.clone().unwrap_or_else(|| "peer".into());
                match targets.iter_mut().find(|t| t.target == peer) {
                    Some(t) => t.episodes.push(e),
                    None => targets.push(ProbeTarget {
                        target: peer,
                        proto: "icmp".into(),
                        episodes: vec![e],
                        ..ProbeTarget::default()
                    }),
                }
            }
            Record::Stall(s) => {
                first = first.min(s.start_ns);
                if node.is_none() {
                    node.clone_from(&s.node);
                }
                rest.push(Record::Stall(s));
            }
            Record::StatFlush(f) => {
                first = first.min(f.start_ns);
                rest.push(Record::StatFlush(f));
            }
            r @ Record::MemcgCount(_) => rest.push(r),
            _ => {}
        }
    }
    let tracer = match tracer {
        Some(false) => TracerState::Unavailable {
            reason: "the agent ran with --tracer false".into(),
        },
        _ => TracerState::default(),
    };
    let header = Record::DoctorRun(DoctorRun {
        start_ns: start_ns.min(first),
        end_ns,
        host: format!(
            "{} (the flight recorder of {origin})",
            node.as_deref().unwrap_or("an agent")
        ),
        tracer,
        // The agent does not sample CPUs: its evidence is the tracer's.
        sampler: SamplerState::Off,
        steal_source: None,
        self_pid: 0,
        dying_after: None,
        // The agent does not count drops (yet): not part of this run.
        drop_counter: None,
        throttle: None,
    });
    let records = std::iter::once(header)
        .chain(rest)
        .chain(targets.into_iter().map(Record::ProbeTarget));
    Findings::from_records(records)
}

/// `netstall report --from`: the verdict of what the recorder kept over the
/// last `since` (everything it keeps by default), emitted, with warnings on
/// stderr; with `report_path`, the HTML report too.
pub fn report(
    from: &str,
    since: Option<Duration>,
    report_path: Option<&Path>,
    out: Output,
) -> Result<Verdict> {
    let source = Source::parse(from);
    let (records, warnings) = fetch(&source, since)?;
    // Told in both formats: a skipped line is evidence missing.
    for warning in &warnings {
        eprintln!("netstall: warning: {warning}");
    }
    let end_ns = realtime_ns();
    let start_ns = since.map_or(end_ns, |d| {
        end_ns.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    });
    let saved = as_run(records, start_ns, end_ns, from)?;
    let verdict = crate::diagnose(&saved.findings);
    out.progress(format!(
        "report: {} ({} stall(s), {} peer(s) with episodes)",
        saved.extras.host,
        saved.findings.stalls.len(),
        saved.findings.targets.len()
    ));
    out.emit(verdict.clone());
    if let Some(path) = report_path {
        report::write(path, &verdict, &saved.findings, &saved.extras)?;
        out.progress(format!("report written to {}", path.display()));
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstall_events::agent::AgentStart;
    use netstall_events::doctor::{CauseId, MemcgCount};
    use netstall_events::kernel::{Culprit, Detector, Stall};

    fn poller_stall(start_ns: u64) -> Stall {
        Stall {
            detector: Detector::RstatHold,
            cpu: 1,
            start_ns,
            end_ns: start_ns + 60_000_000,
            duration_ms: 60.0,
            seen_by: vec![Detector::RstatHold, Detector::IrqsOff],
            packets: None,
            max_wait_ms: None,
            drained_by: None,
            culprit: Some(Culprit {
                comm: "zpoller".into(),
                pid: 42,
                syscall: Some("read".into()),
                path: Some("/sys/fs/cgroup/x/memory.stat".into()),
                kstack: vec![
                    "css_rstat_flush+0x2cb".into(),
                    "memcg1_stat_format+0x1c".into(),
                    "memory_stat_show+0xc3".into(),
                ],
                ..Culprit::default()
            }),
            node: Some("node1".into()),
        }
    }

    #[test]
    fn recorded_stalls_give_the_doctors_cause_with_the_culprit() {
        let t0 = 1_764_840_000_000_000_000u64;
        let records = vec![
            Record::Agent(AgentStart {
                node: "node1".into(),
                listen: "127.0.0.1:9977".into(),
                peers_static: 0,
                peers_dns: None,
                peers_kubernetes: None,
                probe_rate: 10,
                tracer: true,
                ts_ns: t0,
            }),
            Record::Stall(poller_stall(t0 + 1_000_000_000)),
            Record::MemcgCount(MemcgCount {
                kernel: "6.18".into(),
                live: 100,
                dying: 20_000,
                worst_stall_ms: Some(40.0),
            }),
            Record::Stall(poller_stall(t0 + 2_000_000_000)),
            Record::Stall(poller_stall(t0 + 3_000_000_000)),
        ];
        let saved = as_run(records, t0 + 10_000_000_000, t0 + 30_000_000_000, "DIR").unwrap();
        assert_eq!(saved.findings.start_ns, t0);
        assert!(saved
            .extras
            .host
            .starts_with("node1 (the flight recorder of DIR)"));
        let verdict = crate::diagnose(&saved.findings);
        assert_eq!(
            verdict.causes[0].id,
            CauseId::DyingMemcgStatFlush,
            "{verdict}"
        );
        assert_eq!(verdict.causes[0].culprit.as_ref().unwrap().comm, "zpoller");
        assert!(
            verdict.causes[0]
                .evidence
                .iter()
                .any(|e| e.contains("20000 dying")),
            "{verdict}"
        );
    }

    #[test]
    fn sources_and_bad_urls() {
        assert_eq!(
            Source::parse("/var/lib/netstall"),
            Source::Dir("/var/lib/netstall".into())
        );
        assert!(matches!(
            Source::parse("http://127.0.0.1:9977"),
            Source::Agent(_)
        ));
        assert_eq!(
            agent_addr("http://127.0.0.1").unwrap(),
            "127.0.0.1:9977".parse().unwrap()
        );
        assert!(agent_addr("https://127.0.0.1:1").is_err());
        assert!(agent_addr("http://127.0.0.1:1/metrics").is_err());
    }
}
