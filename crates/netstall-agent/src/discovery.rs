//! Where the peers come from: the static list, plus (in Kubernetes) the
//! agents' own endpoints, read from the cluster DNS name of the agents'
//! headless Service, whose A records are the Ready agents' pod IPs (node
//! IPs, with host networking). Re-read periodically, so nodes joining and
//! leaving change the mesh without restarting any agent.

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs, UdpSocket};

use anyhow::{Context, Result};

use crate::config::Peer;

/// The IPv4 addresses `name` resolves to, as peers named by address, sorted.
pub fn resolve(name: &str) -> Result<Vec<Peer>> {
    let addrs = (name, 0)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the peers' DNS name '{name}'"))?;
    let mut ips: Vec<Ipv4Addr> = addrs
        .filter_map(|a| match a.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
        .collect();
    ips.sort_unstable();
    ips.dedup();
    Ok(ips
        .into_iter()
        .map(|addr| Peer {
            name: addr.to_string(),
            addr,
        })
        .collect())
}

/// Whether `addr` is one of this host's own (non-loopback) addresses, which
/// it can bind: a node never probes itself. Loopback addresses are left to
/// the caller (tests and benchmarks use them as stand-in peers).
pub fn is_local(addr: Ipv4Addr) -> bool {
    !addr.is_loopback() && UdpSocket::bind((addr, 0)).is_ok()
}

/// Static peers first, then discovered ones not already listed (by address).
pub fn merge(static_peers: &[Peer], discovered: &[Peer]) -> Vec<Peer> {
    let mut all = static_peers.to_vec();
    for peer in discovered {
        if !all.iter().any(|p| p.addr == peer.addr) {
            all.push(peer.clone());
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_resolves_to_a_loopback_peer() {
        let peers = resolve("localhost").unwrap();
        assert!(
            peers.iter().any(|p| p.addr == Ipv4Addr::LOCALHOST),
            "{peers:?}"
        );
        assert!(resolve("no-such-host.invalid").is_err());
    }

    #[test]
    fn own_addresses_are_recognised() {
        assert!(
            !is_local(Ipv4Addr::LOCALHOST),
            "loopback is the caller's call"
        );
        // TEST-NET-3 is never assigned to a host.
        assert!(!is_local(Ipv4Addr::new(203, 0, 113, 77)));
    }

    #[test]
    fn static_names_win_over_discovered_addresses() {
        let named = Peer::parse("node2=10.0.0.2").unwrap();
        let found = [
            Peer::parse("10.0.0.2").unwrap(),
            Peer::parse("10.0.0.3").unwrap(),
        ];
        let all = merge(std::slice::from_ref(&named), &found);
        assert_eq!(all, vec![named, found[1].clone()]);
    }
}
