//! End to end, with the real binaries: a `magpie-server` process and `magpie` processes
//! calling each other over UDP on loopback with synthetic media and file sinks.
//!
//! Video is 320x240 at 15 fps here so that several calls can run at once on two cores;
//! the bounds below are stated with each test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Server, Watched, f64_at, text};

/// At 5 % loss each way: the call is set up, audio and video flow both ways, residual
/// loss and latency are within bounds, and hangup reaches the other side.
///
/// Bounds: residual audio loss under 2 % (NACK and FEC repair nearly all of 5 %); audio
/// mouth-to-ear p50 under 400 ms and video glass-to-glass p50 under 600 ms (loopback,
/// debug build, two calls' worth of codecs sharing two cores with other tests); at least
/// 150 of the ~200 audio frames of 4 s played, and 25 video frames shown.
#[test]
fn a_call_at_five_percent_loss_flows_both_ways_and_hangs_up_cleanly() {
    let server = Server::start(15);
    let mut bob = server.answerer("bob", &["--auto-answer", "--sim", "loss=5%"]);
    let mut alice =
        Watched::spawn(server.caller("alice", "bob", &["--duration", "4", "--sim", "loss=5%"]));
    let status = alice.finish(Duration::from_secs(60));
    assert!(status.success(), "alice: {}", alice.stderr());
    let status = bob.finish(Duration::from_secs(30));
    assert!(status.success(), "bob: {}", bob.stderr());

    let (a, b) = (server.stats("alice"), server.stats("bob"));
    assert!(
        a["ended_because"].as_str().unwrap().contains("duration"),
        "{a}"
    );
    assert!(
        b["ended_because"].as_str().unwrap().contains("hung up"),
        "{b}"
    );
    for (who, s) in [("alice", &a), ("bob", &b)] {
        let audio_frames = f64_at(s, "/report/audio/frames");
        assert!(
            audio_frames >= 150.0,
            "{who} played {audio_frames} audio frames"
        );
        let residual = f64_at(s, "/report/audio/residual_loss_percent");
        assert!(residual < 2.0, "{who}: residual audio loss {residual} %");
        let link = f64_at(s, "/report/audio/loss_before_recovery_percent");
        assert!(link > 0.0, "{who}: --sim lost nothing?");
        assert_eq!(
            s.pointer("/report/audio/latency/source").unwrap(),
            "probe",
            "{who}"
        );
        let audio_p50 = f64_at(s, "/report/audio/latency/p50_ms");
        assert!(
            audio_p50 > 0.0 && audio_p50 < 400.0,
            "{who}: audio p50 {audio_p50} ms"
        );
        let shown = f64_at(s, "/report/video/decoded");
        assert!(shown >= 25.0, "{who} showed {shown} video frames");
        let video_p50 = f64_at(s, "/report/video/latency/p50_ms");
        assert!(
            video_p50 > 0.0 && video_p50 < 600.0,
            "{who}: video p50 {video_p50} ms"
        );
    }
    // `--sim` without a rate: its counters, and no bottleneck.
    for (who, s) in [("alice", &a), ("bob", &b)] {
        assert!(common::u64_at(s, "/sim/sent") > 0, "{who}: {s}");
        assert!(common::u64_at(s, "/sim/lost") > 0, "{who}: {s}");
        assert!(s.get("bottleneck").is_none(), "{who}: {s}");
    }
    // Delay-based control is on by default: each side estimated what the other sent
    // and told it (REMB), and heard the other's estimate.
    for (who, s) in [("alice", &a), ("bob", &b)] {
        assert!(common::u64_at(s, "/stats/remb_received") > 0, "{who}: {s}");
        assert!(
            common::u64_at(s, "/stats/delay_bwe/reports_sent") > 0,
            "{who}: {s}"
        );
    }
    // The file sinks recorded what was played.
    for user in ["alice", "bob"] {
        let wav = std::fs::metadata(server.file(&format!("{user}.wav")))
            .unwrap()
            .len();
        assert!(wav > 48_000 * 2, "{user}.wav is only {wav} bytes");
        let y4m = std::fs::metadata(server.file(&format!("{user}.y4m")))
            .unwrap()
            .len();
        assert!(
            y4m > 25 * 320 * 240 * 3 / 2,
            "{user}.y4m is only {y4m} bytes"
        );
    }
}

