//! The harness the end-to-end tests share: a real `magpie-server` process, learned from
//! its ready signal, serving TLS with its self-signed certificate as a user's server
//! would; real `magpie` processes that pin it on first use into the test's own
//! `known_servers` (beside the test's config file); and real `magpie` processes whose live statistics (`--stats-jsonl
//! -`, one JSON object a line on stdout) the tests wait on instead of sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use magpie_signaling::client::{Client, Events, Incoming};
use magpie_signaling::proto::Event;
use magpie_signaling::tls::{KnownServers, Trust};
use serde_json::Value;

pub const MAGPIE: &str = env!("CARGO_BIN_EXE_magpie");
pub const PASSWORD: &str = "e2e-password";

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
pub struct Server {
    child: Child,
    pub addr: String,
    /// The SHA-256 fingerprint of its TLS certificate, from its ready signal.
    pub fingerprint: String,
    /// The TURN relay's address, when the server runs one.
    pub relay: Option<String>,
    pub dir: tempfile::TempDir,
}

/// Starts `magpie-server` with `args` and reads its ready signal: one JSON line on
/// stdout once every socket is bound.
pub fn spawn_server(args: &[&str]) -> (Child, Value) {
    spawn_server_logging(args, None)
}

/// [`spawn_server`], logging at info into `log` when given (at warn to stderr otherwise).
pub fn spawn_server_logging(args: &[&str], log: Option<&Path>) -> (Child, Value) {
    let mut cmd = Command::new(server_binary());
    cmd.args(args).stdout(Stdio::piped());
    match log {
        Some(path) => cmd
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(path).unwrap()),
        None => cmd.env("RUST_LOG", "warn"),
    };
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("no ready signal ({e}): {line:?}"));
    (child, ready["ready"].clone())
}

impl Server {
    pub fn start(heartbeat_secs: u64) -> Self {
        Self::start_with(heartbeat_secs, &[], false).0
    }

    /// [`Server::start`] with more flags; with `log`, the server logs at info into
    /// `server.log` in the test's directory. Also returns its ready signal.
    pub fn start_with(heartbeat_secs: u64, extra: &[&str], log: bool) -> (Self, Value) {
        let dir = tempfile::tempdir().unwrap();
        // An empty config file, so a developer's own defaults do not leak into the test.
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        let db = dir.path().join("e2e.db");
        let heartbeat = heartbeat_secs.to_string();
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-secs",
            &heartbeat,
            "--db",
            db.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let log_path = dir.path().join("server.log");
        let (child, ready) = spawn_server_logging(&args, log.then_some(log_path.as_path()));
        let addr = ready["listen"].as_str().unwrap().to_owned();
        let relay = ready["relay"].as_str().map(str::to_owned);
        let fingerprint = ready["tls_fingerprint"].as_str().unwrap().to_owned();
        let server = Self {
            child,
            addr,
            fingerprint,
            relay,
            dir,
        };
        for user in ["alice", "bob", "carol"] {
            let out = server.magpie(user, &["register"]).output().unwrap();
            assert!(
                out.status.success(),
                "register {user}: {}",
                text(&out.stderr)
            );
        }
        // The first `magpie` pinned the certificate the server announced.
        let pinned = server.known_servers().pinned(&server.addr).unwrap();
        assert_eq!(
            pinned.map(|f| f.to_string()).as_deref(),
            Some(server.fingerprint.as_str()),
            "magpie did not pin the server's certificate"
        );
        (server, ready)
    }

    pub fn magpie(&self, user: &str, args: &[&str]) -> Command {
        magpie(&self.dir.path().join("config.toml"), &self.addr, user, args)
    }

    /// The `known_servers` the test's clients pin into.
    pub fn known_servers(&self) -> KnownServers {
        KnownServers::beside(&self.dir.path().join("config.toml"))
    }

    /// Connects with the client library as `magpie` does: TLS, pinned in the test's
    /// `known_servers`.
    pub async fn connect(&self) -> (Client, Events) {
        let trust = Trust::RootsOrPin {
            known: self.known_servers(),
            server: self.addr.clone(),
        };
        let tls = trust.client_config().unwrap();
        magpie_signaling::client::connect_tls(&self.addr, tls, Default::default())
            .await
            .unwrap()
    }

    /// Starts `user` answering one call (`--once`) with synthetic media into files.
    pub fn answerer(&self, user: &str, extra: &[&str]) -> Watched {
        let mut args = vec!["answer", "--quiet"];
        if !extra.contains(&"--keep-waiting") {
            args.push("--once");
        }
        let extra: Vec<&str> = extra
            .iter()
            .copied()
            .filter(|a| *a != "--keep-waiting")
            .collect();
        let extra = extra.as_slice();
        args.extend_from_slice(extra);
        let mut cmd = self.magpie(user, &args);
        cmd.args(self.media_args(user, extra));
        if !extra.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        let watched = Watched::spawn(cmd);
        self.wait_online(user);
        watched
    }

    /// `user` calling `callee` with synthetic media into files.
    pub fn caller(&self, user: &str, callee: &str, extra: &[&str]) -> Command {
        let mut args = vec!["call", callee, "--quiet"];
        args.extend_from_slice(extra);
        let mut cmd = self.magpie(user, &args);
        cmd.args(self.media_args(user, extra));
        if !extra.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        cmd
    }

