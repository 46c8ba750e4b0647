//! One task per connection: reads requests, answers them, writes the events the hub
//! queues for it, and enforces the login timeout, heartbeat and rate limit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, instrument, warn};

use crate::auth::{Attempt, Hasher, LoginThrottle};
use crate::calls::CallError;
use crate::config::Config;
use crate::connection::{Connection, ConnectionError};
use crate::db::Db;
use crate::files::Refused as FileRefused;
use crate::hashing::{HashPool, PoolError};
use crate::hub::{CallAction, Command, ConnId, HubError, Outbound, sleep_until_some};
use crate::limits::{AddressRate, TokenBucket};
use crate::metrics::{METRICS, Metrics};
use crate::pii::Pii;
use crate::proto::{
    Ack, CallId, ChatMessage, Credentials, Empty, ErrorCode, Event, Hello, HistoryOk, HistoryQuery,
    InviteOk, LoginOk, MAX_HISTORY, MAX_TRICKLE, MessageSent, PROTOCOL_VERSION, RelayOk,
    RelayQuery, RelayServer, Request, SendMessage, ServerError, Trickle, UserName, WatchOk, WhoOk,
    encode_ok, parse_request,
};
use crate::store::{self, StoreError};

mod uploads;

/// After an over-long line: how long, and how much, to read and discard before closing.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;
/// What `server-busy` suggests: about the time the queue takes to move on.
const BUSY_RETRY_MS: u64 = 250;

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) db: Db,
    pub(crate) hub: mpsc::Sender<Command>,
    pub(crate) throttle: Mutex<LoginThrottle>,
    pub(crate) next_conn: AtomicU64,
    /// Where passwords are hashed: a few workers and a bounded queue.
    pub(crate) hashing: Arc<HashPool>,
    /// `login` requests per source address.
    pub(crate) login_rate: AddressRate,
    /// `register` requests per source address.
    pub(crate) register_rate: AddressRate,
}

