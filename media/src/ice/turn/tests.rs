//! The TURN client against scripted server responses, in virtual time. The client
//! against the real relay core is in client/tests/turn_relay.rs.

use proptest::prelude::*;

use super::wire::MAGIC_COOKIE;
use super::*;
use stun::message::METHOD_DATA;

const REALM: &str = "magpie";
const USER: &str = "1764480000:alice";
const PASS: &str = "secret-password";

fn server() -> SocketAddr {
    "192.0.2.1:3478".parse().unwrap()
}

fn peer() -> SocketAddr {
    "198.51.100.7:40000".parse().unwrap()
}

fn relayed() -> SocketAddr {
    "192.0.2.1:50000".parse().unwrap()
}

fn client(now: Instant) -> TurnClient {
    TurnConfig::new(server(), USER.into(), PASS.into()).build(now, [7; 12])
}

fn decode(bytes: &[u8]) -> Message {
    let mut m = Message::new();
    m.raw = bytes.to_vec();
    m.decode().unwrap();
    m
}

fn key() -> MessageIntegrity {
    MessageIntegrity::new_long_term_integrity(USER.into(), REALM.into(), PASS.into())
}

/// A response to `request`: `class`, the attributes, integrity when `signed`.
fn respond(
    request: &Message,
    class: stun::message::MessageClass,
    attrs: &[&dyn Setter],
    signed: bool,
) -> Vec<u8> {
    let mut m = Message::new();
    m.typ = MessageType::new(request.typ.method, class);
    m.transaction_id = request.transaction_id;
    m.write_header();
    for a in attrs {
        a.add_to(&mut m).unwrap();
    }
    if signed {
        key().add_to(&mut m).unwrap();
    }
    m.raw
}

fn error(request: &Message, code: u16, nonce: &str) -> Vec<u8> {
    let attr = ErrorCodeAttribute {
        code: stun::error_code::ErrorCode(code),
        reason: b"x".to_vec(),
    };
    respond(
        request,
        CLASS_ERROR_RESPONSE,
        &[
            &attr,
            &TextAttribute::new(ATTR_REALM, REALM.into()),
            &TextAttribute::new(ATTR_NONCE, nonce.into()),
        ],
        false,
    )
}

struct Lifetime(u32);

impl Setter for Lifetime {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        m.add(ATTR_LIFETIME, &self.0.to_be_bytes());
        Ok(())
    }
}

struct RelayedAddr(SocketAddr);

impl Setter for RelayedAddr {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        XorMappedAddress {
            ip: self.0.ip(),
            port: self.0.port(),
        }
        .add_to_as(m, ATTR_XOR_RELAYED_ADDRESS)
    }
}

fn next(c: &mut TurnClient) -> Message {
    let t = c.poll_transmit().expect("a request");
    assert_eq!(t.destination, server());
    decode(&t.contents)
}

/// Runs the 401 dance and the allocation; returns the client allocated at `now`.
fn allocated(now: Instant) -> TurnClient {
    let mut c = client(now);
    let first = next(&mut c);
    assert_eq!(first.typ, MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST));
    assert!(first.get(stun::attributes::ATTR_MESSAGE_INTEGRITY).is_err());
    assert!(
        c.handle_datagram(now, &error(&first, 401, "n1"))
            .unwrap()
            .is_none()
    );
    let mut second = next(&mut c);
    let username = TextAttribute::get_from_as(&second, ATTR_USERNAME).unwrap();
    assert_eq!(username.text, USER);
    key()
        .check(&mut second)
        .expect("signed with the long-term key");
    let ok = respond(
        &second,
        CLASS_SUCCESS_RESPONSE,
        &[
            &RelayedAddr(relayed()),
            &Lifetime(600),
            &XorMappedAddress {
                ip: "203.0.113.5".parse().unwrap(),
                port: 6000,
            },
        ],
        true,
    );
    c.handle_datagram(now, &ok).unwrap();
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Allocated {
            relayed: relayed(),
            mapped: Some("203.0.113.5:6000".parse().unwrap()),
        })
    );
    assert_eq!(c.relayed(), Some(relayed()));
    c
}

