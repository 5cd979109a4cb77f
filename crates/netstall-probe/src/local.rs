//! Is a target on this host? A probe to an address of any network namespace
//! of this machine (a pod, a lab node, the host itself) never leaves it, so
//! an episode toward it cannot be blamed on the network path.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// More namespaces than this are not looked into (a node runs a few hundred pods).
const MAX_NAMESPACES: usize = 2048;

/// Every network namespace of this host, one path each: the host's, the
/// named ones (`ip netns`) and those of running processes (pods).
fn network_namespaces() -> Vec<PathBuf> {
    let mut candidates = vec![
        PathBuf::from("/proc/1/ns/net"),
        PathBuf::from("/proc/self/ns/net"),
    ];
    for dir in ["/run/netns", "/var/run/netns"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            candidates.extend(entries.flatten().map(|e| e.path()));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        candidates.extend(
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .map(|e| e.path().join("ns/net")),
        );
    }
    let mut seen = BTreeSet::new();
    candidates
        .into_iter()
        .filter(|p| {
            std::fs::metadata(p)
                .map(|m| seen.insert((m.dev(), m.ino())))
                .unwrap_or(false)
        })
        .take(MAX_NAMESPACES)
        .collect()
}

/// The addresses of the namespace at `path`, read from a thread that enters
/// it (the caller's own namespace is left alone). Empty if it cannot be entered.
fn addresses_in(path: PathBuf) -> Vec<Ipv4Addr> {
    std::thread::spawn(move || {
        // setns moves only this thread.
        if netstall_core::sys::enter_netns_at(&path).is_err() {
            return Vec::new();
        }
        netstall_core::sys::interface_ipv4_addresses()
    })
    .join()
    .unwrap_or_default()
}

/// Every IPv4 address of every network namespace of this host. Without the
/// privilege to enter other namespaces, only the caller's own addresses.
pub fn host_addresses() -> BTreeSet<Ipv4Addr> {
    let mut all: BTreeSet<Ipv4Addr> = netstall_core::sys::interface_ipv4_addresses()
        .into_iter()
        .collect();
    for ns in network_namespaces() {
        all.extend(addresses_in(ns));
    }
    all
}

/// Whether `ip` is on this host: loopback, or an address of one of its namespaces.
pub fn is_on_this_host(ip: Ipv4Addr, host_addresses: &BTreeSet<Ipv4Addr>) -> bool {
    ip.is_loopback() || host_addresses.contains(&ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_own_addresses_are_this_host() {
        let own = host_addresses();
        assert!(own.contains(&Ipv4Addr::LOCALHOST), "{own:?}");
        assert!(is_on_this_host(Ipv4Addr::new(127, 0, 0, 53), &own));
        // TEST-NET-3 is never assigned.
        assert!(!is_on_this_host(Ipv4Addr::new(203, 0, 113, 7), &own));
    }
}
