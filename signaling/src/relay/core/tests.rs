//! The relay core, message by message and refusal by refusal, in virtual time.

use std::net::SocketAddr;
use std::time::Duration;

use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter, METHOD_ALLOCATE,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH, Message, MessageType, Method,
    Setter,
};
use stun::textattrs::TextAttribute;
use tokio::time::Instant;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::lifetime::Lifetime;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::relayaddr::RelayedAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::{PROTO_TCP, PROTO_UDP};

use magpie_media::ice::turn::ATTR_MOBILITY_TICKET;

use super::*;
use crate::relay::CallPeers;
use crate::relay::auth::{Secret, long_term_key};
use crate::relay::wire::{HEADROOM, TAILROOM};

const UNIX: u64 = 1_700_000_000;
const RELAYED: &str = "192.0.2.10:50000";

fn relay(config: impl FnOnce(Config) -> Config) -> (Relay, Instant) {
    let now = Instant::now();
    let config = config(Config::new(Secret::new(b"secret")).set_nonce_key([7; 32]));
    (Relay::new(config, now, UNIX), now)
}

struct Client {
    addr: SocketAddr,
    username: String,
    password: String,
    nonce: String,
}

impl Client {
    fn new(addr: &str, user: &str, expiry: u64) -> Self {
        let creds = Secret::new(b"secret").credentials(user, expiry);
        Self {
            addr: addr.parse().unwrap(),
            username: creds.username,
            password: creds.password,
            nonce: String::new(),
        }
    }

    /// A request with credentials (when a nonce is known) and `attrs`.
    fn request(&self, method: Method, attrs: Vec<Box<dyn Setter>>) -> Message {
        let mut m = Message::new();
        m.typ = MessageType::new(method, CLASS_REQUEST);
        m.new_transaction_id().unwrap();
        m.write_header();
        for attr in attrs {
            attr.add_to(&mut m).unwrap();
        }
        if !self.nonce.is_empty() {
            for (attr, text) in [
                (ATTR_USERNAME, &self.username),
                (ATTR_REALM, &"magpie".to_owned()),
                (ATTR_NONCE, &self.nonce),
            ] {
                TextAttribute::new(attr, text.clone())
                    .add_to(&mut m)
                    .unwrap();
            }
            let key = long_term_key(&self.username, "magpie", &self.password);
            MessageIntegrity(key.to_vec()).add_to(&mut m).unwrap();
        }
        m
    }

    /// Sends `m`, returns the one response.
    fn exchange(&mut self, relay: &mut Relay, now: Instant, m: &Message) -> Message {
        assert_eq!(relay.handle_client(now, self.addr, &m.raw), None);
        let reply = response(relay, self.addr);
        if let Ok(nonce) = TextAttribute::get_from_as(&reply, ATTR_NONCE) {
            self.nonce = nonce.text;
        }
        reply
    }

    /// Gets a nonce (the 401 challenge), then allocates; returns the relayed address.
    fn allocate(&mut self, relay: &mut Relay, now: Instant) -> (AllocationId, SocketAddr) {
        let (id, relayed, _) = self.allocate_with(relay, now, false);
        (id, relayed)
    }

    /// [`Client::allocate`], asking for a mobility ticket or not; also returns the
    /// success response.
    fn allocate_with(
        &mut self,
        relay: &mut Relay,
        now: Instant,
        mobility: bool,
    ) -> (AllocationId, SocketAddr, Message) {
        let attrs = || {
            let mut attrs = vec![udp()];
            if mobility {
                attrs.push(Box::new(Raw(ATTR_MOBILITY_TICKET, vec![])) as Box<dyn Setter>);
            }
            attrs
        };
        let m = self.request(METHOD_ALLOCATE, attrs());
        let challenge = self.exchange(relay, now, &m);
        assert_eq!(code(&challenge), Some(401));
        let m = self.request(METHOD_ALLOCATE, attrs());
        assert_eq!(relay.handle_client(now, self.addr, &m.raw), None);
        let Some(Event::Bind(id)) = relay.poll_event() else {
            panic!(
                "no bind for a valid allocate: {:?}",
                relay.poll_transmit().map(|t| code(&decode(&t.contents)))
            );
        };
        relay.handle_bound(now, id, Some(RELAYED.parse().unwrap()));
        let reply = response(relay, self.addr);
        assert_eq!(reply.typ.class, CLASS_SUCCESS_RESPONSE);
        let key = long_term_key(&self.username, "magpie", &self.password);
        MessageIntegrity(key.to_vec())
            .check(&mut reply.clone())
            .unwrap();
        let mut relayed = RelayedAddress::default();
        relayed.get_from(&reply).unwrap();
        (id, SocketAddr::new(relayed.ip, relayed.port), reply)
    }

