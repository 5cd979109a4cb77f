//! Which process on this host serves a target: the owner of a TCP socket
//! listening on the target's address (or any address) and port, in any
//! network namespace (a pod's), with its CPU cgroup. It ties a cgroup's
//! throttling to the target's slow answers (`cpu-throttled`).
//!
//! Bounded: each namespace's socket table is read once (through one of its
//! processes), and at most [`MAX_PROCESSES`] processes are looked at.

use std::collections::HashMap;
use std::net::Ipv4Addr;

pub use netstall_events::throttle::TargetServer;

/// Processes looked at, at most.
const MAX_PROCESSES: usize = 50_000;
/// TCP_LISTEN in /proc/net/tcp's `st` column.
const LISTEN: &str = "0A";

/// The inode of a socket listening on `ip` (with `any`, also on the any
/// address) and `port` in a `/proc/net/tcp` or `tcp6` table. Pure.
pub fn listening_inode(table: &str, ip: Ipv4Addr, port: u16, any: bool) -> Option<u64> {
    // The kernel prints the address as the raw __be32 in %08X: on a
    // little-endian machine its bytes are reversed.
    let v4 = format!("{:08X}", u32::from_ne_bytes(ip.octets()));
    let mapped = format!("0000000000000000FFFF0000{v4}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        let (addr, p) = local.split_once(':')?;
        let unspecified = addr.bytes().all(|b| b == b'0');
        (*state == LISTEN
            && u16::from_str_radix(p, 16).ok()? == port
            && ((any && unspecified) || addr == v4 || addr == mapped))
            .then(|| inode.parse().ok())
            .flatten()
            .filter(|&i| i != 0)
    })
}

/// Whether `ip` is a local address in a `/proc/net/fib_trie` (the
/// namespace's own addresses are `/32 host LOCAL`). Pure.
pub fn has_local_address(fib_trie: &str, ip: Ipv4Addr) -> bool {
    let want = format!("|-- {ip}");
    let lines: Vec<&str> = fib_trie.lines().collect();
    lines
        .windows(2)
        .any(|w| w[0].trim() == want && w[1].contains("/32") && w[1].contains("host LOCAL"))
}

fn pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .take(MAX_PROCESSES)
        .collect()
}

fn owns_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == want.as_str()))
}

/// A process's cgroup in the cpu controller's hierarchy.
pub fn cpu_cgroup(pid: u32) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (_, version) = netstall_kernel::throttle::cpu_hierarchy(&mountinfo)?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    netstall_kernel::throttle::cpu_cgroup_of(&text, version)
}

/// The processes listening for `ip:port` on this host: on the address
/// itself where any namespace does, else on any address in namespaces that
/// have it (one per namespace).
pub fn find(ip: Ipv4Addr, port: u16) -> Vec<TargetServer> {
    let mut by_netns: HashMap<String, Vec<u32>> = HashMap::new();
    for pid in pids() {
        if let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net")) {
            by_netns
                .entry(ns.to_string_lossy().into_owned())
                .or_default()
                .push(pid);
        }
    }
    let tables: Vec<(&Vec<u32>, String, bool)> = by_netns
        .values()
        .map(|members| {
            let read = |t: &str| std::fs::read_to_string(format!("/proc/{}/net/{t}", members[0]));
            let table = read("tcp").unwrap_or_default() + &read("tcp6").unwrap_or_default();
            let local = has_local_address(&read("fib_trie").unwrap_or_default(), ip);
            (members, table, local)
        })
        .collect();
    // A listener on the target's own address first; then one on any address
    // (0.0.0.0, ::) in a namespace that has the target's address.
    for any in [false, true] {
        let found: Vec<TargetServer> = tables
            .iter()
            .filter_map(|(members, table, local)| {
                let inode = listening_inode(table, ip, port, any && *local)?;
                members.iter().copied().find(|&p| owns_socket(p, inode))
            })
            .map(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                TargetServer {
                    pid,
                    comm: comm.trim().to_owned(),
                    cgroups: cpu_cgroup(pid).into_iter().collect(),
                }
            })
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

/// The server again at the end of a run: a cgroup it moved to is added.
pub fn refresh(server: &mut TargetServer) {
    if let Some(now) = cpu_cgroup(server.pid) {
        if !server.cgroups.contains(&now) {
            server.cgroups.push(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0A02F40A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51234 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   2: 0A02F40A:1F90 0102F40A:C350 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn the_listener_is_found_by_address_or_any_address_and_port() {
        let pod = Ipv4Addr::new(10, 244, 2, 10);
        assert_eq!(listening_inode(TCP, pod, 8080, false), Some(51234));
        // 0.0.0.0:22 listens for every address.
        let other = Ipv4Addr::new(1, 2, 3, 4);
        assert_eq!(listening_inode(TCP, other, 22, true), Some(1111));
        assert_eq!(listening_inode(TCP, other, 22, false), None);
        assert_eq!(
            listening_inode(TCP, Ipv4Addr::new(10, 0, 0, 1), 8080, true),
            None
        );
        assert_eq!(listening_inode(TCP, pod, 9, true), None);
    }

    #[test]
    fn local_addresses_are_read_from_the_fib_trie() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.244.2.0\n        /24 link UNICAST\n     |-- 10.244.2.10\n        /32 host LOCAL\n";
        assert!(has_local_address(trie, Ipv4Addr::new(10, 244, 2, 10)));
        assert!(!has_local_address(trie, Ipv4Addr::new(10, 244, 2, 0)));
        assert!(!has_local_address(trie, Ipv4Addr::new(10, 244, 2, 11)));
    }

    #[test]
    fn this_process_is_found_as_the_server_of_its_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let servers = find(Ipv4Addr::LOCALHOST, port);
        assert_eq!(servers.len(), 1, "{servers:?}");
        assert_eq!(servers[0].pid, std::process::id());
    }
}
