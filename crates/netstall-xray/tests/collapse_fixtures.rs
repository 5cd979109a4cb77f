//! Aggregated collapse against the output of FlameGraph's stackcollapse-perf.pl
//! (tests/data/collapse/README.md says how each expected file was made), and
//! ordered collapse against the same files once summed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use netstall_xray::collapse::{self, CollapseOptions};
use netstall_xray::fold::FoldOptions;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/collapse")
        .join(name)
}

const INPUTS: &[&str] = &[
    "kernel_heavy",
    "kernel_heavy_fields",
    "user_fp",
    "user_fp_fields_header",
    "cxx_inline_dwarf",
    "rust_unknown",
    "multi_event",
    "ksoftirqd_spin",
];

/// The Perl script's options for each expected-file suffix.
fn variants() -> Vec<(&'static str, FoldOptions)> {
    vec![
        ("", FoldOptions::default()),
        (
            ".all",
            FoldOptions {
                annotate_kernel: true,
                annotate_jit: true,
                ..FoldOptions::default()
            },
        ),
        (
            ".pid",
            FoldOptions {
                include_pid: true,
                ..FoldOptions::default()
            },
        ),
        (
            ".tid",
            FoldOptions {
                include_tid: true,
                ..FoldOptions::default()
            },
        ),
        (
            ".addrs",
            FoldOptions {
                include_addrs: true,
                ..FoldOptions::default()
            },
        ),
    ]
}

fn aggregated(input: &[u8], fold: FoldOptions, threads: usize) -> Vec<u8> {
    let opts = CollapseOptions {
        fold,
        threads,
        ..CollapseOptions::default()
    };
    let mut out = Vec::new();
    collapse::aggregate(input, &opts)
        .expect("in-memory input")
        .write_to(&mut out)
        .expect("write to a Vec");
    out
}

fn first_difference(ours: &[u8], expected: &[u8]) -> String {
    let ours = String::from_utf8_lossy(ours);
    let expected = String::from_utf8_lossy(expected);
    for (i, (a, b)) in ours.lines().zip(expected.lines()).enumerate() {
        if a != b {
            return format!("line {}:\n ours:     {a}\n expected: {b}", i + 1);
        }
    }
    format!(
        "{} lines vs {} expected",
        ours.lines().count(),
        expected.lines().count()
    )
}