    fn permit(&mut self, relay: &mut Relay, now: Instant, peer: SocketAddr) -> Message {
        let m = self.request(METHOD_CREATE_PERMISSION, vec![peer_attr(peer)]);
        self.exchange(relay, now, &m)
    }
}

/// Any attribute, as raw bytes.
struct Raw(stun::attributes::AttrType, Vec<u8>);

impl Setter for Raw {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        m.add(self.0, &self.1);
        Ok(())
    }
}

fn udp() -> Box<dyn Setter> {
    Box::new(RequestedTransport {
        protocol: PROTO_UDP,
    })
}

fn peer_attr(peer: SocketAddr) -> Box<dyn Setter> {
    Box::new(PeerAddress {
        ip: peer.ip(),
        port: peer.port(),
    })
}

fn decode(bytes: &[u8]) -> Message {
    let mut m = Message::new();
    m.raw = bytes.to_vec();
    m.decode().unwrap();
    m
}

fn response(relay: &mut Relay, to: SocketAddr) -> Message {
    let transmit = relay.poll_transmit().expect("a response");
    assert_eq!(transmit.destination, to);
    assert_eq!(relay.poll_transmit(), None, "one response only");
    decode(&transmit.contents)
}

fn code(m: &Message) -> Option<u16> {
    if m.typ.class != CLASS_ERROR_RESPONSE {
        return None;
    }
    let mut code = ErrorCodeAttribute::default();
    code.get_from(m).ok()?;
    Some(code.code.0)
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut m = Message::new();
    m.typ = turn::proto::send_indication();
    m.new_transaction_id().unwrap();
    m.write_header();
    peer_attr(peer).add_to(&mut m).unwrap();
    Data(data.to_vec()).add_to(&mut m).unwrap();
    m.raw
}

/// A peer's datagram laid out as the shell lays it out.
fn from_peer(
    relay: &mut Relay,
    now: Instant,
    id: AllocationId,
    peer: SocketAddr,
    payload: &[u8],
) -> Option<(SocketAddr, Vec<u8>)> {
    let mut buf = vec![0u8; HEADROOM + payload.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + payload.len()].copy_from_slice(payload);
    let (client, range) =
        relay.handle_peer(now, id, peer, &mut buf, HEADROOM..HEADROOM + payload.len())?;
    Some((client, buf[range].to_vec()))
}

#[test]
fn an_unauthenticated_request_gets_only_a_short_401_with_realm_and_nonce() {
    let (mut relay, now) = relay(|c| c);
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let m = alice.request(METHOD_ALLOCATE, vec![udp()]);
    assert_eq!(relay.handle_client(now, alice.addr, &m.raw), None);
    let transmit = relay.poll_transmit().unwrap();
    assert!(
        transmit.contents.len() <= 96,
        "{} bytes",
        transmit.contents.len()
    );
    let reply = decode(&transmit.contents);
    assert_eq!(code(&reply), Some(401));
    assert_eq!(
        TextAttribute::get_from_as(&reply, ATTR_REALM).unwrap().text,
        "magpie"
    );
    assert!(TextAttribute::get_from_as(&reply, ATTR_NONCE).is_ok());
    assert_eq!(
        relay.poll_event(),
        None,
        "nothing bound before authentication"
    );
    assert_eq!(relay.stats().refused(Refusal::Unauthenticated), 1);
    // Responses and indications are never answered.
    assert_eq!(
        relay.handle_client(now, alice.addr, &transmit.contents),
        None
    );
    assert_eq!(relay.poll_transmit(), None);
    assert_eq!(relay.stats().refused(Refusal::Unsupported), 1);
    let _ = alice.exchange(&mut relay, now, &m);
}

