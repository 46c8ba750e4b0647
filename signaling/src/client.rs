//! The async client library: what the `magpie` binary and the tests use.
//!
//! [`connect_tls`] opens a TLS connection (what `magpie-server` serves by default;
//! [`connect`] is plain TCP, for `--plain` servers), reads the `hello`, and spawns a
//! driver task that owns the socket. [`Client`] (cheap to clone) sends typed requests and awaits their
//! replies, matched by `id`, so several may be in flight while events arrive on
//! [`Events`]. The driver sends a `ping` whenever nothing has been sent for a
//! heartbeat interval, so an idle client is not dropped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use magpie_signaling::client::{self, Incoming};
//! use magpie_signaling::tls::{KnownServers, Trust};
//! let server = "127.0.0.1:7400";
//! // The system's roots, or the certificate pinned for this server on first use.
//! let known = KnownServers::new("/home/alice/.config/magpie/known_servers");
//! let tls = Trust::RootsOrPin { known, server: server.into() }.client_config()?;
//! let (alice, mut events) = client::connect_tls(server, tls, Default::default()).await?;
//! alice.login("alice", "correct horse").await?;
//! let call = alice.invite("bob", serde_json::json!({"audio": "opus"})).await?;
//! while let Some(Incoming::Event(event)) = events.recv().await {
//!     println!("{call}: {event:?}");
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use crate::codec::LineCodec;
use crate::connection::{Connection, ConnectionError, Stream};
use crate::hub::sleep_until_some;
use crate::proto::{
    Accept, Ack, CallId, CallRecord, CallRef, Credentials, Empty, ErrorCode, Event, Hello,
    HistoryOk, HistoryQuery, Invite, InviteOk, LoginOk, MessageId, MessageSent, Presence,
    ProtocolError, RelayOk, RelayQuery, RelayServer, Request, SendMessage, ServerError,
    ServerMessage, Trickle, UserName, Watch, WatchOk, WhoOk, parse_server_message,
};
use crate::proto::{
    FileChunk, FileChunkOk, FileData, FileDone, FileGet, FileId, FileMeta, FileOffer, FilePut,
    FilePutOk, FileStored,
};

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The server name in `HOST:PORT` is not a DNS name or an IP address.
    #[error("{0:?} is not HOST:PORT with a DNS name or an IP address")]
    BadServerName(String),
    /// The TLS handshake failed (the server is not trusted, or does not speak TLS).
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    /// The server's certificate is not the one pinned for it.
    #[error("{0}")]
    ServerChanged(#[source] Box<crate::tls::PinMismatch>),
    /// The TLS error from a server that answered in plain text.
    #[error("TLS: the server did not answer in TLS (is it running with --plain?)")]
    NotTls,
    /// The connection failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The server sent something that is not the protocol.
    #[error("server sent an invalid message: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server did not greet within the timeout.
    #[error("no hello from the server")]
    NoHello,
    /// The server refused the request (or the connection).
    #[error("server: {0}")]
    Server(ServerError),
    /// A reply did not have the fields this request's reply needs.
    #[error("unexpected reply: {0}")]
    BadReply(#[source] serde_json::Error),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// Reading the file to leave, or writing the file taken, failed.
    #[error("file: {0}")]
    File(#[source] std::io::Error),
    /// The server's reply to `file-chunk` or `file-get` broke the protocol.
    #[error("file transfer: {0}")]
    FileProtocol(&'static str),
}

impl ClientError {
    /// The server's error code, if the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server(err) => Some(err.code),
            _ => None,
        }
    }
}

/// `file-chunk`s or `file-get`s in flight at once: eight 32 KiB chunks keep a link with
/// 100 ms of round trip at about 2.6 MB/s, and hold some 350 kB of lines.
const FILE_WINDOW: usize = 8;

/// Something the server sent unasked.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A protocol event.
    Event(Event),
    /// A connection-level error (no `id`), e.g. `session-replaced`; the server closes
    /// the connection after it.
    Error(ServerError),
}

/// When the client sends heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Every `heartbeat_secs` from the server's `hello`.
    Auto,
    /// At this interval.
    Every(Duration),
    /// Never (for tests of the server's heartbeat timeout).
    Off,
}

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    heartbeat: Heartbeat,
    hello_timeout: Duration,
    max_line: usize,
}

impl ClientConfig {
    /// How often to send heartbeats.
    pub fn set_heartbeat(mut self, v: Heartbeat) -> Self {
        self.heartbeat = v;
        self
    }

