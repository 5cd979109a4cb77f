//! Folded stacks (`flame`): drawn as a graph and as a chart, through the
//! same path as the command (fractional counts, the error picture when no
//! stack is found); the SVG must be well-formed XML whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstall_xray::flame::{self, FlameOptions};
use netstall_xray::fold::FoldOptions;

fuzz_target!(|data: &[u8]| {
    let _ = flame::looks_folded(data);
    for chart in [false, true] {
        let opts = FlameOptions {
            chart,
            ..FlameOptions::default()
        };
        let mut svg = Vec::new();
        // No stacks is an error, after the error picture is written.
        let _ = flame::draw(
            data,
            "input",
            &opts,
            &FoldOptions::default(),
            &mut svg,
            |_| {},
        );
        let svg = std::str::from_utf8(&svg).expect("the SVG is UTF-8");
        assert!(
            !svg.chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')),
            "a control character XML cannot hold"
        );
        let mut reader = quick_xml::Reader::from_str(svg);
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("SVG not well-formed at {}: {e}", reader.buffer_position()),
            }
        }
    }
});