#[test]
fn allocates_after_the_401_dance_and_binds_a_channel_for_a_peer() {
    let now = crate::test_instant();
    let mut c = allocated(now);
    assert_eq!(c.wrap(peer(), b"early"), None, "no permission yet");
    c.permit(now, peer());
    let permission = next(&mut c);
    let bind = next(&mut c);
    assert_eq!(permission.typ.method, METHOD_CREATE_PERMISSION);
    assert_eq!(bind.typ.method, METHOD_CHANNEL_BIND);
    c.handle_datagram(
        now,
        &respond(&permission, CLASS_SUCCESS_RESPONSE, &[], true),
    )
    .unwrap();
    // Permission installed, channel not bound yet: a Send indication.
    let send = decode(&c.wrap(peer(), b"hello").unwrap());
    assert_eq!(send.typ, MessageType::new(METHOD_SEND, CLASS_INDICATION));
    assert_eq!(send.get(ATTR_DATA).unwrap(), b"hello");
    c.handle_datagram(now, &respond(&bind, CLASS_SUCCESS_RESPONSE, &[], true))
        .unwrap();
    let data = c.wrap(peer(), b"hello").unwrap();
    assert_eq!(&data[..4], &[0x40, 0x00, 0, 5]);
    assert_eq!(&data[4..], b"hello");
    // And back: ChannelData on our channel is the peer's.
    let got = c.handle_datagram(now, &data).unwrap().unwrap();
    assert_eq!((got.peer, got.payload), (peer(), &b"hello"[..]));
    // Another channel number is refused.
    let mut other = data.clone();
    other[1] = 1;
    assert!(matches!(
        c.handle_datagram(now, &other),
        Err(TurnError::Unexpected)
    ));
    assert_eq!(c.counters().refused, 1);
    assert_eq!(c.counters().unpermitted, 1);
}

#[test]
fn data_indications_are_unwrapped_for_permitted_peers_only() {
    let now = crate::test_instant();
    let mut c = allocated(now);
    c.permit(now, peer());
    let mut m = Message::new();
    m.typ = MessageType::new(METHOD_DATA, CLASS_INDICATION);
    m.transaction_id.0 = [9; 12];
    m.write_header();
    add_peer(&mut m, peer());
    m.add(ATTR_DATA, b"media");
    let got = c.handle_datagram(now, &m.raw).unwrap().unwrap();
    assert_eq!((got.peer, got.payload), (peer(), &b"media"[..]));
    let mut stranger = Message::new();
    stranger.typ = m.typ;
    stranger.write_header();
    add_peer(&mut stranger, "203.0.113.99:1".parse().unwrap());
    stranger.add(ATTR_DATA, b"evil");
    assert!(c.handle_datagram(now, &stranger.raw).is_err());
}

#[test]
fn a_stale_nonce_is_replaced_and_the_request_repeated_signed_afresh() {
    let now = crate::test_instant();
    let mut c = allocated(now);
    c.permit(now, peer());
    let permission = next(&mut c);
    let _bind = next(&mut c);
    // coturn answers 438 with the realm again and a new nonce.
    c.handle_datagram(now, &error(&permission, 438, "n2"))
        .unwrap();
    let mut again = next(&mut c);
    assert_eq!(again.typ.method, METHOD_CREATE_PERMISSION);
    assert_ne!(again.transaction_id, permission.transaction_id);
    for (attr, value) in [
        (ATTR_NONCE, "n2"),
        (ATTR_REALM, REALM),
        (ATTR_USERNAME, USER),
    ] {
        assert_eq!(
            TextAttribute::get_from_as(&again, attr).unwrap().text,
            value
        );
    }
    // MESSAGE-INTEGRITY covers the new nonce: it checks with the same long-term key.
    key().check(&mut again).expect("integrity recomputed");
    // The server accepts it: the permission is installed, nothing was given up.
    c.handle_datagram(now, &respond(&again, CLASS_SUCCESS_RESPONSE, &[], true))
        .unwrap();
    assert!(c.wrap(peer(), b"x").is_some());
    assert_eq!(c.poll_event(), None);
}

