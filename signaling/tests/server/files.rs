//! Files left on the server for offline users: stored beside the real SQLite database,
//! delivered at the next login, deleted after delivery or at expiry; size limit,
//! quotas, bad names, bad chunks and a sender who vanishes are refused and counted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use magpie_signaling::client::{Client, ClientError};
use magpie_signaling::files::{Limits, Refused, dir_for};
use magpie_signaling::proto::{
    ErrorCode, Event, FileMeta, FileName, FileOffer, FileStored, Sha256Digest,
};
use sha2::{Digest, Sha256};
use tokio::time::{Instant, sleep};

use crate::common::*;

/// Deterministic bytes that do not compress or repeat per chunk.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn meta(name: &str, bytes: &[u8]) -> FileMeta {
    FileMeta {
        name: FileName::parse(name).unwrap(),
        size: bytes.len() as u64,
        sha256: Sha256Digest(Sha256::digest(bytes).into()),
        image: None,
    }
}

async fn leave(
    from: &Client,
    to: &str,
    name: &str,
    bytes: &[u8],
) -> Result<FileStored, ClientError> {
    from.leave_file(to, meta(name, bytes), bytes, |_| {}).await
}

/// The bytes of a file left for `client`, from `offset`.
async fn take(client: &Client, offer: &FileOffer, offset: u64) -> Vec<u8> {
    let mut got = Vec::new();
    let n = client
        .take_file(offer, offset, |b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(n, got.len() as u64);
    got
}

/// Files in the store directory (stored and partial).
fn stored_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// Waits (in real time, for the file system and the sweep) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not in time: {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

async fn register(server: &TestServer, name: &str) {
    let (client, _events) = server.connect().await;
    client.register(name, PASSWORD).await.unwrap();
}

async fn file_event(events: &mut magpie_signaling::client::Events) -> FileOffer {
    loop {
        match next_event(events).await {
            Event::File(offer) => return offer,
            Event::Presence(_) => {}
            other => panic!("expected a file event, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_file_left_for_an_offline_user_arrives_intact_at_login_and_is_deleted() {
    let server = TestServer::start().await;
    let (alice, _alice_events) = server.user("alice").await;
    register(&server, "bob").await;
    // 300 kB: ten chunks of 32 KiB, several in flight.
    let bytes = content(300_000, 7);
    let file = meta("holiday.bin", &bytes);
    let mut seen = Vec::new();
    let stored = alice
        .leave_file("bob", file.clone(), &bytes[..], |n| seen.push(n))
        .await
        .unwrap();
    assert!(!stored.delivered, "bob is offline");
    assert_eq!(seen.last(), Some(&300_000));
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let dir = dir_for(&server.db);
    assert_eq!(
        stored_files(&dir),
        vec![dir.join(stored.file_id.to_string())]
    );

    let (bob, mut bob_events) = server.connect().await;
    let login = bob.login("bob", PASSWORD).await.unwrap();
    assert_eq!((login.pending_messages, login.pending_files), (0, 1));
    let offer = file_event(&mut bob_events).await;
    assert_eq!(offer.file_id, stored.file_id);
    assert_eq!(offer.from.as_str(), "alice");
    assert_eq!(offer.file, file);
    assert_eq!(offer.expires_at, stored.expires_at);
    // In two goes, as after a drop: the second starts where the first stopped.
    let got = take(&bob, &offer, 0).await;
    let rest = take(&bob, &offer, 100_000).await;
    assert_eq!(&rest[..], &bytes[100_000..]);
    assert!(got == bytes, "the bytes taken are the bytes left");
    bob.file_done(offer.file_id, true).await.unwrap();
    assert!(stored_files(&dir).is_empty(), "deleted after delivery");
    assert_eq!(
        code(bob.file_done(offer.file_id, true).await),
        ErrorCode::NoSuchFile
    );

    let (again, _events) = server.connect().await;
    assert_eq!(again.login("bob", PASSWORD).await.unwrap().pending_files, 0);
    let counters = server.counters();
    let stats = counters.files();
    assert_eq!(
        (stats.stored(), stats.delivered(), stats.declined()),
        (1, 1, 0)
    );
    let mut text = String::new();
    stats.render(&mut text);
    assert!(text.contains("magpie_files_stored_total 1\n"), "{text}");
    assert!(
        text.contains("magpie_file_bytes_delivered_total 300000\n"),
        "{text}"
    );
}

#[tokio::test]
async fn an_online_recipient_is_told_at_once_and_may_decline() {
    let server = TestServer::start().await;
    let (alice, _alice_events) = server.user("alice").await;
    let (bob, mut bob_events) = server.user("bob").await;
    let bytes = b"short note".to_vec();
    let stored = leave(&alice, "bob", "note.txt", &bytes).await.unwrap();
    assert!(stored.delivered);
    let offer = file_event(&mut bob_events).await;
    assert_eq!(offer.file.size, 10);
    bob.file_done(offer.file_id, false).await.unwrap();
    assert!(stored_files(&dir_for(&server.db)).is_empty());
    assert_eq!(server.counters().files().declined(), 1);
    // An empty file is a file too.
    let empty = alice
        .leave_file("bob", meta("empty", b""), &b""[..], |_| {})
        .await
        .unwrap();
    let offer = file_event(&mut bob_events).await;
    assert_eq!((offer.file_id, offer.file.size), (empty.file_id, 0));
    assert_eq!(take(&bob, &offer, 0).await, b"");
}

#[tokio::test]
async fn the_size_limit_and_the_quotas_refuse_with_clear_errors() {
    let limits = Limits {
        max_file: 1000,
        per_sender: 1500,
        per_recipient: 2500,
        per_recipient_files: 100,
        total: 3500,
        ..Limits::default()
    };
    let server = TestServer::start_with(|c| c.set_file_limits(limits)).await;
    let (alice, _a) = server.user("alice").await;
    let (carol, _c) = server.user("carol").await;
    let (dave, _d) = server.user("dave").await;
    register(&server, "bob").await;
    register(&server, "erin").await;
    let kb = content(1000, 1);
    let over = content(1001, 2);
    let err = leave(&alice, "bob", "big", &over).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge));
    assert!(err.to_string().contains("at most 1000 bytes"), "{err}");
    leave(&alice, "bob", "a", &kb).await.unwrap();
    // A stranger's share: alice may not fill bob's mailbox alone.
    let err = leave(&alice, "bob", "b", &kb).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MailboxFull));
    assert!(err.to_string().contains("from you"), "{err}");
    leave(&carol, "bob", "c", &kb).await.unwrap();
    // Bob's whole mailbox: 2000 of 2500 bytes are taken.
    assert_eq!(
        code(leave(&dave, "bob", "d", &kb).await),
        ErrorCode::MailboxFull
    );
    leave(&dave, "erin", "e", &kb).await.unwrap();
    // The server's store: 3500 bytes in all, 3000 taken.
    assert_eq!(
        code(leave(&carol, "erin", "f", &kb).await),
        ErrorCode::StorageFull
    );
    assert_eq!(
        code(leave(&alice, "nobody", "h", &kb).await),
        ErrorCode::UnknownUser
    );
    let counters = server.counters();
    let stats = counters.files();
    assert_eq!(stats.refused(Refused::TooLarge), 1);
    assert_eq!(stats.refused(Refused::Quota), 2);
    assert_eq!(stats.refused(Refused::StorageFull), 1);
    assert_eq!(stats.stored(), 3);
    assert_eq!(stored_files(&dir_for(&server.db)).len(), 3);
}

