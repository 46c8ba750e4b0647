use std::time::Duration;

use magpie_signaling::client::Incoming;
use magpie_signaling::proto::{EndReason, ErrorCode, Event, Presence, UserName};
use magpie_signaling::stun_server;
use serde_json::json;
use tokio::net::UdpSocket;

use crate::common::{PASSWORD, TestServer, answered_call, assert_closed, next, next_event};

/// Issue 14, item 3: a second login adds a session instead of replacing the first. A
/// call rings on both; the first to accept takes it and the other is told; chat reaches
/// both; losing the session that did not take the call leaves the call up.
#[tokio::test]
async fn a_call_rings_on_every_session_and_the_first_to_accept_takes_it() {
    let mut server = TestServer::start().await;
    let (alice, mut alice_events) = server.user("alice").await;
    let (bob_a, mut bob_a_events) = server.user("bob").await;
    let (bob_b, mut bob_b_events) = server.session("bob").await;
    let bob = UserName::parse("bob").unwrap();
    assert!(alice.who().await.unwrap().contains(&bob));

    let call = alice.invite("bob", json!({"sdp": 1})).await.unwrap();
    for events in [&mut bob_a_events, &mut bob_b_events] {
        assert!(matches!(
            next_event(events).await,
            Event::IncomingCall { call_id, .. } if call_id == call
        ));
    }
    assert_eq!(
        next_event(&mut alice_events).await,
        Event::Ringing { call_id: call }
    );
    bob_b.accept(call, json!({"sdp": 2})).await.unwrap();
    assert_eq!(
        next_event(&mut bob_a_events).await,
        Event::AnsweredElsewhere {
            call_id: call,
            accepted: true
        }
    );
    assert!(matches!(
        next_event(&mut alice_events).await,
        Event::Accepted { call_id, .. } if call_id == call
    ));
    // Too late on the other device.
    assert!(bob_a.accept(call, json!({})).await.is_err());

    alice.message("bob", "both of you?").await.unwrap();
    for events in [&mut bob_a_events, &mut bob_b_events] {
        assert!(matches!(next_event(events).await, Event::Message(_)));
    }

    // The session that did not take the call goes; the call and bob stay.
    drop(bob_a);
    assert_closed(&mut bob_a_events).await;
    assert!(alice.who().await.unwrap().contains(&bob));
    bob_b.hangup(call).await.unwrap();
    assert_eq!(
        next_event(&mut alice_events).await,
        Event::Hangup {
            call_id: call,
            reason: EndReason::Hangup
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn declining_on_one_session_stops_the_others_ringing() {
    let mut server = TestServer::start().await;
    let (alice, mut alice_events) = server.user("alice").await;
    let (bob_a, mut bob_a_events) = server.user("bob").await;
    let (_bob_b, mut bob_b_events) = server.session("bob").await;
    let call = alice.invite("bob", json!({})).await.unwrap();
    for events in [&mut bob_a_events, &mut bob_b_events] {
        assert!(matches!(
            next_event(events).await,
            Event::IncomingCall { .. }
        ));
    }
    bob_a.reject(call).await.unwrap();
    assert_eq!(
        next_event(&mut bob_b_events).await,
        Event::AnsweredElsewhere {
            call_id: call,
            accepted: false
        }
    );
    assert_eq!(
        next_event(&mut alice_events).await,
        Event::Ringing { call_id: call }
    );
    assert_eq!(
        next_event(&mut alice_events).await,
        Event::Rejected {
            call_id: call,
            reason: EndReason::Rejected
        }
    );
    server.stop().await;
}

/// A call that rings on one session only: losing it ends the call, as before.
#[tokio::test]
async fn losing_the_session_in_a_call_ends_it_for_the_peer() {
    let mut server = TestServer::start().await;
    let (alice, mut alice_events) = server.user("alice").await;
    let (old_bob, mut old_bob_events) = server.user("bob").await;
    let call = answered_call(
        &alice,
        &mut alice_events,
        ("bob", &old_bob),
        &mut old_bob_events,
    )
    .await;
    let (new_bob, mut new_bob_events) = server.session("bob").await;
    drop(old_bob);
    assert_closed(&mut old_bob_events).await;
    let lost = Event::Hangup {
        call_id: call,
        reason: EndReason::PeerLost,
    };
    assert_eq!(next_event(&mut alice_events).await, lost);
    // The other session was not in the call and is still online.
    assert!(new_bob.ping().await.is_ok());
    alice.message("bob", "still there?").await.unwrap();
    assert!(matches!(
        next_event(&mut new_bob_events).await,
        Event::Message(_)
    ));
    server.stop().await;
}

/// Past MAX_SESSIONS (8) the oldest session is closed with session-replaced.
#[tokio::test]
async fn past_eight_sessions_the_oldest_is_replaced() {
    let mut server = TestServer::start().await;
    let (oldest, mut oldest_events) = server.user("bob").await;
    let mut others = Vec::new();
    for _ in 0..8 {
        others.push(server.session("bob").await);
    }
    let Incoming::Error(err) = next(&mut oldest_events).await else {
        panic!("expected error")
    };
    assert_eq!((err.code, err.id), (ErrorCode::SessionReplaced, None));
    assert_closed(&mut oldest_events).await;
    assert!(oldest.is_closed());
    for (client, _) in &others {
        assert!(client.ping().await.is_ok());
    }
    server.stop().await;
}

#[tokio::test]
async fn who_and_watch_report_presence() {
    let mut server = TestServer::start().await;
    let (alice, mut alice_events) = server.user("alice").await;
    let (bob, _b) = server.connect().await;
    bob.register("bob", PASSWORD).await.unwrap();
    let name = |n: &str| UserName::parse(n).unwrap();
    let state = alice.watch(&["bob"]).await.unwrap();
    assert_eq!(
        state,
        vec![Presence {
            user: name("bob"),
            online: false
        }]
    );
    bob.login("bob", PASSWORD).await.unwrap();
    let online = Event::Presence(Presence {
        user: name("bob"),
        online: true,
    });
    assert_eq!(next_event(&mut alice_events).await, online);
    assert_eq!(alice.who().await.unwrap(), vec![name("alice"), name("bob")]);
    drop(bob);
    let offline = Event::Presence(Presence {
        user: name("bob"),
        online: false,
    });
    assert_eq!(next_event(&mut alice_events).await, offline);
    assert_eq!(alice.who().await.unwrap(), vec![name("alice")]);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_calls_and_tells_every_client() {
    let mut server = TestServer::start().await;
    let (alice, mut alice_events) = server.user("alice").await;
    let (bob, mut bob_events) = server.user("bob").await;
    let (_idle, mut idle_events) = server.connect().await;
    let call = answered_call(&alice, &mut alice_events, ("bob", &bob), &mut bob_events).await;
    server.stop().await;

    let ended = Event::Hangup {
        call_id: call,
        reason: EndReason::ServerShutdown,
    };
    for events in [&mut alice_events, &mut bob_events] {
        assert_eq!(next_event(events).await, ended);
        assert_eq!(next_event(events).await, Event::ServerShutdown);
        assert_closed(events).await;
    }
    assert_eq!(next_event(&mut idle_events).await, Event::ServerShutdown);

    // The database is consistent: the call is in the history after a restart.
    let mut server = TestServer::start_on(&server.db, |c| c).await;
    let (alice, _a) = server.connect().await;
    alice.login("alice", PASSWORD).await.unwrap();
    let history = alice.history().await.unwrap();
    assert_eq!(
        (history[0].call_id, history[0].end_reason),
        (call, EndReason::ServerShutdown)
    );
    server.stop().await;
}

#[tokio::test]
async fn stun_binding_request_reveals_the_reflexive_address() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(stun_server::serve(server, async move {
        let _ = stopped.await;
    }));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(b"not stun", server_addr).await.unwrap();
    let mapped = stun_server::discover(&client, server_addr, Duration::from_secs(10)).await;
    assert_eq!(mapped.unwrap(), client.local_addr().unwrap());
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// A flood from one source is answered up to its burst; another source still gets
/// its answer, and what was dropped is counted.
#[tokio::test(start_paused = true)]
async fn stun_flood_from_one_source_is_answered_at_a_bounded_rate() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let limits = stun_server::StunLimits {
        per_source: (1, 5),
        ..Default::default()
    };
    let counters = std::sync::Arc::new(stun_server::StunCounters::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(stun_server::serve_with(
        server,
        limits,
        std::sync::Arc::clone(&counters),
        async move {
            let _ = stopped.await;
        },
    ));
    let flooder = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let request = magpie_media::ice::binding_request([7; 12]);
    for _ in 0..50 {
        flooder.send_to(&request, server_addr).await.unwrap();
    }
    // The server reads in order: once another source has its answer, the flood was seen.
    let honest = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let mapped = stun_server::discover(&honest, server_addr, Duration::from_secs(10)).await;
    assert_eq!(mapped.unwrap(), honest.local_addr().unwrap());
    assert_eq!((counters.answered(), counters.dropped()), (6, 45));
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stun_discovery_gives_up_when_nobody_answers() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = silent.local_addr().unwrap();
    let err = stun_server::discover(&client, server, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    let mut buf = [0u8; 100];
    let mut requests = 0;
    let wait = Duration::from_secs(1);
    while let Ok(Ok(_)) = tokio::time::timeout(wait, silent.recv_from(&mut buf)).await {
        requests += 1;
    }
    assert_eq!(
        requests, 3,
        "sent at 0, 0.5 and 1.5 s; the next would be at 3.5 s"
    );
}

#[tokio::test]
async fn watch_list_is_capped_in_total() {
    let mut server = TestServer::start_with(|c| c.set_max_watch(2)).await;
    let (alice, _a) = server.user("alice").await;
    assert_eq!(alice.watch(&["bob", "carol"]).await.unwrap().len(), 2);
    assert_eq!(
        alice.watch(&["bob"]).await.unwrap().len(),
        1,
        "re-watching costs nothing"
    );
    let refused = alice.watch(&["dave"]).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::TooLarge));
    server.stop().await;
}
