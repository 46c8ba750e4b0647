//! Server configuration.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::codec::DEFAULT_MAX_LINE;
use crate::files::{FileStats, Limits as FileLimits};
use crate::relay::CallPeers;

/// Everything an operator can tune. Defaults suit a public server with up to some
/// thousands of users on one machine; every value has a `set_*` that chains.
#[derive(Clone)]
pub struct Config {
    pub(crate) db_path: PathBuf,
    pub(crate) heartbeat: Duration,
    pub(crate) ring_timeout: Duration,
    pub(crate) login_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) max_line: usize,
    pub(crate) max_payload: usize,
    pub(crate) max_text: usize,
    pub(crate) max_connections: usize,
    pub(crate) max_per_address: usize,
    pub(crate) rate_per_sec: u32,
    pub(crate) rate_burst: u32,
    pub(crate) max_watch: usize,
    pub(crate) max_pending_messages: usize,
    pub(crate) outbound_queue: usize,
    pub(crate) throttle_capacity: usize,
    pub(crate) address_failures_burst: u32,
    pub(crate) address_failures_per_minute: u32,
    pub(crate) hash_workers: usize,
    pub(crate) hash_queue: usize,
    pub(crate) login_burst: u32,
    pub(crate) login_per_minute: u32,
    pub(crate) register_burst: u32,
    pub(crate) register_per_minute: u32,
    pub(crate) max_pending_per_sender: usize,
    pub(crate) pending_page: usize,
    pub(crate) db_queue: usize,
    pub(crate) relay: Option<RelayGrant>,
    pub(crate) file_limits: FileLimits,
    pub(crate) file_chunk: usize,
    pub(crate) file_chunk_rate: u32,
    pub(crate) file_sweep: Duration,
    pub(crate) counters: Arc<Counters>,
    pub(crate) call_peers: CallPeers,
}

/// The relay that `relay` requests get credentials for: where clients reach it, the
/// secret it checks TURN REST credentials with, and how long credentials last.
#[derive(Clone)]
pub struct RelayGrant {
    pub(crate) url: String,
    pub(crate) secret: crate::relay::auth::Secret,
    pub(crate) ttl: Duration,
}

impl RelayGrant {
    /// Credentials for the relay at `addr` (`--public-addr` or its listen address),
    /// signed with `secret`. They last 6 hours: every Refresh, permission and channel
    /// of an allocation must carry the credentials that made it (a relay answers 441 to
    /// others), so they must outlive the longest call; a leaked pair is still bounded
    /// by the user's relay quota and its expiry.
    pub fn new(addr: std::net::SocketAddr, secret: crate::relay::auth::Secret) -> Self {
        Self {
            url: format!("turn:{addr}"),
            secret,
            ttl: Duration::from_secs(6 * 3600),
        }
    }

    /// How long handed-out credentials work.
    pub fn set_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }
}

impl fmt::Debug for RelayGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayGrant")
            .field("url", &self.url)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// What the server counts, for operators and tests: read with the getters while the
/// server runs. One set per [`Config`] (clones share it).
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) verifications: AtomicU64,
    pub(crate) hashing_busy: AtomicU64,
    pub(crate) relay_granted: AtomicU64,
    pub(crate) relay_refused: AtomicU64,
    pub(crate) candidates_passed: AtomicU64,
    pub(crate) candidates_refused: AtomicU64,
    pub(crate) files: FileStats,
}

impl Counters {
    /// Password verifications (argon2id) run by `login`, for known and unknown users.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// `register` and `login` requests refused with `server-busy` (hashing queue full).
    pub fn hashing_busy(&self) -> u64 {
        self.hashing_busy.load(Ordering::Relaxed)
    }

    /// Relay credentials handed out.
    pub fn relay_granted(&self) -> u64 {
        self.relay_granted.load(Ordering::Relaxed)
    }

    /// `relay` requests refused (`not-in-call`, `no-relay`).
    pub fn relay_refused(&self) -> u64 {
        self.relay_refused.load(Ordering::Relaxed)
    }

    /// `candidates` lists passed on to the other party.
    pub fn candidates_passed(&self) -> u64 {
        self.candidates_passed.load(Ordering::Relaxed)
    }

