//! The signaling load test: a fleet of real clients against a real server on loopback.
//!
//! The phases, each a method of [`Fleet`] so a driver can measure between them:
//! 1. [`Fleet::connect`]: N clients connect and log in, at most `login_concurrency` at
//!    a time (every login is an argon2id verification on the server, CPU-bound on
//!    purpose, so the login rate is the server's hashing rate);
//! 2. [`Fleet::hold`]: every client keeps its heartbeat (the client library's own, at the
//!    interval the server's `hello` asks for) while the fleet idles;
//! 3. [`Fleet::call_burst`]: M disjoint pairs set up a call at the same moment:
//!    invite → `incoming-call` → accept → `accepted`, then the caller sends a chat
//!    message the callee acknowledges, and the caller hangs up;
//! 4. [`Fleet::close`]: counts who is still connected, then disconnects everyone.
//!
//! Clients talk TLS when [`LoadConfig::set_tls`] gives them a configuration (what
//! `magpie-server` serves by default), plain TCP otherwise.
//!
//! Users are created before the run: directly in the server's SQLite file with one
//! shared argon2id hash ([`preregister`], milliseconds for 10,000 users), or over the
//! protocol when the server is elsewhere ([`register_over_protocol`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use magpie_signaling::client::{self, Client, ClientConfig, Events, Incoming};
use magpie_signaling::proto::{ErrorCode, Event, UserName};
use magpie_signaling::{auth, store};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

/// What a load run does. Setters chain.
#[derive(Clone)]
pub struct LoadConfig {
    pub(crate) clients: usize,
    pub(crate) calls: usize,
    pub(crate) hold: Duration,
    pub(crate) login_concurrency: usize,
    pub(crate) prefix: String,
    pub(crate) password: String,
    pub(crate) step_timeout: Duration,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            // The default; 10,000 is the large option.
            clients: 1000,
            // Every client in a call at once: the worst burst the fleet can make.
            calls: 500,
            // Long enough for several heartbeat intervals of the in-process server.
            hold: Duration::from_secs(10),
            // The server hashes a few passwords at a time (one per core); more logins
            // in flight only queue there and run into its login timeout.
            login_concurrency: 16,
            prefix: "load".into(),
            password: "magpie-load-password".into(),
            // A step (a login, an event) that takes longer has failed, not slowed down.
            step_timeout: Duration::from_secs(60),
            tls: None,
        }
    }
}

impl LoadConfig {
    /// Clients in the fleet.
    pub fn set_clients(mut self, v: usize) -> Self {
        self.clients = v;
        self
    }

    /// Call set-ups in the burst (at most half the clients: pairs are disjoint).
    pub fn set_calls(mut self, v: usize) -> Self {
        self.calls = v;
        self
    }

    /// How long the fleet idles on heartbeats before the burst.
    pub fn set_hold(mut self, v: Duration) -> Self {
        self.hold = v;
        self
    }

    /// Logins in flight at once.
    pub fn set_login_concurrency(mut self, v: usize) -> Self {
        self.login_concurrency = v.max(1);
        self
    }

    /// User names are this prefix and a number (`load00042`).
    pub fn set_prefix(mut self, v: impl Into<String>) -> Self {
        self.prefix = v.into();
        self
    }

    /// The password every load user has.
    pub fn set_password(mut self, v: impl Into<String>) -> Self {
        self.password = v.into();
        self
    }

    /// The longest one step (a login, waiting for one event) may take.
    pub fn set_step_timeout(mut self, v: Duration) -> Self {
        self.step_timeout = v;
        self
    }

    /// Connect in TLS with this configuration (its trust decides which server
    /// certificate is accepted); `None` connects in plain TCP.
    pub fn set_tls(mut self, v: Option<Arc<rustls::ClientConfig>>) -> Self {
        self.tls = v;
        self
    }

    /// Whether clients connect in TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Clients in the fleet.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// Call set-ups in the burst, capped at the number of disjoint pairs.
    pub fn calls(&self) -> usize {
        self.calls.min(self.clients / 2)
    }

    /// The idle time before the burst.
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// The name of user `i`.
    pub fn user(&self, i: usize) -> String {
        format!("{}{i:05}", self.prefix)
    }

