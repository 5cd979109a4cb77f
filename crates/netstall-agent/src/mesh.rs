//! Mesh probing: ICMP echo to each chosen peer at a fixed rate, from one
//! thread and one raw socket. Probes go out in rounds, one to every peer
//! in a single sendmmsg(2) (10 peers at 10 Hz: a round every 100 ms), and
//! the thread sleeps between rounds, never spins: it wakes once per round,
//! not once per probe and once per reply, because the agent's budget is a
//! quarter of a percent of a core.
//!
//! Replies wait in the socket with the kernel's receive timestamp and are
//! read in bulk once a second (recvmmsg(2)), sooner when more than 100
//! would pile up; every finished probe goes to its peer's
//! [`PeerTracker`], read for episodes once a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use netstall_core::clock::{monotonic_ns, realtime_ns};
use netstall_core::shutdown::Shutdown;
use netstall_probe::packet::{self, IcmpMessage};
use netstall_probe::{Episode, ProbeResult, Proto, TsSource};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::config::Peer;
use crate::icmp::{IcmpSocket, RecvBatch};
use crate::metrics::ProtoLabels;
use crate::tracker::PeerTracker;
use crate::State;

/// A probe with no reply after this long is lost.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How often episodes and timeouts are looked at.
const TICK: Duration = Duration::from_secs(1);
/// Replies left in the socket between reads at most: a raw socket's default
/// receive buffer (208 KiB) holds about 270 of them.
const MAX_HELD_REPLIES: usize = 100;
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

/// Probes until `stop` is requested or `peers_generation` moves past
/// `generation` (the peer set changed: the caller chooses again and restarts).
pub fn run(
    config: &MeshConfig,
    socket: &IcmpSocket,
    state: &State,
    stop: &Shutdown,
    (peers_generation, generation): (&AtomicU64, u64),
) -> Result<()> {
    // The per-node series exist from the first scrape; the handles are kept
    // so that a probe does not look its series up again.
    let probes_sent = state.metrics.probes_sent.get_or_create(&ICMP).clone();
    let probes_lost = state.metrics.probes_lost.get_or_create(&ICMP).clone();
    let probe_rtt = state.metrics.probe_rtt.get_or_create(&ICMP).clone();
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
    // Probes are answered or given up within the timeout, and looked at
    // every tick: the ring holds every probe that can be in flight, twice over.
    let ring = config.peers.len() * config.rate as usize * (TIMEOUT + TICK).as_secs() as usize;
    let mut in_flight = InFlightProbes::new(2 * ring);
    let mut seq = 0u64;
    let mut next_round = monotonic_ns();
    let mut next_tick = next_round + TICK.as_nanos() as u64;
    // Replies wait in the socket with their kernel receive time, so they are
    // read in bulk: every tick, or sooner when a tick's worth would not fit.
    let rounds_per_read = (MAX_HELD_REPLIES / config.peers.len()).clamp(1, config.rate as usize);
    let mut rounds_unread = 0;
    let mut replies = Replies {
        token,
        ident,
        // Room for every reply held between reads, and a few others'.
        batch: RecvBatch::new(rounds_per_read * config.peers.len() + 4),
        rtt: probe_rtt,
    };

    while peers_generation.load(Ordering::Relaxed) == generation {
        let now = monotonic_ns();
        if now >= next_tick || (now >= next_round && rounds_unread >= rounds_per_read) {
            replies.drain(socket, &config.peers, &mut in_flight, &mut trackers)?;
            rounds_unread = 0;
        }
        if now >= next_round {
            let scheduled_ns = realtime_ns().saturating_sub(now - next_round);
            let echoes: Vec<Vec<u8>> = (seq..)
                .take(config.peers.len())
                .map(|s| packet::icmp_echo(ident, s as u16, &packet::payload(token, s)))
                .collect();
            let messages: Vec<(&[u8], _)> = echoes
                .iter()
                .zip(&config.peers)
                .map(|(echo, peer)| (echo.as_slice(), peer.addr))
                .collect();
            // One stamp for the round: its probes leave within microseconds.
            let sent_ns = realtime_ns();
            let sent = socket.send_each(&messages);
            for (peer, result) in sent.iter().enumerate() {
                let probe = InFlight {
                    peer,
                    scheduled_ns,
                    sent_ns,
                };
                match result {
                    Ok(()) => {
                        if let Some((old_seq, old)) = in_flight.insert(seq, probe) {
                            probes_lost.inc();
                            trackers[old.peer].record(result_of(old_seq, &old, None));
                        }
                    }
                    // An unroutable peer is a lost probe, not a reason to stop.
                    Err(_) => trackers[peer].record(result_of(seq, &probe, None)),
                }
                seq += 1;
            }
            probes_sent.inc_by(config.peers.len() as u64);
            rounds_unread += 1;
            next_round += period_ns;
            // After a long suspension, resume the schedule instead of bursting.
            if next_round + 1_000_000_000 < now {
                next_round = now + period_ns;
            }
        }
        if now >= next_tick {
            expire(&mut in_flight, &mut trackers, &probes_lost);
            for (peer, tracker) in config.peers.iter().zip(trackers.iter_mut()) {
                for episode in tracker.new_episodes() {
                    report_episode(state, peer, &episode);
                }
            }
            next_tick += TICK.as_nanos() as u64;
        }

        // Sleep through to the next round: replies wait in the socket with
        // the kernel's receive timestamp, so reading them later costs no
        // accuracy and saves a wake-up per reply (and a read per round).
        let until = next_round.min(next_tick).saturating_sub(monotonic_ns());
        if stop.wait(Duration::from_nanos(until)) {
            break;
        }
    }
    Ok(())
}

