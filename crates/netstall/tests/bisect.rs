//! `netstall bisect` for real, in the lab: a stall on node2's RX CPU, a stall
//! only on node1 (the NodePort hop), a stall on one of the pod's two RX CPUs
//! (per flow), a stall on the client's own RX (sender side), no stall, an
//! unreachable layer, and bad input.
//!
//! Stalls come from `lab spin` on CPU 0 (30 ms every 500 ms); every prober
//! is pinned to CPU 1, and the hosts that must stay clean have their RX
//! steered to CPU 1 too.

mod common;

use common::*;

use std::process::{Child, Command, Stdio};

use netstall_testkit::{privileged, MachineLock};
use serde_json::Value;

/// How long each bisect run probes.
const PROBING: &str = "20s";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `lab spin` in the background, killed (by its pid) when dropped.
struct Spin(Child);

impl Spin {
    /// 30 ms stalls every 500 ms on CPU 0 for a little longer than the probing.
    fn start() -> Spin {
        let child = Command::new(NETSTALL)
            .args([
                "lab", "spin", "--cpu", "0", "--ms", "30", "--every", "500ms", "-w", "25s",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lab spin");
        // Let the injector attach before probing starts.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Spin(child)
    }
}

impl Drop for Spin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `netstall --json bisect` run: its `bisect` line.
fn bisect(args: &[&str]) -> Value {
    let mut all = vec!["--json", "bisect", "--cpu", "1"];
    all.extend(args);
    let out = netstall(&all);
    assert!(
        out.status.success(),
        "bisect {args:?}: {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["type"], "bisect");
    eprintln!("{}", summary(&lines[0]));
    lines[0].clone()
}

/// The table in a few lines, for the test log.
fn summary(line: &Value) -> String {
    let mut out = String::new();
    for p in line["paths"].as_array().unwrap() {
        out.push_str(&format!(
            "{:<22} {:>4}/{:<4} episodes {:>3} p99 {:>10} {}\n",
            p["name"].as_str().unwrap(),
            p["received"],
            p["probes"],
            p["episodes"],
            p["p99_us"],
            p["status"].as_str().unwrap()
        ));
    }
    out.push_str(&format!("verdict: {}", line["verdict"]));
    out
}

fn path<'a>(line: &'a Value, name: &str) -> &'a Value {
    line["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no path {name}: {line}"))
}

fn status_of(line: &Value, name: &str) -> String {
    path(line, name)["status"].as_str().unwrap().to_string()
}

fn lab_bisect(lab: &Lab, extra: &[&str]) -> Value {
    let outside = lab.netns("out");
    let mut args = vec!["--lab", &lab.prefix, "--from-host", &outside, "-w", PROBING];
    args.extend(extra);
    bisect(&args)
}

#[test]
fn a_stall_on_node2s_rx_cpu_is_receiving_host_rx_on_node2() {
    if !privileged("a_stall_on_node2s_rx_cpu_is_receiving_host_rx_on_node2") {
        return;
    }
    let _lock = MachineLock::acquire();
    // node2 and the pod receive on CPU 0, node1 on CPU 1 (client and
    // outside host are on CPU 1 already).
    let lab = Lab::up("0");
    lab.rps(Some("node1"), "1");
    let _spin = Spin::start();
    let line = lab_bisect(&lab, &[]);

    let v = &line["verdict"];
    assert_eq!(v["layer"], "host-rx", "{v}");
    assert_eq!(v["host"], "node2", "{v}");
    assert_eq!(v["side"], "receiver", "{v}");
    assert_eq!(v["scope"], "per-host", "{v}");
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .starts_with("receiving host RX processing on node2"),
        "{v}"
    );
    assert!(v["confidence"].as_f64().unwrap() > 0.9, "{v}");
    for p in line["paths"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let crosses_node2 = p["segments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "node2");
        let expected = if crosses_node2 { "stalled" } else { "clean" };
        assert_eq!(p["status"], expected, "{name}: {p}");
        assert_eq!(p["reachable"], true, "{name}");
    }
    // The node1-only path is clean, the NodePort through node2 is not.
    assert_eq!(status_of(&line, "client/node1-icmp"), "clean");
    assert_eq!(path(&line, "client/node1-tcp")["episodes"], 0);
    let np = path(&line, "client/nodeport-tcp");
    assert!(np["episodes"].as_u64().unwrap() >= 20, "{np}");
    assert_eq!(v["tails_separate"], true, "{v}");
}

