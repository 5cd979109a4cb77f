//! Arbitrary bytes through the `perf script` parser and both collapse modes:
//! no panic, and the modes agree with each other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstall_xray::collapse::{self, CollapseOptions};
use netstall_xray::fold::FoldOptions;

fuzz_target!(|data: &[u8]| {
    let (flags, input) = data.split_first().map_or((0, data), |(f, rest)| (*f, rest));
    let opts = CollapseOptions {
        fold: FoldOptions {
            include_pid: flags & 1 != 0,
            include_tid: flags & 2 != 0,
            annotate_kernel: flags & 4 != 0,
            annotate_jit: flags & 8 != 0,
            include_addrs: flags & 16 != 0,
            event_filter: (flags & 32 != 0).then(|| b"cpu-clock".to_vec()),
        },
        flush_at_eof: flags & 64 != 0,
        threads: 1,
    };
    let one = collapse::aggregate(input, &opts).expect("reading a slice cannot fail");
    let two = collapse::aggregate(
        input,
        &CollapseOptions {
            threads: 2,
            ..opts.clone()
        },
    )
    .expect("reading a slice cannot fail");
    assert_eq!(one.stacks, two.stacks, "threads change nothing");
    let mut samples = 0u64;
    let stats = collapse::ordered(input, &opts, |stack| {
        assert!(
            one.stacks.iter().any(|(s, _)| s == stack),
            "an ordered stack is an aggregated one"
        );
        samples += 1;
        Ok(())
    })
    .expect("reading a slice cannot fail");
    assert_eq!(samples, one.stats.fold.samples);
    assert_eq!(stats.fold.samples, samples);
});
