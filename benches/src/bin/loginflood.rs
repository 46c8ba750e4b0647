//! `loginflood`: can strangers stall logins, and does the server's memory stay flat?
//! Runs a real `magpie-server` process (built beside this binary) on loopback with its
//! default limits and the default allocator, then:
//! 1. floods it from 2 addresses (127.0.0.2 and 127.0.0.3, 64 connections each) with
//!    logins for unknown users, each connection sending its next login as soon as the
//!    last is answered, while an honest user logs in again and again from 127.0.0.1:
//!    the honest login's p50/p95 (target ≤ 0.5 s p95);
//! 2. logs in `--logins` real users (1,000 by default) from 127.0.2.x addresses, a few
//!    at a time, and reads the server's VmRSS (target ≤ 150 MiB).
//!
//! Bounded: the flood lasts `--flood-secs`, the honest user makes `--samples` logins,
//! every step has a timeout, and the server is killed at the end.
//!
//! Every connection speaks TLS, as `magpie-server` serves by default (the clients pin the
//! fingerprint of the self-signed certificate the server prints in its ready line);
//! `--plain` runs the server with `--plain` and the clients in plain TCP, for comparison.
//!
//! ```text
//! cargo build --release -p magpie-signaling --bin magpie-server
//! cargo run --release -p magpie-benches --bin loginflood [-- --plain]
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use magpie_benches::sigload::{self, LoadConfig, Percentiles};
use magpie_signaling::tls::{Fingerprint, Trust};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

/// Login flood and memory test against a real magpie-server process.
#[derive(Debug, Parser)]
#[command(name = "loginflood")]
struct Args {
    /// The magpie-server binary [default: beside this program].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Flooding connections, split over 127.0.0.2 and 127.0.0.3.
    #[arg(long, default_value_t = 128)]
    flood_connections: usize,
    /// How long the flood lasts, in seconds.
    #[arg(long, default_value_t = 20)]
    flood_secs: u64,
    /// Honest logins timed during the flood (from 127.0.0.1; the default per-address
    /// login burst is 30).
    #[arg(long, default_value_t = 25)]
    samples: usize,
    /// Real logins before the memory reading.
    #[arg(long, default_value_t = 1000)]
    logins: usize,
    /// Logins in flight at once in the memory phase.
    #[arg(long, default_value_t = 8)]
    login_concurrency: usize,
    /// Plain TCP instead of TLS, on both sides.
    #[arg(long)]
    plain: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    transport: &'static str,
    flood_connections: usize,
    flood_secs: u64,
    flood_replies: BTreeMap<String, u64>,
    honest_login: Percentiles,
    honest_connect_and_login: Percentiles,
    honest_failures: Vec<String>,
    rss_start_mib: f64,
    rss_after_flood_mib: f64,
    logins: usize,
    logins_failed: usize,
    logins_elapsed_s: f64,
    rss_after_logins_mib: f64,
    rss_peak_mib: f64,
}