    /// Waits until `user` is online, asking the server as carol would with `who`.
    pub fn wait_online(&self, user: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (watcher, mut events) = self.connect().await;
            watcher.login("carol", PASSWORD).await.unwrap();
            // The reply to `watch` says who is online now; `presence` events the rest.
            let now = watcher.watch(&[user]).await.unwrap();
            if now.iter().any(|p| p.online) {
                return;
            }
            let online = tokio::time::timeout(Duration::from_secs(30), async {
                while let Some(incoming) = events.recv().await {
                    if let Incoming::Event(Event::Presence(p)) = incoming
                        && p.online
                        && p.user.as_str() == user
                    {
                        return;
                    }
                }
            });
            online
                .await
                .unwrap_or_else(|_| panic!("{user} never came online"));
        });
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The end-of-call summary `user` wrote (`--stats-json`).
    pub fn stats(&self, user: &str) -> Value {
        let bytes = std::fs::read(self.file(&format!("{user}.json"))).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The synthetic media and file sinks of `user`, less any flag `extra` sets itself.
    fn media_args(&self, user: &str, extra: &[&str]) -> Vec<String> {
        let s = |p: PathBuf| p.to_str().unwrap().to_owned();
        [
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
            "--stats-jsonl",
            "-",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([
            "--audio-out".into(),
            format!("wav:{}", s(self.file(&format!("{user}.wav")))),
        ])
        .chain([
            "--video-out".into(),
            format!("y4m:{}", s(self.file(&format!("{user}.y4m")))),
        ])
        .chain(["--stats-json".into(), s(self.file(&format!("{user}.json")))])
        .collect::<Vec<_>>()
        .chunks(2)
        .filter(|pair| !extra.contains(&pair[0].as_str()))
        .flatten()
        .cloned()
        .collect()
    }
}

impl Server {
    /// Stops the server and starts it again on the same address and database, as an
    /// operator's restart would.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let db = self.dir.path().join("e2e.db");
        let (child, ready) = spawn_server(&[
            "--listen",
            &self.addr,
            "--heartbeat-secs",
            "15",
            "--db",
            db.to_str().unwrap(),
        ]);
        assert_eq!(ready["listen"].as_str(), Some(self.addr.as_str()));
        self.child = child;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `magpie` whose stdout is read line by line: live statistics (JSON objects)
/// go to a queue the test waits on; every other line (chat) is kept as text.
pub struct Watched {
    pub child: Child,
    readers: Vec<std::thread::JoinHandle<()>>,
    stats: mpsc::Receiver<Value>,
    stderr_lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Watched {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, stats) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let text_out = stdout.clone();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut readers = Vec::new();
        readers.push(std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.is_object() => {
                        let _ = tx.send(v);
                    }
                    _ => {
                        let mut t = text_out.lock().unwrap();
                        t.push_str(&line);
                        t.push('\n');
                    }
                }
            }
        }));
        let stderr = Arc::new(Mutex::new(String::new()));
        let text_err = stderr.clone();
        let err = BufReader::new(child.stderr.take().unwrap());
        let (line_tx, stderr_lines) = mpsc::channel();
        readers.push(std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let mut t = text_err.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
                let _ = line_tx.send(line);
            }
        }));
        Self {
            child,
            readers,
            stats,
            stderr_lines,
            stdout,
            stderr,
        }
    }

    /// Waits for the first live-statistics line that satisfies `ready`.
    pub fn wait_for(&self, what: &str, limit: Duration, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stats.recv_timeout(left) {
                Ok(v) if ready(&v) => return v,
                Ok(_) => {}
                Err(_) => panic!("never saw {what}; stderr: {}", self.stderr()),
            }
        }
    }

    /// Waits for a line on stderr that contains `what`, and returns it.
    pub fn wait_stderr(&self, what: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => panic!("never saw {what:?} on stderr: {}", self.stderr()),
            }
        }
    }

    /// Waits until media flows: a path is up and audio has played for `secs`.
    pub fn wait_media(&self, secs: f64) -> Value {
        self.wait_for("media flowing", Duration::from_secs(60), |v| {
            !v["path"].is_null() && f64_at(v, "/report/duration_secs") >= secs
        })
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the process to exit, killing it past `limit`.
    pub fn finish(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The pipes close with the process: the readers drain what is left.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "process did not exit in {limit:?}: {}",
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watched {
    /// A test that fails part-way leaves no `magpie` running behind it.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `magpie` as a user runs it, with `config` as its config file (so `known_servers`
/// beside it) and no `MAGPIE_*` settings from whoever runs the tests.
pub fn magpie(config: &Path, server: &str, user: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(MAGPIE);
    cmd.args(["--server", server, "--user", user])
        .args(args)
        .env("MAGPIE_PASSWORD", PASSWORD)
        .env("MAGPIE_CONFIG", config)
        .env_remove("MAGPIE_SERVER")
        .env_remove("MAGPIE_USER")
        .env_remove("MAGPIE_CA")
        .env_remove("MAGPIE_PLAIN")
        // No test opens a window on a developer's desktop: `window` fails as it would on
        // a headless machine.
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("RUST_LOG", "warn");
    cmd
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn f64_at(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no {pointer} in {v}"))
}

pub fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {pointer} in {v}"))
}
