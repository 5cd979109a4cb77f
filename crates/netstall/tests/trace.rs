//! `netstall trace`, for real: injected and genuine stalls in the lab, the
//! ICMP table, slow syscalls, self-cost and missing privileges.

mod common;

use common::*;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netstall_testkit::{privileged, unique_prefix, MachineLock};
use serde_json::Value;

const MS: u64 = 1_000_000;

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|v| v["type"] == kind).collect()
}

fn realtime_ns() -> u64 {
    netstall_core::clock::realtime_ns()
}

/// A `netstall trace --json` run in the background; its lines are collected
/// until it exits.
struct Tracer {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Tracer {
    /// Starts the tracer and waits until its detectors are attached.
    fn start(args: &[&str]) -> Tracer {
        let mut child = Command::new(NETSTALL)
            .args(["trace", "--json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start netstall trace");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("trace printed non-JSON ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("trace attaches within 60 s");
        assert_eq!(first["type"], "trace-start", "{first}");
        Tracer { child, lines }
    }

    /// Waits for the tracer to end (its -w) and returns every line after the start.
    fn finish(mut self) -> Vec<Value> {
        let status = self.child.wait().expect("wait for trace");
        assert!(status.success(), "trace exited with {status}");
        // Up to the end of its output: the reader may still be forwarding
        // the last lines (the summary) when the process has exited.
        self.lines.iter().collect()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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

/// One UDP probe through the lab: when it was sent (REALTIME) and its RTT.
#[derive(Debug, Clone, Copy)]
struct Probe {
    sent_ns: u64,
    rtt_ns: Option<u64>,
}

/// Sends UDP probes from the client through the NodePort every `every` for
/// `duration`, without waiting for replies (so a stall holds many of them),
/// from threads pinned to `cpu` (off the stalled CPU).
fn udp_probes(
    netns: String,
    cpu: usize,
    every: Duration,
    duration: Duration,
) -> std::thread::JoinHandle<Vec<Probe>> {
    std::thread::spawn(move || {
        pin_current_thread(cpu);
        netstall_lab::netns::enter(&netns).expect("enter the client netns");
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.connect("192.168.50.1:30081").expect("connect");
        let receiver = socket.try_clone().expect("clone the socket");
        receiver
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let replies = std::thread::spawn(move || {
            pin_current_thread(cpu);
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while let Ok(n) = receiver.recv(&mut buf) {
                if let Ok(seq) = std::str::from_utf8(&buf[..n])
                    .unwrap_or("")
                    .parse::<usize>()
                {
                    got.push((seq, realtime_ns()));
                }
            }
            got
        });
        let mut sent = Vec::new();
        let start = Instant::now();
        while start.elapsed() < duration && sent.len() < 20_000 {
            let due = start + every * sent.len() as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let sent_ns = realtime_ns();
            socket
                .send(sent.len().to_string().as_bytes())
                .expect("send");
            sent.push(sent_ns);
        }
        let got = replies.join().expect("receiver thread");
        let mut probes: Vec<Probe> = sent
            .iter()
            .map(|&sent_ns| Probe {
                sent_ns,
                rtt_ns: None,
            })
            .collect();
        for (seq, at) in got {
            if let Some(p) = probes.get_mut(seq) {
                p.rtt_ns = Some(at.saturating_sub(p.sent_ns));
            }
        }
        probes
    })
}

#[test]
fn an_injected_50ms_stall_is_measured_on_its_cpu_with_the_packets_that_waited() {
    if !privileged("trace spin stall") {
        return;
    }
    let _lock = MachineLock::acquire();
    let lab = Lab::up("0");
    let tracer = Tracer::start(&["-w", "9s", "--cpus", "0", "--threshold", "20ms"]);
    let probes = udp_probes(
        lab.netns("cli"),
        1,
        Duration::from_millis(2),
        Duration::from_secs(7),
    );
    let spin = netstall(&[
        "lab", "spin", "--cpu", "0", "--ms", "50", "--every", "1s", "-w", "5s", "--json",
    ]);
    assert!(
        spin.status.success(),
        "lab spin: {}",
        String::from_utf8_lossy(&spin.stderr)
    );
    let spins = json_lines(&spin);
    let spins = of_type(&spins, "spin");
    assert!(spins.len() >= 4, "expected ~5 injected stalls: {spins:?}");
    let probes = probes.join().expect("prober thread");
    let lines = tracer.finish();
    let stalls = of_type(&lines, "stall");
    for stall in &stalls {
        eprintln!("traced: {stall}");
    }

    let mut matched = 0;
    for spin in &spins {
        let start = spin["start_ns"].as_u64().unwrap();
        let found = stalls
            .iter()
            .find(|s| s["cpu"] == 0 && s["start_ns"].as_u64().unwrap().abs_diff(start) < 10 * MS);
        let Some(stall) = found else {
            eprintln!("no stall for injected {spin}");
            continue;
        };
        let ms = stall["duration_ms"].as_f64().unwrap();
        assert!((45.0..=55.0).contains(&ms), "50 ms ± 10%: {stall}");
        assert!(
            stall["packets"].as_u64().unwrap_or(0) >= 1,
            "packets that waited are counted: {stall}"
        );
        matched += 1;
    }
    assert!(
        matched >= spins.len() - 1,
        "{matched} of {} injected stalls found in {stalls:?}",
        spins.len()
    );

    // The probes that came back late were sent during a traced stall: one
    // time base. (Late enough that the prober's own wakeup delays, a few ms
    // on a busy machine, cannot explain them.)
    let late: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.rtt_ns.is_some_and(|r| r > 30 * MS))
        .collect();
    assert!(
        late.len() >= 10,
        "probes waited behind the stalls: {late:?}"
    );
    let outside: Vec<&&Probe> = late
        .iter()
        .filter(|probe| {
            !stalls.iter().any(|s| {
                let start = s["start_ns"].as_u64().unwrap();
                let end = start + (s["duration_ms"].as_f64().unwrap() * 1e6) as u64;
                probe.sent_ns + 3 * MS >= start && probe.sent_ns <= end + 3 * MS
            })
        })
        .collect();
    assert!(
        outside.len() * 10 <= late.len(),
        "late probes outside every traced stall: {outside:?} of {}",
        late.len()
    );
}

#[test]
fn a_memory_stat_flush_names_the_poller_its_read_and_the_rstat_stack() {
    if !privileged("trace rstat culprit") {
        return;
    }
    let _lock = MachineLock::acquire();
    let prefix = unique_prefix();
    struct Zombies(String);
    impl Drop for Zombies {
        fn drop(&mut self) {
            let _ = netstall(&["lab", "clean", "--prefix", &self.0]);
        }
    }
    let _zombies = Zombies(prefix.clone());
    let made = netstall(&["lab", "zombies", "--prefix", &prefix, "--count", "12000"]);
    assert!(
        made.status.success(),
        "lab zombies: {}",
        String::from_utf8_lossy(&made.stderr)
    );

    let tracer = Tracer::start(&["-w", "10s", "--threshold", "5ms"]);
    let comm = "nst-rstat-poll";
    let poll = netstall(&[
        "lab", "poller", "--prefix", &prefix, "--cpu", "0", "--comm", comm, "-w", "7s", "--json",
    ]);
    assert!(
        poll.status.success(),
        "lab poller: {}",
        String::from_utf8_lossy(&poll.stderr)
    );
    let lines = tracer.finish();
    let stalls = of_type(&lines, "stall");
    let culprit = stalls
        .iter()
        .filter_map(|s| s.get("culprit"))
        .find(|c| c["comm"] == comm)
        .unwrap_or_else(|| panic!("no stall blames {comm}: {stalls:?}"));
    assert_eq!(culprit["syscall"], "read", "{culprit}");
    assert!(
        culprit["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("memory.stat")),
        "{culprit}"
    );
    let stack: Vec<&str> = culprit["kstack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(stack.contains(&"memory_stat_show"), "{stack:?}");
    assert!(stack.contains(&"css_rstat_flush"), "{stack:?}");
    // The stack was taken inside the tracer's own program at the unlock
    // tracepoint; neither it nor the dispatch may reach the user.
    assert!(
        !stack
            .iter()
            .any(|f| f.contains("on_rstat_unlock") || f.starts_with("bpf_trace_run")),
        "{stack:?}"
    );
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `count` ICMP echo requests with `id` to 127.0.0.1, one every 10 ms.
fn ping_loopback(id: u16, count: u16) {
    // SAFETY: plain socket calls with valid buffers; the fd is closed at the end.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let mut to: libc::sockaddr_in = std::mem::zeroed();
        to.sin_family = libc::AF_INET as u16;
        to.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        for seq in 1..=count {
            let mut packet = [0u8; 16];
            packet[0] = 8; // echo request
            packet[4..6].copy_from_slice(&id.to_be_bytes());
            packet[6..8].copy_from_slice(&seq.to_be_bytes());
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
            let sent = libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of_val(&to) as u32,
            );
            assert_eq!(sent, packet.len() as isize);
            std::thread::sleep(Duration::from_millis(10));
        }
        libc::close(fd);
    }
}

#[test]
fn icmp_seq_sees_each_of_our_pings_once_in_order_with_its_context() {
    if !privileged("trace icmp-seq") {
        return;
    }
    let tracer = Tracer::start(&["-w", "3s", "--icmp-seq"]);
    let id = (std::process::id() % 60_000) as u16 + 1000;
    ping_loopback(id, 30);
    let lines = tracer.finish();
    let ours: Vec<&Value> = of_type(&lines, "icmp")
        .into_iter()
        .filter(|v| v["id"] == id)
        .collect();
    let seqs: Vec<u64> = ours.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<u64>>());
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    for echo in ours {
        assert!(!echo["comm"].as_str().unwrap().is_empty(), "{echo}");
        assert!(echo["cpu"].as_u64().unwrap() < cpus, "{echo}");
        assert!(echo["ksoftirqd"].is_boolean(), "{echo}");
        assert!(echo["ts_ns"].as_u64().unwrap() > 1_600_000_000 * 1_000_000_000);
    }
}

#[test]
fn a_healthy_lab_has_no_stalls_and_no_drops_for_30s() {
    if !privileged("trace healthy lab") {
        return;
    }
    let _lock = MachineLock::acquire();
    let lab = Lab::up("0");
    let tracer = Tracer::start(&["-w", "30s", "--drops"]);
    let probes = udp_probes(
        lab.netns("cli"),
        1,
        Duration::from_millis(10),
        Duration::from_secs(29),
    );
    let probes = probes.join().expect("prober thread");
    let lines = tracer.finish();
    assert!(
        probes.iter().filter(|p| p.rtt_ns.is_some()).count() > 1000,
        "the lab carried traffic"
    );
    let summary = of_type(&lines, "trace-summary");
    assert_eq!(summary.len(), 1);
    assert!(
        summary[0]["packets"].as_u64().unwrap() > 1000,
        "{}",
        summary[0]
    );
    assert_eq!(summary[0]["ring_drops"], 0);
    // Normal consumption (NOT_SPECIFIED, NO_SOCKET, ...) is not counted:
    // a healthy lab's traffic drops nothing else. (Other tests' drops, in
    // their own namespaces, may run meanwhile: only the lab's count.)
    let lab_netns: Vec<u64> = ["cli", "n1", "n2", "pod", "out"]
        .iter()
        .map(|role| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/run/netns/{}", lab.netns(role)))
                .expect("lab netns")
                .ino()
        })
        .collect();
    let drops: Vec<&Value> = of_type(&lines, "drop")
        .into_iter()
        .filter(|d| {
            d["netns"]
                .as_u64()
                .is_some_and(|ns| lab_netns.contains(&ns))
        })
        .collect();
    assert!(drops.is_empty(), "healthy lab, yet: {drops:?}");
    let stalls = of_type(&lines, "stall");
    assert!(stalls.is_empty(), "healthy lab, yet: {stalls:?}");
}

#[test]
fn syscalls_reports_a_slow_read_with_its_file() {
    if !privileged("trace syscalls") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("netstall-trace-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("slow-fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);

    let tracer = Tracer::start(&["-w", "3s", "--syscalls", "--threshold", "40ms"]);
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&writer_path)
            .unwrap();
        std::thread::sleep(Duration::from_millis(80));
        std::io::Write::write_all(&mut f, b"late").unwrap();
    });
    let mut reader = std::fs::File::open(&fifo).unwrap();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u64;
    let mut buf = [0u8; 4];
    std::io::Read::read_exact(&mut reader, &mut buf).unwrap();
    writer.join().unwrap();
    let lines = tracer.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let read = of_type(&lines, "syscall")
        .into_iter()
        .find(|s| s["tid"] == tid && s["syscall"] == "read")
        .unwrap_or_else(|| panic!("our slow read: {lines:?}"));
    assert_eq!(read["path"].as_str(), fifo.to_str(), "{read}");
    assert!(read["duration_ms"].as_f64().unwrap() >= 40.0, "{read}");
}