/// `--delay-bwe on` on both sides, each sending through a 400 kbit/s link: each side
/// estimates what reaches it and sends the estimate back (REMB), and each sender is held
/// to its peer's: the video target never above the estimate, which is below the link's
/// 400 kbit/s plus a tenth (it measures what arrives). Each `--stats-json` carries its
/// own link's bottleneck figures (6 s, so that some traffic follows the 5 s warm-up).
#[test]
fn with_delay_based_control_each_side_is_held_to_the_estimate_its_peer_sends() {
    let server = Server::start(15);
    let sim = "rate=400kbit,delay=10ms";
    let mut bob = server.answerer("bob", &["--auto-answer", "--sim", sim, "--delay-bwe", "on"]);
    let mut alice = Watched::spawn(server.caller(
        "alice",
        "bob",
        &["--duration", "6", "--sim", sim, "--delay-bwe", "on"],
    ));
    assert!(
        alice.finish(Duration::from_secs(60)).success(),
        "alice: {}",
        alice.stderr()
    );
    assert!(
        bob.finish(Duration::from_secs(30)).success(),
        "bob: {}",
        bob.stderr()
    );
    for who in ["alice", "bob"] {
        let s = server.stats(who);
        assert!(
            common::u64_at(&s, "/stats/delay_bwe/reports_sent") > 0,
            "{who}: {s}"
        );
        assert!(common::u64_at(&s, "/stats/remb_received") > 0, "{who}: {s}");
        let estimate = common::u64_at(&s, "/stats/peer_estimate_bps");
        let target = common::u64_at(&s, "/stats/target_bitrate_bps");
        assert!(
            estimate > 0 && estimate < 440_000,
            "{who}: estimate {estimate}"
        );
        assert!(target <= estimate, "{who}: target {target} over {estimate}");
        // The bottleneck: something crossed it after the warm-up, no more than it can
        // carry (one datagram begun before the warm-up may count whole: under 3 % of a
        // second at 400 kbit/s), and its drops are the simulator's own count.
        let b = s
            .pointer("/bottleneck")
            .unwrap_or_else(|| panic!("{who}: {s}"));
        let used = f64_at(b, "/utilization_percent");
        assert!(used > 0.0 && used < 103.0, "{who}: utilization {used} %");
        let (p50, p95) = (
            f64_at(b, "/queue_delay_ms/0"),
            f64_at(b, "/queue_delay_ms/1"),
        );
        let max = f64_at(b, "/queue_delay_max_ms");
        assert!(0.0 < p50 && p50 <= p95 && p95 <= max, "{who}: {b}");
        let (drops, sent) = (
            common::u64_at(&s, "/sim/queue_drops"),
            common::u64_at(&s, "/sim/sent"),
        );
        let loss = f64_at(b, "/self_inflicted_loss_percent");
        assert!(
            (loss - drops as f64 * 100.0 / sent as f64).abs() < 1e-9,
            "{who}: {b}"
        );
        assert!(b["recovery_ms"].is_null(), "no rate step: {b}");
    }
}

#[test]
fn a_rejected_call_says_so_and_fails() {
    let server = Server::start(15);
    let mut bob = server.answerer("bob", &[]);
    let mut alice = Watched::spawn(server.caller("alice", "bob", &["--duration", "3"]));
    // Bob's client asks; he says no.
    bob.wait_stderr("incoming call from alice", Duration::from_secs(30));
    writeln!(bob.child.stdin.as_mut().unwrap(), "n").unwrap();
    let status = alice.finish(Duration::from_secs(60));
    assert!(!status.success());
    assert!(
        alice.stderr().contains("bob rejected the call"),
        "{}",
        alice.stderr()
    );
    let _ = bob.child.kill();
    let _ = bob.child.wait();
}

