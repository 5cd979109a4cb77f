//! Kernel stacks as netstall keeps and shows them: one frame order, one set
//! of rules for plumbing frames, one way to write an unknown frame, and
//! netstall's own BPF frames taken out.
//!
//! **Order: innermost frame first.** Index 0 is where the CPU was (the leaf),
//! each next frame its caller, as the kernel hands stacks out
//! (`bpf_get_stack`, perf call chains). Every stack netstall keeps is in
//! this order: the tracer's `culprit.kstack`, xray's samples, the doctor's
//! evidence. The folded form of flame graphs (root first) is made from it
//! only when printed ([`folded`]).
//!
//! **Frames** are function names as kallsyms has them, without offsets;
//! [`frame_name`] also copes with `name+0x1f` and `name [module]`. An
//! address no symbol covers is written by [`unknown_frame`], the way
//! `stackcollapse-perf --addrs` writes it.
//!
//! **netstall's own frames.** A stack taken by the tracer starts inside the
//! tracer's BPF program that took it, under the tracepoint dispatch
//! (recorded here: `bpf_prog_…_on_rstat_unlock ← bpf_trace_run3 ←
//! css_rstat_flush ← …`; a sample can land in one: `bpf_prog_…_on_netif_rx ←
//! bpf_trace_run1 ← __traceiter_netif_rx ← netif_rx_internal`). Those frames
//! say nothing about the culprit;
//! [`strip_own`] removes them at the source and the display helpers skip
//! them too. Only the observers' functions ([`OWN_BPF_FUNCTIONS`], checked
//! against the BPF objects by a test) count as own: the lab's stall
//! injector (`spin_in_softirq`) is netstall's too, but it is the culprit by
//! design and stays.

/// How frames are joined on one line: each frame is called by the next.
pub const ARROW: &str = " ← ";

/// The BPF functions of netstall's observers (the tracer and the cgroup
/// watcher) that can be on a kernel stack: their programs and `bpf_loop`
/// callbacks. A test in netstall-kernel checks this list against the programs in the BPF
/// objects, so a new program cannot be forgotten.
pub const OWN_BPF_FUNCTIONS: &[&str] = &[
    // trace.bpf.c
    "on_netif_rx",
    "on_napi_gro_receive_entry",
    "on_netif_receive_skb_entry",
    "on_netif_receive_skb_list_entry",
    "on_netif_receive_skb",
    "on_softirq_raise",
    "on_softirq_entry",
    "on_softirq_exit",
    "on_local_timer_entry",
    "on_local_timer_exit",
    "on_sched_switch",
    "on_rstat_locked",
    "on_rstat_unlock",
    "on_memcg_flush_stats",
    "on_sys_enter",
    "on_sys_exit",
    "on_icmp_consume",
    "path_step",
    // cgwatch.bpf.c
    "on_cgroup_mkdir",
    "on_cgroup_rmdir",
    "on_cgroup_release",
];

/// Frames that say how the CPU got somewhere, not what held it (name
/// prefixes): lock primitives, interrupt and softirq entry and exit, the
/// syscall entry, kernel thread start, tracepoint dispatch, scheduling
/// points and idle. A stack is named by its first frame that is none of
/// these ([`naming_frame`]).
const PLUMBING: &[&str] = &[
    // lock primitives (where IRQs come back on, not who kept them off)
    "_raw_spin_",
    "_raw_read_",
    "_raw_write_",
    "__css_rstat_unlock",
    // interrupts and softirqs
    "__local_bh_enable",
    "handle_softirqs",
    "__do_softirq",
    "do_softirq",
    "irq_exit",
    "__irq_exit_rcu",
    "irq_exit_rcu",
    "sysvec_",
    "__sysvec_",
    "asm_",
    "common_interrupt",
    "trace_softirq",
    // kernel threads
    "run_ksoftirqd",
    "smpboot_thread_fn",
    "kthread",
    "ret_from_fork",
    // the syscall entry
    "entry_SYSCALL",
    "do_syscall_64",
    "x64_sys_call",
    // tracepoint and BPF dispatch
    "bpf_loop",
    "bpf_trace_run",
    "__bpf_trace",
    "__traceiter",
    // scheduling points, idle
    "__cond_resched",
    "preempt_schedule",
    "native_",
    "default_idle",
    "cpu_idle",
    "do_idle",
];

/// How an address that no symbol covers is written: `[unknown <ffffffffc0a01234>]`.
pub fn unknown_frame(addr: u64) -> String {
    format!("[unknown <{addr:x}>]")
}

