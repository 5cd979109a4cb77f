//! cgroup.stat (cgroups), from any UTF-8 text (the readers take text).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = netstall_cgroups::stat::parse(text);
});