#[tokio::test]
async fn bad_names_digests_and_chunks_are_refused_and_the_partial_file_removed() {
    let server = TestServer::start().await;
    register(&server, "bob").await;
    let (alice, _events) = server.user("alice").await;
    let mut raw = server.raw().await;
    raw.line().await.unwrap();
    raw.request(r#"{"type":"login","id":1,"user":"alice","password":"correct horse"}"#)
        .await;
    let digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; // "abc"
    let put = |name: &str, size: u64, sha: &str| {
        let file = serde_json::json!({"name": name, "size": size, "sha256": sha});
        serde_json::json!({"type": "file-put", "id": 2, "to": "bob", "file": file}).to_string()
    };
    for bad in [
        "../../.bashrc",
        "a/b",
        "bell\u{7}",
        "..",
        "esc\u{1b}[2J",
        " x",
    ] {
        let reply = raw.request(&put(bad, 3, digest)).await;
        assert_eq!(reply["code"], "bad-request", "{bad:?}: {reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains("refused file name"),
            "{reply}"
        );
    }
    assert_eq!(
        raw.request(&put("abc.txt", 3, "zz")).await["code"],
        "bad-request"
    );
    let dir = dir_for(&server.db);
    // Out of order: the upload goes.
    let started = raw.request(&put("abc.txt", 3, digest)).await;
    let id = started["upload_id"].as_u64().unwrap();
    assert_eq!(stored_files(&dir).len(), 1, "the part file");
    let chunk = |offset: u64, data: &str| {
        format!(
            r#"{{"type":"file-chunk","id":3,"upload_id":{id},"offset":{offset},"data":"{data}"}}"#
        )
    };
    let reply = raw.request(&chunk(1, "YQ==")).await;
    assert_eq!(reply["code"], "bad-request", "{reply}");
    assert!(stored_files(&dir).is_empty(), "partial removed");
    assert_eq!(raw.request(&chunk(0, "YQ==")).await["code"], "no-such-file");
    // Not base64.
    let id = raw.request(&put("abc.txt", 3, digest)).await["upload_id"]
        .as_u64()
        .unwrap();
    let chunk = |data: &str| {
        format!(r#"{{"type":"file-chunk","id":4,"upload_id":{id},"offset":0,"data":"{data}"}}"#)
    };
    assert_eq!(raw.request(&chunk("!!!")).await["code"], "bad-request");
    // Past the announced size.
    let id = raw.request(&put("abc.txt", 3, digest)).await["upload_id"]
        .as_u64()
        .unwrap();
    let line =
        format!(r#"{{"type":"file-chunk","id":5,"upload_id":{id},"offset":0,"data":"YWJjZA=="}}"#);
    assert_eq!(raw.request(&line).await["code"], "bad-request");
    // Bytes that are not the announced SHA-256.
    let id = raw.request(&put("abc.txt", 3, digest)).await["upload_id"]
        .as_u64()
        .unwrap();
    let line =
        format!(r#"{{"type":"file-chunk","id":6,"upload_id":{id},"offset":0,"data":"YWJk"}}"#);
    let reply = raw.request(&line).await;
    assert_eq!(reply["code"], "hash-mismatch", "{reply}");
    assert!(stored_files(&dir).is_empty());
    // Someone else's file cannot be read or deleted.
    let stored = alice
        .leave_file("bob", meta("abc.txt", b"abc"), &b"abc"[..], |_| {})
        .await
        .unwrap();
    let get = format!(
        r#"{{"type":"file-get","id":7,"file_id":{},"offset":0}}"#,
        stored.file_id
    );
    assert_eq!(raw.request(&get).await["code"], "no-such-file");
    let counters = server.counters();
    let stats = counters.files();
    let why = "6 names, a digest, 4 chunks (out of order, after removal, not base64, too long)";
    assert_eq!(stats.refused(Refused::BadRequest), 11, "{why}");
    assert_eq!(stats.refused(Refused::HashMismatch), 1);
}

#[tokio::test]
async fn a_sender_who_vanishes_mid_upload_leaves_nothing_behind() {
    let limits = Limits {
        per_sender: 100,
        ..Limits::default()
    };
    let server = TestServer::start_with(|c| c.set_file_limits(limits)).await;
    register(&server, "bob").await;
    let (alice, _events) = server.user("alice").await;
    let mut raw = server.raw().await;
    raw.line().await.unwrap();
    raw.request(r#"{"type":"login","id":1,"user":"alice","password":"correct horse"}"#)
        .await;
    let bytes = content(100, 3);
    let file = serde_json::to_value(meta("half.bin", &bytes)).unwrap();
    let put = serde_json::json!({"type": "file-put", "id": 2, "to": "bob", "file": file});
    let id = raw.request(&put.to_string()).await["upload_id"]
        .as_u64()
        .unwrap();
    let line = format!(
        r#"{{"type":"file-chunk","id":3,"upload_id":{id},"offset":0,"data":"{}"}}"#,
        base64_of(&bytes[..50])
    );
    assert_eq!(raw.request(&line).await["received"], 50);
    // The upload holds alice's quota while it runs.
    assert_eq!(
        code(leave(&alice, "bob", "other.bin", &bytes).await),
        ErrorCode::MailboxFull
    );
    drop(raw);
    let dir = dir_for(&server.db);
    let counters = server.counters();
    eventually("the partial file is removed", || {
        stored_files(&dir).is_empty() && counters.files().refused(Refused::Abandoned) == 1
    })
    .await;
    // Its quota is free again.
    leave(&alice, "bob", "whole.bin", &bytes).await.unwrap();
}

#[tokio::test]
async fn files_nobody_takes_expire_and_are_deleted() {
    let limits = Limits {
        ttl: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = TestServer::start_with(|c| {
        c.set_file_limits(limits)
            .set_file_sweep(Duration::from_millis(20))
    })
    .await;
    let (alice, _events) = server.user("alice").await;
    register(&server, "bob").await;
    let bytes = content(5000, 4);
    leave(&alice, "bob", "soon.bin", &bytes).await.unwrap();
    let dir = dir_for(&server.db);
    let counters = server.counters();
    eventually("the file expires", || {
        stored_files(&dir).is_empty() && counters.files().expired() == 1
    })
    .await;
    let (bob, _events) = server.connect().await;
    assert_eq!(bob.login("bob", PASSWORD).await.unwrap().pending_files, 0);
}

#[tokio::test]
async fn stored_files_survive_a_restart_and_unfinished_uploads_do_not() {
    let server = TestServer::start().await;
    let (alice, _events) = server.user("alice").await;
    register(&server, "bob").await;
    let bytes = content(70_000, 5);
    let stored = leave(&alice, "bob", "kept.bin", &bytes).await.unwrap();
    drop(alice);
    let (db, dir) = server.stop_keep_db().await;
    // What a crash mid-upload would leave.
    std::fs::write(dir_for(&db).join("99.part"), b"half").unwrap();
    let mut server = TestServer::start_on(&db, |c| c).await;
    let (bob, mut events) = server.connect().await;
    assert_eq!(bob.login("bob", PASSWORD).await.unwrap().pending_files, 1);
    let offer = file_event(&mut events).await;
    assert_eq!(offer.file_id, stored.file_id);
    assert!(take(&bob, &offer, 0).await == bytes);
    assert_eq!(
        stored_files(&dir_for(&db)),
        vec![dir_for(&db).join(stored.file_id.to_string())],
        "the partial upload is gone"
    );
    server.stop().await;
    drop(dir);
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A tmpfs of `mib` MiB mounted on a new directory (as root), unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let size = format!("size={mib}m");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: mounting a small tmpfs needs root");
            return None;
        }
        Some(Self { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_the_upload_and_removes_the_partial_file() {
    let Some(disk) = SmallDisk::mount(2) else {
        return;
    };
    let mut server = TestServer::start_on(&disk.dir.path().join("magpie.db"), |c| c).await;
    let (alice, _events) = server.user("alice").await;
    register(&server, "bob").await;
    // 3 MB into a 2 MiB file system, under every limit of the server.
    let bytes = content(3_000_000, 8);
    let err = leave(&alice, "bob", "too-big-for-disk.bin", &bytes)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::StorageFull), "{err}");
    assert!(err.to_string().contains("disk is full"), "{err}");
    let dir = dir_for(&server.db);
    assert!(stored_files(&dir).is_empty(), "partial removed");
    assert_eq!(server.counters().files().refused(Refused::StorageFull), 1);
    // The room is back: a file that fits is stored.
    let small = content(100_000, 9);
    leave(&alice, "bob", "fits.bin", &small).await.unwrap();
    drop(alice);
    server.stop().await;
}

/// Chunks leave in the order they were read, however the runtime schedules the
/// sending side: many small chunks, eight in flight, on several worker threads.
/// (Each chunk once went out from its own spawned task; two of them racing to the
/// connection reordered the offsets, the server refused the upload mid-way, and the
/// client read "no upload in progress".)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_small_chunks_on_many_threads_arrive_in_order() {
    let server =
        TestServer::start_with(|c| c.set_file_chunk(64).set_file_chunk_rate(1_000_000)).await;
    let (alice, _alice_events) = server.user("alice").await;
    register(&server, "bob").await;
    let bytes = content(96_000, 11);
    for round in 0..3 {
        let stored = alice
            .leave_file(
                "bob",
                meta(&format!("r{round}.bin"), &bytes),
                &bytes[..],
                |_| (),
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: 1,500 chunks of 64 bytes: {e}"));
        assert!(!stored.delivered);
    }
    let (bob, mut bob_events) = server.connect().await;
    assert_eq!(bob.login("bob", PASSWORD).await.unwrap().pending_files, 3);
    for _ in 0..3 {
        let offer = file_event(&mut bob_events).await;
        assert!(
            take(&bob, &offer, 0).await == bytes,
            "the bytes taken are the bytes left"
        );
    }
}
