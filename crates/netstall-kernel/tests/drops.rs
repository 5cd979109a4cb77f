//! The drop counter on a real kernel: packets an nftables rule drops in a
//! network namespace of the test's own are counted with the kernel's reason
//! (`NETFILTER_DROP`), their device and netns; a SYN the rule drops is
//! resent, and the retransmit is reported with its flow.

use std::process::Command;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use netstall_core::shutdown::Shutdown;
use netstall_kernel::drops::{self, DropsConfig, DropsEvent, RetransmitKind};
use netstall_kernel::trace::Stop;

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}");
}

/// A network namespace deleted on drop, also when the test fails.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn netns_inode(name: &str) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{name}"))
        .expect("netns file")
        .ino() as u32
}

#[test]
fn nftables_drops_and_the_syn_they_resend_are_counted_with_reason_and_flow() {
    if !netstall_testkit::privileged("drop counter") {
        return;
    }
    let ns = Netns(format!("{}drop", netstall_testkit::unique_prefix()));
    ip(&["netns", "add", &ns.0]);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
    // ICMP echo and SYNs to port 9 are dropped on input, inside the netns only.
    let rules = "table inet t {\n chain input {\n type filter hook input priority 0;\n \
                 ip protocol icmp drop\n tcp dport 9 drop\n }\n}\n";
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run nft");
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), rules.as_bytes()).unwrap();
    let status = nft.wait().unwrap();
    assert!(status.success(), "nft rule");

    let shutdown = Arc::new(Shutdown::new().unwrap());
    let stop = Stop {
        duration: Some(Duration::from_secs(30)),
        shutdown: Some(shutdown.clone()),
    };
    let (tx, rx) = mpsc::channel();
    let counter = std::thread::spawn(move || {
        drops::run(
            &DropsConfig {
                interval: Duration::from_millis(200),
            },
            &stop,
            |event| {
                let _ = tx.send(event);
            },
        )
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)).expect("attached"),
        DropsEvent::Started
    );

    // Three pings, each dropped; one connect whose SYN is dropped and resent
    // after 1 s (the kernel's initial RTO).
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "127.0.0.1",
        ])
        .output()
        .expect("run ping");
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "timeout",
            "1.5",
            "bash",
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/9",
        ])
        .output()
        .expect("run bash");
    std::thread::sleep(Duration::from_millis(500));
    shutdown.request();
    let totals = counter.join().unwrap().expect("the drop counter runs");

    let inode = netns_inode(&ns.0);
    let events: Vec<DropsEvent> = rx.try_iter().collect();
    let netfilter: u64 = events
        .iter()
        .filter_map(|e| match e {
            DropsEvent::Drop(d) if d.reason == "NETFILTER_DROP" && d.netns == Some(inode) => {
                assert_eq!(d.ifindex, Some(1), "dropped on lo: {d:?}");
                assert!(d.start_ns <= d.end_ns && d.start_ns > 0, "{d:?}");
                assert!(!d.location.is_empty(), "{d:?}");
                Some(d.count)
            }
            _ => None,
        })
        .sum();
    // 3 echo requests + the SYN and its retransmit.
    assert!(
        netfilter >= 5,
        "NETFILTER_DROP count {netfilter}: {events:?}"
    );
    let resent: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            DropsEvent::Retransmit(r) if r.netns == Some(inode) => Some(r),
            _ => None,
        })
        .collect();
    assert!(
        resent.iter().any(|r| r.kind == RetransmitKind::Segment
            && r.state == "SYN_SENT"
            && r.daddr == "127.0.0.1"
            && r.dport == 9
            && r.count >= 1),
        "the SYN retransmit: {events:?}"
    );
    assert!(
        totals.drops >= netfilter && totals.retransmits >= 1,
        "{totals:?}"
    );
    assert_eq!(totals.overflow, 0);
}
