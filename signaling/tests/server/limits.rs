use std::time::Duration;

use magpie_signaling::client;
use magpie_signaling::proto::ErrorCode;
use serde_json::Value;

use crate::common::TestServer;

async fn refused_with(server: &TestServer) -> ErrorCode {
    client::connect(server.addr)
        .await
        .unwrap_err()
        .code()
        .expect("a server refusal")
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_and_others_keep_working() {
    let mut server = TestServer::start_with(|c| c.set_max_connections(2)).await;
    let (first, _e1) = server.connect().await;
    let (_second, _e2) = server.connect().await;
    assert_eq!(refused_with(&server).await, ErrorCode::TooManyConnections);
    first.ping().await.unwrap();
    drop((first, _e1));
    // The freed slot is reused once the server has seen the close.
    let mut attempts = 0;
    let third = loop {
        match client::connect(server.addr).await {
            Ok(connected) => break connected,
            Err(err) if err.code() == Some(ErrorCode::TooManyConnections) && attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("{err}"),
        }
    };
    third.0.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_per_address_limit_are_refused() {
    let mut server = TestServer::start_with(|c| c.set_max_per_address(2)).await;
    let (_a, _ea) = server.connect().await;
    let (b, _eb) = server.connect().await;
    assert_eq!(refused_with(&server).await, ErrorCode::TooManyFromAddress);
    b.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn connection_that_does_not_log_in_is_closed() {
    let mut server = TestServer::start().await;
    let mut raw = server.raw().await;
    raw.line().await.unwrap();
    // Pings keep the heartbeat alive but do not count as logging in.
    raw.request(r#"{"type":"ping","id":1}"#).await;
    let started = tokio::time::Instant::now();
    let error = raw.line().await.unwrap();
    assert_eq!(error["code"], "login-timeout");
    assert!(started.elapsed() <= Duration::from_secs(10));
    assert_eq!(raw.line().await, None);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn request_flood_is_rate_limited_without_closing_the_connection() {
    let mut server = TestServer::start_with(|c| c.set_rate(10, 20)).await;
    let mut raw = server.raw().await;
    raw.line().await.unwrap();
    let burst: String = (0..50)
        .map(|id| format!("{{\"type\":\"ping\",\"id\":{id}}}\n"))
        .collect();
    raw.send(burst.as_bytes()).await;
    let mut limited = 0;
    for id in 0..50 {
        let reply: Value = raw.line().await.unwrap();
        assert_eq!(reply["id"], id);
        if reply["type"] == "error" {
            assert_eq!(reply["code"], "rate-limited");
            assert!(reply["retry_after_ms"].as_u64().is_some());
            limited += 1;
        }
    }
    assert!(
        limited >= 29,
        "only the burst of 20 (plus refill) passes: {limited} limited"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        raw.request(r#"{"type":"ping","id":99}"#).await["type"],
        "ok"
    );
    server.stop().await;
}
