//! Interop with coturn's client tool: `turnutils_uclient` allocates on our relay with
//! TURN REST credentials (`-W secret`), and two of its clients relay data to each
//! other through us (`-y`), over channels and over Send/Data indications (`-s`). On
//! loopback only, each run bounded in time. `scripts/test-deps` installs coturn; when
//! the tool is missing the tests say so and pass.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use magpie_signaling::relay::{self, Refusal, ServeConfig, Stats, auth::Secret};
use tokio::net::UdpSocket;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Stats>,
}

async fn start(secret: &str) -> Running {
    start_with(secret, |config| config).await
}

async fn start_with(
    secret: &str,
    configure: impl FnOnce(relay::Config) -> relay::Config,
) -> Running {
    // Shareable, so the relay forwards on two threads as magpie-server does.
    let socket = UdpSocket::from_std(relay::bind("127.0.0.1:0".parse().unwrap()).unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let config = configure(
        relay::Config::new(Secret::new(secret.as_bytes()))
            .set_allow_loopback_peers(true)
            .set_nonce_key([3; 32]),
    );
    // A port range of its own per test, so parallel tests do not collide.
    let base = 41000 + (addr.port() % 200) * 20;
    let serve = ServeConfig {
        ip: addr.ip(),
        ports: base..=base + 19,
        threads: 2,
        rcvbuf: relay::TURN_RCVBUF,
    };
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(relay::serve(socket, config, serve, stopped));
    Running { addr, stop, task }
}

impl Running {
    async fn stop(self) -> Stats {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

fn uclient_missing() -> bool {
    let missing = std::process::Command::new("turnutils_uclient")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err();
    if missing {
        eprintln!("turnutils_uclient not installed (scripts/test-deps installs coturn); skipped");
    }
    missing
}

/// Runs turnutils_uclient against `relay`; returns (exit ok, output).
async fn uclient(relay: SocketAddr, secret: &str, extra: &[&str]) -> (bool, String) {
    let port = relay.port().to_string();
    let mut args = vec!["-y", "-c", "-u", "alice", "-W", secret, "-p", &port];
    args.extend_from_slice(extra);
    args.push("127.0.0.1");
    let child = Command::new("turnutils_uclient")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("turnutils_uclient finishes within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// The last "tot_send_msgs=N, tot_recv_msgs=M" line's N and M.
fn totals(output: &str) -> (u64, u64) {
    let line = output
        .lines()
        .rev()
        .find(|l| l.contains("tot_send_msgs=") && l.contains("tot_recv_msgs="))
        .unwrap_or_else(|| panic!("no totals in:\n{output}"));
    let number = |key: &str| -> u64 {
        let rest = &line[line.find(key).unwrap() + key.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    };
    (number("tot_send_msgs="), number("tot_recv_msgs="))
}

async fn relays_between_two_uclients(extra: &[&str]) {
    if uclient_missing() {
        return;
    }
    let relay = start("s3cret").await;
    let mut args = vec!["-n", "20", "-l", "200", "-m", "2", "-z", "5"];
    args.extend_from_slice(extra);
    let (ok, output) = uclient(relay.addr, "s3cret", &args).await;
    let stats = relay.stop().await;
    assert!(ok, "turnutils_uclient failed:\n{output}");
    // Two clients each send 20 messages to the other through their allocations.
    assert_eq!(totals(&output), (40, 40), "{output}");
    assert!(
        stats.to_peers.0 >= 40 && stats.to_clients.0 >= 40,
        "{stats:?}"
    );
    // Only challenges for credentials (each client's first request, and any it sends
    // before it has a nonce): nothing else is refused.
    let challenged = stats.refused(Refusal::Unauthenticated);
    assert!((2..=4).contains(&challenged), "{stats:?}");
    assert_eq!(stats.total_refused(), challenged, "{stats:?}");
}

#[tokio::test]
async fn turnutils_uclient_relays_over_channels_with_rest_credentials() {
    relays_between_two_uclients(&[]).await;
}

#[tokio::test]
async fn turnutils_uclient_relays_over_send_and_data_indications() {
    relays_between_two_uclients(&["-s"]).await;
}

/// Sixteen clients (`-m 8`: eight sessions, each a pair): the kernel spreads them over the relay's two TURN sockets by address
/// (SO_REUSEPORT; all on one socket has odds of 1 in 32,768), so both forwarding threads
/// relay, and every datagram is relayed and counted in the one core.
#[tokio::test]
async fn turnutils_uclient_sessions_on_both_threads_are_all_relayed() {
    if uclient_missing() {
        return;
    }
    // All sixteen are one user: a quota of one allocation each.
    let relay = start_with("s3cret", |c| c.set_max_allocations_per_user(16)).await;
    let args = ["-n", "50", "-l", "200", "-m", "8", "-z", "5"];
    let (ok, output) = uclient(relay.addr, "s3cret", &args).await;
    let stats = relay.stop().await;
    assert!(ok, "turnutils_uclient failed:\n{output}");
    assert_eq!(totals(&output), (400, 400), "{output}");
    assert!(
        stats.to_peers.0 >= 400 && stats.to_clients.0 >= 400,
        "{stats:?}"
    );
    assert_eq!(
        stats.total_refused(),
        stats.refused(Refusal::Unauthenticated),
        "{stats:?}"
    );
}

#[tokio::test]
async fn turnutils_uclient_with_the_wrong_secret_cannot_allocate() {
    if uclient_missing() {
        return;
    }
    let relay = start("s3cret").await;
    let (ok, output) = uclient(relay.addr, "not-the-secret", &["-n", "1"]).await;
    let stats = relay.stop().await;
    assert!(!ok, "allocated with a wrong secret:\n{output}");
    assert!(output.contains("Cannot complete Allocation"), "{output}");
    assert!(stats.refused(Refusal::WrongCredentials) >= 1, "{stats:?}");
    assert_eq!(stats.to_peers.0 + stats.to_clients.0, 0);
}