    /// `candidates` requests refused (`not-in-call`, too many, not objects, too large).
    pub fn candidates_refused(&self) -> u64 {
        self.candidates_refused.load(Ordering::Relaxed)
    }

    /// Files left for offline users: stored, delivered, declined, expired, refused.
    pub fn files(&self) -> &FileStats {
        &self.files
    }
}

impl Config {
    /// Defaults, with the database at `db_path` (created if missing).
    pub fn new(db_path: impl Into<PathBuf>) -> Self {
        Self {
            db_path: db_path.into(),
            // Mobile NATs drop idle UDP/TCP mappings after about 30 s; 15 s keeps them
            // open and finds a dead peer within 45 s.
            heartbeat: Duration::from_secs(15),
            // What phones do: about half a minute of ringing.
            ring_timeout: Duration::from_secs(30),
            // Enough for a person at `nc` to paste a login line, short enough to shed idle sockets.
            login_timeout: Duration::from_secs(10),
            // A client that does not read for this long is dropped rather than stalling its task.
            write_timeout: Duration::from_secs(10),
            max_line: DEFAULT_MAX_LINE,
            // An SDP-like offer with a dozen candidates and codecs is 2-6 KiB; 16 KiB leaves room.
            max_payload: 16 * 1024,
            // A long chat message; longer text belongs in a file transfer.
            max_text: 4 * 1024,
            // Each connection costs a task and two small buffers; file descriptors run out first.
            max_connections: 10_000,
            // Enough for a household or office behind one NAT, not for one host to exhaust the server.
            max_per_address: 64,
            // A person sends a few messages a second at most; heartbeats add one per 15 s.
            rate_per_sec: 10,
            // Room for a login followed by watch, history and pending acks at once.
            rate_burst: 20,
            // A contact list.
            max_watch: 1000,
            // Months of chat for a person; bounds what a spammer can pile on an absent user.
            max_pending_messages: 10_000,
            // Events queued for one connection before it is considered stuck and dropped.
            outbound_queue: 1024,
            // About 150 bytes a record: some 10 MB per table at most, and room for every
            // user of a server this size to have failed from a few addresses.
            throttle_capacity: 65_536,
            // An office behind one NAT mistypes a few passwords a minute; a name sprayer
            // gets 30 guesses at once and then one every 6 s, each refused without hashing.
            address_failures_burst: 30,
            address_failures_per_minute: 10,
            // One argon2id at a time per core, at most 4: logins must not take every core
            // from calls in progress, and each worker keeps 19 MiB.
            hash_workers: std::thread::available_parallelism()
                .map_or(2, std::num::NonZero::get)
                .min(4),
            // At ~30 ms a hash, 16 queued is about a quarter second of waiting per worker:
            // beyond that a client is better told `server-busy` and retries.
            hash_queue: 16,
            // An office behind one NAT logging in at nine; a single host needs a handful.
            login_burst: 30,
            login_per_minute: 30,
            // Accounts are made rarely; this stops one address from minting thousands.
            register_burst: 10,
            register_per_minute: 2,
            // Plenty for a conversation with someone who is away; a twentieth of the
            // mailbox, so no one sender, a stranger included, can fill it.
            max_pending_per_sender: 500,
            // 100 messages of at most 4 KiB: under half a megabyte held per login.
            pending_page: 100,
            // Jobs waiting for SQLite; beyond this, requests wait to queue (and the
            // hub's call records are dropped, logged and counted, rather than the hub
            // stalling). At tens of microseconds a job, about a tenth of a second.
            db_queue: 4096,
            // No relay unless the operator runs one.
            relay: None,
            file_limits: FileLimits::default(),
            // 32 KiB is 43,692 bytes of base64: a chunk line stays well inside the
            // default 64 KiB line limit (and is cut to fit a smaller one).
            file_chunk: 32 * 1024,
            // 256 chunks of 32 KiB a second is 8 MiB/s per connection: a 25 MiB file in
            // about 3 s, while one connection cannot keep a core busy with base64.
            file_chunk_rate: 256,
            // Expired files go within a minute of their time to live.
            file_sweep: Duration::from_secs(60),
            counters: Arc::default(),
            call_peers: CallPeers::new(),
        }
    }

