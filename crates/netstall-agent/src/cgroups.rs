//! Cheap periodic dying-memcg counts: /proc/cgroups and a directory walk on
//! cgroup v1, the root's cgroup.stat on v2. Never memory.stat: reading it
//! is what stalls a CPU on a node with many dying memory cgroups. On the
//! same wake-up, the CPU cgroups' throttling when it is read
//! ([`crate::kernel_counters`]).

use std::time::{Duration, Instant};

use netstall_cgroups::advice::{worst_stall, KernelVersion};
use netstall_cgroups::{report, Host};
use netstall_core::shutdown::Shutdown;
use netstall_events::agent::MemcgDying;
use netstall_events::doctor::MemcgCount;

use crate::kernel_counters::Throttling;
use crate::State;

/// Counts (and reads `throttling`) every `interval` until `stop`.
pub fn run(
    interval: Duration,
    limit: u64,
    mut throttling: Option<&mut Throttling>,
    state: &State,
    stop: &Shutdown,
) {
    let host = Host::live();
    let kernel = host.kernel_release().unwrap_or_default();
    let era = KernelVersion::parse(&kernel).map(KernelVersion::stat_era);
    let mut over_limit = false;
    let mut reported_error = false;
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            next += interval;
            if let Some(throttling) = throttling.as_mut() {
                throttling.read(&state.metrics);
            }
            match report::memory_count(&host) {
                Ok(memory) => {
                    let metrics = &state.metrics;
                    metrics
                        .memcg_dying
                        .get_or_create(&Vec::new())
                        .set(memory.dying as i64);
                    metrics
                        .memcg_cgroups
                        .get_or_create(&Vec::new())
                        .set(memory.total as i64);
                    state
                        .health
                        .lock()
                        .expect("health lock")
                        .dying_memcgs(memory.dying);
                    state.set_memcg(MemcgCount {
                        kernel: kernel.clone(),
                        live: memory.live,
                        dying: memory.dying,
                        worst_stall_ms: era
                            .and_then(|era| worst_stall(era, memory.dying))
                            .map(|w| w.ms),
                    });
                    if (memory.dying > limit) != over_limit {
                        over_limit = !over_limit;
                        state.event(MemcgDying {
                            node: state.node.clone(),
                            dying: memory.dying,
                            limit,
                            over_limit,
                        });
                    }
                }
                // Counting keeps being retried; the reason is told once.
                Err(e) if !reported_error => {
                    reported_error = true;
                    eprintln!("netstall agent: cannot count dying cgroups: {e:#}");
                }
                Err(_) => {}
            }
        }
        if stop.wait(next.saturating_duration_since(Instant::now())) {
            return;
        }
    }
}
