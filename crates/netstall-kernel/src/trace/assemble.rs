//! Stall assembly: one stall on a CPU is usually seen by several detectors
//! at once (a memory.stat flush shows as a tick gap, an rstat hold and a
//! backlog of packets). Events on the same CPU whose time spans overlap
//! become one [`Stall`], measured by its most direct detector and
//! attributed to the best-evidenced culprit.
//!
//! Pure: no I/O, driven by the events and the caller's notion of "now".

use std::collections::VecDeque;

use netstall_events::kernel::{Culprit, Detector, Stall};

use super::event::{KernelEvent, SyscallInFlight, Task};

/// Events this close in time (on the same CPU) belong to the same stall.
const MERGE_SLACK_NS: u64 = 5_000_000;
/// How many ended syscalls are remembered to give a culprit's syscall its duration.
const RECENT_SYSCALLS: usize = 512;
/// Evidence kept per stall: a CPU stalled back to back keeps extending one
/// stall, and its memory must stay bounded.
const MAX_EVENTS_PER_STALL: usize = 4096;

/// Merges detector events into stalls.
#[derive(Debug)]
pub struct Assembler {
    /// A stall is complete once no event touched it for this long (its
    /// culprit's syscall usually ends within it).
    settle_ns: u64,
    open: Vec<Group>,
    recent_syscalls: VecDeque<EndedSyscall>,
}

#[derive(Debug)]
struct Group {
    cpu: u32,
    start_ns: u64,
    end_ns: u64,
    events: Vec<KernelEvent>,
}

#[derive(Debug, Clone)]
struct EndedSyscall {
    tid: u32,
    start_ns: Option<u64>,
    end_ns: u64,
}

/// The time span a stall detector's event covers, if it is one, earliest
/// first: stamps taken on different CPUs can arrive out of order, and an
/// upside-down span must not underflow.
fn span(event: &KernelEvent) -> Option<(u64, u64)> {
    let (a, b) = match *event {
        KernelEvent::RxBatch {
            first_enqueue_ns,
            drained_ns,
            ..
        } => (first_enqueue_ns, drained_ns),
        KernelEvent::TickGap {
            start_ns, end_ns, ..
        }
        | KernelEvent::RstatHold {
            start_ns, end_ns, ..
        } => (start_ns, end_ns),
        KernelEvent::SoftirqDelay {
            blocked_ns,
            entry_ns,
            ..
        } => (blocked_ns, entry_ns),
        KernelEvent::Ksoftirqd {
            blocked_ns,
            switch_ns,
            ..
        } => (blocked_ns, switch_ns),
        KernelEvent::Syscall { .. }
        | KernelEvent::IcmpEcho { .. }
        | KernelEvent::Steal { .. }
        | KernelEvent::Nonpreemptible(_) => return None,
    };
    Some((a.min(b), a.max(b)))
}

fn detector(event: &KernelEvent) -> Option<Detector> {
    Some(match event {
        KernelEvent::RxBatch { .. } => Detector::RxBacklog,
        KernelEvent::TickGap { .. } => Detector::IrqsOff,
        KernelEvent::SoftirqDelay { .. } => Detector::SoftirqDelay,
        KernelEvent::Ksoftirqd { .. } => Detector::Ksoftirqd,
        KernelEvent::RstatHold { .. } => Detector::RstatHold,
        KernelEvent::Syscall { .. }
        | KernelEvent::IcmpEcho { .. }
        | KernelEvent::Steal { .. }
        | KernelEvent::Nonpreemptible(_) => return None,
    })
}

impl Assembler {
    /// `settle_ns`: how long a stall stays open for more evidence.
    pub fn new(settle_ns: u64) -> Self {
        Self {
            settle_ns,
            open: Vec::new(),
            recent_syscalls: VecDeque::with_capacity(RECENT_SYSCALLS),
        }
    }

