//! The lab, for real: namespaces, the NodePort path, injectors and their cleanup.

mod common;

use common::*;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use netstall_lab::topology;
use netstall_testkit::{privileged, unique_prefix, MachineLock};
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pin_current_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; pointers are valid for the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

fn netns_names() -> Vec<String> {
    netstall_lab::netns::list()
}

fn link_rx_packets(netns: &str, dev: &str) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "cat",
            &format!("/sys/class/net/{dev}/statistics/rx_packets"),
        ])
        .output()
        .expect("ip netns exec");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("rx_packets")
}

fn root_links_and_tables() -> (String, String) {
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    (
        String::from_utf8_lossy(&links.stdout)
            .lines()
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
            .collect::<Vec<_>>()
            .join(","),
        String::from_utf8_lossy(&tables.stdout).into_owned(),
    )
}

fn tcp_line_via(netns: &str, addr: &'static str) -> String {
    in_netns(netns, move || {
        let mut stream = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))
            .expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        stream.write_all(b"hello\n").unwrap();
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .expect("read line");
        line
    })
}

fn http_via(netns: &str, addr: &'static str) -> String {
    in_netns(netns, move || {
        let mut stream = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))
            .expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut status = String::new();
        BufReader::new(stream)
            .read_line(&mut status)
            .expect("read status");
        status
    })
}

fn udp_echo_via(netns: &str, addr: &'static str) -> Vec<u8> {
    in_netns(netns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        socket.send_to(b"udp-probe", addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = socket.recv_from(&mut buf).expect("udp echo");
        buf[..n].to_vec()
    })
}

#[test]
fn nodeport_tcp_and_udp_reach_the_pod_across_vxlan() {
    if !privileged("nodeport_tcp_and_udp_reach_the_pod_across_vxlan") {
        return;
    }
    let lab = Lab::up("0");
    assert_eq!(lab.status["type"], "lab");
    assert_eq!(lab.status["nodeport"]["tcp"], 30080);
    assert_eq!(lab.status["pod"]["addr"], "10.244.2.10");
    let roles: Vec<&str> = lab.status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["client", "node1", "node2", "pod", "outside"]);

    let vxlan_before = link_rx_packets(&lab.netns("n2"), "vx0");
    let pod_before = link_rx_packets(&lab.netns("pod"), "eth0");
    assert_eq!(
        tcp_line_via(&lab.netns("cli"), "192.168.50.1:30080"),
        "netstall-responder\n"
    );
    assert_eq!(
        http_via(&lab.netns("cli"), "192.168.50.1:30080"),
        "HTTP/1.1 200 OK\r\n"
    );
    assert_eq!(
        udp_echo_via(&lab.netns("cli"), "192.168.50.1:30081"),
        b"udp-probe"
    );
    // The NodePort traffic went through node2's VXLAN device to the pod.
    assert!(
        link_rx_packets(&lab.netns("n2"), "vx0") >= vxlan_before + 6,
        "no packets crossed vx0"
    );
    assert!(link_rx_packets(&lab.netns("pod"), "eth0") >= pod_before + 6);
    // The outside host reaches the pod over the underlay, without NAT or overlay.
    assert_eq!(
        udp_echo_via(&lab.netns("out"), "10.244.2.10:9000"),
        b"udp-probe"
    );

    // RPS steers node RX to the chosen CPU, the client's elsewhere.
    let rps = |ns: &str, dev: &str| {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "cat",
                &format!("/sys/class/net/{dev}/queues/rx-0/rps_cpus"),
            ])
            .output()
            .unwrap();
        u64::from_str_radix(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .replace(',', "")
                .as_str(),
            16,
        )
        .unwrap()
    };
    assert_eq!(rps(&lab.netns("n1"), "n1ext"), 1);
    assert_eq!(rps(&lab.netns("n2"), "vx0"), 1);
    assert_eq!(rps(&lab.netns("pod"), "eth0"), 1);
    assert_eq!(rps(&lab.netns("cli"), "c0") & 1, 0);

    // One host can be re-steered on its own, and status says so.
    let out = netstall(&[
        "lab",
        "rps",
        "--prefix",
        &lab.prefix,
        "--rx-cpu",
        "0-1",
        "--host",
        "node2",
        "--json",
    ]);
    assert!(out.status.success(), "lab rps: {}", stderr(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["hosts"][2]["rx_cpus"], serde_json::json!([0, 1]));
    assert_eq!(status["hosts"][1]["rx_cpus"], serde_json::json!([0]));
    assert_eq!(rps(&lab.netns("n2"), "vx0"), 3);
    assert_eq!(rps(&lab.netns("n1"), "vx0"), 1);
}

