//! The database actor: one task owns the SQLite connection and runs jobs in order,
//! each on the blocking pool, so SQLite never stalls the async runtime and writes
//! queued before a read are visible to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::metrics::{METRICS, Metrics};
use crate::store::StoreError;

/// A handle to the database actor. Cheap to clone; the actor stops (and the
/// connection closes) once every handle is dropped and the queue is drained.
#[derive(Clone)]
pub(crate) struct Db {
    jobs: mpsc::Sender<Job>,
    /// Writes from [`Db::submit`] dropped because the queue was full.
    dropped: Arc<AtomicU64>,
}

/// Most jobs run in one trip to the blocking pool.
const MAX_BATCH: usize = 64;

/// Work for the actor.
struct Job(Box<dyn FnOnce(&mut Connection) + Send>);

impl Db {
    /// Starts the actor on `conn`, with room for `capacity` waiting jobs: [`Db::run`]
    /// waits for room, [`Db::submit`] drops (and counts) what does not fit.
    pub(crate) fn start(conn: Connection, capacity: usize) -> (Self, JoinHandle<()>) {
        let (jobs, mut rx) = mpsc::channel::<Job>(capacity.max(1));
        let conn = Arc::new(Mutex::new(conn));
        let actor = tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                METRICS
                    .db_queue_depth
                    .store(rx.len() as u64, Ordering::Relaxed);
                // One trip to the blocking pool for everything queued, still in order.
                let jobs = std::mem::take(&mut batch);
                let conn = Arc::clone(&conn);
                let ran = tokio::task::spawn_blocking(move || {
                    let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                    for job in jobs {
                        (job.0)(&mut conn);
                    }
                })
                .await;
                if let Err(err) = ran {
                    warn!(%err, "database job panicked");
                }
            }
        });
        let dropped = Arc::default();
        (Self { jobs, dropped }, actor)
    }

    /// Runs `f` on the database and waits for its result.
    pub(crate) async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            })))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `f` without waiting; a failure is logged. Later jobs see its effect.
    /// When the queue is full the write is dropped, logged and counted: the caller (the
    /// hub) must never stall behind the disk.
    pub(crate) fn submit<F>(&self, what: &'static str, f: F)
    where
        F: FnOnce(&mut Connection) -> Result<(), StoreError> + Send + 'static,
    {
        let job = Job(Box::new(move |conn: &mut Connection| {
            if let Err(err) = f(conn) {
                warn!(%err, what, "database write failed");
            }
        }));
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Metrics::inc(&METRICS.db_writes_dropped);
                warn!(what, "database queue full; write dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                warn!(what, "database closed; write dropped");
            }
        }
    }

    /// Writes dropped because the queue was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_is_bounded_and_overflowing_writes_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        let (db, actor) = Db::start(conn, 2);
        let (started_tx, started) = oneshot::channel();
        let (release, hold) = std::sync::mpsc::channel::<()>();
        db.submit("block", move |_| {
            let _ = started_tx.send(());
            let _ = hold.recv();
            Ok(())
        });
        // The actor holds the blocking job: the queue is empty and has room for two.
        started.await.unwrap();
        for _ in 0..5 {
            db.submit("fill", |_| Ok(()));
        }
        assert_eq!(db.dropped(), 3);
        release.send(()).unwrap();
        assert_eq!(db.run(|_| Ok(42)).await.unwrap(), 42);
        drop(db);
        actor.await.unwrap();
    }
}
