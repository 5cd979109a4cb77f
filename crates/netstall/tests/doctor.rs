//! `netstall doctor` and `netstall demo`, for real: the incident reproduced,
//! named, fixed; a healthy lab called healthy; an injected BH-off stall
//! named by its stack; the HTML report rendered by a real browser.

mod common;

use common::*;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use netstall_testkit::{privileged, unique_prefix, MachineLock};
use serde_json::Value;

#[test]
fn demo_reproduces_diagnoses_and_fixes_the_incident() {
    if !privileged("demo_reproduces_diagnoses_and_fixes_the_incident") {
        return;
    }
    let _lock = MachineLock::acquire();
    let prefix = unique_prefix();
    let report = std::env::temp_dir().join(format!("netstall-demo-{prefix}.html"));
    let out = netstall(&[
        "demo",
        "--prefix",
        &prefix,
        "--zombies",
        "20000",
        "--report",
        report.to_str().unwrap(),
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = json_lines(&out);
    let demo = *of_type(&lines, "demo")
        .last()
        .unwrap_or_else(|| panic!("no demo result; stderr: {stderr}"));
    assert_eq!(out.status.code(), Some(0), "{demo}\n{stderr}");

    assert_eq!(
        demo["baseline_episodes"], 0,
        "the lab was not healthy to start with: {demo}"
    );
    assert!(
        demo["incident_episodes"].as_u64().unwrap() >= 2,
        "the probes saw no stall: {demo}"
    );
    assert!(
        demo["incident_max_rtt_ms"].as_f64().unwrap() >= 10.0,
        "{demo}"
    );
    assert_eq!(demo["diagnosed"], "dying-memcg-stat-flush", "{demo}");
    assert_eq!(demo["culprit"], demo["poller_comm"], "{demo}");
    assert_eq!(demo["diagnosed_cpu"], demo["rx_cpu"], "{demo}");
    assert!(
        demo["from_first_stall_s"].as_f64().unwrap() <= 30.0,
        "verdict too late: {demo}"
    );
    assert!(
        demo["dying_before_remediation"].as_u64().unwrap() >= 18_000,
        "{demo}"
    );
    assert!(
        demo["dying_after_remediation"].as_u64().unwrap() * 10
            < demo["dying_before_remediation"].as_u64().unwrap()
    );
    assert_eq!(demo["healthy_after"], true, "{demo}");
    assert_eq!(demo["after_episodes"], 0, "{demo}");
    assert!(
        demo["elapsed_s"].as_f64().unwrap() < 180.0,
        "the demo must finish within 3 minutes: {demo}"
    );

    // The two verdicts: the incident, one cause and unhealthy; then healthy
    // (or degraded: short delays with their explanation, e.g. vCPU steal).
    let verdicts = of_type(&lines, "verdict");
    assert_eq!(verdicts.len(), 2);
    assert_eq!(verdicts[0]["status"], "unhealthy", "{}", verdicts[0]);
    assert_eq!(
        verdicts[0]["causes"].as_array().unwrap().len(),
        1,
        "{}",
        verdicts[0]
    );
    assert_ne!(verdicts[1]["status"], "unhealthy", "{}", verdicts[1]);
    let culprit = &verdicts[0]["causes"][0]["culprit"];
    assert_eq!(culprit["syscall"], "read");
    assert!(
        culprit["path"].as_str().unwrap().ends_with("memory.stat"),
        "{culprit}"
    );
    assert_eq!(verdicts[1]["healthy"], true);

    // The incident's report embeds its records: replayed offline, they give
    // the live verdict again (but for the timing of the live run).
    assert_replays_to(&report, verdicts[0]);

    // The dying cgroups and the lab are gone.
    assert!(!netstall_lab::netns::exists(&format!("{prefix}-cli")));
    render_report_in_chromium(&report);
    let _ = std::fs::remove_file(&report);
}

/// Loads the report in headless Chromium behind a counting proxy: the page
/// must render (screenshot, DOM with the verdict, a plot, the culprit table)
/// without a single request leaving the file.
fn render_report_in_chromium(report: &std::path::Path) {
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    proxy.set_nonblocking(true).unwrap();
    let profile = std::env::temp_dir().join(format!("netstall-chromium-{}", unique_prefix()));
    let screenshot = profile.with_extension("png");
    let chromium = |extra: &[&str]| {
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--window-size=1100,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--proxy-server=http://{proxy_addr}"))
        .arg("--proxy-bypass-list=<-loopback>")
        .args(extra)
        .arg(format!("file://{}", report.display()))
        .stdin(Stdio::null());
        cmd.output().expect("chromium (Debian package chromium)")
    };
    let dom = chromium(&["--dump-dom"]);
    assert!(
        dom.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("id=\"verdict\""), "no verdict in the DOM");
    assert!(dom.contains("dying-memcg-stat-flush"));
    assert!(dom.contains("<svg id=\"rtt-timeline\""), "no RTT plot");
    assert!(dom.contains("class=\"stall\""), "no stall in the CPU lanes");
    assert!(dom.contains("<table id=\"culprits\""), "no culprit table");
    assert!(
        dom.contains("memory_stat_show"),
        "the culprit stack is missing"
    );
    // The headline names the top cause, its CPU and its culprit.
    let verdict = &dom[dom.find("id=\"verdict\"").unwrap()..];
    let headline = &verdict[verdict.find("<p>").unwrap() + 3..];
    let headline = &headline[..headline.find("</p>").unwrap()];
    for part in [
        "dying-memcg-stat-flush on CPU ",
        "culprit cadvisor[",
        "memory.stat",
    ] {
        assert!(
            headline.contains(part),
            "headline without '{part}': {headline}"
        );
    }
    assert!(!headline.contains("causes found"), "{headline}");
    // No two legend boxes intersect, as the browser laid them out: a copy
    // of the report measures its legends into the DOM once loaded.
    let measured = profile.with_extension("measured.html");
    let html = std::fs::read_to_string(report).unwrap();
    let script = "<script>window.addEventListener('load',()=>{const b=[...document.querySelectorAll('svg text.legend')]\
        .map(e=>{const r=e.getBoundingClientRect();return [r.left,r.top,r.right,r.bottom]});\
        const p=document.createElement('pre');p.id='legend-boxes';p.textContent=JSON.stringify(b);\
        document.body.appendChild(p)});</script></body>";
    std::fs::write(&measured, html.replacen("</body>", script, 1)).unwrap();
    let mut cmd = Command::new("chromium");
    let dom = cmd
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .args(["--virtual-time-budget=3000", "--window-size=1100,2400"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &format!("file://{}", measured.display())])
        .stdin(Stdio::null())
        .output()
        .expect("chromium");
    let _ = std::fs::remove_file(&measured);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let at = dom
        .find("id=\"legend-boxes\">")
        .expect("the legends were measured")
        + 18;
    let boxes: Vec<[f64; 4]> = serde_json::from_str(&dom[at..at + dom[at..].find('<').unwrap()])
        .expect("legend boxes as JSON");
    assert!(boxes.len() >= 2, "{boxes:?}");
    for (i, a) in boxes.iter().enumerate() {
        assert!(a[2] > a[0] && a[3] > a[1], "legend {i} has no area: {a:?}");
        for (j, b) in boxes.iter().enumerate().skip(i + 1) {
            let apart = a[2] <= b[0] || b[2] <= a[0] || a[3] <= b[1] || b[3] <= a[1];
            assert!(apart, "legends {i} {a:?} and {j} {b:?} intersect");
        }
    }
    let shot = chromium(&[&format!("--screenshot={}", screenshot.display())]);
    assert!(shot.status.success());
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot is empty"
    );

    let mut requests = Vec::new();
    while let Ok((mut conn, _)) = proxy.accept() {
        let mut head = [0u8; 256];
        let n = conn.read(&mut head).unwrap_or(0);
        requests.push(
            String::from_utf8_lossy(&head[..n])
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    // Chromium's own services call home even headless; anything else came from the page.
    const BROWSER_SERVICES: [&str; 4] = [
        "clients2.google.com",
        "update.googleapis.com",
        "accounts.google.com",
        "optimizationguide-pa.googleapis.com",
    ];
    requests.retain(|r| !BROWSER_SERVICES.iter().any(|host| r.contains(host)));
    assert!(
        requests.is_empty(),
        "the report made external requests: {requests:?}"
    );
    let html = std::fs::read_to_string(report).unwrap();
    for attr in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "src='http",
        "href='http",
        "@import",
    ] {
        assert!(
            !html.contains(attr),
            "the report references an external resource ({attr})"
        );
    }
    let _ = std::fs::remove_dir_all(&profile);
    let _ = std::fs::remove_file(&screenshot);
}

/// The report of the recorded incident (replayed, no privileges needed)
/// in headless Chromium: the same checks as the demo's live report.
#[test]
fn the_report_of_a_replayed_incident_renders_in_chromium() {
    let report = std::env::temp_dir().join(format!("netstall-report-{}.html", unique_prefix()));
    let out = Command::new(NETSTALL)
        .args(["doctor", "--replay"])
        .arg(repo_file(
            "crates/netstall-doctor/tests/fixtures/incident.jsonl",
        ))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    // The incident's verdict is unhealthy: exit 1, with the report written.
    assert!(report.exists(), "{out:?}");
    render_report_in_chromium(&report);
    let _ = std::fs::remove_file(&report);
}

/// What a loaded node's verdict may hold: delays of the environment (steal,
/// a starved ksoftirqd, nothing found), never a fault of the node.
const ENVIRONMENT_CAUSES: [&str; 3] = ["vcpu-steal", "ksoftirqd-starved", "unexplained"];

#[test]
fn doctor_on_a_healthy_lab_is_healthy() {
    if !privileged("doctor_on_a_healthy_lab_is_healthy") {
        return;
    }
    let _lock = MachineLock::acquire();
    let lab = Lab::up("0");
    // Both CPUs busy and a filesystem walk: how a loaded node looks.
    let _load = Load::both_cpus(Duration::from_secs(120));
    let out = netstall(&[
        "doctor",
        "-w",
        "15s",
        "--target",
        "192.168.50.1:30080",
        "--target",
        "10.244.2.10",
        "--target",
        "http://10.244.2.10:8080/",
        "--netns",
        &format!("{}-cli", lab.prefix),
        "--cpu",
        "1",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = json_lines(&out);
    let verdict = *of_type(&lines, "verdict").last().expect("a verdict");
    assert_eq!(verdict["healthy"], true, "{verdict}\n{stderr}");
    assert_ne!(verdict["status"], "unhealthy", "{verdict}");
    for cause in verdict["causes"].as_array().unwrap() {
        assert!(
            ENVIRONMENT_CAUSES.contains(&cause["id"].as_str().unwrap()),
            "a healthy lab has no fault of its own: {cause}"
        );
        assert_eq!(cause["severity"], "degraded", "{cause}");
        assert_ne!(cause["id"], "not-this-host", "every target is on this host");
    }
    // Everything ran, steal from the kernel's own clock.
    for source in verdict["sources"].as_array().unwrap() {
        assert_eq!(source["state"], "ran", "{source}");
    }
    let steal = verdict["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "steal")
        .expect("steal is a source");
    assert!(
        steal["detail"].as_str().unwrap().contains("steal clock"),
        "{steal}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn doctor_names_injected_packet_drops_with_the_kernels_reason() {
    if !privileged("doctor_names_injected_packet_drops_with_the_kernels_reason") {
        return;
    }
    let _lock = MachineLock::acquire();
    let lab = Lab::up("0");
    // 10% of the packets forwarded to the pod dropped at random by nftables on node2.
    let mut injector = Command::new(NETSTALL)
        .args([
            "lab",
            "drops",
            "--prefix",
            &lab.prefix,
            "--rate",
            "10",
            "-w",
            "40s",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lab drops");
    std::thread::sleep(Duration::from_millis(1500));
    let out = netstall(&[
        "doctor",
        "-w",
        "10s",
        "--target",
        "10.244.2.10:8080",
        "--netns",
        &lab.netns("cli"),
        "--cpu",
        "1",
        "--no-sample",
        "--json",
    ]);
    // SIGINT: the injector removes its rule and reports.
    // SAFETY: kill on the PID of the child this test started.
    unsafe { libc::kill(injector.id() as i32, libc::SIGINT) };
    let mut injected = String::new();
    injector
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut injected)
        .unwrap();
    assert!(injector.wait().unwrap().success());
    assert!(
        injected.contains(r#""type":"lab-drops""#) && injected.contains(r#""rate_pct":10"#),
        "{injected}"
    );
    let tables = Command::new("ip")
        .args(["netns", "exec", &lab.netns("n2"), "nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("netstall_drops"),
        "the rule is removed"
    );

    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = json_lines(&out);
    let verdict = *of_type(&lines, "verdict").last().expect("a verdict");
    let causes: Vec<&Value> = verdict["causes"]
        .as_array()
        .unwrap()
        .iter()
        .chain(verdict["also"].as_array().unwrap())
        .collect();
    let drops = causes
        .iter()
        .find(|c| c["id"] == "packet-drops")
        .unwrap_or_else(|| panic!("packet-drops named: {verdict}\n{stderr}"));
    assert_eq!(drops["named"], "NETFILTER_DROP", "{drops}");
    assert!(
        drops["evidence"].as_array().unwrap().iter().any(|e| e
            .as_str()
            .unwrap()
            .contains("NETFILTER_DROP at nft_do_chain")),
        "{drops}"
    );
    assert!(
        !causes.iter().any(|c| c["id"] == "dying-memcg-stat-flush"),
        "not the story's cause: {verdict}"
    );
    assert_ne!(verdict["status"], "healthy", "{verdict}");
}

#[test]
fn doctor_names_an_overflowing_cpu_backlog_with_its_cpu() {
    if !privileged("doctor_names_an_overflowing_cpu_backlog_with_its_cpu") {
        return;
    }
    // netdev_max_backlog is host-wide: nobody else may run meanwhile.
    let _lock = MachineLock::acquire();
    let before = std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog").unwrap();
    let lab = Lab::up("0");
    // A backlog of 10 packets and 5,000-packet bursts from the client (on CPU 1)
    // toward the pod: CPU 0, the nodes' RX CPU, cannot keep up.
    let mut injector = Command::new(NETSTALL)
        .args([
            "lab",
            "backlog",
            "--prefix",
            &lab.prefix,
            "-w",
            "40s",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lab backlog");
    std::thread::sleep(Duration::from_millis(1500));
    let during = std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog").unwrap();
    let out = netstall(&[
        "doctor",
        "-w",
        "10s",
        "--target",
        "10.244.2.10:8080",
        "--netns",
        &lab.netns("cli"),
        "--cpu",
        "1",
        "--no-sample",
        "--json",
    ]);
    // SIGINT: the injector restores the sysctl and reports.
    // SAFETY: kill on the PID of the child this test started.
    unsafe { libc::kill(injector.id() as i32, libc::SIGINT) };
    let mut injected = String::new();
    injector
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut injected)
        .unwrap();
    assert!(injector.wait().unwrap().success());
    assert_eq!(during.trim(), "10");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog").unwrap(),
        before,
        "netdev_max_backlog restored"
    );
    let report: Value = serde_json::from_str(injected.trim()).expect(&injected);
    assert_eq!(report["type"], "lab-backlog", "{injected}");
    // CPU 0 dropped (CPU 1's backlog, unsteered, may drop a few of the replies).
    assert!(
        report["drop_cpus"].as_array().unwrap().contains(&0.into()),
        "{injected}"
    );

    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = json_lines(&out);
    let verdict = *of_type(&lines, "verdict").last().expect("a verdict");
    let causes: Vec<&Value> = verdict["causes"]
        .as_array()
        .unwrap()
        .iter()
        .chain(verdict["also"].as_array().unwrap())
        .collect();
    let backlog = causes
        .iter()
        .find(|c| c["id"] == "backlog-overflow")
        .unwrap_or_else(|| panic!("backlog-overflow named: {verdict}\n{stderr}"));
    assert_eq!(backlog["named"], "CPU_BACKLOG", "{backlog}");
    // The RX CPU, by itself when no other traffic on the host overflowed.
    assert!(
        backlog["cpus"].as_array().unwrap().contains(&0.into())
            && (backlog["cpu"] == 0 || backlog["cpu"].is_null()),
        "{backlog}"
    );
    assert!(
        backlog["evidence"].as_array().unwrap().iter().any(|e| e
            .as_str()
            .unwrap()
            .starts_with("CPU 0: ")
            && e.as_str().unwrap().contains("softnet_stat")),
        "{backlog}"
    );
    assert!(
        !causes.iter().any(|c| c["id"] == "dying-memcg-stat-flush"),
        "not the story's cause: {verdict}"
    );
    assert_eq!(verdict["status"], "unhealthy", "{verdict}");
}

#[test]
fn doctor_without_privileges_refuses_naming_the_capability() {
    if !privileged("doctor_without_privileges_refuses_naming_the_capability") {
        return;
    }
    // As nobody, with no capabilities: refused up front, in one line.
    let as_nobody = |extra: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(NETSTALL)
            .args(["doctor", "-w", "2s", "--json"])
            .args(extra)
            .output()
            .expect("run setpriv")
    };
    let out = as_nobody(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CAP_BPF"), "{stderr}");
    assert!(stderr.contains("--allow-partial"), "{stderr}");
    // With --json, the one line on stdout is the error record: no verdict.
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "no verdict while blind: {lines:?}");
    assert_eq!(lines[0]["type"], "error", "{lines:?}");

    // Asked to go on: it watches what it can and says `unknown`, never healthy.
    let out = as_nobody(&["--allow-partial"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = json_lines(&out);
    let verdict = *of_type(&lines, "verdict").last().expect("a verdict");
    assert_eq!(verdict["status"], "unknown", "{verdict}\n{stderr}");
    assert_eq!(verdict["healthy"], false);
    let tracer = verdict["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "tracer")
        .unwrap();
    assert_eq!(tracer["state"], "unavailable", "{tracer}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
}

#[test]
fn doctor_names_an_injected_bh_off_stall_by_its_stack() {
    if !privileged("doctor_names_an_injected_bh_off_stall_by_its_stack") {
        return;
    }
    let _lock = MachineLock::acquire();
    let lab = Lab::up("0");
    let mut spinner = Command::new(NETSTALL)
        .args([
            "lab", "spin", "--cpu", "0", "--ms", "50", "--every", "1s", "-w", "14s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let report = std::env::temp_dir().join(format!("netstall-spin-{}.html", lab.prefix));
    let saved = std::env::temp_dir().join(format!("netstall-spin-{}.jsonl", lab.prefix));
    let mut doctor = Command::new(NETSTALL)
        .args([
            "doctor",
            "-w",
            "10s",
            "--target",
            "192.168.50.1:30080",
            "--netns",
            &format!("{}-cli", lab.prefix),
            "--cpu",
            "1",
            "--json",
        ])
        .arg("--report")
        .arg(&report)
        .arg("--save")
        .arg(&saved)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stall events stream while the doctor runs.
    let stdout = doctor.stdout.take().unwrap();
    let lines: Vec<Value> = BufReader::new(stdout)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let status = doctor.wait().unwrap();
    let _ = spinner.wait();
    assert_eq!(status.code(), Some(1), "findings exit 1");
    assert!(of_type(&lines, "stall").len() >= 5, "stalls stream live");
    let verdict = *of_type(&lines, "verdict").last().unwrap();
    let top = &verdict["causes"][0];
    assert_eq!(top["id"], "irqs-off-section", "{verdict}");
    assert!(
        top["named"].as_str().unwrap().contains("spin_in_softirq"),
        "{top}"
    );
    assert_eq!(top["cpu"], 0);
    assert!(
        verdict["causes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != "dying-memcg-stat-flush"),
        "{verdict}"
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("spin_in_softirq"));
    // Saved and replayed (the records file and the report), the verdict is
    // the live one.
    assert_replays_to(&saved, verdict);
    assert_replays_to(&report, verdict);
    let _ = std::fs::remove_file(&report);
    let _ = std::fs::remove_file(&saved);
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn doctor_names_a_non_preemptible_kernel_section_with_its_task_syscall_and_stack() {
    if !privileged("doctor_names_a_non_preemptible_kernel_section_with_its_task_syscall_and_stack")
    {
        return;
    }
    let _lock = MachineLock::acquire();
    let lab = Lab::up("0");
    // 50 ms in the bpf() syscall's kernel code every second on CPU 0, with
    // a task runnable there all along (PREEMPT_NONE: nothing preempts it).
    let mut injector = Command::new(NETSTALL)
        .args([
            "lab", "nosched", "--cpu", "0", "--ms", "50", "--every", "1s", "-w", "14s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let saved = std::env::temp_dir().join(format!("netstall-nosched-{}.jsonl", lab.prefix));
    let out = netstall(&[
        "doctor",
        "-w",
        "10s",
        "--target",
        "192.168.50.1:30080",
        "--netns",
        &lab.netns("cli"),
        "--cpu",
        "1",
        "--no-sample",
        "--json",
        "--save",
        saved.to_str().unwrap(),
    ]);
    let _ = injector.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = json_lines(&out);
    let verdict = *of_type(&lines, "verdict").last().expect("a verdict");
    let cause = verdict["causes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "kernel-nonpreemptible")
        .unwrap_or_else(|| panic!("kernel-nonpreemptible named: {verdict}\n{stderr}"));
    assert_eq!(cause["cpu"], 0, "{cause}");
    assert_eq!(cause["named"], "bpf", "{cause}");
    assert_eq!(cause["severity"], "unhealthy", "{cause}");
    assert!(cause["stalls"].as_u64().unwrap() >= 5, "{cause}");
    let worst = cause["worst_ms"].as_f64().unwrap();
    assert!((35.0..=80.0).contains(&worst), "{cause}");
    assert_eq!(cause["culprit"]["syscall"], "bpf", "{cause}");
    assert!(
        cause["culprit"]["kstack"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "bpf_prog_test_run_syscall"),
        "{cause}"
    );
    assert!(
        verdict["causes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != "dying-memcg-stat-flush"),
        "not the story's cause: {verdict}"
    );
    assert_replays_to(&saved, verdict);
    let _ = std::fs::remove_file(&saved);
}

/// `doctor --replay FILE --json`, as nobody (replay needs no privileges),
/// gives `live` again, but for the fields that describe the live run's
/// timing.
fn assert_replays_to(file: &std::path::Path, live: &Value) {
    // The file must be readable by nobody.
    let copy = std::env::temp_dir().join(format!(
        "netstall-replay-{}-{}",
        std::process::id(),
        file.file_name().unwrap().to_string_lossy()
    ));
    std::fs::copy(file, &copy).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(NETSTALL)
        .args(["doctor", "--json", "--replay"])
        .arg(&copy)
        .output()
        .expect("run setpriv");
    let _ = std::fs::remove_file(&copy);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = json_lines(&out);
    let replayed = *of_type(&lines, "verdict")
        .last()
        .unwrap_or_else(|| panic!("no verdict replaying {}: {stderr}", file.display()));
    let without_timing = |v: &Value| {
        let mut v = v.clone();
        let map = v.as_object_mut().unwrap();
        map.remove("time_to_verdict_s");
        map.remove("from_first_stall_s");
        v
    };
    assert_eq!(
        without_timing(replayed),
        without_timing(live),
        "replaying {}",
        file.display()
    );
    let live_exit = match live["status"].as_str() {
        Some("unhealthy") => 1,
        Some("unknown") => 2,
        _ => 0,
    };
    assert_eq!(out.status.code(), Some(live_exit), "{stderr}");
}

#[test]
fn replay_of_bad_input_names_the_line_in_one_line() {
    let dir = TempDir::new();
    let good = std::fs::read_to_string(repo_file(
        "crates/netstall-doctor/tests/fixtures/incident.jsonl",
    ))
    .unwrap();
    let first = good.lines().next().unwrap();
    let second = good.lines().nth(1).unwrap();
    let cases: [(&str, String, &str); 6] = [
        ("truncated", format!("{first}\n{}", &second[..second.len() / 2]), "line 2"),
        ("unknown-type", format!("{first}\n{{\"type\":\"no-such-record\"}}\n"), "line 2: unknown record type `no-such-record`"),
        ("wrong-field-type", format!("{first}\n{{\"type\":\"steal\",\"cpu\":\"zero\",\"start_ns\":1,\"end_ns\":2,\"steal_ms\":1.0,\"source\":\"proc-stat\"}}\n"), "line 2: invalid type"),
        ("not-a-run", format!("{second}\n"), "no doctor-run record"),
        ("report.html", "<!DOCTYPE html>\n<html><body>no records</body></html>\n".into(), "no embedded records"),
        ("missing", String::new(), "cannot open"),
    ];
    for (name, text, needle) in cases {
        let path = dir.0.join(name);
        if name != "missing" {
            std::fs::write(&path, text).unwrap();
        }
        let out = netstall(&["doctor", "--replay", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: no verdict from bad input");
    }
}

#[test]
fn doctor_rejects_bad_targets_in_one_line() {
    for (target, needle) in [
        ("10.1.1.1:99999", "invalid port"),
        (":80", "invalid target"),
        ("ftp://10.1.1.1/", "unsupported URL scheme 'ftp'"),
        ("http://10.1.1.1:0/", "invalid URL"),
    ] {
        let out = netstall(&["doctor", "--target", target]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{target}"
        );
    }
    if privileged("doctor_rejects_bad_targets_in_one_line") {
        let out = netstall(&["doctor", "-w", "1s", "--target", "no-such-host.invalid"]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("unknown host"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

/// A kernel that refuses one program loses only the detectors that need it:
/// forced here with the loader's test hook (NETSTALL_TEST_REFUSE_PROGRAMS,
/// docs/kernels.md), as a kernel without the cgroup rstat tracepoints
/// (before 6.10) would. `trace --self-cost` names what loaded and what is
/// missing with why; the doctor still names an injected stall's culprit,
/// and its verdict says which evidence it lacked and what it would have shown.
#[test]
fn a_refused_program_loses_only_its_detector_and_the_verdict_names_it() {
    if !privileged("a_refused_program_loses_only_its_detector_and_the_verdict_names_it") {
        return;
    }
    const REFUSE: (&str, &str) = ("NETSTALL_TEST_REFUSE_PROGRAMS", "on_rstat_locked");
    let _lock = MachineLock::acquire();
    let trace = Command::new(NETSTALL)
        .args(["trace", "-w", "2s", "--self-cost"])
        .env(REFUSE.0, REFUSE.1)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&trace.stdout);
    assert_eq!(
        trace.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&trace.stderr)
    );
    let loaded = text
        .lines()
        .find_map(|l| l.strip_prefix("DETECTORS loaded: "))
        .unwrap_or_else(|| panic!("no loaded detectors line:\n{text}"));
    for detector in ["rx-backlog", "softirq-delay", "irqs-off", "ksoftirqd"] {
        assert!(
            loaded.split(", ").any(|d| d == detector),
            "{detector} not in {loaded}"
        );
    }
    assert!(!loaded.contains("rstat-hold"), "{loaded}");
    let missing: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("DETECTORS missing "))
        .collect();
    assert_eq!(missing.len(), 1, "{text}");
    assert!(
        missing[0].starts_with("rstat-hold: on_rstat_locked refused")
            && missing[0].contains("it would have shown who held the cgroup rstat lock"),
        "{}",
        missing[0]
    );
    // The programs that loaded ran and were costed; the refused one was not.
    assert!(text.contains("COST on_local_timer_exit"), "{text}");
    assert!(!text.contains("COST on_rstat_locked"), "{text}");

    // Probes through the lab, its RX steered to CPU 0: packets that wait
    // there are what the stall is seen by.
    let lab = Lab::up("0");
    let mut spinner = Command::new(NETSTALL)
        .args([
            "lab", "spin", "--cpu", "0", "--ms", "50", "--every", "1s", "-w", "16s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let doctor = Command::new(NETSTALL)
        .args([
            "doctor",
            "-w",
            "8s",
            "--target",
            "192.168.50.1:30080",
            "--cpu",
            "1",
            "--json",
        ])
        .args(["--netns", &format!("{}-cli", lab.prefix)])
        .env(REFUSE.0, REFUSE.1)
        .output()
        .unwrap();
    let _ = spinner.wait();
    let lines = json_lines(&doctor);
    let verdict = *of_type(&lines, "verdict").last().expect("a verdict");
    assert_eq!(doctor.status.code(), Some(1), "findings exit 1: {verdict}");
    // The stall is still named, on its CPU, without the rstat detector.
    let top = &verdict["causes"][0];
    assert_eq!(top["id"], "irqs-off-section", "{verdict}");
    assert_eq!(top["cpu"], 0, "{top}");
    assert!(
        top["named"].as_str().unwrap().contains("spin_in_softirq"),
        "{top}"
    );
    let tracer = verdict["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "tracer")
        .expect("tracer is a source");
    assert_eq!(tracer["state"], "partial", "{tracer}");
    let detail = tracer["detail"].as_str().unwrap();
    assert!(
        detail.contains("missing on this kernel: rstat-hold: on_rstat_locked refused")
            && detail.contains("it would have shown who held the cgroup rstat lock"),
        "{detail}"
    );
}

/// Without kernel BTF (hidden here by an empty tmpfs over /sys/kernel/btf
/// in a private mount namespace) the tracer refuses in one line, exit 2.
#[test]
fn without_btf_trace_is_a_one_line_error() {
    if !privileged("without_btf_trace_is_a_one_line_error") {
        return;
    }
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs none /sys/kernel/btf && exec {NETSTALL} trace -w 1s"
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("needs kernel BTF"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// `lab throttle` puts the pod's HTTP server in a CPU cgroup of 20 ms per
/// 100 ms beside a busy process: the doctor, probing the pod over HTTP,
/// names `cpu-throttled` with that cgroup and the server in it, and not the
/// story's cause. The injector is stopped before the doctor's window ends:
/// the cgroup vanishes mid-window, which the doctor says in one line.
#[test]
fn doctor_names_cpu_throttling_of_the_pods_http_server_with_its_cgroup() {
    if !privileged("doctor_names_cpu_throttling_of_the_pods_http_server_with_its_cgroup") {
        return;
    }
    let _lock = MachineLock::acquire();
    let lab = Lab::up("0");
    let mut injector = Command::new(NETSTALL)
        .args([
            "lab",
            "throttle",
            "--prefix",
            &lab.prefix,
            "-w",
            "60s",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lab throttle");
    std::thread::sleep(Duration::from_millis(1500));
    let doctor = Command::new(NETSTALL)
        .args([
            "doctor",
            "-w",
            "10s",
            "--target",
            "http://10.244.2.10:8080/",
            "--netns",
            &lab.netns("cli"),
            "--cpu",
            "1",
            "--no-sample",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run doctor");
    // The throttle ends 8 s into the doctor's 10 s window.
    std::thread::sleep(Duration::from_secs(9));
    // SAFETY: kill on the PID of the child this test started.
    unsafe { libc::kill(injector.id() as i32, libc::SIGINT) };
    let mut injected = String::new();
    injector
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut injected)
        .unwrap();
    assert!(injector.wait().unwrap().success());
    let cgroup = format!("/netstall-{}-throttle", lab.prefix);
    assert!(
        injected.contains(r#""type":"lab-throttle""#) && injected.contains(&cgroup),
        "{injected}"
    );
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/cpu{cgroup}")).exists()
            && !std::path::Path::new(&format!("/sys/fs/cgroup{cgroup}")).exists(),
        "the cgroup is removed"
    );

    let out = doctor.wait_with_output().expect("doctor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines = json_lines(&out);
    let verdict = *of_type(&lines, "verdict").last().expect("a verdict");
    let causes: Vec<&Value> = verdict["causes"]
        .as_array()
        .unwrap()
        .iter()
        .chain(verdict["also"].as_array().unwrap())
        .collect();
    let throttled = causes
        .iter()
        .find(|c| c["id"] == "cpu-throttled")
        .unwrap_or_else(|| panic!("cpu-throttled named: {verdict}\n{stderr}"));
    eprintln!("{throttled}");
    assert_eq!(throttled["named"], cgroup.as_str(), "{throttled}");
    assert_eq!(throttled["severity"], "unhealthy", "{throttled}");
    let evidence: Vec<&str> = throttled["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        evidence
            .iter()
            .any(|e| e.contains("is served by netstall[")),
        "{evidence:?}"
    );
    assert!(
        evidence
            .iter()
            .any(|e| e.starts_with(&format!("cgroup {cgroup} was throttled in "))),
        "{evidence:?}"
    );
    // Removed mid-window: said, and the record of its removal is saved.
    assert!(
        evidence
            .iter()
            .any(|e| e.starts_with(&format!("cgroup {cgroup} was removed during the run"))),
        "{evidence:?}"
    );
    assert!(
        !causes.iter().any(|c| c["id"] == "dying-memcg-stat-flush"),
        "not the story's cause: {verdict}"
    );
    assert_eq!(verdict["status"], "unhealthy");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
}

/// HTTP targets that cannot be timed say why in one line, and the verdict
/// is `unknown` (exit 2) rather than healthy; one that answers 500 is timed,
/// with a line saying so.
#[test]
fn doctor_says_in_one_line_why_an_http_target_cannot_be_timed() {
    if !privileged("doctor_says_in_one_line_why_an_http_target_cannot_be_timed") {
        return;
    }
    // A port nobody listens on (bound, then closed).
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A server that speaks something else, and one that answers 500.
    let serve = |answer: &'static [u8]| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(1000) {
                let Ok(mut conn) = conn else { break };
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut conn, &mut buf);
                let _ = std::io::Write::write_all(&mut conn, answer);
            }
        });
        port
    };
    let ssh = serve(b"SSH-2.0-OpenSSH_9.6\r\n");
    let error = serve(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    // Exit 2: not measured (unknown). The 500s are timed: their verdict is
    // the node's (0 or 1, as the load of the moment decides), never unknown.
    for (port, needle, unknown) in [
        (closed, "Connection refused", true),
        (ssh, "not an HTTP response", true),
        (error, "answered HTTP 500 to ", false),
    ] {
        let target = format!("http://127.0.0.1:{port}/health");
        let out = netstall(&[
            "doctor",
            "-w",
            "2s",
            "--target",
            &target,
            "--no-sample",
            "--no-drops",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        let said: Vec<&str> = stderr.lines().filter(|l| l.contains(needle)).collect();
        assert_eq!(said.len(), 1, "{target}: {stderr}");
        assert!(
            said[0].starts_with(&format!("doctor: {target}: ")),
            "{}",
            said[0]
        );
        assert_eq!(out.status.code() == Some(2), unknown, "{target}: {stderr}");
        assert!(out.status.code().is_some(), "{target}: {stderr}");
    }
}
