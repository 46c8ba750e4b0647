//! A small least-recently-used map with a fixed capacity, for per-address and per-user
//! records that strangers can create at will: the table never grows past its
//! capacity; when it is full, a new key pushes out the key touched longest ago.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A map of at most `capacity` entries; [`Lru::get_or_insert_with`] marks an entry as
/// used and, when a new key does not fit, forgets the least recently used one.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    capacity: usize,
    entries: HashMap<K, (u64, V)>,
    /// Use order: tick → key; the first entry is the least recently used.
    order: BTreeMap<u64, K>,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// An empty map holding at most `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }

    /// The entry for `key`, created by `make` if missing; either way it becomes the
    /// most recently used. Evicts the least recently used entry to make room.
    pub(crate) fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        self.tick += 1;
        let tick = self.tick;
        if let Some((used, _)) = self.entries.get(key) {
            self.order.remove(used);
        } else {
            if self.entries.len() >= self.capacity
                && let Some((_, oldest)) = self.order.pop_first()
            {
                self.entries.remove(&oldest);
            }
            self.entries.insert(key.clone(), (tick, make()));
        }
        self.order.insert(tick, key.clone());
        let (used, value) = self
            .entries
            .get_mut(key)
            .expect("the entry was found or inserted above");
        *used = tick;
        value
    }

    /// The entry for `key`, without changing the use order.
    pub(crate) fn peek(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(_, v)| v)
    }

    /// The entry for `key`, mutable, without changing the use order.
    pub(crate) fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(_, v)| v)
    }

    /// Forgets `key`.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let (used, value) = self.entries.remove(key)?;
        self.order.remove(&used);
        Some(value)
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let mut lru = Lru::new(2);
        *lru.get_or_insert_with(&"a", || 0) += 1;
        *lru.get_or_insert_with(&"b", || 0) += 1;
        // Touch "a": now "b" is the oldest.
        *lru.get_or_insert_with(&"a", || 0) += 1;
        *lru.get_or_insert_with(&"c", || 0) += 1;
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.peek(&"a"), Some(&2));
        assert_eq!(lru.peek(&"b"), None);
        assert_eq!(lru.peek(&"c"), Some(&1));
        assert_eq!(lru.remove(&"a"), Some(2));
        assert_eq!(lru.len(), 1);
    }

    #[test]
    fn many_keys_never_exceed_the_capacity() {
        let mut lru = Lru::new(100);
        for i in 0..10_000u32 {
            lru.get_or_insert_with(&i, || i);
            assert!(lru.len() <= 100);
        }
        assert_eq!(lru.order.len(), lru.len());
        assert_eq!(lru.peek(&9_999), Some(&9_999));
        assert_eq!(lru.peek(&9_899), None);
    }
}
