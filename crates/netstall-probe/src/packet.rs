//! Building and parsing the few packets a prober needs: ICMP echo, TCP SYN
//! and their replies. Pure byte work, no sockets, so it is unit-tested.

use std::net::Ipv4Addr;

/// ICMP types used here.
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;

/// TCP flag bits.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// Bytes in every probe payload that tie a reply to this run: a magic, the
/// run token and the full 64-bit sequence number (ICMP and UDP carry it).
pub const PAYLOAD_LEN: usize = 24;
const MAGIC: &[u8; 8] = b"netstall";

/// The payload of probe `seq` in the run `token`.
pub fn payload(token: u64, seq: u64) -> [u8; PAYLOAD_LEN] {
    let mut p = [0u8; PAYLOAD_LEN];
    p[..8].copy_from_slice(MAGIC);
    p[8..16].copy_from_slice(&token.to_be_bytes());
    p[16..24].copy_from_slice(&seq.to_be_bytes());
    p
}

/// The sequence number in a payload of this run, if `data` is one.
pub fn parse_payload(token: u64, data: &[u8]) -> Option<u64> {
    if data.len() < PAYLOAD_LEN || &data[..8] != MAGIC {
        return None;
    }
    if data[8..16] != token.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(data[16..24].try_into().ok()?))
}

/// The Internet checksum (RFC 1071) over `chunks`, as if concatenated.
/// Every chunk but the last must have an even length.
pub fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in chunks {
        let mut words = chunk.chunks_exact(2);
        for w in &mut words {
            sum += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
        if let [last] = words.remainder() {
            sum += (*last as u32) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request (header + payload), checksummed.
pub fn icmp_echo(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![ICMP_ECHO_REQUEST, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    let sum = checksum(&[&p]);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// A TCP SYN segment without options, checksummed for `src` → `dst`.
pub fn tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, isn: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&isn.to_be_bytes());
    h[12] = 5 << 4; // data offset: 5 words
    h[13] = TCP_SYN;
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let pseudo = pseudo_header(src, dst, 6, h.len() as u16);
    let sum = checksum(&[&pseudo, &h]);
    h[16..18].copy_from_slice(&sum.to_be_bytes());
    h
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = proto;
    p[10..12].copy_from_slice(&len.to_be_bytes());
    p
}

/// The IPv4 header fields a reply line shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub id: u16,
    /// The Don't Fragment bit (hping3 prints `DF`).
    pub dont_fragment: bool,
    pub total_len: u16,
    pub protocol: u8,
    pub header_len: usize,
}

/// Parses the IPv4 header at the start of `data` (raw sockets deliver it).
pub fn parse_ipv4(data: &[u8]) -> Option<Ipv4Header> {
    if data.len() < 20 || data[0] >> 4 != 4 {
        return None;
    }
    let header_len = ((data[0] & 0x0f) as usize) * 4;
    if header_len < 20 || data.len() < header_len {
        return None;
    }
    Some(Ipv4Header {
        total_len: u16::from_be_bytes([data[2], data[3]]),
        id: u16::from_be_bytes([data[4], data[5]]),
        dont_fragment: data[6] & 0x40 != 0,
        ttl: data[8],
        protocol: data[9],
        src: Ipv4Addr::new(data[12], data[13], data[14], data[15]),
        dst: Ipv4Addr::new(data[16], data[17], data[18], data[19]),
        header_len,
    })
}

/// An ICMP message as received on a raw socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IcmpMessage<'a> {
    EchoReply {
        id: u16,
        seq: u16,
        payload: &'a [u8],
    },
    /// Destination unreachable quoting one of our echo requests.
    Unreachable {
        code: u8,
        id: u16,
        seq: u16,
        payload: &'a [u8],
    },
}

/// Parses an ICMP message (after the IP header).
pub fn parse_icmp(data: &[u8]) -> Option<IcmpMessage<'_>> {
    if data.len() < 8 {
        return None;
    }
    let id = u16::from_be_bytes([data[4], data[5]]);
    let seq = u16::from_be_bytes([data[6], data[7]]);
    match data[0] {
        ICMP_ECHO_REPLY => Some(IcmpMessage::EchoReply {
            id,
            seq,
            payload: &data[8..],
        }),
        ICMP_DEST_UNREACHABLE => {
            // The quoted datagram: its IP header, then our echo request.
            let inner = &data[8..];
            let ip = parse_ipv4(inner)?;
            let echo = inner.get(ip.header_len..)?;
            if ip.protocol != 1 || echo.len() < 8 || echo[0] != ICMP_ECHO_REQUEST {
                return None;
            }
            Some(IcmpMessage::Unreachable {
                code: data[1],
                id: u16::from_be_bytes([echo[4], echo[5]]),
                seq: u16::from_be_bytes([echo[6], echo[7]]),
                payload: &echo[8..],
            })
        }
        _ => None,
    }
}

