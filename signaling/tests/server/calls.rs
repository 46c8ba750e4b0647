use std::time::Duration;

use magpie_signaling::client::{ClientConfig, Heartbeat, Incoming};
use magpie_signaling::proto::{EndReason, ErrorCode, Event};
use serde_json::json;

use tokio::time::Instant;

use crate::common::{TestServer, answered_call, code, next, next_event, ring};

#[tokio::test]
async fn invite_rings_is_accepted_and_hung_up() {
    let mut server = TestServer::start().await;
    let (alice, mut alice_events) = server.user("alice").await;
    let (bob, mut bob_events) = server.user("bob").await;
    let offer = json!({"sdp": "v=0 offer", "candidates": ["127.0.0.1:5000"]});
    let call = alice.invite("bob", offer.clone()).await.unwrap();
    let Event::IncomingCall {
        call_id,
        from,
        offer: got,
    } = next_event(&mut bob_events).await
    else {
        panic!("expected incoming-call");
    };
    assert_eq!((call_id, from.as_str(), got), (call, "alice", offer));
    assert_eq!(
        next_event(&mut alice_events).await,
        Event::Ringing { call_id: call }
    );
    let answer = json!({"sdp": "v=0 answer"});
    bob.accept(call, answer.clone()).await.unwrap();
    assert_eq!(
        next_event(&mut alice_events).await,
        Event::Accepted {
            call_id: call,
            answer
        }
    );
    assert_eq!(code(alice.cancel(call).await), ErrorCode::WrongCallState);
    alice.hangup(call).await.unwrap();
    let hangup = Event::Hangup {
        call_id: call,
        reason: EndReason::Hangup,
    };
    assert_eq!(next_event(&mut bob_events).await, hangup);
    assert_eq!(code(bob.hangup(call).await), ErrorCode::NoSuchCall);

    let history = bob.history().await.unwrap();
    assert_eq!(history.len(), 1);
    let record = &history[0];
    assert_eq!(
        (
            record.call_id,
            record.caller.as_str(),
            record.callee.as_str()
        ),
        (call, "alice", "bob")
    );
    assert_eq!(record.end_reason, EndReason::Hangup);
    let answered = record
        .answered
        .expect("an accepted call has an answer time");
    assert!(
        record.created <= answered && answered <= record.ended,
        "{record:?}"
    );
    assert_eq!(alice.history().await.unwrap(), history);
    server.stop().await;
}

