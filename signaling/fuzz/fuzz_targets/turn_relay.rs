//! Operation sequences against the TURN relay core (`relay::Relay`): raw datagrams from
//! clients (half dressed as a STUN header or as ChannelData), datagrams from peers on
//! relayed sockets, socket binds that succeed or fail, time passing, and properly
//! authenticated requests (Allocate, Refresh, CreatePermission, ChannelBind) built by
//! the harness with fuzzer-chosen attributes, so the fuzzer reaches past the 401.
//! Allocate may ask for a mobility ticket (RFC 8016) and Refresh may carry one: the last
//! ticket the relay handed out (from another client address it moves the allocation
//! there) or arbitrary bytes.
//!
//! With a directory of call peers (`relay::CallPeers`, as magpie-server runs it) that the
//! fuzzer fills and empties: users go on- and offline at peer addresses and are paired and
//! unpaired, so permissions inside and outside the call are both reached.
//!
//! Nothing may panic. The relay must not amplify: what raw bytes get back is at most
//! 128 bytes (a 401 challenge, a 400, a Binding response). Data relayed to a peer is a
//! slice of what was received, and nothing is relayed for a client without an
//! allocation.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use magpie_media::ice::turn::ATTR_MOBILITY_TICKET;
use magpie_signaling::relay::auth::{Secret, long_term_key};
use magpie_signaling::relay::{
    AllocationId, CallPeers, Config, Event, HEADROOM, Relay, TAILROOM,
};
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_REQUEST, METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION,
    METHOD_REFRESH, Message, MessageType, Setter,
};
use stun::textattrs::TextAttribute;
use tokio::time::Instant;
use turn::proto::channum::ChannelNumber;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::Protocol;

const MAX_RAW_REPLY: usize = 128;

/// Any attribute, as raw bytes.
struct Raw(stun::attributes::AttrType, Vec<u8>);

impl Setter for Raw {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        m.add(self.0, &self.1);
        Ok(())
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Raw { client: u8, dress: u8, bytes: Vec<u8> },
    Peer { allocation: u8, peer: u8, port: u16, bytes: Vec<u8> },
    Bind { ok: bool },
    Advance { secs: u16 },
    /// `mobility`: an empty MOBILITY-TICKET asks for one (RFC 8016); other bytes are
    /// malformed.
    Allocate { client: u8, user: u8, transport: u8, mobility: Option<Vec<u8>> },
    /// `ticket`: none, the last one the relay handed out (`Some(None)`), or any bytes;
    /// from another client address, a valid one moves the allocation there.
    Refresh { client: u8, user: u8, lifetime: u32, ticket: Option<Option<Vec<u8>>> },
    Permit { client: u8, user: u8, peer: u8 },
    Channel { client: u8, user: u8, number: u16, peer: u8, port: u16 },
    Nonce { client: u8, nonce: String },
    Online { user: u8, peer: u8 },
    Offline { user: u8 },
    Pair { user: u8, other: u8 },
    Unpair { user: u8, other: u8 },
}

fn user(n: u8) -> String {
    format!("u{}", n % 3)
}

fn client(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, n % 4)), 4000)
}

fn peer(n: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n % 4)), port)
}

fn request(
    method: stun::message::Method,
    attrs: Vec<Box<dyn Setter>>,
    user: u8,
    nonce: &str,
) -> Vec<u8> {
    let username = Secret::new(b"fuzz").credentials(&format!("u{}", user % 3), 2_000_000_000).username;
    let password = Secret::new(b"fuzz").password(&username);
    let mut m = Message::new();
    m.typ = MessageType::new(method, CLASS_REQUEST);
    let _ = m.new_transaction_id();
    m.write_header();
    for attr in attrs {
        let _ = attr.add_to(&mut m);
    }
    for (attr, text) in [(ATTR_USERNAME, username.clone()), (ATTR_REALM, "magpie".into()), (ATTR_NONCE, nonce.to_owned())] {
        let _ = TextAttribute::new(attr, text).add_to(&mut m);
    }
    let key = long_term_key(&username, "magpie", &password);
    let _ = MessageIntegrity(key.to_vec()).add_to(&mut m);
    m.raw
}