#[test]
fn a_stall_only_on_node1_blames_the_nodeport_hop() {
    if !privileged("a_stall_only_on_node1_blames_the_nodeport_hop") {
        return;
    }
    let _lock = MachineLock::acquire();
    // node1 receives on CPU 0; node2 and the pod on CPU 1.
    let lab = Lab::up("0");
    lab.rps(Some("node2"), "1");
    lab.rps(Some("pod"), "1");
    let _spin = Spin::start();
    let line = lab_bisect(&lab, &[]);

    let v = &line["verdict"];
    assert_eq!(v["layer"], "host-rx", "{v}");
    assert_eq!(v["host"], "node1", "{v}");
    assert_eq!(v["side"], "receiver", "{v}");
    assert_eq!(status_of(&line, "client/nodeport-tcp"), "stalled");
    assert!(
        v["stalled"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "client/nodeport-tcp"),
        "{v}"
    );
    // The direct paths to the pod and node2, from outside the cluster, are clean.
    for direct in [
        "outside/pod-tcp",
        "outside/pod-icmp",
        "outside/node2-tcp",
        "outside/node2-icmp",
    ] {
        assert_eq!(status_of(&line, direct), "clean", "{direct}");
    }
}

#[test]
fn a_stall_on_some_of_the_pods_rx_cpus_is_per_flow() {
    if !privileged("a_stall_on_some_of_the_pods_rx_cpus_is_per_flow") {
        return;
    }
    let _lock = MachineLock::acquire();
    // Every host on CPU 1 except the pod, whose RX is spread over CPUs 0-1
    // by RPS hash: the TCP flows (and ICMP address pairs) that hash to CPU 0 stall.
    let lab = Lab::up("1");
    lab.rps(Some("client"), "1");
    lab.rps(Some("outside"), "1");
    lab.rps(Some("pod"), "0-1");
    let _spin = Spin::start();
    let line = lab_bisect(&lab, &[]);

    let v = &line["verdict"];
    assert_eq!(v["layer"], "host-rx", "{v}");
    assert_eq!(v["host"], "pod", "{v}");
    assert_eq!(v["scope"], "per-flow", "{v}");
    // Which flows hash to CPU 0 is chance, so each path may lose a few or
    // most of its flows; together they leave some flows untouched.
    let mut spared = 0;
    for name in ["client/pod-tcp", "outside/pod-tcp", "client/nodeport-tcp"] {
        let p = path(&line, name);
        assert_eq!(p["status"], "stalled", "{p}");
        spared += 8 - p["flows_stalled"].as_u64().unwrap();
    }
    assert!(spared > 0, "some TCP flows never stall: {line}");
    for p in line["paths"].as_array().unwrap() {
        if !p["segments"].as_array().unwrap().iter().any(|s| s == "pod") {
            assert_ne!(p["status"], "stalled", "{p}");
        }
    }
}

#[test]
fn a_stall_on_the_clients_own_rx_is_the_sender_side() {
    if !privileged("a_stall_on_the_clients_own_rx_is_the_sender_side") {
        return;
    }
    let _lock = MachineLock::acquire();
    // Every node and the outside host on CPU 1, the client's own RX on CPU 0.
    let lab = Lab::up("1");
    lab.rps(Some("client"), "0");
    lab.rps(Some("outside"), "1");
    let _spin = Spin::start();
    let line = lab_bisect(&lab, &[]);

    let v = &line["verdict"];
    assert_eq!(v["layer"], "host-rx", "{v}");
    assert_eq!(v["side"], "sender", "{v}");
    assert_eq!(v["host"], "client", "{v}");
    // Kernel RX stamps are taken as a reply enters the client's backlog, so
    // the wait shows as replies held after it, on the client's paths only.
    for p in line["paths"].as_array().unwrap() {
        if p["vantage"] == "client" && p["proto"] == "icmp" {
            assert_eq!(p["sender_stalled"], true, "{p}");
            assert!(p["sender_episodes"].as_u64().unwrap() >= 20, "{p}");
        }
        if p["vantage"] == "outside" {
            assert_eq!(p["sender_stalled"], false, "{p}");
            assert_eq!(p["status"], "clean", "{p}");
        }
    }
}