#[test]
fn a_server_that_always_answers_stale_nonce_is_not_asked_forever() {
    let now = crate::test_instant();
    let mut c = client(now);
    let first = next(&mut c);
    c.handle_datagram(now, &error(&first, 401, "n0")).unwrap();
    let mut request = next(&mut c);
    for i in 0..MAX_STALE {
        c.handle_datagram(now, &error(&request, 438, &format!("n{}", i + 1)))
            .unwrap();
        request = next(&mut c);
        assert_eq!(request.typ.method, METHOD_ALLOCATE);
    }
    c.handle_datagram(now, &error(&request, 438, "again"))
        .unwrap();
    assert_eq!(c.poll_transmit(), None);
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnFailure::Refused(438)))
    );
}

/// An error response signed with the long-term key, as a server sends once the
/// request was authenticated.
fn signed_error(request: &Message, code: u16) -> Vec<u8> {
    let attr = ErrorCodeAttribute {
        code: stun::error_code::ErrorCode(code),
        reason: b"Forbidden IP".to_vec(),
    };
    respond(request, CLASS_ERROR_RESPONSE, &[&attr], true)
}

#[test]
fn a_peer_refused_with_403_is_reported_once_and_not_asked_for_again() {
    let now = crate::test_instant();
    let mut c = allocated(now);
    let other: SocketAddr = "198.51.100.8:40000".parse().unwrap();
    c.permit(now, peer());
    c.permit(now, other);
    let (permission, bind) = (next(&mut c), next(&mut c));
    let (other_permission, other_bind) = (next(&mut c), next(&mut c));
    c.handle_datagram(now, &signed_error(&permission, 403))
        .unwrap();
    c.handle_datagram(now, &signed_error(&bind, 403)).unwrap();
    assert_eq!(c.poll_event(), Some(TurnEvent::PeerRefused(peer().ip())));
    assert_eq!(c.poll_event(), None, "one event per peer");
    // Every later check towards it asks again: nothing is sent, it is counted.
    for _ in 0..3 {
        c.permit(now, peer());
        assert_eq!(c.wrap(peer(), b"check"), None);
    }
    assert_eq!(c.poll_transmit(), None);
    assert_eq!(c.counters().unpermitted, 3);
    // The allocation and the other peer are untouched.
    assert!(!c.is_failed());
    for r in [&other_permission, &other_bind] {
        c.handle_datagram(now, &respond(r, CLASS_SUCCESS_RESPONSE, &[], true))
            .unwrap();
    }
    assert!(c.wrap(other, b"media").is_some());
    assert_eq!(c.relayed(), Some(relayed()));
}

#[test]
fn addresses_no_relay_can_reach_are_not_asked_for() {
    let now = crate::test_instant();
    let mut c = allocated(now);
    for peer in [
        "127.0.0.1:4000",
        "169.254.1.1:4000",
        "[fe80::1]:4000",
        "0.0.0.0:4000",
    ] {
        c.permit(now, peer.parse().unwrap());
    }
    assert_eq!(c.poll_transmit(), None);
    let (public, local) = (server().ip(), "127.0.0.1".parse().unwrap());
    assert!(relayable("10.0.2.2".parse().unwrap(), public));
    assert!(relayable("2001:db8::1".parse().unwrap(), public));
    // A relay on loopback (everything on one machine) reaches loopback peers.
    assert!(relayable("127.0.0.1".parse().unwrap(), local));
    assert!(!relayable("169.254.1.1".parse().unwrap(), local));
}

