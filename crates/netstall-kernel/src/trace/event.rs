//! The tracer's kernel events, typed, and their decoding from the ring
//! buffer's `struct ns_trace_event` (see `src/bpf/trace.h`).
//!
//! The record's layout, its kinds, flags and sizes come from the skeleton's
//! generated types (libbpf-cargo reads them from the object's BTF): nothing
//! here repeats a number from the C side. Each kind's own fields are the
//! named members of `union ns_trace_detail`.
//!
//! Decoding is pure: the clock offset and the stack symbolizer are passed in,
//! so recorded events decode the same way in unit tests.

use netstall_core::clock::ClockOffset;
use netstall_events::kernel::{Culprit, Nonpreemptible};

use crate::skel::trace::types::{
    ns_task, ns_trace_event as RawEvent, ns_trace_flag as Flag, ns_trace_kind as Kind,
    ns_trace_limit as Limit,
};
use crate::stack;

/// Where `trace.bpf.c` ends a path it builds backwards.
const PATH_END: usize = Limit::TRACE_PATH_END.0 as usize;

/// The softirq vectors, by number (`include/linux/interrupt.h`).
pub const SOFTIRQ_NAMES: [&str; 10] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

/// A task as the kernel named it at the time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Task {
    pub comm: String,
    pub pid: u32,
    pub tid: u32,
}

impl Task {
    /// `ksoftirqd/N` runs deferred softirqs.
    pub fn is_ksoftirqd(&self) -> bool {
        self.comm.starts_with("ksoftirqd/")
    }

    /// `comm[pid]`, or just the kernel thread's name.
    pub fn label(&self) -> String {
        if self.pid == 0 || self.comm.starts_with("ksoftirqd/") || self.comm.starts_with("kworker/")
        {
            self.comm.clone()
        } else {
            format!("{}[{}]", self.comm, self.pid)
        }
    }
}

/// The syscall a task was in when an event caught it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallInFlight {
    pub nr: i64,
    pub name: String,
    /// Known when syscalls are traced (`--syscalls`).
    pub start_ns: Option<u64>,
    pub path: Option<String>,
}

/// One event from the BPF side, timestamps in REALTIME ns.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelEvent {
    /// Packets of one NET_RX run that waited at least the packet floor, the
    /// longest at least the threshold. `drained_by` ran that NET_RX.
    RxBatch {
        cpu: u32,
        first_enqueue_ns: u64,
        drained_ns: u64,
        packets: u64,
        max_wait_ns: u64,
        drained_by: Task,
    },
    /// No local timer interrupt for `end_ns - start_ns` on a busy CPU.
    TickGap {
        cpu: u32,
        start_ns: u64,
        end_ns: u64,
        task: Task,
        syscall: Option<SyscallInFlight>,
        kstack: Vec<String>,
    },
    /// NET_RX could not run from `blocked_ns` to `entry_ns`.
    SoftirqDelay {
        cpu: u32,
        blocked_ns: u64,
        raise_ns: u64,
        entry_ns: u64,
        drained_by: Task,
        holder: Option<Holder>,
    },
    /// `ksoftirqd` took over NET_RX pending since `blocked_ns`, after `prev`.
    Ksoftirqd {
        cpu: u32,
        blocked_ns: u64,
        switch_ns: u64,
        prev: Task,
        ksoftirqd: Task,
    },
    /// The cgroup rstat lock was held (IRQs off) by `task`.
    RstatHold {
        cpu: u32,
        lock_cpu: i64,
        start_ns: u64,
        end_ns: u64,
        task: Task,
        syscall: Option<SyscallInFlight>,
        /// Pending memcg stat updates at the flush that took the lock.
        flush_updates: Option<i64>,
        kstack: Vec<String>,
    },
    /// A syscall that ended: slow, or a stall culprit's.
    Syscall {
        cpu: u32,
        task: Task,
        syscall: SyscallInFlight,
        end_ns: u64,
        ret: i64,
        culprit: bool,
    },
    /// An ICMP echo request processed in `task`'s context.
    IcmpEcho {
        cpu: u32,
        seq: u16,
        id: u16,
        task: Task,
        ts_ns: u64,
    },
    /// The hypervisor did not run this vCPU for `stolen_ns` of
    /// `[start_ns, end_ns]`.
    Steal {
        cpu: u32,
        start_ns: u64,
        end_ns: u64,
        stolen_ns: u64,
    },
    /// A task's kernel code ran on while others waited for the CPU.
    Nonpreemptible(Nonpreemptible),
}

