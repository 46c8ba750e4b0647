//! The server shell: accept connections, enforce connection limits, run one
//! [`Handler`] task per connection, and shut down gracefully.
//!
//! [`run_tls`] is [`run`] with a TLS handshake between accept and handler: the handshake
//! runs in the connection's task (never on the accept loop), within the login timeout,
//! after the connection limits have admitted it.
//!
//! As in mini-redis: shutdown is a broadcast every connection task listens to, and a
//! drop-based mpsc tells `run` when the last task has finished.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use crate::Error;
use crate::codec::LineCodec;
use crate::config::Config;
use crate::connection::{Connection, Stream};
use crate::db::Db;
use crate::handler::{Handler, Shared};
use crate::hub::{Command, Hub};
use crate::limits::AddressLimiter;
use crate::pii::Pii;
use crate::proto::{ErrorCode, ServerError};
use crate::{files, store};

/// Serves signaling in plain TCP on `listener` until `shutdown` completes, then tells
/// every client `server-shutdown`, ends calls (recorded with reason `server-shutdown`),
/// waits for connections to close and for the database to finish its writes.
///
/// Plain TCP is for `nc` and for tests in one process; [`run_tls`] is what
/// `magpie-server` runs unless told `--plain`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future,
) -> Result<(), Error> {
    serve(listener, None, config, shutdown).await
}

/// [`run`], with every connection in TLS under `tls` (see [`crate::tls::Identity`]).
pub async fn run_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    config: Config,
    shutdown: impl Future,
) -> Result<(), Error> {
    serve(listener, Some(TlsAcceptor::from(tls)), config, shutdown).await
}

