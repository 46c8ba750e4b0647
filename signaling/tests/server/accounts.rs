use magpie_signaling::proto::ErrorCode;

use crate::common::{PASSWORD, TestServer, code};

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
