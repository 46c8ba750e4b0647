//! `magpie-server`: the Magpie signaling server. Thin: flags, logging, sockets, then
//! [`magpie_signaling::server::run`].

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use magpie_signaling::tls::{Fingerprint, Identity, self_signed_paths};
use magpie_signaling::{Config, RelayGrant, relay, server, stun_server};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// Magpie signaling server: accounts, presence, call set-up and chat over
/// newline-delimited JSON in TLS on TCP, plus STUN address discovery on UDP, and a TURN
/// relay (RFC 8656, UDP) when --relay-listen is given (off otherwise).
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
    /// Password hashing workers (argon2id at once; each keeps 19 MiB) [default: one per
    /// core, at most 4].
    #[arg(long, env = "MAGPIE_HASH_WORKERS")]
    hash_workers: Option<usize>,
    /// Hashing jobs that may wait for a worker before `register`/`login` get `server-busy`.
    #[arg(long, env = "MAGPIE_HASH_QUEUE", default_value_t = 16)]
    hash_queue: usize,
    /// `login` requests per address: burst, then this many a minute.
    #[arg(long, env = "MAGPIE_LOGIN_BURST", default_value_t = 30)]
    login_burst: u32,
    /// `login` requests per address per minute after the burst.
    #[arg(long, env = "MAGPIE_LOGIN_PER_MINUTE", default_value_t = 30)]
    login_per_minute: u32,
    /// `register` requests per address at once.
    #[arg(long, env = "MAGPIE_REGISTER_BURST", default_value_t = 10)]
    register_burst: u32,
    /// `register` requests per address per minute after the burst.
    #[arg(long, env = "MAGPIE_REGISTER_PER_MINUTE", default_value_t = 2)]
    register_per_minute: u32,
    /// Wrong passwords per address (across all names) at once.
    #[arg(long, env = "MAGPIE_ADDRESS_FAILURES_BURST", default_value_t = 30)]
    address_failures_burst: u32,
    /// Wrong passwords per address per minute after the burst.
    #[arg(long, env = "MAGPIE_ADDRESS_FAILURES_PER_MINUTE", default_value_t = 10)]
    address_failures_per_minute: u32,
    /// Most unacknowledged messages stored from one sender to one recipient.
    #[arg(long, env = "MAGPIE_MAX_PENDING_PER_SENDER", default_value_t = 500)]
    max_pending_per_sender: usize,
    /// STUN answers per second to one source address.
    #[arg(long, env = "MAGPIE_STUN_PER_SOURCE", default_value_t = 5)]
    stun_per_source: u32,
    /// STUN answers per second in total.
    #[arg(long, env = "MAGPIE_STUN_OVERALL", default_value_t = 2000)]
    stun_overall: u32,
    /// Show user names and IP addresses in logs [default: a stable pseudonym for each,
    /// keyed by the file <db>.log-key, mode 0600].
    #[arg(long, env = "MAGPIE_LOG_PII")]
    log_pii: bool,
    /// Log lines as text or as one JSON object a line.
    #[arg(long, env = "MAGPIE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve Prometheus metrics over plain HTTP at ADDR/metrics (off unless given; keep it
    /// on loopback or a private network).
    #[arg(long, env = "MAGPIE_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// UDP address for the TURN relay. The relay is off unless this is given.
    #[arg(long, env = "MAGPIE_RELAY_LISTEN")]
    relay_listen: Option<SocketAddr>,
    /// UDP ports for relayed sockets (one per allocation); open them in the firewall.
    #[arg(long, env = "MAGPIE_RELAY_PORTS", default_value = "49152-65535", value_parser = parse_ports)]
    relay_ports: RangeInclusive<u16>,
    /// Shared secret for TURN REST credentials [default: read from, or generated into,
    /// the file <db>.relay-secret, mode 0600].
    #[arg(long, env = "MAGPIE_RELAY_SECRET", hide_env_values = true)]
    relay_secret: Option<String>,
    /// The relay's public IP, advertised in XOR-RELAYED-ADDRESS, for a server behind port
    /// forwarding (forward --relay-listen's port and --relay-ports unchanged). Needed when
    /// --relay-listen is a wildcard address.
    #[arg(long, env = "MAGPIE_PUBLIC_ADDR")]
    public_addr: Option<IpAddr>,
    /// TURN realm (part of the credential key).
    #[arg(long, env = "MAGPIE_RELAY_REALM", default_value = "magpie")]
    relay_realm: String,
    /// Relay to loopback peers too (tests on one machine; unsafe on a server).
    #[arg(long, env = "MAGPIE_RELAY_ALLOW_LOOPBACK")]
    relay_allow_loopback: bool,
    /// Relay forwarding threads, each with its own socket on the relay port [default: one
    /// per CPU core].
    #[arg(
        long,
        env = "MAGPIE_RELAY_THREADS",
        default_value_t = 0,
        hide_default_value = true
    )]
    relay_threads: usize,
    /// Receive buffer asked for on each relay socket clients send to, bytes (the kernel
    /// caps it at net.core.rmem_max; 0 keeps the kernel's default).
    #[arg(long, env = "MAGPIE_RELAY_RCVBUF", default_value_t = relay::TURN_RCVBUF)]
    relay_rcvbuf: usize,
    /// Most relay allocations one user may hold.
    #[arg(long, env = "MAGPIE_RELAY_USER_ALLOCATIONS", default_value_t = 8)]
    relay_user_allocations: usize,
    /// Bytes per second one user may relay (both directions together).
    #[arg(long, env = "MAGPIE_RELAY_USER_RATE", default_value_t = 1_000_000)]
    relay_user_rate: u64,
    /// Largest file one user may leave on the server for another who is offline, bytes
    /// (kept beside the database in DB.files/).
    #[arg(long, env = "MAGPIE_MAX_FILE_BYTES", default_value_t = 25 << 20)]
    max_file_bytes: u64,
    /// Bytes of files stored for one recipient, from everyone.
    #[arg(long, env = "MAGPIE_FILE_QUOTA_RECIPIENT", default_value_t = 100 << 20)]
    file_quota_recipient: u64,
    /// Files stored for one recipient, from everyone.
    #[arg(long, env = "MAGPIE_FILE_QUOTA_FILES", default_value_t = 1000)]
    file_quota_files: u64,
    /// Bytes of files stored for one recipient from one sender.
    #[arg(long, env = "MAGPIE_FILE_QUOTA_SENDER", default_value_t = 50 << 20)]
    file_quota_sender: u64,
    /// Bytes of files stored on the server in all.
    #[arg(long, env = "MAGPIE_FILE_STORE_BYTES", default_value_t = 10 << 30)]
    file_store_bytes: u64,
    /// How long a stored file waits for its recipient before it is deleted, seconds.
    #[arg(long, env = "MAGPIE_FILE_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    file_ttl_secs: u64,
    /// `file-chunk`/`file-get` requests per second per connection (32 KiB each).
    #[arg(long, env = "MAGPIE_FILE_CHUNK_RATE", default_value_t = 256)]
    file_chunk_rate: u32,
    /// Longest accepted line in bytes.
    #[arg(long, env = "MAGPIE_MAX_LINE", default_value_t = magpie_signaling::codec::DEFAULT_MAX_LINE)]
    max_line: usize,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// For people.
    Text,
    /// One JSON object a line, for a log pipeline.
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
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

    if !args.log_pii {
        let path = args.db.with_extension("log-key");
        let key = relay::auth::load_or_create_secret(&path)
            .with_context(|| format!("cannot read or create {}", path.display()))?;
        magpie_signaling::pii::set_log_key(key.as_bytes());
    }
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
    // The hub writes who is in a call with whom; the relay reads it for its permissions.
    let call_peers = relay::CallPeers::new();
    let relay = match args.relay_listen {
        None => None,
        Some(addr) => Some(relay_setup(&args, addr, call_peers.clone()).await?),
    };
    let relay_addr = relay
        .as_ref()
        .map(|(socket, ..)| socket.local_addr())
        .transpose()?;
    // `relay` requests hand out credentials for the address clients reach the relay at.
    let relay_grant = relay
        .as_ref()
        .zip(relay_addr)
        .map(|((_, config, _), addr)| {
            let public = SocketAddr::new(args.public_addr.unwrap_or(addr.ip()), addr.port());
            RelayGrant::new(public, config.secret().clone())
        });
    let config = Config::new(&args.db)
        .set_call_peers(call_peers)
        .set_heartbeat(Duration::from_secs(args.heartbeat_secs.max(1)))
        .set_ring_timeout(Duration::from_secs(args.ring_timeout_secs))
        .set_login_timeout(Duration::from_secs(args.login_timeout_secs))
        .set_max_connections(args.max_connections)
        .set_max_per_address(args.max_per_address)
        .set_rate(args.rate, args.burst)
        .set_max_line(args.max_line)
        .set_relay(relay_grant)
        .set_max_payload(args.max_payload)
        .set_max_text(args.max_text)
        .set_max_pending_messages(args.max_pending_messages)
        .set_max_pending_per_sender(args.max_pending_per_sender)
        .set_login_rate(args.login_burst, args.login_per_minute)
        .set_register_rate(args.register_burst, args.register_per_minute)
        .set_address_failures(
            args.address_failures_burst,
            args.address_failures_per_minute,
        )
        .set_file_limits(magpie_signaling::files::Limits {
            max_file: args.max_file_bytes,
            per_recipient: args.file_quota_recipient,
            per_recipient_files: args.file_quota_files,
            per_sender: args.file_quota_sender,
            total: args.file_store_bytes,
            ttl: Duration::from_secs(args.file_ttl_secs.max(1)),
        })
        .set_file_chunk_rate(args.file_chunk_rate);
    let config = match args.hash_workers {
        Some(workers) => config.set_hashing(workers, args.hash_queue),
        None => {
            let workers = config.hash_workers();
            config.set_hashing(workers, args.hash_queue)
        }
    };
    info!(
        listen = %local,
        db = %args.db.display(),
        heartbeat_secs = args.heartbeat_secs,
        ring_timeout_secs = args.ring_timeout_secs,
        max_connections = args.max_connections,
        "starting"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stun_counters = std::sync::Arc::new(stun_server::StunCounters::default());
    let metrics_addr = match args.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on TCP {addr} for metrics (--metrics-listen)")
            })?;
            let bound = listener.local_addr()?;
            let counters = stun.is_some().then(|| stun_counters.clone());
            let server = Some(config.counters());
            tokio::spawn(magpie_signaling::metrics::serve(listener, counters, server));
            info!(listen = %bound, "metrics at /metrics");
            Some(bound)
        }
        None => None,
    };
    let stun_task = stun.map(|socket| {
        let mut stop = stop_rx.clone();
        let limits = stun_server::StunLimits {
            per_source: (args.stun_per_source, args.stun_per_source.saturating_mul(4)),
            overall: (args.stun_overall, args.stun_overall.saturating_mul(2)),
            ..Default::default()
        };
        tokio::spawn(stun_server::serve_with(
            socket,
            limits,
            stun_counters,
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            },
        ))
    });
    let relay_task = relay.map(|(socket, config, serve_config)| {
        let mut stop = stop_rx.clone();
        tokio::spawn(relay::serve(socket, config, serve_config, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }))
    });
    ready(
        local,
        stun_addr,
        relay_addr,
        metrics_addr,
        identity.as_ref().map(|i| i.fingerprint),
    )?;
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
    if let Some(task) = relay_task {
        let _ = task.await;
    }
    result.context("server failed")
}

