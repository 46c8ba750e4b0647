//! The hand-off between a capture thread and the encoder: bounded, dropping the oldest.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A bounded queue that never blocks the producer: when full, it drops its oldest item, so
/// a slow consumer sees fresh frames and latency never builds up behind it.
#[derive(Debug)]
pub struct DropOldestQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    capacity: usize,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> DropOldestQueue<T> {
    /// A queue holding at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.max(1)),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A producer that panicked mid-push leaves a consistent VecDeque: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds an item, dropping the oldest if full. Returns false once closed.
    pub fn push(&self, item: T) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        if state.items.len() == self.capacity {
            state.items.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        state.items.push_back(item);
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Takes the oldest item, waiting up to `timeout`. `None` on timeout, or when closed
    /// and drained.
    pub fn pop_timeout(&self, timeout: Duration) -> Option<T> {
        let state = self.lock();
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| s.items.is_empty() && !s.closed)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.items.pop_front()
    }

    /// Takes the oldest item without waiting.
    pub fn try_pop(&self) -> Option<T> {
        self.lock().items.pop_front()
    }

    /// Stops accepting items and wakes the consumer.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// True once closed (the producer ended).
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Items dropped because the consumer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_the_oldest_and_counts_it() {
        let q = DropOldestQueue::new(3);
        for i in 0..5 {
            assert!(q.push(i));
        }
        assert_eq!(q.dropped(), 2);
        let got: Vec<i32> = std::iter::from_fn(|| q.try_pop()).collect();
        assert_eq!(got, vec![2, 3, 4]);
    }

    #[test]
    fn closing_wakes_the_consumer_and_refuses_producers() {
        let q = std::sync::Arc::new(DropOldestQueue::new(1));
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || q.pop_timeout(Duration::from_secs(30)))
        };
        q.close();
        assert_eq!(consumer.join().unwrap(), None::<u8>);
        assert!(!q.push(1));
        assert!(q.is_closed() && q.is_empty());
    }

    #[test]
    fn zero_capacity_means_one() {
        let q = DropOldestQueue::new(0);
        q.push('a');
        q.push('b');
        assert_eq!(q.try_pop(), Some('b'));
    }
}