impl Shared {
    pub(crate) fn new(config: Config, db: Db, hub: mpsc::Sender<Command>) -> Self {
        let throttle = LoginThrottle::new(
            config.throttle_capacity,
            config.address_failures_burst,
            config.address_failures_per_minute,
        );
        Self {
            throttle: Mutex::new(throttle),
            next_conn: AtomicU64::new(1),
            hashing: HashPool::new(config.hash_workers, config.hash_queue),
            login_rate: AddressRate::new(
                config.throttle_capacity,
                config.login_burst,
                config.login_per_minute,
            ),
            register_rate: AddressRate::new(
                config.throttle_capacity,
                config.register_burst,
                config.register_per_minute,
            ),
            config,
            db,
            hub,
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Exit {
    Closed,
    LineTooLong,
    LoginTimeout,
    HeartbeatTimeout,
    Replaced,
    Dropped,
    Shutdown,
}

pub(crate) struct Handler {
    shared: Arc<Shared>,
    conn: Connection,
    id: ConnId,
    /// The client's address, once [`Handler::run`] has been told it.
    peer: Option<SocketAddr>,
    user: Option<UserName>,
    /// Set by a successful `login`: stored messages follow its reply.
    deliver_pending: bool,
    outbound: Option<mpsc::Receiver<Outbound>>,
    connected: Instant,
    last_heard: Instant,
    bucket: TokenBucket,
    /// `file-chunk` and `file-get`, counted apart: a file is many of them.
    file_bucket: TokenBucket,
    /// The file this connection is uploading, if any; removed if the connection ends.
    upload: Option<uploads::ActiveUpload>,
    shutdown: broadcast::Receiver<()>,
}

impl Handler {
    pub(crate) fn new(
        shared: Arc<Shared>,
        conn: Connection,
        shutdown: broadcast::Receiver<()>,
    ) -> Self {
        let now = Instant::now();
        let id = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
        let bucket = TokenBucket::new(now, shared.config.rate_per_sec, shared.config.rate_burst);
        let file_rate = shared.config.file_chunk_rate;
        let file_bucket = TokenBucket::new(now, file_rate, (file_rate / 4).max(1));
        Self {
            shared,
            conn,
            id,
            peer: None,
            user: None,
            deliver_pending: false,
            outbound: None,
            connected: now,
            last_heard: now,
            bucket,
            file_bucket,
            upload: None,
            shutdown,
        }
    }

    /// Serves the connection until it ends, then takes the user offline.
    #[instrument(name = "conn", skip(self, peer), fields(id = self.id.0))]
    pub(crate) async fn run(mut self, peer: SocketAddr) {
        debug!(peer = %Pii(&peer), "connected");
        Metrics::inc(&METRICS.connections);
        METRICS.connections_open.fetch_add(1, Ordering::Relaxed);
        self.peer = Some(peer);
        let exit = self.serve().await;
        METRICS.connections_open.fetch_sub(1, Ordering::Relaxed);
        if self.upload.is_some() {
            let why = "the connection ended mid-upload".to_owned();
            let _ = self
                .abandon(FileRefused::Abandoned, ErrorCode::BadRequest, why)
                .await;
        }
        match &exit {
            Ok(exit) => debug!(?exit, "closed"),
            Err(err) => debug!(%err, "connection failed"),
        }
        if let Some(user) = self.user.take() {
            let _ = self
                .shared
                .hub
                .send(Command::Logout {
                    user,
                    conn: self.id,
                })
                .await;
        }
        let _ = timeout(self.shared.config.write_timeout, self.conn.shutdown()).await;
        if let Ok(Exit::LineTooLong | Exit::Shutdown) = exit {
            // Closing with unread input would reset the connection and could destroy
            // the error line, or the shutdown goodbye, in flight; read and discard for a
            // moment first (the gate saw a client lose its `server-shutdown` once).
            self.conn.discard_input(LINGER_BYTES, LINGER).await;
        }
    }

    async fn serve(&mut self) -> Result<Exit, ConnectionError> {
        let config = &self.shared.config;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            heartbeat_secs: config.heartbeat.as_secs().max(1),
            max_line_bytes: config.max_line,
            max_payload_bytes: config.max_payload,
            server: concat!("magpie-server/", env!("CARGO_PKG_VERSION")).into(),
        };
        self.write(&serde_json::to_vec(&hello).expect("hello serializes"))
            .await?;
        loop {
            let silence = self.shared.config.heartbeat * 3;
            let heartbeat_deadline = self.last_heard + silence;
            let login_deadline = self
                .user
                .is_none()
                .then(|| self.connected + self.shared.config.login_timeout);
            tokio::select! {
                line = self.conn.read_line() => match line {
                    Ok(Some(line)) => {
                        self.last_heard = Instant::now();
                        self.handle_line(&line).await?;
                    }
                    Ok(None) => return Ok(Exit::Closed),
                    Err(ConnectionError::Codec(err)) => {
                        self.refuse(ErrorCode::LineTooLong, &err.to_string()).await;
                        return Ok(Exit::LineTooLong);
                    }
                    Err(err) => return Err(err),
                },
                out = recv_some(&mut self.outbound) => match out {
                    Some(Outbound::Event(event)) => self.write(&event.encode()).await?,
                    Some(Outbound::Replaced) => {
                        self.user = None;
                        self.refuse(ErrorCode::SessionReplaced, "logged in from elsewhere").await;
                        return Ok(Exit::Replaced);
                    }
                    None => return Ok(Exit::Dropped),
                },
                () = sleep_until(heartbeat_deadline) => {
                    let why = format!("nothing received for {} s", silence.as_secs());
                    self.refuse(ErrorCode::HeartbeatTimeout, &why).await;
                    return Ok(Exit::HeartbeatTimeout);
                }
                () = sleep_until_some(login_deadline) => {
                    let why = format!(
                        "no login within {} s", self.shared.config.login_timeout.as_secs()
                    );
                    self.refuse(ErrorCode::LoginTimeout, &why).await;
                    return Ok(Exit::LoginTimeout);
                }
                _ = self.shutdown.recv() => {
                    self.flush_outbound().await?;
                    self.write(&Event::ServerShutdown.encode()).await?;
                    return Ok(Exit::Shutdown);
                }
            }
        }
    }

    /// Writes the events already queued (e.g. `hangup` for shutdown) before closing.
    async fn flush_outbound(&mut self) -> Result<(), ConnectionError> {
        let mut events = Vec::new();
        if let Some(rx) = &mut self.outbound {
            while let Ok(Outbound::Event(event)) = rx.try_recv() {
                events.push(event);
            }
        }
        for event in events {
            self.write(&event.encode()).await?;
        }
        Ok(())
    }

    async fn handle_line(&mut self, line: &[u8]) -> Result<(), ConnectionError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let parsed = parse_request(line);
        let id = parsed
            .as_ref()
            .ok()
            .map(|(id, _)| *id)
            .or_else(|| parsed.as_ref().err()?.id());
        if matches!(
            &parsed,
            Ok((_, Request::FileChunk(_) | Request::FileGet(_)))
        ) {
            // A transfer is paced, not refused: its chunks must arrive in order, and the
            // client keeps several in flight, so refusing one would break the upload. This
            // connection's lines wait (TCP pushes back on the sender); nobody else's do.
            while let Err(wait) = self.file_bucket.try_take(Instant::now()) {
                tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
            }
        } else if let Err(wait) = self.bucket.try_take(Instant::now()) {
            let err = ServerError::new(id, ErrorCode::RateLimited, "too many requests; slow down")
                .retry_after(millis(wait));
            return self.write(&err.encode()).await;
        }
        let (id, request) = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                debug!(%err, "bad request");
                if is_file_put(line) {
                    self.shared
                        .config
                        .counters
                        .files
                        .refuse(FileRefused::BadRequest);
                }
                return self.write(&err.to_reply().encode()).await;
            }
        };
        let reply = self.handle_request(id, request).await;
        let line = reply.unwrap_or_else(|mut err| {
            err.id = Some(id);
            err.encode()
        });
        self.write(&line).await?;
        if std::mem::take(&mut self.deliver_pending) {
            self.deliver_pending_messages().await?;
            self.deliver_pending_files().await?;
        }
        Ok(())
    }

    /// Writes the messages stored for this user, oldest first, one page at a time, so
    /// a full mailbox never sits in memory at once; each write waits for the client.
    async fn deliver_pending_messages(&mut self) -> Result<(), ConnectionError> {
        let Some(user) = self.user.clone() else {
            return Ok(());
        };
        let page = self.shared.config.pending_page;
        let mut after = None;
        loop {
            let name = user.clone();
            let Ok(messages) = self
                .db(move |c| store::pending_messages_page(c, &name, after, page))
                .await
            else {
                // Delivered again at the next login.
                return Ok(());
            };
            let full = messages.len() >= page;
            for message in messages {
                after = Some(message.message_id);
                self.write(&Event::Message(message).encode()).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn handle_request(&mut self, id: u64, request: Request) -> Result<Vec<u8>, ServerError> {
        let user = match (&self.user, request.needs_login()) {
            (Some(user), _) => Some(user.clone()),
            (None, false) => None,
            (None, true) => {
                let why = format!("log in before {}", request.kind());
                return Err(err(ErrorCode::NotLoggedIn, why));
            }
        };
        let user = user.as_ref();
        match request {
            Request::Register(credentials) => ok(id, &self.register(credentials).await?),
            Request::Login(credentials) => ok(id, &self.login(credentials).await?),
            Request::Ping => ok(id, &Empty {}),
            Request::Who => {
                let users = self.hub(|reply| Command::Who { reply }).await?;
                ok(id, &WhoOk { users })
            }
            Request::Watch(watch) => {
                let max = self.shared.config.max_watch;
                let too_many = || err(ErrorCode::TooLarge, format!("watch at most {max} users"));
                if watch.users.len() > max {
                    return Err(too_many());
                }
                let users = watch
                    .users
                    .iter()
                    .map(|u| target(u))
                    .collect::<Result<_, _>>()?;
                let user = logged_in(user)?.clone();
                let users = self
                    .hub(|reply| Command::Watch {
                        user,
                        users,
                        max,
                        reply,
                    })
                    .await?;
                ok(
                    id,
                    &WatchOk {
                        users: users.ok_or_else(too_many)?,
                    },
                )
            }
            Request::Invite(invite) => {
                self.check_payload("offer", &invite.offer)?;
                let to = target(&invite.to)?;
                let action = CallAction::Invite {
                    to: to.clone(),
                    offer: invite.offer,
                };
                match self.call(logged_in(user)?, action).await {
                    Ok(Some(call_id)) => ok(id, &InviteOk { call_id }),
                    Ok(None) => Err(err(ErrorCode::Internal, "no call id")),
                    Err(HubError::Offline) => Err(self.offline_or_unknown(to).await),
                    Err(HubError::Call(e)) => Err(call_error(e)),
                    Err(HubError::Stopped) => Err(err(ErrorCode::Internal, "server is stopping")),
                }
            }
            Request::Accept(accept) => {
                self.check_payload("answer", &accept.answer)?;
                let action = CallAction::Accept {
                    id: accept.call_id,
                    answer: accept.answer,
                };
                self.call_ok(id, logged_in(user)?, action).await
            }
            Request::Reject(call) => {
                self.call_ok(id, logged_in(user)?, CallAction::Reject(call.call_id))
                    .await
            }
            Request::Cancel(call) => {
                self.call_ok(id, logged_in(user)?, CallAction::Cancel(call.call_id))
                    .await
            }
            Request::Hangup(call) => {
                self.call_ok(id, logged_in(user)?, CallAction::Hangup(call.call_id))
                    .await
            }
            Request::Message(message) => ok(id, &self.message(logged_in(user)?, message).await?),
            Request::Ack(Ack { message_ids }) => {
                if message_ids.len() > 1000 {
                    return Err(err(
                        ErrorCode::TooLarge,
                        "ack at most 1000 messages at once",
                    ));
                }
                let user = logged_in(user)?.clone();
                self.db(move |c| store::ack_messages(c, &user, &message_ids))
                    .await?;
                ok(id, &Empty {})
            }
            Request::Relay(RelayQuery { call_id }) => {
                let user = logged_in(user)?.clone();
                ok(id, &self.relay(user, call_id).await?)
            }
            Request::Candidates(trickle) => {
                let user = logged_in(user)?.clone();
                self.trickle(user, trickle).await?;
                ok(id, &Empty {})
            }
            Request::FilePut(put) => {
                let user = logged_in(user)?.clone();
                ok(id, &self.file_put(&user, put).await?)
            }
            Request::FileChunk(chunk) => {
                let user = logged_in(user)?.clone();
                ok(id, &self.file_chunk(&user, chunk).await?)
            }
            Request::FileGet(get) => ok(id, &self.file_get(logged_in(user)?, get).await?),
            Request::FileDone(done) => ok(id, &self.file_done(logged_in(user)?, done).await?),
            Request::History(HistoryQuery { limit }) => {
                let limit = limit.unwrap_or(50).min(MAX_HISTORY);
                let user = logged_in(user)?.clone();
                let calls = self.db(move |c| store::history(c, &user, limit)).await?;
                ok(id, &HistoryOk { calls })
            }
        }
    }

    async fn register(&self, credentials: Credentials) -> Result<Empty, ServerError> {
        let user = UserName::parse(&credentials.user)
            .map_err(|e| err(ErrorCode::InvalidUsername, e.to_string()))?;
        if !credentials.password_len_ok() {
            let why = format!(
                "passwords are {} to {} bytes",
                Credentials::MIN_PASSWORD,
                Credentials::MAX_PASSWORD
            );
            return Err(err(ErrorCode::InvalidPassword, why));
        }
        self.address_rate(&self.shared.register_rate, "registrations")?;
        let password = credentials.password;
        let hash = self
            .hash(move |hasher| hasher.hash(&password))
            .await?
            .map_err(|e| internal(&e))?;
        let now_ms = unix_ms();
        let name = user.clone();
        let created = self
            .db(move |c| store::create_user(c, &name, &hash, now_ms))
            .await?;
        if !created {
            return Err(err(ErrorCode::UserExists, format!("{user} is taken")));
        }
        info!(user = %Pii(&user), "registered");
        Ok(Empty {})
    }

    async fn login(&mut self, credentials: Credentials) -> Result<LoginOk, ServerError> {
        if let Some(user) = &self.user {
            return Err(err(
                ErrorCode::AlreadyLoggedIn,
                format!("already logged in as {user}"),
            ));
        }
        let bad = || err(ErrorCode::BadCredentials, "wrong user name or password");
        let user = UserName::parse(&credentials.user).map_err(|_| bad())?;
        self.address_rate(&self.shared.login_rate, "logins")?;
        // Counted as a failure before the password is checked, so parallel guesses
        // cannot all reach the hasher before the first is recorded.
        let attempt = self.begin_attempt(&user)?;
        let name = user.clone();
        let stored = self.db(move |c| store::password_hash(c, &name)).await?;
        let password = credentials.password;
        let counters = self.shared.config.counters();
        // An unknown user costs the same hashing time, so timing does not tell.
        let verified = self
            .hash(move |hasher| {
                counters.verifications.fetch_add(1, Ordering::Relaxed);
                match stored {
                    Some(phc) => hasher.verify(&password, &phc),
                    None => hasher.verify_unknown_user(&password),
                }
            })
            .await;
        let matches = match verified {
            Ok(matches) => matches,
            Err(e) => {
                // Not checked: this attempt does not count against the pair.
                self.lock_throttle().abandoned(Instant::now(), attempt);
                return Err(e);
            }
        };
        if !matches {
            let lock = attempt.lock();
            Metrics::inc(&METRICS.login_failures);
            let locked_ms = lock.map_or(0, millis);
            info!(user = %Pii(&user), locked_ms, "wrong password");
            return Err(match lock {
                Some(lock) => bad().retry_after(millis(lock)),
                None => bad(),
            });
        }
        self.lock_throttle().succeeded(Instant::now(), attempt);
        let (tx, rx) = mpsc::channel(self.shared.config.outbound_queue);
        let conn = self.id;
        let name = user.clone();
        let ip = self.peer.map(|p| p.ip());
        self.hub(|done| Command::Login {
            user: name,
            conn,
            ip,
            tx,
            done,
        })
        .await?;
        self.outbound = Some(rx);
        self.user = Some(user.clone());
        Metrics::inc(&METRICS.logins);
        info!(user = %Pii(&user), "logged in");
        let name = user.clone();
        // Logged in already: a failure here only delays stored messages to the next login.
        let now_ms = unix_ms();
        let (pending_messages, pending_files) = self
            .db(move |c| {
                let messages = store::pending_count(c, &name)?;
                Ok((messages, crate::files::pending_count(c, &name, now_ms)?))
            })
            .await
            .unwrap_or_default();
        self.deliver_pending = pending_messages > 0 || pending_files > 0;
        Ok(LoginOk {
            user,
            pending_messages,
            pending_files,
        })
    }

    /// Runs password hashing on the pool; `server-busy` when its queue is full.
    async fn hash<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Hasher) -> R + Send + 'static,
    ) -> Result<R, ServerError> {
        match self.shared.hashing.run(job).await {
            Ok(result) => Ok(result),
            Err(PoolError::Busy) => {
                let counters = &self.shared.config.counters;
                counters.hashing_busy.fetch_add(1, Ordering::Relaxed);
                Err(err(ErrorCode::ServerBusy, "server busy; try again shortly")
                    .retry_after(BUSY_RETRY_MS))
            }
            Err(e) => Err(internal(&e)),
        }
    }

    /// A per-address rate for expensive requests.
    fn address_rate(&self, rate: &AddressRate, what: &str) -> Result<(), ServerError> {
        rate.try_take(Instant::now(), self.ip()).map_err(|wait| {
            let why = format!("too many {what} from your address; slow down");
            err(ErrorCode::RateLimited, why).retry_after(millis(wait))
        })
    }

    fn ip(&self) -> IpAddr {
        self.peer
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip())
    }

    fn begin_attempt(&self, user: &UserName) -> Result<Attempt, ServerError> {
        let ip = self
            .peer
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
        self.lock_throttle()
            .begin(Instant::now(), user, ip)
            .map_err(|wait| {
                let why = format!(
                    "too many wrong passwords; retry in {} s",
                    wait.as_secs().max(1)
                );
                err(ErrorCode::TooManyAttempts, why).retry_after(millis(wait))
            })
    }

    fn lock_throttle(&self) -> std::sync::MutexGuard<'_, LoginThrottle> {
        self.shared
            .throttle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn message(
        &self,
        from: &UserName,
        message: SendMessage,
    ) -> Result<MessageSent, ServerError> {
        if message.text.is_empty() {
            return Err(err(ErrorCode::BadRequest, "empty message"));
        }
        if message.text.len() > self.shared.config.max_text {
            let why = format!("messages are at most {} bytes", self.shared.config.max_text);
            return Err(err(ErrorCode::TooLarge, why));
        }
        let to = target(&message.to)?;
        let sent_at = unix_ms();
        let (sender, recipient, text) = (from.clone(), to.clone(), message.text.clone());
        let max = self.shared.config.max_pending_messages;
        let per_sender = self.shared.config.max_pending_per_sender;
        let stored = self
            .db(move |c| {
                if !store::user_exists(c, &recipient)? {
                    return Ok(Err(Refused::Unknown));
                }
                // One sender's share first: a stranger cannot fill the mailbox alone.
                if store::pending_from_count(c, &sender, &recipient)? >= per_sender {
                    return Ok(Err(Refused::SenderFull));
                }
                if store::pending_count(c, &recipient)? >= max {
                    return Ok(Err(Refused::MailboxFull));
                }
                store::store_message(c, &sender, &recipient, &text, sent_at).map(Ok)
            })
            .await?;
        let message_id = match stored {
            Ok(id) => id,
            Err(Refused::SenderFull) => {
                let why = format!(
                    "{to} has {per_sender} unread messages from you; wait for them to read some"
                );
                return Err(err(ErrorCode::MailboxFull, why));
            }
            Err(Refused::MailboxFull) => {
                let why = format!("{to} has {max} unread messages; wait for them to read some");
                return Err(err(ErrorCode::MailboxFull, why));
            }
            Err(Refused::Unknown) => {
                return Err(err(ErrorCode::UnknownUser, format!("no user {to}")));
            }
        };
        Metrics::inc(&METRICS.messages_stored);
        let chat = ChatMessage {
            message_id,
            from: from.clone(),
            text: message.text,
            sent_at,
        };
        let delivered = self
            .hub(|reply| Command::Deliver {
                to,
                event: Event::Message(chat),
                reply,
            })
            .await?;
        if delivered {
            Metrics::inc(&METRICS.messages_delivered);
        }
        Ok(MessageSent {
            message_id,
            sent_at,
            delivered,
        })
    }

    /// Credentials for the relay, for a party of the live call `call_id`.
    async fn relay(&self, user: UserName, call_id: CallId) -> Result<RelayOk, ServerError> {
        let counters = &self.shared.config.counters;
        let refused = |code, why: &str| {
            counters.relay_refused.fetch_add(1, Ordering::Relaxed);
            err(code, why)
        };
        let Some(grant) = &self.shared.config.relay else {
            return Err(refused(ErrorCode::NoRelay, "this server runs no relay"));
        };
        let name = user.clone();
        let in_call = self
            .hub(|reply| Command::InCall {
                user: name,
                call_id,
                reply,
            })
            .await?;
        if !in_call {
            let why = format!("no live call {call_id} of yours");
            return Err(refused(ErrorCode::NotInCall, &why));
        }
        let ttl_s = grant.ttl.as_secs();
        let expiry = unix_ms() / 1000 + ttl_s;
        let credentials = grant.secret.credentials(user.as_str(), expiry);
        counters.relay_granted.fetch_add(1, Ordering::Relaxed);
        debug!(user = %Pii(&user), call = %call_id, "relay credentials");
        Ok(RelayOk {
            servers: vec![RelayServer {
                url: grant.url.clone(),
                username: credentials.username,
                credential: credentials.password,
                ttl_s,
            }],
        })
    }

    /// Passes late candidates to the other party, after checking their count, shape
    /// and size; every refusal is counted.
    async fn trickle(&self, user: UserName, trickle: Trickle) -> Result<(), ServerError> {
        let counters = &self.shared.config.counters;
        let refused = |e: ServerError| {
            counters.candidates_refused.fetch_add(1, Ordering::Relaxed);
            e
        };
        if trickle.candidates.is_empty() || trickle.candidates.len() > MAX_TRICKLE {
            let why = format!("send 1 to {MAX_TRICKLE} candidates");
            return Err(refused(err(ErrorCode::TooLarge, why)));
        }
        if !trickle.candidates.iter().all(Value::is_object) {
            let why = "each candidate must be a JSON object";
            return Err(refused(err(ErrorCode::BadRequest, why)));
        }
        let list = Value::Array(trickle.candidates.clone());
        let size = serde_json::to_vec(&list).map_or(usize::MAX, |v| v.len());
        let max = self.shared.config.max_payload;
        if size > max {
            let why = format!("candidates are {size} bytes; at most {max}");
            return Err(refused(err(ErrorCode::TooLarge, why)));
        }
        let call_id = trickle.call_id;
        let passed = self
            .hub(|reply| Command::Trickle {
                user,
                trickle,
                reply,
            })
            .await?;
        if !passed {
            let why = format!("no live call {call_id} of yours");
            return Err(refused(err(ErrorCode::NotInCall, why)));
        }
        counters.candidates_passed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn check_payload(&self, what: &str, payload: &Value) -> Result<(), ServerError> {
        if !payload.is_object() {
            return Err(err(
                ErrorCode::BadRequest,
                format!("{what} must be a JSON object"),
            ));
        }
        let size = serde_json::to_vec(payload).map_or(usize::MAX, |v| v.len());
        let max = self.shared.config.max_payload;
        if size > max {
            return Err(err(
                ErrorCode::TooLarge,
                format!("{what} is {size} bytes; at most {max}"),
            ));
        }
        Ok(())
    }

    async fn offline_or_unknown(&self, to: UserName) -> ServerError {
        let name = to.clone();
        match self.db(move |c| store::user_exists(c, &name)).await {
            Ok(true) => err(ErrorCode::Offline, format!("{to} is not online")),
            Ok(false) => err(ErrorCode::UnknownUser, format!("no user {to}")),
            Err(e) => e,
        }
    }

    async fn call(&self, user: &UserName, action: CallAction) -> Result<Option<CallId>, HubError> {
        let user = user.clone();
        let (reply, rx) = oneshot::channel();
        self.shared
            .hub
            .send(Command::Call {
                user,
                conn: self.id,
                action,
                reply,
            })
            .await
            .map_err(|_| HubError::Stopped)?;
        rx.await.map_err(|_| HubError::Stopped)?
    }

    async fn call_ok(
        &self,
        id: u64,
        user: &UserName,
        action: CallAction,
    ) -> Result<Vec<u8>, ServerError> {
        match self.call(user, action).await {
            Ok(_) => ok(id, &Empty {}),
            Err(HubError::Call(e)) => Err(call_error(e)),
            Err(e) => Err(err(ErrorCode::Internal, e.to_string())),
        }
    }

    async fn hub<R>(
        &self,
        command: impl FnOnce(oneshot::Sender<R>) -> Command,
    ) -> Result<R, ServerError> {
        let (reply, rx) = oneshot::channel();
        let stopping = || err(ErrorCode::Internal, "server is stopping");
        self.shared
            .hub
            .send(command(reply))
            .await
            .map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())
    }

    async fn db<R, F>(&self, f: F) -> Result<R, ServerError>
    where
        R: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.shared.db.run(f).await.map_err(|e| internal(&e))
    }

    /// Best-effort connection-level error before closing.
    async fn refuse(&mut self, code: ErrorCode, message: &str) {
        let _ = self
            .write(&ServerError::new(None, code, message).encode())
            .await;
    }

    async fn write(&mut self, line: &[u8]) -> Result<(), ConnectionError> {
        match timeout(self.shared.config.write_timeout, self.conn.write_line(line)).await {
            Ok(written) => Ok(written?),
            Err(_) => {
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out").into())
            }
        }
    }
}

