//! Mesh probing: ICMP echo to each chosen peer at a fixed rate, from one
//! thread and one raw socket. Probes go out in rounds, one to every peer
//! back to back (10 peers at 10 Hz: a round every 100 ms), and the thread
//! sleeps between rounds, never spins: it wakes once per round, not once
//! per probe and once per reply, because the agent's budget is a quarter of
//! a percent of a core.
//!
//! Replies wait in the socket with the kernel's receive timestamp and are
//! read at the next round; every finished probe goes to its peer's
//! [`PeerTracker`], read for episodes once a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use netstall_core::clock::{monotonic_ns, realtime_ns};
use netstall_probe::packet::{self, IcmpMessage};
use netstall_probe::{Episode, ProbeResult, Proto, TsSource};
use serde::Serialize;

use crate::config::Peer;
use crate::icmp::IcmpSocket;
use crate::metrics::ProtoLabels;
use crate::tracker::PeerTracker;
use crate::State;

/// A probe with no reply after this long is lost.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How often episodes and timeouts are looked at.
const TICK: Duration = Duration::from_secs(1);
/// Seconds of each peer's probes kept for episode detection.
const WINDOW_SECONDS: u32 = 20;
const ICMP: ProtoLabels = ProtoLabels { proto: "icmp" };

/// What the mesh needs to run.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub peers: Vec<Peer>,
    /// Probes per second to each peer.
    pub rate: u32,
    /// Delay over a peer's normal RTT that makes a spike.
    pub threshold: Duration,
}

struct InFlight {
    peer: usize,
    scheduled_ns: u64,
    sent_ns: u64,
}

/// The `{"type":"episode"}` event.
#[derive(Debug, Serialize)]
struct EpisodeEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    node: &'a str,
    peer: &'a str,
    #[serde(flatten)]
    episode: &'a Episode,
}

/// Probes until `stop` is set or `peers_generation` moves past `generation`
/// (the peer set changed: the caller chooses again and restarts).
pub fn run(
    config: &MeshConfig,
    socket: &IcmpSocket,
    state: &State,
    stop: &AtomicBool,
    (peers_generation, generation): (&AtomicU64, u64),
) -> Result<()> {
    // Touch the per-node series so they exist from the first scrape.
    let _ = state.metrics.probes_sent.get_or_create(&ICMP);
    let _ = state.metrics.probes_lost.get_or_create(&ICMP);
    let _ = state.metrics.probe_rtt.get_or_create(&ICMP);
    anyhow::ensure!(!config.peers.is_empty(), "the mesh needs at least one peer");

    let token = realtime_ns() ^ (u64::from(std::process::id()) << 32);
    let ident = (token >> 16) as u16;
    let interval = Duration::from_secs(1) / config.rate;
    let capacity = (config.rate * WINDOW_SECONDS) as usize;
    let mut trackers: Vec<PeerTracker> = config
        .peers
        .iter()
        .map(|_| PeerTracker::new(interval, config.threshold, capacity))
        .collect();
    let period_ns = 1_000_000_000 / u64::from(config.rate);
    let mut in_flight: HashMap<u64, InFlight> = HashMap::new();
    let mut seq = 0u64;
    let mut next_round = monotonic_ns();
    let mut next_tick = next_round + TICK.as_nanos() as u64;
    let mut replies = Replies {
        token,
        ident,
        buf: [0; 1500],
    };

    while !stop.load(Ordering::Relaxed) && peers_generation.load(Ordering::Relaxed) == generation {
        let now = monotonic_ns();
        if now >= next_round.min(next_tick) {
            replies.drain(socket, &config.peers, &mut in_flight, &mut trackers, state)?;
        }
        if now >= next_round {
            let scheduled_ns = realtime_ns().saturating_sub(now - next_round);
            for (peer, to) in config.peers.iter().enumerate() {
                let echo = packet::icmp_echo(ident, seq as u16, &packet::payload(token, seq));
                let sent_ns = realtime_ns();
                match socket.send(&echo, to.addr) {
                    Ok(()) => {
                        in_flight.insert(
                            seq,
                            InFlight {
                                peer,
                                scheduled_ns,
                                sent_ns,
                            },
                        );
                    }
                    // An unroutable peer is a lost probe, not a reason to stop.
                    Err(_) => trackers[peer].record(result(seq, scheduled_ns, sent_ns, None)),
                }
                seq += 1;
            }
            state
                .metrics
                .probes_sent
                .get_or_create(&ICMP)
                .inc_by(config.peers.len() as u64);
            next_round += period_ns;
            // After a long suspension, resume the schedule instead of bursting.
            if next_round + 1_000_000_000 < now {
                next_round = now + period_ns;
            }
        }
        if now >= next_tick {
            expire(&mut in_flight, &mut trackers, state);
            for (peer, tracker) in config.peers.iter().zip(trackers.iter_mut()) {
                for episode in tracker.new_episodes() {
                    report_episode(state, peer, &episode);
                }
            }
            next_tick += TICK.as_nanos() as u64;
        }

        // Sleep through to the next round: replies wait in the socket with
        // the kernel's receive timestamp, so reading them then costs no
        // accuracy and saves a wake-up per reply.
        std::thread::sleep(Duration::from_nanos(
            next_round.min(next_tick).saturating_sub(monotonic_ns()),
        ));
    }
    Ok(())
}

