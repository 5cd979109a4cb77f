//! The `perf script` format traps, one test each. Every expected string is
//! what FlameGraph's stackcollapse-perf.pl (the version in
//! tests/data/collapse/README.md) printed for the same input and options.

use netstall_xray::collapse::{self, CollapseOptions};
use netstall_xray::fold::FoldOptions;

fn collapse_with(input: &str, fold: FoldOptions) -> String {
    let opts = CollapseOptions {
        fold,
        ..CollapseOptions::default()
    };
    let mut out = Vec::new();
    collapse::aggregate(input.as_bytes(), &opts)
        .expect("in-memory input")
        .write_to(&mut out)
        .expect("write to a Vec");
    String::from_utf8(out).expect("utf-8 test data")
}

fn tid() -> FoldOptions {
    FoldOptions {
        include_tid: true,
        ..FoldOptions::default()
    }
}

#[test]
fn thread_name_ending_in_a_space_and_digits() {
    let input = "worker 1 4242 [001] 10.000001:    1001001 cpu-clock:ppp: \n\
        \t     1149 busy+0x9 (/tmp/fpdemo)\n\
        \t     1190 start_thread+0x10 (/lib/libc.so.6)\n\n\
        io thread 4243 [000] 10.000002:    1001001 cpu-clock:ppp: \n\
        \t     1149 busy+0x9 (/tmp/fpdemo)\n\n";
    assert_eq!(
        collapse_with(input, FoldOptions::default()),
        "io_thread;busy 1001001\nworker;start_thread;busy 1001001\n"
    );
    assert_eq!(
        collapse_with(input, tid()),
        "io_thread-?/4243;busy 1001001\nworker-?/1;start_thread;busy 1001001\n"
    );
}

#[test]
fn pid_zero_is_false_in_perl() {
    let input = "swapper     0/0     [000]    1.5: cpu-clock:ppp: \n\
        \tffffffff8225f42b pv_native_safe_halt ([kernel.kallsyms])\n\n";
    let pid = FoldOptions {
        include_pid: true,
        ..FoldOptions::default()
    };
    assert_eq!(
        collapse_with(input, pid),
        "swapper-?;pv_native_safe_halt 1\n"
    );
    assert_eq!(
        collapse_with(input, tid()),
        "swapper-?/0;pv_native_safe_halt 1\n"
    );
}

const PARENS: &str = "rsdemo 77 [000] 2.0: 1001001 cpu-clock:ppp: \n\
    \t    5e1 <alloc::vec::Vec<T> as alloc::vec::spec_from_iter::SpecFromIter<T,I>>::from_iter+0x21 (/tmp/rsdemo)\n\
    \t    5e2 std::sort<(anonymous namespace)::Key, {lambda(int, int)#1}>(std::mt19937&)::operator() (/tmp/inldemo)\n\
    \t    5e3 <std::collections::HashMap<K,V> as core::iter::FromIterator<(K,V)>>::from_iter (/tmp/rsdemo)\n\
    \t    5e4 net/http.(*Client).Do (/tmp/go)\n\
    \t    5e5 [unknown] (/usr/lib/libc.so.6)\n\
    \t    5e6 [unknown] ([unknown])\n\
    \t    5e7 outer->inner+0x3 (/tmp/rsdemo)\n\n";

#[test]
fn parentheses_inside_cxx_rust_and_go_names() {
    assert_eq!(
        collapse_with(PARENS, FoldOptions::default()),
        "rsdemo;outer;inner_[i];[unknown];[libc.so.6];net/http.(*Client).Do;\
         <std::collections::HashMap<K,V> as core::iter::FromIterator<;\
         std::sort<(anonymous namespace)::Key, {lambda;\
         <alloc::vec::Vec<T> as alloc::vec::spec_from_iter::SpecFromIter<T,I>>::from_iter 1001001\n"
    );
}

#[test]
fn unknown_frames_with_addresses_and_all_annotations() {
    let all_addrs = FoldOptions {
        annotate_kernel: true,
        annotate_jit: true,
        include_addrs: true,
        ..FoldOptions::default()
    };
    assert_eq!(
        collapse_with(PARENS, all_addrs),
        "rsdemo;outer;inner_[i];[unknown <5e6>];[libc.so.6 <5e5>];net/http.(*Client).Do;\
         <std::collections::HashMap<K,V> as core::iter::FromIterator<;\
         std::sort<(anonymous namespace)::Key, {lambda;\
         <alloc::vec::Vec<T> as alloc::vec::spec_from_iter::SpecFromIter<T,I>>::from_iter 1001001\n"
    );
}

const EVENTS: &str = "fpdemo  4242  12.5:          1 page-faults: \n\
    \t    11 touch (/tmp/fpdemo)\n\n\
    fpdemo  4242  12.6:    1001001   cpu-clock: \n\
    \t    12 spin (/tmp/fpdemo)\n\n\
    fpdemo  4242  12.7:    1001001   cpu-clock: \n\
    \t    12 spin (/tmp/fpdemo)\n\n";

#[test]
fn padded_event_names_keep_their_period() {
    let cpu_clock = FoldOptions {
        event_filter: Some(b"cpu-clock".to_vec()),
        ..FoldOptions::default()
    };
    assert_eq!(collapse_with(EVENTS, cpu_clock), "fpdemo;spin 2002002\n");
    // Without a filter the first event seen (page-faults) is kept.
    assert_eq!(
        collapse_with(EVENTS, FoldOptions::default()),
        "fpdemo;touch 1\n"
    );
}

#[test]
fn missing_trailing_blank_line_drops_the_last_sample() {
    let truncated = EVENTS.trim_end_matches('\n');
    let cpu_clock = FoldOptions {
        event_filter: Some(b"cpu-clock".to_vec()),
        ..FoldOptions::default()
    };
    assert_eq!(
        collapse_with(truncated, cpu_clock.clone()),
        "fpdemo;spin 1001001\n"
    );
    let opts = CollapseOptions {
        fold: cpu_clock,
        flush_at_eof: true,
        ..CollapseOptions::default()
    };
    let collapsed = collapse::aggregate(truncated.as_bytes(), &opts).expect("in-memory input");
    assert_eq!(collapsed.stacks, vec![(b"fpdemo;spin".to_vec(), 2002002)]);
    assert!(collapsed.stats.unterminated_last_sample && collapsed.stats.flushed_last_sample);
}