/// The TCP header fields that match a SYN-ACK or RST to our SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
}

/// Parses a TCP header (after the IP header).
pub fn parse_tcp(data: &[u8]) -> Option<TcpHeader> {
    if data.len() < 20 {
        return None;
    }
    Some(TcpHeader {
        sport: u16::from_be_bytes([data[0], data[1]]),
        dport: u16::from_be_bytes([data[2], data[3]]),
        seq: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ack: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
        flags: data[13],
        window: u16::from_be_bytes([data[14], data[15]]),
    })
}

pub use netstall_events::probe::tcp_flags_text;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2, checksum 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data]), 0x220d);
        // Split into chunks, the same.
        assert_eq!(checksum(&[&data[..4], &data[4..]]), 0x220d);
    }

    #[test]
    fn a_checksummed_packet_sums_to_zero() {
        let echo = icmp_echo(0x1234, 7, &payload(9, 7));
        assert_eq!(checksum(&[&echo]), 0);
        let src = Ipv4Addr::new(192, 168, 50, 2);
        let dst = Ipv4Addr::new(192, 168, 50, 1);
        let syn = tcp_syn(src, dst, 40000, 30080, 0xdead_beef);
        let pseudo = pseudo_header(src, dst, 6, 20);
        assert_eq!(checksum(&[&pseudo, &syn]), 0);
        let parsed = parse_tcp(&syn).unwrap();
        assert_eq!((parsed.sport, parsed.dport), (40000, 30080));
        assert_eq!(parsed.seq, 0xdead_beef);
        assert_eq!(tcp_flags_text(parsed.flags), "S");
    }

    #[test]
    fn payloads_belong_to_one_run() {
        let p = payload(42, 1_000_000_007);
        assert_eq!(parse_payload(42, &p), Some(1_000_000_007));
        assert_eq!(parse_payload(43, &p), None);
        assert_eq!(parse_payload(42, &p[..10]), None);
    }

    #[test]
    fn echo_replies_and_unreachables_parse() {
        let mut reply = icmp_echo(5, 9, &payload(1, 9));
        reply[0] = ICMP_ECHO_REPLY;
        match parse_icmp(&reply).unwrap() {
            IcmpMessage::EchoReply { id, seq, payload } => {
                assert_eq!((id, seq), (5, 9));
                assert_eq!(parse_payload(1, payload), Some(9));
            }
            other => panic!("{other:?}"),
        }

        // Host unreachable quoting our request: ICMP header + IP header + echo.
        let request = icmp_echo(5, 10, &payload(1, 10));
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        ip.extend_from_slice(&[192, 168, 50, 2, 10, 99, 0, 1]);
        let mut msg = vec![ICMP_DEST_UNREACHABLE, 1, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&ip);
        msg.extend_from_slice(&request);
        match parse_icmp(&msg).unwrap() {
            IcmpMessage::Unreachable { code, id, seq, .. } => {
                assert_eq!((code, id, seq), (1, 5, 10))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ipv4_headers_parse() {
        let mut h = vec![0x45, 0, 0, 44, 0x12, 0x34, 0x40, 0, 63, 6, 0, 0];
        h.extend_from_slice(&[192, 168, 50, 1, 192, 168, 50, 2]);
        let ip = parse_ipv4(&h).unwrap();
        assert_eq!(ip.src, Ipv4Addr::new(192, 168, 50, 1));
        assert_eq!(
            (ip.ttl, ip.id, ip.total_len, ip.protocol, ip.header_len),
            (63, 0x1234, 44, 6, 20)
        );
        assert!(ip.dont_fragment);
        h[6] = 0;
        assert!(!parse_ipv4(&h).unwrap().dont_fragment);
        assert!(parse_ipv4(&h[..10]).is_none());
        assert_eq!(tcp_flags_text(TCP_SYN | TCP_ACK), "SA");
        assert_eq!(tcp_flags_text(TCP_RST | TCP_ACK), "RA");
    }
}
