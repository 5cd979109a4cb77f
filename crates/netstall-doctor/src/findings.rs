//! What the doctor's sources measured during one run. Everything is on the
//! CLOCK_REALTIME nanosecond time base, so a probe episode, a kernel stall and
//! a gap in CPU samples can be lined up.
//!
//! A run is saved as records (`doctor --save`) and read back from them
//! (`doctor --replay`): [`Findings::to_records`] and [`Findings::from_records`]
//! are each other's inverse, so a replayed verdict is the live one.

use anyhow::{bail, Result};
use netstall_events::doctor::{DoctorRun, MemcgCount, ProbeTarget, Verdict};
use netstall_events::kernel::{IcmpEcho, Nonpreemptible, Stall, StatFlush, Steal, StealSource};
use netstall_events::net::{NetCounters, PacketDrops, Retransmits};
use netstall_events::throttle::CpuThrottle;
use netstall_events::xray::{FoldedStack, SampleGap};
use netstall_events::Record;

pub use netstall_events::doctor::{SamplerState, TracerState};

/// Probes toward one target.
pub type TargetFindings = ProbeTarget;
/// The dying memory cgroup count.
pub type MemcgFindings = MemcgCount;

/// Everything the diagnosis is made from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// When the run started and ended.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Stalls the tracer reported (empty when it could not run: see `tracer`).
    pub stalls: Vec<Stall>,
    /// Whether the tracer ran, with which detectors; why not, otherwise.
    pub tracer: TracerState,
    /// Whether the CPU sampler ran.
    pub sampler: SamplerState,
    /// vCPU steal windows (the hypervisor ran something else).
    pub steal: Vec<Steal>,
    /// Where `steal` came from; `None` when steal could not be measured.
    pub steal_source: Option<StealSource>,
    /// netstall's own process: its threads are the observer, never a culprit.
    pub self_pid: u32,
    /// One entry per probed target.
    pub targets: Vec<TargetFindings>,
    /// Dying memory cgroups, counted at the start (never by reading memory.stat).
    pub memcg: Option<MemcgFindings>,
    /// Gaps in CPU samples: a CPU that should have been sampled and was not.
    pub gaps: Vec<SampleGap>,
    /// ICMP echo requests seen by the tracer (the story's seq/context table).
    pub icmp: Vec<IcmpEcho>,
    /// Whether the drop counter ran (`None`: not part of this run).
    pub drop_counter: Option<SamplerState>,
    /// Packet drops (reasons other than normal consumption), per interval and site.
    pub drops: Vec<PacketDrops>,
    /// TCP retransmits, per interval and flow.
    pub retransmits: Vec<Retransmits>,
    /// The network counters that grew over the run.
    pub net: Option<NetCounters>,
    /// The stats readers' ledger: who flushed cgroup stats, at what cost.
    pub flushes: Vec<StatFlush>,
    /// Whether the CPU throttling reader ran (`None`: not part of this run).
    pub throttle_reader: Option<SamplerState>,
    /// CPU cgroups throttled, per interval.
    pub throttle: Vec<CpuThrottle>,
    /// Non-preemptible kernel sections (others waited for the CPU).
    pub nonpreemptible: Vec<Nonpreemptible>,
}

/// What goes into a report besides the verdict and findings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extras {
    /// Host name, kernel, CPUs: shown in the header.
    pub host: String,
    /// The samples before the stalls, folded (`comm;root;...;leaf`), in
    /// time order: the report's flame chart.
    pub chart: Vec<String>,
    /// Dying memory cgroups after remediation, when the run remediated.
    pub dying_after: Option<u64>,
}

/// A saved run, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub findings: Findings,
    pub extras: Extras,
    /// The verdict the run printed, if the file has it.
    pub verdict: Option<Verdict>,
}

