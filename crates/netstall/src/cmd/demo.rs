//! `netstall demo`: the story's incident, reproduced for real in the lab,
//! diagnosed, remediated, and shown gone.

use std::io::BufRead;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
use netstall_core::steal;
use netstall_doctor::run::{DoctorConfig, Target};
use netstall_events::doctor::{CauseId, DemoResult, DemoStep};
use netstall_events::kernel::Steal;
use netstall_lab::{clean, topology, zombies};
use netstall_probe::{Mode, ProbeConfig};

#[derive(clap::Args)]
#[command(
    about = "Reproduce the incident for real in the lab, diagnose it, fix it, prove it is gone",
    long_about = "Builds the lab (client -> NodePort -> VXLAN -> node2 -> pod), probes it healthy, \
    injects the incident for real (dying memory cgroups + a cadvisor-like memory.stat reader on the RX CPU), \
    shows the probes' sawtooth, lets `netstall doctor` name the cause and culprit, remediates \
    (drop_caches level 1), proves it is gone, and removes everything. About a minute; needs root and 2 CPUs.",
    after_help = "Examples:\n  \
    sudo netstall demo\n  \
    sudo netstall demo --zombies 50000 --report demo.html\n  \
    sudo netstall demo --keep          then explore: netstall lab status --prefix demo"
)]
pub struct Args {
    /// Dying memory cgroups to create (about 2 µs of IRQs-off each per memory.stat flush).
    #[arg(long, default_value_t = 25_000)]
    zombies: u32,
    /// Keep the lab up at the end (remove it with `netstall lab down --prefix PREFIX`).
    #[arg(long)]
    keep: bool,
    /// Lab name prefix.
    #[arg(long, default_value = "demo")]
    prefix: String,
    /// Also write the incident's HTML report here.
    #[arg(long, value_name = "FILE.html")]
    report: Option<std::path::PathBuf>,
}

/// The name the culprit runs under, as in the story.
const POLLER_COMM: &str = "cadvisor";
const INTERVAL: Duration = Duration::from_millis(10);
const STEAL_EVERY: Duration = Duration::from_millis(5);