    /// How long to wait for the server's `hello`.
    pub fn set_hello_timeout(mut self, v: Duration) -> Self {
        self.hello_timeout = v;
        self
    }

    /// The longest line accepted from the server.
    pub fn set_max_line(mut self, v: usize) -> Self {
        self.max_line = v;
        self
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            heartbeat: Heartbeat::Auto,
            // The server greets at once; ten seconds covers a slow link or a busy server.
            hello_timeout: Duration::from_secs(10),
            // Replies like `history` can exceed the server's 64 KiB request limit.
            max_line: 1024 * 1024,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            heartbeat,
            hello_timeout,
            max_line,
        } = self;
        f.debug_struct("ClientConfig")
            .field("heartbeat", heartbeat)
            .field("hello_timeout", hello_timeout)
            .field("max_line", max_line)
            .finish()
    }
}

/// Events from the server, in order. Ends when the connection closes.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Incoming>,
}

impl Events {
    /// The next event; `None` once the connection is closed and all events are read.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }

    /// The next event if one is already here.
    pub fn try_recv(&mut self) -> Option<Incoming> {
        self.rx.try_recv().ok()
    }
}

struct Pending {
    request: Request,
    reply: oneshot::Sender<Result<Map<String, Value>, ServerError>>,
}

/// A connection to a signaling server. Clones share the connection, which closes
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    requests: mpsc::Sender<Pending>,
    hello: Hello,
}

/// Connects in plain TCP with default settings.
pub async fn connect(addr: impl ToSocketAddrs) -> Result<(Client, Events), ClientError> {
    connect_with(addr, ClientConfig::default()).await
}

/// Connects in plain TCP, waits for the `hello` and starts the driver task.
pub async fn connect_with(
    addr: impl ToSocketAddrs,
    config: ClientConfig,
) -> Result<(Client, Events), ClientError> {
    let socket = TcpStream::connect(addr)
        .await
        .map_err(ClientError::Connect)?;
    let _ = socket.set_nodelay(true);
    start(Stream::from(socket), config).await
}

/// Connects to `server` (`HOST:PORT`) in TLS, trusting what `tls` trusts (see
/// [`crate::tls::Trust`]); `HOST` is the name the certificate is checked for (and
/// sent as SNI). Then as [`connect_with`].
pub async fn connect_tls(
    server: &str,
    tls: Arc<rustls::ClientConfig>,
    config: ClientConfig,
) -> Result<(Client, Events), ClientError> {
    let name = server_name(server).ok_or_else(|| ClientError::BadServerName(server.into()))?;
    let socket = TcpStream::connect(server)
        .await
        .map_err(ClientError::Connect)?;
    let _ = socket.set_nodelay(true);
    let handshake = TlsConnector::from(tls).connect(name, socket);
    let stream = match timeout(config.hello_timeout, handshake).await {
        Err(_) => return Err(ClientError::NoHello),
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            if let Some(mismatch) = crate::tls::PinMismatch::in_handshake_error(&err) {
                return Err(ClientError::ServerChanged(Box::new(mismatch.clone())));
            }
            let plain = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some_and(|e| matches!(e, rustls::Error::InvalidMessage(_)));
            return Err(if plain {
                ClientError::NotTls
            } else {
                ClientError::Tls(err)
            });
        }
    };
    start(Stream::from(stream), config).await
}

/// The host of `HOST:PORT` (`[::1]:7400` for IPv6) as a TLS server name.
fn server_name(server: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    let (host, port) = server.trim().rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    rustls::pki_types::ServerName::try_from(host.to_owned()).ok()
}

/// Reads the `hello` on a connected stream and starts the driver task.
async fn start(stream: Stream, config: ClientConfig) -> Result<(Client, Events), ClientError> {
    let mut conn = Connection::new(stream, LineCodec::new(config.max_line));
    let first = timeout(config.hello_timeout, conn.read_line())
        .await
        .map_err(|_| ClientError::NoHello)??
        .ok_or(ClientError::Closed)?;
    let hello = match parse_server_message(&first)? {
        ServerMessage::Hello(hello) => hello,
        ServerMessage::Error(err) => return Err(ClientError::Server(err)),
        _ => return Err(ClientError::NoHello),
    };
    let heartbeat = match config.heartbeat {
        Heartbeat::Auto => Some(Duration::from_secs(hello.heartbeat_secs.max(1))),
        Heartbeat::Every(every) => Some(every),
        Heartbeat::Off => None,
    };
    let (requests, requests_rx) = mpsc::channel(64);
    let (events_tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(conn, requests_rx, events_tx, heartbeat));
    Ok((Client { requests, hello }, Events { rx }))
}

