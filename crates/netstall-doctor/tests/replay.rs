//! Golden tests on recorded runs: a doctor run from the lab incident
//! (`netstall demo --report`'s incident step, its embedded records
//! extracted) read back and diagnosed offline gives the verdict it gave
//! live.

use std::path::PathBuf;

use netstall_doctor::diagnose::{CauseId, Status};
use netstall_doctor::{diagnose, replay};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn the_recorded_incident_replays_to_its_live_verdict() {
    let saved = replay::read(&fixture("incident.jsonl")).unwrap();
    let live = saved
        .verdict
        .clone()
        .expect("the file keeps the live verdict");
    let mut replayed = diagnose(&saved.findings);
    // What describes the live run itself: when its verdict came.
    replayed.time_to_verdict_s = live.time_to_verdict_s;
    replayed.from_first_stall_s = live.from_first_stall_s;
    assert_eq!(replayed, live);

    assert_eq!(replayed.status, Status::Unhealthy);
    assert_eq!(replayed.causes.len(), 1, "{replayed:#?}");
    let cause = &replayed.causes[0];
    assert_eq!(cause.id, CauseId::DyingMemcgStatFlush);
    let culprit = cause.culprit.as_ref().unwrap();
    assert_eq!(culprit.comm, "cadvisor");
    assert_eq!(culprit.syscall.as_deref(), Some("read"));
    assert!(culprit.path.as_deref().unwrap().ends_with("memory.stat"));
    // The tracer removed its own BPF frames: the stack starts at the flush.
    assert_eq!(culprit.kstack[0], "css_rstat_flush", "{:?}", culprit.kstack);
}

#[test]
fn a_saved_run_reads_back_into_the_same_findings() {
    let saved = replay::read(&fixture("incident.jsonl")).unwrap();
    let records = saved
        .findings
        .to_records(&saved.extras, saved.verdict.as_ref());
    let again = netstall_doctor::Findings::from_records(records).unwrap();
    assert_eq!(again, saved);
}