/// How many of a probe run's episodes vCPU steal explains.
fn stolen(report: &netstall_probe::Report, steals: &[Steal]) -> usize {
    report
        .episodes
        .iter()
        .filter(|e| steal::steal_explains(steals, None, e.start_ns, e.end_ns))
        .count()
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    netstall_core::privilege::require_root("demo")?;
    let online = netstall_core::cpu::online()?;
    if online.len() < 2 {
        bail!("the demo needs 2 CPUs: one whose RX stalls, one for the probes");
    }
    let (rx_cpu, probe_cpu) = (online[0], online[online.len() - 1]);
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    out.text("netstall demo: the Kubernetes network-stall incident, reproduced for real.\n");

    step(out, 1, format!(
        "Building the lab: client -> node1 (NodePort DNAT) -> VXLAN -> node2 -> pod; node RX on CPU {rx_cpu}, probes on CPU {probe_cpu}"
    ));
    let lab = topology::up(&topology::LabConfig {
        prefix: args.prefix.clone(),
        rx_cpus: vec![rx_cpu],
        responder_exe: exe.clone(),
    })?;
    let mut guard = Cleanup {
        prefix: args.prefix.clone(),
        keep: args.keep,
        poller: None,
        out,
    };
    let client = lab.netns(topology::Role::Client).to_owned();
    let nodeport = format!("{}:{}", lab.nodeport.addr, lab.nodeport.tcp);

    step(
        out,
        2,
        format!("Healthy baseline: a TCP SYN to the NodePort {nodeport} every 10 ms for 3 s"),
    );
    let probe = |duration: Duration| -> Result<netstall_probe::Report> {
        let mut config = ProbeConfig::new(
            lab.nodeport.addr.parse()?,
            Mode::Syn {
                port: lab.nodeport.tcp,
            },
            INTERVAL,
        );
        config.duration = Some(duration);
        config.flows = 4;
        config.netns = Some(client.clone());
        config.cpu = Some(probe_cpu);
        netstall_probe::run(&config, |_| {})
    };
    // Probes alone, beside a /proc/stat steal watch: on a VM, an episode
    // the hypervisor caused is told apart from one the lab caused.
    let probe_and_steal = |duration: Duration| -> Result<(netstall_probe::Report, Vec<Steal>)> {
        let stop = std::sync::Arc::new(Shutdown::new()?);
        let watch = {
            let stop = stop.clone();
            std::thread::spawn(move || steal::watch_proc_stat(&stop, STEAL_EVERY))
        };
        let report = probe(duration);
        stop.request();
        let steals = watch
            .join()
            .map_err(|_| anyhow::anyhow!("the steal watcher panicked"))??;
        Ok((report?, steals))
    };
    let (baseline, baseline_steal) = probe_and_steal(Duration::from_secs(3))?;
    super::probe::print_report(&baseline, out);
    let baseline_stolen = stolen(&baseline, &baseline_steal);
    note_steal(baseline_stolen, &baseline_steal, out);

    step(out, 3, format!(
        "The incident: {} dying memory cgroups, and a cadvisor-like agent reading memory.stat every second on CPU {rx_cpu}",
        args.zombies
    ));
    let paths = zombies::ZombiePaths::for_host(&args.prefix)?;
    let made = zombies::create(&paths, args.zombies, |_| {})?;
    out.json(made.clone());
    out.text(format!(
        "      created {} dying memory cgroups in {:.1} s (dying now: {})",
        made.created,
        made.elapsed_ms as f64 / 1e3,
        made.dying_after
    ));
    guard.poller = Some(start_poller(&exe, &args.prefix, rx_cpu, out)?);

    step(out, 4, "Probes now come back as a sawtooth: the backlog drains at once (the story's 127, 117, 106 ms...)");
    let incident = probe(Duration::from_secs(4))?;
    let slow_floor = 5_000_000;
    for p in incident
        .probes
        .iter()
        .filter(|p| p.rtt_ns.is_some_and(|r| r >= slow_floor))
        .take(40)
    {
        if let Some(line) = p.hping3_line(false) {
            out.text(format!("      {line}"));
        }
    }
    super::probe::print_report(&incident, out);

    step(
        out,
        5,
        "netstall doctor: tracer + probes + CPU sampling + dying-cgroup count, 12 s",
    );
    let doctor = |duration: Duration, icmp_seq: bool| {
        let config = DoctorConfig {
            duration,
            targets: vec![
                nodeport.parse::<Target>().map_err(anyhow::Error::msg)?,
                lab.pod.addr.parse::<Target>().map_err(anyhow::Error::msg)?,
            ],
            probe_netns: Some(client.clone()),
            probe_cpu: Some(probe_cpu),
            icmp_seq,
            ..DoctorConfig::default()
        };
        super::doctor::diagnose(&config, out)
    };
    let sick = doctor(Duration::from_secs(12), true)?;
    show_story_evidence(&sick, out);
    if let Some(path) = &args.report {
        std::fs::write(
            path,
            netstall_doctor::report::render(&sick.verdict, &sick.findings, &sick.extras),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        out.text(format!("      report: {}", path.display()));
    }

    step(out, 6, "Remediation: sync; echo 1 > /proc/sys/vm/drop_caches (level 1 releases them on this kernel)");
    let host = netstall_cgroups::Host::live();
    let dying_before = netstall_cgroups::report::memory_count(&host)?.dying;
    let remediation = netstall_cgroups::remediate::apply(
        &host,
        netstall_cgroups::remediate::Level::PageCache,
        dying_before,
        None,
    )?;
    out.json(remediation.clone());
    let dying_after = netstall_cgroups::report::memory_count(&host)?.dying;
    out.text(format!(
        "      dying memory cgroups: {dying_before} -> {dying_after} ({})",
        remediation.verdict
    ));

    step(out, 7, "After: the same probes, and the doctor again (8 s)");
    let (after, after_steal) = probe_and_steal(Duration::from_secs(3))?;
    super::probe::print_report(&after, out);
    let after_stolen = stolen(&after, &after_steal);
    note_steal(after_stolen, &after_steal, out);
    let healed = doctor(Duration::from_secs(8), false)?;

    let top = sick.verdict.causes.first();
    let result = DemoResult {
        rx_cpu,
        poller_comm: POLLER_COMM.to_owned(),
        zombies: made.created as u64,
        baseline_episodes: baseline.episodes.len() - baseline_stolen,
        baseline_steal_episodes: baseline_stolen,
        incident_episodes: incident.episodes.len(),
        incident_max_rtt_ms: incident.summary.max_us.map(|us| us / 1e3),
        diagnosed: top.map(|c| c.id),
        culprit: top.and_then(|c| c.culprit.as_ref()).map(|c| c.comm.clone()),
        diagnosed_cpu: top.and_then(|c| c.cpu),
        from_first_stall_s: sick.verdict.from_first_stall_s,
        dying_before_remediation: dying_before,
        dying_after_remediation: dying_after,
        healthy_after: healed.verdict.healthy,
        after_episodes: after.episodes.len() - after_stolen,
        after_steal_episodes: after_stolen,
        elapsed_s: 0.0,
    };
    drop(guard);
    let result = DemoResult {
        elapsed_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        ..result
    };
    out.json(result.clone());
    out.text(format!(
        "\nDone in {:.0} s: {} named {} (culprit {}, CPU {}) {:.1} s after the first stall; after remediation the node is {}.",
        result.elapsed_s,
        "netstall doctor",
        result.diagnosed.map_or("nothing", CauseId::as_str),
        result.culprit.as_deref().unwrap_or("unknown"),
        result.diagnosed_cpu.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
        result.from_first_stall_s.unwrap_or(0.0),
        if result.healthy_after { "healthy" } else { "still unhealthy" }
    ));
    let reproduced = result.diagnosed == Some(CauseId::DyingMemcgStatFlush) && result.healthy_after;
    Ok(if reproduced {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Says how many of a probe step's episodes (`n`) vCPU steal explains.
fn note_steal(n: usize, steals: &[Steal], out: Output) {
    if n > 0 {
        out.text(format!(
            "      {n} of those episodes coincide with vCPU steal ({:.1} ms stolen in all): the hypervisor, not the lab",
            steals.iter().map(|s| s.steal_ms).sum::<f64>()
        ));
    }
}

fn step(out: Output, n: u32, title: impl std::fmt::Display) {
    out.json(DemoStep {
        step: n,
        title: title.to_string(),
    });
    out.text(format!("\n[{n}/7] {title}"));
}

/// The evidence the story's engineers gathered by hand: which context
/// processed the ICMP echoes around a stall, the stack, the slow read.
fn show_story_evidence(run: &netstall_doctor::run::DoctorRun, out: Output) {
    let Some(stall) = run
        .findings
        .stalls
        .iter()
        .filter(|s| s.culprit.is_some())
        .max_by(|a, b| a.duration_ms.total_cmp(&b.duration_ms))
    else {
        return;
    };
    let end = stall.start_ns + (stall.duration_ms * 1e6) as u64;
    let around: Vec<_> = run
        .findings
        .icmp
        .iter()
        .filter(|e| {
            e.cpu == stall.cpu
                && e.ts_ns + 30_000_000 >= stall.start_ns
                && e.ts_ns <= end + 30_000_000
        })
        .take(12)
        .collect();
    if !around.is_empty() {
        out.text("      ICMP echo requests around the longest stall, and who processed them:");
        out.text(format!(
            "      {:>7} {:>7} {:<16} {:>8}",
            "TGID", "PID", "COMM", "ICMP_SEQ"
        ));
        for e in around {
            out.text(format!(
                "      {:>7} {:>7} {:<16} {:>8}",
                e.pid, e.tid, e.comm, e.seq
            ));
        }
    }
}

fn start_poller(exe: &std::path::Path, prefix: &str, cpu: u32, out: Output) -> Result<Child> {
    let mut child = Command::new(exe)
        .args([
            "lab",
            "poller",
            "--prefix",
            prefix,
            "--cpu",
            &cpu.to_string(),
            "--comm",
            POLLER_COMM,
        ])
        .args(["--interval", "1s", "-w", "10m", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the poller")?;
    // Show its first read: the slow memory.stat read strace showed in the story.
    let stdout = child.stdout.take().context("poller stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    if let Some(Ok(line)) = lines.next() {
        if let Ok(read) = serde_json::from_str::<serde_json::Value>(&line) {
            out.text(format!(
                "      {POLLER_COMM}[{}] read {} in {:.1} ms",
                read["pid"],
                read["path"].as_str().unwrap_or("memory.stat"),
                read["read_ms"].as_f64().unwrap_or(0.0)
            ));
        }
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(child)
}

/// Stops the poller, releases the zombies and removes the lab, however the demo ends.
struct Cleanup {
    prefix: String,
    keep: bool,
    poller: Option<Child>,
    out: Output,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut poller) = self.poller.take() {
            let _ = poller.kill();
            let _ = poller.wait();
        }
        if let Ok(paths) = zombies::ZombiePaths::for_host(&self.prefix) {
            let _ = clean::clean(&paths);
        }
        if self.keep {
            self.out.text(format!(
                "      lab kept: `netstall lab down --prefix {}` removes it",
                self.prefix
            ));
        } else {
            let _ = topology::down(&self.prefix);
        }
    }
}
