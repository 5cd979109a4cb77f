//! /proc/stat (the doctor's steal sampler), /proc/PID/stat (the agent's
//! process_* metrics) and CPU lists (/sys/devices/system/cpu/online,
//! `--cpu`), from any UTF-8 text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = netstall_core::steal::parse_proc_stat(text);
    let _ = netstall_agent::process::parse_stat(text, 100, 4096);
    let _ = netstall_core::cpu::parse_list(text);
    let _ = netstall_core::cpu::parse_online_list(text);
});
