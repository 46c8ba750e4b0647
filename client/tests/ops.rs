//! Issue 14, item 7, with the real binaries: `magpie-server --metrics-listen` serves
//! Prometheus metrics that move with a real call and a chat message, and its info log
//! tells the call's story (invite, accept, end with reason and duration) with keyed
//! pseudonyms in place of the names, as text or (`--log-format json`) one JSON object a line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::{Server, Watched, text};

/// `GET /metrics`, parsed into sample name (with labels) -> value.
fn scrape(addr: &str) -> HashMap<String, f64> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn metrics_move_with_a_real_call_and_the_log_tells_it_with_pseudonyms() {
    let (server, ready) = Server::start_with(15, &["--metrics-listen", "127.0.0.1:0"], true);
    let metrics = ready["metrics"].as_str().unwrap().to_owned();
    let before = scrape(&metrics);
    let at = |m: &HashMap<String, f64>, k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k}"));

    let mut bob = server.answerer("bob", &["--auto-answer"]);
    let alice = Watched::spawn(server.caller("alice", "bob", &["--duration", "2"]));
    // Mid-call: the call is up, and the scrape shows it.
    alice.wait_media(0.5);
    let during = scrape(&metrics);
    assert_eq!(
        at(&during, "magpie_calls_answered_total") - at(&before, "magpie_calls_answered_total"),
        1.0
    );
    assert!(at(&during, "magpie_connections_open") >= 2.0);
    let mut alice = alice;
    assert!(
        alice.finish(Duration::from_secs(60)).success(),
        "{}",
        alice.stderr()
    );
    assert!(
        bob.finish(Duration::from_secs(30)).success(),
        "{}",
        bob.stderr()
    );
    let out = server
        .magpie("alice", &["chat", "carol", "are you there?"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let after = scrape(&metrics);
    let moved = |k: &str| at(&after, k) - at(&before, k);
    assert_eq!(moved("magpie_calls_invited_total"), 1.0);
    assert_eq!(moved("magpie_calls_answered_total"), 1.0);
    assert_eq!(moved("magpie_calls_ended_total{reason=\"hangup\"}"), 1.0);
    assert_eq!(moved("magpie_call_setup_seconds_count"), 1.0);
    assert_eq!(moved("magpie_call_setup_seconds_bucket{le=\"+Inf\"}"), 1.0);
    assert!(moved("magpie_call_setup_seconds_sum") > 0.0);
    assert_eq!(moved("magpie_messages_stored_total"), 1.0);
    // alice, bob, carol watching bob come online, and alice again for the chat.
    assert!(moved("magpie_logins_total") >= 4.0);
    assert!(moved("magpie_connections_total") >= 4.0);
    // Both clients asked the server's STUN for their public address.
    assert!(moved("magpie_stun_answered_total") >= 2.0);

    let log = std::fs::read_to_string(server.file("server.log")).unwrap();
    let line = |what: &str| {
        log.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in the log:\n{log}"))
            .to_owned()
    };
    let invited = line("call invited");
    assert!(line("call accepted").contains("setup_ms="));
    let ended = line("call ended");
    assert!(
        ended.contains("reason=\"hangup\"") || ended.contains("reason=hangup"),
        "{ended}"
    );
    assert!(ended.contains("talked_s="), "{ended}");
    // Names never appear; pseudonyms do, the same for alice on every line.
    for name in ["alice", "bob", "carol"] {
        assert!(!log.contains(name), "{name} in the log:\n{log}");
    }
    let pseudonym = |l: &str, key: &str| {
        let start = l.find(&format!("{key}=~")).unwrap() + key.len() + 1;
        l[start..start + 13].to_owned()
    };
    let alice_p = pseudonym(&invited, "caller");
    assert_eq!(alice_p.len(), 13, "{invited}");
    let logged_in = log
        .lines()
        .filter(|l| l.contains("logged in") && l.contains(&alice_p))
        .count();
    assert!(logged_in >= 2, "alice's logins are not followable:\n{log}");
}

/// `--log-format json`: every line the server logs is one JSON object with its level and
/// message, fields flattened beside them, and names are pseudonyms there too.
#[test]
fn json_logs_are_one_object_a_line_with_pseudonyms() {
    let (server, _) = Server::start_with(15, &["--log-format", "json"], true);
    let out = server
        .magpie("alice", &["chat", "carol", "are you there?"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let log = std::fs::read_to_string(server.file("server.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["message"].is_string()),
        "{log}"
    );
    let users = |message: &str| -> Vec<&str> {
        lines
            .iter()
            .filter(|l| l["message"] == message)
            .filter_map(|l| l["user"].as_str())
            .collect()
    };
    // alice, bob and carol registered (in that order); alice logged in to chat.
    let registered = users("registered");
    let logged_in = users("logged in");
    assert_eq!(registered.len(), 3, "{log}");
    assert_eq!(logged_in.len(), 1, "{log}");
    assert!(registered.iter().all(|u| u.starts_with('~')), "{log}");
    assert_eq!(logged_in[0], registered[0], "alice is followable:\n{log}");
    for name in ["alice", "bob", "carol"] {
        assert!(!log.contains(name), "{name} in the log:\n{log}");
    }
}
