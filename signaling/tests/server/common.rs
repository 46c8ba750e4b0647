use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use magpie_signaling::client::{self, Client, ClientConfig, Events, Incoming};
use magpie_signaling::proto::{CallId, ErrorCode, Event};
use magpie_signaling::{Config, server};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

pub const PASSWORD: &str = "correct horse";

/// Long enough for any real step, short enough that a hang fails instead of blocking CI.
/// In paused time it is virtual, so it must exceed every server timer a test waits for.
const STEP: Duration = Duration::from_secs(120);

pub fn init_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt().with_test_writer().init();
        }
    });
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub db: PathBuf,
    counters: std::sync::Arc<magpie_signaling::config::Counters>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), magpie_signaling::Error>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|c| c).await
    }

    pub async fn start_with(configure: impl FnOnce(Config) -> Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self::start_on(&dir.path().join("magpie.db"), configure).await;
        server._dir = Some(dir);
        server
    }

    /// A server on an existing database file (for restarts).
    pub async fn start_on(db: &Path, configure: impl FnOnce(Config) -> Config) -> Self {
        init_log();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = configure(Config::new(db));
        let counters = config.counters();
        let task = tokio::spawn(server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            db: db.to_owned(),
            counters,
            stop: Some(stop),
            task: Some(task),
            _dir: None,
        }
    }

    /// Stops the server gracefully and waits until it has finished.
    /// What the server counted so far.
    pub fn counters(&self) -> std::sync::Arc<magpie_signaling::config::Counters> {
        std::sync::Arc::clone(&self.counters)
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            timeout(STEP, task).await.unwrap().unwrap().unwrap();
        }
    }

    /// Stops the server and keeps its database directory for a restart.
    pub async fn stop_keep_db(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        self.stop().await;
        (self.db.clone(), self._dir.take())
    }

    pub async fn connect(&self) -> (Client, Events) {
        client::connect(self.addr).await.unwrap()
    }

    pub async fn connect_with(&self, config: ClientConfig) -> (Client, Events) {
        client::connect_with(self.addr, config).await.unwrap()
    }

    /// A registered, logged-in user.
    pub async fn user(&self, name: &str) -> (Client, Events) {
        self.user_with(name, ClientConfig::default()).await
    }

    /// Another session of a user registered already.
    pub async fn session(&self, name: &str) -> (Client, Events) {
        let (client, events) = self.connect().await;
        client.login(name, PASSWORD).await.unwrap();
        (client, events)
    }

    pub async fn user_with(&self, name: &str, config: ClientConfig) -> (Client, Events) {
        let (client, events) = self.connect_with(config).await;
        client.register(name, PASSWORD).await.unwrap();
        client.login(name, PASSWORD).await.unwrap();
        (client, events)
    }

    pub async fn raw(&self) -> Raw {
        Raw::connect(self.addr).await
    }

    /// A raw connection from another loopback address (e.g. `127.0.0.2`), with its
    /// `hello` read.
    pub async fn raw_from(&self, ip: &str) -> Raw {
        let mut raw = Raw::connect_from(self.addr, ip).await;
        raw.line().await.unwrap();
        raw
    }
}

/// The next event, failing the test if the connection ends or nothing comes.
pub async fn next_event(events: &mut Events) -> Event {
    match next(events).await {
        Incoming::Event(event) => event,
        Incoming::Error(err) => panic!("expected an event, got error {err}"),
    }
}

pub async fn next(events: &mut Events) -> Incoming {
    timeout(STEP, events.recv())
        .await
        .expect("no event in time")
        .expect("connection closed")
}

/// Asserts that the event stream ends (the server closed the connection).
pub async fn assert_closed(events: &mut Events) {
    while let Some(incoming) = timeout(STEP, events.recv())
        .await
        .expect("not closed in time")
    {
        if let Incoming::Event(Event::Presence(_)) = incoming {
            continue;
        }
        panic!("expected close, got {incoming:?}");
    }
}

pub fn code<T: std::fmt::Debug>(result: Result<T, client::ClientError>) -> ErrorCode {
    result.unwrap_err().code().expect("a server error")
}

/// A raw line-level connection, for what the client library would never send.
pub struct Raw {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (read, writer) = stream.into_split();
        Self {
            reader: BufReader::new(read),
            writer,
        }
    }

    /// Connects from `ip` (any 127.0.0.0/8 address reaches a server on 127.0.0.1).
    pub async fn connect_from(addr: SocketAddr, ip: &str) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(ip.parse().unwrap(), 0))
            .unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (read, writer) = stream.into_split();
        Self {
            reader: BufReader::new(read),
            writer,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    pub async fn line(&mut self) -> Option<serde_json::Value> {
        let mut line = String::new();
        let n = timeout(STEP, self.reader.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        (n > 0).then(|| serde_json::from_str(&line).unwrap())
    }

    /// Sends a line and returns the reply.
    pub async fn request(&mut self, line: &str) -> serde_json::Value {
        self.send(format!("{line}\n").as_bytes()).await;
        self.line().await.unwrap()
    }
}

/// `caller` invites `callee_name`; checks the callee hears `incoming-call` and the
/// caller `ringing`.
pub async fn ring(
    caller: &Client,
    caller_events: &mut Events,
    callee_name: &str,
    callee_events: &mut Events,
) -> CallId {
    let call = caller
        .invite(callee_name, json!({"sdp": "offer"}))
        .await
        .unwrap();
    let Event::IncomingCall { call_id, .. } = next_event(callee_events).await else {
        panic!("expected incoming-call");
    };
    assert_eq!(call_id, call);
    assert_eq!(
        next_event(caller_events).await,
        Event::Ringing { call_id: call }
    );
    call
}

/// [`ring`], then the callee accepts and the caller hears `accepted`.
pub async fn answered_call(
    caller: &Client,
    caller_events: &mut Events,
    (callee_name, callee): (&str, &Client),
    callee_events: &mut Events,
) -> CallId {
    let call = ring(caller, caller_events, callee_name, callee_events).await;
    callee.accept(call, json!({"sdp": "answer"})).await.unwrap();
    let Event::Accepted { call_id, .. } = next_event(caller_events).await else {
        panic!("expected accepted");
    };
    assert_eq!(call_id, call);
    call
}