    /// The shared password.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for LoadConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            clients,
            calls,
            hold,
            login_concurrency,
            prefix,
            password: _,
            step_timeout,
            tls,
        } = self;
        f.debug_struct("LoadConfig")
            .field("clients", clients)
            .field("calls", calls)
            .field("hold", hold)
            .field("login_concurrency", login_concurrency)
            .field("prefix", prefix)
            .field("step_timeout", step_timeout)
            .field("tls", &tls.is_some())
            .finish_non_exhaustive()
    }
}

/// p50, p95, p99 and max of some durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (all zero when empty).
    pub fn of(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |p: f64| {
            let rank = (samples.len() as f64 * p).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1].as_secs_f64() * 1000.0
        };
        Self {
            n: samples.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.n, self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms
        )
    }
}

/// How the logins went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoginReport {
    /// Clients that connected and logged in.
    pub logged_in: usize,
    /// Clients that did not (see `errors`).
    pub failed: usize,
    /// Wall time from the first connect to the last login reply, in seconds.
    pub elapsed_s: f64,
    /// Logins per second over `elapsed_s`.
    pub per_sec: f64,
    /// Connect-plus-login time of one client.
    pub latency: Percentiles,
    /// The first few failures.
    pub errors: Vec<String>,
}

/// How the call burst went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallReport {
    /// Set-ups started.
    pub attempted: usize,
    /// Set-ups that reached `accepted` and were hung up cleanly.
    pub completed: usize,
    /// Wall time of the whole burst, in seconds.
    pub elapsed_s: f64,
    /// Invite sent → callee has `incoming-call`.
    pub ring: Percentiles,
    /// Invite sent → caller has `accepted` (the callee accepts at once): call set-up.
    pub setup: Percentiles,
    /// In the call, a chat message sent by the caller → the callee has it.
    pub chat: Percentiles,
    /// The first few failures.
    pub errors: Vec<String>,
}

/// Errors kept in a report; the rest are only counted.
const KEPT_ERRORS: usize = 5;

/// One logged-in client.
#[derive(Debug)]
struct Member {
    name: String,
    client: Client,
    events: Events,
}

/// The connected clients.
#[derive(Debug)]
pub struct Fleet {
    config: LoadConfig,
    members: Vec<Member>,
}

impl Fleet {
    /// Connects and logs in `config.clients` users (`config.user(0..)`) to `addr`,
    /// reporting progress through `progress(logged_in)` every five seconds.
    pub async fn connect(
        addr: SocketAddr,
        config: &LoadConfig,
        progress: impl Fn(usize) + Send + Sync + 'static,
    ) -> (Fleet, LoginReport) {
        Self::connect_range(addr, config, 0..config.clients, progress).await
    }

