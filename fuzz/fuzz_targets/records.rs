//! Replayed JSON-lines records (`doctor --replay`, `report`): each line
//! parsed; a record that parses prints as text and survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netstall_events::read_records(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let Ok(record) = netstall_events::parse_line(line) else {
            continue;
        };
        let _ = record.text();
        let json = record.to_json_line();
        let again = netstall_events::parse_line(&json).expect("a record's JSON parses back");
        assert_eq!(record, again);
    }
});