    /// Adds one event. Syscall events only lend their durations to culprits;
    /// ICMP events are not stall evidence and are ignored.
    pub fn push(&mut self, event: KernelEvent) {
        if let KernelEvent::Syscall {
            ref task,
            ref syscall,
            end_ns,
            ..
        } = event
        {
            if self.recent_syscalls.len() == RECENT_SYSCALLS {
                self.recent_syscalls.pop_front();
            }
            self.recent_syscalls.push_back(EndedSyscall {
                tid: task.tid,
                start_ns: syscall.start_ns,
                end_ns,
            });
            return;
        }
        let Some((start, end)) = span(&event) else {
            return;
        };
        let cpu = event.cpu();
        let joined = self.open.iter_mut().find(|g| {
            g.cpu == cpu
                && start <= g.end_ns.saturating_add(MERGE_SLACK_NS)
                && end.saturating_add(MERGE_SLACK_NS) >= g.start_ns
        });
        match joined {
            Some(group) => {
                group.start_ns = group.start_ns.min(start);
                group.end_ns = group.end_ns.max(end);
                if group.events.len() < MAX_EVENTS_PER_STALL {
                    group.events.push(event);
                }
            }
            None => self.open.push(Group {
                cpu,
                start_ns: start,
                end_ns: end,
                events: vec![event],
            }),
        }
    }

    /// Completes the stalls that have had no new evidence for the settle
    /// time at `now_ns` (REALTIME); `u64::MAX` completes them all.
    pub fn drain(&mut self, now_ns: u64) -> Vec<Stall> {
        let settle = self.settle_ns;
        let (done, open): (Vec<Group>, Vec<Group>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|g| now_ns == u64::MAX || g.end_ns.saturating_add(settle) <= now_ns);
        self.open = open;
        let mut stalls: Vec<Stall> = done.iter().map(|g| self.build(g)).collect();
        stalls.sort_by_key(|s| (s.start_ns, s.cpu));
        stalls
    }

    /// When the earliest open stall will have settled (REALTIME ns), if any
    /// is open: the reader need not look before then.
    pub fn next_due(&self) -> Option<u64> {
        self.open
            .iter()
            .map(|g| g.end_ns.saturating_add(self.settle_ns))
            .min()
    }

    /// How many stalls are still collecting evidence.
    pub fn pending(&self) -> usize {
        self.open.len()
    }

    fn build(&self, group: &Group) -> Stall {
        let mut seen_by: Vec<Detector> = group.events.iter().filter_map(detector).collect();
        seen_by.sort();
        seen_by.dedup();
        // The Detector order is the preference: the most direct measurement first.
        let primary = seen_by[0];
        let measured = group
            .events
            .iter()
            .filter(|e| detector(e) == Some(primary))
            .filter_map(|e| span(e).map(|s| (e, s)))
            .max_by_key(|(_, (start, end))| end - start);
        let (start_ns, duration_ns) = match measured {
            Some((
                KernelEvent::RxBatch {
                    first_enqueue_ns,
                    max_wait_ns,
                    ..
                },
                _,
            )) => (*first_enqueue_ns, *max_wait_ns),
            Some((_, (start, end))) => (start, end - start),
            None => (group.start_ns, group.end_ns - group.start_ns),
        };

        let batches = group.events.iter().filter_map(|e| match e {
            KernelEvent::RxBatch {
                packets,
                max_wait_ns,
                drained_by,
                ..
            } => Some((*packets, *max_wait_ns, drained_by)),
            _ => None,
        });
        let mut packets = None;
        let mut max_wait_ns = None;
        let mut drainer: Option<(u64, &Task)> = None;
        for (n, wait, by) in batches {
            *packets.get_or_insert(0) += n;
            max_wait_ns = max_wait_ns.max(Some(wait));
            if drainer.is_none_or(|(most, _)| n > most) {
                drainer = Some((n, by));
            }
        }
        let drained_by = drainer.map(|(_, t)| t.label()).or_else(|| {
            group.events.iter().find_map(|e| match e {
                KernelEvent::SoftirqDelay { drained_by, .. } => Some(drained_by.label()),
                KernelEvent::Ksoftirqd { ksoftirqd, .. } => Some(ksoftirqd.label()),
                _ => None,
            })
        });

        Stall {
            detector: primary,
            cpu: group.cpu,
            start_ns,
            end_ns: start_ns + duration_ns,
            duration_ms: duration_ns as f64 / 1e6,
            seen_by,
            packets,
            max_wait_ms: max_wait_ns.map(|w| w as f64 / 1e6),
            drained_by,
            culprit: self.culprit(group),
            node: None,
        }
    }

