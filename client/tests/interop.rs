//! Plain RTP with ffmpeg, both ways, on loopback: ffmpeg encodes a Y4M and a WAV file and
//! sends them to `magpie play`, whose Y4M and WAV sinks are checked frame by frame and
//! window by window against the sources; `magpie stream` sends its test pattern and tone
//! to ffmpeg, which decodes them into files whose frames must carry the pattern's
//! frame numbers in order and whose audio must carry the tone.
//!
//! ffmpeg must be installed (`scripts/test-deps` installs it). Without it the tests fail
//! when run as root or in CI, and are skipped with a message otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use magpie_media::devices::Y4mReader;
use magpie_media::probe::VideoMarker;

const MAGPIE: &str = env!("CARGO_BIN_EXE_magpie");
/// The sources: 3 s of 320x240 at 25 fps, and of a 440 Hz sine at 48 kHz.
const SECONDS: f64 = 3.0;
const FPS: u32 = 25;

/// Whether ffmpeg is there; panics when it should be (root or CI), so CI never skips.
fn have_ffmpeg(test: &str) -> bool {
    let found = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let must = std::env::var_os("CI").is_some()
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    assert!(
        found || !must,
        "ffmpeg is missing; scripts/test-deps installs it (apt-get install ffmpeg)"
    );
    if !found {
        eprintln!("{test}: skipped: ffmpeg is not installed and this is not root or CI");
    }
    found
}

fn ffmpeg(args: &[&str]) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(args);
    cmd
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Four free UDP ports in a row on loopback, the first even: audio RTP and RTCP, video
/// RTP and RTCP.
fn free_ports() -> u16 {
    for _ in 0..100 {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port() & !1;
        drop(probe);
        if base > 60_000 {
            continue;
        }
        let held: Vec<_> = (base..base + 4)
            .map_while(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == 4 {
            return base;
        }
    }
    panic!("no four free UDP ports in a row");
}

/// Waits for `child` to exit within `limit`, killing it if it does not.
fn wait(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the file holds `text` (a process's redirected stderr).
fn wait_text(path: &Path, text: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(text)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no {text:?} within {limit:?}: {}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

/// The samples of a 16-bit PCM WAV file, and its channel count.
fn wav_samples(path: &Path) -> (Vec<i16>, usize) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"RIFF", "{}", path.display());
    let mut at = 12;
    let mut channels = 0;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
        if id == b"fmt " {
            channels = usize::from(u16::from_le_bytes([body[2], body[3]]));
            assert_eq!(u16::from_le_bytes([body[14], body[15]]), 16, "16-bit PCM");
        }
        if id == b"data" {
            let samples = body
                .chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]]))
                .collect();
            return (samples, channels);
        }
        at += 8 + len + (len & 1);
    }
    panic!("{}: no data chunk", path.display());
}

/// 20 ms windows of the first channel at 48 kHz: (RMS, zero crossings) of each.
fn windows(samples: &[i16], channels: usize) -> Vec<(f64, usize)> {
    let mono: Vec<i16> = samples.iter().step_by(channels.max(1)).copied().collect();
    mono.chunks_exact(960)
        .map(|w| {
            let rms = (w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / 960.0).sqrt();
            let crossings = w.windows(2).filter(|p| (p[0] < 0) != (p[1] < 0)).count();
            (rms, crossings)
        })
        .collect()
}

fn frames(path: &Path) -> Vec<magpie_media::codec::I420Frame> {
    let mut reader = Y4mReader::open(path).unwrap();
    let mut out = Vec::new();
    while let Some((frame, _)) = reader.next_frame().unwrap() {
        out.push(frame);
    }
    out
}

fn dir(name: &str) -> (tempfile::TempDir, impl Fn(&str) -> PathBuf) {
    let dir = tempfile::Builder::new().prefix(name).tempdir().unwrap();
    let root = dir.path().to_owned();
    (dir, move |file: &str| root.join(file))
}

