//! Live sampling: a software cpu-clock event per CPU (perf-event2), kernel
//! and user call chains, symbolized with blazesym, returned in time order.
//!
//! The cpu-clock event is driven by an hrtimer interrupt, so it cannot fire
//! while IRQs are off on that CPU: the holes in its samples are the
//! evidence [`crate::timeline`] reads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use blazesym::symbolize::source::{Kernel, Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::{MaybeDefault, Pid};
use netstall_core::clock::ClockOffset;
use netstall_core::privilege::{self, Capability};
use netstall_core::shutdown::Shutdown;
use netstall_events::stack;
use perf_event::data::Record;
use perf_event::events::Software;
use perf_event::{Builder, Clock, SampleFlag};

use crate::timeline::Sample;

/// What to sample.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    pub cpus: Vec<u32>,
    /// Samples per second per CPU.
    pub frequency: u64,
}

/// The samples of a run, in time order, and what was lost.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub samples: Vec<Sample>,
    /// Records the kernel dropped because a ring buffer was full.
    pub lost: u64,
}

/// A sample before symbolization.
struct RawSample {
    time_ns: u64,
    cpu: u32,
    pid: u32,
    tid: u32,
    kernel: Vec<u64>,
    user: Vec<u64>,
}

const PERF_CONTEXT_KERNEL: u64 = -128i64 as u64;
const PERF_CONTEXT_USER: u64 = -512i64 as u64;
/// Call-chain entries at or above this are context markers, not addresses.
const PERF_CONTEXT_MAX: u64 = -4095i64 as u64;
/// Per-CPU ring: 128 pages hold about two seconds of deep stacks at 999 Hz.
const RING_BYTES: usize = 128 * 4096;
/// No kernel function is this long: an address further than this past the
/// nearest kallsyms symbol is not in it. BPF programs and modules without
/// symbols would otherwise be named after the last symbol of the kernel
/// image (`__stop_...`).
const MAX_KERNEL_SYMBOL_OFFSET: usize = 1 << 20;

/// Samples `config.cpus` for `duration` or until `stop` is requested, whichever
/// comes first; samples are symbolized as they arrive. Needs CAP_PERFMON (or root).
pub fn record(config: &SamplerConfig, duration: Duration, stop: &Shutdown) -> Result<Recording> {
    record_samples(config, duration, stop, Detail::Full)
}

/// As [`record`], but user-space frames are not named: a sample's stack is
/// its task, `[user]` when it was in user space, and its kernel frames.
/// Memory stays that of kallsyms: naming user frames reads the symbol tables
/// (and DWARF) of every process sampled, tens of MB for a compiler (the
/// agent's stall-triggered windows use this).
pub fn record_kernel(
    config: &SamplerConfig,
    duration: Duration,
    stop: &Shutdown,
) -> Result<Recording> {
    record_samples(config, duration, stop, Detail::Kernel)
}

/// As [`record`], but only when and where each sample landed: no call
/// chains, no names (empty `comm` and `stack`). Enough for sample gaps
/// (IRQs off), at a small fraction of the cost: symbolizing is most of it.
pub fn record_times(
    config: &SamplerConfig,
    duration: Duration,
    stop: &Shutdown,
) -> Result<Recording> {
    record_samples(config, duration, stop, Detail::Times)
}

/// How much of each sample is kept and named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    Times,
    Kernel,
    Full,
}