    /// Clients must send something this often (a `ping` will do); three silent intervals
    /// drop the connection.
    pub fn set_heartbeat(mut self, v: Duration) -> Self {
        self.heartbeat = v;
        self
    }

    /// How long an unanswered call rings before both parties get `missed`.
    pub fn set_ring_timeout(mut self, v: Duration) -> Self {
        self.ring_timeout = v;
        self
    }

    /// How long a new connection may take to log in.
    pub fn set_login_timeout(mut self, v: Duration) -> Self {
        self.login_timeout = v;
        self
    }

    /// How long one write to a client may block before the client is dropped.
    pub fn set_write_timeout(mut self, v: Duration) -> Self {
        self.write_timeout = v;
        self
    }

    /// Longest accepted line, newline excluded.
    pub fn set_max_line(mut self, v: usize) -> Self {
        self.max_line = v;
        self
    }

    /// Largest `offer`/`answer`, as compact JSON.
    pub fn set_max_payload(mut self, v: usize) -> Self {
        self.max_payload = v;
        self
    }

    /// Longest chat text in bytes.
    pub fn set_max_text(mut self, v: usize) -> Self {
        self.max_text = v;
        self
    }

    /// Most simultaneous connections.
    pub fn set_max_connections(mut self, v: usize) -> Self {
        self.max_connections = v;
        self
    }

    /// Most simultaneous connections from one IP address.
    pub fn set_max_per_address(mut self, v: usize) -> Self {
        self.max_per_address = v;
        self
    }

    /// Sustained requests per second per connection, and the burst allowed above it.
    pub fn set_rate(mut self, per_sec: u32, burst: u32) -> Self {
        self.rate_per_sec = per_sec;
        self.rate_burst = burst;
        self
    }

    /// Most users one connection may watch.
    pub fn set_max_watch(mut self, v: usize) -> Self {
        self.max_watch = v;
        self
    }

    /// Most unacknowledged messages stored for one recipient.
    pub fn set_max_pending_messages(mut self, v: usize) -> Self {
        self.max_pending_messages = v;
        self
    }

    /// Records kept by the wrong-password throttle, per (user, address) and per address;
    /// when full, the least recently used record is forgotten.
    pub fn set_throttle_capacity(mut self, v: usize) -> Self {
        self.throttle_capacity = v;
        self
    }

    /// Wrong passwords one address may send, across all user names: `burst` at once,
    /// then `per_minute`.
    pub fn set_address_failures(mut self, burst: u32, per_minute: u32) -> Self {
        self.address_failures_burst = burst;
        self.address_failures_per_minute = per_minute;
        self
    }

    /// Password hashing workers (argon2id jobs at once; each keeps 19 MiB), and how many
    /// jobs may wait for one before `register`/`login` get `server-busy`.
    pub fn set_hashing(mut self, workers: usize, queue: usize) -> Self {
        self.hash_workers = workers;
        self.hash_queue = queue;
        self
    }

    /// `login` requests one address may send: `burst` at once, then `per_minute`.
    pub fn set_login_rate(mut self, burst: u32, per_minute: u32) -> Self {
        self.login_burst = burst;
        self.login_per_minute = per_minute;
        self
    }

    /// `register` requests one address may send: `burst` at once, then `per_minute`.
    pub fn set_register_rate(mut self, burst: u32, per_minute: u32) -> Self {
        self.register_burst = burst;
        self.register_per_minute = per_minute;
        self
    }

    /// Password hashing workers.
    pub fn hash_workers(&self) -> usize {
        self.hash_workers
    }

    /// Most unacknowledged messages stored from one sender to one recipient.
    pub fn set_max_pending_per_sender(mut self, v: usize) -> Self {
        self.max_pending_per_sender = v;
        self
    }

    /// Stored messages read from the database at a time when delivering after `login`.
    pub fn set_pending_page(mut self, v: usize) -> Self {
        self.pending_page = v.max(1);
        self
    }

    /// Database jobs that may wait in its queue.
    pub fn set_db_queue(mut self, v: usize) -> Self {
        self.db_queue = v.max(1);
        self
    }