#[test]
fn allocate_with_rest_credentials_advertises_the_public_address() {
    let public = "203.0.113.5".parse().unwrap();
    let (mut relay, now) = relay(|c| c.set_public_ip(Some(public)));
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let (_, relayed) = alice.allocate(&mut relay, now);
    assert_eq!(relayed, SocketAddr::new(public, 50000));
    assert_eq!(relay.stats().allocations, 1);
    assert_eq!(relay.poll_timeout(), Some(now + Duration::from_secs(1)));
}

#[test]
fn expired_and_wrong_credentials_get_401_and_a_foreign_nonce_438() {
    let (mut relay, now) = relay(|c| c);
    let mut expired = Client::new("198.51.100.1:4000", "alice", UNIX - 1);
    let m = expired.request(METHOD_ALLOCATE, vec![udp()]);
    let _ = expired.exchange(&mut relay, now, &m);
    let m = expired.request(METHOD_ALLOCATE, vec![udp()]);
    assert_eq!(code(&expired.exchange(&mut relay, now, &m)), Some(401));
    assert_eq!(relay.stats().refused(Refusal::ExpiredCredentials), 1);

    let mut wrong = Client::new("198.51.100.2:4000", "bob", UNIX + 60);
    wrong.password = "guess".into();
    let m = wrong.request(METHOD_ALLOCATE, vec![udp()]);
    let _ = wrong.exchange(&mut relay, now, &m);
    let m = wrong.request(METHOD_ALLOCATE, vec![udp()]);
    assert_eq!(code(&wrong.exchange(&mut relay, now, &m)), Some(401));
    assert_eq!(relay.stats().refused(Refusal::WrongCredentials), 1);

    // A nonce issued to another address is not accepted, nor is one that went stale.
    let mut carol = Client::new("198.51.100.3:4000", "carol", UNIX + 7200);
    carol.nonce = wrong.nonce.clone();
    let m = carol.request(METHOD_ALLOCATE, vec![udp()]);
    assert_eq!(code(&carol.exchange(&mut relay, now, &m)), Some(438));
    let later = now + Duration::from_secs(601);
    let m = carol.request(METHOD_ALLOCATE, vec![udp()]);
    assert_eq!(code(&carol.exchange(&mut relay, later, &m)), Some(438));
    assert_eq!(relay.stats().refused(Refusal::StaleNonce), 2);
    // The fresh nonce from the 438 works.
    let m = carol.request(METHOD_ALLOCATE, vec![udp()]);
    assert_eq!(relay.handle_client(later, carol.addr, &m.raw), None);
    assert!(matches!(relay.poll_event(), Some(Event::Bind(_))));
}

#[test]
fn allocate_needs_udp_transport() {
    let (mut relay, now) = relay(|c| c);
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let m = alice.request(METHOD_ALLOCATE, vec![]);
    let _ = alice.exchange(&mut relay, now, &m);
    let m = alice.request(METHOD_ALLOCATE, vec![]);
    assert_eq!(code(&alice.exchange(&mut relay, now, &m)), Some(400));
    let tcp = Box::new(RequestedTransport {
        protocol: PROTO_TCP,
    });
    let m = alice.request(METHOD_ALLOCATE, vec![tcp]);
    assert_eq!(code(&alice.exchange(&mut relay, now, &m)), Some(442));
    assert_eq!(relay.stats().refused(Refusal::BadRequest), 1);
    assert_eq!(relay.stats().refused(Refusal::UnsupportedTransport), 1);
}