    /// The best-evidenced culprit: the rstat lock holder, else the task the
    /// late timer tick interrupted, else the tick watchdog's sample of who
    /// held the CPU while NET_RX was blocked, else the task ksoftirqd followed.
    fn culprit(&self, group: &Group) -> Option<Culprit> {
        let longest = |want: Detector| {
            group
                .events
                .iter()
                .filter(move |e| detector(e) == Some(want))
                .max_by_key(|e| span(e).map(|(s, e)| e - s))
        };
        if let Some(KernelEvent::RstatHold {
            task,
            syscall,
            kstack,
            ..
        }) = longest(Detector::RstatHold)
        {
            return Some(self.task_culprit(task, syscall.as_ref(), kstack, None));
        }
        if let Some(KernelEvent::TickGap {
            task,
            syscall,
            kstack,
            ..
        }) = longest(Detector::IrqsOff)
        {
            return Some(self.task_culprit(task, syscall.as_ref(), kstack, None));
        }
        let holder = group.events.iter().find_map(|e| match e {
            KernelEvent::SoftirqDelay {
                holder: Some(h), ..
            } => Some(h),
            _ => None,
        });
        if let Some(h) = holder {
            let context = h.softirq.map(|v| format!("softirq {v}"));
            return Some(self.task_culprit(&h.task, None, &h.kstack, context));
        }
        group.events.iter().find_map(|e| match e {
            KernelEvent::Ksoftirqd { prev, .. } => Some(self.task_culprit(prev, None, &[], None)),
            _ => None,
        })
    }