/// Who held a CPU while NET_RX was blocked, sampled by a timer tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub task: Task,
    pub ts_ns: u64,
    /// The softirq the CPU was running, if any.
    pub softirq: Option<&'static str>,
    pub kstack: Vec<String>,
}

impl KernelEvent {
    /// The CPU the event happened on.
    pub fn cpu(&self) -> u32 {
        match self {
            KernelEvent::RxBatch { cpu, .. }
            | KernelEvent::TickGap { cpu, .. }
            | KernelEvent::SoftirqDelay { cpu, .. }
            | KernelEvent::Ksoftirqd { cpu, .. }
            | KernelEvent::RstatHold { cpu, .. }
            | KernelEvent::Syscall { cpu, .. }
            | KernelEvent::IcmpEcho { cpu, .. }
            | KernelEvent::Steal { cpu, .. } => *cpu,
            KernelEvent::Nonpreemptible(n) => n.cpu,
        }
    }
}

/// Turns the BPF side's CLOCK_MONOTONIC times into CLOCK_REALTIME: the
/// live offset while tracing, the recorded one when a recording replays.
pub trait Clock {
    fn to_realtime(&self, monotonic_ns: u64) -> u64;
}

impl Clock for ClockOffset {
    fn to_realtime(&self, monotonic_ns: u64) -> u64 {
        ClockOffset::to_realtime(self, monotonic_ns)
    }
}

/// Copies a raw ring-buffer record; `None` if it is too short.
pub fn raw_from_bytes(data: &[u8]) -> Option<RawEvent> {
    if data.len() < std::mem::size_of::<RawEvent>() {
        return None;
    }
    // SAFETY: the length is checked; RawEvent is plain old data (integers
    // and arrays of them) for which every bit pattern is valid.
    Some(unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<RawEvent>()) })
}