impl Client {
    /// The server's greeting.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Whether the connection has closed (requests would fail with [`ClientError::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }

    /// Creates an account.
    pub async fn register(&self, user: &str, password: &str) -> Result<(), ClientError> {
        let credentials = Credentials {
            user: user.into(),
            password: password.into(),
        };
        self.request::<Empty>(Request::Register(credentials))
            .await
            .map(drop)
    }

    /// Logs this connection in. Stored messages follow as `message` events.
    pub async fn login(&self, user: &str, password: &str) -> Result<LoginOk, ClientError> {
        let credentials = Credentials {
            user: user.into(),
            password: password.into(),
        };
        self.request(Request::Login(credentials)).await
    }

    /// A round trip to the server.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.request::<Empty>(Request::Ping).await.map(drop)
    }

    /// Users online now.
    pub async fn who(&self) -> Result<Vec<UserName>, ClientError> {
        Ok(self.request::<WhoOk>(Request::Who).await?.users)
    }

    /// Subscribes to `presence` events for `users`; returns their state now.
    pub async fn watch(&self, users: &[&str]) -> Result<Vec<Presence>, ClientError> {
        let users = users.iter().map(|&u| u.to_owned()).collect();
        Ok(self
            .request::<WatchOk>(Request::Watch(Watch { users }))
            .await?
            .users)
    }

    /// Calls `to` with a media offer (a JSON object, at most the `hello`'s
    /// `max_payload_bytes`). The callee's answer arrives as an `accepted` event.
    pub async fn invite(&self, to: &str, offer: Value) -> Result<CallId, ClientError> {
        let invite = Invite {
            to: to.into(),
            offer,
        };
        Ok(self
            .request::<InviteOk>(Request::Invite(invite))
            .await?
            .call_id)
    }

    /// Answers an incoming call.
    pub async fn accept(&self, call_id: CallId, answer: Value) -> Result<(), ClientError> {
        self.request::<Empty>(Request::Accept(Accept { call_id, answer }))
            .await
            .map(drop)
    }

    /// Declines an incoming call.
    pub async fn reject(&self, call_id: CallId) -> Result<(), ClientError> {
        self.request::<Empty>(Request::Reject(CallRef { call_id }))
            .await
            .map(drop)
    }

    /// Withdraws an outgoing call before it is answered.
    pub async fn cancel(&self, call_id: CallId) -> Result<(), ClientError> {
        self.request::<Empty>(Request::Cancel(CallRef { call_id }))
            .await
            .map(drop)
    }

    /// Credentials for the server's relay, for a party of the live call `call_id`.
    /// Refused with `not-in-call` or `no-relay`.
    pub async fn relay(&self, call_id: CallId) -> Result<Vec<RelayServer>, ClientError> {
        Ok(self
            .request::<RelayOk>(Request::Relay(RelayQuery { call_id }))
            .await?
            .servers)
    }

    /// Passes candidates found late to the other party of the live call `call_id`; it
    /// gets them in a `candidates` event.
    pub async fn candidates(
        &self,
        call_id: CallId,
        candidates: Vec<Value>,
    ) -> Result<(), ClientError> {
        let trickle = Trickle {
            call_id,
            candidates,
        };
        self.request::<Empty>(Request::Candidates(trickle))
            .await
            .map(drop)
    }

    /// Ends an answered call.
    pub async fn hangup(&self, call_id: CallId) -> Result<(), ClientError> {
        self.request::<Empty>(Request::Hangup(CallRef { call_id }))
            .await
            .map(drop)
    }

    /// Sends a chat message; stored until the recipient acknowledges it.
    pub async fn message(&self, to: &str, text: &str) -> Result<MessageSent, ClientError> {
        let message = SendMessage {
            to: to.into(),
            text: text.into(),
        };
        self.request(Request::Message(message)).await
    }

    /// Acknowledges received messages, deleting them from the server.
    pub async fn ack(&self, message_ids: &[MessageId]) -> Result<(), ClientError> {
        let ack = Ack {
            message_ids: message_ids.to_vec(),
        };
        self.request::<Empty>(Request::Ack(ack)).await.map(drop)
    }

    /// The most recent calls (up to 50), newest first.
    pub async fn history(&self) -> Result<Vec<CallRecord>, ClientError> {
        self.history_limit(None).await
    }

    /// The most recent `limit` calls (default 50, at most 200), newest first.
    pub async fn history_limit(&self, limit: Option<u32>) -> Result<Vec<CallRecord>, ClientError> {
        let query = HistoryQuery { limit };
        Ok(self
            .request::<HistoryOk>(Request::History(query))
            .await?
            .calls)
    }

    /// Leaves `file` on the server for `to` (who may be offline): `file-put`, then its
    /// bytes from `source` in `file-chunk`s, several in flight. `progress` is told the
    /// bytes the server has. Refusals (size limit, quotas, a wrong SHA-256) are
    /// [`ClientError::Server`]; the server removes a refused or abandoned upload.
    pub async fn leave_file<R: AsyncRead + Unpin>(
        &self,
        to: &str,
        file: FileMeta,
        mut source: R,
        mut progress: impl FnMut(u64),
    ) -> Result<FileStored, ClientError> {
        let size = file.size;
        let put = FilePut {
            to: to.into(),
            file,
        };
        let started: FilePutOk = self.request(Request::FilePut(put)).await?;
        let mut in_flight = VecDeque::new();
        let (mut offset, mut sent_any) = (0u64, false);
        let mut buf = vec![0u8; started.chunk_bytes.max(1)];
        loop {
            // An empty file is one empty chunk; any other, chunks up to its size.
            while in_flight.len() < FILE_WINDOW && (offset < size || !sent_any) {
                let want = usize::try_from(size - offset)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                source
                    .read_exact(&mut buf[..want])
                    .await
                    .map_err(ClientError::File)?;
                let chunk = FileChunk {
                    upload_id: started.upload_id,
                    offset,
                    data: BASE64.encode(&buf[..want]),
                };
                in_flight.push_back(self.queue(Request::FileChunk(chunk)).await?);
                offset += want as u64;
                sent_any = true;
            }
            let Some(next) = in_flight.pop_front() else {
                return Err(ClientError::FileProtocol(
                    "the upload ended without a store",
                ));
            };
            let reply: FileChunkOk = next.ok().await?;
            progress(reply.received);
            if let Some(stored) = reply.stored {
                return Ok(stored);
            }
        }
    }

    /// Takes the bytes of a file left for this user from `offset` to its end, handing
    /// them in order to `sink` (a failure there, a full disk say, stops the transfer),
    /// several `file-get`s in flight. Returns the bytes taken. Does not check the SHA-256
    /// nor send `file-done`: the caller does, once the file is safe.
    pub async fn take_file(
        &self,
        offer: &FileOffer,
        offset: u64,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, ClientError> {
        let size = offer.file.size;
        let get = |at: u64| {
            self.queue(Request::FileGet(FileGet {
                file_id: offer.file_id,
                offset: at,
            }))
        };
        let mut written = offset;
        // The first reply tells the server's chunk size; then several are in flight.
        let mut chunk: Option<u64> = None;
        let mut in_flight = VecDeque::new();
        let mut next_ask = offset;
        while written < size {
            let window = if chunk.is_some() { FILE_WINDOW } else { 1 };
            while in_flight.len() < window && next_ask < size {
                in_flight.push_back(get(next_ask).await?);
                next_ask = next_ask.saturating_add(chunk.unwrap_or(u64::MAX));
            }
            let next = in_flight
                .pop_front()
                .ok_or(ClientError::FileProtocol("nothing left to ask for"))?;
            let reply: FileData = next.ok().await?;
            let data = BASE64
                .decode(reply.data.as_bytes())
                .map_err(|_| ClientError::FileProtocol("file-get data is not base64"))?;
            if reply.offset != written || data.is_empty() {
                return Err(ClientError::FileProtocol("file-get replied out of order"));
            }
            if written + data.len() as u64 > size {
                return Err(ClientError::FileProtocol("file-get sent past the end"));
            }
            if chunk.is_none() {
                chunk = Some(data.len() as u64);
                next_ask = written + data.len() as u64;
            }
            sink(&data).map_err(ClientError::File)?;
            written += data.len() as u64;
        }
        Ok(written - offset)
    }

    /// Ends a file left for this user: taken (`received`) or declined; the server
    /// deletes it.
    pub async fn file_done(&self, file_id: FileId, received: bool) -> Result<(), ClientError> {
        let done = FileDone { file_id, received };
        self.request::<Empty>(Request::FileDone(done))
            .await
            .map(drop)
    }

    /// Sends any request and reads the `ok` reply as `T`.
    pub async fn request<T: DeserializeOwned>(&self, request: Request) -> Result<T, ClientError> {
        self.queue(request).await?.ok().await
    }

    /// Queues a request and returns its reply, to be awaited later. Requests leave in
    /// the order they are queued, which is what keeps a transfer's chunks in order
    /// with several in flight (tasks spawned per chunk would race to the queue).
    async fn queue(&self, request: Request) -> Result<Reply, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Pending { request, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(Reply(rx))
    }
}

