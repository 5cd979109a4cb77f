//! Live sampling against injected stalls (needs root; holds the machine lock).

use std::thread;
use std::time::Duration;

use netstall_core::shutdown::Shutdown;
use netstall_kernel::spin::{self, SpinConfig};
use netstall_testkit::{privileged, MachineLock};
use netstall_xray::sampler::{self, SamplerConfig};
use netstall_xray::timeline::{self, GapKind, StallRules, Trigger};

/// `lab spin` busy-waits 50 ms inside a softirq with IRQs on, so cpu-clock
/// samples keep landing, all of them inside softirq processing: each stall
/// is a ~50 ms softirq run, found where the injector says it was.
#[test]
fn injected_50ms_stalls_are_found_with_the_samples_before_them() {
    if !privileged("injected_50ms_stalls_are_found_with_the_samples_before_them") {
        return;
    }
    let _lock = MachineLock::acquire();
    let config = SamplerConfig {
        cpus: vec![0],
        frequency: 999,
    };
    let stop = Shutdown::new().unwrap();
    let (recording, injected) = thread::scope(|scope| {
        let sampling = scope.spawn(|| sampler::record(&config, Duration::from_millis(3600), &stop));
        thread::sleep(Duration::from_millis(400));
        let spin = SpinConfig {
            cpu: 0,
            spin: Duration::from_millis(50),
            every: Duration::from_secs(1),
            duration: Duration::from_millis(2600),
        };
        let injected = spin::run(&spin, |_| {}).expect("inject stalls");
        let recording = sampling.join().expect("sampler thread").expect("sampling");
        (recording, injected)
    });
    assert!(injected.len() >= 2, "{injected:?}");
    let samples = &recording.samples;
    // 3,600 expected; a busy or overcommitted host (stolen vCPU time is
    // not cpu-clock time) loses some, and the test does not need them all.
    assert!(
        samples.len() > 1800,
        "{} samples in 3.6 s at 999 Hz",
        samples.len()
    );
    assert!(
        samples.windows(2).all(|w| w[0].time_ns <= w[1].time_ns),
        "time order"
    );

    let stalls = timeline::gaps(samples, StallRules::for_frequency(999));
    for stall in &injected {
        let found = stalls
            .iter()
            .find(|s| {
                s.kind == GapKind::Softirq
                    && s.cpu == 0
                    && s.start_ns.abs_diff(stall.start_ns) < 5_000_000
            })
            .unwrap_or_else(|| panic!("injected {stall:?} not found in {stalls:?}"));
        // Wide margins: sample spacing (1 ms) and a loaded CI host.
        assert!(
            (40.0..=65.0).contains(&found.duration_ms),
            "a 50 ms stall measured as {} ms",
            found.duration_ms
        );
        // The samples inside the stall are in the softirq that spins (a
        // few land in the BPF program where the kernel stack does not unwind).
        let inside: Vec<_> = samples[found.first..=found.last]
            .iter()
            .filter(|s| s.cpu == 0)
            .collect();
        let outside = inside
            .iter()
            .filter(|s| !s.in_softirq() && !s.kernel_stack_truncated())
            .count();
        assert_eq!(
            outside, 0,
            "samples of the stall outside softirq: {found:?}"
        );
        let unwound = inside.iter().filter(|s| s.in_softirq()).count();
        assert!(
            unwound * 10 >= inside.len() * 6,
            "{unwound} of {} samples in the stall unwound into the softirq",
            inside.len()
        );
    }
    let windows = timeline::windows(samples, &stalls, Trigger::Stall, 100);
    for window in windows.iter().filter(|w| {
        injected
            .iter()
            .any(|i| i.start_ns.abs_diff(w.at_ns) < 5_000_000)
    }) {
        assert_eq!(
            window.samples.len(),
            101,
            "100 samples before, and the first of the stall"
        );
        let before = &samples[window.samples[0]];
        let span_ms = (window.at_ns - before.time_ns) as f64 / 1e6;
        assert!(
            (80.0..=250.0).contains(&span_ms),
            "100 samples at 999 Hz span {span_ms} ms"
        );
    }
}

/// Timestamps only (what `top` uses for sample gaps): every CPU's samples
/// keep coming at the asked rate, with no stacks to name.
#[test]
fn record_times_samples_every_cpu_without_stacks() {
    if !privileged("record_times_samples_every_cpu_without_stacks") {
        return;
    }
    let cpus = netstall_core::cpu::online().unwrap();
    let config = SamplerConfig {
        cpus: cpus.clone(),
        frequency: 199,
    };
    // cpu-clock samples a CPU while it runs, not while it idles (measured
    // here: 6 samples in 1 s on an idle CPU): keep every CPU busy.
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let spinners: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            let busy = busy.clone();
            thread::spawn(move || {
                // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and
                // sched_setaffinity (this thread only) get valid pointers.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu as usize, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                while busy.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let stop = Shutdown::new().unwrap();
    let recording = sampler::record_times(&config, Duration::from_secs(1), &stop);
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    for spinner in spinners {
        spinner.join().unwrap();
    }
    let recording = recording.unwrap();
    for cpu in cpus {
        let n = recording.samples.iter().filter(|s| s.cpu == cpu).count();
        // 199 expected; a busy host loses some (stolen time is not cpu-clock time).
        assert!(n > 100, "{n} samples on CPU {cpu} in 1 s at 199 Hz");
    }
    assert!(recording
        .samples
        .iter()
        .all(|s| s.stack.is_empty() && s.comm.is_empty()));
    assert!(recording
        .samples
        .windows(2)
        .all(|w| w[0].time_ns <= w[1].time_ns));
}
