//! `relay` (TURN REST credentials for a party of a live call) and `candidates`
//! (trickle to the other party): who gets them, and what is refused and counted.

use std::time::{SystemTime, UNIX_EPOCH};

use magpie_signaling::RelayGrant;
use magpie_signaling::proto::{ErrorCode, Event, Trickle};
use magpie_signaling::relay::auth::Secret;
use serde_json::json;

use crate::common::{TestServer, answered_call, code, next_event, ring};

const SECRET: &str = "relay-test-secret";

fn with_relay(config: magpie_signaling::Config) -> magpie_signaling::Config {
    let addr = "198.51.100.1:3478".parse().unwrap();
    config.set_relay(Some(RelayGrant::new(addr, Secret::new(SECRET.as_bytes()))))
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn parties_of_a_ringing_or_answered_call_get_rest_credentials() {
    let mut server = TestServer::start_with(with_relay).await;
    let counters = server.counters();
    let (alice, mut alice_events) = server.user("alice").await;
    let (bob, mut bob_events) = server.user("bob").await;
    let call = ring(&alice, &mut alice_events, "bob", &mut bob_events).await;
    // The callee allocates while ringing.
    let servers = bob.relay(call).await.unwrap();
    assert_eq!(servers.len(), 1);
    let relay = &servers[0];
    assert_eq!(relay.url, "turn:198.51.100.1:3478");
    assert_eq!(relay.ttl_s, 6 * 3600);
    let (expiry, user) = relay.username.split_once(':').unwrap();
    assert_eq!(user, "bob");
    let expiry: u64 = expiry.parse().unwrap();
    let now = unix_s();
    assert!(
        (now + 6 * 3600 - 10..=now + 6 * 3600 + 10).contains(&expiry),
        "{expiry} vs {now}"
    );
    // What coturn's static-auth-secret and our relay check.
    let expected = Secret::new(SECRET.as_bytes()).password(&relay.username);
    assert_eq!(relay.credential, expected);

    bob.accept(call, json!({"sdp": "answer"})).await.unwrap();
    let servers = alice.relay(call).await.unwrap();
    assert!(servers[0].username.ends_with(":alice"), "{servers:?}");
    assert_eq!(counters.relay_granted(), 2);
    server.stop().await;
}

#[tokio::test]
async fn strangers_ended_calls_and_relayless_servers_are_refused() {
    let mut server = TestServer::start_with(with_relay).await;
    let counters = server.counters();
    let (alice, mut alice_events) = server.user("alice").await;
    let (bob, mut bob_events) = server.user("bob").await;
    let (carol, _c) = server.user("carol").await;
    let call = answered_call(&alice, &mut alice_events, ("bob", &bob), &mut bob_events).await;
    assert_eq!(code(carol.relay(call).await), ErrorCode::NotInCall);
    let unknown = magpie_signaling::proto::CallId(call.0 + 100);
    assert_eq!(code(alice.relay(unknown).await), ErrorCode::NotInCall);
    alice.hangup(call).await.unwrap();
    assert_eq!(code(alice.relay(call).await), ErrorCode::NotInCall);
    assert_eq!(counters.relay_refused(), 3);
    assert_eq!(counters.relay_granted(), 0);
    server.stop().await;

    let mut plain = TestServer::start().await;
    let (alice, mut alice_events) = plain.user("alice").await;
    let (_bob, mut bob_events) = plain.user("bob").await;
    let call = ring(&alice, &mut alice_events, "bob", &mut bob_events).await;
    assert_eq!(code(alice.relay(call).await), ErrorCode::NoRelay);
    plain.stop().await;
}

#[tokio::test]
async fn late_candidates_reach_the_other_party_untouched() {
    let mut server = TestServer::start().await;
    let counters = server.counters();
    let (alice, mut alice_events) = server.user("alice").await;
    let (bob, mut bob_events) = server.user("bob").await;
    let call = ring(&alice, &mut alice_events, "bob", &mut bob_events).await;
    let candidates = vec![json!({"addr": "198.51.100.1:50000", "type": "relay"})];
    alice.candidates(call, candidates.clone()).await.unwrap();
    assert_eq!(
        next_event(&mut bob_events).await,
        Event::Candidates(Trickle {
            call_id: call,
            candidates: candidates.clone(),
        })
    );
    bob.candidates(call, candidates.clone()).await.unwrap();
    assert!(matches!(
        next_event(&mut alice_events).await,
        Event::Candidates(Trickle { call_id, .. }) if call_id == call
    ));
    assert_eq!(counters.candidates_passed(), 2);
    server.stop().await;
}

#[tokio::test]
async fn bad_trickles_are_refused_and_counted() {
    let mut server = TestServer::start().await;
    let counters = server.counters();
    let (alice, mut alice_events) = server.user("alice").await;
    let (_bob, mut bob_events) = server.user("bob").await;
    let (carol, _c) = server.user("carol").await;
    let call = ring(&alice, &mut alice_events, "bob", &mut bob_events).await;
    let one = json!({"addr": "192.0.2.1:4000", "type": "host"});
    assert_eq!(
        code(alice.candidates(call, vec![one.clone(); 17]).await),
        ErrorCode::TooLarge
    );
    assert_eq!(
        code(alice.candidates(call, vec![]).await),
        ErrorCode::TooLarge
    );
    assert_eq!(
        code(alice.candidates(call, vec![json!("192.0.2.1:4000")]).await),
        ErrorCode::BadRequest
    );
    let huge = json!({"addr": "x".repeat(20_000)});
    assert_eq!(
        code(alice.candidates(call, vec![huge]).await),
        ErrorCode::TooLarge
    );
    assert_eq!(
        code(carol.candidates(call, vec![one.clone()]).await),
        ErrorCode::NotInCall
    );
    alice.cancel(call).await.unwrap();
    assert_eq!(
        code(alice.candidates(call, vec![one]).await),
        ErrorCode::NotInCall
    );
    assert_eq!(counters.candidates_refused(), 6);
    assert_eq!(counters.candidates_passed(), 0);
    // Bob heard the cancel and nothing else.
    assert!(matches!(
        next_event(&mut bob_events).await,
        Event::Cancelled { .. }
    ));
    server.stop().await;
}
