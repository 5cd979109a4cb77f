//! Real probes on loopback against real sockets: every prober, every kind of
//! reply, the schedule and the timestamps. Needs root (raw sockets).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::time::Duration;

use netstall_probe::{run, Mode, ProbeConfig, Reply, Report, SessionEvent, TsSource};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn probe(mode: Mode, count: u64, interval: Duration, flows: u16) -> Report {
    let mut config = ProbeConfig::new(LOCALHOST, mode, interval);
    config.count = Some(count);
    config.flows = flows;
    config.timeout = Duration::from_millis(500);
    let mut streamed = 0;
    let report = run(&config, |event| {
        if let SessionEvent::Probe(_) = event {
            streamed += 1;
        }
    })
    .expect("probe session");
    assert_eq!(streamed, count, "every probe is reported as it completes");
    assert_eq!(report.probes.len() as u64, count, "and kept");
    report
}

fn all_answered_with_kernel_stamps(report: &Report) {
    assert_eq!(
        report.summary.received, report.summary.sent,
        "{:?}",
        report.summary
    );
    let user: Vec<_> = report
        .probes
        .iter()
        .filter(|p| p.timestamps != TsSource::Kernel)
        .map(|p| (p.seq, p.wake_ns.is_some(), p.late_ns))
        .collect();
    assert!(
        user.is_empty(),
        "probes without both kernel stamps (seq, rx stamped, late ns): {user:?}"
    );
    assert_eq!(report.info.timestamps, "kernel TX+RX (SO_TIMESTAMPING)");
    // Loopback RTTs are microseconds: no user-space wake-up in them.
    assert!(
        report.summary.p50_us.unwrap() < 1000.0,
        "{:?}",
        report.summary
    );
    assert!(report.unreachable_reason().is_none());
}

#[test]
fn icmp_echo_is_answered_and_matched_by_sequence() {
    if !netstall_testkit::privileged("icmp_echo_is_answered_and_matched_by_sequence") {
        return;
    }
    // RTT and schedule assertions: no injected stall may overlap.
    let _lock = netstall_testkit::MachineLock::acquire();
    let report = probe(Mode::Icmp, 50, Duration::from_millis(2), 4);
    all_answered_with_kernel_stamps(&report);
    for (i, p) in report.probes.iter().enumerate() {
        assert_eq!(p.seq, i as u64);
        assert_eq!(p.flow, (i % 4) as u16);
        match p.reply {
            Some(Reply::Echo { ip, icmp_seq, .. }) => {
                assert_eq!(ip, LOCALHOST);
                assert_eq!(icmp_seq, i as u16);
            }
            ref other => panic!("{other:?}"),
        }
    }
}

#[test]
fn syn_probes_match_syn_ack_from_a_listener_and_rst_from_a_closed_port() {
    if !netstall_testkit::privileged("syn_probes_match_syn_ack_and_rst") {
        return;
    }
    // RTT and schedule assertions: no injected stall may overlap.
    let _lock = netstall_testkit::MachineLock::acquire();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let report = probe(Mode::Syn { port: open }, 30, Duration::from_millis(2), 3);
    all_answered_with_kernel_stamps(&report);
    let ports: std::collections::BTreeSet<_> =
        report.probes.iter().map(|p| p.src_port.unwrap()).collect();
    assert_eq!(ports.len(), 3, "one source port per flow");
    assert!(report
        .probes
        .iter()
        .all(|p| matches!(p.reply, Some(Reply::Tcp { flags, sport, .. }) if flags == 0x12 && sport == open)));

    // A port nobody listens on: the RST answers.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let report = probe(
        Mode::Syn { port: closed_port },
        10,
        Duration::from_millis(2),
        1,
    );
    all_answered_with_kernel_stamps(&report);
    assert!(report
        .probes
        .iter()
        .all(|p| matches!(p.reply, Some(Reply::Tcp { flags, .. }) if flags & 0x04 != 0)));
}

#[test]
fn udp_probes_are_echoed_or_answered_by_port_unreachable() {
    if !netstall_testkit::privileged("udp_probes_are_echoed_or_answered_by_port_unreachable") {
        return;
    }
    // RTT and schedule assertions: no injected stall may overlap.
    let _lock = netstall_testkit::MachineLock::acquire();
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    echo.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..20 {
            let (n, peer) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], peer).unwrap();
        }
    });
    let report = probe(Mode::Udp { port }, 20, Duration::from_millis(2), 2);
    responder.join().unwrap();
    all_answered_with_kernel_stamps(&report);
    assert!(report
        .probes
        .iter()
        .all(|p| matches!(p.reply, Some(Reply::Udp { .. }))));

    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let report = probe(
        Mode::Udp { port: closed_port },
        10,
        Duration::from_millis(2),
        2,
    );
    all_answered_with_kernel_stamps(&report);
    assert!(report
        .probes
        .iter()
        .all(|p| matches!(p.reply, Some(Reply::Unreachable { code: 3, .. }))));
}