/// Decodes one raw event. `symbolize` turns kernel addresses into frames;
/// `syscall_name` names a syscall number. Unknown kinds decode to `None`.
pub fn decode(
    raw: &RawEvent,
    clock: &dyn Clock,
    symbolize: &mut dyn FnMut(&[u64]) -> Vec<String>,
    syscall_name: &dyn Fn(i64) -> String,
) -> Option<KernelEvent> {
    let rt = |mono: u64| clock.to_realtime(mono);
    let has = |flag: Flag| raw.flags & flag.0 != 0;
    let task = task_of(&raw.task);
    let task2 = task_of(&raw.task2);
    let frames = (raw.stack_bytes as usize / 8).min(raw.stack.len());
    // netstall's own frames (the program that took the stack) go at once.
    let mut kstack = || stack::strip_own(symbolize(&raw.stack[..frames]));
    let path = || {
        has(Flag::TF_HAS_PATH).then(|| {
            let start = (raw.path_off as usize).min(PATH_END);
            c_string(&raw.path[start..=PATH_END])
        })
    };
    let syscall = has(Flag::TF_HAS_SYSCALL).then(|| SyscallInFlight {
        nr: raw.sys_nr,
        name: syscall_name(raw.sys_nr),
        start_ns: (raw.sys_start_ns != 0).then(|| rt(raw.sys_start_ns)),
        path: path(),
    });
    // SAFETY (each `raw.detail` read below): the union member read is the
    // one `kind` says the BPF side wrote, and every member is plain integers,
    // valid for any bits.
    let event = match raw.kind {
        Kind::TK_RX_BATCH => {
            let d = unsafe { raw.detail.rx_batch };
            KernelEvent::RxBatch {
                cpu: raw.cpu,
                first_enqueue_ns: rt(raw.start_ns),
                drained_ns: rt(raw.end_ns),
                packets: d.packets,
                max_wait_ns: d.max_wait_ns,
                drained_by: task,
            }
        }
        Kind::TK_TICK_GAP => {
            let frames = kstack();
            if stack::interrupted_user_mode(&frames) {
                // IRQs cannot be off in user mode: the tick was late because
                // the vCPU did not run (steal), not an irqs-off section.
                return None;
            }
            KernelEvent::TickGap {
                cpu: raw.cpu,
                start_ns: rt(raw.start_ns),
                end_ns: rt(raw.end_ns),
                task,
                syscall,
                kstack: stack::strip_interrupt_frames(frames),
            }
        }
        Kind::TK_SOFTIRQ_DELAY => {
            let d = unsafe { raw.detail.softirq_delay };
            let holder = has(Flag::TF_HAS_HOLDER).then(|| Holder {
                task: task.clone(),
                ts_ns: rt(d.holder_ts),
                softirq: has(Flag::TF_IN_SOFTIRQ)
                    .then(|| SOFTIRQ_NAMES.get(d.holder_vec as usize).copied())
                    .flatten(),
                kstack: stack::strip_interrupt_frames(kstack()),
            });
            KernelEvent::SoftirqDelay {
                cpu: raw.cpu,
                blocked_ns: rt(raw.start_ns),
                raise_ns: rt(d.raise_ns),
                entry_ns: rt(raw.end_ns),
                drained_by: task2,
                holder,
            }
        }
        Kind::TK_KSOFTIRQD => KernelEvent::Ksoftirqd {
            cpu: raw.cpu,
            blocked_ns: rt(raw.start_ns),
            switch_ns: rt(raw.end_ns),
            prev: task,
            ksoftirqd: task2,
        },
        Kind::TK_RSTAT_HOLD => {
            let d = unsafe { raw.detail.rstat_hold };
            KernelEvent::RstatHold {
                cpu: raw.cpu,
                lock_cpu: d.lock_cpu,
                start_ns: rt(raw.start_ns),
                end_ns: rt(raw.end_ns),
                task,
                syscall,
                flush_updates: (d.flush_ts != 0).then_some(d.flush_updates),
                kstack: kstack(),
            }
        }
        Kind::TK_SYSCALL => {
            let d = unsafe { raw.detail.syscall };
            KernelEvent::Syscall {
                cpu: raw.cpu,
                task,
                syscall: syscall?,
                end_ns: rt(raw.end_ns),
                ret: d.ret,
                culprit: has(Flag::TF_CULPRIT),
            }
        }
        Kind::TK_ICMP_ECHO => {
            let d = unsafe { raw.detail.icmp_echo };
            KernelEvent::IcmpEcho {
                cpu: raw.cpu,
                seq: d.seq,
                id: d.id,
                task,
                ts_ns: rt(raw.start_ns),
            }
        }
        Kind::TK_STEAL => {
            let d = unsafe { raw.detail.steal };
            KernelEvent::Steal {
                cpu: raw.cpu,
                start_ns: rt(raw.start_ns),
                end_ns: rt(raw.end_ns),
                stolen_ns: d.stolen_ns,
            }
        }
        Kind::TK_NOSCHED => {
            let d = unsafe { raw.detail.nosched };
            let (start_ns, end_ns) = (rt(raw.start_ns), rt(raw.end_ns));
            KernelEvent::Nonpreemptible(Nonpreemptible {
                cpu: raw.cpu,
                start_ns,
                end_ns,
                duration_ms: end_ns.saturating_sub(start_ns) as f64 / 1e6,
                ticks: d.ticks,
                waiting: d.waiting,
                culprit: Culprit {
                    comm: task.comm,
                    pid: task.pid,
                    tid: task.tid,
                    syscall: syscall.as_ref().map(|s| s.name.clone()),
                    path: syscall.and_then(|s| s.path),
                    kstack: stack::strip_interrupt_frames(kstack()),
                    ..Culprit::default()
                },
            })
        }
        _ => return None,
    };
    Some(event)
}