/// Whether a frame is an address no symbol covered ([`unknown_frame`]).
pub fn is_unknown(frame: &str) -> bool {
    frame.starts_with("[unknown")
}

/// The function name of a frame: `css_rstat_flush+0x2bb` → `css_rstat_flush`.
pub fn frame_name(frame: &str) -> &str {
    if is_unknown(frame) {
        return frame;
    }
    frame.split(['+', ' ']).next().unwrap_or(frame)
}

/// The name of a BPF program's frame, its tag dropped:
/// `bpf_prog_4a0c1b2d3e4f5a6b_spin_in_softirq` → `spin_in_softirq`
/// (empty for a program without a name). `None` for other frames.
pub fn bpf_program(frame: &str) -> Option<&str> {
    let rest = frame_name(frame).strip_prefix("bpf_prog_")?;
    let (tag, name) = rest.split_at(rest.len().min(16));
    if tag.len() < 16 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(rest);
    }
    Some(name.strip_prefix('_').unwrap_or(name))
}

/// Whether a frame is one of netstall's observers' BPF functions.
pub fn is_own_bpf(frame: &str) -> bool {
    bpf_program(frame).is_some_and(|name| OWN_BPF_FUNCTIONS.contains(&name))
}

/// The tracepoint machinery that calls a BPF program.
fn is_dispatch(frame: &str) -> bool {
    let name = frame_name(frame);
    name.starts_with("bpf_trace_run")
        || name.starts_with("__bpf_trace")
        || name.starts_with("__traceiter")
}

/// Whether a frame says how the CPU got somewhere rather than what it did
/// (see [`PLUMBING`]); unknown frames say nothing either.
pub fn is_plumbing(frame: &str) -> bool {
    let name = frame_name(frame);
    is_unknown(name) || PLUMBING.iter().any(|p| name.starts_with(p))
}

/// How many innermost frames are netstall's own: its outermost own BPF
/// function, everything that function called, and the tracepoint dispatch
/// that called it. Own frames are only ever innermost: netstall's programs
/// run at a tracepoint and call nothing else's.
fn own_prefix(stack: &[impl AsRef<str>]) -> usize {
    let Some(outermost) = stack.iter().rposition(|f| is_own_bpf(f.as_ref())) else {
        return 0;
    };
    let mut end = outermost + 1;
    while stack.get(end).is_some_and(|f| is_dispatch(f.as_ref())) {
        end += 1;
    }
    end
}

/// The stack without netstall's own frames (a suffix of it).
pub fn without_own<S: AsRef<str>>(stack: &[S]) -> &[S] {
    &stack[own_prefix(stack)..]
}

/// Removes netstall's own frames from a stack, at its source.
pub fn strip_own(mut stack: Vec<String>) -> Vec<String> {
    stack.drain(..own_prefix(&stack));
    stack
}

/// An interrupt's entry frame: what is under it was interrupted.
pub fn is_interrupt_entry(frame: &str) -> bool {
    let name = frame_name(frame);
    name.starts_with("asm_sysvec_") || name.starts_with("asm_common_interrupt")
}

/// Nothing under the (innermost) interrupt entry: the interrupt came from
/// user mode.
pub fn interrupted_user_mode(stack: &[String]) -> bool {
    stack
        .iter()
        .position(|f| is_interrupt_entry(f))
        .is_some_and(|i| i + 1 == stack.len())
}

/// A stack taken in an interrupt handler starts with the handler and the
/// interrupt entry; what matters is the interrupted code under them (for a
/// timer tick after an IRQs-off section: where IRQs came back on). Only the
/// innermost interrupt is cut: the code under it may itself run at an
/// outer interrupt's exit (a softirq).
pub fn strip_interrupt_frames(stack: Vec<String>) -> Vec<String> {
    match stack.iter().position(|f| is_interrupt_entry(f)) {
        Some(entry) if entry + 1 < stack.len() => stack[entry + 1..].to_vec(),
        _ => stack,
    }
}

/// Running in softirq processing: the kernel's softirq loop is on the stack.
pub fn in_softirq(stack: &[impl AsRef<str>]) -> bool {
    stack
        .iter()
        .any(|f| matches!(frame_name(f.as_ref()), "handle_softirqs" | "__do_softirq"))
}

