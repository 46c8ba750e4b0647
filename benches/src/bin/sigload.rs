//! `sigload`: the signaling load test. N clients log in and keep heartbeats, hold, then
//! a burst of call set-ups between pairs; reports login rate, call-set-up latency and
//! the server's memory per connection. Loopback only; bounded; stops by itself.
//!
//! By default the server runs in this process (a temporary database, limits raised
//! for the test) and the clients run in a child process (this binary again, with
//! `--drive`), so this process's memory growth is the server's alone.
//!
//! Signaling is TLS by default, as `magpie-server` serves it: the in-process server makes
//! a self-signed certificate and the clients pin its fingerprint. `--plain` runs both
//! sides in plain TCP, for comparison.
//!
//! ```text
//! cargo run --release -p magpie-benches --bin sigload                  # 1,000 clients, TLS
//! cargo run --release -p magpie-benches --bin sigload -- --plain       # the same, plain TCP
//! cargo run --release -p magpie-benches --bin sigload -- --clients 10000
//! cargo run --release -p magpie-benches --bin sigload -- --server 127.0.0.1:7400 \
//!     --fingerprint AB:CD:... --server-pid PID
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use magpie_benches::sigload::{
    self, LoadConfig, LoginReport, Phase, RunReport, drive, ensure_nofile,
};
use magpie_signaling::tls::{Fingerprint, Identity, Trust};
use magpie_signaling::{Config, server};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Signaling load test: many clients, heartbeats, a burst of call set-ups.
#[derive(Debug, Parser)]
#[command(name = "sigload")]
struct Args {
    /// Concurrent clients (each logs in as its own user).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Call set-ups in the burst, between disjoint pairs [default: clients / 2].
    #[arg(long)]
    calls: Option<usize>,
    /// Seconds the fleet idles on heartbeats before the burst.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// Heartbeat interval of the in-process server, in seconds (clients follow it;
    /// three silent intervals drop a client, so a hold longer than that proves them).
    #[arg(long, default_value_t = 2)]
    heartbeat: u64,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 16)]
    login_concurrency: usize,
    /// Extra users that log in and leave before the memory baseline.
    #[arg(long, default_value_t = 32)]
    warmup: usize,
    /// Use a running server instead of an in-process one (users are registered over
    /// the protocol if missing; it must allow this many connections, logins and
    /// registrations from 127.0.0.1: `--max-per-address`, `--login-burst`,
    /// `--register-burst`).
    #[arg(long)]
    server: Option<SocketAddr>,
    /// Plain TCP instead of TLS, on both sides (a --server must run with --plain too).
    #[arg(long, conflicts_with = "fingerprint")]
    plain: bool,
    /// With --server: the SHA-256 fingerprint of its certificate (magpie-server prints
    /// it), which the clients pin.
    #[arg(long)]
    fingerprint: Option<Fingerprint>,
    /// With --server: that server's process id, to measure its memory.
    #[arg(long, requires = "server")]
    server_pid: Option<u32>,
    /// Keep the in-process server's database here (users are added if missing) instead
    /// of a temporary directory.
    #[arg(long, conflicts_with = "server")]
    db: Option<PathBuf>,
    /// Measure the in-process server with glibc's default malloc settings. Without this
    /// flag sigload runs itself again with a fixed mmap threshold
    /// (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072`): each login's argon2id
    /// hashing takes 19 MiB, which glibc otherwise keeps in per-thread arenas, hundreds
    /// of MiB that would swamp the per-connection figure.
    #[arg(long, conflicts_with = "server")]
    default_malloc: bool,
    /// Also write the report here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: run the clients against this address, talking to the parent over
    /// stdin/stdout.
    #[arg(long, hide = true)]
    drive: Option<SocketAddr>,
}

impl Args {
    /// The run's configuration; in TLS when given the server's `fingerprint`.
    fn load_config(&self, fingerprint: Option<Fingerprint>) -> anyhow::Result<LoadConfig> {
        let tls = fingerprint
            .map(|f| Trust::Fingerprint(f).client_config())
            .transpose()?;
        Ok(LoadConfig::default()
            .set_clients(self.clients)
            .set_calls(self.calls.unwrap_or(self.clients / 2))
            .set_hold(Duration::from_secs_f64(self.hold.max(0.0)))
            .set_login_concurrency(self.login_concurrency)
            .set_tls(tls))
    }

    /// Arguments for the child that drives the clients against a server that presents
    /// `fingerprint` (plain TCP without).
    fn child_args(&self, addr: SocketAddr, fingerprint: Option<Fingerprint>) -> Vec<String> {
        let calls = self.calls.unwrap_or(self.clients / 2).min(self.clients / 2);
        let mut args = vec![
            "--drive".into(),
            addr.to_string(),
            "--clients".into(),
            self.clients.to_string(),
            "--calls".into(),
            calls.to_string(),
            "--hold".into(),
            self.hold.to_string(),
            "--login-concurrency".into(),
            self.login_concurrency.to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
        ];
        match fingerprint {
            Some(f) => args.extend(["--fingerprint".into(), f.to_string()]),
            None => args.push("--plain".into()),
        }
        args
    }
}