fn record_samples(
    config: &SamplerConfig,
    duration: Duration,
    stop: &Shutdown,
    detail: Detail,
) -> Result<Recording> {
    let stacks = detail != Detail::Times;
    privilege::require(&[Capability::Perfmon], "sampling CPUs")?;
    netstall_core::cpu::check_online(&config.cpus)?;
    let clock = ClockOffset::sample();
    let mut samplers = Vec::new();
    for &cpu in &config.cpus {
        let mut builder = Builder::new(Software::CPU_CLOCK);
        builder
            .one_cpu(cpu as usize)
            .any_pid()
            .sample_frequency(config.frequency)
            .include_kernel()
            .clockid(Clock::MONOTONIC)
            .comm(stacks);
        if stacks {
            builder.sample(
                SampleFlag::TID | SampleFlag::TIME | SampleFlag::CPU | SampleFlag::CALLCHAIN,
            );
        } else {
            builder.sample(SampleFlag::TID | SampleFlag::TIME | SampleFlag::CPU);
        }
        let sampler = builder
            .build()
            .and_then(|counter| counter.sampled(RING_BYTES))
            .with_context(|| format!("perf_event_open(cpu-clock) on CPU {cpu}"))?;
        samplers.push(sampler);
    }
    for sampler in &mut samplers {
        sampler.enable().context("enabling cpu-clock sampling")?;
    }

    let mut names = Names::new(detail == Detail::Full);
    let mut samples = Vec::new();
    let mut lost = 0;
    let deadline = Instant::now() + duration;
    loop {
        let done = Instant::now() >= deadline || stop.is_requested();
        for sampler in &mut samplers {
            while let Some(record) = sampler.next_record() {
                match record.parse_record().context("reading a perf record")? {
                    Record::Sample(s) if !stacks => samples.push(Sample {
                        time_ns: clock.to_realtime(s.time().unwrap_or(0)),
                        cpu: s.cpu().unwrap_or(0),
                        pid: s.pid().unwrap_or(0),
                        tid: s.tid().unwrap_or(0),
                        comm: String::new(),
                        stack: Vec::new(),
                        kernel_depth: 0,
                    }),
                    // Symbolized now, while the task and its mappings exist.
                    Record::Sample(s) => samples.push(names.sample(split_callchain(
                        clock.to_realtime(s.time().unwrap_or(0)),
                        s.cpu().unwrap_or(0),
                        s.pid().unwrap_or(0),
                        s.tid().unwrap_or(0),
                        s.callchain().unwrap_or(&[]),
                    ))),
                    Record::Comm(c) => names.renamed(c.tid, &c.comm),
                    Record::Lost(l) => lost += l.lost,
                    _ => {}
                }
            }
        }
        if done {
            break;
        }
        stop.wait(Duration::from_millis(10));
    }
    for sampler in &mut samplers {
        sampler.disable().context("disabling cpu-clock sampling")?;
    }
    samples.sort_by_key(|s| (s.time_ns, s.cpu));
    Ok(Recording { samples, lost })
}

fn split_callchain(time_ns: u64, cpu: u32, pid: u32, tid: u32, chain: &[u64]) -> RawSample {
    let mut sample = RawSample {
        time_ns,
        cpu,
        pid,
        tid,
        kernel: Vec::new(),
        user: Vec::new(),
    };
    let mut context = 0;
    for &ip in chain {
        if ip >= PERF_CONTEXT_MAX {
            context = ip;
        } else if context == PERF_CONTEXT_KERNEL {
            sample.kernel.push(ip);
        } else if context == PERF_CONTEXT_USER {
            sample.user.push(ip);
        }
    }
    sample
}

/// Names tasks and frames, with caches so each task and address is
/// looked up once. Kernel addresses go through kallsyms; user addresses
/// through each process's maps and ELF files.
struct Names {
    symbolizer: Symbolizer,
    /// Whether user-space frames are named (or stand as one `[user]`).
    user_frames: bool,
    comms: HashMap<u32, String>,
    frames: HashMap<(u32, u64), String>,
}

impl Names {
    fn new(user_frames: bool) -> Self {
        Self {
            symbolizer: Symbolizer::new(),
            user_frames,
            comms: HashMap::new(),
            frames: HashMap::new(),
        }
    }

    /// A task renamed itself (exec, prctl) while we sampled.
    fn renamed(&mut self, tid: u32, comm: &[u8]) {
        self.comms
            .insert(tid, String::from_utf8_lossy(comm).into_owned());
    }

    fn sample(&mut self, raw: RawSample) -> Sample {
        let comm = self
            .comms
            .entry(raw.tid)
            .or_insert_with(|| task_comm(raw.pid, raw.tid, raw.cpu))
            .clone();
        let kernel = Source::Kernel(Kernel {
            vmlinux: MaybeDefault::None,
            ..Default::default()
        });
        let kernel = self.frame_names(&kernel, 0, &raw.kernel);
        let user = if raw.pid == 0 || raw.user.is_empty() {
            Vec::new()
        } else if self.user_frames {
            let source = Source::Process(Process::new(Pid::from(raw.pid)));
            self.frame_names(&source, raw.pid, &raw.user)
        } else {
            vec!["[user]".to_string()]
        };
        let stack = sample_stack(kernel, user);
        Sample {
            time_ns: raw.time_ns,
            cpu: raw.cpu,
            pid: raw.pid,
            tid: raw.tid,
            comm,
            stack,
            kernel_depth: raw.kernel.len(),
        }
    }