#[test]
fn aggregated_output_is_byte_identical_to_stackcollapse_perf_pl() {
    let mut checked = 0;
    for input_name in INPUTS {
        let input = std::fs::read(data(&format!("{input_name}.perf.txt"))).expect("fixture");
        for (suffix, fold) in variants() {
            let expected = std::fs::read(data(&format!("{input_name}{suffix}.folded")))
                .expect("expected output");
            for threads in [1, 3] {
                let ours = aggregated(&input, fold.clone(), threads);
                assert!(
                    ours == expected,
                    "{input_name}{suffix} with {threads} threads: {}",
                    first_difference(&ours, &expected)
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, INPUTS.len() * 5 * 2);
}

#[test]
fn event_filter_matches_perl() {
    let input = std::fs::read(data("multi_event.perf.txt")).expect("fixture");
    let expected =
        std::fs::read(data("multi_event.event-filter-cpu-clock.folded")).expect("expected");
    let fold = FoldOptions {
        event_filter: Some(b"cpu-clock".to_vec()),
        ..FoldOptions::default()
    };
    let ours = aggregated(&input, fold, 2);
    assert!(ours == expected, "{}", first_difference(&ours, &expected));
}

#[test]
fn default_event_is_the_first_one_seen_and_the_rest_are_counted() {
    let input = std::fs::read(data("multi_event.perf.txt")).expect("fixture");
    let stats = collapse::aggregate(&input[..], &CollapseOptions::default())
        .expect("in-memory input")
        .stats;
    assert_eq!(stats.kept_event.as_deref(), Some(&b"page-faults"[..]));
    assert_eq!(stats.fold.samples, 11);
    assert_eq!(stats.fold.filtered_samples, 594);
    assert_eq!(
        stats.fold.filtered_event.as_deref(),
        Some(&b"cpu-clock"[..])
    );
}

/// Ordered mode prints one line per sample; summed by stack (each sample
/// weighted by its period, as aggregation does) it is the Perl output.
#[test]
fn ordered_output_sums_to_the_aggregated_output() {
    for input_name in INPUTS {
        let input = std::fs::read(data(&format!("{input_name}.perf.txt"))).expect("fixture");
        let mut lines = Vec::new();
        let mut given = Vec::new();
        let stats = collapse::ordered(&input[..], &CollapseOptions::default(), |sample| {
            lines.push(sample.stack.to_vec());
            given.push(sample.weight);
            Ok(())
        })
        .expect("in-memory input");
        assert_eq!(lines.len() as u64, stats.fold.samples);
        let weights = sample_weights(&input, stats.kept_event.as_deref());
        assert_eq!(
            weights.len(),
            lines.len(),
            "{input_name}: one weight per sample"
        );
        assert_eq!(
            given, weights,
            "{input_name}: each sample carries its period"
        );
        let mut summed: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for (stack, weight) in lines.into_iter().zip(weights) {
            *summed.entry(stack).or_default() += weight;
        }
        let mut ours = Vec::new();
        for (stack, count) in summed {
            ours.extend_from_slice(&stack);
            ours.extend_from_slice(format!(" {count}\n").as_bytes());
        }
        let expected = std::fs::read(data(&format!("{input_name}.folded"))).expect("expected");
        assert!(
            ours == expected,
            "{input_name}: {}",
            first_difference(&ours, &expected)
        );
    }
}

/// The period of each kept sample, in order, read independently of the
/// folder: the number before the event name on each header line (1 when absent).
fn sample_weights(input: &[u8], kept: Option<&[u8]>) -> Vec<u64> {
    let text = String::from_utf8_lossy(input);
    let mut weights = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with(['#', ' ', '\t']) {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let event = words
            .last()
            .expect("a header has words")
            .trim_end_matches(':');
        if kept.is_some_and(|k| k != event.as_bytes()) {
            continue;
        }
        let before = words[words.len() - 2];
        weights.push(if before.ends_with(':') {
            1
        } else {
            before.parse().expect("a period")
        });
    }
    weights
}

#[test]
fn ordered_output_keeps_sample_order() {
    // Timestamps of the kept samples, in input order, must be increasing in
    // this single-threaded recording, and ordered mode must follow them: the
    // n-th output line is the stack of the n-th header.
    let input = std::fs::read(data("user_fp_fields_header.perf.txt")).expect("fixture");
    let mut lines = Vec::new();
    let mut times = Vec::new();
    collapse::ordered(&input[..], &CollapseOptions::default(), |sample| {
        lines.push(String::from_utf8_lossy(sample.stack).into_owned());
        times.push(sample.time_ns.expect("every header has a time"));
        Ok(())
    })
    .expect("in-memory input");
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "the samples' times increase"
    );
    let text = String::from_utf8_lossy(&input);
    let mut comms = Vec::new();
    let mut leaves = Vec::new();
    let mut header_times = Vec::new();
    let mut first_frame = true;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            first_frame = true;
        } else if !line.starts_with([' ', '\t']) {
            comms.push(line.split_whitespace().next().expect("comm").to_string());
            // `comm pid [cpu] SECONDS: ...`: perf's seconds, to the ns.
            let seconds: f64 = line
                .split_whitespace()
                .find_map(|w| w.strip_suffix(':')?.parse().ok())
                .expect("a time");
            header_times.push((seconds * 1e9).round() as u64);
        } else if first_frame {
            let symbol = line.split_whitespace().nth(1).expect("symbol");
            leaves.push(symbol.split(['+', '(']).next().expect("name").to_string());
            first_frame = false;
        }
    }
    assert_eq!(lines.len(), comms.len());
    assert_eq!(times, header_times, "each sample has its header's time");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&comms[i]),
            "sample {i}: {line} vs comm {}",
            comms[i]
        );
        let leaf = line.rsplit(';').next().expect("a leaf");
        assert!(
            leaf.starts_with(&leaves[i]) || leaves[i] == "[unknown]",
            "sample {i}: leaf {leaf} vs {}",
            leaves[i]
        );
    }
}