#[test]
fn http_probes_time_connect_and_first_byte_apart() {
    if !netstall_testkit::privileged("http_probes_time_connect_and_first_byte_apart") {
        return;
    }
    // RTT and schedule assertions: no injected stall may overlap.
    let _lock = netstall_testkit::MachineLock::acquire();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(5) {
            let mut conn = conn.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            // A slow server: 20 ms to answer.
            std::thread::sleep(Duration::from_millis(20));
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let url = netstall_probe::http::HttpUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    // Requests go out on schedule even though each takes longer than the interval.
    let report = probe(Mode::Http(url), 5, Duration::from_millis(5), 1);
    assert_eq!(report.summary.received, 5, "{:?}", report.summary);
    for p in &report.probes {
        let Some(Reply::Http {
            status,
            connect_us,
            ttfb_us,
        }) = p.reply
        else {
            panic!("{p:?}")
        };
        assert_eq!(status, 200);
        assert!(connect_us < 10_000.0, "{connect_us}");
        assert!(ttfb_us >= 20_000.0, "{ttfb_us}");
        assert!(p.late_ns < 5_000_000, "sent on schedule: {p:?}");
    }
}

#[test]
fn sends_follow_an_absolute_schedule() {
    if !netstall_testkit::privileged("sends_follow_an_absolute_schedule") {
        return;
    }
    // RTT and schedule assertions: no injected stall may overlap.
    let _lock = netstall_testkit::MachineLock::acquire();
    let interval = Duration::from_millis(5);
    let report = probe(Mode::Icmp, 200, interval, 1);
    let first = report.probes[0].scheduled_ns;
    for p in &report.probes {
        // No drift: probe n is scheduled exactly n intervals after probe 0
        // (to the clock conversion's nanosecond).
        let expected = first + p.seq * interval.as_nanos() as u64;
        assert!(p.scheduled_ns.abs_diff(expected) <= 1, "{p:?}");
        assert!(p.sent_ns >= p.scheduled_ns - 1_000, "never early: {p:?}");
    }
    // On time in the common case (wide margin: this machine also compiles).
    let late_p50 = report.summary.send_late_p50_us.unwrap();
    assert!(late_p50 < 500.0, "{late_p50}");
}

/// `-w` is kept against the clock, not the schedule: a sender that cannot
/// keep up with a 1 µs interval still stops on time, and a 10 s interval
/// stops at 1 s after one probe. UDP to a closed port needs no privilege.
#[test]
fn the_duration_is_kept_against_the_clock_whatever_the_interval() {
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    for interval in [Duration::from_micros(1), Duration::from_secs(10)] {
        let mut config = ProbeConfig::new(LOCALHOST, Mode::Udp { port }, interval);
        config.duration = Some(Duration::from_secs(1));
        config.timeout = Duration::from_millis(200);
        config.keep_probes = false;
        let started = std::time::Instant::now();
        let (mut first, mut last, mut count) = (u64::MAX, 0u64, 0u64);
        run(&config, |event| {
            if let SessionEvent::Probe(p) = event {
                first = first.min(p.sent_ns);
                last = last.max(p.sent_ns);
                count += 1;
            }
        })
        .expect("probe session");
        let took = started.elapsed();
        let span_ms = last.saturating_sub(first) as f64 / 1e6;
        assert!(count >= 1, "{interval:?}: no probe");
        assert!(span_ms <= 1100.0, "{interval:?}: sent for {span_ms} ms");
        assert!(took < Duration::from_secs(5), "{interval:?}: ran {took:?}");
    }
}

#[test]
fn a_count_of_zero_and_port_zero_are_refused() {
    let mut config = ProbeConfig::new(LOCALHOST, Mode::Udp { port: 9 }, Duration::from_millis(1));
    config.count = Some(0);
    let error = run(&config, |_| {}).unwrap_err();
    assert!(format!("{error:#}").contains("at least 1"), "{error:#}");
    let mut config = ProbeConfig::new(LOCALHOST, Mode::Syn { port: 0 }, Duration::from_millis(1));
    config.count = Some(1);
    let error = run(&config, |_| {}).unwrap_err();
    assert!(format!("{error:#}").contains("port 0"), "{error:#}");
}