    fn task_culprit(
        &self,
        task: &Task,
        syscall: Option<&SyscallInFlight>,
        kstack: &[String],
        context: Option<String>,
    ) -> Culprit {
        let syscall_ms = syscall.and_then(|s| {
            self.recent_syscalls
                .iter()
                .find(|e| e.tid == task.tid && s.start_ns.is_some() && e.start_ns == s.start_ns)
                .map(|e| e.end_ns.saturating_sub(e.start_ns.unwrap_or(e.end_ns)) as f64 / 1e6)
        });
        Culprit {
            comm: task.comm.clone(),
            pid: task.pid,
            tid: task.tid,
            syscall: syscall.map(|s| s.name.clone()),
            path: syscall.and_then(|s| s.path.clone()),
            syscall_ms,
            cgroup: None,
            context,
            kstack: kstack.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::event::Holder;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000_000_000_000;

    fn task(comm: &str, pid: u32) -> Task {
        Task {
            comm: comm.into(),
            pid,
            tid: pid,
        }
    }

    fn stack(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| f.to_string()).collect()
    }

    fn read_in_flight(start_ns: u64) -> SyscallInFlight {
        SyscallInFlight {
            nr: 0,
            name: "read".into(),
            start_ns: Some(start_ns),
            path: Some("/sys/fs/cgroup/memory/memory.stat".into()),
        }
    }

    /// A memory.stat read on CPU 1, as the tracer saw it in the lab: the
    /// rstat hold, the late tick, the packets behind it, the read's end.
    fn memory_stat_flush() -> Vec<KernelEvent> {
        let poller = task("lab-poller", 4242);
        vec![
            KernelEvent::RstatHold {
                cpu: 1,
                lock_cpu: 0,
                start_ns: T0 + MS,
                end_ns: T0 + 118 * MS,
                task: poller.clone(),
                syscall: Some(read_in_flight(T0)),
                flush_updates: Some(5000),
                kstack: stack(&["css_rstat_flush", "memcg1_stat_format", "memory_stat_show"]),
            },
            KernelEvent::TickGap {
                cpu: 1,
                start_ns: T0 + 2 * MS,
                end_ns: T0 + 119 * MS + 200_000,
                task: poller.clone(),
                syscall: Some(read_in_flight(T0)),
                kstack: stack(&["_raw_spin_unlock_irq", "css_rstat_flush"]),
            },
            KernelEvent::RxBatch {
                cpu: 1,
                first_enqueue_ns: T0 + 3 * MS,
                drained_ns: T0 + 119 * MS,
                packets: 12,
                max_wait_ns: 116 * MS,
                drained_by: task("ksoftirqd/1", 20),
            },
            KernelEvent::Syscall {
                cpu: 1,
                task: poller,
                syscall: read_in_flight(T0),
                end_ns: T0 + 119 * MS,
                ret: 900,
                culprit: true,
            },
        ]
    }

    #[test]
    fn a_memory_stat_flush_is_one_irqs_off_stall_with_the_reader_as_culprit() {
        let mut asm = Assembler::new(500 * MS);
        for e in memory_stat_flush() {
            asm.push(e);
        }
        assert!(asm.drain(T0 + 200 * MS).is_empty(), "still settling");
        let stalls = asm.drain(T0 + 700 * MS);
        assert_eq!(stalls.len(), 1);
        let s = &stalls[0];
        assert_eq!(s.detector, Detector::IrqsOff);
        assert_eq!(s.cpu, 1);
        assert!((s.duration_ms - 117.2).abs() < 0.01, "{}", s.duration_ms);
        assert_eq!(
            s.seen_by,
            vec![Detector::IrqsOff, Detector::RstatHold, Detector::RxBacklog]
        );
        assert_eq!(s.packets, Some(12));
        assert_eq!(s.drained_by.as_deref(), Some("ksoftirqd/1"));
        let c = s.culprit.as_ref().unwrap();
        assert_eq!(c.comm, "lab-poller");
        assert_eq!(c.syscall.as_deref(), Some("read"));
        assert_eq!(c.syscall_ms, Some(119.0));
        assert!(c.kstack.contains(&"memory_stat_show".to_string()));
        assert_eq!(asm.pending(), 0);
    }

    #[test]
    fn stalls_on_different_cpus_or_far_apart_stay_separate() {
        let mut asm = Assembler::new(0);
        let gap = |cpu, start| KernelEvent::TickGap {
            cpu,
            start_ns: start,
            end_ns: start + 20 * MS,
            task: task("x", 1),
            syscall: None,
            kstack: vec![],
        };
        asm.push(gap(0, T0));
        asm.push(gap(1, T0));
        asm.push(gap(0, T0 + 100 * MS));
        let stalls = asm.drain(u64::MAX);
        assert_eq!(stalls.len(), 3);
        assert!(stalls.iter().all(|s| s.detector == Detector::IrqsOff));
    }

    #[test]
    fn out_of_order_stamps_and_clock_extremes_do_not_panic() {
        let mut asm = Assembler::new(0);
        // Ended "before" it began (stamps from two CPUs), then spans at
        // the very end of the clock's range.
        asm.push(KernelEvent::Ksoftirqd {
            cpu: 0,
            blocked_ns: T0 + 30 * MS,
            switch_ns: T0,
            prev: task("x", 1),
            ksoftirqd: task("ksoftirqd/0", 15),
        });
        for _ in 0..2 {
            asm.push(KernelEvent::TickGap {
                cpu: 1,
                start_ns: u64::MAX - MS,
                end_ns: u64::MAX,
                task: task("x", 1),
                syscall: None,
                kstack: vec![],
            });
        }
        let stalls = asm.drain(u64::MAX);
        assert_eq!(stalls.len(), 2);
        assert_eq!(stalls[0].start_ns, T0);
        assert!((stalls[0].duration_ms - 30.0).abs() < 0.01);
    }

    #[test]
    fn a_bh_off_stall_is_measured_by_softirq_delay_and_blamed_on_the_holder_sample() {
        let mut asm = Assembler::new(0);
        asm.push(KernelEvent::SoftirqDelay {
            cpu: 0,
            blocked_ns: T0,
            raise_ns: T0 + 4 * MS,
            entry_ns: T0 + 50 * MS + 300_000,
            drained_by: task("ksoftirqd/0", 15),
            holder: Some(Holder {
                task: task("swapper/0", 0),
                ts_ns: T0 + 8 * MS,
                softirq: Some("TIMER"),
                kstack: stack(&["bpf_loop", "handle_softirqs"]),
            }),
        });
        asm.push(KernelEvent::Ksoftirqd {
            cpu: 0,
            blocked_ns: T0,
            switch_ns: T0 + 50 * MS + 100_000,
            prev: task("swapper/0", 0),
            ksoftirqd: task("ksoftirqd/0", 15),
        });
        asm.push(KernelEvent::RxBatch {
            cpu: 0,
            first_enqueue_ns: T0 + 4 * MS,
            drained_ns: T0 + 51 * MS,
            packets: 5,
            max_wait_ns: 46 * MS,
            drained_by: task("ksoftirqd/0", 15),
        });
        let stalls = asm.drain(u64::MAX);
        assert_eq!(stalls.len(), 1);
        let s = &stalls[0];
        assert_eq!(s.detector, Detector::SoftirqDelay);
        assert_eq!(s.start_ns, T0);
        assert!((s.duration_ms - 50.3).abs() < 0.01);
        assert_eq!(s.packets, Some(5));
        assert_eq!(s.max_wait_ms, Some(46.0));
        let c = s.culprit.as_ref().unwrap();
        assert_eq!(c.context.as_deref(), Some("softirq TIMER"));
        assert_eq!(c.syscall, None);
    }

    #[test]
    fn backlog_only_stall_is_as_long_as_the_longest_wait() {
        let mut asm = Assembler::new(0);
        asm.push(KernelEvent::RxBatch {
            cpu: 1,
            first_enqueue_ns: T0,
            drained_ns: T0 + 30 * MS,
            packets: 3,
            max_wait_ns: 29 * MS,
            drained_by: task("iperf3", 77),
        });
        let s = &asm.drain(u64::MAX)[0];
        assert_eq!(s.detector, Detector::RxBacklog);
        assert_eq!(s.duration_ms, 29.0);
        assert_eq!(s.drained_by.as_deref(), Some("iperf3[77]"));
        assert!(s.culprit.is_none());
    }

    #[test]
    fn a_cpu_stalled_back_to_back_keeps_bounded_evidence() {
        let mut asm = Assembler::new(0);
        for i in 0..(MAX_EVENTS_PER_STALL as u64 + 100) {
            asm.push(KernelEvent::TickGap {
                cpu: 0,
                start_ns: T0 + i * MS,
                end_ns: T0 + i * MS + 20 * MS,
                task: task("x", 1),
                syscall: None,
                kstack: vec![],
            });
        }
        assert_eq!(asm.open[0].events.len(), MAX_EVENTS_PER_STALL);
        let stalls = asm.drain(u64::MAX);
        assert_eq!(stalls.len(), 1);
        assert_eq!(stalls[0].detector, Detector::IrqsOff);
    }

    #[test]
    fn icmp_and_unmatched_syscalls_make_no_stall() {
        let mut asm = Assembler::new(0);
        asm.push(KernelEvent::IcmpEcho {
            cpu: 0,
            seq: 1,
            id: 2,
            task: task("ping", 3),
            ts_ns: T0,
        });
        asm.push(memory_stat_flush().pop().unwrap());
        assert!(asm.drain(u64::MAX).is_empty());
    }
}