fuzz_target!(|ops: Vec<Op>| {
    let mut now = Instant::now();
    let peers = CallPeers::new();
    let config = Config::new(Secret::new(b"fuzz"))
        .set_call_peers(peers.clone())
        .set_nonce_key([1; 32])
        .set_max_allocations_per_user(2)
        .set_user_bandwidth(10_000, 10_000);
    let mut relay = Relay::new(config, now, 1_700_000_000);
    let mut nonces: [String; 4] = Default::default();
    let mut ticket: Vec<u8> = Vec::new();
    let mut pending: Vec<AllocationId> = Vec::new();
    let mut bound: Vec<AllocationId> = Vec::new();
    let mut port = 50000u16;
    for op in ops.into_iter().take(256) {
        let mut raw = false;
        let mut to = None;
        match op {
            Op::Raw { client: c, dress, mut bytes } => {
                raw = true;
                if bytes.len() >= 20 && dress % 3 == 0 {
                    let len = u16::try_from(bytes.len() - 20).unwrap_or(u16::MAX);
                    bytes[0] &= 0x3f;
                    bytes[2..4].copy_from_slice(&len.to_be_bytes());
                    bytes[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
                } else if bytes.len() >= 4 && dress % 3 == 1 {
                    let len = u16::try_from(bytes.len() - 4).unwrap_or(u16::MAX);
                    bytes[0] = 0x40 | (bytes[0] & 0x3f);
                    bytes[2..4].copy_from_slice(&len.to_be_bytes());
                }
                let from = client(c);
                if let Some(forward) = relay.handle_client(now, from, &bytes) {
                    let range = bytes.as_ptr_range();
                    assert!(range.contains(&forward.payload.as_ptr()) || forward.payload.is_empty());
                }
                to = Some(from);
            }
            Op::Peer { allocation, peer: p, port: pp, bytes } => {
                if let Some(&id) = bound.get(usize::from(allocation) % bound.len().max(1)) {
                    let mut buf = vec![0u8; HEADROOM + bytes.len() + TAILROOM];
                    buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(&bytes);
                    let end = HEADROOM + bytes.len();
                    if let Some((_, range)) = relay.handle_peer(now, id, peer(p, pp), &mut buf, HEADROOM..end) {
                        assert!(range.start <= HEADROOM && range.end >= end && range.end <= buf.len());
                    }
                }
            }
            Op::Bind { ok } => {
                if let Some(id) = pending.pop() {
                    port = port.wrapping_add(1);
                    let addr = ok.then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), port));
                    relay.handle_bound(now, id, addr);
                    if ok {
                        bound.push(id);
                    }
                }
            }
            Op::Advance { secs } => {
                now += Duration::from_secs(u64::from(secs % 1200));
                relay.handle_timeout(now);
            }
            Op::Allocate { client: c, user, transport, mobility } => {
                let mut attrs: Vec<Box<dyn Setter>> = vec![Box::new(RequestedTransport { protocol: Protocol(transport | 1) })];
                if let Some(bytes) = mobility {
                    attrs.push(Box::new(Raw(ATTR_MOBILITY_TICKET, bytes)));
                }
                let bytes = request(METHOD_ALLOCATE, attrs, user, &nonces[usize::from(c % 4)]);
                let _ = relay.handle_client(now, client(c), &bytes);
                to = Some(client(c));
            }
            Op::Refresh { client: c, user, lifetime, ticket: t } => {
                let mut attrs: Vec<Box<dyn Setter>> = vec![Box::new(Lifetime(Duration::from_secs(u64::from(lifetime % 4000))))];
                if let Some(bytes) = t.map(|t| t.unwrap_or_else(|| ticket.clone())) {
                    attrs.push(Box::new(Raw(ATTR_MOBILITY_TICKET, bytes)));
                }
                let bytes = request(METHOD_REFRESH, attrs, user, &nonces[usize::from(c % 4)]);
                let _ = relay.handle_client(now, client(c), &bytes);
                to = Some(client(c));
            }
            Op::Permit { client: c, user, peer: p } => {
                let addr = peer(p, 1);
                let attrs: Vec<Box<dyn Setter>> = vec![Box::new(PeerAddress { ip: addr.ip(), port: addr.port() })];
                let bytes = request(METHOD_CREATE_PERMISSION, attrs, user, &nonces[usize::from(c % 4)]);
                let _ = relay.handle_client(now, client(c), &bytes);
                to = Some(client(c));
            }
            Op::Channel { client: c, user, number, peer: p, port: pp } => {
                let addr = peer(p, pp);
                let attrs: Vec<Box<dyn Setter>> = vec![
                    Box::new(ChannelNumber(number)),
                    Box::new(PeerAddress { ip: addr.ip(), port: addr.port() }),
                ];
                let bytes = request(METHOD_CHANNEL_BIND, attrs, user, &nonces[usize::from(c % 4)]);
                let _ = relay.handle_client(now, client(c), &bytes);
                to = Some(client(c));
            }
            Op::Nonce { client: c, nonce } => nonces[usize::from(c % 4)] = nonce,
            Op::Online { user: u, peer: p } => peers.online(&user(u), peer(p, 1).ip()),
            Op::Offline { user: u } => peers.offline(&user(u)),
            Op::Pair { user: u, other } => peers.pair(&user(u), &user(other)),
            Op::Unpair { user: u, other } => peers.unpair(&user(u), &user(other)),
        }
        while let Some(event) = relay.poll_event() {
            match event {
                Event::Bind(id) => pending.push(id),
                Event::Release(id) => {
                    pending.retain(|p| *p != id);
                    bound.retain(|b| *b != id);
                }
            }
        }
        while let Some(transmit) = relay.poll_transmit() {
            if raw {
                assert!(transmit.contents.len() <= MAX_RAW_REPLY, "{} bytes", transmit.contents.len());
            }
            // Learn nonces from challenges, and mobility tickets, as a client does.
            let mut m = Message::new();
            m.raw = transmit.contents.clone();
            if let Ok(t) = m.decode().and_then(|()| m.get(ATTR_MOBILITY_TICKET)) {
                ticket = t;
            }
            if m.decode().is_ok()
                && let Ok(nonce) = TextAttribute::get_from_as(&m, ATTR_NONCE)
                && let Some(c) = to.filter(|to| *to == transmit.destination)
            {
                let SocketAddr::V4(v4) = c else { continue };
                nonces[usize::from(v4.ip().octets()[3] % 4)] = nonce.text;
            }
        }
    }
});
