//! The password-hashing pool: a few workers, each with its own argon2 working memory
//! ([`Hasher`]), and a bounded queue in front of them. A login or registration that
//! finds the queue full is refused at once (`server-busy`) instead of waiting behind a
//! flood, so hashing never takes more than `workers` cores and the server's memory for
//! it is `workers` × 19 MiB, allocated once.
//!
//! A worker is a permit plus a [`Hasher`]; each job runs on tokio's blocking pool
//! holding both. Running there rather than on threads of our own keeps tokio's paused
//! clock (tests) from jumping past the login timeout while a hash is in progress.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use crate::auth::Hasher;

/// Why a job did not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// Every worker is busy and the queue is full.
    #[error("hashing queue is full")]
    Busy,
    /// The job panicked, or the runtime is shutting down.
    #[error("hashing job failed: {0}")]
    Failed(#[source] tokio::task::JoinError),
}

pub(crate) struct HashPool {
    /// One permit per worker.
    workers: Semaphore,
    /// The idle workers' working memory.
    hashers: Mutex<Vec<Hasher>>,
    /// Jobs waiting for a worker.
    queued: AtomicUsize,
    max_queue: usize,
}

/// A worker taken from the pool; dropping it gives the worker back.
struct WorkerPermit(Arc<HashPool>);

impl Drop for WorkerPermit {
    fn drop(&mut self) {
        self.0.workers.add_permits(1);
    }
}

/// Takes a job off the queue count however its wait ends (a dropped connection too).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HashPool {
    /// `workers` jobs at once (at least one), at most `max_queue` waiting.
    pub(crate) fn new(workers: usize, max_queue: usize) -> Arc<Self> {
        let workers = workers.max(1);
        Arc::new(Self {
            workers: Semaphore::new(workers),
            hashers: Mutex::new((0..workers).map(|_| Hasher::default()).collect()),
            queued: AtomicUsize::new(0),
            max_queue,
        })
    }

    /// Runs `job` on a worker's [`Hasher`], or `Err(Busy)` at once if the queue is
    /// full. The job finishes (and its worker returns to the pool) even if the caller
    /// stops waiting.
    pub(crate) async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        job: impl FnOnce(&mut Hasher) -> R + Send + 'static,
    ) -> Result<R, PoolError> {
        match self.workers.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                if self.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queue {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    return Err(PoolError::Busy);
                }
                let _queued = Queued(&self.queued);
                let permit = self.workers.acquire().await.map_err(|_| PoolError::Busy)?;
                permit.forget();
            }
        }
        // From here the worker is ours until the job ends, wherever that happens.
        let permit = WorkerPermit(Arc::clone(self));
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut hasher = pool.lock().pop().unwrap_or_default();
            let result = job(&mut hasher);
            pool.lock().push(hasher);
            drop(permit);
            result
        })
        .await
        .map_err(PoolError::Failed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Hasher>> {
        self.hashers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Jobs waiting for a worker now.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_workers_come_back() {
        let pool = HashPool::new(1, 1);
        let (release, hold) = mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let busy = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.run(move |_| {
                    let _ = started_tx.send(());
                    let _ = hold.recv();
                })
                .await
            })
        };
        started.await.unwrap();
        let queued = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(|_| 7).await })
        };
        while pool.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(pool.run(|_| 8).await, Err(PoolError::Busy)));
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap().unwrap(), 7);
        assert_eq!(pool.queued(), 0);
        assert_eq!(pool.run(|_| 9).await.unwrap(), 9);
        assert_eq!(pool.lock().len(), 1, "the worker's hasher is back");
    }
}
