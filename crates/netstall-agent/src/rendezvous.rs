//! Which peers a node probes: a bounded subset chosen by rendezvous
//! (highest-random-weight) hashing, so the mesh scales past thousands of
//! nodes.
//!
//! Each node scores every candidate with a hash of (node, candidate) and
//! probes the `k` highest. Every node computes its own subset from the same
//! list with no coordination; a node joining or leaving changes each other
//! node's subset by at most one peer; and since the scores are uniform, every
//! node is probed by about `k` others.

use crate::config::Peer;

/// The `k` peers `node` probes among `candidates` (itself excluded, by name
/// or address), best score first.
pub fn choose<'a>(node: &str, candidates: &'a [Peer], k: usize) -> Vec<&'a Peer> {
    let mut scored: Vec<(u64, &Peer)> = candidates
        .iter()
        .filter(|p| p.name != node)
        .map(|p| (score(node, &p.name), p))
        .collect();
    // Ties (practically impossible with 64-bit scores) fall back to the name,
    // so the choice never depends on the list's order.
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    scored.dedup_by(|a, b| a.1.addr == b.1.addr);
    scored.into_iter().take(k).map(|(_, p)| p).collect()
}

/// The weight of `peer` for `node`: FNV-1a over both names (with a
/// separator that cannot occur in either), finished with the SplitMix64
/// mixer so that similar names (node-1, node-2) get unrelated scores.
/// Stable across platforms and releases: every agent must agree.
fn score(node: &str, peer: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for byte in node.bytes().chain([0u8]).chain(peer.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    use super::*;

    fn fleet(n: u32) -> Vec<Peer> {
        (0..n)
            .map(|i| Peer {
                name: format!("node-{i}"),
                addr: Ipv4Addr::from(0x0a00_0000 + i),
            })
            .collect()
    }

    #[test]
    fn small_meshes_probe_everyone_but_themselves() {
        let peers = fleet(3);
        let chosen = choose("node-1", &peers, 10);
        let mut names: Vec<&str> = chosen.iter().map(|p| p.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["node-0", "node-2"]);
    }

    #[test]
    fn the_choice_ignores_list_order() {
        let peers = fleet(200);
        let mut reversed = peers.clone();
        reversed.reverse();
        assert_eq!(
            choose("node-7", &peers, 10),
            choose("node-7", &reversed, 10)
        );
    }

    #[test]
    fn every_node_is_probed_by_about_k_others() {
        let n = 2000;
        let k = 10;
        let peers = fleet(n);
        let mut probed_by: HashMap<&str, usize> = HashMap::new();
        for node in &peers {
            let chosen = choose(&node.name, &peers, k);
            assert_eq!(chosen.len(), k);
            for p in chosen {
                *probed_by.entry(p.name.as_str()).or_default() += 1;
            }
        }
        // Every node is watched; in-degree is Poisson-like around k.
        assert_eq!(probed_by.len(), n as usize, "some node is probed by nobody");
        let max = *probed_by.values().max().unwrap();
        assert!(max <= 3 * k, "a node is probed by {max} peers");
    }

    #[test]
    fn a_leaving_node_changes_each_subset_by_at_most_one() {
        let peers = fleet(500);
        let without: Vec<Peer> = peers
            .iter()
            .filter(|p| p.name != "node-42")
            .cloned()
            .collect();
        for node in peers.iter().filter(|p| p.name != "node-42") {
            let before = choose(&node.name, &peers, 10);
            let after = choose(&node.name, &without, 10);
            let kept = after.iter().filter(|p| before.contains(p)).count();
            assert!(kept >= 9, "{}: only {kept} of 10 kept", node.name);
        }
    }
}
