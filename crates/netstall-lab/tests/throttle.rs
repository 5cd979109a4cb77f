//! CPU throttling on a real kernel: a cgroup of 20 ms per 100 ms shared
//! with a busy process is throttled in most periods, and the in-kernel
//! reader (a BPF cgroup iterator, never cpu.stat) reports it under the
//! cgroup's path; when the cgroup is removed mid-window the reader says so
//! and keeps going.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use netstall_core::shutdown::Shutdown;
use netstall_kernel::throttle::{self, ThrottleConfig, ThrottleEvent};
use netstall_kernel::trace::Stop;
use netstall_lab::throttle::{ThrottledCgroup, PERIOD, QUOTA};

#[test]
fn a_throttled_cgroup_is_read_in_the_kernel_and_its_removal_is_told() {
    if !netstall_testkit::privileged("throttle reader") {
        return;
    }
    let name = format!("netstall-{}", netstall_testkit::unique_prefix());
    let mut cgroup = ThrottledCgroup::create(&name, QUOTA, PERIOD).expect("create the cgroup");
    cgroup.spin(Duration::from_secs(5)).expect("busy process");
    let path = cgroup.path().to_owned();

    let shutdown = Arc::new(Shutdown::new().unwrap());
    let stop = Stop {
        duration: Some(Duration::from_millis(2500)),
        shutdown: Some(shutdown.clone()),
    };
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        throttle::run(&ThrottleConfig::default(), &stop, |e| {
            let _ = tx.send(e);
        })
    });
    // Throttled for a while, then removed while the reader runs.
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("started");
    assert!(matches!(first, ThrottleEvent::Started { .. }), "{first:?}");
    std::thread::sleep(Duration::from_millis(1200));
    drop(cgroup);
    let result = reader.join().expect("reader thread");
    result.expect("the reader runs through a cgroup's removal");

    let events: Vec<ThrottleEvent> = rx.try_iter().collect();
    let ours: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ThrottleEvent::Throttle(t) if t.cgroup == path => Some(t),
            _ => None,
        })
        .collect();
    let throttled: u64 = ours.iter().map(|t| t.throttled).sum();
    let periods: u64 = ours.iter().map(|t| t.periods).sum();
    let throttled_ms: f64 = ours.iter().map(|t| t.throttled_ms).sum();
    eprintln!("{path}: {throttled} of {periods} periods throttled, {throttled_ms:.1} ms");
    // ~1.2 s at 100 ms periods: about 12 periods, nearly all throttled.
    assert!(throttled >= 5, "{events:?}");
    assert!(throttled * 10 >= periods * 6, "{throttled} of {periods}");
    assert!(throttled_ms >= 300.0, "{throttled_ms}");
    assert!(ours
        .iter()
        .all(|t| t.quota_ms == Some(20.0) && t.period_ms == 100.0));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ThrottleEvent::Vanished { cgroup, .. } if *cgroup == path)),
        "{events:?}"
    );
}

/// The reader's cost (bench/throttle.sh): `CGROUPS` limited cgroups in the
/// cpu hierarchy, read `READS` times; prints the time per read and per
/// cgroup walked. Nothing runs per packet or per context switch: this is
/// the whole cost, one read a second in the doctor.
#[test]
#[ignore = "a benchmark: bench/throttle.sh"]
fn cost_of_reading_the_throttling_of_every_cgroup() {
    let count: usize = std::env::var("CGROUPS").map_or(500, |v| v.parse().unwrap());
    let reads: u32 = std::env::var("READS").map_or(400, |v| v.parse().unwrap());
    let prefix = netstall_testkit::unique_prefix();
    let cgroups: Vec<ThrottledCgroup> = (0..count)
        .map(|i| ThrottledCgroup::create(&format!("netstall-{prefix}-{i}"), QUOTA, PERIOD).unwrap())
        .collect();
    let reader = throttle::Reader::open().expect("load the iterator");
    let walked = throttle::cgroup_paths(reader.mount(), 1_000_000).len();
    let start = std::time::Instant::now();
    let mut rows = 0;
    for _ in 0..reads {
        rows = reader.read().unwrap().len();
    }
    let per_read = start.elapsed() / reads;
    assert_eq!(reader.overflow(), 0, "rows lost to a full ring");
    drop(cgroups);
    println!(
        "{{\"type\":\"bench-throttle\",\"cgroups_walked\":{walked},\"limited\":{rows},\"reads\":{reads},\"per_read_us\":{:.1},\"per_cgroup_ns\":{:.0},\"cpu_pct_at_1_per_s\":{:.4}}}",
        per_read.as_secs_f64() * 1e6,
        per_read.as_secs_f64() * 1e9 / walked as f64,
        per_read.as_secs_f64() * 100.0
    );
    assert!(rows >= count, "{rows} rows for {count} limited cgroups");
}