/// Reads our echo replies off the socket into their peers' trackers.
struct Replies {
    token: u64,
    ident: u16,
    batch: RecvBatch,
    rtt: Histogram,
}

impl Replies {
    /// Takes every reply waiting in the socket.
    fn drain(
        &mut self,
        socket: &IcmpSocket,
        peers: &[Peer],
        in_flight: &mut InFlightProbes,
        trackers: &mut [PeerTracker],
    ) -> Result<()> {
        let (token, ident, rtt) = (self.token, self.ident, &self.rtt);
        socket.recv_waiting(&mut self.batch, |datagram, received| {
            let Some(seq) = reply_seq(datagram, token, ident) else {
                return;
            };
            let Some(probe) = in_flight.remove(seq) else {
                return;
            };
            if received.from != peers[probe.peer].addr {
                return;
            }
            let arrived_ns = received.kernel_ns.unwrap_or_else(realtime_ns);
            let rtt_ns = arrived_ns.saturating_sub(probe.sent_ns);
            rtt.observe(rtt_ns as f64 / 1e9);
            trackers[probe.peer].record(result_of(seq, &probe, Some(rtt_ns)));
        })?;
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

fn result_of(seq: u64, probe: &InFlight, rtt_ns: Option<u64>) -> ProbeResult {
    ProbeResult {
        seq,
        flow: 0,
        proto: Proto::Icmp,
        src_port: None,
        sent_ns: probe.sent_ns,
        scheduled_ns: probe.scheduled_ns,
        late_ns: probe.sent_ns.saturating_sub(probe.scheduled_ns),
        rtt_ns,
        wake_ns: None,
        timestamps: TsSource::User,
        reply: None,
    }
}

/// Gives up on probes older than the timeout.
fn expire(in_flight: &mut InFlightProbes, trackers: &mut [PeerTracker], lost: &Counter) {
    let deadline = realtime_ns().saturating_sub(TIMEOUT.as_nanos() as u64);
    for (seq, probe) in in_flight.take_sent_before(deadline) {
        lost.inc();
        trackers[probe.peer].record(result_of(seq, &probe, None));
    }
}

/// The probes awaiting a reply, in a ring indexed by seq: a reply finds its
/// probe without hashing, and the ring never grows.
struct InFlightProbes {
    slots: Vec<Option<(u64, InFlight)>>,
}

impl InFlightProbes {
    fn new(capacity: usize) -> Self {
        Self {
            slots: (0..capacity.max(1)).map(|_| None).collect(),
        }
    }

    fn slot(&self, seq: u64) -> usize {
        (seq % self.slots.len() as u64) as usize
    }

    /// Adds a probe; returns the one still in its slot, if the ring wrapped
    /// onto a live probe (it is then lost, not forgotten).
    fn insert(&mut self, seq: u64, probe: InFlight) -> Option<(u64, InFlight)> {
        let slot = self.slot(seq);
        self.slots[slot].replace((seq, probe))
    }

    fn remove(&mut self, seq: u64) -> Option<InFlight> {
        let slot = self.slot(seq);
        match &self.slots[slot] {
            Some((held, _)) if *held == seq => self.slots[slot].take().map(|(_, p)| p),
            _ => None,
        }
    }

    /// Takes the probes sent before `deadline_ns`, oldest first.
    fn take_sent_before(&mut self, deadline_ns: u64) -> Vec<(u64, InFlight)> {
        let mut expired: Vec<(u64, InFlight)> = self
            .slots
            .iter_mut()
            .filter(|s| s.as_ref().is_some_and(|(_, p)| p.sent_ns < deadline_ns))
            .filter_map(Option::take)
            .collect();
        expired.sort_unstable_by_key(|&(seq, _)| seq);
        expired
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
    state.event(Episode {
        node: Some(state.node.clone()),
        peer: Some(peer.name.clone()),
        ..episode.clone()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_at(sent_ns: u64) -> InFlight {
        InFlight {
            peer: 0,
            scheduled_ns: sent_ns,
            sent_ns,
        }
    }

    #[test]
    fn in_flight_probes_are_found_by_seq_and_expire_oldest_first() {
        let mut ring = InFlightProbes::new(4);
        for seq in 10..13 {
            assert!(ring.insert(seq, sent_at(seq * 100)).is_none());
        }
        assert_eq!(ring.remove(11).map(|p| p.sent_ns), Some(1100));
        assert!(ring.remove(11).is_none(), "removed once");
        assert!(ring.remove(15).is_none(), "slot of 11, another seq");
        let expired: Vec<u64> = ring
            .take_sent_before(1250)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(expired, vec![10, 12]);
        assert!(ring.take_sent_before(u64::MAX).is_empty());
        // Wrapping onto a live probe hands it back instead of losing it.
        assert!(ring.insert(20, sent_at(1)).is_none());
        assert_eq!(ring.insert(24, sent_at(2)).map(|(s, _)| s), Some(20));
    }

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