/// The frame that names a stack: the BPF program that ran, if one did (its
/// outermost frame: inner ones are its callbacks), else the first frame that
/// is not plumbing. netstall's own frames never name a stack.
pub fn naming_frame<S: AsRef<str>>(stack: &[S]) -> Option<&str> {
    let stack = without_own(stack);
    stack
        .iter()
        .rfind(|f| bpf_program(f.as_ref()).is_some())
        .or_else(|| stack.iter().find(|f| !is_plumbing(f.as_ref())))
        .map(|f| frame_name(f.as_ref()))
}

/// Up to `count` frame names from the innermost, netstall's own left out:
/// where the CPU was, plumbing included (after an IRQs-off gap, the
/// `_raw_spin_unlock_irq` on top is the evidence).
pub fn top_frames<S: AsRef<str>>(stack: &[S], count: usize) -> Vec<&str> {
    without_own(stack)
        .iter()
        .take(count)
        .map(|f| frame_name(f.as_ref()))
        .collect()
}

/// Up to `count` frame names from the first that says what the code was
/// doing: the lock primitives and entry code on top say nothing about a
/// culprit. netstall's own frames are left out.
pub fn meaningful_frames<S: AsRef<str>>(stack: &[S], count: usize) -> Vec<&str> {
    let stack = without_own(stack);
    let first = stack
        .iter()
        .position(|f| !is_plumbing(f.as_ref()))
        .unwrap_or(0);
    stack[first..]
        .iter()
        .take(count)
        .map(|f| frame_name(f.as_ref()))
        .collect()
}

/// Frames on one line, innermost first: `css_rstat_flush ← memcg1_stat_format ← …`.
pub fn line(frames: &[&str]) -> String {
    frames.join(ARROW)
}

