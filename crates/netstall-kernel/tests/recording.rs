//! Golden test on a recorded tracer run: the raw ring-buffer records of a
//! `netstall trace -w 10s --record` in the lab incident (20,000 dying
//! memory cgroups, a cadvisor-like memory.stat reader on CPU 0, SYN probes
//! through the NodePort, and another test's softirq spinner that happened
//! to run), replayed offline without privileges, give exactly the stalls
//! the live tracer printed (`--json`, kept beside the recording).

use std::path::PathBuf;

use netstall_events::Record;
use netstall_kernel::trace::recording::{Recording, Replayed};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn the_recorded_run_replays_to_the_stalls_it_printed_live() {
    let recording = Recording::read(&fixture("incident.rec")).unwrap();
    let replayed: Vec<String> = recording
        .replay()
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Replayed::Stall(stall) => Some(Record::Stall(stall).to_json_line()),
            _ => None,
        })
        .collect();
    let live = std::fs::read_to_string(fixture("incident.stalls.jsonl")).unwrap();
    let live: Vec<&str> = live.lines().collect();
    assert_eq!(live.len(), 16);
    assert_eq!(replayed, live);
}

#[test]
fn the_replayed_culprits_are_named_without_the_tracers_own_frames() {
    let recording = Recording::read(&fixture("incident.rec")).unwrap();
    let stalls: Vec<_> = recording
        .replay()
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Replayed::Stall(stall) => Some(stall),
            _ => None,
        })
        .collect();
    let flushes: Vec<_> = stalls
        .iter()
        .filter_map(|s| s.culprit.as_ref())
        .filter(|c| c.kstack.first().is_some_and(|f| f == "css_rstat_flush"))
        .collect();
    assert!(!flushes.is_empty(), "{stalls:#?}");
    for stall in &stalls {
        let stack = stall.culprit.as_ref().map_or(&[][..], |c| &c.kstack[..]);
        assert!(
            !stack
                .iter()
                .any(|f| f.ends_with("_on_rstat_unlock") || f.ends_with("_on_local_timer_exit")),
            "{stack:?}"
        );
    }
}

#[test]
fn a_damaged_recording_is_refused_naming_the_line() {
    let good = std::fs::read_to_string(fixture("incident.rec")).unwrap();

    let err = Recording::parse("hello\n").unwrap_err().to_string();
    assert!(err.starts_with("not a netstall trace recording"), "{err}");

    let mut lines: Vec<&str> = good.lines().collect();
    lines[5] = "event 0g";
    let err = Recording::parse(&lines.join("\n")).unwrap_err().to_string();
    assert_eq!(err, "line 6 of the recording is not understood: `event 0g`");

    // A record cut short (say, from a build whose record is larger).
    let event = good.lines().find(|l| l.starts_with("event ")).unwrap();
    let cut = &event[..event.len() / 4 * 2];
    let short = format!("# netstall trace recording v1\nsettle-ns 1\nclock 0\n{cut}\n");
    let err = Recording::parse(&short).unwrap().replay().unwrap_err();
    assert!(err.to_string().contains("shorter than"), "{err}");
}