#[test]
fn without_injected_stalls_no_layer_adds_stalls() {
    if !privileged("without_injected_stalls_no_layer_adds_stalls") {
        return;
    }
    // No stalls of its own, but other tests' stalls would show.
    let _lock = MachineLock::acquire();
    let lab = Lab::up("0");
    let line = lab_bisect(&lab, &[]);

    let v = &line["verdict"];
    assert_eq!(v["layer"], "none", "{v}");
    assert_eq!(v["summary"], "no layer adds stalls", "{v}");
    assert!(v["stalled"].as_array().unwrap().is_empty(), "{v}");
    let paths = line["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 14);
    for p in paths {
        assert_eq!(p["reachable"], true, "{p}");
        let (sent, received) = (
            p["probes"].as_u64().unwrap(),
            p["received"].as_u64().unwrap(),
        );
        assert!(received + 2 >= sent, "{p}");
        assert_eq!(p["sender_stalled"], false, "{p}");
        // The contract's fields.
        for field in ["name", "target", "proto", "probes", "episodes", "p99_us"] {
            assert!(p.get(field).is_some(), "{field}: {p}");
        }
        // 20 s every 10 ms: about 2000 probes.
        let sent = p["probes"].as_u64().unwrap();
        assert!((1900..=2010).contains(&sent), "{p}");
        let ci = &p["p99_ci_us"];
        let (low, high) = (ci["low"].as_f64().unwrap(), ci["high"].as_f64().unwrap());
        let p99 = p["p99_us"].as_f64().unwrap();
        assert!(low <= p99 && p99 <= high, "{p}");
    }
}

#[test]
fn a_wrong_pod_ip_is_unreachable_and_the_rest_still_runs() {
    if !privileged("a_wrong_pod_ip_is_unreachable_and_the_rest_still_runs") {
        return;
    }
    let lab = Lab::up("0");
    let line = bisect(&[
        "--lab",
        &lab.prefix,
        "--pod",
        "10.244.2.99:8080",
        "-w",
        "4s",
    ]);
    for name in ["client/pod-tcp", "client/pod-icmp"] {
        let p = path(&line, name);
        assert_eq!(p["reachable"], false, "{p}");
        assert_eq!(p["status"], "unreachable", "{p}");
        assert_eq!(p["received"], 0, "{p}");
        assert!(
            p["unreachable_reason"]
                .as_str()
                .unwrap()
                .contains("10.244.2.99"),
            "{p}"
        );
    }
    for name in [
        "client/nodeport-tcp",
        "client/node2-tcp",
        "client/node2-icmp",
        "client/node1-tcp",
        "client/node1-icmp",
    ] {
        let p = path(&line, name);
        assert_eq!(p["reachable"], true, "{p}");
        assert!(p["received"].as_u64().unwrap() >= 350, "{p}");
    }
    let v = &line["verdict"];
    assert_eq!(
        v["unreachable"],
        serde_json::json!(["client/pod-tcp", "client/pod-icmp"]),
        "{v}"
    );

    // Text mode: the table, the unreachable reason and the verdict line.
    let out = netstall(&[
        "bisect",
        "--lab",
        &lab.prefix,
        "--pod",
        "10.244.2.99",
        "--cpu",
        "1",
        "-w",
        "2s",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("path "), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("client/pod-icmp") && l.contains("unreachable: ")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("client/node1-icmp") && l.contains(" 192.168.50.1 ")),
        "{stdout}"
    );
    assert!(
        stdout.lines().last().unwrap().starts_with("verdict: "),
        "{stdout}"
    );
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    for (args, expected) in [
        (vec!["bisect"], "nothing to probe"),
        (vec!["bisect", "--lab", "nosuchlab"], "no lab 'nosuchlab'"),
        (vec!["bisect", "--nodeport", "192.168.50.1"], "HOST:PORT"),
        (
            vec!["bisect", "--pod", "no.such.host.invalid"],
            "unknown host",
        ),
        (
            vec!["bisect", "--node", "127.0.0.1", "--netns", "nosuchns"],
            "no network namespace 'nosuchns'",
        ),
        (
            vec!["bisect", "--node", "127.0.0.1", "--confidence", "2"],
            "invalid confidence",
        ),
    ] {
        let out = netstall(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        // The reason is on the first line (clap adds a usage hint below its own).
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.contains(expected), "{args:?}: {stderr}");
    }
}