#[test]
fn lab_down_leaves_no_namespace_link_rule_or_process() {
    if !privileged("lab_down_leaves_no_namespace_link_rule_or_process") {
        return;
    }
    let root_before = root_links_and_tables();
    let lab = Lab::up("0");
    let pids: Vec<u64> = lab.status["responders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 4);
    assert!(pids.iter().all(|p| topology::is_running(*p as u32)));
    // The lab builds nothing in the root namespace.
    assert_eq!(root_links_and_tables(), root_before);

    let out = netstall(&["lab", "down", "--prefix", &lab.prefix]);
    assert!(out.status.success(), "lab down: {}", stderr(&out));
    assert!(!netns_names()
        .iter()
        .any(|n| n.starts_with(&format!("{}-", lab.prefix))));
    assert!(
        pids.iter().all(|p| !topology::is_running(*p as u32)),
        "responders still run"
    );
    assert_eq!(root_links_and_tables(), root_before);
    let status = netstall(&["lab", "status", "--prefix", &lab.prefix]);
    assert_eq!(status.status.code(), Some(2));
    assert!(stderr(&status).contains("no lab"));
}

#[test]
fn two_labs_coexist() {
    if !privileged("two_labs_coexist") {
        return;
    }
    let a = Lab::up("0");
    let b = Lab::up("1");
    assert_eq!(
        udp_echo_via(&a.netns("cli"), "192.168.50.1:30081"),
        b"udp-probe"
    );
    assert_eq!(
        udp_echo_via(&b.netns("cli"), "192.168.50.1:30081"),
        b"udp-probe"
    );
    drop(a);
    // Removing one leaves the other working.
    assert_eq!(
        tcp_line_via(&b.netns("cli"), "192.168.50.1:30080"),
        "netstall-responder\n"
    );
    let status = netstall(&["lab", "status", "--prefix", &b.prefix, "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["rx_cpu"], 1);
}

#[test]
fn lab_up_on_an_existing_lab_is_refused_and_the_lab_survives() {
    if !privileged("lab_up_on_an_existing_lab_is_refused_and_the_lab_survives") {
        return;
    }
    let lab = Lab::up("0");
    let again = netstall(&["lab", "up", "--prefix", &lab.prefix]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        stderr(&again).trim().lines().count(),
        2,
        "progress line + one error line"
    );
    assert_eq!(
        udp_echo_via(&lab.netns("cli"), "192.168.50.1:30081"),
        b"udp-probe"
    );
}

fn dying_memcgs() -> u64 {
    netstall_cgroups::memory_count()
        .expect("count dying memcgs")
        .dying
}

#[test]
fn zombies_leave_dying_memcgs_and_clean_releases_them() {
    if !privileged("zombies_leave_dying_memcgs_and_clean_releases_them") {
        return;
    }
    let _lock = MachineLock::acquire();
    let prefix = unique_prefix();
    let start = dying_memcgs();
    let out = netstall(&[
        "lab", "zombies", "--prefix", &prefix, "--count", "12000", "--json",
    ]);
    let cleanup = ZombieCleanup(prefix.clone());
    assert!(out.status.success(), "zombies: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["created"], 12000);
    let measured = dying_memcgs();
    assert!(measured >= 11_000, "only {measured} dying memcgs");
    assert!(measured >= start + 11_000, "{start} -> {measured}");
    // The report is the measured count, give or take the host's own
    // cgroups created and removed between its read and ours.
    let reported = report["dying_after"].as_u64().unwrap();
    assert!(
        reported.abs_diff(measured) <= 200,
        "reported {reported}, measured {measured}"
    );

    let out = netstall(&["lab", "clean", "--prefix", &prefix, "--json"]);
    assert!(out.status.success(), "clean: {}", stderr(&out));
    std::mem::forget(cleanup);
    // Other cgroups on the host come and go meanwhile (the machine's own process
    // manager makes one per command), so "near the start" allows a tenth of ours.
    let clean: Value = serde_json::from_slice(&out.stdout).unwrap();
    let after = dying_memcgs();
    assert!(
        after <= start + 1_200,
        "clean left {after} dying memcgs (started at {start}; clean reported {clean})"
    );
}

/// Cleans up zombies if a test fails half-way.
struct ZombieCleanup(String);

impl Drop for ZombieCleanup {
    fn drop(&mut self) {
        let _ = netstall(&["lab", "clean", "--prefix", &self.0]);
    }
}

/// One UDP probe: when it was sent (from the start) and its RTT, if answered.
#[derive(Debug, Clone, Copy)]
struct Sample {
    sent: Duration,
    rtt: Option<Duration>,
}

/// Sends a UDP probe every `interval` for `duration` from `netns`, the
/// sender pinned to `cpu`, on an absolute schedule (nanosleep, not socket
/// timeouts: those tick in jiffies), and matches the echoes by sequence number.
fn udp_probe(
    netns: &str,
    cpu: usize,
    target: &'static str,
    interval: Duration,
    duration: Duration,
) -> Vec<Sample> {
    let socket = in_netns(netns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.connect(target).unwrap();
        socket
    });
    let receiver = socket.try_clone().unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let start = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_receiving = stop.clone();
    let received = std::thread::spawn(move || {
        pin_current_thread(cpu);
        let mut arrivals = Vec::new();
        let mut buf = [0u8; 64];
        while !stop_receiving.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(8) = receiver.recv(&mut buf) {
                arrivals.push((
                    u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize,
                    start.elapsed(),
                ));
            }
        }
        arrivals
    });
    pin_current_thread(cpu);
    let count = (duration.as_nanos() / interval.as_nanos()) as usize;
    let mut samples = Vec::with_capacity(count);
    for seq in 0..count {
        std::thread::sleep((interval * seq as u32).saturating_sub(start.elapsed()));
        samples.push(Sample {
            sent: start.elapsed(),
            rtt: None,
        });
        socket.send(&(seq as u64).to_le_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (seq, at) in received.join().unwrap() {
        if let Some(sample) = samples.get_mut(seq) {
            sample.rtt.get_or_insert(at - sample.sent);
        }
    }
    samples
}

/// A backlog released at once: consecutive probes whose RTTs fall by about
/// one interval each. Returns (peak RTT, probes in the run) for runs of ≥ 4.
fn sawtooth_runs(samples: &[Sample], interval: Duration) -> Vec<(Duration, usize)> {
    let rtts: Vec<Option<Duration>> = samples.iter().map(|s| s.rtt).collect();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < rtts.len() {
        let Some(peak) = rtts[i].filter(|r| *r >= interval * 3) else {
            i += 1;
            continue;
        };
        let mut len = 1;
        while let Some(Some(next)) = rtts.get(i + len) {
            let Some(Some(prev)) = rtts.get(i + len - 1) else {
                break;
            };
            let drop = prev.as_secs_f64() - next.as_secs_f64();
            if (drop - interval.as_secs_f64()).abs() > interval.as_secs_f64() * 0.5 {
                break;
            }
            len += 1;
        }
        if len >= 4 {
            runs.push((peak, len));
        }
        i += len;
    }
    runs
}

#[test]
fn spin_stalls_show_the_backlog_sawtooth_through_the_lab() {
    if !privileged("spin_stalls_show_the_backlog_sawtooth_through_the_lab") {
        return;
    }
    let _lock = MachineLock::acquire();
    let lab = Lab::up("0");
    let spinner = Command::new(NETSTALL)
        .args([
            "lab", "spin", "--cpu", "0", "--ms", "50", "--every", "1s", "-w", "4s", "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let interval = Duration::from_millis(5);
    let samples = udp_probe(
        &lab.netns("cli"),
        1,
        "192.168.50.1:30081",
        interval,
        Duration::from_millis(3800),
    );
    let spins = spinner.wait_with_output().unwrap();
    assert!(spins.status.success());
    let injected = String::from_utf8_lossy(&spins.stdout).lines().count();
    assert!(injected >= 3, "only {injected} stalls injected");

    let runs = sawtooth_runs(&samples, interval);
    let fifty: Vec<_> = runs
        .iter()
        .filter(|(peak, len)| (40..=60).contains(&peak.as_millis()) && *len >= 7)
        .collect();
    assert!(
        fifty.len() >= 2,
        "expected a 50 ms sawtooth per stall, got runs {runs:?}"
    );
    let answered = samples.iter().filter(|s| s.rtt.is_some()).count();
    assert!(
        answered * 100 >= samples.len() * 98,
        "lost {} of {}",
        samples.len() - answered,
        samples.len()
    );
}

#[test]
fn zombie_poller_on_the_rx_cpu_stalls_probes() {
    if !privileged("zombie_poller_on_the_rx_cpu_stalls_probes") {
        return;
    }
    let _lock = MachineLock::acquire();
    let lab = Lab::up("0");
    let made = netstall(&[
        "lab",
        "zombies",
        "--prefix",
        &lab.prefix,
        "--count",
        "12000",
    ]);
    let _cleanup = ZombieCleanup(lab.prefix.clone());
    assert!(made.status.success(), "zombies: {}", stderr(&made));

    let poller = Command::new(NETSTALL)
        .args([
            "lab",
            "poller",
            "--prefix",
            &lab.prefix,
            "--cpu",
            "0",
            "--comm",
            "zpoller",
            "--interval",
            "1s",
            "-w",
            "4s",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let interval = Duration::from_millis(2);
    let samples = udp_probe(
        &lab.netns("cli"),
        1,
        "192.168.50.1:30081",
        interval,
        Duration::from_millis(4200),
    );
    let reads = poller.wait_with_output().unwrap();
    assert!(reads.status.success());
    let read_ms: Vec<f64> = String::from_utf8_lossy(&reads.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["read_ms"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(
        read_ms.iter().filter(|ms| **ms >= 10.0).count() >= 2,
        "reads were fast: {read_ms:?}"
    );

    let runs = sawtooth_runs(&samples, interval);
    assert!(
        runs.iter().any(|(peak, _)| peak.as_millis() >= 10),
        "no stall ≥ 10 ms seen by the probes (reads {read_ms:?}), runs {runs:?}"
    );
}
