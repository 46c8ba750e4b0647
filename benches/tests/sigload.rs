//! The signaling load path at small N against a real server on loopback: every client
//! logs in, stays connected through a hold longer than the heartbeat timeout, and every
//! call of the burst is set up and hung up.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use magpie_benches::sigload::{self, LoadConfig, Phase, drive};
use magpie_signaling::tls::{Identity, Trust};
use magpie_signaling::{Config, server};
use tokio::net::TcpListener;

/// The server's limits for a fleet on 127.0.0.1, with a 1 s heartbeat.
fn server_config(db: &Path) -> Config {
    Config::new(db)
        .set_max_per_address(100)
        .set_rate(1000, 1000)
        // Every client logs in from 127.0.0.1.
        .set_login_rate(1000, 1000)
        .set_heartbeat(Duration::from_secs(1))
        .set_login_timeout(Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_keep_heartbeats_and_set_up_ten_calls() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("load.db");
    let config = LoadConfig::default()
        .set_clients(50)
        .set_calls(10)
        // The server drops a client after three silent 1 s intervals: the hold outlasts that.
        .set_hold(Duration::from_millis(3500))
        .set_step_timeout(Duration::from_secs(30));
    let warmup = 4;
    assert_eq!(sigload::preregister(&db, &config, 0..54).unwrap(), 54);
    assert_eq!(
        sigload::preregister(&db, &config, 0..54).unwrap(),
        0,
        "idempotent"
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_config = server_config(&db);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::run(listener, server_config, async move {
        let _ = stopped.await;
    }));

    let mut phases = Vec::new();
    let report = drive(addr, &config, warmup, async |phase: &Phase| {
        phases.push(phase.clone());
        Ok(())
    })
    .await
    .unwrap();

    assert_eq!(phases.len(), 2);
    assert_eq!(phases[0], Phase::Warm);
    assert!(matches!(&phases[1], Phase::Connected { login } if login.logged_in == 50));
    assert_eq!(report.login.logged_in, 50, "{:?}", report.login.errors);
    assert_eq!(report.login.failed, 0);
    assert_eq!(report.login.latency.n, 50);
    assert_eq!(report.connected_after_hold, 50, "heartbeats keep everyone");
    assert_eq!(report.calls.attempted, 10);
    assert_eq!(report.calls.completed, 10, "{:?}", report.calls.errors);
    assert_eq!(report.calls.setup.n, 10);
    assert!(report.calls.ring.p50_ms <= report.calls.setup.p50_ms);
    assert_eq!(report.connected_at_end, 50);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_talks_tls_to_a_tls_server_pinning_its_certificate() {
    // The server speaks TLS only: every login and call below went through a handshake.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("load.db");
    let (identity, _) = Identity::self_signed(
        &dir.path().join("cert.pem"),
        &dir.path().join("key.pem"),
        &["localhost".into()],
    )
    .unwrap();
    let tls = Trust::Fingerprint(identity.fingerprint)
        .client_config()
        .unwrap();
    let config = LoadConfig::default()
        .set_clients(10)
        .set_calls(5)
        .set_hold(Duration::ZERO)
        .set_step_timeout(Duration::from_secs(30))
        .set_tls(Some(tls));
    sigload::preregister(&db, &config, 0..10).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_config = server_config(&db);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::run_tls(
        listener,
        identity.config,
        server_config,
        async move {
            let _ = stopped.await;
        },
    ));

    let report = drive(addr, &config, 0, async |_: &Phase| Ok(()))
        .await
        .unwrap();
    assert_eq!(report.login.logged_in, 10, "{:?}", report.login.errors);
    assert_eq!(report.calls.completed, 5, "{:?}", report.calls.errors);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn sigload_binary_runs_server_and_client_processes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sigload"))
        .args([
            "--clients",
            "20",
            "--calls",
            "5",
            "--hold",
            "0.5",
            "--warmup",
            "2",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("invite -> accepted"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["transport"], "tls", "TLS is the default");
    assert_eq!(report["run"]["login"]["logged_in"], 20);
    assert_eq!(report["run"]["calls"]["completed"], 5);
    assert_eq!(report["run"]["connected_at_end"], 20);
    let memory = &report["server"];
    assert!(memory["connected_bytes"].as_u64().unwrap() > 0);
    assert!(
        memory["glibc_tunables"]
            .as_str()
            .unwrap()
            .contains("mmap_threshold"),
        "the server process ran with the fixed mmap threshold"
    );
}
