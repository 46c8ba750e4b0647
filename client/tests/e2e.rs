//! End to end, with the real binaries: a `magpie-server` process and `magpie` processes
//! calling each other over UDP on loopback with synthetic media and file sinks.
//!
//! Video is 320x240 at 15 fps here so that several calls can run at once on two cores;
//! the bounds below are stated with each test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const MAGPIE: &str = env!("CARGO_BIN_EXE_magpie");
const PASSWORD: &str = "e2e-password";

/// `magpie-server` sits next to `magpie` when the workspace is built; build it if not.
fn server_binary() -> PathBuf {
    let path = Path::new(MAGPIE).with_file_name("magpie-server");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "magpie-signaling", "--bin", "magpie-server"])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build magpie-server");
    }
    path
}

/// A server on a free loopback port, killed on drop.
struct Server {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(heartbeat_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // An empty config file, so a developer's own defaults do not leak into the test.
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        let mut child = Command::new(server_binary())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--heartbeat-secs",
                &heartbeat_secs.to_string(),
            ])
            .arg("--db")
            .arg(dir.path().join("e2e.db"))
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(at) = line.find("serving addr=") {
                    let _ = tx.send(line[at + "serving addr=".len()..].trim().to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server did not start");
        let server = Self { child, addr, dir };
        for user in ["alice", "bob", "carol"] {
            let out = server.magpie(user, &["register"]).output().unwrap();
            assert!(
                out.status.success(),
                "register {user}: {}",
                text(&out.stderr)
            );
        }
        server
    }

    fn magpie(&self, user: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(MAGPIE);
        cmd.args(["--server", &self.addr, "--user", user])
            .args(args)
            .env("MAGPIE_PASSWORD", PASSWORD)
            .env("MAGPIE_CONFIG", self.dir.path().join("config.toml"))
            .env_remove("MAGPIE_SERVER")
            .env_remove("MAGPIE_USER")
            .env("RUST_LOG", "warn");
        cmd
    }

    /// Starts `user` answering calls with synthetic media into files.
    fn answerer(&self, user: &str, extra: &[&str]) -> Child {
        let wav = self.file(&format!("{user}.wav"));
        let y4m = self.file(&format!("{user}.y4m"));
        let json = self.file(&format!("{user}.json"));
        let mut args = vec!["answer", "--quiet"];
        args.extend_from_slice(extra);
        let child = self
            .magpie(user, &args)
            .args(media_args(&wav, &y4m, &json))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.wait_online(user);
        child
    }

    fn caller(&self, user: &str, callee: &str, extra: &[&str]) -> Command {
        let wav = self.file(&format!("{user}.wav"));
        let y4m = self.file(&format!("{user}.y4m"));
        let json = self.file(&format!("{user}.json"));
        let mut args = vec!["call", callee, "--quiet"];
        args.extend_from_slice(extra);
        let mut cmd = self.magpie(user, &args);
        cmd.args(media_args(&wav, &y4m, &json));
        cmd
    }

    /// Waits until `user` is online, asking the server as carol would with `who`.
    fn wait_online(&self, user: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (watcher, _events) = magpie_signaling::client::connect(self.addr.as_str())
                .await
                .unwrap();
            watcher.login("carol", PASSWORD).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if watcher
                    .who()
                    .await
                    .unwrap()
                    .iter()
                    .any(|u| u.as_str() == user)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{user} never came online");
        });
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn stats(&self, user: &str) -> Value {
        let bytes = std::fs::read(self.file(&format!("{user}.json"))).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn media_args(wav: &Path, y4m: &Path, json: &Path) -> Vec<String> {
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    [
        "--bind",
        "127.0.0.1:0",
        "--audio-in",
        "tone",
        "--video-in",
        "pattern",
        "--width",
        "320",
        "--height",
        "240",
        "--fps",
        "15",
        "--video-bitrate-kbps",
        "300",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .chain(["--audio-out".into(), format!("wav:{}", s(wav))])
    .chain(["--video-out".into(), format!("y4m:{}", s(y4m))])
    .chain(["--stats-json".into(), s(json)])
    .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits for a child with a limit, killing it past the limit.
fn finish(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!("process did not exit in {limit:?}: {}", text(&out.stderr));
}

fn f64_at(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no {pointer} in {v}"))
}

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
    let bob = server.answerer("bob", &["--auto-answer", "--sim", "loss=5%"]);
    let alice = server
        .caller("alice", "bob", &["--duration", "4", "--sim", "loss=5%"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let alice = finish(alice, Duration::from_secs(60));
    assert!(alice.status.success(), "alice: {}", text(&alice.stderr));
    let bob = finish(bob, Duration::from_secs(30));
    assert!(bob.status.success(), "bob: {}", text(&bob.stderr));

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

#[test]
fn a_rejected_call_says_so_and_fails() {
    let server = Server::start(15);
    let mut bob = server.answerer("bob", &[]);
    let alice = server
        .caller("alice", "bob", &["--duration", "3"])
        .stderr(Stdio::piped())
        .spawn();
    // Bob's client asks; he says no.
    writeln!(bob.stdin.as_mut().unwrap(), "n").unwrap();
    let alice = finish(alice.unwrap(), Duration::from_secs(60));
    assert!(!alice.status.success());
    assert!(
        text(&alice.stderr).contains("bob rejected the call"),
        "{}",
        text(&alice.stderr)
    );
    let _ = bob.kill();
    let _ = bob.wait();
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

    let bob = server.answerer("bob", &["--auto-answer"]);
    let mut alice = server
        .caller("alice", "bob", &["--duration", "6"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until bob has answered alice, or carol's call could reach him first.
    let stderr = BufReader::new(alice.stderr.take().unwrap());
    let (answered_tx, answered_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("bob answered") {
                let _ = answered_tx.send(());
            }
        }
    });
    answered_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("bob never answered alice");
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
    assert!(finish(alice, Duration::from_secs(60)).status.success());
    assert!(finish(bob, Duration::from_secs(30)).status.success());
}

#[test]
fn chat_reaches_the_peer_during_a_call() {
    let server = Server::start(15);
    let bob = server.answerer("bob", &["--auto-answer"]);
    let mut alice = server
        .caller("alice", "bob", &["--duration", "5"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    writeln!(alice.stdin.as_mut().unwrap(), "hello bob, can you hear me?").unwrap();
    let alice = finish(alice, Duration::from_secs(60));
    assert!(alice.status.success(), "{}", text(&alice.stderr));
    let bob = finish(bob, Duration::from_secs(30));
    let said = text(&bob.stdout);
    assert!(
        said.contains("alice: hello bob, can you hear me?"),
        "bob saw: {said}"
    );
}

/// Bob's client is killed mid-call: alice ends the call with a clear reason, within the
/// heartbeat timeout (3 x 1 s here) or the media consent timeout (6 s), whichever first.
#[test]
fn a_killed_peer_ends_the_call_with_a_clear_reason() {
    let server = Server::start(1);
    let mut bob = server.answerer("bob", &["--auto-answer"]);
    let alice = server
        .caller("alice", "bob", &["--duration", "60"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    bob.kill().unwrap();
    let killed = Instant::now();
    bob.wait().unwrap();
    let alice = finish(alice, Duration::from_secs(30));
    let took = killed.elapsed();
    assert!(alice.status.success(), "{}", text(&alice.stderr));
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
