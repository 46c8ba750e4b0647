//! The database actor: one task owns the SQLite connection and runs jobs in order,
//! each on the blocking pool, so SQLite never stalls the async runtime and writes
//! queued before a read are visible to it.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::store::StoreError;

/// A handle to the database actor. Cheap to clone; the actor stops (and the
/// connection closes) once every handle is dropped and the queue is drained.
#[derive(Clone)]
pub(crate) struct Db {
    jobs: mpsc::UnboundedSender<Job>,
}

/// Most jobs run in one trip to the blocking pool.
const MAX_BATCH: usize = 64;

/// Work for the actor.
struct Job(Box<dyn FnOnce(&mut Connection) + Send>);

impl Db {
    /// Starts the actor on `conn`.
    pub(crate) fn start(conn: Connection) -> (Self, JoinHandle<()>) {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let conn = Arc::new(Mutex::new(conn));
        let actor = tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
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
        (Self { jobs }, actor)
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
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `f` without waiting; a failure is logged. Later jobs see its effect.
    pub(crate) fn submit<F>(&self, what: &'static str, f: F)
    where
        F: FnOnce(&mut Connection) -> Result<(), StoreError> + Send + 'static,
    {
        let job = Job(Box::new(move |conn: &mut Connection| {
            if let Err(err) = f(conn) {
                warn!(%err, what, "database write failed");
            }
        }));
        if self.jobs.send(job).is_err() {
            warn!(what, "database closed; write dropped");
        }
    }
}
