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

/// Replays the worked `nc` session in PROTOCOL.md: `>` lines are sent on the named
/// user's connection, `<` lines must arrive there (times and version masked).
#[tokio::test]
async fn worked_nc_session_in_protocol_md_is_true() {
    let doc = include_str!("../../PROTOCOL.md");
    let session = &doc[doc.find("## A worked session").unwrap()..doc.find("## STUN").unwrap()];
    let mut server = TestServer::start_with(|c| {
        c.set_heartbeat(std::time::Duration::from_secs(300))
            .set_login_timeout(std::time::Duration::from_secs(300))
    })
    .await;
    let mut alice = server.raw().await;
    let mut bob = server.raw().await;
    let mut party = None;
    let mut checked = 0;
    for line in session.lines() {
        if line.starts_with("**Alice") {
            party = Some(&mut alice);
        } else if line.starts_with("**Bob") {
            party = Some(&mut bob);
        } else if let Some(sent) = line.strip_prefix("> ") {
            party
                .as_mut()
                .unwrap()
                .send(format!("{sent}\n").as_bytes())
                .await;
        } else if let Some(expected) = line.strip_prefix("< ") {
            let got = party.as_mut().unwrap().line().await.unwrap();
            let expected: Value = serde_json::from_str(expected).unwrap();
            assert_eq!(mask(got), mask(expected), "{line}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} lines checked");
    server.stop().await;
}

/// Replays the offline-file example in PROTOCOL.md: alice leaves a file, bob logs in
/// later and takes it (times masked).
#[tokio::test]
async fn offline_file_session_in_protocol_md_is_true() {
    let doc = include_str!("../../PROTOCOL.md");
    let section = &doc[doc.find("## Files for offline users").unwrap()..];
    let example = &section[section.find("```text").unwrap()..];
    let example = &example[..7 + example[7..].find("```").unwrap()];
    let mut server = TestServer::start().await;
    for (user, password) in [("alice", "alice-secret"), ("bob", "bob-secret")] {
        let (client, _events) = server.connect().await;
        client.register(user, password).await.unwrap();
    }
    let mut alice = server.raw().await;
    alice.line().await.unwrap();
    let login = r#"{"type":"login","id":1,"user":"alice","password":"alice-secret"}"#;
    assert_eq!(alice.request(login).await["type"], "ok");
    let mut bob = None;
    let mut checked = 0;
    for line in example.lines() {
        let Some((who, rest)) = line.split_once(' ') else {
            continue;
        };
        let raw = match who {
            "alice" => &mut alice,
            "bob" => {
                if bob.is_none() {
                    let mut raw = server.raw().await;
                    raw.line().await.unwrap();
                    bob = Some(raw);
                }
                bob.as_mut().unwrap()
            }
            _ => continue,
        };
        let rest = rest.trim_start();
        if let Some(sent) = rest.strip_prefix("-> ") {
            raw.send(format!("{sent}\n").as_bytes()).await;
        } else if let Some(expected) = rest.strip_prefix("<- ") {
            let got = raw.line().await.unwrap();
            let expected: Value = serde_json::from_str(expected).unwrap();
            assert_eq!(mask(got), mask(expected), "{line}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6, "every reply and event checked");
    server.stop().await;
}

fn mask(mut value: Value) -> Value {
    if let Some(stored) = value.get_mut("stored") {
        stored["expires_at"] = Value::Null;
    }
    for key in ["sent_at", "server", "expires_at"] {
        if let Some(v) = value.get_mut(key) {
            *v = Value::Null;
        }
    }
    if let Some(calls) = value.get_mut("calls").and_then(Value::as_array_mut) {
        for call in calls {
            for key in ["created", "answered", "ended"] {
                call[key] = Value::Null;
            }
        }
    }
    value
}
