//! The real-time engine: `magpie-server` and two `magpie` processes on loopback, each
//! client impairing what it sends with `--sim` (so each direction is impaired once, as in
//! the virtual engine), with a tone and a test pattern in and nothing out. Both clients'
//! `--stats-json` summaries are the result, with what each client's own simulator did to
//! what it sent (its counters, and on a capacity-limited link its bottleneck's figures).
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
use magpie_media::netsim::{BottleneckStats, NetSimStats};
use serde::Deserialize;
use tracing::{debug, info};

use super::{Condition, LabMedia, LinkStats, Measured};

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
    /// What the client's `--sim` did to what it sent.
    #[serde(default)]
    sim: Option<NetSimStats>,
    /// Its outgoing bottleneck, on a link with a rate.
    #[serde(default)]
    bottleneck: Option<BottleneckStats>,
}

impl ClientSummary {
    /// The links of a call from the two clients' simulators: A's carried A → B. `None`
    /// when a client ran without a simulator.
    fn link(a: &Self, b: &Self) -> Option<LinkStats> {
        let (a_sim, b_sim) = (a.sim?, b.sim?);
        Some(LinkStats {
            a_to_b_sent: a_sim.sent,
            a_to_b_lost: a_sim.lost,
            b_to_a_sent: b_sim.sent,
            b_to_a_lost: b_sim.lost,
            a_to_b_bottleneck: a.bottleneck,
            b_to_a_bottleneck: b.bottleneck,
        })
    }
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
    let (alice, bob) = (read("alice")?, read("bob")?);
    Ok(Measured {
        condition: *condition,
        link: ClientSummary::link(&alice, &bob),
        a: alice.report,
        b: bob.report,
        audio_latency_ms: Vec::new(),
        video_latency_ms: Vec::new(),
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

#[cfg(test)]
mod tests {
    use magpie_media::Stats;
    use magpie_media::call::AudioReceiverStats;
    use serde_json::json;

    use super::super::{Matrix, Summary};
    use super::*;

    /// A client's summary as `magpie --stats-json` writes it, with the fields given.
    fn summary(extra: serde_json::Value) -> ClientSummary {
        let report = Report::new(
            Duration::from_secs(10),
            &Stats::default(),
            (AudioReceiverStats::default(), &[]),
            None,
        );
        let mut json = json!({
            "user": "alice",
            "ended_because": "the set duration elapsed",
            "report": report,
            "safety_code": "123 456",
        });
        json.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn each_clients_simulator_becomes_its_direction_of_the_link() {
        let bottleneck = |utilization: f64| {
            json!({
                "utilization_percent": utilization,
                "queue_delay_ms": [12.0, 48.0],
                "queue_delay_max_ms": 180.0,
                "self_inflicted_loss_percent": 2.5,
                "self_inflicted_loss_after_warm_up_percent": 0.5,
                "recovery_ms": 900.0,
            })
        };
        let sim = |sent: u64| json!({"sent": sent, "lost": 7, "queue_drops": 3, "duplicated": 0, "delivered": 90});
        let alice = summary(json!({"sim": sim(100), "bottleneck": bottleneck(80.0)}));
        let bob = summary(json!({"sim": sim(200), "bottleneck": bottleneck(60.0)}));
        let link = ClientSummary::link(&alice, &bob).unwrap();
        assert_eq!((link.a_to_b_sent, link.a_to_b_lost), (100, 7));
        assert_eq!((link.b_to_a_sent, link.b_to_a_lost), (200, 7));
        let a = link.a_to_b_bottleneck.unwrap();
        assert_eq!(a.utilization_percent, 80.0);
        assert_eq!(a.queue_delay_ms, [12.0, 48.0]);
        assert_eq!(a.recovery_ms, Some(900.0));
        assert_eq!(link.b_to_a_bottleneck.unwrap().utilization_percent, 60.0);
        // The row folds the two directions as the virtual engine's does.
        let measured = Measured {
            condition: Matrix::capacity_conditions()[0],
            a: alice.report,
            b: bob.report,
            audio_latency_ms: Vec::new(),
            video_latency_ms: Vec::new(),
            link: Some(link),
        };
        let row = Summary::of(&measured).bottleneck.unwrap();
        assert_eq!(row.utilization_percent, 70.0);
        assert_eq!(row.queue_delay_max_ms, 180.0);
    }

    #[test]
    fn a_link_without_a_rate_has_counts_and_no_bottleneck_and_no_sim_no_link() {
        let sim = json!({"sent": 5, "lost": 0, "queue_drops": 0, "duplicated": 0, "delivered": 5});
        let with = summary(json!({ "sim": sim }));
        let link = ClientSummary::link(&with, &with).unwrap();
        assert_eq!(link.a_to_b_sent, 5);
        assert_eq!(link.a_to_b_bottleneck, None);
        // A summary from a client without `--sim` (or from before it reported one).
        let without = summary(json!({}));
        assert!(ClientSummary::link(&with, &without).is_none());
    }
}