    /// Size limit, quotas and time to live of files left for offline users.
    pub fn set_file_limits(mut self, v: FileLimits) -> Self {
        self.file_limits = v;
        self
    }

    /// The most bytes one `file-chunk` or `file-get` carries (cut to fit `--max-line`).
    pub fn set_file_chunk(mut self, v: usize) -> Self {
        self.file_chunk = v.max(1);
        self
    }

    /// `file-chunk` and `file-get` requests per second per connection (burst: a quarter
    /// second's worth), counted apart from other requests.
    pub fn set_file_chunk_rate(mut self, v: u32) -> Self {
        self.file_chunk_rate = v.max(1);
        self
    }

    /// How often expired files are deleted.
    pub fn set_file_sweep(mut self, v: Duration) -> Self {
        self.file_sweep = v.max(Duration::from_millis(10));
        self
    }

    /// The largest chunk: [`Config::set_file_chunk`], or less when the line limit needs it
    /// (base64 is 4 bytes for 3, plus the JSON around it).
    pub(crate) fn chunk_bytes(&self) -> usize {
        let fits = self.max_line.saturating_sub(256) / 4 * 3;
        self.file_chunk.min(fits).max(1)
    }

    /// Where files left for offline users are kept: `<db>.files/`.
    pub fn files_dir(&self) -> PathBuf {
        crate::files::dir_for(&self.db_path)
    }

    /// The relay whose credentials `relay` hands out; `None` answers `no-relay`.
    pub fn set_relay(mut self, v: Option<RelayGrant>) -> Self {
        self.relay = v;
        self
    }

    /// The directory the hub keeps of who is in a call with whom and where they signal
    /// from, for the TURN relay's permissions (give the relay's config the same value).
    pub fn set_call_peers(mut self, peers: CallPeers) -> Self {
        self.call_peers = peers;
        self
    }

    /// What the server counts while it runs.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// The database file.
    pub fn db_path(&self) -> &std::path::Path {
        &self.db_path
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            db_path,
            heartbeat,
            ring_timeout,
            login_timeout,
            write_timeout,
            max_line,
            max_payload,
            max_text,
            max_connections,
            max_per_address,
            rate_per_sec,
            rate_burst,
            max_watch,
            max_pending_messages,
            outbound_queue,
            throttle_capacity,
            address_failures_burst,
            address_failures_per_minute,
            hash_workers,
            hash_queue,
            login_burst,
            login_per_minute,
            register_burst,
            register_per_minute,
            max_pending_per_sender,
            pending_page,
            db_queue,
            relay,
            file_limits,
            file_chunk,
            file_chunk_rate,
            file_sweep,
            counters: _,
            call_peers: _,
        } = self;
        f.debug_struct("Config")
            .field("db_path", db_path)
            .field("heartbeat", heartbeat)
            .field("ring_timeout", ring_timeout)
            .field("login_timeout", login_timeout)
            .field("write_timeout", write_timeout)
            .field("max_line", max_line)
            .field("max_payload", max_payload)
            .field("max_text", max_text)
            .field("max_connections", max_connections)
            .field("max_per_address", max_per_address)
            .field("rate_per_sec", rate_per_sec)
            .field("rate_burst", rate_burst)
            .field("max_watch", max_watch)
            .field("max_pending_messages", max_pending_messages)
            .field("outbound_queue", outbound_queue)
            .field("throttle_capacity", throttle_capacity)
            .field("address_failures_burst", address_failures_burst)
            .field("address_failures_per_minute", address_failures_per_minute)
            .field("hash_workers", hash_workers)
            .field("hash_queue", hash_queue)
            .field("login_burst", login_burst)
            .field("login_per_minute", login_per_minute)
            .field("register_burst", register_burst)
            .field("register_per_minute", register_per_minute)
            .field("max_pending_per_sender", max_pending_per_sender)
            .field("pending_page", pending_page)
            .field("db_queue", db_queue)
            .field("relay", relay)
            .field("file_limits", file_limits)
            .field("file_chunk", file_chunk)
            .field("file_chunk_rate", file_chunk_rate)
            .field("file_sweep", file_sweep)
            .finish()
    }
}