fn task_of(raw: &ns_task) -> Task {
    Task {
        comm: c_string(&raw.comm),
        pid: raw.pid,
        tid: raw.tid,
    }
}

/// A NUL-terminated C string (of `i8`, as bindgen types `char`).
fn c_string(chars: &[i8]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skel::trace::types::{
        ns_icmp_echo, ns_rstat_hold, ns_softirq_delay, ns_trace_detail as Detail,
    };

    fn task(comm: &str, pid: u32, tid: u32) -> ns_task {
        let mut task = ns_task {
            pid,
            tid,
            ..Default::default()
        };
        for (o, b) in task.comm.iter_mut().zip(comm.bytes()) {
            *o = b as i8;
        }
        task
    }

    fn clock() -> ClockOffset {
        ClockOffset::sample()
    }

    fn frames(addrs: &[u64]) -> Vec<String> {
        addrs.iter().map(|a| format!("f{a:x}")).collect()
    }

    #[test]
    fn rstat_hold_decodes_task_syscall_path_and_stack() {
        let mut raw = RawEvent {
            kind: Kind::TK_RSTAT_HOLD,
            cpu: 1,
            start_ns: 5_000,
            end_ns: 25_005_000,
            detail: Detail {
                rstat_hold: ns_rstat_hold {
                    lock_cpu: 0,
                    flush_updates: 1234,
                    flush_ts: 4_000,
                },
            },
            task: task("cadvisor", 42, 43),
            sys_nr: 0,
            sys_arg0: 3,
            sys_start_ns: 4_000,
            flags: Flag::TF_HAS_SYSCALL.0 | Flag::TF_HAS_PATH.0,
            stack_bytes: 16,
            ..Default::default()
        };
        raw.stack[0] = 0xa;
        raw.stack[1] = 0xb;
        let path = b"/sys/fs/cgroup/memory/memory.stat";
        let off = PATH_END - path.len();
        for (i, b) in path.iter().enumerate() {
            raw.path[off + i] = *b as i8;
        }
        raw.path_off = off as u32;
        let clock = clock();
        let ev = decode(&raw, &clock, &mut |a| frames(a), &|nr| format!("nr{nr}")).unwrap();
        let KernelEvent::RstatHold {
            cpu,
            start_ns,
            end_ns,
            task,
            syscall,
            flush_updates,
            kstack,
            ..
        } = ev
        else {
            panic!("wrong kind: {ev:?}");
        };
        assert_eq!(cpu, 1);
        assert_eq!(end_ns - start_ns, 25_000_000);
        assert_eq!(start_ns, clock.to_realtime(5_000));
        assert_eq!(task.label(), "cadvisor[42]");
        let syscall = syscall.unwrap();
        assert_eq!(syscall.name, "nr0");
        assert_eq!(syscall.start_ns, Some(clock.to_realtime(4_000)));
        assert_eq!(
            syscall.path.as_deref(),
            Some("/sys/fs/cgroup/memory/memory.stat")
        );
        assert_eq!(flush_updates, Some(1234));
        assert_eq!(kstack, vec!["fa", "fb"]);
    }

    #[test]
    fn softirq_delay_without_holder_has_none() {
        let raw = RawEvent {
            kind: Kind::TK_SOFTIRQ_DELAY,
            cpu: 0,
            start_ns: 1_000,
            end_ns: 51_000_000,
            detail: Detail {
                softirq_delay: ns_softirq_delay {
                    raise_ns: 2_000_000,
                    ..Default::default()
                },
            },
            task2: task("ksoftirqd/0", 15, 15),
            ..Default::default()
        };
        let ev = decode(&raw, &clock(), &mut |a| frames(a), &|_| String::new()).unwrap();
        let KernelEvent::SoftirqDelay {
            drained_by, holder, ..
        } = ev
        else {
            panic!("wrong kind");
        };
        assert!(drained_by.is_ksoftirqd());
        assert_eq!(drained_by.label(), "ksoftirqd/0");
        assert!(holder.is_none());
    }

    #[test]
    fn a_tick_gap_over_user_mode_is_steal_not_irqs_off() {
        let clock = clock();
        let raw = RawEvent {
            kind: Kind::TK_TICK_GAP,
            cpu: 0,
            start_ns: 1_000,
            end_ns: 20_000_000,
            stack_bytes: 24,
            ..Default::default()
        };
        let names = |tail: &'static str| {
            move |_: &[u64]| -> Vec<String> {
                [
                    "__sysvec_apic_timer_interrupt",
                    "asm_sysvec_apic_timer_interrupt",
                    tail,
                ]
                .iter()
                .filter(|f| !f.is_empty())
                .map(|f| f.to_string())
                .collect()
            }
        };
        assert!(decode(&raw, &clock, &mut names(""), &|_| String::new()).is_none());
        let kernel = decode(&raw, &clock, &mut names("css_rstat_flush"), &|_| {
            String::new()
        });
        let Some(KernelEvent::TickGap { kstack, .. }) = kernel else {
            panic!("a gap over kernel code is irqs-off: {kernel:?}");
        };
        assert_eq!(kstack, ["css_rstat_flush"]);
    }

    #[test]
    fn unknown_kind_and_short_records_are_rejected() {
        let raw = RawEvent {
            kind: Kind(99),
            ..Default::default()
        };
        assert!(decode(&raw, &clock(), &mut |a| frames(a), &|_| String::new()).is_none());
        assert!(raw_from_bytes(&[0u8; 8]).is_none());
    }

    #[test]
    fn icmp_echo_reads_its_named_fields_and_the_own_frames_go() {
        let raw = RawEvent {
            kind: Kind::TK_ICMP_ECHO,
            cpu: 1,
            start_ns: 7,
            detail: Detail {
                icmp_echo: ns_icmp_echo {
                    seq: 770,
                    id: 9,
                    _pad: 0,
                },
            },
            task: task("ksoftirqd/1", 20, 20),
            ..Default::default()
        };
        let ev = decode(&raw, &clock(), &mut |a| frames(a), &|_| String::new()).unwrap();
        let KernelEvent::IcmpEcho { seq, id, task, .. } = ev else {
            panic!("wrong kind: {ev:?}");
        };
        assert_eq!((seq, id), (770, 9));
        assert!(task.is_ksoftirqd());

        // The tracer's own program and its dispatch never reach a culprit.
        let mut raw = RawEvent {
            kind: Kind::TK_RSTAT_HOLD,
            stack_bytes: 24,
            ..Default::default()
        };
        raw.stack[..3].copy_from_slice(&[1, 2, 3]);
        let named = |a: &[u64]| -> Vec<String> {
            a.iter()
                .map(|n| match n {
                    1 => "bpf_prog_a46d9c3b8a1480cb_on_rstat_unlock".to_string(),
                    2 => "bpf_trace_run3".to_string(),
                    _ => "css_rstat_flush".to_string(),
                })
                .collect()
        };
        let ev = decode(&raw, &clock(), &mut { named }, &|_| String::new()).unwrap();
        let KernelEvent::RstatHold { kstack, .. } = ev else {
            panic!("wrong kind: {ev:?}");
        };
        assert_eq!(kstack, ["css_rstat_flush"]);
    }
}