#[test]
fn a_second_allocate_is_437_and_a_retransmission_gets_the_same_answer() {
    let (mut relay, now) = relay(|c| c);
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let m = alice.request(METHOD_ALLOCATE, vec![udp()]);
    let _ = alice.exchange(&mut relay, now, &m);
    let m = alice.request(METHOD_ALLOCATE, vec![udp()]);
    let _ = relay.handle_client(now, alice.addr, &m.raw);
    let Some(Event::Bind(id)) = relay.poll_event() else {
        panic!("no bind")
    };
    // A retransmission while the socket is being bound is not answered twice.
    let _ = relay.handle_client(now, alice.addr, &m.raw);
    assert_eq!(relay.poll_transmit(), None);
    relay.handle_bound(now, id, Some(RELAYED.parse().unwrap()));
    let first = relay.poll_transmit().unwrap();
    let _ = relay.handle_client(now, alice.addr, &m.raw);
    assert_eq!(relay.poll_transmit(), Some(first));
    let m = alice.request(METHOD_ALLOCATE, vec![udp()]);
    assert_eq!(code(&alice.exchange(&mut relay, now, &m)), Some(437));
    assert_eq!(relay.stats().refused(Refusal::AllocationExists), 1);
}

#[test]
fn no_free_port_is_508_and_frees_the_quota() {
    let (mut relay, now) = relay(|c| c.set_max_allocations_per_user(1));
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let m = alice.request(METHOD_ALLOCATE, vec![udp()]);
    let _ = alice.exchange(&mut relay, now, &m);
    let m = alice.request(METHOD_ALLOCATE, vec![udp()]);
    let _ = relay.handle_client(now, alice.addr, &m.raw);
    let Some(Event::Bind(id)) = relay.poll_event() else {
        panic!("no bind")
    };
    relay.handle_bound(now, id, None);
    assert_eq!(code(&response(&mut relay, alice.addr)), Some(508));
    assert_eq!(relay.stats().refused(Refusal::Capacity), 1);
    alice.nonce.clear();
    let _ = alice.allocate(&mut relay, now);
}

#[test]
fn a_user_over_the_allocation_quota_gets_486() {
    let (mut relay, now) = relay(|c| c.set_max_allocations_per_user(1));
    let mut first = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let _ = first.allocate(&mut relay, now);
    let mut second = Client::new("198.51.100.1:4001", "alice", UNIX + 3600);
    let m = second.request(METHOD_ALLOCATE, vec![udp()]);
    let _ = second.exchange(&mut relay, now, &m);
    let m = second.request(METHOD_ALLOCATE, vec![udp()]);
    assert_eq!(code(&second.exchange(&mut relay, now, &m)), Some(486));
    assert_eq!(relay.stats().refused(Refusal::UserQuota), 1);
    // Another user is not affected.
    let _ = Client::new("198.51.100.1:4002", "bob", UNIX + 3600).allocate(&mut relay, now);
}

#[test]
fn refresh_extends_and_lifetime_zero_deletes() {
    let (mut relay, now) = relay(|c| c);
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 7200);
    let (id, _) = alice.allocate(&mut relay, now);
    let m = alice.request(
        METHOD_REFRESH,
        vec![Box::new(Lifetime(Duration::from_secs(9999)))],
    );
    let reply = alice.exchange(&mut relay, now, &m);
    let mut lifetime = Lifetime::default();
    lifetime.get_from(&reply).unwrap();
    assert_eq!(lifetime.0, Duration::from_secs(3600), "capped");
    // Still there after the default 10 minutes.
    relay.handle_timeout(now + Duration::from_secs(601));
    assert_eq!(relay.poll_event(), None);
    let m = alice.request(METHOD_REFRESH, vec![Box::new(Lifetime(Duration::ZERO))]);
    assert_eq!(
        alice.exchange(&mut relay, now, &m).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    assert_eq!(relay.poll_event(), Some(Event::Release(id)));
    assert_eq!(relay.stats().allocations, 0);
    let m = alice.request(METHOD_REFRESH, vec![]);
    assert_eq!(code(&alice.exchange(&mut relay, now, &m)), Some(437));
    assert_eq!(relay.stats().refused(Refusal::NoAllocation), 1);
}