const STEP: Duration = Duration::from_secs(30);
const PASSWORD: &str = "loginflood-password";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sigload::ensure_nofile(args.flood_connections as u64 + 512)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(run(&args))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!(
        "loginflood ({}): honest login during the flood p50 {:.1} ms, p95 {:.1} ms \
         (target p95 <= 500 ms; with the connect p95 {:.1} ms); server VmRSS after {} logins \
         {:.1} MiB (target <= 150 MiB)",
        report.transport,
        report.honest_login.p50_ms,
        report.honest_login.p95_ms,
        report.honest_connect_and_login.p95_ms,
        report.logins - report.logins_failed,
        report.rss_after_logins_mib,
    );
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<Report> {
    let bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?.with_file_name("magpie-server"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it first with \
             `cargo build --release -p magpie-signaling --bin magpie-server`",
            bin.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("loginflood.db");
    let load = LoadConfig::default()
        .set_prefix("user")
        .set_password(PASSWORD);
    sigload::preregister(&db, &load, 0..args.logins + 1)?;
    let honest = load.user(args.logins);

    let mut server = tokio::process::Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--no-stun", "--db"])
        .arg(&db)
        .args(args.plain.then_some("--plain"))
        .env("RUST_LOG", "warn")
        .env_remove("GLIBC_TUNABLES")
        .env_remove("MALLOC_ARENA_MAX")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = server.id().context("server pid")?;
    let mut ready = BufReader::new(server.stdout.take().context("server stdout")?).lines();
    let line = timeout(STEP, ready.next_line())
        .await
        .context("no ready line")??
        .context("the server exited")?;
    let ready: serde_json::Value = serde_json::from_str(&line)?;
    let addr: SocketAddr = ready["ready"]["listen"]
        .as_str()
        .context("ready line without an address")?
        .parse()?;
    let tls = match ready["ready"]["tls_fingerprint"].as_str() {
        Some(_) if args.plain => bail!("the server speaks TLS despite --plain"),
        Some(f) => {
            let f: Fingerprint = f.parse().context("the ready line's tls_fingerprint")?;
            Some(Trust::Fingerprint(f).client_config()?)
        }
        None if args.plain => None,
        None => bail!("the server's ready line has no tls_fingerprint (is it plain TCP?)"),
    };
    let target = Target { addr, tls };
    eprintln!(
        "loginflood: server {pid} on {addr} ({})",
        if args.plain { "plain TCP" } else { "TLS" }
    );
    let rss_start = vm_rss(pid)?;

    // Phase 1: the flood and the honest user.
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = JoinSet::new();
    for i in 0..args.flood_connections {
        let from = Ipv4Addr::new(127, 0, 0, 2 + (i % 2) as u8);
        let (stop, target) = (Arc::clone(&stop), target.clone());
        flood.spawn(async move { flood_one(&target, from.into(), i, &stop).await });
    }
    let (mut samples, mut with_connect) = (Vec::new(), Vec::new());
    let mut honest_failures = Vec::new();
    let started = Instant::now();
    let flood_for = Duration::from_secs(args.flood_secs);
    // Let the flood reach full strength first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let gap = flood_for.saturating_sub(Duration::from_secs(2)) / args.samples.max(1) as u32;
    for _ in 0..args.samples {
        match honest_login(&target, &honest).await {
            Ok((login, whole)) => {
                samples.push(login);
                with_connect.push(whole);
            }
            Err(err) => honest_failures.push(format!("{err:#}")),
        }
        tokio::time::sleep(gap).await;
    }
    tokio::time::sleep(flood_for.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    let mut flood_replies = BTreeMap::new();
    while let Some(joined) = flood.join_next().await {
        for (code, n) in joined?? {
            *flood_replies.entry(code).or_insert(0) += n;
        }
    }
    let rss_after_flood = vm_rss(pid)?;

    // Phase 2: real logins, then memory.
    eprintln!("loginflood: {} logins", args.logins);
    let limit = Arc::new(Semaphore::new(args.login_concurrency.max(1)));
    let mut logins = JoinSet::new();
    let began = Instant::now();
    for i in 0..args.logins {
        // 20 logins per address: under the default per-address login burst of 30.
        let from = Ipv4Addr::new(127, 0, 2, 1 + (i / 20) as u8);
        let (name, limit, target) = (load.user(i), Arc::clone(&limit), target.clone());
        logins.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let mut conn = Line::connect(&target, from.into()).await?;
            let reply = conn.login(&name, PASSWORD).await?;
            if reply["type"] != "ok" {
                bail!("login {name}: {reply}");
            }
            Ok(())
        });
    }
    let mut logins_failed = 0;
    while let Some(joined) = logins.join_next().await {
        if let Err(err) = joined? {
            if logins_failed == 0 {
                eprintln!("loginflood: {err:#}");
            }
            logins_failed += 1;
        }
    }
    let logins_elapsed_s = began.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_logins = vm_rss(pid)?;
    let rss_peak = status_kib(pid, "VmHWM:")? as f64 / 1024.0;
    server.kill().await?;

    Ok(Report {
        transport: if args.plain { "plain" } else { "tls" },
        flood_connections: args.flood_connections,
        flood_secs: args.flood_secs,
        flood_replies,
        honest_login: Percentiles::of(&mut samples),
        honest_connect_and_login: Percentiles::of(&mut with_connect),
        honest_failures,
        rss_start_mib: rss_start,
        rss_after_flood_mib: rss_after_flood,
        logins: args.logins,
        logins_failed,
        logins_elapsed_s,
        rss_after_logins_mib: rss_after_logins,
        rss_peak_mib: rss_peak,
    })
}

