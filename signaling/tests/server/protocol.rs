use serde_json::{Value, json};

use crate::common::{PASSWORD, TestServer};

fn code(reply: &Value) -> &str {
    reply["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {reply}"))
}

#[tokio::test]
async fn malformed_lines_get_errors_and_the_connection_stays_open() {
    let mut server = TestServer::start().await;
    let mut raw = server.raw().await;
    let hello = raw.line().await.unwrap();
    assert_eq!(
        (hello["type"].as_str(), hello["version"].as_u64()),
        (Some("hello"), Some(1))
    );
    let reply = raw.request("this is not json").await;
    assert_eq!((code(&reply), reply.get("id")), ("bad-json", None));
    let reply = raw.request(r#"{"type":"ping"}"#).await;
    assert_eq!(code(&reply), "bad-request");
    let reply = raw.request(r#"{"type":"teleport","id":3}"#).await;
    assert_eq!((code(&reply), &reply["id"]), ("unknown-type", &json!(3)));
    let reply = raw
        .request(r#"{"type":"login","id":4,"user":"alice"}"#)
        .await;
    assert_eq!((code(&reply), &reply["id"]), ("bad-request", &json!(4)));
    assert!(
        reply["message"].as_str().unwrap().contains("password"),
        "{reply}"
    );
    let reply = raw
        .request(r#"{"type":"invite","id":5,"to":7,"offer":{}}"#)
        .await;
    assert_eq!(
        code(&reply),
        "bad-request",
        "fields are checked before login"
    );
    raw.send(b"\n\r\n").await; // blank lines are ignored
    let reply = raw.request(r#"{"type":"ping","id":6}"#).await;
    assert_eq!(reply, json!({"type": "ok", "id": 6}));
    server.stop().await;
}

#[tokio::test]
async fn nothing_but_register_login_and_ping_before_login() {
    let mut server = TestServer::start().await;
    let mut raw = server.raw().await;
    raw.line().await.unwrap();
    for (id, line) in [
        r#"{"type":"who"}"#,
        r#"{"type":"watch","users":["bob"]}"#,
        r#"{"type":"invite","to":"bob","offer":{}}"#,
        r#"{"type":"accept","call_id":1,"answer":{}}"#,
        r#"{"type":"reject","call_id":1}"#,
        r#"{"type":"cancel","call_id":1}"#,
        r#"{"type":"hangup","call_id":1}"#,
        r#"{"type":"message","to":"bob","text":"hi"}"#,
        r#"{"type":"ack","message_ids":[1]}"#,
        r#"{"type":"history"}"#,
    ]
    .iter()
    .enumerate()
    {
        let line = line.replacen('{', &format!("{{\"id\":{id},"), 1);
        let reply = raw.request(&line).await;
        assert_eq!(
            (code(&reply), &reply["id"]),
            ("not-logged-in", &json!(id)),
            "{line}"
        );
    }
    let register =
        format!(r#"{{"type":"register","id":20,"user":"alice","password":"{PASSWORD}"}}"#);
    assert_eq!(raw.request(&register).await["type"], "ok");
    let login = format!(r#"{{"type":"login","id":21,"user":"alice","password":"{PASSWORD}"}}"#);
    assert_eq!(raw.request(&login).await["user"], "alice");
    assert_eq!(
        raw.request(r#"{"type":"who","id":22}"#).await["users"],
        json!(["alice"])
    );
    server.stop().await;
}

#[tokio::test]
async fn oversized_line_gets_an_error_and_the_connection_closes() {
    let mut server = TestServer::start().await;
    let mut raw = server.raw().await;
    let hello = raw.line().await.unwrap();
    let max = usize::try_from(hello["max_line_bytes"].as_u64().unwrap()).unwrap();
    assert_eq!(max, 64 * 1024);
    let mut line = format!(r#"{{"type":"ping","id":1,"pad":"{}"}}"#, "x".repeat(max));
    line.push('\n');
    raw.send(line.as_bytes()).await;
    let reply = raw.line().await.unwrap();
    assert_eq!((code(&reply), reply.get("id")), ("line-too-long", None));
    assert_eq!(raw.line().await, None, "connection closed");
    // The server keeps serving others.
    let (client, _events) = server.connect().await;
    client.ping().await.unwrap();
    server.stop().await;
}
