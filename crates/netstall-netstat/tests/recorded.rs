//! The parsers on files recorded on this project's 6.18 VM (tests/data/vm-6.18, laid out as /proc/net),
//! and the window's delta on edited copies.

use std::path::PathBuf;

use netstall_netstat::{delta, parse_conntrack, parse_snmp, parse_softnet, recorded};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vm-6.18")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(data().join(name)).unwrap()
}

#[test]
fn softnet_stat_reads_each_cpus_line_with_its_cpu_number() {
    let cpus = parse_softnet(&read("softnet_stat")).unwrap();
    assert_eq!(cpus.len(), 2);
    assert_eq!(cpus[0].cpu, 0);
    assert_eq!(cpus[1].cpu, 1);
    assert_eq!(cpus[0].processed, 0x2745e52c);
    assert_eq!(cpus[0].time_squeeze, 0x9d);
    assert_eq!(cpus[1].time_squeeze, 0x19);
    assert_eq!(cpus[0].dropped, 0);
}

#[test]
fn softnet_stat_of_old_kernels_and_offline_cpus() {
    // 5.4: 11 columns, no CPU number: the line's index.
    let old = "0000a000 00000003 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n\
               0000b000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n";
    let cpus = parse_softnet(old).unwrap();
    assert_eq!(
        (cpus[1].cpu, cpus[0].dropped, cpus[0].time_squeeze),
        (1, 3, 2)
    );
    // 6.x with CPU 1 offline: the CPU column says 2.
    let gap = "00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 00000000 00000000\n";
    assert_eq!(parse_softnet(gap).unwrap()[0].cpu, 2);
    let err = parse_softnet("12 zz 3\n").unwrap_err();
    assert!(format!("{err:#}").contains("line 1"), "{err:#}");
    assert!(parse_softnet("01 02 03\n").is_err());
}

#[test]
fn netstat_and_snmp_read_as_group_dot_name() {
    let netstat = parse_snmp(&read("netstat")).unwrap();
    assert_eq!(netstat["TcpExt.ListenOverflows"], 98);
    assert_eq!(netstat["TcpExt.ListenDrops"], 98);
    assert!(netstat.contains_key("IpExt.InOctets"));
    let snmp = parse_snmp(&read("snmp")).unwrap();
    assert_eq!(snmp["Tcp.RetransSegs"], 99);
    assert_eq!(snmp["Tcp.RtoMin"], 200);
    // MaxConn is -1: a setting, left out.
    assert!(!snmp.contains_key("Tcp.MaxConn"));
    assert!(parse_snmp("Tcp: A B\nTcp: 1\n").is_err());
    assert!(parse_snmp("Tcp: A B\nUdp: 1 2\n").is_err());
    assert!(parse_snmp("Tcp: A B\n").is_err());
}

#[test]
fn conntrack_stat_sums_cpus_and_keeps_entries_once() {
    let ct = parse_conntrack(&read("stat/nf_conntrack")).unwrap();
    assert_eq!(ct["insert_failed"], 0);
    let text = "entries  clashres found insert_failed drop\n\
                0000000a 00000001 00000000 00000002 00000000\n\
                0000000a 00000000 00000000 00000003 00000001\n";
    let ct = parse_conntrack(text).unwrap();
    assert_eq!(
        (
            ct["entries"],
            ct["clashres"],
            ct["insert_failed"],
            ct["drop"]
        ),
        (10, 1, 5, 1)
    );
    assert!(parse_conntrack("entries drop\n00000001\n").is_err());
}

#[test]
fn the_delta_names_only_what_grew() {
    let files = recorded(&data());
    let before = files.snapshot(1_000).unwrap();
    let mut after = before.clone();
    after.at_ns = 21_000;
    after.softnet[1].dropped += 40;
    after.softnet[1].time_squeeze += 7;
    after.softnet[0].processed += 1_000_000;
    *after.snmp.get_mut("TcpExt.ListenOverflows").unwrap() += 17;
    *after.snmp.get_mut("IpExt.InOctets").unwrap() += 1 << 30;
    if let Some(ct) = after.conntrack.as_mut() {
        *ct.get_mut("insert_failed").unwrap() += 3;
    }
    let d = delta(&before, &after);
    assert_eq!((d.start_ns, d.end_ns), (1_000, 21_000));
    assert_eq!(d.softnet.len(), 1, "only the CPU that dropped: {d:?}");
    assert_eq!(
        (
            d.softnet[0].cpu,
            d.softnet[0].dropped,
            d.softnet[0].time_squeeze
        ),
        (1, 40, 7)
    );
    assert_eq!(d.snmp.len(), 1, "octets are not watched: {:?}", d.snmp);
    assert_eq!(d.snmp("TcpExt.ListenOverflows"), 17);
    assert_eq!(d.conntrack.unwrap().dropped(), 3);
    // Nothing grew: nothing named.
    let still = delta(&before, &before);
    assert!(still.softnet.is_empty() && still.snmp.is_empty());
}

#[test]
fn a_live_snapshot_reads() {
    let snap = netstall_netstat::snapshot_now(1).unwrap();
    assert!(!snap.softnet.is_empty());
    assert!(snap.snmp.contains_key("Tcp.RetransSegs"));
}