/// Reads our echo replies off the socket into their peers' trackers.
struct Replies {
    token: u64,
    ident: u16,
    buf: [u8; 1500],
}

impl Replies {
    /// Takes every reply waiting in the socket.
    fn drain(
        &mut self,
        socket: &IcmpSocket,
        peers: &[Peer],
        in_flight: &mut HashMap<u64, InFlight>,
        trackers: &mut [PeerTracker],
        state: &State,
    ) -> Result<()> {
        while let Some(received) = socket.recv(&mut self.buf)? {
            let read_ns = realtime_ns();
            let Some(seq) = reply_seq(&self.buf[..received.len], self.token, self.ident) else {
                continue;
            };
            let Some(probe) = in_flight.remove(&seq) else {
                continue;
            };
            if received.from != peers[probe.peer].addr {
                continue;
            }
            let arrived_ns = received.kernel_ns.unwrap_or(read_ns);
            let rtt_ns = arrived_ns.saturating_sub(probe.sent_ns);
            state
                .metrics
                .probe_rtt
                .get_or_create(&ICMP)
                .observe(rtt_ns as f64 / 1e9);
            trackers[probe.peer].record(result(
                seq,
                probe.scheduled_ns,
                probe.sent_ns,
                Some(rtt_ns),
            ));
        }
        Ok(())
    }
}

/// The sequence number of one of our echo replies.
fn reply_seq(datagram: &[u8], token: u64, ident: u16) -> Option<u64> {
    let ip = packet::parse_ipv4(datagram)?;
    match packet::parse_icmp(datagram.get(ip.header_len..)?)? {
        IcmpMessage::EchoReply { id, payload, .. } if id == ident => {
            packet::parse_payload(token, payload)
        }
        _ => None,
    }
}

fn result(seq: u64, scheduled_ns: u64, sent_ns: u64, rtt_ns: Option<u64>) -> ProbeResult {
    ProbeResult {
        seq,
        flow: 0,
        proto: Proto::Icmp,
        src_port: None,
        sent_ns,
        scheduled_ns,
        late_ns: sent_ns.saturating_sub(scheduled_ns),
        rtt_ns,
        wake_ns: None,
        timestamps: TsSource::User,
        reply: None,
    }
}

/// Gives up on probes older than the timeout.
fn expire(in_flight: &mut HashMap<u64, InFlight>, trackers: &mut [PeerTracker], state: &State) {
    let deadline = realtime_ns().saturating_sub(TIMEOUT.as_nanos() as u64);
    let mut lost: Vec<u64> = in_flight
        .iter()
        .filter(|(_, p)| p.sent_ns < deadline)
        .map(|(&seq, _)| seq)
        .collect();
    lost.sort_unstable();
    for seq in lost {
        let probe = in_flight.remove(&seq).expect("listed above");
        state.metrics.probes_lost.get_or_create(&ICMP).inc();
        trackers[probe.peer].record(result(seq, probe.scheduled_ns, probe.sent_ns, None));
    }
}

fn report_episode(state: &State, peer: &Peer, episode: &Episode) {
    let kind = match episode.kind {
        netstall_probe::EpisodeKind::BacklogRelease => "backlog-release",
        netstall_probe::EpisodeKind::Spike => "spike",
        netstall_probe::EpisodeKind::Loss => "loss",
    };
    state.metrics.count_episode(&peer.name, kind);
    state
        .health
        .lock()
        .expect("health lock")
        .episode(episode.end_ns, &peer.name);
    state.event(&EpisodeEvent {
        kind: "episode",
        node: &state.node,
        peer: &peer.name,
        episode,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_echo_replies_are_matched() {
        let token = 0x1234_5678_9abc_def0;
        let ident = 0x9abc;
        let mut reply = vec![
            0x45, 0, 0, 52, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        let mut echo = packet::icmp_echo(ident, 7, &packet::payload(token, 70_007));
        echo[0] = packet::ICMP_ECHO_REPLY;
        reply.extend_from_slice(&echo);
        assert_eq!(reply_seq(&reply, token, ident), Some(70_007));
        assert_eq!(
            reply_seq(&reply, token ^ 1, ident),
            None,
            "another agent's token"
        );
        assert_eq!(
            reply_seq(&reply, token, ident ^ 1),
            None,
            "another identifier"
        );
        assert_eq!(reply_seq(&reply[..30], token, ident), None, "truncated");
    }
}
