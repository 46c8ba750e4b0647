//! `magpie send` and `magpie receive` on loopback: real processes, a real server, QUIC
//! over real UDP, files checked byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, Watched, text};

/// Bytes that are not all the same, so a misplaced chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

fn receiver(server: &Server, dir: &Path, extra: &[&str]) -> Watched {
    let mut args = vec![
        "receive",
        "--once",
        "--quiet",
        "--bind",
        "127.0.0.1:0",
        "--to",
    ];
    args.push(dir.to_str().unwrap());
    args.extend_from_slice(extra);
    let watched = Watched::spawn(server.magpie("bob", &args));
    server.wait_online("bob");
    watched
}

#[test]
fn a_file_and_an_image_arrive_intact_and_nothing_is_overwritten() {
    let server = Server::start(5);
    let inbox = server.file("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("notes.bin"), b"bob's own file").unwrap();
    let notes = pattern(3_000_000, 7);
    let sent_notes = server.file("notes.bin");
    std::fs::write(&sent_notes, &notes).unwrap();
    // A PNG header is enough for the dimensions.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&640u32.to_be_bytes());
    png.extend_from_slice(&480u32.to_be_bytes());
    png.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    let photo = server.file("photo.png");
    std::fs::write(&photo, &png).unwrap();

    let mut bob = receiver(&server, &inbox, &["--yes"]);
    let out = server
        .magpie(
            "alice",
            &[
                "send",
                "bob",
                sent_notes.to_str().unwrap(),
                photo.to_str().unwrap(),
                "--quiet",
                "--bind",
                "127.0.0.1:0",
            ],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "send: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("sent 2 file(s) to bob: 3000033 bytes sent"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        bob.finish(Duration::from_secs(20)).success(),
        "{}",
        bob.stderr()
    );
    assert_eq!(
        std::fs::read(inbox.join("notes.bin")).unwrap(),
        b"bob's own file"
    );
    assert_eq!(std::fs::read(inbox.join("notes (1).bin")).unwrap(), notes);
    assert_eq!(std::fs::read(inbox.join("photo.png")).unwrap(), png);
    let said = bob.stdout();
    assert!(
        said.contains("alice sent photo.png (33 B, image 640x480)"),
        "{said}"
    );
    assert!(
        bob.stderr().contains("(saved as notes (1).bin)"),
        "{}",
        bob.stderr()
    );
    let leftovers: Vec<_> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_declined_offer_sends_nothing() {
    let server = Server::start(5);
    let inbox = server.file("inbox");
    let file = server.file("secret.txt");
    std::fs::write(&file, b"not wanted").unwrap();
    // No --yes, and stdin answers "n".
    let mut cmd = server.magpie(
        "bob",
        &[
            "receive",
            "--once",
            "--quiet",
            "--to",
            inbox.to_str().unwrap(),
        ],
    );
    cmd.stdin(std::process::Stdio::piped());
    let mut bob = Watched::spawn(cmd);
    server.wait_online("bob");
    let send = server.magpie("alice", &["send", "bob", file.to_str().unwrap(), "--quiet"]);
    let alice = std::thread::spawn(move || {
        let mut send = send;
        send.output().unwrap()
    });
    bob.wait_stderr("secret.txt (10 B)", Duration::from_secs(20));
    use std::io::Write;
    bob.child.stdin.as_mut().unwrap().write_all(b"n\n").unwrap();
    let out = alice.join().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("bob declined the file(s)"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        bob.finish(Duration::from_secs(10)).success(),
        "{}",
        bob.stderr()
    );
    assert!(!inbox.join("secret.txt").exists());
}

#[test]
fn a_file_over_the_receivers_limit_is_declined() {
    let server = Server::start(5);
    let inbox = server.file("inbox");
    let file = server.file("big.bin");
    std::fs::write(&file, pattern(10_000, 1)).unwrap();
    let mut bob = receiver(&server, &inbox, &["--yes", "--max-size", "5000"]);
    let out = server
        .magpie("alice", &["send", "bob", file.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("declined"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        bob.finish(Duration::from_secs(10)).success(),
        "{}",
        bob.stderr()
    );
    assert!(bob.stderr().contains("over --max-size"), "{}", bob.stderr());
    assert!(!inbox.join("big.bin").exists());
}

#[test]
fn a_running_answer_takes_files_too() {
    let server = Server::start(5);
    let inbox = server.file("answer-inbox");
    let file = server.file("report.txt");
    std::fs::write(&file, pattern(50_000, 3)).unwrap();
    let bob = server.answerer("bob", &["--yes", "--to", inbox.to_str().unwrap()]);
    let out = server
        .magpie(
            "alice",
            &[
                "send",
                "bob",
                file.to_str().unwrap(),
                "--quiet",
                "--bind",
                "127.0.0.1:0",
            ],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "send: {}", text(&out.stderr));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !bob.stdout().contains("alice sent report.txt") {
        assert!(std::time::Instant::now() < deadline, "{}", bob.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read(inbox.join("report.txt")).unwrap(),
        pattern(50_000, 3)
    );
    // Still answering calls afterwards.
    assert!(
        bob.stderr().contains("bob is waiting for calls"),
        "{}",
        bob.stderr()
    );
}

#[test]
fn a_relay_only_transfer_goes_through_the_servers_relay() {
    let server = Server::start_with(
        5,
        &[
            "--relay-listen",
            "127.0.0.1:0",
            "--relay-allow-loopback",
            "--relay-ports",
            // Apart from the other test files' relayed ports.
            "43300-43399",
        ],
        false,
    )
    .0;
    let inbox = server.file("inbox");
    let file = server.file("relayed.bin");
    let content = pattern(2_000_000, 9);
    std::fs::write(&file, &content).unwrap();
    let mut bob = receiver(&server, &inbox, &["--yes"]);
    let out = server
        .magpie(
            "alice",
            &[
                "send",
                "bob",
                file.to_str().unwrap(),
                "--quiet",
                "--relay-only",
                "--bind",
                "127.0.0.1:0",
            ],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "send: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("path: relayed via our relay"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        bob.finish(Duration::from_secs(20)).success(),
        "{}",
        bob.stderr()
    );
    assert_eq!(std::fs::read(inbox.join("relayed.bin")).unwrap(), content);
}

#[test]
fn an_interactive_chat_asks_about_files_and_takes_them_on_yes() {
    use std::io::Write;
    let server = Server::start(5);
    let inbox = server.file("chat-inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let file = server.file("hello.txt");
    std::fs::write(&file, b"hi bob").unwrap();
    let mut cmd = server.magpie("bob", &["chat"]);
    cmd.current_dir(&inbox);
    let mut bob = Watched::spawn(cmd);
    server.wait_online("bob");
    let send = server.magpie(
        "alice",
        &[
            "send",
            "bob",
            file.to_str().unwrap(),
            "--quiet",
            "--bind",
            "127.0.0.1:0",
        ],
    );
    let alice = std::thread::spawn(move || {
        let mut send = send;
        send.output().unwrap()
    });
    bob.wait_stderr("hello.txt (6 B)", Duration::from_secs(20));
    bob.child.stdin.as_mut().unwrap().write_all(b"y\n").unwrap();
    let out = alice.join().unwrap();
    assert!(out.status.success(), "send: {}", text(&out.stderr));
    assert_eq!(std::fs::read(inbox.join("hello.txt")).unwrap(), b"hi bob");
    drop(bob.child.stdin.take());
    assert!(
        bob.finish(Duration::from_secs(10)).success(),
        "{}",
        bob.stderr()
    );
    assert!(
        bob.stdout().contains("alice sent hello.txt (6 B)"),
        "{}",
        bob.stdout()
    );
}
