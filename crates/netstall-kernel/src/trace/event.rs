//! The tracer's kernel events, typed, and their decoding from the ring
//! buffer's `struct ns_trace_event` (see `src/bpf/trace.h`).
//!
//! Decoding is pure: the clock offset and the stack symbolizer are passed in,
//! so recorded events decode the same way in unit tests.

use netstall_core::clock::ClockOffset;

use crate::skel::trace::types::ns_trace_event as RawEvent;

// Mirrors of trace.h (the skeleton carries types, not #defines).
const TK_RX_BATCH: u32 = 1;
const TK_TICK_GAP: u32 = 2;
const TK_SOFTIRQ_DELAY: u32 = 3;
const TK_KSOFTIRQD: u32 = 4;
const TK_RSTAT_HOLD: u32 = 5;
const TK_SYSCALL: u32 = 6;
const TK_ICMP_ECHO: u32 = 7;
const TK_STEAL: u32 = 8;

const TF_IN_SOFTIRQ: u32 = 1 << 0;
const TF_HAS_HOLDER: u32 = 1 << 1;
const TF_HAS_SYSCALL: u32 = 1 << 2;
const TF_HAS_PATH: u32 = 1 << 3;
const TF_CULPRIT: u32 = 1 << 4;

/// Where `trace.bpf.c` ends a path it builds backwards.
const PATH_END: usize = 255;

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
        }
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
    clock: &ClockOffset,
    symbolize: &mut dyn FnMut(&[u64]) -> Vec<String>,
    syscall_name: &dyn Fn(i64) -> String,
) -> Option<KernelEvent> {
    let rt = |mono: u64| clock.to_realtime(mono);
    let task = Task {
        comm: c_string(&raw.comm),
        pid: raw.pid,
        tid: raw.tid,
    };
    let task2 = Task {
        comm: c_string(&raw.comm2),
        pid: raw.pid2,
        tid: raw.tid2,
    };
    let frames = (raw.stack_bytes as usize / 8).min(raw.stack.len());
    let mut kstack = || symbolize(&raw.stack[..frames]);
    let path = || {
        (raw.flags & TF_HAS_PATH != 0).then(|| {
            let start = (raw.path_off as usize).min(PATH_END);
            c_string(&raw.path[start..=PATH_END])
        })
    };
    let syscall = (raw.flags & TF_HAS_SYSCALL != 0).then(|| SyscallInFlight {
        nr: raw.sys_nr,
        name: syscall_name(raw.sys_nr),
        start_ns: (raw.sys_start_ns != 0).then(|| rt(raw.sys_start_ns)),
        path: path(),
    });
    let event = match raw.kind {
        TK_RX_BATCH => KernelEvent::RxBatch {
            cpu: raw.cpu,
            first_enqueue_ns: rt(raw.start_ns),
            drained_ns: rt(raw.end_ns),
            packets: raw.a,
            max_wait_ns: raw.b,
            drained_by: task,
        },
        TK_TICK_GAP => {
            let frames = kstack();
            if interrupted_user_mode(&frames) {
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
                kstack: strip_interrupt_frames(frames),
            }
        }
        TK_SOFTIRQ_DELAY => {
            let holder = (raw.flags & TF_HAS_HOLDER != 0).then(|| Holder {
                task: task.clone(),
                ts_ns: rt(raw.b),
                softirq: (raw.flags & TF_IN_SOFTIRQ != 0)
                    .then(|| SOFTIRQ_NAMES.get(raw.holder_vec as usize).copied())
                    .flatten(),
                kstack: strip_interrupt_frames(kstack()),
            });
            KernelEvent::SoftirqDelay {
                cpu: raw.cpu,
                blocked_ns: rt(raw.start_ns),
                raise_ns: rt(raw.a),
                entry_ns: rt(raw.end_ns),
                drained_by: task2,
                holder,
            }
        }
        TK_KSOFTIRQD => KernelEvent::Ksoftirqd {
            cpu: raw.cpu,
            blocked_ns: rt(raw.start_ns),
            switch_ns: rt(raw.end_ns),
            prev: task,
            ksoftirqd: task2,
        },
        TK_RSTAT_HOLD => KernelEvent::RstatHold {
            cpu: raw.cpu,
            lock_cpu: raw.a as i64,
            start_ns: rt(raw.start_ns),
            end_ns: rt(raw.end_ns),
            task,
            syscall,
            flush_updates: (raw.c != 0).then_some(raw.b as i64),
            kstack: kstack(),
        },
        TK_SYSCALL => KernelEvent::Syscall {
            cpu: raw.cpu,
            task,
            syscall: syscall?,
            end_ns: rt(raw.end_ns),
            ret: raw.a as i64,
            culprit: raw.flags & TF_CULPRIT != 0,
        },
        TK_ICMP_ECHO => KernelEvent::IcmpEcho {
            cpu: raw.cpu,
            seq: raw.a as u16,
            id: raw.b as u16,
            task,
            ts_ns: rt(raw.start_ns),
        },
        TK_STEAL => KernelEvent::Steal {
            cpu: raw.cpu,
            start_ns: rt(raw.start_ns),
            end_ns: rt(raw.end_ns),
            stolen_ns: raw.a,
        },
        _ => return None,
    };
    Some(event)
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

fn is_interrupt_entry(frame: &str) -> bool {
    frame.starts_with("asm_sysvec_") || frame.starts_with("asm_common_interrupt")
}

/// Nothing under the interrupt entry: the interrupt came from user mode.
fn interrupted_user_mode(frames: &[String]) -> bool {
    frames
        .iter()
        .position(|f| is_interrupt_entry(f))
        .is_some_and(|i| i + 1 == frames.len())
}

/// A stack taken in an interrupt handler starts with the handler and the
/// interrupt entry; what matters is the interrupted code under them (for a
/// timer tick after an IRQs-off section: where IRQs came back on). Only the
/// innermost interrupt is cut: the code under it may itself run at an
/// outer interrupt's exit (a softirq).
pub fn strip_interrupt_frames(frames: Vec<String>) -> Vec<String> {
    match frames.iter().position(|f| is_interrupt_entry(f)) {
        Some(last) if last + 1 < frames.len() => frames[last + 1..].to_vec(),
        _ => frames,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm(s: &str) -> [i8; 16] {
        let mut out = [0i8; 16];
        for (o, b) in out.iter_mut().zip(s.bytes()) {
            *o = b as i8;
        }
        out
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
            kind: TK_RSTAT_HOLD,
            cpu: 1,
            start_ns: 5_000,
            end_ns: 25_005_000,
            a: 0,
            b: 1234,
            c: 4_000,
            pid: 42,
            tid: 43,
            comm: comm("cadvisor"),
            sys_nr: 0,
            sys_arg0: 3,
            sys_start_ns: 4_000,
            flags: TF_HAS_SYSCALL | TF_HAS_PATH,
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
            kind: TK_SOFTIRQ_DELAY,
            cpu: 0,
            start_ns: 1_000,
            end_ns: 51_000_000,
            a: 2_000_000,
            comm2: comm("ksoftirqd/0"),
            pid2: 15,
            tid2: 15,
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
            kind: TK_TICK_GAP,
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
            kind: 99,
            ..Default::default()
        };
        assert!(decode(&raw, &clock(), &mut |a| frames(a), &|_| String::new()).is_none());
        assert!(raw_from_bytes(&[0u8; 8]).is_none());
    }

    #[test]
    fn interrupt_frames_are_stripped() {
        let stack: Vec<String> = [
            "__sysvec_apic_timer_interrupt",
            "sysvec_apic_timer_interrupt",
            "asm_sysvec_apic_timer_interrupt",
            "_raw_spin_unlock_irq",
            "css_rstat_flush",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            strip_interrupt_frames(stack),
            vec!["_raw_spin_unlock_irq", "css_rstat_flush"]
        );
        let nested: Vec<String> = [
            "__sysvec_apic_timer_interrupt",
            "asm_sysvec_apic_timer_interrupt",
            "bpf_loop",
            "handle_softirqs",
            "asm_sysvec_apic_timer_interrupt",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            strip_interrupt_frames(nested)[..2],
            ["bpf_loop", "handle_softirqs"]
        );
        let plain = vec!["a".to_string(), "b".to_string()];
        assert_eq!(strip_interrupt_frames(plain.clone()), plain);
    }
}
