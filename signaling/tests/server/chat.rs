use magpie_signaling::proto::{ErrorCode, Event};

use crate::common::{PASSWORD, TestServer, code, next_event};

#[tokio::test]
async fn message_to_an_online_user_arrives_at_once() {
    let mut server = TestServer::start().await;
    let (alice, _a) = server.user("alice").await;
    let (bob, mut bob_events) = server.user("bob").await;
    let sent = alice.message("bob", "hello bob").await.unwrap();
    assert!(sent.delivered);
    let Event::Message(message) = next_event(&mut bob_events).await else {
        panic!("expected a message");
    };
    assert_eq!(
        (message.message_id, message.from.as_str()),
        (sent.message_id, "alice")
    );
    assert_eq!(
        (message.text.as_str(), message.sent_at),
        ("hello bob", sent.sent_at)
    );
    bob.ack(&[message.message_id]).await.unwrap();
    assert_eq!(
        code(alice.message("nobody", "hi").await),
        ErrorCode::UnknownUser
    );
    assert_eq!(code(alice.message("bob", "").await), ErrorCode::BadRequest);
    assert_eq!(
        code(alice.message("bob", &"x".repeat(5000)).await),
        ErrorCode::TooLarge
    );
    server.stop().await;
}

#[tokio::test]
async fn message_to_an_offline_user_waits_for_their_login_and_ack() {
    let mut server = TestServer::start().await;
    let (alice, _a) = server.user("alice").await;
    let (bob, _b) = server.connect().await;
    bob.register("bob", PASSWORD).await.unwrap();
    drop(bob);
    let first = alice.message("bob", "are you there?").await.unwrap();
    let second = alice.message("bob", "call me").await.unwrap();
    assert!(!first.delivered && !second.delivered);

    let (bob, mut bob_events) = server.connect().await;
    assert_eq!(
        bob.login("bob", PASSWORD).await.unwrap().pending_messages,
        2
    );
    let mut ids = Vec::new();
    for text in ["are you there?", "call me"] {
        let Event::Message(message) = next_event(&mut bob_events).await else {
            panic!("expected a message");
        };
        assert_eq!(message.text, text);
        ids.push(message.message_id);
    }
    assert_eq!(ids, vec![first.message_id, second.message_id]);
    // Only the first is acknowledged: the second comes again at the next login.
    bob.ack(&ids[..1]).await.unwrap();
    drop((bob, bob_events));
    let (bob, mut bob_events) = server.connect().await;
    assert_eq!(
        bob.login("bob", PASSWORD).await.unwrap().pending_messages,
        1
    );
    let Event::Message(again) = next_event(&mut bob_events).await else {
        panic!()
    };
    assert_eq!(again.message_id, second.message_id);
    server.stop().await;
}

#[tokio::test]
async fn stored_messages_survive_a_server_restart() {
    let server = TestServer::start().await;
    let (alice, _a) = server.user("alice").await;
    let (bob, _b) = server.connect().await;
    bob.register("bob", PASSWORD).await.unwrap();
    drop(bob);
    let sent = alice
        .message("bob", "see you after the restart")
        .await
        .unwrap();
    drop(alice);
    let (db, dir) = server.stop_keep_db().await;

    let mut server = TestServer::start_on(&db, |c| c).await;
    let (bob, mut bob_events) = server.connect().await;
    assert_eq!(
        bob.login("bob", PASSWORD).await.unwrap().pending_messages,
        1
    );
    let Event::Message(message) = next_event(&mut bob_events).await else {
        panic!()
    };
    assert_eq!(
        (message.message_id, message.text.as_str()),
        (sent.message_id, "see you after the restart")
    );
    bob.ack(&[message.message_id]).await.unwrap();
    server.stop().await;
    drop(dir);
}

#[tokio::test]
async fn unread_messages_are_capped_per_recipient() {
    let mut server = TestServer::start_with(|c| c.set_max_pending_messages(2)).await;
    let (alice, _a) = server.user("alice").await;
    let (bob, mut bob_events) = server.user("bob").await;
    let first = alice.message("bob", "one").await.unwrap();
    alice.message("bob", "two").await.unwrap();
    assert_eq!(
        code(alice.message("bob", "three").await),
        ErrorCode::MailboxFull
    );
    for _ in 0..2 {
        assert!(matches!(
            next_event(&mut bob_events).await,
            Event::Message(_)
        ));
    }
    bob.ack(&[first.message_id]).await.unwrap();
    alice.message("bob", "three").await.unwrap();
    server.stop().await;
}

/// A stranger's share of an absent user's mailbox is capped; others can still write.
#[tokio::test]
async fn one_sender_cannot_fill_an_absent_users_mailbox() {
    let mut server = TestServer::start_with(|c| c.set_max_pending_per_sender(3)).await;
    let (bob, bob_events) = server.user("bob").await;
    drop((bob, bob_events));
    let (stranger, _s) = server.user("stranger").await;
    for i in 0..3 {
        stranger.message("bob", &format!("spam {i}")).await.unwrap();
    }
    assert_eq!(
        code(stranger.message("bob", "one more").await),
        ErrorCode::MailboxFull
    );
    let (friend, _f) = server.user("friend").await;
    friend.message("bob", "are you there?").await.unwrap();
    server.stop().await;
}

/// Stored messages come after the login reply, in order, read a page at a time.
#[tokio::test]
async fn pending_messages_arrive_in_pages_after_login() {
    let mut server = TestServer::start_with(|c| c.set_pending_page(2)).await;
    let (bob, bob_events) = server.user("bob").await;
    drop((bob, bob_events));
    let (alice, _a) = server.user("alice").await;
    for i in 0..5 {
        alice.message("bob", &format!("m{i}")).await.unwrap();
    }
    let (bob, mut bob_events) = server.connect().await;
    assert_eq!(
        bob.login("bob", PASSWORD).await.unwrap().pending_messages,
        5
    );
    let mut texts = Vec::new();
    while texts.len() < 5 {
        match next_event(&mut bob_events).await {
            Event::Message(m) => texts.push(m.text),
            Event::Presence(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    server.stop().await;
}