#[test]
fn allocation_mismatch_on_a_permission_means_the_allocation_is_gone() {
    let now = crate::test_instant();
    let mut c = allocated(now);
    c.permit(now, peer());
    let permission = next(&mut c);
    c.handle_datagram(now, &signed_error(&permission, 437))
        .unwrap();
    assert_eq!(c.poll_event(), Some(TurnEvent::Failed(TurnFailure::Lost)));
    assert!(c.is_failed());
}

#[test]
fn wrong_credentials_fail_the_allocation() {
    let now = crate::test_instant();
    let mut c = client(now);
    let first = next(&mut c);
    c.handle_datagram(now, &error(&first, 401, "n1")).unwrap();
    let second = next(&mut c);
    c.handle_datagram(now, &error(&second, 401, "n1")).unwrap();
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnFailure::Unauthorized))
    );
    assert!(c.is_failed());
    assert!(!c.reallocate(now), "refused credentials are not retried");
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn a_forged_success_without_integrity_is_refused() {
    let now = crate::test_instant();
    let mut c = client(now);
    let first = next(&mut c);
    c.handle_datagram(now, &error(&first, 401, "n1")).unwrap();
    let second = next(&mut c);
    let forged = respond(
        &second,
        CLASS_SUCCESS_RESPONSE,
        &[&RelayedAddr("203.0.113.66:1".parse().unwrap())],
        false,
    );
    assert!(matches!(
        c.handle_datagram(now, &forged),
        Err(TurnError::Unauthenticated)
    ));
    assert_eq!(c.relayed(), None);
}

#[test]
fn a_silent_server_is_retried_with_backoff_then_given_up() {
    let now = crate::test_instant();
    let mut c = client(now);
    let mut sent = vec![now];
    let _ = c.poll_transmit();
    let mut t = now;
    while let Some(next) = c.poll_timeout() {
        t = next;
        c.handle_timeout(t);
        while c.poll_transmit().is_some() {
            sent.push(t);
        }
    }
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnFailure::Timeout))
    );
    assert_eq!(t - now, Duration::from_secs(5));
    let gaps: Vec<_> = sent.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
    assert!(sent.len() >= 4, "{sent:?}");
}

#[test]
fn the_allocation_is_refreshed_at_half_its_lifetime() {
    let now = crate::test_instant();
    let mut c = allocated(now);
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(300)));
    c.handle_timeout(now + Duration::from_secs(300));
    let refresh = next(&mut c);
    assert_eq!(refresh.typ.method, METHOD_REFRESH);
    c.handle_datagram(
        now + Duration::from_secs(300),
        &respond(&refresh, CLASS_SUCCESS_RESPONSE, &[&Lifetime(600)], true),
    )
    .unwrap();
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(600)));
}

proptest! {
    #[test]
    fn the_fuzz_driver_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        crate::fuzzing::turn_client_datagrams(&bytes, crate::test_instant());
    }

    #[test]
    fn garbage_from_the_server_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        kind in 0u8..3,
    ) {
        let now = crate::test_instant();
        let mut c = allocated(now);
        c.permit(now, peer());
        let mut bytes = bytes;
        match kind {
            0 if bytes.len() >= 20 => {
                bytes[0] &= 0x01;
                bytes[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            }
            1 if !bytes.is_empty() => bytes[0] = 0x40,
            _ => {}
        }
        let _ = c.handle_datagram(now, &bytes);
        let _ = data_indication(&bytes);
    }
}

/// A NONCE attribute of any length, as a hostile server could send.
struct RawNonce(Vec<u8>);

impl Setter for RawNonce {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        m.add(ATTR_NONCE, &self.0);
        Ok(())
    }
}