#[test]
fn calling_a_busy_or_offline_user_says_so() {
    let server = Server::start(15);
    let out = server
        .caller("carol", "bob", &["--duration", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("bob is offline"),
        "{}",
        text(&out.stderr)
    );
    let out = server
        .caller("carol", "nobody", &["--duration", "2"])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("no user named nobody"),
        "{}",
        text(&out.stderr)
    );

    let mut bob = server.answerer("bob", &["--auto-answer"]);
    let mut alice = Watched::spawn(server.caller("alice", "bob", &["--duration", "6"]));
    // Wait until bob has answered alice, or carol's call could reach him first.
    alice.wait_stderr("bob answered", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    let busy = loop {
        let out = server
            .caller("carol", "bob", &["--duration", "1"])
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        if stderr.contains("bob is busy") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(busy, "carol never heard that bob is busy");
    assert!(alice.finish(Duration::from_secs(60)).success());
    assert!(bob.finish(Duration::from_secs(30)).success());
}

#[test]
fn chat_reaches_the_peer_during_a_call() {
    let server = Server::start(15);
    let mut bob = server.answerer("bob", &["--auto-answer"]);
    let mut alice = Watched::spawn(server.caller("alice", "bob", &["--duration", "5"]));
    alice.wait_media(1.0);
    writeln!(
        alice.child.stdin.as_mut().unwrap(),
        "hello bob, can you hear me?"
    )
    .unwrap();
    let status = alice.finish(Duration::from_secs(60));
    assert!(status.success(), "{}", alice.stderr());
    bob.finish(Duration::from_secs(30));
    let said = bob.stdout();
    assert!(
        said.contains("alice: hello bob, can you hear me?"),
        "bob saw: {said}"
    );
    // The sender sees her own line too, on a line of its own.
    let own = alice.stdout();
    assert!(
        own.lines()
            .any(|l| l.starts_with('[') && l.ends_with("alice: hello bob, can you hear me?")),
        "alice saw: {own}"
    );
}

/// Bob's client is killed mid-call: alice ends the call with a clear reason, within the
/// heartbeat timeout (3 x 1 s here) or the media consent timeout (6 s), whichever first.
#[test]
fn a_killed_peer_ends_the_call_with_a_clear_reason() {
    let server = Server::start(1);
    let mut bob = server.answerer("bob", &["--auto-answer"]);
    let mut alice = Watched::spawn(server.caller("alice", "bob", &["--duration", "60"]));
    alice.wait_media(1.0);
    bob.child.kill().unwrap();
    let killed = Instant::now();
    bob.child.wait().unwrap();
    let status = alice.finish(Duration::from_secs(30));
    let took = killed.elapsed();
    assert!(status.success(), "{}", alice.stderr());
    let ended = server.stats("alice")["ended_because"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        ended.contains("peer-lost") || ended.contains("stopped answering"),
        "alice's call ended because: {ended}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?} to notice");
}

/// A sink that cannot open ends the call at once on both sides: the client that owns it
/// exits with a message that names the sink and the reason, and its peer, set to talk
/// for a minute, hears of it and exits too (issue 14, item 1: this used to hang, deaf to
/// Ctrl-C, while the peer waited for a UDP path that never came).
///
/// Since item 2, a sink that cannot open at all is refused before bob goes online (see
/// tests/preflight.rs); what is left is a sink that opened at start and fails when the
/// call comes: here bob's Y4M directory is deleted while he waits.
///
/// Bound: 20 s from the ring for each side, against the 60 s the caller would otherwise
/// stay (a debug build on two busy cores takes a few seconds to set a call up).
#[test]
fn a_sink_that_fails_when_the_call_comes_ends_the_call_promptly() {
    let server = Server::start(15);
    let dir = server.file("gone");
    std::fs::create_dir(&dir).unwrap();
    let sink = format!("y4m:{}", dir.join("f.y4m").display());
    let mut bob = server.answerer("bob", &["--auto-answer", "--video-out", &sink]);
    std::fs::remove_dir_all(&dir).unwrap();
    let mut alice = Watched::spawn(server.caller("alice", "bob", &["--duration", "60"]));
    bob.wait_stderr("incoming call from alice", Duration::from_secs(30));
    let status = bob.finish(Duration::from_secs(20));
    assert!(!status.success(), "bob: {}", bob.stderr());
    let last = bob.stderr().lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("magpie: ")
            && last.contains(&sink)
            && last.contains("No such file or directory"),
        "bob's last words: {}",
        bob.stderr()
    );
    alice.finish(Duration::from_secs(20));
    assert!(
        alice.stderr().contains("ended"),
        "alice: {}",
        alice.stderr()
    );
}
