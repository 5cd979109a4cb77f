//! One module per command: argument definitions and the glue to the crate
//! that does the work. Nothing here should be more than a few lines per command.

pub mod agent;
pub mod bisect;
pub mod cgroups;
pub mod check;
pub mod collapse;
pub mod demo;
pub mod doctor;
pub mod flame;
pub mod lab;
pub mod probe;
pub mod responder;
pub mod trace;
pub mod xray;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Set by SIGINT/SIGTERM for the long-running commands (probe, agent).
static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some(stop) = STOP.get() {
        stop.store(true, Ordering::Relaxed);
    }
}

/// A flag that SIGINT and SIGTERM set: the command finishes cleanly
/// (summary printed, programs detached) instead of dying mid-way.
pub fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::clone(STOP.get_or_init(|| Arc::new(AtomicBool::new(false))));
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only does an atomic load and store.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    stop
}
