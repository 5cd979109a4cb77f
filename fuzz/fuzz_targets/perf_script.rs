//! `perf script` text (collapse, flame): the line parsers, then the
//! aggregated and the ordered collapse of the same bytes, with options
//! chosen by the first byte. The modes must agree: one and two folding
//! threads give the same stacks, and every stack the ordered mode emits is
//! one of the aggregated stacks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstall_xray::collapse::{self, CollapseOptions};
use netstall_xray::fold::FoldOptions;
use netstall_xray::perf_script;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, text)) = data.split_first() else {
        return;
    };
    for line in text.split(|&b| b == b'\n') {
        let _ = perf_script::parse_header(line);
        let _ = perf_script::parse_event(line);
        let _ = perf_script::parse_frame(line);
    }
    let opts = CollapseOptions {
        fold: FoldOptions {
            include_pid: flags & 1 != 0,
            include_tid: flags & 2 != 0,
            annotate_kernel: flags & 4 != 0,
            annotate_jit: flags & 8 != 0,
            include_addrs: flags & 16 != 0,
            event_filter: (flags & 64 != 0).then(|| b"cpu-clock".to_vec()),
        },
        flush_at_eof: flags & 32 != 0,
        threads: 1,
    };
    let collapsed = collapse::aggregate(text, &opts).expect("reading a slice cannot fail");
    let mut out = Vec::new();
    collapsed
        .write_to(&mut out)
        .expect("writing to a Vec cannot fail");
    let two = collapse::aggregate(
        text,
        &CollapseOptions {
            threads: 2,
            ..opts.clone()
        },
    )
    .expect("reading a slice cannot fail");
    assert_eq!(collapsed.stacks, two.stacks, "threads change nothing");
    let mut emitted = 0u64;
    let stats = collapse::ordered(text, &opts, |sample| {
        assert!(
            collapsed.stacks.iter().any(|(s, _)| s == sample.stack),
            "an ordered stack is an aggregated one"
        );
        emitted += 1;
        Ok(())
    })
    .expect("reading a slice cannot fail");
    // Both modes fold the same samples, and say so.
    assert_eq!(emitted, stats.fold.samples);
    assert_eq!(collapsed.stats.fold.samples, stats.fold.samples);
});