#[test]
fn magpie_plays_what_ffmpeg_sends() {
    if !have_ffmpeg("magpie_plays_what_ffmpeg_sends") {
        return;
    }
    let (_dir, file) = dir("magpie-play");
    let (src_y4m, src_wav) = (file("src.y4m"), file("src.wav"));
    let secs = SECONDS.to_string();
    let size = format!("testsrc=size=320x240:rate={FPS}");
    run(
        ffmpeg(&[
            "-f", "lavfi", "-i", &size, "-t", &secs, "-pix_fmt", "yuv420p",
        ])
        .arg(&src_y4m),
        "ffmpeg making the Y4M",
    );
    let sine = "sine=frequency=440:sample_rate=48000";
    run(
        ffmpeg(&["-f", "lavfi", "-i", sine, "-t", &secs]).arg(&src_wav),
        "ffmpeg making the WAV",
    );
    let port = free_ports();
    let video_url = format!("rtp://127.0.0.1:{port}");
    let audio_url = format!("rtp://127.0.0.1:{}", port + 2);
    let send = |limit: Option<&str>| {
        let mut cmd = ffmpeg(&["-re", "-i"]);
        cmd.arg(&src_y4m).args(["-re", "-i"]).arg(&src_wav);
        if let Some(t) = limit {
            cmd.args(["-t", t]);
        }
        cmd.args(["-map", "0:v", "-c:v", "libx264", "-profile:v", "baseline"])
            .args(["-tune", "zerolatency", "-g", "25", "-f", "rtp", &video_url])
            .args(["-map", "1:a", "-c:a", "libopus", "-f", "rtp", &audio_url])
            .arg("-sdp_file")
            .arg(file("in.sdp"));
        cmd
    };
    // A first, short run writes the description magpie listens by (ffmpeg writes it as
    // it starts sending, so a receiver started from it would miss the first frames).
    run(&mut send(Some("0.1")), "ffmpeg writing the SDP");

    let stderr = file("play.err");
    let mut play = Command::new(MAGPIE)
        .arg("play")
        .arg(file("in.sdp"))
        .arg("--audio-out")
        .arg(format!("wav:{}", file("heard.wav").display()))
        .arg("--video-out")
        .arg(format!("y4m:{}", file("seen.y4m").display()))
        .args(["--idle-secs", "1", "--duration", "30", "--stats-json"])
        .arg(file("play.json"))
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    wait_text(&stderr, "waiting for", Duration::from_secs(30));
    run(&mut send(None), "ffmpeg sending");
    let status = wait(&mut play, Duration::from_secs(30), "magpie play");
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "magpie play failed: {log}");
    assert!(log.contains("NOT ENCRYPTED"), "{log}");

    // Video: every frame arrived and is the source's, in order.
    let source = frames(&src_y4m);
    let seen = frames(&file("seen.y4m"));
    let expected = (SECONDS * f64::from(FPS)) as usize;
    assert_eq!(source.len(), expected);
    assert!(
        seen.len().abs_diff(expected) <= 2,
        "{} frames written for {expected} sent: {log}",
        seen.len()
    );
    // The description gives no rate: the sink measured the source's.
    let rate = Y4mReader::open(&file("seen.y4m")).unwrap().fps();
    assert_eq!(rate, FPS as f32, "the Y4M header's rate");
    let psnr: Vec<f64> = seen
        .iter()
        .zip(&source)
        .map(|(s, r)| s.psnr_luma(r).unwrap())
        .collect();
    let worst = psnr.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(worst > 28.0, "a frame unlike its source: PSNR {psnr:?}");

    // Audio: the sine, for as long as it was sent.
    let (samples, channels) = wav_samples(&file("heard.wav"));
    let tone: Vec<_> = windows(&samples, channels)
        .into_iter()
        .filter(|(rms, _)| *rms > 1000.0)
        .collect();
    let heard = tone.len() as f64 * 0.02;
    assert!(
        (heard - SECONDS).abs() <= 0.2,
        "{heard:.2} s of tone heard for {SECONDS} s sent: {log}"
    );
    // 440 Hz crosses zero about 17.6 times in 20 ms.
    let pitch = tone.iter().filter(|(_, c)| (16..=19).contains(c)).count();
    assert!(
        pitch * 10 >= tone.len() * 9,
        "not the 440 Hz sine: {tone:?}"
    );

    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file("play.json")).unwrap()).unwrap();
    for stream in stats["streams"].as_array().unwrap() {
        assert!(stream["ssrc"].is_u64(), "{stream}");
    }
}

