//! A datagram read from the probe's raw sockets (ICMP echo reply or
//! unreachable, TCP SYN-ACK/RST) or a UDP echo: the reply parsers as the
//! probe and the agent chain them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstall_probe::packet::{self, IcmpMessage};

fuzz_target!(|data: &[u8]| {
    let token = 0x6e65_7473_7461_6c6c;
    let _ = packet::parse_payload(token, data);
    let Some(ip) = packet::parse_ipv4(data) else {
        return;
    };
    let Some(rest) = data.get(ip.header_len..) else {
        return;
    };
    match packet::parse_icmp(rest) {
        Some(IcmpMessage::EchoReply { payload, .. })
        | Some(IcmpMessage::Unreachable { payload, .. }) => {
            let _ = packet::parse_payload(token, payload);
        }
        None => {}
    }
    let _ = packet::parse_tcp(rest);
});
