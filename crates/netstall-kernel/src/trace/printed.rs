//! `netstall trace`'s output: each event printed as it comes (its text
//! form, or its JSON line), then the programs' cost, the histograms and the
//! summary.

use anyhow::Result;
use netstall_core::output::Output;
use netstall_events::kernel::{IcmpEcho, TraceReport};

use super::{run, Stop, TraceConfig, TraceEvent};

/// Traces until `stop`, printing every stall, ICMP echo, slow syscall and
/// steal as it comes, then the report (also returned).
pub fn run_printed(config: &TraceConfig, stop: &Stop, out: Output) -> Result<TraceReport> {
    let mut icmp_header = config.icmp;
    let mut loaded = Vec::new();
    let report = run(config, stop, |event| match event {
        TraceEvent::Started(start) => {
            out.json(start.clone());
            loaded.clone_from(&start.detectors);
            for missing in &start.unavailable {
                out.progress(format!("note: detector unavailable: {missing}"));
            }
            out.progress(format!(
                "tracing RX stalls >= {:?} with {}{} ({})...",
                config.threshold,
                start
                    .detectors
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                stop.duration
                    .map(|d| format!(" for {d:?}"))
                    .unwrap_or_default(),
                if stop.duration.is_some() {
                    "Ctrl-C ends early"
                } else {
                    "Ctrl-C to end"
                }
            ));
        }
        TraceEvent::Stall(stall) => out.emit(stall),
        TraceEvent::Icmp(icmp) => {
            if std::mem::take(&mut icmp_header) {
                out.text(IcmpEcho::HEADER);
            }
            out.emit(icmp);
        }
        TraceEvent::Syscall(syscall) => out.emit(syscall),
        // Steal as long as a stall: the CPU did not run, nothing inside to blame.
        TraceEvent::Steal(steal) => {
            if steal.steal_ms * 1e6 >= config.threshold.as_nanos() as f64 {
                out.emit(steal);
            }
        }
        // Not asked for (`totals_every` unset): the summary has them.
        TraceEvent::Totals(_) => {}
    })?;

    for cost in &report.self_cost {
        out.emit(cost.clone());
    }
    // What this kernel ran and what it refused, each with why (the JSON has
    // both in the trace-start and trace-report records).
    if config.self_cost {
        let names: Vec<&str> = loaded.iter().map(|d| d.name()).collect();
        out.text(format!("DETECTORS loaded: {}", names.join(", ")));
        for missing in &report.unavailable {
            out.text(format!("DETECTORS missing {missing}"));
        }
    }
    for hist in &report.histograms {
        out.emit(hist.clone());
    }
    out.emit(report.clone());
    if report.ring_drops > 0 {
        out.progress(format!(
            "warning: {} events were lost because the ring buffer was full",
            report.ring_drops
        ));
    }
    Ok(report)
}