#[test]
fn self_cost_reports_runs_and_ns_per_event_per_program() {
    if !privileged("trace self-cost") {
        return;
    }
    let out = netstall(&["trace", "--json", "-w", "2s", "--self-cost"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let costs = of_type(&lines, "self-cost");
    let sched = costs
        .iter()
        .find(|c| c["program"] == "on_sched_switch")
        .expect("sched_switch program cost");
    assert!(sched["run_count"].as_u64().unwrap() > 0, "{sched}");
    assert!(sched["ns_per_event"].as_f64().unwrap() > 0.0, "{sched}");
    assert!(costs.iter().all(|c| c["detector"].is_string()));
}

#[test]
fn missing_capabilities_are_named_in_one_line_with_exit_2() {
    if !privileged("trace capabilities") {
        return;
    }
    for (drop, name) in [
        ("-bpf", "CAP_BPF"),
        ("-perfmon", "CAP_PERFMON"),
        ("-syslog", "CAP_SYSLOG"),
    ] {
        let out = Command::new("setpriv")
            .args(["--bounding-set", drop, "--inh-caps", drop, NETSTALL])
            .args(["trace", "-w", "1s"])
            .output()
            .expect("run setpriv");
        assert_eq!(out.status.code(), Some(2), "without {name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(name), "names {name}: {err}");
    }
}
