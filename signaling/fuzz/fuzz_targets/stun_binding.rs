//! Arbitrary datagrams from arbitrary source addresses through the STUN server's
//! per-datagram path, `stun_server::answer` (what `serve` runs on every datagram it
//! receives). Half of the inputs are dressed as a Binding request header (type, length,
//! magic cookie) so the fuzzer spends its time in the attribute decoder.
//!
//! Nothing may panic. A reply must be a Binding success for the request's transaction
//! that carries the sender's address and port, must stay small (the server must not
//! amplify: at most 52 bytes, header plus XOR-MAPPED-ADDRESS plus FINGERPRINT), and
//! must not itself be answered (two servers must not ping-pong).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use magpie_media::ice::parse_binding_response;
use magpie_signaling::stun_server::answer;

/// 20-byte header, XOR-MAPPED-ADDRESS for IPv6 (4 + 20), FINGERPRINT (4 + 4).
const MAX_REPLY: usize = 20 + 24 + 8;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

#[derive(Debug, Arbitrary)]
struct Input {
    v6: bool,
    ip: [u8; 16],
    port: u16,
    flowinfo: u32,
    scope_id: u32,
    dress: bool,
    datagram: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let from = if input.v6 {
        let ip = Ipv6Addr::from(input.ip);
        SocketAddr::V6(SocketAddrV6::new(ip, input.port, input.flowinfo, input.scope_id))
    } else {
        let [a, b, c, d, ..] = input.ip;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), input.port)
    };
    let mut datagram = input.datagram;
    if input.dress && datagram.len() >= 20 {
        let length = u16::try_from(datagram.len() - 20).unwrap_or(u16::MAX);
        datagram[0..2].copy_from_slice(&[0x00, 0x01]);
        datagram[2..4].copy_from_slice(&length.to_be_bytes());
        datagram[4..8].copy_from_slice(&MAGIC_COOKIE);
    }
    let Some(reply) = answer(&datagram, from) else {
        return;
    };
    assert!(reply.len() <= MAX_REPLY, "a {}-byte reply", reply.len());
    let transaction_id: [u8; 12] = datagram[8..20].try_into().expect("a request has a header");
    let mapped = parse_binding_response(&reply, transaction_id).expect("a reply parses");
    // XOR-MAPPED-ADDRESS carries the address and port, not IPv6 flow or scope.
    assert_eq!((mapped.ip(), mapped.port()), (from.ip(), from.port()));
    assert_eq!(answer(&reply, from), None, "a reply is answered");
});