/// The server side of the report.
#[derive(Debug, Default, Serialize)]
struct ServerMemory {
    /// How it was measured.
    method: &'static str,
    /// `GLIBC_TUNABLES` of the server process.
    glibc_tunables: String,
    /// Anonymous RSS after the warm-up, before the fleet connected.
    baseline_bytes: u64,
    /// Anonymous RSS with the fleet logged in.
    connected_bytes: u64,
    /// The difference over the clients logged in.
    bytes_per_conn: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    clients: usize,
    /// `tls` or `plain`.
    transport: &'static str,
    heartbeat_s: Option<u64>,
    server: Option<ServerMemory>,
    run: RunReport,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.clients < 2 {
        bail!("--clients must be at least 2");
    }
    // Sockets, plus the runtime's own descriptors and the database.
    ensure_nofile((args.clients + args.warmup) as u64 + 256)?;
    if args.drive.is_none()
        && args.server.is_none()
        && !args.default_malloc
        && let Some(status) = with_fixed_mmap_threshold()?
    {
        std::process::exit(status.code().unwrap_or(1));
    }
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(addr) = args.drive {
        return runtime.block_on(child(addr, &args));
    }
    let report = match args.server {
        Some(addr) => runtime.block_on(against(addr, &args))?,
        None => runtime.block_on(in_process(&args))?,
    };
    print(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let run = &report.run;
    if run.login.failed > 0 || run.calls.completed < run.calls.attempted {
        bail!("not every client logged in or not every call was set up (see above)");
    }
    Ok(())
}

/// The glibc tunable that returns large freed blocks (argon2id's) to the OS at once.
const MMAP_THRESHOLD: &str = "glibc.malloc.mmap_threshold=131072";

/// Runs this program again with [`MMAP_THRESHOLD`] set, unless it already is.
fn with_fixed_mmap_threshold() -> anyhow::Result<Option<std::process::ExitStatus>> {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if tunables.contains("glibc.malloc.mmap_threshold") {
        return Ok(None);
    }
    let value = match tunables.as_str() {
        "" => MMAP_THRESHOLD.to_string(),
        other => format!("{other}:{MMAP_THRESHOLD}"),
    };
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", value)
        .status()
        .context("running sigload again with a fixed mmap threshold")?;
    Ok(Some(status))
}

/// The child: drives the fleet, says where it is on stdout, waits for a line on stdin.
async fn child(addr: SocketAddr, args: &Args) -> anyhow::Result<()> {
    let config = args.load_config(args.fingerprint)?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let report = drive(addr, &config, args.warmup, async |phase: &Phase| {
        say(&mut stdout, phase).await?;
        stdin.next_line().await?.context("the parent went away")?;
        Ok(())
    })
    .await?;
    say(&mut stdout, &report).await
}

async fn say(out: &mut tokio::io::Stdout, value: &impl Serialize) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

/// The server in this process, the clients in a child process.
async fn in_process(args: &Args) -> anyhow::Result<Report> {
    let config = args.load_config(None)?;
    let temp = tempfile::tempdir()?;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| temp.path().join("sigload.db"));
    let users = args.clients + args.warmup;
    let created = sigload::preregister(&db, &config, 0..users)?;
    eprintln!("sigload: {created} users created in {}", db.display());

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_config = Config::new(&db)
        .set_max_connections(users + 64)
        .set_max_per_address(users + 64)
        .set_rate(1000, 1000)
        // Every client logs in from 127.0.0.1: lift the per-address login limits.
        .set_login_rate(1_000_000, 1_000_000)
        .set_register_rate(1_000_000, 1_000_000)
        .set_heartbeat(Duration::from_secs(args.heartbeat.max(1)))
        .set_login_timeout(Duration::from_secs(120));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    };
    let (server, fingerprint) = if args.plain {
        let server = tokio::spawn(server::run(listener, server_config, stopped));
        (server, None)
    } else {
        // What magpie-server does without --tls-cert: a self-signed certificate.
        let (identity, _) = Identity::self_signed(
            &temp.path().join("cert.pem"),
            &temp.path().join("key.pem"),
            &["localhost".into()],
        )?;
        let server = tokio::spawn(server::run_tls(
            listener,
            identity.config,
            server_config,
            stopped,
        ));
        (server, Some(identity.fingerprint))
    };

    let exe = std::env::current_exe().context("finding this program")?;
    let mut child = tokio::process::Command::new(exe)
        .args(args.child_args(addr, fingerprint))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the client process")?;
    let mut to_child = child.stdin.take().context("child stdin")?;
    let mut from_child = BufReader::new(child.stdout.take().context("child stdout")?).lines();
    let mut next = async || -> anyhow::Result<String> {
        from_child
            .next_line()
            .await?
            .context("the client process ended early (its error is above)")
    };

    let mut memory = ServerMemory {
        method: "RssAnon of the server process (clients in a child process), after \
                 a warm-up of logins, before vs. with the fleet logged in, over N",
        glibc_tunables: std::env::var("GLIBC_TUNABLES").unwrap_or_default(),
        ..ServerMemory::default()
    };
    let settle = Duration::from_secs(1);
    let phase: Phase = serde_json::from_str(&next().await?)?;
    if phase != Phase::Warm {
        bail!("unexpected phase from the client process: {phase:?}");
    }
    tokio::time::sleep(settle).await;
    memory.baseline_bytes = sigload::rss_anon(None)?;
    to_child.write_all(b"go\n").await?;
    let login: LoginReport = match serde_json::from_str(&next().await?)? {
        Phase::Connected { login } => login,
        phase => bail!("unexpected phase from the client process: {phase:?}"),
    };
    tokio::time::sleep(settle).await;
    memory.connected_bytes = sigload::rss_anon(None)?;
    memory.bytes_per_conn = memory.connected_bytes.saturating_sub(memory.baseline_bytes) as f64
        / login.logged_in.max(1) as f64;
    to_child.write_all(b"go\n").await?;
    let run: RunReport = serde_json::from_str(&next().await?)?;
    let status = child.wait().await?;
    if !status.success() {
        bail!("the client process failed: {status}");
    }
    let _ = stop.send(());
    server.await??;
    Ok(Report {
        clients: args.clients,
        transport: transport(args.plain),
        heartbeat_s: Some(args.heartbeat.max(1)),
        server: Some(memory),
        run,
    })
}

