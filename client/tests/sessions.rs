//! Issue 14, item 3, with the real binaries: `magpie answer` is not knocked offline by
//! the user's other commands, keeps waiting for the next call, logs in again after a
//! server restart; a call that goes away closes the y/N prompt, and Ctrl-C there works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, Watched, text};

fn interrupt(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn call_succeeds(server: &Server, what: &str) {
    let out = server
        .caller("alice", "bob", &["--duration", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{what}: {}", text(&out.stderr));
}

/// Bob runs `answer` (no --once) and, beside it, `chat` and `history` as himself: he
/// stays online and takes two calls in a row; the server restarts and he is back.
#[test]
fn answer_outlives_other_commands_calls_and_a_server_restart() {
    let mut server = Server::start(15);
    let mut bob = server.answerer("bob", &["--auto-answer", "--keep-waiting"]);
    for args in [&["chat", "alice", "hi"][..], &["history"][..]] {
        let out = server.magpie("bob", args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    assert!(bob.child.try_wait().unwrap().is_none(), "{}", bob.stderr());
    // `who`, with the short flags, sees him online.
    let config = server.file("config.toml");
    let out = Command::new(common::MAGPIE)
        .args(["-s", &server.addr, "-u", "carol", "who"])
        .env("MAGPIE_PASSWORD", common::PASSWORD)
        .env("MAGPIE_CONFIG", &config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).lines().any(|l| l.trim() == "bob"),
        "{}",
        text(&out.stdout)
    );
    call_succeeds(&server, "first call");
    call_succeeds(&server, "second call, same answer process");

    server.restart();
    bob.wait_stderr("logging in again", Duration::from_secs(30));
    server.wait_online("bob");
    call_succeeds(&server, "a call after the restart");
    bob.wait_stderr("incoming call from alice", Duration::from_secs(30));
    bob.wait_stderr("waiting for calls", Duration::from_secs(30));
    interrupt(&bob.child);
    assert!(
        bob.finish(Duration::from_secs(20)).success(),
        "{}",
        bob.stderr()
    );
    assert_eq!(bob.stderr().matches("incoming call from alice").count(), 3);
}

/// The caller gives up while bob's prompt is open: the prompt closes and bob waits for
/// the next call; at the next prompt, Ctrl-C ends `answer` and the caller hears a no.
#[test]
fn a_cancelled_call_closes_the_prompt_and_ctrl_c_at_the_prompt_quits() {
    let server = Server::start(15);
    let mut bob = server.answerer("bob", &["--keep-waiting"]);
    let mut alice = Watched::spawn(server.caller("alice", "bob", &["--duration", "2"]));
    bob.wait_stderr("incoming call from alice", Duration::from_secs(30));
    alice.wait_stderr("ringing", Duration::from_secs(30));
    interrupt(&alice.child);
    alice.finish(Duration::from_secs(20));
    bob.wait_stderr("was cancelled", Duration::from_secs(20));
    bob.wait_stderr("waiting for calls", Duration::from_secs(20));

    let mut alice = Watched::spawn(server.caller("alice", "bob", &["--duration", "2"]));
    bob.wait_stderr("incoming call from alice", Duration::from_secs(30));
    interrupt(&bob.child);
    assert!(
        bob.finish(Duration::from_secs(20)).success(),
        "{}",
        bob.stderr()
    );
    assert!(!alice.finish(Duration::from_secs(30)).success());
    assert!(
        alice.stderr().contains("bob rejected the call"),
        "{}",
        alice.stderr()
    );
}
