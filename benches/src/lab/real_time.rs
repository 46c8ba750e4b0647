//! The real-time engine: `magpie-server` and two `magpie` processes on loopback, each
//! client impairing what it sends with `--sim` (so each direction is impaired once, as in
//! the virtual engine), with a tone and a test pattern in and nothing out. Both clients'
//! `--stats-json` summaries are the result.
//!
//! The binaries are found next to the lab's own executable (`cargo run --release -p
//! magpie-benches` puts all three in `target/release/`); when they are missing they are
//! built with `cargo build --release -p magpie-client -p magpie-signaling`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use magpie_media::SessionConfig;
use magpie_media::call::Report;
use serde::Deserialize;
use tracing::{debug, info};

use super::{Condition, LabMedia, Measured};

const PASSWORD: &str = "losslab-password-not-secret";
/// How long the server and the callee get to come up.
const STARTUP: Duration = Duration::from_secs(20);
/// How long past the call's duration the caller may take to finish.
const GRACE: Duration = Duration::from_secs(30);

/// The two programs the real engine runs, and where it keeps their files.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The `magpie` client.
    pub client: PathBuf,
    /// `magpie-server`.
    pub server: PathBuf,
    /// Where databases, logs and summaries go.
    pub scratch: PathBuf,
}

impl Binaries {
    /// Finds the binaries next to the running executable, building them if asked to and
    /// they are missing.
    pub fn locate(scratch: PathBuf, build: bool) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the lab's own executable")?;
        let dir = exe
            .parent()
            .context("the lab's executable has no directory")?
            .to_path_buf();
        // Test binaries live in `deps/`, one level below the binaries.
        let dirs = [
            dir.clone(),
            dir.parent().map(Path::to_path_buf).unwrap_or(dir),
        ];
        let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
        if let (Some(client), Some(server)) = (find("magpie"), find("magpie-server")) {
            return Ok(Self {
                client,
                server,
                scratch,
            });
        }
        if !build {
            bail!(
                "`magpie` and `magpie-server` are not next to {}; build them with \
                 `cargo build --release -p magpie-client -p magpie-signaling`",
                exe.display()
            );
        }
        info!("building magpie and magpie-server (release)");
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "build",
                "--release",
                "-p",
                "magpie-client",
                "-p",
                "magpie-signaling",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            bail!("cargo build of magpie and magpie-server failed");
        }
        let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release");
        Ok(Self {
            client: release.join("magpie"),
            server: release.join("magpie-server"),
            scratch,
        })
    }
}

/// The part of a client's `--stats-json` the lab reads.
#[derive(Debug, Deserialize)]
struct ClientSummary {
    ended_because: String,
    report: Report,
}

