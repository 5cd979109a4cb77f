//! A tracer recording (`trace --record FILE`, replayed offline): parsed, then replayed (the raw
//! ring-buffer records decoded and assembled into stalls).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstall_kernel::trace::recording::Recording;

fuzz_target!(|text: &str| {
    if let Ok(recording) = Recording::parse(text) {
        let _ = recording.replay();
    }
});
