//! The probers on the wire: raw-socket ICMP echo, raw-socket TCP SYN
//! (matching SYN-ACK and RST, as hping3 does) and UDP to an echo responder
//! (or the ICMP port unreachable of a closed port).
//!
//! Each owns its sockets; the session's sender calls [`Wire::send`] on an
//! absolute schedule and its receiver hands every datagram to
//! [`Wire::reply`]. TX timestamps come back on the sockets' error queues,
//! keyed by the per-socket send counter (SO_TIMESTAMPING OPT_ID).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

use crate::model::Reply;
use crate::packet::{self, IcmpMessage, TCP_ACK, TCP_RST, TCP_SYN};
use crate::sys::{self, ExtendedError, Stamping};

/// Receive buffer for bursts of replies released together.
const RCVBUF_BYTES: usize = 4 << 20;

/// A prober on the wire.
pub trait Wire: Send + Sync {
    /// The sockets to poll, in the order `socket` indices refer to.
    fn fds(&self) -> Vec<RawFd>;
    /// The kernel timestamps the sockets deliver.
    fn stamping(&self) -> Stamping;
    /// The source port of `flow` (TCP, UDP).
    fn src_port(&self, flow: u16) -> Option<u16>;
    /// Sends probe `seq` on `flow`; returns the index of the socket used.
    fn send(&self, seq: u64, flow: u16) -> io::Result<usize>;
    /// The probe a datagram read from socket `socket` answers, if any.
    fn reply(&self, socket: usize, data: &[u8]) -> Option<(u64, Reply)>;
    /// The probe an ICMP error from socket `socket`'s error queue answers.
    fn icmp_error(
        &self,
        _socket: usize,
        _error: &ExtendedError,
        _data: &[u8],
    ) -> Option<(u64, Reply)> {
        None
    }
}

/// What every wire needs to build and recognise its probes.
#[derive(Debug, Clone, Copy)]
pub struct WireConfig {
    pub target: Ipv4Addr,
    /// Destination port (TCP, UDP).
    pub port: u16,
    pub flows: u16,
    /// Random per session: replies to anyone else's probes are ignored.
    pub token: u64,
}

fn raw_socket(protocol: libc::c_int, what: &str) -> Result<OwnedFd> {
    netstall_core::privilege::require(&[netstall_core::privilege::Capability::NetRaw], what)?;
    sys::socket(libc::SOCK_RAW, protocol)
        .with_context(|| format!("{what} needs CAP_NET_RAW: cannot open a raw socket"))
}

/// Recovers a 64-bit sequence number from its low 32 bits, taking the value
/// closest below the next sequence number to be sent.
fn widen_seq(low: u32, next: u64) -> u64 {
    let candidate = (next & !0xffff_ffff) | low as u64;
    if candidate >= next && candidate >= 1 << 32 {
        candidate - (1 << 32)
    } else {
        candidate
    }
}

/// ICMP echo on a raw socket. Flows differ by echo identifier only: RSS and
/// RPS hash ICMP on addresses, so every flow takes the same path on purpose.
pub struct IcmpWire {
    config: WireConfig,
    socket: OwnedFd,
    stamping: Stamping,
    ident: u16,
}

impl IcmpWire {
    /// Opens the raw ICMP socket (needs CAP_NET_RAW).
    pub fn open(config: WireConfig) -> Result<Self> {
        let socket = raw_socket(libc::IPPROTO_ICMP, "ICMP probing")?;
        sys::grow_receive_buffer(&socket, RCVBUF_BYTES);
        let stamping = sys::enable_stamping(&socket);
        Ok(Self {
            ident: (config.token >> 16) as u16,
            config,
            socket,
            stamping,
        })
    }

    fn flow_of(&self, id: u16) -> Option<u16> {
        let flow = id.wrapping_sub(self.ident);
        (flow < self.config.flows).then_some(flow)
    }
}

impl Wire for IcmpWire {
    fn fds(&self) -> Vec<RawFd> {
        vec![self.socket.as_raw_fd()]
    }
    fn stamping(&self) -> Stamping {
        self.stamping
    }
    fn src_port(&self, _flow: u16) -> Option<u16> {
        None
    }

