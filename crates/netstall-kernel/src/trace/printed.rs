//! `netstall trace`'s output: each event printed as it comes (its text
//! form, or its JSON line), then the programs' cost, the histograms and the
//! summary.

use std::sync::Arc;

use anyhow::{Context, Result};
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
use netstall_events::kernel::{IcmpEcho, TraceReport};

use super::{run, Stop, TraceConfig, TraceEvent};
use crate::drops::{self, DropsConfig, DropsEvent};

/// Traces until `stop`, printing every stall, ICMP echo, slow syscall and
/// steal as it comes, then the report (also returned). With
/// [`TraceConfig::drops`], the drop counter runs beside it and its
/// records are printed every second.
pub fn run_printed(config: &TraceConfig, stop: &Stop, out: Output) -> Result<TraceReport> {
    if !config.drops {
        return run_stalls_printed(config, stop, out);
    }
    // One shutdown ends both, whichever way the trace ends.
    let shutdown = match &stop.shutdown {
        Some(shutdown) => shutdown.clone(),
        None => Arc::new(Shutdown::new()?),
    };
    let stop = Stop {
        duration: stop.duration,
        shutdown: Some(shutdown.clone()),
    };
    let drops_stop = stop.clone();
    let counter = std::thread::Builder::new()
        .name("trace-drops".into())
        .spawn(move || {
            drops::run(&DropsConfig::default(), &drops_stop, |event| match event {
                DropsEvent::Drop(drop) => out.emit(drop),
                DropsEvent::Retransmit(retransmit) => out.emit(retransmit),
                DropsEvent::Started => {}
            })
        })?;
    let report = run_stalls_printed(config, &stop, out);
    shutdown.request();
    let totals = counter
        .join()
        .map_err(|_| anyhow::anyhow!("the drop counter panicked"))?
        .context("the drop counter")?;
    if totals.overflow > 0 {
        out.progress(format!(
            "warning: {} drops or retransmits were not counted: too many sites or flows",
            totals.overflow
        ));
    }
    report
}

fn run_stalls_printed(config: &TraceConfig, stop: &Stop, out: Output) -> Result<TraceReport> {
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
        TraceEvent::Nonpreemptible(n) => out.emit(n),
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
