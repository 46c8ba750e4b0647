//! The hand-read parts of TURN's wire format (the Data indication that carries every
//! relayed packet before a channel is bound, XOR-PEER-ADDRESS), the few attribute
//! helpers requests share, and which peer addresses a relay can reach at all.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use stun::attributes::{ATTR_DATA, ATTR_LIFETIME, ATTR_XOR_PEER_ADDRESS};
use stun::message::{CLASS_INDICATION, METHOD_DATA, Message, MessageType};
use stun::xoraddr::XorMappedAddress;

use super::Relayed;

/// The STUN magic cookie (RFC 8489 §5).
pub(super) const MAGIC_COOKIE: u32 = 0x2112_a442;

/// Whether a TURN server at `server` could relay to `ip` at all: not unspecified,
/// multicast or link-local (no meaning off the peer's own link), and loopback only when
/// the server is on loopback too (the peer runs on the server's machine, as in tests;
/// otherwise it would be the server itself). Servers refuse these (coturn answers 403),
/// so a client does not ask.
pub fn relayable(ip: IpAddr, server: IpAddr) -> bool {
    if ip.is_loopback() {
        return server.is_loopback();
    }
    let special = match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    !(ip.is_unspecified() || ip.is_multicast() || special)
}

pub(super) fn add_peer(msg: &mut Message, peer: SocketAddr) {
    let address = XorMappedAddress {
        ip: peer.ip(),
        port: peer.port(),
    };
    address
        .add_to_as(msg, ATTR_XOR_PEER_ADDRESS)
        .expect("an address always fits");
}

/// A mobility ticket in a response: at most this long (RFC 8016 leaves its size to the
/// server; coturn's and ours are far shorter), so it always fits the next Refresh.
const MAX_TICKET: usize = 256;

/// The MOBILITY-TICKET of a response, when it carries a usable one.
pub(super) fn ticket(msg: &Message) -> Option<Vec<u8>> {
    msg.get(super::ATTR_MOBILITY_TICKET)
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= MAX_TICKET)
}

pub(super) fn lifetime(msg: &Message) -> Option<Duration> {
    let value = msg.get(ATTR_LIFETIME).ok()?;
    let secs = u32::from_be_bytes(value.get(..4)?.try_into().ok()?);
    Some(Duration::from_secs(u64::from(secs)))
}

/// A Data indication's peer and data, read in place: it carries every relayed packet
/// before a channel is bound. `None` for any other datagram.
pub fn data_indication(bytes: &[u8]) -> Option<Relayed<'_>> {
    let header = bytes.get(..20)?;
    let typ = MessageType::new(METHOD_DATA, CLASS_INDICATION).value();
    if u16::from_be_bytes([header[0], header[1]]) != typ
        || u32::from_be_bytes([header[4], header[5], header[6], header[7]]) != MAGIC_COOKIE
    {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let body = bytes.get(20..20 + len)?;
    let transaction: [u8; 12] = header[8..20].try_into().ok()?;
    let (mut peer, mut data) = (None, None);
    let mut at = 0;
    while let Some(attr) = body.get(at..at + 4) {
        let typ = u16::from_be_bytes([attr[0], attr[1]]);
        let len = usize::from(u16::from_be_bytes([attr[2], attr[3]]));
        let value = body.get(at + 4..at + 4 + len)?;
        if typ == ATTR_XOR_PEER_ADDRESS.value() {
            peer = xor_address(value, &transaction);
        } else if typ == ATTR_DATA.value() {
            data = Some(value);
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    Some(Relayed {
        peer: peer?,
        payload: data?,
    })
}

/// An XOR-PEER-ADDRESS value (RFC 8489 §14.2).
fn xor_address(value: &[u8], transaction: &[u8; 12]) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([value.get(2)? ^ cookie[0], value.get(3)? ^ cookie[1]]);
    match value.get(1)? {
        0x01 => {
            let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            let ip: [u8; 4] = std::array::from_fn(|i| raw[i] ^ cookie[i]);
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        0x02 => {
            let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            let mask: Vec<u8> = cookie.iter().chain(transaction).copied().collect();
            let ip: [u8; 16] = std::array::from_fn(|i| raw[i] ^ mask[i]);
            Some(SocketAddr::new(IpAddr::from(ip), port))
        }
        _ => None,
    }
}
