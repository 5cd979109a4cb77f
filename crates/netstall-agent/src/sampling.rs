//! Stall-triggered CPU sampling: a stall the tracer reports on a CPU opens
//! a short cpu-clock sampling window on that CPU ([`netstall_xray::triggered`]),
//! to catch the next stall there in the act, with the stacks around it;
//! the window goes to the flight recorder as a `cpu-sampling` record.
//!
//! Rare by design: one window at a time, and after each a cooldown during
//! which stalls open none ([`Gate`]). A healthy node never samples. What a
//! window cost the agent (its CPU time) is in the record and in
//! `netstall_stall_sampling_cpu_seconds_total`.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::Duration;

use netstall_core::privilege::{self, Capability};
use netstall_core::shutdown::Shutdown;
use netstall_xray::triggered::{self, WindowConfig};

use crate::State;

/// `stall-sampling-window`'s default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(2);
/// The longest window.
pub const MAX_WINDOW: Duration = Duration::from_secs(30);
/// `stall-sampling-cooldown`'s default.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(600);
/// Samples per second: odd, so that it does not beat with the tick; at
/// 499 Hz a 10 ms IRQs-off gap is five missing samples.
pub const FREQUENCY: u64 = 499;

/// The settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    pub on: bool,
    pub window: Duration,
    pub cooldown: Duration,
}

/// Which stalls open a window: none while one is open or cooling down.
#[derive(Debug)]
pub struct Gate {
    /// Window plus cooldown, ns.
    closed_ns: u64,
    /// When the next stall may open one (REALTIME ns).
    next_ns: u64,
}

impl Gate {
    pub fn new(config: &SamplingConfig) -> Self {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self {
            closed_ns: ns(config.window).saturating_add(ns(config.cooldown)),
            next_ns: 0,
        }
    }

    /// Whether a stall at `now_ns` opens a window (and then closes the gate).
    pub fn admit(&mut self, now_ns: u64) -> bool {
        if now_ns < self.next_ns {
            return false;
        }
        self.next_ns = now_ns.saturating_add(self.closed_ns);
        true
    }
}

/// A stall that opened a window: its CPU and end.
#[derive(Debug, Clone, Copy)]
pub struct Trigger {
    pub cpu: u32,
    pub end_ns: u64,
}

/// The tracer's side: stalls in, at most one window waiting.
pub struct Triggers {
    gate: Mutex<Gate>,
    sender: Mutex<Option<SyncSender<Trigger>>>,
}

impl Triggers {
    pub fn new(config: &SamplingConfig) -> (Self, Receiver<Trigger>) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let triggers = Self {
            gate: Mutex::new(Gate::new(config)),
            sender: Mutex::new(Some(sender)),
        };
        (triggers, receiver)
    }

    /// A stall on `cpu` ended at `end_ns`: a window opens if the gate admits it.
    pub fn stall(&self, cpu: u32, end_ns: u64, now_ns: u64) {
        let admitted = self
            .gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(now_ns);
        if !admitted {
            return;
        }
        if let Some(sender) = &*self.sender.lock().unwrap_or_else(|p| p.into_inner()) {
            // Full: a window is already waiting; disconnected: shutting down.
            let _: Result<(), TrySendError<Trigger>> = sender.try_send(Trigger { cpu, end_ns });
        }
    }

    /// No more windows: the sampling thread ends.
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Opens a window for each admitted stall until the triggers close. Needs
/// CAP_PERFMON (sampling) and CAP_SYSLOG (kernel frames' names), raised in
/// this thread only; a window that cannot open is told once on stderr.
pub fn run(config: &SamplingConfig, triggers: &Receiver<Trigger>, state: &State, stop: &Shutdown) {
    let mut told = false;
    while let Ok(trigger) = triggers.recv() {
        if stop.is_requested() {
            return;
        }
        if let Err(e) = privilege::set_effective(&[Capability::Perfmon, Capability::Syslog]) {
            eprintln!("netstall agent: {e:#}");
        }
        let window = WindowConfig {
            cpu: trigger.cpu,
            window: config.window,
            frequency: FREQUENCY,
        };
        let sampled = triggered::sample_after_stall(&window, trigger.end_ns, stop);
        let _ = privilege::set_effective(&[]);
        // The symbolizer's tables are freed: give the heap back.
        // SAFETY: malloc_trim only releases free memory of this process's heap.
        unsafe { libc::malloc_trim(0) };
        match sampled {
            Ok(mut sampling) => {
                state.metrics.sampling_windows.inc();
                state
                    .metrics
                    .sampling_cpu_seconds
                    .inc_by(sampling.cost_ms / 1e3);
                sampling.node = Some(state.node.clone());
                state.event(sampling);
            }
            Err(e) if !told => {
                told = true;
                eprintln!("netstall agent: stall-triggered sampling failed: {e:#}");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_window_then_none_until_the_cooldown_is_over() {
        let config = SamplingConfig {
            on: true,
            window: Duration::from_secs(2),
            cooldown: Duration::from_secs(600),
        };
        let mut gate = Gate::new(&config);
        let s = 1_000_000_000;
        assert!(gate.admit(100 * s));
        assert!(!gate.admit(100 * s + 1));
        assert!(!gate.admit(701 * s));
        assert!(gate.admit(702 * s));
        let (triggers, receiver) = Triggers::new(&config);
        for i in 0..5 {
            triggers.stall(3, i, 10 * s + i);
        }
        let first = receiver.try_recv().unwrap();
        assert_eq!((first.cpu, first.end_ns), (3, 0));
        assert!(receiver.try_recv().is_err());
        triggers.close();
        assert!(receiver.recv().is_err());
    }
}
