//! The test-only stall injector: a bounded BPF busy-wait inside a non-NET_RX
//! softirq on one CPU (see `src/bpf/spin.bpf.c`).

use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{OpenObject, RingBufferBuilder};
use netstall_core::clock::ClockOffset;
use netstall_core::output::Output;

use crate::skel::spin::{types::spin_event, SpinSkelBuilder};
pub use netstall_events::kernel::InjectedStall;

/// The longest single stall the injector agrees to make: long enough for
/// every scenario in the story, short of the kernel's RCU stall warnings.
pub const MAX_SPIN: Duration = Duration::from_millis(1000);

/// What to inject.
#[derive(Debug, Clone)]
pub struct SpinConfig {
    pub cpu: u32,
    pub spin: Duration,
    pub every: Duration,
    pub duration: Duration,
}

/// [`run`], telling on stderr what it injects and how many, and printing
/// every stall it makes.
pub fn run_printed(config: &SpinConfig, out: Output) -> Result<Vec<InjectedStall>> {
    out.progress(format!(
        "stalling CPU {} for {} ms every {:?} during {:?}",
        config.cpu,
        config.spin.as_millis(),
        config.every,
        config.duration
    ));
    let stalls = run(config, |stall| out.emit(*stall))?;
    out.progress(format!("{} stalls injected", stalls.len()));
    Ok(stalls)
}

/// Loads the injector, calls `on_stall` for every stall it makes, and
/// detaches after `config.duration`. Returns all stalls made.
pub fn run(
    config: &SpinConfig,
    mut on_stall: impl FnMut(&InjectedStall),
) -> Result<Vec<InjectedStall>> {
    if config.spin.is_zero() || config.spin > MAX_SPIN {
        bail!(
            "spin length must be between 1ms and {}ms",
            MAX_SPIN.as_millis()
        );
    }
    if config.every <= config.spin {
        bail!("--every must be longer than the stall itself (--ms)");
    }
    crate::require_bpf("lab spin")?;
    netstall_core::cpu::check_online(&[config.cpu])?;

    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let mut open = SpinSkelBuilder::default()
        .open(&mut storage)
        .context("open the spin BPF object")?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("spin BPF object has no .rodata")?;
    rodata.target_cpu = config.cpu;
    rodata.spin_ns = config.spin.as_nanos() as u64;
    rodata.period_ns = config.every.as_nanos() as u64;
    let mut skel = open
        .load()
        .context("load the spin BPF program (needs tp_btf/softirq_entry)")?;
    skel.attach().context("attach tp_btf/softirq_entry")?;

    let offset = ClockOffset::sample();
    let stalls = std::cell::RefCell::new(Vec::new());
    let mut builder = RingBufferBuilder::new();
    builder.add(&skel.maps.spins, |data: &[u8]| {
        if data.len() >= std::mem::size_of::<spin_event>() {
            // SAFETY: the ring buffer record is a `struct spin_event` written by the
            // BPF program; read_unaligned copes with any alignment.
            let raw: spin_event = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
            let (start_ns, end_ns) = (
                offset.to_realtime(raw.start_ns),
                offset.to_realtime(raw.end_ns),
            );
            let stall = InjectedStall {
                cpu: raw.cpu,
                start_ns,
                end_ns,
                duration_ms: end_ns.saturating_sub(start_ns) as f64 / 1e6,
                vec: raw.vec,
            };
            on_stall(&stall);
            stalls.borrow_mut().push(stall);
        }
        0
    })?;
    let ring = builder.build()?;
    let deadline = Instant::now() + config.duration;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        ring.poll(left.min(Duration::from_millis(100)))?;
    }
    ring.consume()?;
    drop(ring);
    drop(skel);
    Ok(stalls.into_inner())
}