    fn send(&self, seq: u64, flow: u16) -> io::Result<usize> {
        let echo = packet::icmp_echo(
            self.ident.wrapping_add(flow),
            seq as u16,
            &packet::payload(self.config.token, seq),
        );
        sys::send_to(
            &self.socket,
            &echo,
            Some(SocketAddrV4::new(self.config.target, 0)),
        )?;
        Ok(0)
    }

    fn reply(&self, _socket: usize, data: &[u8]) -> Option<(u64, Reply)> {
        let ip = packet::parse_ipv4(data)?;
        match packet::parse_icmp(data.get(ip.header_len..)?)? {
            IcmpMessage::EchoReply {
                id,
                seq: icmp_seq,
                payload,
            } if ip.src == self.config.target => {
                self.flow_of(id)?;
                let seq = packet::parse_payload(self.config.token, payload)?;
                Some((
                    seq,
                    Reply::Echo {
                        ip: ip.src,
                        len: ip.total_len,
                        ttl: ip.ttl,
                        df: ip.dont_fragment,
                        ip_id: ip.id,
                        icmp_seq,
                    },
                ))
            }
            IcmpMessage::Unreachable {
                code, id, payload, ..
            } => {
                self.flow_of(id)?;
                let seq = packet::parse_payload(self.config.token, payload)?;
                Some((seq, Reply::Unreachable { ip: ip.src, code }))
            }
            _ => None,
        }
    }
}

/// TCP SYN on a raw socket, from one reserved source port per flow. The
/// initial sequence number carries the probe's number, so the SYN-ACK's or
/// RST's acknowledgement names the probe it answers.
pub struct SynWire {
    config: WireConfig,
    socket: OwnedFd,
    stamping: Stamping,
    source: Ipv4Addr,
    /// Bound (never listening) TCP sockets that keep each flow's source port
    /// ours; the kernel still answers the SYN-ACK with a RST, as for hping3.
    ports: Vec<(OwnedFd, u16)>,
    next_seq: AtomicU64,
}

impl SynWire {
    /// Opens the raw TCP socket and reserves one source port per flow (needs CAP_NET_RAW).
    pub fn open(config: WireConfig) -> Result<Self> {
        let socket = raw_socket(libc::IPPROTO_TCP, "TCP SYN probing")?;
        sys::grow_receive_buffer(&socket, RCVBUF_BYTES);
        let stamping = sys::enable_stamping(&socket);
        let source = sys::route_source(config.target)?;
        let ports = reserve_ports(libc::SOCK_STREAM, source, config.flows)?;
        Ok(Self {
            config,
            socket,
            stamping,
            source,
            ports,
            next_seq: AtomicU64::new(0),
        })
    }

    fn isn(&self, seq: u64) -> u32 {
        (self.config.token as u32).wrapping_add(seq as u32)
    }
}

fn reserve_ports(kind: libc::c_int, source: Ipv4Addr, flows: u16) -> Result<Vec<(OwnedFd, u16)>> {
    (0..flows)
        .map(|_| {
            let fd =
                sys::socket(kind, 0).context("cannot open a socket to reserve a source port")?;
            sys::bind(&fd, SocketAddrV4::new(source, 0)).context("cannot reserve a source port")?;
            let port = sys::local_addr(&fd)?.port();
            Ok((fd, port))
        })
        .collect()
}

impl Wire for SynWire {
    fn fds(&self) -> Vec<RawFd> {
        vec![self.socket.as_raw_fd()]
    }
    fn stamping(&self) -> Stamping {
        self.stamping
    }
    fn src_port(&self, flow: u16) -> Option<u16> {
        self.ports.get(flow as usize).map(|(_, port)| *port)
    }

    fn send(&self, seq: u64, flow: u16) -> io::Result<usize> {
        let sport = self.ports[flow as usize].1;
        let syn = packet::tcp_syn(
            self.source,
            self.config.target,
            sport,
            self.config.port,
            self.isn(seq),
        );
        self.next_seq.fetch_max(seq + 1, Ordering::Relaxed);
        sys::send_to(
            &self.socket,
            &syn,
            Some(SocketAddrV4::new(self.config.target, 0)),
        )?;
        Ok(0)
    }

