//! Issue 14, item 2: every setting that can be checked is checked before anyone is rung.
//! With the real binaries: a caller with a bad flag fails at once with the reason and
//! bob, waiting with --auto-answer, never hears of it; an answerer with a bad flag fails
//! before going online.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Server, text};

/// A flag and what the error must say.
fn bad_settings(taken: &str) -> Vec<(Vec<String>, &'static str)> {
    let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![
        (
            v(&["--sim", "loss=abc"]),
            "--sim: bad value `abc` for `loss`",
        ),
        (v(&["--fps", "0"]), "--fps 0: must be between 1"),
        (
            v(&["--width", "641"]),
            "--width 641: video sides must be even",
        ),
        (
            v(&["--audio-out", "wav:/missing/dir/x.wav"]),
            "cannot open the audio sink wav:/missing/dir/x.wav",
        ),
        (
            v(&["--video-out", "y4m:/missing/dir/x.y4m"]),
            "cannot open the video sink y4m:/missing/dir/x.y4m",
        ),
        // The harness unsets DISPLAY and WAYLAND_DISPLAY, as on a headless machine.
        (v(&["--video-out", "window"]), "no display"),
        (
            vec!["--bind".into(), taken.to_owned()],
            "Address already in use",
        ),
    ]
}

#[test]
fn a_caller_with_a_bad_setting_fails_before_ringing_anyone() {
    let server = Server::start(15);
    let mut bob = server.answerer("bob", &["--auto-answer"]);
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (flags, says) in bad_settings(&taken) {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let out = server.caller("alice", "bob", &flags).output().unwrap();
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted: {stderr}");
        assert!(
            stderr.contains(says) && !stderr.contains("calling bob"),
            "{flags:?}: {stderr}"
        );
    }
    // Bob was never rung: he is still waiting, and heard of no call.
    assert!(bob.child.try_wait().unwrap().is_none(), "{}", bob.stderr());
    let _ = bob.child.kill();
    bob.finish(Duration::from_secs(10));
    assert!(
        !bob.stderr().contains("incoming call"),
        "bob was rung: {}",
        bob.stderr()
    );
}

#[test]
fn an_answerer_with_a_bad_setting_fails_before_going_online() {
    let server = Server::start(15);
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (flags, says) in bad_settings(&taken) {
        let mut args = vec!["answer", "--auto-answer", "--audio-in", "tone"];
        args.extend(flags.iter().map(String::as_str));
        if !flags.contains(&"--video-out".to_owned()) {
            args.extend(["--video-out", "null"]);
        }
        if !flags.iter().any(|f| f == "--audio-out") {
            args.extend(["--audio-out", "null"]);
        }
        args.extend(["--video-in", "pattern"]);
        let out = server.magpie("bob", &args).output().unwrap();
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted: {stderr}");
        assert!(
            stderr.contains(says) && !stderr.contains("waiting for calls"),
            "{flags:?}: {stderr}"
        );
    }
}