impl Findings {
    /// The run as records: its `doctor-run` header first, then every stall,
    /// steal window, probe target (with its episodes), dying-memcg count,
    /// sample gap, ICMP echo and chart stack, then `verdict` if given.
    pub fn to_records(&self, extras: &Extras, verdict: Option<&Verdict>) -> Vec<Record> {
        let mut records = vec![Record::DoctorRun(DoctorRun {
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            host: extras.host.clone(),
            tracer: self.tracer.clone(),
            sampler: self.sampler.clone(),
            steal_source: self.steal_source,
            self_pid: self.self_pid,
            dying_after: extras.dying_after,
            drop_counter: self.drop_counter.clone(),
            throttle: self.throttle_reader.clone(),
        })];
        records.extend(self.stalls.iter().cloned().map(Record::Stall));
        records.extend(self.steal.iter().cloned().map(Record::Steal));
        records.extend(self.targets.iter().cloned().map(Record::ProbeTarget));
        records.extend(self.memcg.iter().cloned().map(Record::MemcgCount));
        records.extend(self.gaps.iter().cloned().map(Record::SampleGap));
        records.extend(self.icmp.iter().cloned().map(Record::Icmp));
        records.extend(self.drops.iter().cloned().map(Record::Drop));
        records.extend(self.retransmits.iter().cloned().map(Record::Retransmit));
        records.extend(self.net.iter().cloned().map(Record::NetCounters));
        records.extend(self.flushes.iter().cloned().map(Record::StatFlush));
        records.extend(self.throttle.iter().cloned().map(Record::CpuThrottle));
        records.extend(
            self.nonpreemptible
                .iter()
                .cloned()
                .map(Record::Nonpreemptible),
        );
        records.extend(extras.chart.iter().map(|stack| {
            Record::Stack(FoldedStack {
                stack: stack.clone(),
                count: 1,
            })
        }));
        records.extend(verdict.cloned().map(Record::Verdict));
        records
    }

    /// Reads a run back from its records (see [`Findings::to_records`]).
    /// Records of other types (a `trace-start`, a `session`) are ignored, so
    /// a file can hold more than one command's output; a file without a
    /// `doctor-run` record, or with two, is not one doctor run.
    pub fn from_records(records: impl IntoIterator<Item = Record>) -> Result<Saved> {
        let mut run: Option<DoctorRun> = None;
        let mut findings = Findings::default();
        let mut chart = Vec::new();
        let mut verdict = None;
        for record in records {
            match record {
                Record::DoctorRun(r) => {
                    if run.is_some() {
                        bail!("two doctor runs in one file: save each run to its own file");
                    }
                    run = Some(r);
                }
                Record::Stall(s) => findings.stalls.push(s),
                Record::Steal(s) => findings.steal.push(s),
                Record::ProbeTarget(t) => findings.targets.push(t),
                Record::MemcgCount(m) => findings.memcg = Some(m),
                Record::SampleGap(g) => findings.gaps.push(g),
                Record::Icmp(i) => findings.icmp.push(i),
                Record::Drop(d) => findings.drops.push(d),
                Record::Retransmit(r) => findings.retransmits.push(r),
                Record::NetCounters(n) => findings.net = Some(n),
                Record::StatFlush(f) => findings.flushes.push(f),
                Record::CpuThrottle(t) => findings.throttle.push(t),
                Record::Nonpreemptible(n) => findings.nonpreemptible.push(n),
                Record::Stack(s) => chart.extend(std::iter::repeat_n(s.stack, s.count as usize)),
                Record::Verdict(v) => verdict = Some(v),
                _ => {}
            }
        }
        let Some(run) = run else {
            bail!("no doctor-run record: not a file written by `netstall doctor --save` or `--report`");
        };
        findings.start_ns = run.start_ns;
        findings.end_ns = run.end_ns;
        findings.tracer = run.tracer;
        findings.sampler = run.sampler;
        findings.steal_source = run.steal_source;
        findings.self_pid = run.self_pid;
        findings.drop_counter = run.drop_counter;
        findings.throttle_reader = run.throttle;
        Ok(Saved {
            findings,
            extras: Extras {
                host: run.host,
                chart,
                dying_after: run.dying_after,
            },
            verdict,
        })
    }
}
