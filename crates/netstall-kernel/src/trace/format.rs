//! One-line text for people: stalls, ICMP echo rows (the story's bcc table),
//! slow syscalls.

use netstall_events::kernel::{Culprit, IcmpEcho, SlowSyscall, Stall, Steal};

use crate::stack;

/// Frames shown in a stall's line (the JSON carries the whole stack).
pub const FRAMES_SHOWN: usize = 5;

/// `STEAL cpu=0 25.3 ms stolen by the hypervisor in 26.1 ms`
pub fn steal_line(steal: &Steal) -> String {
    format!(
        "STEAL cpu={} {:.1} ms stolen by the hypervisor in {:.1} ms",
        steal.cpu,
        steal.steal_ms,
        steal.end_ns.saturating_sub(steal.start_ns) as f64 / 1e6
    )
}

/// `STALL cpu=1 irqs-off 117.2 ms, 12 packets waited, drained by ksoftirqd/1;
/// culprit kubelet[4242] read(/sys/…/memory.stat) 118 ms: css_rstat_flush ← …`
pub fn stall_line(stall: &Stall) -> String {
    let mut line = format!(
        "STALL cpu={} {} {:.1} ms",
        stall.cpu,
        stall.detector.name(),
        stall.duration_ms
    );
    let others: Vec<&str> = stall
        .seen_by
        .iter()
        .filter(|d| **d != stall.detector)
        .map(|d| d.name())
        .collect();
    if !others.is_empty() {
        line += &format!(" (also {})", others.join(", "));
    }
    if let Some(n) = stall.packets {
        let plural = if n == 1 { "" } else { "s" };
        line += &format!(", {n} packet{plural} waited");
        if let Some(w) = stall.max_wait_ms {
            line += &format!(" (max {w:.1} ms)");
        }
    }
    if let Some(by) = &stall.drained_by {
        line += &format!(", drained by {by}");
    }
    if let Some(c) = &stall.culprit {
        line += &format!("; culprit {}", culprit_text(c));
    }
    line
}

fn culprit_text(c: &Culprit) -> String {
    let who = if c.pid == 0 || c.comm.contains('/') {
        c.comm.clone()
    } else {
        format!("{}[{}]", c.comm, c.pid)
    };
    let mut text = who;
    if let Some(ctx) = &c.context {
        text += &format!(" in {ctx}");
    }
    if let Some(sc) = &c.syscall {
        text += &format!(" {sc}({})", c.path.as_deref().unwrap_or(""));
        if let Some(ms) = c.syscall_ms {
            text += &format!(" {ms:.0} ms");
        }
    }
    if let Some(cg) = &c.cgroup {
        text += &format!(" cgroup={cg}");
    }
    let frames = stack::meaningful_frames(&c.kstack, FRAMES_SHOWN);
    if !frames.is_empty() {
        text += ": ";
        text += &stack::line(&frames);
    }
    text
}

/// The header of the ICMP table.
pub const ICMP_HEADER: &str = "TGID    PID     COMM             ICMP_SEQ  ICMP_ID  CPU";

/// One row of the ICMP table; deferred processing is marked.
pub fn icmp_row(icmp: &IcmpEcho) -> String {
    format!(
        "{:<7} {:<7} {:<16} {:<9} {:<8} {}{}",
        icmp.pid,
        icmp.tid,
        icmp.comm,
        icmp.seq,
        icmp.id,
        icmp.cpu,
        if icmp.ksoftirqd { "  <- ksoftirqd" } else { "" }
    )
}

/// `SYSCALL cadvisor[42] read(/sys/…/memory.stat) 25.3 ms = 889 cpu=1`
pub fn syscall_line(s: &SlowSyscall) -> String {
    format!(
        "SYSCALL {}[{}] {}({}) {:.1} ms = {} cpu={}",
        s.comm,
        s.pid,
        s.syscall,
        s.path.as_deref().unwrap_or(""),
        s.duration_ms,
        s.ret,
        s.cpu
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstall_events::kernel::Detector;

    fn stall() -> Stall {
        Stall {
            detector: Detector::IrqsOff,
            cpu: 1,
            start_ns: 1,
            duration_ms: 117.24,
            seen_by: vec![Detector::IrqsOff, Detector::RstatHold, Detector::RxBacklog],
            packets: Some(12),
            max_wait_ms: Some(116.0),
            drained_by: Some("ksoftirqd/1".into()),
            culprit: Some(Culprit {
                comm: "kubelet".into(),
                pid: 4242,
                tid: 4242,
                syscall: Some("read".into()),
                path: Some("/sys/fs/cgroup/memory/memory.stat".into()),
                syscall_ms: Some(118.2),
                cgroup: None,
                context: None,
                kstack: [
                    "_raw_spin_unlock_irq",
                    "css_rstat_flush",
                    "memcg1_stat_format",
                    "memory_stat_show",
                    "seq_read_iter",
                    "vfs_read",
                    "ksys_read",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            }),
            node: None,
        }
    }

    #[test]
    fn stall_line_reads_like_the_story() {
        assert_eq!(
            stall_line(&stall()),
            "STALL cpu=1 irqs-off 117.2 ms (also rstat-hold, rx-backlog), 12 packets waited \
             (max 116.0 ms), drained by ksoftirqd/1; culprit kubelet[4242] \
             read(/sys/fs/cgroup/memory/memory.stat) 118 ms: css_rstat_flush ← \
             memcg1_stat_format ← memory_stat_show ← seq_read_iter ← vfs_read"
        );
    }

    #[test]
    fn stall_without_packets_or_culprit_is_short() {
        let mut s = stall();
        s.seen_by = vec![Detector::IrqsOff];
        s.packets = None;
        s.drained_by = None;
        s.culprit = None;
        assert_eq!(stall_line(&s), "STALL cpu=1 irqs-off 117.2 ms");
    }

    #[test]
    fn icmp_rows_mark_ksoftirqd() {
        let mut e = IcmpEcho {
            seq: 770,
            id: 9,
            cpu: 11,
            comm: "ksoftirqd/11".into(),
            pid: 64,
            tid: 64,
            ksoftirqd: true,
            ts_ns: 0,
        };
        assert!(icmp_row(&e).ends_with("11  <- ksoftirqd"));
        assert!(icmp_row(&e).starts_with("64      64      ksoftirqd/11     770"));
        e.ksoftirqd = false;
        assert!(icmp_row(&e).ends_with(" 11"));
    }
}