    /// Like [`Fleet::connect`] for the users numbered `range`.
    pub async fn connect_range(
        addr: SocketAddr,
        config: &LoadConfig,
        range: std::ops::Range<usize>,
        progress: impl Fn(usize) + Send + Sync + 'static,
    ) -> (Fleet, LoginReport) {
        let started = Instant::now();
        let limit = Arc::new(Semaphore::new(config.login_concurrency));
        let done = Arc::new(AtomicUsize::new(0));
        let ticker = {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    progress(done.load(Ordering::Relaxed));
                }
            })
        };
        let mut tasks = JoinSet::new();
        for i in range {
            let (name, password) = (config.user(i), config.password.clone());
            let (limit, done) = (Arc::clone(&limit), Arc::clone(&done));
            let (step, tls) = (config.step_timeout, config.tls.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let t0 = Instant::now();
                let result = timeout(step, login(addr, tls, &name, &password)).await;
                done.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(Ok((client, events))) => Ok((
                        Member {
                            name,
                            client,
                            events,
                        },
                        t0.elapsed(),
                    )),
                    Ok(Err(err)) => Err(format!("{name}: {err:#}")),
                    Err(_) => Err(format!("{name}: no login within {step:?}")),
                }
            });
        }
        let mut members = Vec::new();
        let mut latencies = Vec::new();
        let mut report = LoginReport::default();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok((member, latency))) => {
                    members.push(member);
                    latencies.push(latency);
                }
                Ok(Err(err)) => note_error(&mut report.failed, &mut report.errors, err),
                Err(err) => note_error(&mut report.failed, &mut report.errors, err.to_string()),
            }
        }
        ticker.abort();
        // Pairs are formed by position: keep the order of the user numbers.
        members.sort_by(|a, b| a.name.cmp(&b.name));
        report.logged_in = members.len();
        report.elapsed_s = started.elapsed().as_secs_f64();
        report.per_sec = members.len() as f64 / report.elapsed_s.max(1e-9);
        report.latency = Percentiles::of(&mut latencies);
        let fleet = Fleet {
            config: config.clone(),
            members,
        };
        (fleet, report)
    }

    /// Clients logged in.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no client logged in.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Clients whose connection is still open.
    pub fn connected(&self) -> usize {
        self.members
            .iter()
            .filter(|m| !m.client.is_closed())
            .count()
    }

    /// Idles for the configured hold while every client keeps its heartbeat; returns
    /// how many clients are still connected afterwards.
    pub async fn hold(&mut self) -> usize {
        tokio::time::sleep(self.config.hold).await;
        self.connected()
    }

    /// Sets up `config.calls()` calls at once between disjoint pairs of clients
    /// (client 2k calls client 2k+1), then hangs each up.
    pub async fn call_burst(&mut self) -> CallReport {
        let calls = self.config.calls().min(self.members.len() / 2);
        let step = self.config.step_timeout;
        let mut rest = std::mem::take(&mut self.members);
        let mut paired: Vec<Member> = rest.drain(..calls * 2).collect();
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        let mut index = 0;
        while let (Some(callee), Some(caller)) = (paired.pop(), paired.pop()) {
            tasks.spawn(async move {
                let (mut caller, mut callee) = (caller, callee);
                let result = call(&mut caller, &mut callee, step).await;
                (index, caller, callee, result)
            });
            index += 1;
        }
        let mut report = CallReport {
            attempted: calls,
            ..CallReport::default()
        };
        let (mut rings, mut setups, mut chats) = (Vec::new(), Vec::new(), Vec::new());
        let mut returned = Vec::new();
        let mut failed = 0;
        while let Some(joined) = tasks.join_next().await {
            let Ok((index, caller, callee, result)) = joined else {
                // A panicked task lost its two members; count the call as failed.
                note_error(&mut failed, &mut report.errors, "call task panicked".into());
                continue;
            };
            match result {
                Ok(CallTimes { ring, setup, chat }) => {
                    rings.push(ring);
                    setups.push(setup);
                    chats.push(chat);
                    report.completed += 1;
                }
                Err(err) => note_error(
                    &mut failed,
                    &mut report.errors,
                    format!("call {index} {} -> {}: {err:#}", caller.name, callee.name),
                ),
            }
            returned.push(caller);
            returned.push(callee);
        }
        report.elapsed_s = started.elapsed().as_secs_f64();
        report.ring = Percentiles::of(&mut rings);
        report.setup = Percentiles::of(&mut setups);
        report.chat = Percentiles::of(&mut chats);
        returned.append(&mut rest);
        returned.sort_by(|a, b| a.name.cmp(&b.name));
        self.members = returned;
        report
    }

    /// Disconnects every client; returns how many were still connected.
    pub fn close(self) -> usize {
        self.connected()
    }
}

fn note_error(count: &mut usize, errors: &mut Vec<String>, err: String) {
    *count += 1;
    if errors.len() < KEPT_ERRORS {
        errors.push(err);
    }
}