/// The reply to a queued request.
struct Reply(oneshot::Receiver<Result<Map<String, Value>, ServerError>>);

impl Reply {
    /// Waits for the reply and reads its `ok` body as `T`.
    async fn ok<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        let body = self
            .0
            .await
            .map_err(|_| ClientError::Closed)?
            .map_err(ClientError::Server)?;
        serde_json::from_value(Value::Object(body)).map_err(ClientError::BadReply)
    }
}

/// Owns the socket: writes requests, routes replies by `id` and events to [`Events`],
/// and sends heartbeats.
async fn drive(
    mut conn: Connection,
    mut requests: mpsc::Receiver<Pending>,
    events: mpsc::UnboundedSender<Incoming>,
    heartbeat: Option<Duration>,
) {
    let mut waiting: HashMap<u64, Pending> = HashMap::new();
    let mut next_id: u64 = 1;
    let mut last_sent = Instant::now();
    loop {
        let ping_at = heartbeat.map(|every| last_sent + every);
        let outgoing = tokio::select! {
            request = requests.recv() => match request {
                Some(pending) => Some(pending),
                None => break,
            },
            line = conn.read_line() => {
                match line {
                    Ok(Some(line)) => route(&line, &mut waiting, &events),
                    Ok(None) => break,
                    Err(err) => {
                        debug!(%err, "connection failed");
                        break;
                    }
                }
                continue;
            }
            () = sleep_until_some(ping_at) => None,
        };
        let id = next_id;
        next_id += 1;
        let line = match &outgoing {
            Some(pending) => pending.request.encode(id),
            None => Request::Ping.encode(id),
        };
        if let Err(err) = conn.write_line(&line).await {
            debug!(%err, "write failed");
            break;
        }
        last_sent = Instant::now();
        if let Some(pending) = outgoing {
            waiting.insert(id, pending);
        }
    }
    // Dropping `waiting` fails every request still in flight with `Closed`.
    let _ = conn.shutdown().await;
}

