//! The test-only injector of non-preemptible kernel sections (`netstall lab
//! nosched`, `src/bpf/nosched.bpf.c`): a thread pinned to one CPU runs a BPF
//! busy-wait inside its bpf() syscall, while a second thread on the same
//! CPU stays runnable and waits. On a PREEMPT_NONE kernel that is a real
//! "a runnable task waited while the CPU stayed in one task's kernel code".

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{OpenObject, ProgramInput};
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
pub use netstall_events::lab::LabNosched;

use crate::skel::nosched::NoschedSkelBuilder;

/// The longest section the injector agrees to make (short of RCU's and the
/// soft-lockup watchdog's warnings).
pub const MAX_SPIN: Duration = Duration::from_millis(500);
/// An injection longer than this is a mistake, not an experiment.
pub const MAX_FOR: Duration = Duration::from_secs(3600);

/// `netstall lab nosched`'s arguments.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    sudo netstall lab nosched --cpu 0 --ms 50 -w 30s        50 ms every second\n  \
    sudo netstall trace                                   shows each as `nonpreemptible`")]
pub struct Args {
    /// CPU to hold.
    #[arg(long)]
    pub cpu: u32,
    /// Length of each section in milliseconds (1-500).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=500))]
    pub ms: u64,
    /// Time between sections.
    #[arg(long, default_value = "1s", value_parser = netstall_core::duration::parse_nonzero)]
    pub every: Duration,
    /// How long to keep injecting.
    #[arg(short = 'w', long = "duration", value_parser = netstall_core::duration::parse_nonzero)]
    pub duration: Duration,
}

/// Runs the injection (until `duration` or Ctrl-C), prints and returns what it did.
pub fn run_printed(args: &Args, out: Output) -> Result<LabNosched> {
    let spin = Duration::from_millis(args.ms);
    if spin > MAX_SPIN || args.every <= spin || args.duration > MAX_FOR {
        bail!(
            "--ms must be at most {} and shorter than --every; -w at most {}s",
            MAX_SPIN.as_millis(),
            MAX_FOR.as_secs()
        );
    }
    crate::require_bpf("lab nosched")?;
    netstall_core::cpu::check_online(&[args.cpu])?;
    let shutdown = Shutdown::on_signals()?;
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let skel = NoschedSkelBuilder::default()
        .open(&mut storage)
        .context("open the nosched BPF object")?
        .load()
        .context("load the nosched BPF program (needs BPF_PROG_TYPE_SYSCALL)")?;
    out.progress(format!(
        "holding CPU {} in kernel code for {} ms every {:?} during {:?}, with a task waiting; Ctrl-C ends early",
        args.cpu, args.ms, args.every, args.duration
    ));
    let start_ns = netstall_core::clock::realtime_ns();
    let done = AtomicBool::new(false);
    let sections = std::thread::scope(|scope| -> Result<u32> {
        // The task that waits: runnable on the same CPU all along.
        let waiter = std::thread::Builder::new()
            .name("nosched-waiter".into())
            .spawn_scoped(scope, || -> Result<()> {
                netstall_core::sys::pin_to_cpu(args.cpu)?;
                while !done.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
                Ok(())
            })?;
        let held = (|| -> Result<u32> {
            netstall_core::sys::pin_to_cpu(args.cpu)?;
            let deadline = Instant::now() + args.duration;
            let mut sections = 0;
            while Instant::now() < deadline && !shutdown.is_requested() {
                let mut ctx = (spin.as_nanos() as u64).to_ne_bytes();
                skel.progs
                    .spin_in_syscall
                    .test_run(ProgramInput {
                        context_in: Some(&mut ctx),
                        ..ProgramInput::default()
                    })
                    .context("run the nosched program (bpf BPF_PROG_TEST_RUN)")?;
                sections += 1;
                let left = deadline.saturating_duration_since(Instant::now());
                if shutdown.wait(left.min(args.every - spin)) {
                    break;
                }
            }
            Ok(sections)
        })();
        done.store(true, Ordering::Relaxed);
        waiter
            .join()
            .map_err(|_| anyhow::anyhow!("the waiting thread panicked"))??;
        held
    })?;
    let report = LabNosched {
        cpu: args.cpu,
        ms: args.ms,
        sections,
        start_ns,
        end_ns: netstall_core::clock::realtime_ns(),
    };
    out.emit(report.clone());
    Ok(report)
}