/// Binds the TURN socket and reads or creates the secret.
async fn relay_setup(
    args: &Args,
    addr: SocketAddr,
    call_peers: relay::CallPeers,
) -> anyhow::Result<(UdpSocket, relay::Config, relay::ServeConfig)> {
    use anyhow::Context as _;

    if addr.ip().is_unspecified() && args.public_addr.is_none() {
        anyhow::bail!(
            "--relay-listen {addr} is a wildcard address: give --public-addr, the IP clients \
             reach the relay at"
        );
    }
    let secret = match &args.relay_secret {
        Some(secret) => secret.clone(),
        None => {
            let path = args.db.with_extension("relay-secret");
            relay::auth::load_or_create_secret(&path)
                .with_context(|| format!("cannot read or create {}", path.display()))?
        }
    };
    let socket = relay::bind(addr)
        .and_then(UdpSocket::from_std)
        .with_context(|| format!("cannot listen on UDP {addr} for the relay (--relay-listen)"))?;
    let mut nonce_key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce_key)
        .map_err(|_| anyhow::anyhow!("no randomness for relay nonces"))?;
    let config = relay::Config::new(relay::auth::Secret::new(secret.as_bytes()))
        .set_realm(args.relay_realm.clone())
        .set_public_ip(args.public_addr)
        .set_allow_loopback_peers(args.relay_allow_loopback)
        .set_max_allocations_per_user(args.relay_user_allocations)
        .set_user_bandwidth(args.relay_user_rate, args.relay_user_rate)
        .set_call_peers(call_peers)
        .set_nonce_key(nonce_key);
    let ip = if addr.ip().is_unspecified() {
        addr.ip()
    } else {
        socket.local_addr()?.ip()
    };
    let serve_config = relay::ServeConfig {
        ip,
        ports: args.relay_ports.clone(),
        threads: args.relay_threads,
        rcvbuf: args.relay_rcvbuf,
    };
    Ok((socket, config, serve_config))
}

/// `MIN-MAX`, both inclusive.
fn parse_ports(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (min, max) = text
        .split_once('-')
        .ok_or("expected MIN-MAX, e.g. 49152-65535")?;
    let min: u16 = min.trim().parse().map_err(|e| format!("{min}: {e}"))?;
    let max: u16 = max.trim().parse().map_err(|e| format!("{max}: {e}"))?;
    if min == 0 || min > max {
        return Err(format!("{min}-{max} is not a range of ports"));
    }
    Ok(min..=max)
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
    relay: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    fingerprint: Option<Fingerprint>,
) -> anyhow::Result<()> {
    let fingerprint = fingerprint.map(|f| f.to_string());
    let line = serde_json::json!({
        "ready": {
            "listen": listen,
            "stun": stun,
            "relay": relay,
            "metrics": metrics,
            "tls_fingerprint": fingerprint,
        }
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