/// A child process killed (by its own handle) when dropped.
struct Process {
    child: Child,
    name: &'static str,
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Process {
    /// Waits up to `limit` for a clean exit.
    fn wait(&mut self, limit: Duration) -> Result<()> {
        #[allow(clippy::disallowed_methods)] // reason: the real engine runs in real time
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                bail!("{} exited with {status}", self.name);
            }
            #[allow(clippy::disallowed_methods)] // reason: as above
            if Instant::now() > until {
                bail!("{} did not finish within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs one condition in real time: about `media.duration` plus a few seconds of setup.
pub fn run(condition: &Condition, media: &LabMedia, bins: &Binaries) -> Result<Measured> {
    let dir = bins.scratch.join(condition.name());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log = |name: &str| -> Result<Stdio> {
        Ok(Stdio::from(std::fs::File::create(
            dir.join(format!("{name}.log")),
        )?))
    };
    let db = dir.join("lab.db");
    // Signaling is TLS as for users: the server makes a self-signed certificate beside
    // its database, and the clients trust it as their --ca.
    let (cert, key) = magpie_signaling::tls::self_signed_paths(&db);
    for stale in [&db, &cert, &key] {
        let _ = std::fs::remove_file(stale);
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let server_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let _server = Process {
        child: Command::new(&bins.server)
            .args(["--listen", &server_addr.to_string(), "--no-stun", "--db"])
            .arg(&db)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log("server")?)
            .spawn()
            .with_context(|| format!("cannot start {}", bins.server.display()))?,
        name: "magpie-server",
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(register(server_addr, &cert))?;

    let mut common: Vec<String> = [
        "--server",
        &server_addr.to_string(),
        "--ca",
        &cert.display().to_string(),
        "--bind",
        "127.0.0.1:0",
        "--sim",
        &condition.sim_spec(),
        "--audio-in",
        "tone",
        "--audio-out",
        "null",
        "--video-in",
        if media.video { "pattern" } else { "none" },
        "--video-out",
        "null",
        "--width",
        &media.width.to_string(),
        "--height",
        &media.height.to_string(),
        "--fps",
        &media.fps.to_string(),
        "--video-bitrate-kbps",
        &media.video_bitrate_kbps.to_string(),
        "--audio-bitrate-kbps",
        &media.audio_bitrate_kbps.to_string(),
        "--no-summary",
        "--quiet",
    ]
    .map(str::to_owned)
    .to_vec();
    if !condition.nack {
        common.push("--no-nack".into());
    }
    if !condition.fec {
        common.push("--no-fec".into());
    }
    if !condition.red {
        common.push("--no-red".into());
    }
    // Delay-based control as in the virtual engine: where the run says, else on where
    // the link has a capacity, else the session's default.
    let delay_bwe = media
        .delay_bwe
        .unwrap_or(condition.capacity.is_some() || SessionConfig::new().delay_bwe());
    common.extend([
        "--delay-bwe".into(),
        if delay_bwe { "on" } else { "off" }.into(),
    ]);
    let client = |user: &'static str, command: &[&str]| -> Result<Process> {
        let child = Command::new(&bins.client)
            .args(["--user", user])
            .args(command)
            .args(&common)
            .arg("--stats-json")
            .arg(dir.join(format!("{user}.json")))
            .env("MAGPIE_PASSWORD", PASSWORD)
            .env_remove("MAGPIE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log(user)?)
            .spawn()
            .with_context(|| format!("cannot start {}", bins.client.display()))?;
        Ok(Process { child, name: user })
    };
    let mut bob = client("bob", &["answer", "--auto-answer", "--once"])?;
    runtime
        .block_on(wait_online(server_addr, &cert, "bob"))
        .with_context(|| format!("bob's log: {}", dir.join("bob.log").display()))?;
    let secs = format!("{}", media.duration.as_secs_f64());
    let mut alice = client("alice", &["call", "bob", "--duration", &secs])?;
    let logs = || format!("logs in {}", dir.display());
    alice.wait(media.duration + GRACE).with_context(logs)?;
    bob.wait(STARTUP).with_context(logs)?;
    let read = |user: &str| -> Result<ClientSummary> {
        let path = dir.join(format!("{user}.json"));
        let text =
            std::fs::read(&path).with_context(|| format!("no summary at {}", path.display()))?;
        let summary: ClientSummary = serde_json::from_slice(&text)
            .with_context(|| format!("bad summary at {}", path.display()))?;
        debug!(user, ended = %summary.ended_because, "summary read");
        Ok(summary)
    };
    Ok(Measured {
        condition: *condition,
        a: read("alice")?.report,
        b: read("bob")?.report,
        audio_latency_ms: Vec::new(),
        video_latency_ms: Vec::new(),
        link: None,
    })
}

/// Connects over TLS, trusting the server's self-signed certificate at `cert`.
async fn connect(
    server: SocketAddr,
    cert: &Path,
) -> Result<(
    magpie_signaling::client::Client,
    magpie_signaling::client::Events,
)> {
    let tls = magpie_signaling::tls::Trust::ca_file(cert)?.client_config()?;
    Ok(magpie_signaling::client::connect_tls(&server.to_string(), tls, Default::default()).await?)
}

/// Waits for the server to listen, then creates the two accounts.
async fn register(server: SocketAddr, cert: &Path) -> Result<()> {
    #[allow(clippy::disallowed_methods)] // reason: the real engine runs in real time
    let until = Instant::now() + STARTUP;
    loop {
        if TcpStream::connect_timeout(&server, Duration::from_millis(200)).is_ok() {
            break;
        }
        #[allow(clippy::disallowed_methods)] // reason: as above
        if Instant::now() > until {
            bail!("magpie-server did not listen on {server}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for user in ["alice", "bob", "lab"] {
        let (c, _events) = connect(server, cert).await?;
        c.register(user, PASSWORD)
            .await
            .with_context(|| format!("cannot register {user}"))?;
    }
    Ok(())
}

/// Waits until `user` is logged in, so the call does not find them offline.
async fn wait_online(server: SocketAddr, cert: &Path, user: &str) -> Result<()> {
    let (observer, _events) = connect(server, cert).await?;
    observer.login("lab", PASSWORD).await?;
    for _ in 0..(STARTUP.as_millis() / 100) {
        if observer.who().await?.iter().any(|u| u.as_str() == user) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{user} did not come online within {STARTUP:?}")
}