    fn reply(&self, _socket: usize, data: &[u8]) -> Option<(u64, Reply)> {
        let ip = packet::parse_ipv4(data)?;
        if ip.src != self.config.target || ip.protocol != libc::IPPROTO_TCP as u8 {
            return None;
        }
        let tcp = packet::parse_tcp(data.get(ip.header_len..)?)?;
        let answers_syn =
            tcp.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK || tcp.flags & TCP_RST != 0;
        if tcp.sport != self.config.port
            || !answers_syn
            || !self.ports.iter().any(|(_, p)| *p == tcp.dport)
        {
            return None;
        }
        let low = tcp
            .ack
            .wrapping_sub(1)
            .wrapping_sub(self.config.token as u32);
        let seq = widen_seq(low, self.next_seq.load(Ordering::Relaxed));
        Some((
            seq,
            Reply::Tcp {
                ip: ip.src,
                len: ip.total_len,
                ttl: ip.ttl,
                df: ip.dont_fragment,
                ip_id: ip.id,
                sport: tcp.sport,
                flags: tcp.flags,
                win: tcp.window,
            },
        ))
    }
}

/// UDP from one connected socket per flow (its source port) to an echo
/// responder; a closed port's ICMP port unreachable is the answer too.
pub struct UdpWire {
    config: WireConfig,
    sockets: Vec<(OwnedFd, u16)>,
    stamping: Stamping,
}

impl UdpWire {
    /// Opens one connected UDP socket per flow.
    pub fn open(config: WireConfig) -> Result<Self> {
        let source = sys::route_source(config.target)?;
        let sockets = reserve_ports(libc::SOCK_DGRAM, source, config.flows)?;
        let mut stamping = Stamping::TxRx;
        for (fd, _) in &sockets {
            let fd = fd.as_fd();
            sys::connect(fd, SocketAddrV4::new(config.target, config.port))
                .with_context(|| format!("target {} is unreachable", config.target))?;
            sys::enable_recverr(fd).context("cannot enable IP_RECVERR")?;
            sys::grow_receive_buffer(fd, RCVBUF_BYTES / 4);
            stamping = stamping.min(sys::enable_stamping(fd));
        }
        Ok(Self {
            config,
            sockets,
            stamping,
        })
    }
}

impl Wire for UdpWire {
    fn fds(&self) -> Vec<RawFd> {
        self.sockets.iter().map(|(fd, _)| fd.as_raw_fd()).collect()
    }
    fn stamping(&self) -> Stamping {
        self.stamping
    }
    fn src_port(&self, flow: u16) -> Option<u16> {
        self.sockets.get(flow as usize).map(|(_, port)| *port)
    }

    fn send(&self, seq: u64, flow: u16) -> io::Result<usize> {
        let fd = self.sockets[flow as usize].0.as_fd();
        let payload = packet::payload(self.config.token, seq);
        match sys::send_to(fd, &payload, None) {
            // A port unreachable for an earlier probe is reported once on
            // the next send as ECONNREFUSED; it was already read from the
            // error queue, so send again.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                sys::send_to(fd, &payload, None)
            }
            other => other,
        }?;
        Ok(flow as usize)
    }

    fn reply(&self, socket: usize, data: &[u8]) -> Option<(u64, Reply)> {
        let seq = packet::parse_payload(self.config.token, data)?;
        Some((
            seq,
            Reply::Udp {
                ip: self.config.target,
                len: data.len() as u16,
                sport: self.sockets.get(socket).map(|_| self.config.port)?,
            },
        ))
    }

    fn icmp_error(
        &self,
        _socket: usize,
        error: &ExtendedError,
        data: &[u8],
    ) -> Option<(u64, Reply)> {
        if error.origin != sys::ORIGIN_ICMP || error.icmp_type != packet::ICMP_DEST_UNREACHABLE {
            return None;
        }
        let seq = packet::parse_payload(self.config.token, data)?;
        Some((
            seq,
            Reply::Unreachable {
                ip: error.offender.unwrap_or(self.config.target),
                code: error.icmp_code,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_widen_from_32_bits() {
        assert_eq!(widen_seq(5, 10), 5);
        assert_eq!(widen_seq(9, 10), 9);
        // Just past a 2^32 boundary, a low value is the new epoch, a high one the old.
        let next = (1u64 << 32) + 3;
        assert_eq!(widen_seq(1, next), (1 << 32) + 1);
        assert_eq!(widen_seq(u32::MAX, next), u32::MAX as u64);
    }
}