/// Connects in TLS under `tls`, or in plain TCP.
async fn connect(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(Client, Events), client::ClientError> {
    match tls {
        Some(tls) => client::connect_tls(&addr.to_string(), tls, ClientConfig::default()).await,
        None => client::connect(addr).await,
    }
}

async fn login(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    name: &str,
    password: &str,
) -> anyhow::Result<(Client, Events)> {
    let (client, events) = connect(addr, tls).await.context("connect")?;
    client.login(name, password).await.context("login")?;
    Ok((client, events))
}

/// What one call measured.
struct CallTimes {
    /// Invite → incoming-call.
    ring: Duration,
    /// Invite → accepted.
    setup: Duration,
    /// Message → delivered.
    chat: Duration,
}

/// One call: set it up, send one chat message in it, hang up.
async fn call(
    caller: &mut Member,
    callee: &mut Member,
    step: Duration,
) -> anyhow::Result<CallTimes> {
    let sent = Instant::now();
    let call_id = caller
        .client
        .invite(&callee.name, json!({"sdp": "load-test offer"}))
        .await
        .context("invite")?;
    wait_for(
        &mut callee.events,
        step,
        |e| matches!(e, Event::IncomingCall { call_id: id, .. } if *id == call_id),
    )
    .await
    .context("waiting for incoming-call")?;
    let ring = sent.elapsed();
    callee
        .client
        .accept(call_id, json!({"sdp": "load-test answer"}))
        .await
        .context("accept")?;
    wait_for(
        &mut caller.events,
        step,
        |e| matches!(e, Event::Accepted { call_id: id, .. } if *id == call_id),
    )
    .await
    .context("waiting for accepted")?;
    let setup = sent.elapsed();
    let sent = Instant::now();
    let sent_message = caller
        .client
        .message(&callee.name, "hello from the load test")
        .await
        .context("message")?;
    wait_for(
        &mut callee.events,
        step,
        |e| matches!(e, Event::Message(m) if m.message_id == sent_message.message_id),
    )
    .await
    .context("waiting for the message")?;
    let chat = sent.elapsed();
    callee
        .client
        .ack(&[sent_message.message_id])
        .await
        .context("ack")?;
    caller.client.hangup(call_id).await.context("hangup")?;
    wait_for(
        &mut callee.events,
        step,
        |e| matches!(e, Event::Hangup { call_id: id, .. } if *id == call_id),
    )
    .await
    .context("waiting for hangup")?;
    Ok(CallTimes { ring, setup, chat })
}

/// The next event `wanted` accepts, skipping others.
async fn wait_for(
    events: &mut Events,
    step: Duration,
    wanted: impl Fn(&Event) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + step;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Incoming::Event(event))) if wanted(&event) => return Ok(()),
            Ok(Some(Incoming::Event(_))) => continue,
            Ok(Some(Incoming::Error(err))) => bail!("server closed the connection: {err}"),
            Ok(None) => bail!("connection closed"),
            Err(_) => bail!("nothing within {step:?}"),
        }
    }
}

/// Creates users `range` with the config's password directly in the server's database
/// at `db`: one argon2id hash shared by all (each user's login still verifies it in
/// full), inserted in one transaction. Existing users are left alone, so a database can
/// be reused. Returns how many were created.
pub fn preregister(
    db: &Path,
    config: &LoadConfig,
    range: std::ops::Range<usize>,
) -> anyhow::Result<usize> {
    let conn = store::open(db).with_context(|| format!("opening {}", db.display()))?;
    let hash = auth::hash_password(&config.password)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    conn.execute_batch("BEGIN")?;
    let mut created = 0;
    for i in range {
        let name = config.user(i);
        let user = UserName::parse(&name).with_context(|| format!("user name {name:?}"))?;
        if store::create_user(&conn, &user, &hash, now_ms)? {
            created += 1;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(created)
}

/// Registers users `range` over the protocol (for a server in another process), a few
/// at a time; a name that exists already counts as done. Returns how many were created.
pub async fn register_over_protocol(
    addr: SocketAddr,
    config: &LoadConfig,
    range: std::ops::Range<usize>,
) -> anyhow::Result<usize> {
    let limit = Arc::new(Semaphore::new(config.login_concurrency));
    let mut tasks = JoinSet::new();
    for i in range {
        let (name, password) = (config.user(i), config.password.clone());
        let (limit, tls) = (Arc::clone(&limit), config.tls.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let (client, _events) = connect(addr, tls).await?;
            match client.register(&name, &password).await {
                Ok(()) => Ok(true),
                Err(err) if err.code() == Some(ErrorCode::UserExists) => Ok(false),
                Err(err) => Err(anyhow::Error::new(err).context(format!("registering {name}"))),
            }
        });
    }
    let mut created = 0;
    while let Some(joined) = tasks.join_next().await {
        created += usize::from(joined??);
    }
    Ok(created)
}

/// Resident anonymous memory (heap and stacks: `RssAnon` in `/proc/PID/status`) of
/// this process (`None`) or another, in bytes.
pub fn rss_anon(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".into(),
    };
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .with_context(|| format!("no RssAnon in {path}"))?;
    let kib: u64 = line
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("RssAnon in {path}: {line:?}"))?;
    Ok(kib * 1024)
}