async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    config: Config,
    shutdown: impl Future,
) -> Result<(), Error> {
    let path = config.db_path.clone();
    let files_dir = config.files_dir();
    let (conn, first_call_id) = tokio::task::spawn_blocking(move || {
        let conn = store::open(&path)?;
        let next = store::next_call_id(&conn)?;
        // Uploads a previous run never finished, and files without a row, go.
        let kept = files::recover(&conn)?;
        std::fs::create_dir_all(&files_dir)?;
        let removed = files::remove_orphans(&files_dir, &kept)?;
        if removed > 0 {
            info!(removed, "removed unfinished uploads of a previous run");
        }
        Ok::<_, Error>((conn, next))
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    let (db, db_task) = Db::start(conn, config.db_queue);
    let sweep_task = tokio::spawn(sweep(db.clone(), config.clone()));

    let (hub_tx, hub_rx) = mpsc::channel(1024);
    let hub_task = tokio::spawn(
        Hub::new(db.clone(), config.ring_timeout, first_call_id)
            .set_call_peers(config.call_peers.clone())
            .run(hub_rx),
    );
    let (notify_shutdown, _) = broadcast::channel(1);
    let (shutdown_complete, mut all_closed) = mpsc::channel::<()>(1);
    let mut listener = Listener {
        listener,
        tls,
        limit_connections: Arc::new(Semaphore::new(config.max_connections)),
        limit_per_address: AddressLimiter::new(config.max_per_address),
        codec: LineCodec::new(config.max_line),
        shared: Arc::new(Shared::new(config, db, hub_tx.clone())),
        notify_shutdown,
        shutdown_complete,
    };
    let security = if listener.tls.is_some() {
        "tls"
    } else {
        "plain"
    };
    match listener.listener.local_addr() {
        Ok(addr) => info!(%addr, security, "serving"),
        Err(err) => warn!(%err, "serving on an unknown address"),
    }

    tokio::select! {
        () = listener.accept_loop() => {}
        _ = shutdown => info!("shutting down"),
    }

    // End calls first, so their `hangup` events are queued before the goodbye.
    let (done, ended) = oneshot::channel();
    if hub_tx.send(Command::Shutdown { done }).await.is_ok() {
        let _ = ended.await;
    }
    drop(hub_tx);
    let Listener {
        notify_shutdown,
        shutdown_complete,
        shared,
        ..
    } = listener;
    let _ = notify_shutdown.send(());
    drop(shutdown_complete);
    drop(shared);
    let _ = all_closed.recv().await;
    sweep_task.abort();
    let _ = sweep_task.await;
    if let Err(err) = hub_task.await {
        error!(%err, "hub task failed");
    }
    if let Err(err) = db_task.await {
        error!(%err, "database task failed");
    }
    info!("stopped");
    Ok(())
}

struct Listener {
    listener: TcpListener,
    /// Present unless the server runs in plain TCP.
    tls: Option<TlsAcceptor>,
    /// Caps simultaneous connections; a permit travels with each connection task.
    limit_connections: Arc<Semaphore>,
    /// Caps simultaneous connections per source address.
    limit_per_address: Arc<AddressLimiter>,
    codec: LineCodec,
    shared: Arc<Shared>,
    /// Tells every connection task to say goodbye and close.
    notify_shutdown: broadcast::Sender<()>,
    /// Held by every connection task; `recv` on the other end returns once all are gone.
    shutdown_complete: mpsc::Sender<()>,
}

impl Listener {
    async fn accept_loop(&mut self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let (socket, peer) = match self.listener.accept().await {
                Ok(accepted) => {
                    backoff = Duration::from_millis(10);
                    accepted
                }
                Err(err) => {
                    // Usually out of file descriptors: wait for some to free up.
                    warn!(%err, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let complete = self.shutdown_complete.clone();
            let Some(slot) = self.limit_per_address.acquire(peer.ip()) else {
                info!(peer = %Pii(&peer), "refused: too many connections from this address");
                let why = "too many connections from your address";
                self.refuse(socket, ErrorCode::TooManyFromAddress, why, complete);
                continue;
            };
            let Ok(permit) = Arc::clone(&self.limit_connections).try_acquire_owned() else {
                info!(peer = %Pii(&peer), "refused: server full");
                self.refuse(
                    socket,
                    ErrorCode::TooManyConnections,
                    "server is full",
                    complete,
                );
                continue;
            };
            let (tls, codec, shared) = (self.tls.clone(), self.codec, Arc::clone(&self.shared));
            let mut shutdown = self.notify_shutdown.subscribe();
            tokio::spawn(async move {
                let handshake = timeout(shared.config.login_timeout, secure(tls, socket));
                let stream = tokio::select! {
                    stream = handshake => stream,
                    _ = shutdown.recv() => return,
                };
                match stream {
                    Ok(Ok(stream)) => {
                        let conn = Connection::new(stream, codec);
                        Handler::new(shared, conn, shutdown).run(peer).await;
                    }
                    Ok(Err(err)) => debug!(peer = %Pii(&peer), %err, "TLS handshake failed"),
                    Err(_) => debug!(peer = %Pii(&peer), "TLS handshake timed out"),
                }
                drop((slot, permit, complete));
            });
        }
    }

    /// Tells a refused client why, briefly, off the accept loop.
    fn refuse(&self, socket: TcpStream, code: ErrorCode, why: &str, complete: mpsc::Sender<()>) {
        let line = ServerError::new(None, code, why).encode();
        let (codec, tls) = (self.codec, self.tls.clone());
        tokio::spawn(async move {
            let _ = timeout(Duration::from_secs(1), async {
                let Ok(stream) = secure(tls, socket).await else {
                    return;
                };
                let mut conn = Connection::new(stream, codec);
                let _ = conn.write_line(&line).await;
                let _ = conn.shutdown().await;
            })
            .await;
            drop(complete);
        });
    }
}

/// The stream a handler reads: `socket` itself, or TLS over it once the handshake is done.
async fn secure(tls: Option<TlsAcceptor>, socket: TcpStream) -> std::io::Result<Stream> {
    match tls {
        None => Ok(Stream::from(socket)),
        Some(acceptor) => Ok(Stream::from(acceptor.accept(socket).await?)),
    }
}

/// Every `file_sweep`: deletes the files (and unfinished uploads) past their time to live.
async fn sweep(db: Db, config: Config) {
    let dir = config.files_dir();
    let stats = &config.counters.files;
    let mut every = tokio::time::interval(config.file_sweep);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now_ms = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let gone = match db.run(move |c| files::expire(c, now_ms)).await {
            Ok(gone) => gone,
            Err(err) => {
                warn!(%err, "file sweep");
                continue;
            }
        };
        for (id, size) in gone {
            // A stored file, or the part file of an upload that outlived the time to live.
            let stored = tokio::fs::remove_file(files::stored_path(&dir, id)).await;
            let part = tokio::fs::remove_file(files::part_path(&dir, id)).await;
            if stored.is_err() && part.is_err() {
                debug!(file = %id, "expired file already gone");
            }
            files::FileStats::add(&stats.expired, 1);
            files::FileStats::add(&stats.expired_bytes, size);
            info!(file = %id, size, "file expired");
        }
    }
}
