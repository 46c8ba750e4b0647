//! What the media libraries print stays off the terminal unless asked for: alsa-lib's
//! complaints about a missing sound card (eight lines for every device opened) go
//! through `tracing`, shown with `-v` only, and so do OpenH264's encoder warnings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const MAGPIE: &str = env!("CARGO_BIN_EXE_magpie");

/// `magpie play` of an audio-only description to the speaker, for half a second: it opens
/// the speaker (and on a machine without one, fails there). Stdout and stderr.
fn play_to_speaker(verbose: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sdp = dir.path().join("a.sdp");
    let text = format!(
        "v=0\nc=IN IP4 127.0.0.1\nm=audio {port} RTP/AVP 111\na=rtcp-mux\n\
         a=rtpmap:111 opus/48000/2\n"
    );
    std::fs::write(&sdp, text).unwrap();
    let mut cmd = Command::new(MAGPIE);
    if verbose {
        cmd.arg("-v");
    }
    let out = cmd
        .arg("play")
        .arg(&sdp)
        .args(["--audio-out", "speaker", "--duration", "0.5"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn alsa_messages_are_quiet_by_default_and_shown_with_v() {
    let quiet = play_to_speaker(false);
    assert!(
        !quiet.contains("ALSA lib"),
        "alsa-lib wrote to the terminal: {quiet}"
    );
    assert!(!quiet.contains("cannot find card"), "{quiet}");
    let verbose = play_to_speaker(true);
    assert!(
        !verbose.contains("ALSA lib"),
        "alsa-lib wrote to the terminal: {verbose}"
    );
    // Without a sound card alsa-lib has something to say, and -v shows it.
    if quiet.contains("cannot open the audio sink speaker") {
        assert!(
            verbose.contains("alsa") && verbose.contains("Unknown PCM default"),
            "-v shows what alsa-lib said: {verbose}"
        );
    }
}

/// `magpie stream` of the test pattern, video only, to a loopback port nobody reads, for
/// half a second: it starts an H.264 encoder, and OpenH264 warns about its slice limits at
/// every start. Stderr.
fn stream_video(verbose: bool) -> String {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(MAGPIE);
    if verbose {
        cmd.arg("-v");
    }
    let out = cmd
        .arg("stream")
        .args(["--to", &format!("127.0.0.1:{port}")])
        .args(["--audio-in", "none", "--video-in", "pattern"])
        .args(["--width", "160", "--height", "120", "--duration", "0.5"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "stream failed: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn openh264_warnings_are_quiet_by_default_and_shown_with_v() {
    let quiet = stream_video(false);
    assert!(
        !quiet.contains("OpenH264") && !quiet.contains("ParamValidationExt"),
        "OpenH264 wrote to the terminal: {quiet}"
    );
    let verbose = stream_video(true);
    assert!(
        !verbose.contains("[OpenH264]"),
        "OpenH264 wrote to the terminal itself: {verbose}"
    );
    assert!(
        verbose.contains("openh264") && verbose.contains("ParamValidationExt"),
        "-v shows what OpenH264 said: {verbose}"
    );
}
