use std::sync::Arc;

use magpie_signaling::config::Counters;
use magpie_signaling::proto::ErrorCode;

use crate::common::{PASSWORD, TestServer, code};

fn login_line(id: usize, user: &str, password: &str) -> String {
    format!(r#"{{"type":"login","id":{id},"user":"{user}","password":"{password}"}}"#)
}

#[tokio::test]
async fn register_then_login_and_refuse_wrong_password() {
    let mut server = TestServer::start().await;
    let (client, _events) = server.connect().await;
    client.register("alice", PASSWORD).await.unwrap();
    assert_eq!(
        code(client.register("alice", "another password").await),
        ErrorCode::UserExists
    );
    assert_eq!(
        code(client.login("alice", "wrong password").await),
        ErrorCode::BadCredentials
    );
    assert_eq!(
        code(client.login("nobody", PASSWORD).await),
        ErrorCode::BadCredentials
    );
    let ok = client.login("alice", PASSWORD).await.unwrap();
    assert_eq!((ok.user.as_str(), ok.pending_messages), ("alice", 0));
    assert_eq!(
        code(client.login("alice", PASSWORD).await),
        ErrorCode::AlreadyLoggedIn
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_names_and_passwords_are_refused_at_registration() {
    let mut server = TestServer::start().await;
    let (client, _events) = server.connect().await;
    for name in ["Alice", "al", "9lives", "with space", ""] {
        assert_eq!(
            code(client.register(name, PASSWORD).await),
            ErrorCode::InvalidUsername,
            "{name}"
        );
    }
    assert_eq!(
        code(client.register("alice", "short").await),
        ErrorCode::InvalidPassword
    );
    let long = "x".repeat(2000);
    assert_eq!(
        code(client.register("alice", &long).await),
        ErrorCode::InvalidPassword
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn repeated_wrong_passwords_slow_down_that_user_only() {
    let mut server = TestServer::start().await;
    let (client, _events) = server.connect().await;
    client.register("alice", PASSWORD).await.unwrap();
    client.register("bob", PASSWORD).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            code(client.login("alice", "guess one").await),
            ErrorCode::BadCredentials
        );
    }
    let third = client.login("alice", "guess two").await.unwrap_err();
    assert_eq!(third.code(), Some(ErrorCode::BadCredentials));
    // Even the right password waits out the lock.
    let locked = client.login("alice", PASSWORD).await.unwrap_err();
    assert_eq!(locked.code(), Some(ErrorCode::TooManyAttempts));
    let magpie_signaling::client::ClientError::Server(err) = locked else {
        unreachable!()
    };
    assert!(
        err.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 1000),
        "{err:?}"
    );
    // Another user is not affected.
    let (other, _events) = server.connect().await;
    other.login("bob", PASSWORD).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    client.login("alice", PASSWORD).await.unwrap();
    server.stop().await;
}

/// The issue's lock-out: a stranger sends 200 wrong passwords for alice from their own
/// address; alice still logs in from hers.
#[tokio::test]
async fn a_strangers_wrong_passwords_leave_the_owner_able_to_log_in() {
    let mut server = TestServer::start_with(|c| c.set_rate(1000, 1000)).await;
    let (owner, _events) = server.connect().await;
    owner.register("alice", PASSWORD).await.unwrap();
    let mut stranger = server.raw_from("127.0.0.2").await;
    let guesses: String = (0..200)
        .map(|id| login_line(id, "alice", "a wrong guess") + "\n")
        .collect();
    stranger.send(guesses.as_bytes()).await;
    let mut refused = 0;
    for id in 0..200 {
        let reply = stranger.line().await.unwrap();
        assert_eq!(reply["id"], id);
        match reply["code"].as_str() {
            Some("too-many-attempts" | "rate-limited") => refused += 1,
            Some("bad-credentials") => {}
            other => panic!("unexpected reply {other:?}: {reply}"),
        }
    }
    assert!(
        refused >= 150,
        "most guesses are refused unhashed: {refused}"
    );
    let ok = owner.login("alice", PASSWORD).await.unwrap();
    assert_eq!(ok.user.as_str(), "alice");
    server.stop().await;
}

/// Twelve guesses at once from one address: only the three free ones are verified.
#[tokio::test(start_paused = true)]
async fn parallel_guesses_beyond_the_allowance_never_reach_the_hasher() {
    let mut counters: Option<Arc<Counters>> = None;
    let mut server = TestServer::start_with(|c| {
        counters = Some(c.counters());
        c
    })
    .await;
    let counters = counters.unwrap();
    let (owner, _events) = server.connect().await;
    owner.register("alice", PASSWORD).await.unwrap();
    let mut guessers = Vec::new();
    for _ in 0..12 {
        guessers.push(server.raw_from("127.0.0.2").await);
    }
    for guesser in &mut guessers {
        guesser
            .send((login_line(1, "alice", "a wrong guess") + "\n").as_bytes())
            .await;
    }
    let mut codes = Vec::new();
    for guesser in &mut guessers {
        codes.push(guesser.line().await.unwrap()["code"].clone());
    }
    let wrong = codes.iter().filter(|c| *c == "bad-credentials").count();
    let refused = codes.iter().filter(|c| *c == "too-many-attempts").count();
    assert_eq!((wrong, refused), (3, 9), "{codes:?}");
    assert_eq!(counters.verifications(), 3);
    owner.login("alice", PASSWORD).await.unwrap();
    assert_eq!(counters.verifications(), 4);
    server.stop().await;
}

/// A flood that fills the hashing queue gets `server-busy` at once, never a hang.
#[tokio::test]
async fn a_full_hashing_queue_answers_server_busy() {
    let mut counters: Option<Arc<Counters>> = None;
    let mut server = TestServer::start_with(|c| {
        counters = Some(c.counters());
        c.set_hashing(1, 0).set_rate(1000, 1000)
    })
    .await;
    let counters = counters.unwrap();
    let mut flood = Vec::new();
    for i in 0..6 {
        let mut raw = server.raw_from("127.0.0.3").await;
        raw.send((login_line(1, &format!("nobody{i}"), PASSWORD) + "\n").as_bytes())
            .await;
        flood.push(raw);
    }
    let mut busy = 0;
    for raw in &mut flood {
        let reply = raw.line().await.unwrap();
        if reply["code"] == "server-busy" {
            assert!(reply["retry_after_ms"].as_u64().is_some());
            busy += 1;
        } else {
            assert_eq!(reply["code"], "bad-credentials", "{reply}");
        }
    }
    assert_eq!(counters.hashing_busy(), busy);
    assert!(busy >= 1, "one worker and no queue cannot take six at once");
    server.stop().await;
}

/// `register` and `login` are limited per address, not only per connection.
#[tokio::test(start_paused = true)]
async fn registrations_are_limited_per_address() {
    let mut server = TestServer::start_with(|c| c.set_register_rate(2, 1)).await;
    let mut codes = Vec::new();
    for i in 0..3 {
        let mut raw = server.raw_from("127.0.0.4").await;
        let line =
            format!(r#"{{"type":"register","id":1,"user":"user{i}","password":"{PASSWORD}"}}"#);
        codes.push(raw.request(&line).await["type"].clone());
    }
    assert_eq!(codes, ["ok", "ok", "error"]);
    let (other, _events) = server.connect().await;
    other.register("fromhome", PASSWORD).await.unwrap();
    server.stop().await;
}