#[tokio::test]
async fn callee_rejects() {
    let mut server = TestServer::start().await;
    let (alice, mut alice_events) = server.user("alice").await;
    let (bob, mut bob_events) = server.user("bob").await;
    let call = ring(&alice, &mut alice_events, "bob", &mut bob_events).await;
    assert_eq!(
        code(alice.reject(call).await),
        ErrorCode::WrongCallState,
        "callers cancel"
    );
    bob.reject(call).await.unwrap();
    let rejected = Event::Rejected {
        call_id: call,
        reason: EndReason::Rejected,
    };
    assert_eq!(next_event(&mut alice_events).await, rejected);
    assert_eq!(
        alice.history().await.unwrap()[0].end_reason,
        EndReason::Rejected
    );
    // Both are free for a new call.
    bob.invite("alice", json!({})).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn caller_cancels_before_accept() {
    let mut server = TestServer::start().await;
    let (alice, mut alice_events) = server.user("alice").await;
    let (bob, mut bob_events) = server.user("bob").await;
    let call = ring(&alice, &mut alice_events, "bob", &mut bob_events).await;
    alice.cancel(call).await.unwrap();
    let cancelled = Event::Cancelled {
        call_id: call,
        reason: EndReason::Cancelled,
    };
    assert_eq!(next_event(&mut bob_events).await, cancelled);
    assert_eq!(
        code(bob.accept(call, json!({})).await),
        ErrorCode::NoSuchCall
    );
    server.stop().await;
}

#[tokio::test]
async fn busy_callee_and_caller_already_in_a_call() {
    let mut server = TestServer::start().await;
    let (alice, _a) = server.user("alice").await;
    let (_bob, _b) = server.user("bob").await;
    let (carol, _c) = server.user("carol").await;
    alice.invite("bob", json!({})).await.unwrap();
    assert_eq!(code(carol.invite("bob", json!({})).await), ErrorCode::Busy);
    assert_eq!(
        code(alice.invite("carol", json!({})).await),
        ErrorCode::AlreadyInCall
    );
    assert_eq!(
        code(carol.invite("carol", json!({})).await),
        ErrorCode::BadRequest
    );
    let history = carol.history().await.unwrap();
    assert_eq!(history.len(), 1, "the busy attempt is recorded");
    assert_eq!(
        (history[0].end_reason, history[0].answered),
        (EndReason::Busy, None)
    );
    server.stop().await;
}

#[tokio::test]
async fn offline_and_unknown_callees() {
    let mut server = TestServer::start().await;
    let (alice, _a) = server.user("alice").await;
    let (bob, _b) = server.connect().await;
    bob.register("bob", crate::common::PASSWORD).await.unwrap();
    assert_eq!(
        code(alice.invite("bob", json!({})).await),
        ErrorCode::Offline
    );
    assert_eq!(
        code(alice.invite("nobody", json!({})).await),
        ErrorCode::UnknownUser
    );
    assert_eq!(
        code(alice.invite("Not A Name", json!({})).await),
        ErrorCode::UnknownUser
    );
    server.stop().await;
}

#[tokio::test]
async fn offer_must_be_a_small_object() {
    let mut server = TestServer::start().await;
    let (alice, _a) = server.user("alice").await;
    let (_bob, _b) = server.user("bob").await;
    let max = alice.hello().max_payload_bytes;
    assert_eq!(
        code(alice.invite("bob", json!("a string")).await),
        ErrorCode::BadRequest
    );
    let big = json!({ "sdp": "x".repeat(max) });
    assert_eq!(code(alice.invite("bob", big).await), ErrorCode::TooLarge);
    let fits = json!({ "sdp": "x".repeat(max - 20) });
    alice.invite("bob", fits).await.unwrap();
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unanswered_call_is_missed_by_both_after_the_ring_timeout() {
    let mut server = TestServer::start().await;
    let (alice, mut alice_events) = server.user("alice").await;
    let (_bob, mut bob_events) = server.user("bob").await;
    let started = Instant::now();
    let call = ring(&alice, &mut alice_events, "bob", &mut bob_events).await;
    let missed = Event::Missed {
        call_id: call,
        reason: EndReason::Missed,
    };
    assert_eq!(next_event(&mut alice_events).await, missed);
    assert_eq!(next_event(&mut bob_events).await, missed);
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "rang the full 30 s"
    );
    let history = alice.history().await.unwrap();
    assert_eq!(
        (history[0].end_reason, history[0].answered),
        (EndReason::Missed, None)
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn silent_peer_is_dropped_and_the_call_ends_with_peer_lost() {
    let mut server = TestServer::start().await;
    let (alice, mut alice_events) = server.user("alice").await;
    let silent = ClientConfig::default().set_heartbeat(Heartbeat::Off);
    let (bob, mut bob_events) = server.user_with("bob", silent).await;
    let call = answered_call(&alice, &mut alice_events, ("bob", &bob), &mut bob_events).await;
    let quiet_since = Instant::now();
    let lost = Event::Hangup {
        call_id: call,
        reason: EndReason::PeerLost,
    };
    assert_eq!(next_event(&mut alice_events).await, lost);
    assert!(
        quiet_since.elapsed() >= Duration::from_secs(44),
        "about 3 x 15 s of silence"
    );
    // Bob was told why before the connection closed.
    let Incoming::Error(err) = next(&mut bob_events).await else {
        panic!("expected heartbeat-timeout");
    };
    assert_eq!(err.code, ErrorCode::HeartbeatTimeout);
    // Alice, who sends heartbeats, is still connected.
    alice.ping().await.unwrap();
    assert_eq!(
        alice.history().await.unwrap()[0].end_reason,
        EndReason::PeerLost
    );
    server.stop().await;
}

#[tokio::test]
async fn closing_the_connection_ends_the_call_with_peer_lost() {
    let mut server = TestServer::start().await;
    let (alice, mut alice_events) = server.user("alice").await;
    let (bob, mut bob_events) = server.user("bob").await;
    let call = ring(&alice, &mut alice_events, "bob", &mut bob_events).await;
    drop((bob, bob_events));
    let lost = Event::Hangup {
        call_id: call,
        reason: EndReason::PeerLost,
    };
    assert_eq!(next_event(&mut alice_events).await, lost);
    server.stop().await;
}

/// The hub keeps the relay's directory of call peers (PROTO-RELAY.md item 3): a party of
/// a live call, ringing or answered, sees where the other signals from; nobody else
/// does, and the call's end clears it.
#[tokio::test]
async fn the_hub_tells_the_relay_who_is_in_a_call_with_whom() {
    let peers = magpie_signaling::relay::CallPeers::new();
    let directory = peers.clone();
    let server = TestServer::start_with(move |c| c.set_call_peers(directory)).await;
    let (alice, _alice_events) = server.user("alice").await;
    let (bob, mut bob_events) = server.user("bob").await;
    let (_carol, _carol_events) = server.user("carol").await;
    assert_eq!(peers.peer_ip("alice"), None);
    let call = alice.invite("bob", json!({})).await.unwrap();
    let loopback = Some("127.0.0.1".parse().unwrap());
    assert_eq!(peers.peer_ip("alice"), loopback, "ringing counts");
    assert_eq!(peers.peer_ip("bob"), loopback);
    assert_eq!(peers.peer_ip("carol"), None);
    let _ = next_event(&mut bob_events).await;
    bob.accept(call, json!({})).await.unwrap();
    alice.hangup(call).await.unwrap();
    let _ = next_event(&mut bob_events).await;
    assert_eq!(peers.peer_ip("alice"), None, "the call ended");
    assert_eq!(peers.peer_ip("bob"), None);
}
