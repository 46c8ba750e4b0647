//! `magpie-server`: the Magpie signaling server. Thin: flags, logging, sockets, then
//! [`magpie_signaling::server::run`].

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use magpie_signaling::tls::{Fingerprint, Identity, self_signed_paths};
use magpie_signaling::{Config, server, stun_server};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// Magpie signaling server: accounts, presence, call set-up and chat over
/// newline-delimited JSON in TLS on TCP, plus STUN address discovery on UDP.
///
/// Without --tls-cert/--tls-key the server makes a self-signed certificate once, keeps
/// it beside the database (DB.cert.pem, DB.key.pem) and prints its SHA-256 fingerprint;
/// clients pin it on first use.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TCP address to listen on.
    #[arg(long, env = "MAGPIE_LISTEN", default_value = "0.0.0.0:7400")]
    listen: SocketAddr,
    /// SQLite database file (created if missing).
    #[arg(long, env = "MAGPIE_DB", default_value = "magpie.db")]
    db: PathBuf,
    /// TLS certificate chain, PEM, leaf first [default: a self-signed one kept at DB.cert.pem].
    #[arg(
        long,
        env = "MAGPIE_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM.
    #[arg(
        long,
        env = "MAGPIE_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Serve plain TCP, without TLS: for `nc` and local tests only, since passwords and
    /// call descriptions then cross the network in clear.
    #[arg(long, env = "MAGPIE_PLAIN", conflicts_with_all = ["tls_cert", "tls_key"])]
    plain: bool,
    /// UDP address for STUN binding requests [default: the --listen address].
    #[arg(long, env = "MAGPIE_STUN_LISTEN")]
    stun_listen: Option<SocketAddr>,
    /// Do not answer STUN on UDP.
    #[arg(long, env = "MAGPIE_NO_STUN")]
    no_stun: bool,
    /// Heartbeat interval announced to clients; silence for 3 intervals drops a connection.
    #[arg(long, env = "MAGPIE_HEARTBEAT_SECS", default_value_t = 15)]
    heartbeat_secs: u64,
    /// How long an unanswered call rings before it is `missed`.
    #[arg(long, env = "MAGPIE_RING_TIMEOUT_SECS", default_value_t = 30)]
    ring_timeout_secs: u64,
    /// How long a new connection may take to log in.
    #[arg(long, env = "MAGPIE_LOGIN_TIMEOUT_SECS", default_value_t = 10)]
    login_timeout_secs: u64,
    /// Most simultaneous connections.
    #[arg(long, env = "MAGPIE_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Most simultaneous connections from one IP address.
    #[arg(long, env = "MAGPIE_MAX_PER_ADDRESS", default_value_t = 64)]
    max_per_address: usize,
    /// Sustained requests per second per connection.
    #[arg(long, env = "MAGPIE_RATE", default_value_t = 10)]
    rate: u32,
    /// Requests a connection may send in a burst above --rate.
    #[arg(long, env = "MAGPIE_BURST", default_value_t = 20)]
    burst: u32,
    /// Largest `offer`/`answer` in bytes (compact JSON).
    #[arg(long, env = "MAGPIE_MAX_PAYLOAD", default_value_t = 16 * 1024)]
    max_payload: usize,
    /// Longest chat message in bytes.
    #[arg(long, env = "MAGPIE_MAX_TEXT", default_value_t = 4 * 1024)]
    max_text: usize,
    /// Most unacknowledged messages stored for one recipient.
    #[arg(long, env = "MAGPIE_MAX_PENDING_MESSAGES", default_value_t = 10_000)]
    max_pending_messages: usize,
    /// Show user names and IP addresses in logs (redacted by default).
    #[arg(long, env = "MAGPIE_LOG_PII")]
    log_pii: bool,
    /// Longest accepted line in bytes.
    #[arg(long, env = "MAGPIE_MAX_LINE", default_value_t = magpie_signaling::codec::DEFAULT_MAX_LINE)]
    max_line: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    magpie_signaling::pii::set_log_pii(args.log_pii);
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("magpie-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    use anyhow::Context as _;

    // Before listening, so the certificate exists once a client can connect.
    let identity = identity(&args)?;
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on TCP {} (is another server running there? choose another with --listen)",
            args.listen
        )
    })?;
    let local = listener.local_addr()?;
    let stun = if args.no_stun {
        None
    } else {
        let addr = args.stun_listen.unwrap_or(local);
        let socket = UdpSocket::bind(addr).await.with_context(|| {
            format!("cannot listen on UDP {addr} for STUN (use --stun-listen or --no-stun)")
        })?;
        Some(socket)
    };
    let stun_addr = stun.as_ref().map(UdpSocket::local_addr).transpose()?;
    let config = Config::new(&args.db)
        .set_heartbeat(Duration::from_secs(args.heartbeat_secs.max(1)))
        .set_ring_timeout(Duration::from_secs(args.ring_timeout_secs))
        .set_login_timeout(Duration::from_secs(args.login_timeout_secs))
        .set_max_connections(args.max_connections)
        .set_max_per_address(args.max_per_address)
        .set_rate(args.rate, args.burst)
        .set_max_line(args.max_line)
        .set_max_payload(args.max_payload)
        .set_max_text(args.max_text)
        .set_max_pending_messages(args.max_pending_messages);
    info!(?config, "starting");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stun_task = stun.map(|socket| {
        let mut stop = stop_rx.clone();
        tokio::spawn(stun_server::serve(socket, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }))
    });
    ready(local, stun_addr, identity.as_ref().map(|i| i.fingerprint))?;
    let result = match identity {
        Some(identity) => {
            server::run_tls(listener, identity.config, config, shutdown_signal()).await
        }
        None => server::run(listener, config, shutdown_signal()).await,
    };
    let _ = stop_tx.send(true);
    if let Some(task) = stun_task {
        let _ = task.await;
    }
    result.context("server failed")
}