#[test]
fn a_nonce_too_long_to_send_back_fails_the_allocation_without_a_panic() {
    let now = crate::test_instant();
    let mut c = client(now);
    let first = next(&mut c);
    let attr = ErrorCodeAttribute {
        code: stun::error_code::ErrorCode(401),
        reason: b"x".to_vec(),
    };
    let long = RawNonce(vec![b'n'; 2000]);
    let realm = TextAttribute::new(ATTR_REALM, REALM.into());
    let reply = respond(&first, CLASS_ERROR_RESPONSE, &[&attr, &realm, &long], false);
    c.handle_datagram(now, &reply).unwrap();
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnFailure::Unauthorized))
    );
    assert!(c.poll_transmit().is_none());
}

#[test]
fn a_username_too_long_to_send_fails_at_once() {
    let now = crate::test_instant();
    let mut c = TurnConfig::new(server(), "u".repeat(600), PASS.into()).build(now, [7; 12]);
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnFailure::Unauthorized))
    );
    assert!(c.poll_transmit().is_none());
}

#[test]
fn a_probe_that_finds_the_allocation_gone_allocates_again() {
    let now = crate::test_instant();
    let mut c = allocated(now);
    c.permit(now, peer());
    let (_permission, _bind) = (next(&mut c), next(&mut c));
    // The path went silent: the client asks whether the allocation still stands, once
    // a second at most.
    c.probe(now);
    let refresh = next(&mut c);
    assert_eq!(refresh.typ.method, METHOD_REFRESH);
    c.probe(now + Duration::from_millis(500));
    assert_eq!(c.poll_transmit(), None, "one probe in flight at a time");
    // Our NAT moved us: the server knows no allocation for the new 5-tuple.
    c.handle_datagram(now, &signed_error(&refresh, 437))
        .unwrap();
    assert_eq!(c.poll_event(), Some(TurnEvent::Failed(TurnFailure::Lost)));
    assert!(c.reallocate(now));
    // A fresh dance: the new 5-tuple is a new client to the server.
    let first = next(&mut c);
    assert_eq!(first.typ.method, METHOD_ALLOCATE);
    assert!(first.get(ATTR_USERNAME).is_err());
    c.handle_datagram(now, &error(&first, 401, "n9")).unwrap();
    let mut second = next(&mut c);
    key().check(&mut second).expect("signed");
    let elsewhere: SocketAddr = "192.0.2.1:50002".parse().unwrap();
    c.handle_datagram(
        now,
        &respond(
            &second,
            CLASS_SUCCESS_RESPONSE,
            &[&RelayedAddr(elsewhere)],
            true,
        ),
    )
    .unwrap();
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Allocated {
            relayed: elsewhere,
            mapped: None
        })
    );
    // Permissions are asked for anew.
    assert_eq!(c.wrap(peer(), b"x"), None);
    c.permit(now, peer());
    assert_eq!(next(&mut c).typ.method, METHOD_CREATE_PERMISSION);
}

#[test]
fn a_lost_allocation_is_made_again_only_a_few_times() {
    let now = crate::test_instant();
    let mut c = allocated(now);
    assert!(!c.reallocate(now), "not lost");
    for _ in 0..MAX_REALLOCATIONS {
        c.probe(now + Duration::from_secs(10));
        let refresh = next(&mut c);
        c.handle_datagram(now, &signed_error(&refresh, 437))
            .unwrap();
        assert!(c.reallocate(now));
        let first = next(&mut c);
        c.handle_datagram(now, &error(&first, 401, "n1")).unwrap();
        let second = next(&mut c);
        c.handle_datagram(
            now,
            &respond(
                &second,
                CLASS_SUCCESS_RESPONSE,
                &[&RelayedAddr(relayed())],
                true,
            ),
        )
        .unwrap();
        assert!(c.relayed().is_some());
    }
    c.probe(now + Duration::from_secs(10));
    let refresh = next(&mut c);
    c.handle_datagram(now, &signed_error(&refresh, 437))
        .unwrap();
    assert!(!c.reallocate(now));
}

struct Ticket(Vec<u8>);