#[test]
fn ffmpeg_plays_what_magpie_streams() {
    if !have_ffmpeg("ffmpeg_plays_what_magpie_streams") {
        return;
    }
    let (_dir, file) = dir("magpie-stream");
    let port = free_ports();
    let to = format!("127.0.0.1:{port}");
    let stream = |duration: &str, stderr: &Path| {
        let mut cmd = Command::new(MAGPIE);
        cmd.args(["stream", "--to", &to, "--sdp"])
            .arg(file("out.sdp"))
            .args([
                "--width",
                "320",
                "--height",
                "240",
                "--fps",
                &FPS.to_string(),
            ])
            .args(["--duration", duration])
            .stderr(std::fs::File::create(stderr).unwrap());
        cmd
    };
    // The description first (it does not change between runs to the same place), so
    // ffmpeg listens before the stream starts.
    let status = stream("0", &file("sdp.err")).status().unwrap();
    assert!(status.success());
    let sdp = std::fs::read_to_string(file("out.sdp")).unwrap();
    assert!(sdp.contains("a=rtpmap:111 opus/48000/2"), "{sdp}");
    assert!(sdp.contains("packetization-mode=1"), "{sdp}");
    let help = Command::new(MAGPIE)
        .args(["stream", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("UNENCRYPTED"));

    let secs = SECONDS.to_string();
    let ffmpeg_err = file("ffmpeg.err");
    let mut receiver = ffmpeg(&["-protocol_whitelist", "file,udp,rtp", "-i"])
        .arg(file("out.sdp"))
        .args(["-map", "0:v", "-t", &secs, "-pix_fmt", "yuv420p"])
        .arg(file("got.y4m"))
        .args(["-map", "0:a", "-t", &secs])
        .arg(file("got.wav"))
        .stderr(std::fs::File::create(&ffmpeg_err).unwrap())
        .spawn()
        .unwrap();
    // ffmpeg says nothing when it has bound its ports; a keyframe every 2 s covers a
    // late start.
    std::thread::sleep(Duration::from_millis(500));
    let stream_err = file("stream.err");
    let mut sender = stream("10", &stream_err).spawn().unwrap();
    let status = wait(&mut receiver, Duration::from_secs(40), "ffmpeg receiving");
    let _ = sender.kill();
    let _ = sender.wait();
    let log = std::fs::read_to_string(&stream_err).unwrap();
    assert!(log.contains("NOT ENCRYPTED"), "{log}");
    assert!(
        status.success(),
        "ffmpeg failed: {}",
        std::fs::read_to_string(&ffmpeg_err).unwrap()
    );

    // Video: SECONDS at the described rate, and the pattern's frame numbers in order.
    let got = frames(&file("got.y4m"));
    let expected = (SECONDS * f64::from(FPS)) as usize;
    assert!(
        got.len().abs_diff(expected) <= 2,
        "{} frames decoded for {expected}",
        got.len()
    );
    let numbers: Vec<u32> = got
        .iter()
        .filter_map(VideoMarker::read)
        .map(|m| m.frame_number)
        .collect();
    assert!(
        numbers.len() * 10 >= got.len() * 9,
        "only {} of {} frames carry a readable pattern",
        numbers.len(),
        got.len()
    );
    assert!(
        numbers.windows(2).all(|p| p[0] <= p[1]),
        "frames out of order: {numbers:?}"
    );
    let span = numbers.last().unwrap() - numbers.first().unwrap();
    assert!(
        (expected as u32 - 10..=expected as u32 + 5).contains(&span),
        "frame numbers span {span}: {numbers:?}"
    );

    // Audio: the tone, all the way through. Between markers it plays at -30 dBFS (RMS
    // about 700), the markers at -10 dBFS; silence or a gap reads near 0.
    let (samples, channels) = wav_samples(&file("got.wav"));
    let all = windows(&samples, channels);
    let tone = all.iter().filter(|(rms, _)| *rms > 300.0).count();
    assert!(
        (all.len() as f64 * 0.02 - SECONDS).abs() <= 0.1,
        "{} windows",
        all.len()
    );
    assert!(
        tone * 10 >= all.len() * 9,
        "the tone is in {tone} of {} windows",
        all.len()
    );
}

/// A stream with neither audio nor video is refused with the reason, before anything is
/// sent (it used to announce "sending H.264 video" and send nothing).
#[test]
fn a_stream_of_nothing_is_refused() {
    let out = Command::new(MAGPIE)
        .args(["stream", "--to", "127.0.0.1:5004"])
        .args([
            "--audio-in",
            "none",
            "--video-in",
            "none",
            "--duration",
            "0.2",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("nothing to send"), "{stderr}");
    assert!(out.stdout.is_empty(), "no description printed: {out:?}");
}