/// Whether a line that failed to parse was a `file-put` (its refusal is counted).
fn is_file_put(line: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Kind<'_>>(line).is_ok_and(|k| k.kind == "file-put")
}

/// Why a message was not stored.
enum Refused {
    Unknown,
    SenderFull,
    MailboxFull,
}

async fn recv_some(rx: &mut Option<mpsc::Receiver<Outbound>>) -> Option<Outbound> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn ok<T: Serialize>(id: u64, body: &T) -> Result<Vec<u8>, ServerError> {
    Ok(encode_ok(id, body))
}

fn err(code: ErrorCode, message: impl Into<String>) -> ServerError {
    ServerError::new(None, code, message)
}

fn internal(e: &dyn std::error::Error) -> ServerError {
    warn!(err = %e, "internal error");
    err(ErrorCode::Internal, "internal server error; try again")
}

fn logged_in(user: Option<&UserName>) -> Result<&UserName, ServerError> {
    user.ok_or_else(|| err(ErrorCode::NotLoggedIn, "log in first"))
}

/// A user named in a request: an invalid name cannot exist.
fn target(name: &str) -> Result<UserName, ServerError> {
    UserName::parse(name).map_err(|_| err(ErrorCode::UnknownUser, format!("no user {name:?}")))
}

fn call_error(e: CallError) -> ServerError {
    let code = match e {
        CallError::SelfCall => ErrorCode::BadRequest,
        CallError::AlreadyInCall => ErrorCode::AlreadyInCall,
        CallError::Busy(_) => ErrorCode::Busy,
        CallError::NoSuchCall(_) => ErrorCode::NoSuchCall,
        CallError::WrongState { .. } => ErrorCode::WrongCallState,
    };
    err(code, e.to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO),
    )
}
