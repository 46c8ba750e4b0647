//! The `magpie-server` binary itself: refusing a taken port, SIGTERM, and `--plain`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use magpie_signaling::client::{self, Incoming};
use magpie_signaling::proto::Event;
use magpie_signaling::tls::Trust;
use tokio::time::timeout;

const SERVER: &str = env!("CARGO_BIN_EXE_magpie-server");

/// Starts the server with `args` on the database `db`, and reads its ready signal: one
/// JSON line on stdout with the bound addresses and the TLS fingerprint.
fn start(args: &[&str], db: &std::path::Path) -> (std::process::Child, serde_json::Value) {
    let mut server = Command::new(SERVER)
        .args(args)
        .arg("--db")
        .arg(db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (server, serde_json::from_str(&line).unwrap())
}

#[test]
fn taken_port_gives_a_clear_message_and_a_failure_status() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(SERVER)
        .args(["--listen", &addr.to_string(), "--db"])
        .arg(dir.path().join("m.db"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on TCP {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
}

#[tokio::test]
async fn sigterm_says_goodbye_to_clients_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, ready) = start(&["--listen", "127.0.0.1:0"], &dir.path().join("m.db"));
    let addr = ready["ready"]["listen"].as_str().unwrap().to_owned();
    assert_eq!(ready["ready"]["stun"].as_str(), Some(addr.as_str()));
    // TLS by default, with the self-signed certificate whose fingerprint it announced.
    let fingerprint = ready["ready"]["tls_fingerprint"].as_str().unwrap();
    let tls = Trust::Fingerprint(fingerprint.parse().unwrap())
        .client_config()
        .unwrap();
    let (alice, mut events) = client::connect_tls(&addr, tls, Default::default())
        .await
        .unwrap();
    alice.ping().await.unwrap();

    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let goodbye = timeout(Duration::from_secs(30), events.recv())
        .await
        .unwrap();
    assert_eq!(goodbye, Some(Incoming::Event(Event::ServerShutdown)));
    let exit = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn plain_is_only_behind_the_flag_and_announces_no_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let (mut server, ready) = start(&["--listen", "127.0.0.1:0", "--no-stun", "--plain"], &db);
    assert!(ready["ready"]["tls_fingerprint"].is_null(), "{ready}");
    let addr = ready["ready"]["listen"].as_str().unwrap().to_owned();
    let (alice, _events) = client::connect(addr.as_str()).await.unwrap();
    alice.ping().await.unwrap();
    // No certificate was made for a plain server.
    assert!(!dir.path().join("m.db.cert.pem").exists());
    let _ = server.kill();
    let _ = server.wait();
}