#[test]
fn requests_with_other_credentials_than_the_allocation_get_441() {
    let (mut relay, now) = relay(|c| c);
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 7200);
    let _ = alice.allocate(&mut relay, now);
    let mut mallory = Client::new("198.51.100.1:4000", "mallory", UNIX + 7200);
    mallory.nonce = alice.nonce.clone();
    let m = mallory.request(METHOD_REFRESH, vec![]);
    assert_eq!(code(&mallory.exchange(&mut relay, now, &m)), Some(441));
    assert_eq!(relay.stats().refused(Refusal::CredentialsMismatch), 1);
}

#[test]
fn send_indications_reach_only_permitted_peers_and_data_comes_back_as_indications() {
    let (mut relay, now) = relay(|c| c);
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let (id, _) = alice.allocate(&mut relay, now);
    let peer: SocketAddr = "192.0.2.77:6000".parse().unwrap();

    let send = send_indication(peer, b"hello");
    assert_eq!(relay.handle_client(now, alice.addr, &send), None);
    assert_eq!(from_peer(&mut relay, now, id, peer, b"hi"), None);
    assert_eq!(relay.stats().refused(Refusal::NoPermission), 2);

    assert_eq!(
        alice.permit(&mut relay, now, peer).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    let forward = relay.handle_client(now, alice.addr, &send).unwrap();
    assert_eq!(
        (forward.allocation, forward.peer, forward.payload),
        (id, peer, &b"hello"[..])
    );
    // A permission is for the IP address: any port of the peer.
    let other_port = SocketAddr::new(peer.ip(), 6001);
    let (client, data) = from_peer(&mut relay, now, id, other_port, b"hi").unwrap();
    assert_eq!(client, alice.addr);
    let m = decode(&data);
    let mut from = PeerAddress::default();
    from.get_from(&m).unwrap();
    assert_eq!(SocketAddr::new(from.ip, from.port), other_port);
    let mut payload = Data::default();
    payload.get_from(&m).unwrap();
    assert_eq!(payload.0, b"hi");
    // An unknown client's indication is dropped.
    let stranger = "198.51.100.9:1".parse().unwrap();
    assert_eq!(relay.handle_client(now, stranger, &send), None);
    assert_eq!(relay.poll_transmit(), None);
    assert_eq!(relay.stats().refused(Refusal::NoAllocation), 1);
    let stats = relay.stats();
    assert_eq!((stats.to_peers, stats.to_clients), ((1, 5), (1, 2)));
}

#[test]
fn loopback_and_multicast_peers_are_forbidden() {
    let (mut relay, now) = relay(|c| c);
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let _ = alice.allocate(&mut relay, now);
    for peer in ["127.0.0.1:5000", "224.0.0.1:5000", "0.0.0.0:1"] {
        assert_eq!(
            code(&alice.permit(&mut relay, now, peer.parse().unwrap())),
            Some(403)
        );
    }
    assert_eq!(relay.stats().refused(Refusal::ForbiddenPeer), 3);
    let m = alice.request(METHOD_CREATE_PERMISSION, vec![]);
    assert_eq!(code(&alice.exchange(&mut relay, now, &m)), Some(400));
}

#[test]
fn channels_carry_data_both_ways_and_unbound_ones_are_dropped() {
    let (mut relay, now) = relay(|c| c);
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let (id, _) = alice.allocate(&mut relay, now);
    let peer: SocketAddr = "192.0.2.77:6000".parse().unwrap();
    let bind = |alice: &Client, number: u16, peer: SocketAddr| {
        alice.request(
            METHOD_CHANNEL_BIND,
            vec![Box::new(ChannelNumber(number)), peer_attr(peer)],
        )
    };
    let m = bind(&alice, 0x4001, peer);
    assert_eq!(
        alice.exchange(&mut relay, now, &m).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    // Rebinding refreshes; another peer on the channel, or the peer on another, is 400;
    // so is a number outside 0x4000-0x7FFE.
    let m = bind(&alice, 0x4001, peer);
    assert_eq!(
        alice.exchange(&mut relay, now, &m).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    for (number, to) in [
        (0x4001, "192.0.2.78:6000"),
        (0x4002, "192.0.2.77:6000"),
        (0x7fff, "192.0.2.9:1"),
    ] {
        let m = bind(&alice, number, to.parse().unwrap());
        assert_eq!(
            code(&alice.exchange(&mut relay, now, &m)),
            Some(400),
            "{number:x}"
        );
    }

    let data = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0];
    let forward = relay.handle_client(now, alice.addr, &data).unwrap();
    assert_eq!((forward.peer, forward.payload), (peer, &b"abc"[..]));
    let (_, back) = from_peer(&mut relay, now, id, peer, b"xyz").unwrap();
    assert_eq!(back, [0x40, 0x01, 0x00, 0x03, b'x', b'y', b'z']);

    let unbound = [0x40, 0x02, 0x00, 0x01, b'a'];
    assert_eq!(relay.handle_client(now, alice.addr, &unbound), None);
    assert_eq!(relay.stats().refused(Refusal::UnboundChannel), 1);
    let short = [0x40, 0x01, 0x00, 0x09, b'a'];
    assert_eq!(relay.handle_client(now, alice.addr, &short), None);
    assert_eq!(relay.stats().refused(Refusal::Malformed), 1);
}

#[test]
fn permissions_channels_and_allocations_expire() {
    let (mut relay, now) = relay(|c| c);
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 7200);
    let (id, _) = alice.allocate(&mut relay, now);
    let peer: SocketAddr = "192.0.2.77:6000".parse().unwrap();
    let _ = alice.permit(&mut relay, now, peer);
    let m = alice.request(
        METHOD_CHANNEL_BIND,
        vec![
            Box::new(ChannelNumber(0x4000)),
            peer_attr("192.0.2.88:1".parse().unwrap()),
        ],
    );
    let _ = alice.exchange(&mut relay, now, &m);
    let send = send_indication(peer, b"x");
    let data = [0x40, 0x00, 0x00, 0x01, b'a'];

    let at = |s| now + Duration::from_secs(s);
    relay.handle_timeout(at(299));
    assert!(relay.handle_client(at(299), alice.addr, &send).is_some());
    relay.handle_timeout(at(300));
    assert_eq!(
        relay.handle_client(at(300), alice.addr, &send),
        None,
        "permission expired"
    );
    // A channel carries data only while its peer's permission lasts.
    assert_eq!(relay.handle_client(at(300), alice.addr, &data), None);
    assert_eq!(relay.stats().refused(Refusal::NoPermission), 2);
    assert_eq!(relay.poll_event(), None);
    // The allocation's 10 minutes end with the channel's.
    relay.handle_timeout(at(600));
    assert_eq!(relay.poll_event(), Some(Event::Release(id)));
    assert_eq!(relay.handle_client(at(600), alice.addr, &data), None);
    assert_eq!(relay.stats().refused(Refusal::NoAllocation), 1);
    assert_eq!(relay.poll_timeout(), None);
}

#[test]
fn a_user_over_the_bandwidth_cap_is_dropped_until_the_bucket_refills() {
    let (mut relay, now) = relay(|c| c.set_user_bandwidth(1000, 1000));
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let (id, _) = alice.allocate(&mut relay, now);
    let peer: SocketAddr = "192.0.2.77:6000".parse().unwrap();
    let _ = alice.permit(&mut relay, now, peer);
    let send = send_indication(peer, &[0; 600]);
    assert!(relay.handle_client(now, alice.addr, &send).is_some());
    assert_eq!(from_peer(&mut relay, now, id, peer, &[0; 600]), None);
    assert_eq!(relay.stats().refused(Refusal::Bandwidth), 1);
    let later = now + Duration::from_millis(600);
    assert!(from_peer(&mut relay, later, id, peer, &[0; 600]).is_some());
}

#[test]
fn unknown_methods_get_400_and_garbage_is_counted() {
    let (mut relay, now) = relay(|c| c);
    let alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let m = alice.request(stun::message::METHOD_CONNECT, vec![]);
    let _ = relay.handle_client(now, alice.addr, &m.raw);
    assert_eq!(code(&response(&mut relay, alice.addr)), Some(400));
    for garbage in [
        &b""[..],
        b"\xff\xff",
        b"GET / HTTP/1.1\r\n",
        &[0u8; 19],
        &[0u8; 40],
    ] {
        assert_eq!(relay.handle_client(now, alice.addr, garbage), None);
    }
    assert_eq!(relay.poll_transmit(), None);
    assert_eq!(relay.stats().refused(Refusal::Malformed), 5);
}

#[test]
fn truncated_and_corrupted_requests_never_panic() {
    let (mut relay, now) = relay(|c| c);
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let (_, _) = alice.allocate(&mut relay, now);
    let m = alice.request(
        METHOD_CHANNEL_BIND,
        vec![
            Box::new(ChannelNumber(0x4000)),
            peer_attr("192.0.2.88:1".parse().unwrap()),
        ],
    );
    for cut in 0..m.raw.len() {
        let _ = relay.handle_client(now, alice.addr, &m.raw[..cut]);
        let mut bent = m.raw.clone();
        bent[cut] ^= 0xa5;
        let _ = relay.handle_client(now, alice.addr, &bent);
        // A length that covers only part of an attribute, MESSAGE-INTEGRITY included.
        if cut >= 20 && cut % 4 == 0 {
            let mut short = m.raw[..cut].to_vec();
            let len = u16::try_from(cut - 20).unwrap();
            short[2..4].copy_from_slice(&len.to_be_bytes());
            let _ = relay.handle_client(now, alice.addr, &short);
        }
    }
    while relay.poll_transmit().is_some() {}
}

#[test]
fn with_a_call_directory_permissions_go_only_to_the_call_peer_or_this_relay() {
    let peers = CallPeers::new();
    let (mut relay, now) = relay(|c| c.set_call_peers(peers.clone()));
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let (id, relayed) = alice.allocate(&mut relay, now);
    let bob: SocketAddr = "203.0.113.7:6000".parse().unwrap();
    // Not in a call yet: nobody outside the relay.
    assert_eq!(code(&alice.permit(&mut relay, now, bob)), Some(403));
    assert_eq!(relay.stats().refused(Refusal::OutsideCall), 1);
    peers.online("alice", alice.addr.ip());
    peers.online("bob", bob.ip());
    peers.pair("alice", "bob");
    assert_eq!(code(&alice.permit(&mut relay, now, bob)), None);
    assert!(from_peer(&mut relay, now, id, bob, b"hi").is_some());
    // Bob's own allocation on this relay (same address as alice's relayed socket here).
    assert_eq!(code(&alice.permit(&mut relay, now, relayed)), None);
    // Anyone else, and a channel to them, is refused and counted.
    let carol: SocketAddr = "203.0.113.8:6000".parse().unwrap();
    assert_eq!(code(&alice.permit(&mut relay, now, carol)), Some(403));
    let m = alice.request(
        METHOD_CHANNEL_BIND,
        vec![Box::new(ChannelNumber(0x4000)), peer_attr(carol)],
    );
    assert_eq!(code(&alice.exchange(&mut relay, now, &m)), Some(403));
    assert_eq!(relay.stats().refused(Refusal::OutsideCall), 3);
    assert_eq!(from_peer(&mut relay, now, id, carol, b"hi"), None);
    // The call ends: the peer is outside again.
    peers.unpair("alice", "bob");
    let other: SocketAddr = "203.0.113.7:6001".parse().unwrap();
    assert_eq!(code(&alice.permit(&mut relay, now, other)), Some(403));
}

#[test]
fn a_mobility_ticket_moves_the_allocation_to_the_clients_new_address() {
    let (mut relay, now) = relay(|c| c);
    let mut alice = Client::new("198.51.100.1:4000", "alice", UNIX + 3600);
    let (id, _, reply) = alice.allocate_with(&mut relay, now, true);
    let ticket = reply.get(ATTR_MOBILITY_TICKET).unwrap();
    assert_eq!(ticket.len(), 16);
    let peer: SocketAddr = "192.0.2.77:6000".parse().unwrap();
    assert_eq!(
        alice.permit(&mut relay, now, peer).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    // Alice's NAT forgets her mapping and gives her a new port.
    let old = alice.addr;
    alice.addr = "198.51.100.1:4999".parse().unwrap();
    let refresh = |alice: &Client, ticket: &[u8]| {
        let attrs: Vec<Box<dyn Setter>> = vec![Box::new(Raw(ATTR_MOBILITY_TICKET, ticket.into()))];
        alice.request(METHOD_REFRESH, attrs)
    };
    // Without a ticket the new address holds no allocation.
    let m = alice.request(METHOD_REFRESH, vec![]);
    // (The nonce was issued to the old address: a new one first.)
    assert_eq!(code(&alice.exchange(&mut relay, now, &m)), Some(438));
    let m = alice.request(METHOD_REFRESH, vec![]);
    assert_eq!(code(&alice.exchange(&mut relay, now, &m)), Some(437));
    // A ticket that is not one of ours, or someone else's credentials with hers: refused.
    let m = refresh(&alice, &[0; 16]);
    assert_eq!(code(&alice.exchange(&mut relay, now, &m)), Some(437));
    let mut mallory = Client::new("198.51.100.66:1", "mallory", UNIX + 3600);
    let m = mallory.request(METHOD_REFRESH, vec![]);
    let _ = mallory.exchange(&mut relay, now, &m);
    let m = refresh(&mallory, &ticket);
    assert_eq!(code(&mallory.exchange(&mut relay, now, &m)), Some(441));
    assert_eq!(relay.stats().moves, 0);
    // Her own ticket moves it: same relayed address, same permissions.
    let m = refresh(&alice, &ticket);
    let reply = alice.exchange(&mut relay, now, &m);
    assert_eq!(
        reply.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "{:?}",
        code(&reply)
    );
    let new_ticket = reply.get(ATTR_MOBILITY_TICKET).unwrap();
    assert_ne!(new_ticket, ticket, "a new ticket for each move");
    assert_eq!(relay.stats().moves, 1);
    let send = send_indication(peer, b"hello");
    let forward = relay.handle_client(now, alice.addr, &send).unwrap();
    assert_eq!((forward.allocation, forward.peer), (id, peer));
    let (client, _) = from_peer(&mut relay, now, id, peer, b"hi").unwrap();
    assert_eq!(client, alice.addr);
    // The old address is nobody's now, and the used ticket moves nothing again.
    assert_eq!(relay.handle_client(now, old, &send), None);
    let mut thief = Client::new("198.51.100.1:5000", "alice", UNIX + 3600);
    let m = thief.request(METHOD_REFRESH, vec![]);
    let _ = thief.exchange(&mut relay, now, &m);
    let m = refresh(&thief, &ticket);
    assert_eq!(code(&thief.exchange(&mut relay, now, &m)), Some(437));
    assert_eq!(relay.stats().allocations, 1);
    // A ticket with content in an Allocate is malformed (RFC 8016 §3.1).
    let mut bob = Client::new("198.51.100.2:4000", "bob", UNIX + 3600);
    let m = bob.request(METHOD_ALLOCATE, vec![udp()]);
    let _ = bob.exchange(&mut relay, now, &m);
    let m = bob.request(
        METHOD_ALLOCATE,
        vec![udp(), Box::new(Raw(ATTR_MOBILITY_TICKET, vec![1]))],
    );
    assert_eq!(code(&bob.exchange(&mut relay, now, &m)), Some(400));
    // Deleting the allocation forgets its ticket.
    let m = alice.request(METHOD_REFRESH, vec![Box::new(Lifetime(Duration::ZERO))]);
    assert_eq!(
        alice.exchange(&mut relay, now, &m).typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    assert!(relay.by_ticket.is_empty());
}