    /// Frame names in call-chain order (innermost first); `pid` 0 is the kernel.
    fn frame_names(&mut self, source: &Source<'_>, pid: u32, addrs: &[u64]) -> Vec<String> {
        let missing: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !self.frames.contains_key(&(pid, *a)))
            .collect();
        if !missing.is_empty() {
            let symbolized = self
                .symbolizer
                .symbolize(source, Input::AbsAddr(&missing))
                .unwrap_or_default();
            for (i, addr) in missing.iter().enumerate() {
                let name = match symbolized.get(i) {
                    Some(Symbolized::Sym(sym))
                        if pid != 0 || sym.offset < MAX_KERNEL_SYMBOL_OFFSET =>
                    {
                        sym.name.to_string()
                    }
                    _ => stack::unknown_frame(*addr),
                };
                self.frames.insert((pid, *addr), name);
            }
        }
        addrs
            .iter()
            .map(|a| self.frames[&(pid, *a)].clone())
            .collect()
    }
}

/// A sample's stack from its symbolized call chains, innermost first
/// (`netstall_events::stack`'s order): the kernel frames, then the user frames
/// under them, as perf's call chain has them. netstall's own BPF frames go: a
/// sample can land in the tracer's programs.
fn sample_stack(kernel: Vec<String>, user: Vec<String>) -> Vec<String> {
    let mut stack = stack::strip_own(kernel);
    stack.extend(user);
    stack
}

/// The task's name from /proc; the idle task is `swapper/CPU`, and a task
/// gone before we looked is shown by its TID.
fn task_comm(pid: u32, tid: u32, cpu: u32) -> String {
    if tid == 0 {
        return format!("swapper/{cpu}");
    }
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|_| format!("[{tid}]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_stacks_are_innermost_first_without_netstalls_own_frames() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Recorded here: a cpu-clock sample of ksoftirqd/0 that landed in the
        // tracer's softirq_entry program, and one of `sleep` in user mode.
        let kernel = names(&[
            "bpf_prog_af6635d2825f0f69_on_softirq_entry",
            "bpf_trace_run1",
            "__traceiter_softirq_entry",
            "handle_softirqs",
            "run_ksoftirqd",
            "smpboot_thread_fn",
            "kthread",
            "ret_from_fork",
            "ret_from_fork_asm",
        ]);
        let stack = sample_stack(kernel.clone(), Vec::new());
        assert_eq!(stack, kernel[3..]);
        let sample = Sample {
            time_ns: 0,
            cpu: 0,
            pid: 15,
            tid: 15,
            comm: "ksoftirqd/0".into(),
            stack,
            kernel_depth: kernel.len(),
        };
        assert!(sample.in_softirq());
        assert_eq!(
            sample.folded(),
            "ksoftirqd/0;ret_from_fork_asm;ret_from_fork;kthread;smpboot_thread_fn;\
             run_ksoftirqd;handle_softirqs"
        );
        let user = names(&["[unknown <7ff401d6d7f0>]", "sleep_main"]);
        let stack = sample_stack(names(&["do_prlimit", "__do_sys_prlimit64"]), user);
        assert_eq!(stack[0], "do_prlimit");
        assert_eq!(stack[3], "sleep_main");
    }

    #[test]
    fn call_chains_split_at_their_context_markers() {
        let chain = [
            PERF_CONTEXT_KERNEL,
            0xffff_0001,
            0xffff_0002,
            PERF_CONTEXT_USER,
            0x5501,
        ];
        let s = split_callchain(5, 1, 10, 11, &chain);
        assert_eq!(s.kernel, [0xffff_0001, 0xffff_0002]);
        assert_eq!(s.user, [0x5501]);
        assert_eq!((s.time_ns, s.cpu, s.pid, s.tid), (5, 1, 10, 11));
    }
}