/// One flooding connection: logins for unknown users, the next as soon as the last is
/// answered, until `stop`. Returns the replies by code; reconnects if closed.
async fn flood_one(
    target: &Target,
    from: IpAddr,
    i: usize,
    stop: &AtomicBool,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut replies = BTreeMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut conn) = Line::connect(target, from).await else {
            *replies.entry("connect-failed".into()).or_insert(0) += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let Ok(reply) = conn
                .login(&format!("ghost{i}x{n}"), "not the password")
                .await
            else {
                break;
            };
            let code = reply["code"].as_str().unwrap_or("ok").to_string();
            *replies.entry(code).or_insert(0) += 1;
        }
    }
    Ok(replies)
}

/// The honest user: a fresh connection from 127.0.0.1, then the login. Returns the time
/// from the login request to its reply, and from the connect to the reply (TCP and TLS
/// handshakes and the server's hello included).
async fn honest_login(target: &Target, name: &str) -> anyhow::Result<(Duration, Duration)> {
    let began = Instant::now();
    let mut conn = Line::connect(target, Ipv4Addr::LOCALHOST.into()).await?;
    let sent = Instant::now();
    let reply = conn.login(name, PASSWORD).await?;
    let took = sent.elapsed();
    if reply["type"] != "ok" {
        bail!("honest login refused: {reply}");
    }
    Ok((took, began.elapsed()))
}

/// The server under test: its address, and what the clients trust in TLS (`None`: plain).
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A TCP or TLS byte stream.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A line-level connection from a chosen loopback address.
struct Line {
    reader: BufReader<ReadHalf<Box<dyn Io>>>,
    writer: WriteHalf<Box<dyn Io>>,
    next_id: u64,
}

impl Line {
    async fn connect(target: &Target, from: IpAddr) -> anyhow::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let tcp = timeout(STEP, socket.connect(target.addr)).await??;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = match &target.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::IpAddress(target.addr.ip().into());
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
                Box::new(timeout(STEP, connector.connect(name, tcp)).await??)
            }
        };
        let (read, writer) = tokio::io::split(stream);
        let mut line = Self {
            reader: BufReader::new(read),
            writer,
            next_id: 1,
        };
        let hello = line.read().await?;
        if hello["type"] != "hello" {
            bail!("refused: {hello}");
        }
        Ok(line)
    }

    async fn login(&mut self, user: &str, password: &str) -> anyhow::Result<serde_json::Value> {
        let id = self.next_id;
        self.next_id += 1;
        let request = serde_json::json!({
            "type": "login", "id": id, "user": user, "password": password,
        });
        let mut bytes = serde_json::to_vec(&request)?;
        bytes.push(b'\n');
        self.writer.write_all(&bytes).await?;
        loop {
            let reply = self.read().await?;
            if reply["id"] == id {
                return Ok(reply);
            }
        }
    }

    async fn read(&mut self) -> anyhow::Result<serde_json::Value> {
        let mut line = String::new();
        let n = timeout(STEP, self.reader.read_line(&mut line)).await??;
        if n == 0 {
            bail!("closed");
        }
        Ok(serde_json::from_str(&line)?)
    }
}

fn vm_rss(pid: u32) -> anyhow::Result<f64> {
    Ok(status_kib(pid, "VmRSS:")? as f64 / 1024.0)
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("no {field} in {path}"))?;
    Ok(value.trim().trim_end_matches("kB").trim().parse()?)
}