/// A server elsewhere: the clients run here.
async fn against(addr: SocketAddr, args: &Args) -> anyhow::Result<Report> {
    if !args.plain && args.fingerprint.is_none() {
        bail!("--server needs --fingerprint (magpie-server prints it) or --plain");
    }
    let config = args.load_config(args.fingerprint)?;
    let users = args.clients + args.warmup;
    eprintln!("sigload: registering {users} users over the protocol (argon2id each)");
    let created = sigload::register_over_protocol(addr, &config, 0..users).await?;
    eprintln!("sigload: {created} users created");
    let pid = args.server_pid;
    let mut memory = pid.map(|_| ServerMemory {
        method: "RssAnon of --server-pid, after a warm-up of logins, before vs. with \
                 the fleet logged in, over N, with the server's own malloc settings \
                 (glibc keeps argon2id's 19 MiB buffers in its arenas and blurs the \
                 figure unless the server runs with \
                 GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072)",
        ..ServerMemory::default()
    });
    let settle = Duration::from_secs(1);
    let run = drive(addr, &config, args.warmup, async |phase: &Phase| {
        let (Some(pid), Some(memory)) = (pid, memory.as_mut()) else {
            return Ok(());
        };
        tokio::time::sleep(settle).await;
        let rss = sigload::rss_anon(Some(pid))?;
        match phase {
            Phase::Warm => memory.baseline_bytes = rss,
            Phase::Connected { login } => {
                memory.connected_bytes = rss;
                memory.bytes_per_conn = rss.saturating_sub(memory.baseline_bytes) as f64
                    / login.logged_in.max(1) as f64;
            }
        }
        Ok(())
    })
    .await?;
    Ok(Report {
        clients: args.clients,
        transport: transport(args.plain),
        heartbeat_s: None,
        server: memory,
        run,
    })
}

fn transport(plain: bool) -> &'static str {
    if plain { "plain" } else { "tls" }
}

fn print(report: &Report) {
    let run = &report.run;
    let login = &run.login;
    println!("clients            {}", report.clients);
    println!("signaling          {}", report.transport);
    println!(
        "logins             {} ok, {} failed in {:.2} s: {:.0} logins/s (argon2id verify each)",
        login.logged_in, login.failed, login.elapsed_s, login.per_sec
    );
    println!("login latency      {}", login.latency);
    if let Some(hb) = report.heartbeat_s {
        println!("server heartbeat   {hb} s (a client silent for 3 intervals is dropped)");
    }
    println!(
        "after {:.0} s hold    {} of {} still connected",
        run.hold_s, run.connected_after_hold, login.logged_in
    );
    if let Some(memory) = &report.server {
        println!("memory method      {}", memory.method);
        println!(
            "server memory      {:.1} KiB per connection ({:.1} -> {:.1} MiB RssAnon{})",
            memory.bytes_per_conn / 1024.0,
            memory.baseline_bytes as f64 / (1024.0 * 1024.0),
            memory.connected_bytes as f64 / (1024.0 * 1024.0),
            match memory.glibc_tunables.as_str() {
                "" => String::new(),
                t => format!(", GLIBC_TUNABLES={t}"),
            }
        );
    }
    println!(
        "client memory      {:.1} KiB per connection (the driver process)",
        run.client_bytes_per_conn / 1024.0
    );
    let calls = &run.calls;
    println!(
        "call burst         {} of {} set up in {:.2} s",
        calls.completed, calls.attempted, calls.elapsed_s
    );
    println!("invite -> ringing  {}", calls.ring);
    println!("invite -> accepted {}", calls.setup);
    println!("message -> received {}", calls.chat);
    println!("connected at end   {}", run.connected_at_end);
    for err in login.errors.iter().chain(&calls.errors) {
        println!("error: {err}");
    }
}
