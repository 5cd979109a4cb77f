//! `netstall demo`: the story's incident, reproduced for real in the lab,
//! diagnosed, remediated, and shown gone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netstall_core::output::Output;
use netstall_events::doctor::{DemoResult, DemoStep};
use netstall_events::kernel::Steal;
use netstall_lab::incident::{IncidentLab, POLLER_COMM};
use netstall_lab::topology;
use netstall_probe::{Mode, ProbeConfig};

use crate::run::{self, DoctorConfig, DoctorRun, Target};
use crate::story;

/// What `netstall demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Dying memory cgroups to create.
    pub zombies: u32,
    /// Keep the lab up at the end.
    pub keep: bool,
    /// The lab's name prefix.
    pub prefix: String,
    /// Also write the incident's HTML report here.
    pub report: Option<PathBuf>,
}

const INTERVAL: Duration = Duration::from_millis(10);

/// Runs the demo; the result says whether the incident was reproduced,
/// named and remediated ([`DemoResult::reproduced`]).
pub fn run(config: &DemoConfig, out: Output) -> Result<DemoResult> {
    netstall_core::privilege::require_root("demo")?;
    let online = netstall_core::cpu::online()?;
    if online.len() < 2 {
        bail!("the demo needs 2 CPUs: one whose RX stalls, one for the probes");
    }
    let (rx_cpu, probe_cpu) = (online[0], online[online.len() - 1]);
    let started = Instant::now();
    out.text("netstall demo: the Kubernetes network-stall incident, reproduced for real.\n");

    step(out, 1, format!(
        "Building the lab: client -> node1 (NodePort DNAT) -> VXLAN -> node2 -> pod; node RX on CPU {rx_cpu}, probes on CPU {probe_cpu}"
    ));
    let mut lab = IncidentLab::up(&config.prefix, rx_cpu, config.keep)?;
    let client = lab.status.netns(topology::Role::Client).to_owned();
    let nodeport_addr = lab.status.nodeport.addr.clone();
    let nodeport_tcp = lab.status.nodeport.tcp;
    let pod_addr = lab.status.pod.addr.clone();
    let nodeport = format!("{nodeport_addr}:{nodeport_tcp}");

    step(
        out,
        2,
        format!("Healthy baseline: a TCP SYN to the NodePort {nodeport} every 10 ms for 3 s"),
    );
    let probe_config = |duration: Duration| -> Result<ProbeConfig> {
        let mut config = ProbeConfig::new(
            nodeport_addr.parse()?,
            Mode::Syn { port: nodeport_tcp },
            INTERVAL,
        );
        config.duration = Some(duration);
        config.flows = 4;
        config.netns = Some(client.clone());
        config.cpu = Some(probe_cpu);
        Ok(config)
    };
    // Probes alone, beside a /proc/stat steal watch: on a VM, an episode
    // the hypervisor caused is told apart from one the lab caused.
    let (baseline, baseline_steal) =
        story::probe_with_steal_watch(&probe_config(Duration::from_secs(3))?)?;
    baseline.emit_end(out, false);
    let baseline_stolen = story::explained_by_steal(&baseline.episodes, &baseline_steal);
    note_steal(baseline_stolen, &baseline_steal, out);

    step(out, 3, format!(
        "The incident: {} dying memory cgroups, and a cadvisor-like agent reading memory.stat every second on CPU {rx_cpu}",
        config.zombies
    ));
    let made = lab.make_zombies(config.zombies)?;
    out.json(made.clone());
    out.text(format!(
        "      created {} dying memory cgroups in {:.1} s (dying now: {})",
        made.created,
        made.elapsed_ms as f64 / 1e3,
        made.dying_after
    ));
    // Its first read: the slow memory.stat read strace showed in the story.
    if let Some(read) = lab.start_poller(rx_cpu)? {
        out.text(format!(
            "      {POLLER_COMM}[{}] read {} in {:.1} ms",
            read.pid, read.path, read.read_ms
        ));
    }

    step(out, 4, "Probes now come back as a sawtooth: the backlog drains at once (the story's 127, 117, 106 ms...)");
    let incident = netstall_probe::run(&probe_config(Duration::from_secs(4))?, |_| {})?;
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
    incident.emit_end(out, false);

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
                pod_addr.parse::<Target>().map_err(anyhow::Error::msg)?,
            ],
            probe_netns: Some(client.clone()),
            probe_cpu: Some(probe_cpu),
            icmp_seq,
            ..DoctorConfig::default()
        };
        run::run_narrated(&config, out)
    };
    let sick = doctor(Duration::from_secs(12), true)?;
    show_story_evidence(&sick, out);
    if let Some(path) = &config.report {
        std::fs::write(
            path,
            crate::report::render(&sick.verdict, &sick.findings, &sick.extras),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        out.text(format!("      report: {}", path.display()));
    }

    step(out, 6, "Remediation: sync; echo 1 > /proc/sys/vm/drop_caches (level 1 releases them on this kernel)");
    let remediation = netstall_cgroups::remediate::apply_counted(
        &netstall_cgroups::Host::live(),
        netstall_cgroups::remediate::Level::PageCache,
    )?;
    out.json(remediation.clone());
    let (dying_before, dying_after) = (
        remediation.dying_before,
        remediation.dying_after.unwrap_or(remediation.dying_before),
    );
    out.text(format!(
        "      dying memory cgroups: {dying_before} -> {dying_after} ({})",
        remediation.verdict
    ));

    step(out, 7, "After: the same probes, and the doctor again (8 s)");
    let (after, after_steal) =
        story::probe_with_steal_watch(&probe_config(Duration::from_secs(3))?)?;
    after.emit_end(out, false);
    let after_stolen = story::explained_by_steal(&after.episodes, &after_steal);
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
    let (kept, prefix) = (lab.kept(), lab.prefix().to_owned());
    drop(lab);
    if kept {
        out.text(format!(
            "      lab kept: `netstall lab down --prefix {prefix}` removes it"
        ));
    }
    let result = DemoResult {
        elapsed_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        ..result
    };
    out.emit(result.clone());
    Ok(result)
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
    out.emit(DemoStep {
        step: n,
        title: title.to_string(),
    });
}

/// The evidence the story's engineers gathered by hand: which context
/// processed the ICMP echoes around the longest stall.
fn show_story_evidence(run: &DoctorRun, out: Output) {
    let around = story::icmp_around_longest_stall(&run.findings);
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