/// The folded (flame graph) form of a stack: root first, `;`-separated.
pub fn folded<S: AsRef<str>>(stack: &[S]) -> String {
    let mut out = String::new();
    for (i, frame) in stack.iter().rev().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(frame.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// The culprit's stack of an rstat-hold stall as the tracer recorded it
    /// on this machine (kernel 6.18, `lab zombies` + `lab poller`), before
    /// it removed its own frames.
    fn rstat_hold_recorded() -> Vec<String> {
        frames(&[
            "bpf_prog_a46d9c3b8a1480cb_on_rstat_unlock",
            "bpf_trace_run3",
            "css_rstat_flush",
            "memcg1_stat_format",
            "memory_stat_show",
            "seq_read_iter",
            "vfs_read",
            "ksys_read",
            "do_syscall_64",
            "entry_SYSCALL_64_after_hwframe",
        ])
    }

    /// A tick after an IRQs-off section, taken by the tracer's timer
    /// program: the interrupt frames as this kernel names them, over the
    /// recorded rstat flush.
    fn tick_gap_recorded() -> Vec<String> {
        frames(&[
            "bpf_prog_9f3a51c0d2e4b687_on_local_timer_exit",
            "bpf_trace_run1",
            "__sysvec_apic_timer_interrupt",
            "sysvec_apic_timer_interrupt",
            "asm_sysvec_apic_timer_interrupt",
            "_raw_spin_unlock_irq",
            "css_rstat_flush",
            "memcg1_stat_format",
        ])
    }

    /// The lab's stall injector, as the tracer recorded it inside its
    /// busy-wait here (the doctor's tests use the same stack).
    fn spinner_recorded() -> Vec<String> {
        frames(&[
            "read_tsc",
            "bpf_prog_e9fddd7885dc0d56_wait_until",
            "bpf_loop",
            "bpf_prog_4a0c1b2d3e4f5a6b_spin_in_softirq",
            "bpf_trace_run1",
            "handle_softirqs",
            "irq_exit_rcu",
            "sysvec_apic_timer_interrupt",
        ])
    }

    #[test]
    fn the_tracers_own_frames_are_removed() {
        let stack = strip_own(rstat_hold_recorded());
        assert_eq!(stack[0], "css_rstat_flush");
        assert!(!stack
            .iter()
            .any(|f| is_own_bpf(f) || f.contains("bpf_trace")));

        let tick = strip_own(tick_gap_recorded());
        assert_eq!(tick[0], "__sysvec_apic_timer_interrupt");
        assert_eq!(
            strip_interrupt_frames(tick),
            frames(&[
                "_raw_spin_unlock_irq",
                "css_rstat_flush",
                "memcg1_stat_format"
            ])
        );
    }

    #[test]
    fn the_injectors_frames_stay_and_name_the_stack() {
        let spinner = spinner_recorded();
        assert_eq!(strip_own(spinner.clone()), spinner);
        assert_eq!(
            naming_frame(&spinner),
            Some("bpf_prog_4a0c1b2d3e4f5a6b_spin_in_softirq")
        );
    }

    #[test]
    fn no_display_helper_shows_own_frames() {
        let stack = rstat_hold_recorded();
        for shown in [
            top_frames(&stack, 40),
            meaningful_frames(&stack, 40),
            naming_frame(&stack).into_iter().collect(),
        ] {
            assert!(
                !shown
                    .iter()
                    .any(|f| f.starts_with("bpf_") || f.starts_with("__bpf")),
                "{shown:?}"
            );
        }
        assert_eq!(naming_frame(&stack), Some("css_rstat_flush"));
    }

    #[test]
    fn a_sample_in_the_tracers_packet_hook_keeps_the_packets_path() {
        // Recorded here: an xray sample that landed in the tracer's netif_rx
        // program (its dispatch on 6.18 includes `__traceiter_netif_rx`).
        let stack = strip_own(frames(&[
            "bpf_prog_1026bdf4002a19c5_on_netif_rx",
            "bpf_trace_run1",
            "__traceiter_netif_rx",
            "netif_rx_internal",
            "__netif_rx",
            "veth_xmit",
        ]));
        assert_eq!(stack, ["netif_rx_internal", "__netif_rx", "veth_xmit"]);
        // An LSM trampoline's frame is not netstall's: it stays.
        let lsm = frames(&["__bpf_prog_enter_recur", "do_prlimit"]);
        assert_eq!(strip_own(lsm.clone()), lsm);
    }

    #[test]
    fn a_stack_that_is_all_own_frames_becomes_empty() {
        let stack = frames(&["bpf_prog_0123456789abcdef_on_sched_switch"]);
        assert!(strip_own(stack).is_empty());
    }

    #[test]
    fn plumbing_is_skipped_when_naming_and_summarizing() {
        let stack = frames(&[
            "_raw_spin_unlock_irq+0x1d",
            "handle_softirqs+0x10",
            "mlx5e_napi_poll+0x30",
            "net_rx_action",
        ]);
        assert_eq!(naming_frame(&stack), Some("mlx5e_napi_poll"));
        assert_eq!(meaningful_frames(&stack, 1), ["mlx5e_napi_poll"]);
        assert_eq!(
            top_frames(&stack, 2),
            ["_raw_spin_unlock_irq", "handle_softirqs"]
        );
        // Nothing but plumbing: shown from the top, named by nothing.
        let entry = frames(&["do_syscall_64", "entry_SYSCALL_64_after_hwframe"]);
        assert_eq!(naming_frame(&entry), None);
        assert_eq!(
            meaningful_frames(&entry, 5),
            ["do_syscall_64", "entry_SYSCALL_64_after_hwframe"]
        );
    }

    #[test]
    fn unknown_frames_are_written_one_way_and_are_plumbing() {
        let frame = unknown_frame(0xffff_ffff_c0a0_1234);
        assert_eq!(frame, "[unknown <ffffffffc0a01234>]");
        assert!(is_unknown(&frame) && is_plumbing(&frame));
        assert_eq!(frame_name(&frame), frame);
        let stack = vec![frame, "vfs_read".to_string()];
        assert_eq!(meaningful_frames(&stack, 3), ["vfs_read"]);
    }

    #[test]
    fn bpf_program_names_drop_the_tag() {
        assert_eq!(
            bpf_program("bpf_prog_0123456789abcdef_x_y+0x3c"),
            Some("x_y")
        );
        assert_eq!(bpf_program("bpf_prog_0123456789abcdef"), Some(""));
        assert_eq!(bpf_program("bpf_prog_odd"), Some("odd"));
        assert_eq!(bpf_program("bpf_loop"), None);
    }

    #[test]
    fn softirq_context_and_user_mode_interrupts() {
        assert!(in_softirq(&spinner_recorded()));
        assert!(!in_softirq(&rstat_hold_recorded()));
        let from_user = strip_own(frames(&[
            "bpf_prog_9f3a51c0d2e4b687_on_local_timer_exit",
            "bpf_trace_run1",
            "__sysvec_apic_timer_interrupt",
            "asm_sysvec_apic_timer_interrupt",
        ]));
        assert!(interrupted_user_mode(&from_user));
        assert!(!interrupted_user_mode(&strip_own(tick_gap_recorded())));
    }

    #[test]
    fn folded_is_root_first_and_line_innermost_first() {
        let stack = frames(&["leaf", "mid", "root"]);
        assert_eq!(folded(&stack), "root;mid;leaf");
        assert_eq!(line(&top_frames(&stack, 2)), "leaf ← mid");
    }
}