impl Setter for Ticket {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        m.add(ATTR_MOBILITY_TICKET, &self.0);
        Ok(())
    }
}

#[test]
fn a_probe_with_the_mobility_ticket_moves_the_allocation_instead_of_losing_it() {
    let now = crate::test_instant();
    let mut c = client(now);
    let first = next(&mut c);
    assert_eq!(
        first.get(ATTR_MOBILITY_TICKET).unwrap(),
        b"",
        "asks for mobility"
    );
    c.handle_datagram(now, &error(&first, 401, "n1")).unwrap();
    let second = next(&mut c);
    assert_eq!(second.get(ATTR_MOBILITY_TICKET).unwrap(), b"");
    let ok = respond(
        &second,
        CLASS_SUCCESS_RESPONSE,
        &[&RelayedAddr(relayed()), &Ticket(vec![1; 16])],
        true,
    );
    c.handle_datagram(now, &ok).unwrap();
    assert!(matches!(c.poll_event(), Some(TurnEvent::Allocated { .. })));
    // Every Refresh carries the ticket; the server's new ticket says it moved us.
    c.probe(now);
    let refresh = next(&mut c);
    assert_eq!(refresh.get(ATTR_MOBILITY_TICKET).unwrap(), vec![1; 16]);
    let moved = respond(
        &refresh,
        CLASS_SUCCESS_RESPONSE,
        &[&Lifetime(600), &Ticket(vec![2; 16])],
        true,
    );
    c.handle_datagram(now, &moved).unwrap();
    assert_eq!(c.poll_event(), Some(TurnEvent::Moved));
    assert_eq!(c.relayed(), Some(relayed()), "the same relayed address");
    c.probe(now + Duration::from_secs(2));
    let refresh = next(&mut c);
    assert_eq!(refresh.get(ATTR_MOBILITY_TICKET).unwrap(), vec![2; 16]);
    // A plain refresh (same ticket, or none) moved nothing.
    c.handle_datagram(
        now,
        &respond(&refresh, CLASS_SUCCESS_RESPONSE, &[&Lifetime(600)], true),
    )
    .unwrap();
    assert_eq!(c.poll_event(), None);
}

#[test]
fn a_server_that_refuses_mobility_is_asked_again_without_it() {
    // coturn without --mobility answers 405 (RFC 8016 §3.4).
    let now = crate::test_instant();
    let mut c = client(now);
    let first = next(&mut c);
    c.handle_datagram(now, &error(&first, 401, "n1")).unwrap();
    let second = next(&mut c);
    c.handle_datagram(now, &signed_error(&second, 405)).unwrap();
    assert_eq!(c.poll_event(), None, "not failed");
    let third = next(&mut c);
    assert_eq!(third.typ.method, METHOD_ALLOCATE);
    assert!(third.get(ATTR_MOBILITY_TICKET).is_err());
    c.handle_datagram(
        now,
        &respond(
            &third,
            CLASS_SUCCESS_RESPONSE,
            &[&RelayedAddr(relayed())],
            true,
        ),
    )
    .unwrap();
    assert!(matches!(c.poll_event(), Some(TurnEvent::Allocated { .. })));
    // No ticket: a refresh carries none, and a lost allocation is made again.
    c.probe(now);
    let refresh = next(&mut c);
    assert!(refresh.get(ATTR_MOBILITY_TICKET).is_err());
    // Only once: a second refusal of the plain Allocate fails it.
    let mut c = client(now);
    let first = next(&mut c);
    c.handle_datagram(now, &error(&first, 401, "n1")).unwrap();
    let second = next(&mut c);
    c.handle_datagram(now, &signed_error(&second, 405)).unwrap();
    let third = next(&mut c);
    c.handle_datagram(now, &signed_error(&third, 508)).unwrap();
    assert_eq!(
        c.poll_event(),
        Some(TurnEvent::Failed(TurnFailure::Refused(508)))
    );
}