fn route(
    line: &[u8],
    waiting: &mut HashMap<u64, Pending>,
    events: &mpsc::UnboundedSender<Incoming>,
) {
    let message = match parse_server_message(line) {
        Ok(message) => message,
        Err(err) => {
            warn!(%err, "ignoring an invalid line from the server");
            return;
        }
    };
    match message {
        ServerMessage::Ok { id, body } => {
            if let Some(pending) = waiting.remove(&id) {
                let _ = pending.reply.send(Ok(body));
            }
        }
        ServerMessage::Error(err) => match err.id.and_then(|id| waiting.remove(&id)) {
            Some(pending) => {
                let _ = pending.reply.send(Err(err));
            }
            None if err.id.is_none() => {
                let _ = events.send(Incoming::Error(err));
            }
            None => debug!(%err, "error for a heartbeat"),
        },
        ServerMessage::Event(event) => {
            let _ = events.send(Incoming::Event(event));
        }
        ServerMessage::Hello(_) => debug!("second hello ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_host_and_port() {
        for (server, host) in [
            ("localhost:7400", "localhost"),
            ("Magpie.Example.org:1", "magpie.example.org"),
            ("127.0.0.1:7400", "127.0.0.1"),
            ("[::1]:7400", "::1"),
        ] {
            let name = server_name(server).unwrap_or_else(|| panic!("{server}"));
            assert_eq!(name.to_str().to_lowercase(), host, "{server}");
        }
        for bad in [
            "",
            "localhost",
            "localhost:port",
            ":7400",
            "a b:1",
            "[::1:7400",
        ] {
            assert!(server_name(bad).is_none(), "{bad}");
        }
    }
}