/// Makes sure this process may open `need` file descriptors, raising the soft
/// RLIMIT_NOFILE up to the hard limit if it must. Returns the limit now in force.
pub fn ensure_nofile(need: u64) -> anyhow::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= need {
        return Ok(soft);
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard < need {
        bail!(
            "{need} file descriptors needed but the hard limit is {hard}: \
             raise it (as root: `ulimit -Hn {need}`, or in /etc/security/limits.conf) \
             and run again, or use fewer clients"
        );
    }
    limit.current = Some(need);
    setrlimit(Resource::Nofile, limit).with_context(|| {
        format!("raising the open-file limit to {need} failed: try `ulimit -n {need}` first")
    })?;
    Ok(need)
}

/// Where a load run stands, as the driver reports it (one JSON line each when the
/// driver runs in a child process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    /// The warm-up clients logged in and left: the server has hashed passwords on its
    /// blocking threads and grown its allocator arenas, so a memory baseline taken now
    /// does not count them against connections.
    Warm,
    /// The fleet is logged in.
    Connected {
        /// The logins.
        login: LoginReport,
    },
}

/// Everything a load run measured on the client side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The logins.
    pub login: LoginReport,
    /// The hold, in seconds.
    pub hold_s: f64,
    /// Clients still connected after the hold.
    pub connected_after_hold: usize,
    /// The call burst.
    pub calls: CallReport,
    /// Clients still connected after the burst.
    pub connected_at_end: usize,
    /// The driver's own anonymous memory per logged-in client, in bytes (client side).
    pub client_bytes_per_conn: f64,
}

/// Runs the whole load against `addr`: `warmup` extra users (numbered after the fleet)
/// log in and leave, then the fleet connects, holds and makes its call burst. `gate` is
/// called at each [`Phase`] and may take measurements before the run goes on.
pub async fn drive(
    addr: SocketAddr,
    config: &LoadConfig,
    warmup: usize,
    mut gate: impl AsyncFnMut(&Phase) -> anyhow::Result<()>,
) -> anyhow::Result<RunReport> {
    let n = config.clients;
    if warmup > 0 {
        let (warm, report) = Fleet::connect_range(addr, config, n..n + warmup, |_| {}).await;
        if report.failed > 0 {
            bail!("warm-up logins failed: {:?}", report.errors);
        }
        drop(warm);
    }
    gate(&Phase::Warm).await?;
    let before = rss_anon(None)?;
    let (mut fleet, login) = Fleet::connect(addr, config, move |done| {
        eprintln!("sigload: {done}/{n} clients logged in");
    })
    .await;
    let client_bytes = rss_anon(None)?.saturating_sub(before);
    gate(&Phase::Connected {
        login: login.clone(),
    })
    .await?;
    eprintln!(
        "sigload: {} clients holding for {:?} on heartbeats",
        fleet.len(),
        config.hold
    );
    let connected_after_hold = fleet.hold().await;
    eprintln!("sigload: burst of {} call set-ups", config.calls());
    let calls = fleet.call_burst().await;
    let connected_at_end = fleet.close();
    Ok(RunReport {
        client_bytes_per_conn: client_bytes as f64 / login.logged_in.max(1) as f64,
        login,
        hold_s: config.hold.as_secs_f64(),
        connected_after_hold,
        calls,
        connected_at_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(p.n, 100);
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p95_ms, 95.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
    }

    #[test]
    fn percentiles_of_nothing_are_zero() {
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }

    #[test]
    fn calls_never_exceed_disjoint_pairs() {
        let config = LoadConfig::default().set_clients(7).set_calls(100);
        assert_eq!(config.calls(), 3);
        assert_eq!(config.user(42), "load00042");
    }

    #[test]
    fn rss_of_this_process_is_readable() {
        assert!(rss_anon(None).unwrap() > 0);
    }
}
