//! A bounded table: an LRU map that counts what it evicts.
//!
//! Every piece of per-flow or per-name state in the detectors lives in one of these,
//! so that no input, however hostile, grows memory without bound.

use std::hash::Hash;

use super::lru_map::LruMap;

/// An LRU map with a fixed capacity and an eviction counter.
pub struct Table<K: Hash + Eq, V> {
    name: &'static str,
    /// Grows with use: allocating the whole capacity up front would be, for a
    /// configured million entries, memory an idle agent never needs.
    map: LruMap<K, V>,
    capacity: usize,
    evictions: u64,
}

impl<K: Hash + Eq + Clone, V> Table<K, V> {
    /// A table called `name` (as reported in `tracked` / `evictions`) holding at most
    /// `capacity` entries.
    pub fn new(name: &'static str, capacity: u64) -> Table<K, V> {
        Table { name, map: LruMap::default(), capacity: clamp_capacity(capacity), evictions: 0 }
    }

    /// The table's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the next new key would evict one.
    pub fn is_full(&self) -> bool {
        self.map.len() >= self.capacity
    }

    /// The entry for `key`, marking it recently used.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// The entry for `key` without touching its recency.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.map.peek(key)
    }

    /// The entry for `key`, mutably, without touching its recency.
    pub fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.peek_mut(key)
    }

    /// The entry for `key`, created with `make` if missing (evicting the least
    /// recently used entry when full).
    pub fn entry(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        // Length first: looking the key up twice costs a second hash, only worth it
        // when the table is full.
        if self.map.len() >= self.capacity && !self.map.contains(&key) {
            self.map.pop_lru();
            self.evictions += 1;
        }
        self.map.get_or_insert_mut(key, make)
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.pop(key)
    }

    /// Removes `key` for want of room elsewhere (its partner in a full queue was
    /// evicted), counting it as an eviction when it was held.
    pub fn evict(&mut self, key: &K) -> Option<V> {
        let gone = self.map.pop(key);
        self.evictions += u64::from(gone.is_some());
        gone
    }

    /// Takes every entry out, least recently used first (not counted as evictions).
    pub fn drain(&mut self) -> Vec<(K, V)> {
        std::iter::from_fn(|| self.map.pop_lru()).collect()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// All entries, most recently used first.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    /// Drops the entries for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let gone: Vec<K> = self.map.iter().filter(|(k, v)| !keep(k, v)).map(|(k, _)| k.clone()).collect();
        for k in gone {
            self.map.pop(&k);
        }
    }

    /// Changes the capacity (dropping the least recently used entries, counted as
    /// evictions, when it shrinks).
    pub fn resize(&mut self, capacity: u64) {
        self.capacity = clamp_capacity(capacity);
        while self.map.len() > self.capacity {
            self.map.pop_lru();
            self.evictions += 1;
        }
    }
}

/// A capacity of at least one entry that fits in memory's index type.
pub(super) fn clamp_capacity(capacity: u64) -> usize {
    capacity.clamp(1, usize::MAX as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_at_capacity_and_counts_evictions() {
        let mut t: Table<u32, u32> = Table::new("t", 3);
        for i in 0..10 {
            *t.entry(i, || 0) += 1;
        }
        assert_eq!((t.len(), t.evictions()), (3, 7));
        assert!(t.peek(&9).is_some() && t.peek(&0).is_none());
        t.entry(9, || 100);
        assert_eq!(t.peek(&9), Some(&1), "an existing entry is not replaced");
        t.resize(1);
        assert_eq!((t.len(), t.evictions()), (1, 9));
    }

    #[test]
    fn evicts_the_least_recently_used_not_the_oldest_inserted() {
        let mut t: Table<u32, u32> = Table::new("t", 3);
        for i in 0..3 {
            t.entry(i, || i);
        }
        // 0 is the oldest entry, but reading it (or finding it again) makes it the
        // most recently used: 1, then 2, are the ones to go.
        assert_eq!(t.get_mut(&0).copied(), Some(0));
        t.entry(3, || 3);
        assert!(t.peek(&1).is_none(), "1 was the least recently used");
        assert!(t.peek(&0).is_some(), "0 was used after 1 and 2: a FIFO would have dropped it");
        t.entry(0, || 99);
        t.entry(4, || 4);
        assert!(t.peek(&2).is_none() && t.peek(&0) == Some(&0), "entry() on a held key touches it too");
        // peek does not touch: 3 is now the least recently used, though just peeked.
        assert!(t.peek(&3).is_some());
        t.entry(5, || 5);
        assert!(t.peek(&3).is_none());
        assert_eq!((t.len(), t.evictions()), (3, 3));
    }

    #[test]
    fn evict_counts_only_what_was_held_and_drain_empties_oldest_first() {
        let mut t: Table<u32, u32> = Table::new("t", 5);
        for i in 0..4 {
            t.entry(i, || i * 10);
        }
        assert_eq!((t.evict(&1), t.evict(&1), t.evict(&7)), (Some(10), None, None));
        assert_eq!(t.evictions(), 1);
        t.get_mut(&0);
        assert_eq!(t.drain(), vec![(2, 20), (3, 30), (0, 0)]);
        assert!(t.is_empty());
        assert_eq!(t.evictions(), 1, "draining is not evicting");
    }

    #[test]
    fn a_huge_capacity_allocates_nothing_up_front() {
        let t: Table<u64, [u8; 64]> = Table::new("big", 1 << 40);
        assert_eq!(t.map.allocated(), 0, "nothing is allocated for the capacity");
        assert!(t.is_empty());
    }
}
