//! docs/json.md is the contract: every example line in it is a record that
//! reads back, writes out the same, and every record type has an example.

use std::collections::BTreeSet;

use netstall_events::{parse_line, read_records, Record, TYPE_NAMES};

fn examples() -> Vec<(usize, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/json.md"))
        .expect("docs/json.md");
    let mut in_json = false;
    let mut lines = Vec::new();
    for (i, line) in doc.lines().enumerate() {
        match line.trim() {
            "```json" => in_json = true,
            "```" => in_json = false,
            text if in_json && text.starts_with('{') => lines.push((i + 1, text.to_string())),
            _ => {}
        }
    }
    lines
}

#[test]
fn every_example_is_a_record_that_round_trips() {
    let examples = examples();
    assert!(examples.len() >= TYPE_NAMES.len());
    for (line, text) in &examples {
        let record = parse_line(text).unwrap_or_else(|e| panic!("docs/json.md:{line}: {e}"));
        let written = record.to_json_line();
        let value: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(value["type"], record.type_name(), "docs/json.md:{line}");
        assert_eq!(parse_line(&written).unwrap(), record, "docs/json.md:{line}");
    }
}

#[test]
fn every_record_type_has_an_example() {
    let documented: BTreeSet<&'static str> = examples()
        .iter()
        .map(|(_, text)| parse_line(text).unwrap().type_name())
        .collect();
    let all: BTreeSet<&'static str> = TYPE_NAMES.iter().copied().collect();
    let missing: Vec<_> = all.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "no example in docs/json.md for {missing:?}"
    );
    let unlisted: Vec<_> = documented.difference(&all).collect();
    assert!(unlisted.is_empty(), "not in TYPE_NAMES: {unlisted:?}");
}

#[test]
fn bad_lines_are_named_by_number() {
    let input = "{\"type\":\"lab-down\",\"prefix\":\"a\"}\n\n{\"type\":\"lab-down\"";
    let err = read_records(input.as_bytes()).unwrap_err();
    assert_eq!(err.line, 3, "{err}");
    assert!(err.to_string().starts_with("line 3: "), "{err}");

    let err = parse_line("{\"type\":\"no-such-record\"}").unwrap_err();
    assert_eq!(err, "unknown record type `no-such-record`");
    let err = parse_line("{\"type\":\"lab-down\",\"prefix\":7}").unwrap_err();
    assert!(err.starts_with("invalid type"), "{err}");
    assert!(!err.contains("at line"), "{err}");
    let records = read_records("{\"type\":\"lab-down\",\"prefix\":\"a\"}\n".as_bytes()).unwrap();
    assert!(matches!(&records[..], [Record::LabDown(d)] if d.prefix == "a"));
}
