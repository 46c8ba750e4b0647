//! `magpie demo`: a real call on this machine. A signaling server on loopback, and two
//! `magpie` processes with synthetic media (a tone and a test pattern that carry timing
//! markers) calling each other over UDP on loopback, each impairing what it sends with
//! `--sim`. At the end, both directions' summaries.
//!
//! Signaling is TLS, as for any user: the demo's server makes a self-signed certificate
//! in the demo's temporary directory and the clients trust it as their `--ca`, so the
//! demo pins nothing in the user's `known_servers`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use magpie_signaling::client::{self, Client, ClientError, Events};
use magpie_signaling::tls::{Identity, Trust, self_signed_paths};
use magpie_signaling::{Config, server};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::cli::{CallArgs, DEMO_DEFAULTS};
use crate::commands::Error;
use crate::config::FileConfig;

const PASSWORD: &str = "demo-password-not-secret";
/// The demo's defaults: long enough for a few hundred audio frames and a dozen probes.
const DEFAULT_DURATION: f64 = 10.0;
const DEFAULT_SIM: &str = "loss=5%";

/// Runs the demo.
pub async fn run(call: &CallArgs, file: &FileConfig) -> Result<(), Error> {
    let fail = |what: &str, e: &dyn std::fmt::Display| Error::Demo(format!("{what}: {e}"));
    let media = call.media.resolve(&file.media, DEMO_DEFAULTS);
    // Both clients use these settings: a sink that cannot open (a window on a machine with
    // no display) stops the demo here, before anything starts.
    let checked = CallArgs {
        bind: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        ..call.clone()
    };
    crate::commands::preflight(&media, &checked)?;
    let dir = tempfile::tempdir().map_err(|e| fail("cannot make a temporary directory", &e))?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| fail("cannot listen on loopback", &e))?;
    let server_addr = listener.local_addr().map_err(|e| fail("listener", &e))?;
    let db = dir.path().join("demo.db");
    let (cert, key) = self_signed_paths(&db);
    let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    let (identity, _) = Identity::self_signed(&cert, &key, &names)
        .map_err(|e| fail("cannot make the demo's TLS certificate", &e))?;
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server::run_tls(
        listener,
        identity.config,
        Config::new(&db),
        async {
            let _ = server_stopped.await;
        },
    ));
    let trust = Trust::ca_file(&cert).map_err(|e| fail("the demo's certificate", &e))?;
    let tls = trust
        .client_config()
        .map_err(|e| fail("the demo's certificate", &e))?;
    let server_name = server_addr.to_string();
    let connect = async || -> Result<(Client, Events), Error> {
        client::connect_tls(&server_name, tls.clone(), client::ClientConfig::default())
            .await
            .map_err(|e: ClientError| fail("cannot reach the demo server", &e))
    };

    for user in ["alice", "bob", "demo"] {
        let (c, _events) = connect().await?;
        c.register(user, PASSWORD)
            .await
            .map_err(|e| fail("register", &e))?;
    }
    let (observer, _events) = connect().await?;
    observer
        .login("demo", PASSWORD)
        .await
        .map_err(|e| fail("login", &e))?;

    let duration = call.duration.unwrap_or(DEFAULT_DURATION);
    let sim = call.sim.clone().unwrap_or_else(|| DEFAULT_SIM.to_owned());
    let mut common: Vec<String> = vec![
        "--server".into(),
        server_addr.to_string(),
        "--ca".into(),
        cert.display().to_string(),
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--sim".into(),
        sim.clone(),
        "--audio-in".into(),
        media.audio_in.clone(),
        "--audio-out".into(),
        media.audio_out.clone(),
        "--video-in".into(),
        media.video_in.clone(),
        "--video-out".into(),
        media.video_out.clone(),
        "--width".into(),
        media.width.to_string(),
        "--height".into(),
        media.height.to_string(),
        "--fps".into(),
        media.fps.to_string(),
        "--video-bitrate-kbps".into(),
        media.video_bitrate_kbps.to_string(),
        "--audio-bitrate-kbps".into(),
        media.audio_bitrate_kbps.to_string(),
        "--opus-frame-ms".into(),
        media.opus_frame_ms.to_string(),
        "--delay-bwe".into(),
        if media.delay_bwe { "on" } else { "off" }.into(),
        "--no-summary".into(),
    ];
    for (on, flag) in [
        (media.stereo, "--stereo"),
        (!media.nack, "--no-nack"),
        (!media.fec, "--no-fec"),
        (media.dtx, "--dtx"),
        (!media.red, "--no-red"),
    ] {
        if on {
            common.push(flag.into());
        }
    }

    eprintln!(
        "demo: server on {server_addr}; alice calls bob for {duration} s, each side sending \
         through --sim {sim}"
    );
    let bob_json = dir.path().join("bob.json");
    let alice_json = dir.path().join("alice.json");
    let mut bob = spawn(
        dir.path(),
        "bob",
        &["answer", "--auto-answer", "--once", "--quiet"],
        &common,
        &bob_json,
        &[],
    )?;
    // Wait until bob is logged in, so the call does not find him offline.
    let mut waited = Duration::ZERO;
    loop {
        let online = observer.who().await.map_err(|e| fail("who", &e))?;
        if online.iter().any(|u| u.as_str() == "bob") {
            break;
        }
        if waited > Duration::from_secs(20) || bob.try_wait().ok().flatten().is_some() {
            return Err(Error::Demo(format!(
                "bob did not come online; his log:\n{}",
                log(dir.path(), "bob")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    let quiet: &[&str] = if call.quiet { &["--quiet"] } else { &[] };
    let duration_arg = duration.to_string();
    let mut alice_args = vec!["call", "bob", "--duration", duration_arg.as_str()];
    alice_args.extend_from_slice(quiet);
    let mut alice = spawn(
        dir.path(),
        "alice",
        &alice_args,
        &common,
        &alice_json,
        &["stderr"],
    )?;

    let limit = Duration::from_secs_f64(duration) + Duration::from_secs(30);
    let alice_ok = wait(&mut alice, limit).await;
    let bob_ok = wait(&mut bob, Duration::from_secs(20)).await;
    drop(observer);
    let _ = stop_server.send(());
    let _ = server.await;
    if !alice_ok || !bob_ok {
        return Err(Error::Demo(format!(
            "a client failed.\n--- alice ---\n{}\n--- bob ---\n{}",
            log(dir.path(), "alice"),
            log(dir.path(), "bob")
        )));
    }

    let alice_report = read_json(&alice_json)?;
    let bob_report = read_json(&bob_json)?;
    eprintln!();
    for (who, peer, report) in [
        ("bob", "alice", &bob_report),
        ("alice", "bob", &alice_report),
    ] {
        eprintln!("{peer} -> {who}, as measured by {who}:");
        eprintln!("{}", text(report)?);
        eprintln!();
    }
    if let Some(path) = &call.stats_json {
        let both = serde_json::json!({ "alice": alice_report, "bob": bob_report });
        let json = serde_json::to_vec_pretty(&both).expect("JSON values serialize");
        std::fs::write(path, json).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn spawn(
    dir: &Path,
    user: &str,
    command: &[&str],
    common: &[String],
    stats: &Path,
    inherit: &[&str],
) -> Result<Child, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::Demo(format!("own executable: {e}")))?;
    let log = std::fs::File::create(dir.join(format!("{user}.log")))
        .map_err(|e| Error::Demo(format!("log file: {e}")))?;
    let stderr = if inherit.contains(&"stderr") {
        Stdio::inherit()
    } else {
        Stdio::from(log)
    };
    Command::new(exe)
        .args(["--user", user])
        .args(command)
        .args(common)
        .arg("--stats-json")
        .arg(stats)
        .env("MAGPIE_PASSWORD", PASSWORD)
        .env_remove("MAGPIE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Demo(format!("cannot start {user}'s client: {e}")))
}

async fn wait(child: &mut Child, limit: Duration) -> bool {
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => status.success(),
        _ => {
            let _ = child.kill().await;
            false
        }
    }
}

fn log(dir: &Path, user: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{user}.log")))
        .unwrap_or_else(|_| "(its messages went to this terminal)".into())
}

fn read_json(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read(path)
        .map_err(|e| Error::Demo(format!("no summary at {}: {e}", path.display())))?;
    serde_json::from_slice(&text).map_err(|e| Error::Demo(format!("bad summary: {e}")))
}

fn text(summary: &Value) -> Result<String, Error> {
    let report: magpie_media::call::Report = serde_json::from_value(summary["report"].clone())
        .map_err(|e| Error::Demo(format!("bad summary: {e}")))?;
    Ok(format!(
        "  ended: {}\n{report}",
        summary["ended_because"].as_str().unwrap_or("?")
    ))
}
