//! Calls through a TURN relay, end to end with the real binaries on loopback:
//! `--relay-only` forces media through magpie-server's relay (credentials from the
//! `relay` request, the relay candidate trickled by the caller and put in the answer by
//! the callee), and through coturn's `turnserver` started by the test with a
//! static-auth-secret (`--turn`). Audio only, so several calls fit on two cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Server, Watched, f64_at, u64_at};
use magpie_signaling::relay::auth::Secret;
use serde_json::Value;

/// Relayed ports of their own for this file's servers, apart from other tests'.
const RELAY_PORTS: &str = "43100-43199";

fn relay_server() -> Server {
    Server::start_with(
        15,
        &[
            "--relay-listen",
            "127.0.0.1:0",
            "--relay-allow-loopback",
            "--relay-ports",
            RELAY_PORTS,
        ],
        false,
    )
    .0
}

/// Both sides finish a 3 s call and played audio; returns both summaries.
fn call(server: &Server, alice_extra: &[&str], bob_extra: &[&str]) -> (Value, Value) {
    let mut bob_args = vec!["--auto-answer", "--video-in", "none"];
    bob_args.extend_from_slice(bob_extra);
    let mut bob = server.answerer("bob", &bob_args);
    let mut alice_args = vec!["--duration", "3", "--video-in", "none"];
    alice_args.extend_from_slice(alice_extra);
    let mut alice = Watched::spawn(server.caller("alice", "bob", &alice_args));
    let status = alice.finish(Duration::from_secs(60));
    assert!(status.success(), "alice: {}", alice.stderr());
    let status = bob.finish(Duration::from_secs(30));
    assert!(status.success(), "bob: {}", bob.stderr());
    let (a, b) = (server.stats("alice"), server.stats("bob"));
    for (who, s) in [("alice", &a), ("bob", &b)] {
        // 3 s of 20 ms frames is 150; the path takes a few hundred ms to come up.
        let decoded = f64_at(s, "/report/audio/decoded");
        assert!(decoded >= 80.0, "{who} decoded {decoded} audio frames: {s}");
        // The relay loses nothing on loopback. (Residual loss after playout is not
        // bounded here: on a machine at load 15-20 the playout clock conceals a few
        // per cent of frames that all arrived, with or without a relay.)
        let lost = f64_at(s, "/report/audio/loss_before_recovery_percent");
        assert!(lost < 1.0, "{who}: {lost} % of audio lost on the way: {s}");
        assert!(u64_at(s, "/path/selected_ms") < 5000, "{who}: {s}");
        assert!(s["path"]["first_audio_ms"].as_u64().is_some(), "{who}: {s}");
    }
    (a, b)
}

#[test]
fn a_relay_only_call_carries_audio_both_ways_through_the_servers_relay() {
    let server = relay_server();
    let relay = server.relay.clone().expect("the server runs a relay");
    let (a, b) = call(&server, &["--relay-only"], &[]);
    // Alice sends and receives through her allocation on the server's relay; Bob
    // reaches her relayed address: both say relayed.
    assert_eq!(a["path"]["kind"], "relayed", "{a}");
    assert_eq!(a["path"]["relay"], relay.as_str(), "{a}");
    assert_eq!(b["path"]["kind"], "relayed", "{b}");
    let bob_relay = b["path"]["relay"].as_str().unwrap();
    assert!(bob_relay.starts_with("127.0.0.1:431"), "{b}");
    // Nothing of Alice's own socket was offered or used.
    assert_eq!(a["endpoint"]["wrong_leg"], 0, "{a}");
}

#[test]
fn two_relay_only_sides_meet_relay_to_relay() {
    let server = relay_server();
    let relay = server.relay.clone().unwrap();
    let (a, b) = call(&server, &["--relay-only"], &["--relay-only"]);
    for s in [&a, &b] {
        assert_eq!(s["path"]["kind"], "relayed", "{s}");
        assert_eq!(s["path"]["relay"], relay.as_str(), "{s}");
    }
}

#[test]
fn without_a_relay_flag_the_call_stays_direct_even_when_a_relay_is_offered() {
    let server = relay_server();
    let (a, b) = call(&server, &[], &[]);
    for s in [&a, &b] {
        assert_eq!(s["path"]["kind"], "direct", "{s}");
        assert!(s["path"]["relay"].is_null(), "{s}");
        assert_eq!(s["path"]["switches"], 0, "{s}");
    }
}

/// coturn on a free loopback port with TURN REST credentials; killed on drop.
struct Coturn {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn coturn(secret: &str) -> Option<Coturn> {
    let found = Command::new("turnserver")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("turnserver not installed (scripts/test-deps installs coturn); skipped");
        return None;
    }
    // A free port: bind, note it, let go (coturn binds it next).
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let port_arg = port.to_string();
    let mut child = Command::new("turnserver")
        .args([
            "--listening-ip",
            "127.0.0.1",
            "--relay-ip",
            "127.0.0.1",
            "--listening-port",
            &port_arg,
            "--min-port",
            "43200",
            "--max-port",
            "43299",
            "--use-auth-secret",
            "--static-auth-secret",
            secret,
            "--realm",
            "magpie-test",
            "--allow-loopback-peers",
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--no-cli",
            "--no-stdout-log",
            "--log-file",
            dir.path().join("turn.log").to_str().unwrap(),
            "--pidfile",
            dir.path().join("turn.pid").to_str().unwrap(),
            "--userdb",
            dir.path().join("turn.db").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // coturn says nothing when ready: wait until its port answers a Binding request.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let request = magpie_media::ice::binding_request([7; 12]);
    let mut buf = [0u8; 512];
    for _ in 0..100 {
        let _ = probe.send_to(&request, ("127.0.0.1", port));
        if probe.recv(&mut buf).is_ok() {
            return Some(Coturn {
                child,
                port,
                _dir: dir,
            });
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("coturn did not come up on port {port}");
}

#[test]
fn a_relay_only_call_goes_through_coturn() {
    let secret = "coturn-test-secret";
    let Some(turn) = coturn(secret) else {
        return;
    };
    // A server without a relay: the caller uses coturn, given on the command line.
    let server = Server::start(15);
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let credentials = Secret::new(secret.as_bytes()).credentials("alice", expiry);
    let url = format!("turn:127.0.0.1:{}", turn.port);
    let (a, b) = call(
        &server,
        &[
            "--relay-only",
            "--turn",
            &url,
            "--turn-user",
            &credentials.username,
            "--turn-pass",
            &credentials.password,
        ],
        &[],
    );
    assert_eq!(a["path"]["kind"], "relayed", "{a}");
    assert_eq!(
        a["path"]["relay"],
        format!("127.0.0.1:{}", turn.port).as_str(),
        "{a}"
    );
    assert_eq!(b["path"]["kind"], "relayed", "{b}");
    let remote = b["path"]["remote"].as_str().unwrap();
    assert!(remote.starts_with("127.0.0.1:432"), "{b}");
}
