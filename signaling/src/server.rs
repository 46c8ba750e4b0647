//! The server shell: accept connections, enforce connection limits, run one
//! [`Handler`] task per connection, and shut down gracefully.
//!
//! As in mini-redis: shutdown is a broadcast every connection task listens to, and a
//! drop-based mpsc tells `run` when the last task has finished.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::time::timeout;
use tracing::{error, info, warn};

use crate::Error;
use crate::codec::LineCodec;
use crate::config::Config;
use crate::connection::Connection;
use crate::db::Db;
use crate::handler::{Handler, Shared};
use crate::hub::{Command, Hub};
use crate::limits::AddressLimiter;
use crate::pii::Pii;
use crate::proto::{ErrorCode, ServerError};
use crate::store;

/// Serves signaling on `listener` until `shutdown` completes, then tells every
/// client `server-shutdown`, ends calls (recorded with reason `server-shutdown`),
/// waits for connections to close and for the database to finish its writes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future,
) -> Result<(), Error> {
    let path = config.db_path.clone();
    let (conn, first_call_id) = tokio::task::spawn_blocking(move || {
        let conn = store::open(&path)?;
        let next = store::next_call_id(&conn)?;
        Ok::<_, store::StoreError>((conn, next))
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    let (db, db_task) = Db::start(conn, config.db_queue);

    let (hub_tx, hub_rx) = mpsc::channel(1024);
    let hub_task =
        tokio::spawn(Hub::new(db.clone(), config.ring_timeout, first_call_id).run(hub_rx));
    let (notify_shutdown, _) = broadcast::channel(1);
    let (shutdown_complete, mut all_closed) = mpsc::channel::<()>(1);
    let mut listener = Listener {
        listener,
        limit_connections: Arc::new(Semaphore::new(config.max_connections)),
        limit_per_address: AddressLimiter::new(config.max_per_address),
        codec: LineCodec::new(config.max_line),
        shared: Arc::new(Shared::new(config, db, hub_tx.clone())),
        notify_shutdown,
        shutdown_complete,
    };
    match listener.listener.local_addr() {
        Ok(addr) => info!(%addr, "serving"),
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
            let conn = Connection::new(socket, self.codec);
            let handler = Handler::new(
                Arc::clone(&self.shared),
                conn,
                self.notify_shutdown.subscribe(),
            );
            tokio::spawn(async move {
                handler.run(peer).await;
                drop((slot, permit, complete));
            });
        }
    }

    /// Tells a refused client why, briefly, off the accept loop.
    fn refuse(&self, socket: TcpStream, code: ErrorCode, why: &str, complete: mpsc::Sender<()>) {
        let line = ServerError::new(None, code, why).encode();
        let codec = self.codec;
        tokio::spawn(async move {
            let mut conn = Connection::new(socket, codec);
            let _ = timeout(Duration::from_secs(1), async {
                let _ = conn.write_line(&line).await;
                let _ = conn.shutdown().await;
            })
            .await;
            drop(complete);
        });
    }
}
