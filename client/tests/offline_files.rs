//! `magpie send` to a user who is offline: the files wait on a real `magpie-server`
//! (beside its real SQLite database) and `magpie receive` takes them at the next login,
//! byte for byte; the server's size limit refuses with a clear error; a declined file is
//! deleted from the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Server, Watched, text};

/// Bytes that are not all the same, so a misplaced chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[1] ^ seed)
        .collect()
}

/// What the server keeps beside its database.
fn stored(server: &Server) -> Vec<PathBuf> {
    std::fs::read_dir(server.file("e2e.db.files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn send(server: &Server, path: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["send", "bob", path.to_str().unwrap(), "--quiet"];
    args.extend_from_slice(extra);
    server.magpie("alice", &args).output().unwrap()
}

fn receive_once(server: &Server, inbox: &Path, extra: &[&str]) -> Watched {
    let mut args = vec![
        "receive",
        "--once",
        "--quiet",
        "--to",
        inbox.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Watched::spawn(server.magpie("bob", &args))
}

#[test]
fn a_file_for_an_offline_user_waits_on_the_server_and_arrives_at_login() {
    let (server, _) = Server::start_with(5, &["--max-file-bytes", "2000000"], false);
    let inbox = server.file("inbox");
    let content = pattern(1_500_000, 5);
    let file = server.file("report.bin");
    std::fs::write(&file, &content).unwrap();
    // Bob is not logged in: the file is left on the server.
    let out = send(&server, &file, &[]);
    assert!(out.status.success(), "send: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bob is offline: leaving the file(s) on the server"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("left report.bin (1.5 MB) on the server for bob"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(stored(&server).len(), 1);
    // Over the server's limit: refused, and nothing is kept.
    let big = server.file("big.bin");
    std::fs::write(&big, pattern(2_000_001, 6)).unwrap();
    let out = send(&server, &big, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the server keeps files of at most 2000000 bytes"),
        "{}",
        text(&out.stderr)
    );
    // With --no-leave an offline receiver is an error, as for a call.
    let out = send(&server, &file, &["--no-leave"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("bob is offline"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(stored(&server).len(), 1);

    // Bob logs in: the file is offered, taken, checked, and deleted from the server.
    let mut bob = receive_once(&server, &inbox, &["--yes"]);
    assert!(
        bob.finish(Duration::from_secs(20)).success(),
        "{}",
        bob.stderr()
    );
    assert!(
        bob.stderr()
            .contains("alice left a file on the server for you"),
        "{}",
        bob.stderr()
    );
    assert!(
        bob.stdout()
            .contains("alice sent report.bin (1.5 MB): saved as"),
        "{}",
        bob.stdout()
    );
    assert!(std::fs::read(inbox.join("report.bin")).unwrap() == content);
    assert!(stored(&server).is_empty(), "deleted after delivery");
}

#[test]
fn a_declined_stored_file_is_deleted_from_the_server() {
    use std::io::Write;
    let server = Server::start(5);
    let inbox = server.file("inbox");
    let file = server.file("unwanted.txt");
    std::fs::write(&file, b"no thanks").unwrap();
    let out = send(&server, &file, &[]);
    assert!(out.status.success(), "send: {}", text(&out.stderr));
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
    bob.wait_stderr("unwanted.txt (9 B)", Duration::from_secs(20));
    bob.child.stdin.as_mut().unwrap().write_all(b"n\n").unwrap();
    assert!(
        bob.finish(Duration::from_secs(10)).success(),
        "{}",
        bob.stderr()
    );
    assert!(
        bob.stderr().contains("declined unwanted.txt from alice"),
        "{}",
        bob.stderr()
    );
    assert!(!inbox.join("unwanted.txt").exists());
    assert!(stored(&server).is_empty(), "deleted when declined");
}