/// The TLS identity: the operator's, or the self-signed one beside the database (made
/// now if there is none); `None` with `--plain`.
fn identity(args: &Args) -> anyhow::Result<Option<Identity>> {
    use anyhow::Context as _;

    if args.plain {
        warn!("serving plain TCP (--plain): passwords cross the network in clear");
        return Ok(None);
    }
    let identity = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let identity = Identity::load(cert, key).context("cannot use --tls-cert/--tls-key")?;
        info!(cert = %cert.display(), fingerprint = %identity.fingerprint, "TLS certificate");
        identity
    } else {
        let (cert, key) = self_signed_paths(&args.db);
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
        let host = args.listen.ip();
        if !host.is_unspecified() && !names.contains(&host.to_string()) {
            names.push(host.to_string());
        }
        let (identity, made) = Identity::self_signed(&cert, &key, &names)
            .context("cannot set up the self-signed TLS certificate")?;
        let how = if made { "made" } else { "reused" };
        info!(
            cert = %cert.display(),
            fingerprint = %identity.fingerprint,
            "TLS certificate: {how} a self-signed one; clients pin this fingerprint"
        );
        identity
    };
    Ok(Some(identity))
}

/// The ready signal: once every socket is bound, one JSON line on stdout with the
/// addresses actually bound (a port of 0 is resolved here) and the SHA-256 fingerprint
/// of the TLS certificate (`null` with `--plain`), for a supervisor, a script or a test
/// to wait for. Logs go to stderr, so this is the only line on stdout.
fn ready(
    listen: SocketAddr,
    stun: Option<SocketAddr>,
    fingerprint: Option<Fingerprint>,
) -> anyhow::Result<()> {
    let fingerprint = fingerprint.map(|f| f.to_string());
    let line = serde_json::json!({
        "ready": { "listen": listen, "stun": stun, "tls_fingerprint": fingerprint }
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                    _ = term.recv() => info!("SIGTERM received"),
                }
            }
            Err(err) => {
                error!(%err, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        info!("Ctrl-C received");
    }
}
