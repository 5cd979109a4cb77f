//! /proc/net/softnet_stat, /proc/net/netstat and snmp, and
//! /proc/net/stat/nf_conntrack (the doctor's network counters), from any
//! UTF-8 text; parsed text goes through the window's delta both ways.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstall_netstat::{delta, parse_conntrack, parse_snmp, parse_softnet, Snapshot};

fuzz_target!(|text: &str| {
    let softnet = parse_softnet(text).unwrap_or_default();
    let snmp = parse_snmp(text).unwrap_or_default();
    let conntrack = parse_conntrack(text).ok();
    let read = Snapshot {
        at_ns: 1,
        softnet,
        snmp,
        conntrack,
    };
    let _ = delta(&Snapshot::default(), &read);
    let _ = delta(&read, &Snapshot::default());
});
