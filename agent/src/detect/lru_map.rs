//! The least-recently-used map behind [`Table`](super::table::Table).
//!
//! Entries live in one slab (a `Vec`), linked in order of use by slab index, and are
//! found through a hash table of slab indices (hashbrown's `HashTable`, hashed with
//! aHash keyed per process, so keys chosen by whoever sends the packets cannot be made
//! to collide). The detectors look up several tables for every event; against a map
//! of boxed list nodes (the `lru` crate, used before), a new entry hashes its key once
//! instead of twice and allocates nothing once the slab has grown, and a link is 4
//! bytes instead of a pointer. The order of use, and so what is evicted and the order
//! of `iter`, is the same.

use std::hash::Hash;

use ahash::RandomState;
use hashbrown::{HashTable, hash_table::Entry};

/// No entry: an end of the list, or an empty list.
const NIL: u32 = u32::MAX;

struct Node<K, V> {
    key: K,
    value: V,
    /// The entry used next after this one (toward the most recent), or [`NIL`].
    newer: u32,
    /// The entry used last before this one, or [`NIL`].
    older: u32,
}

/// A map that keeps its entries in order of use.
pub struct LruMap<K, V> {
    /// Entries; `None` in the slots of removed ones, which `free` lists for reuse.
    slots: Vec<Option<Node<K, V>>>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: RandomState,
    newest: u32,
    oldest: u32,
}

impl<K: Hash + Eq, V> Default for LruMap<K, V> {
    fn default() -> Self {
        LruMap {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
            newest: NIL,
            oldest: NIL,
        }
    }
}

impl<K: Hash + Eq, V> LruMap<K, V> {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Slab slots allocated (held, free, or reserved), for tests of memory use.
    #[cfg(test)]
    pub(super) fn allocated(&self) -> usize {
        self.slots.capacity()
    }

    fn node(&self, at: u32) -> &Node<K, V> {
        self.slots[at as usize].as_ref().expect("an indexed or linked slot holds an entry")
    }

    fn node_mut(&mut self, at: u32) -> &mut Node<K, V> {
        self.slots[at as usize].as_mut().expect("an indexed or linked slot holds an entry")
    }

    fn find(&self, key: &K) -> Option<u32> {
        let slots = &self.slots;
        let same = |at: &u32| slots[*at as usize].as_ref().is_some_and(|n| n.key == *key);
        self.index.find(self.hasher.hash_one(key), same).copied()
    }

    fn unlink(&mut self, at: u32) {
        let Node { newer, older, .. } = *self.node(at);
        match newer {
            NIL => self.newest = older,
            n => self.node_mut(n).older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.node_mut(o).newer = newer,
        }
    }

    fn link_newest(&mut self, at: u32) {
        let was = self.newest;
        let n = self.node_mut(at);
        (n.newer, n.older) = (NIL, was);
        match was {
            NIL => self.oldest = at,
            w => self.node_mut(w).newer = at,
        }
        self.newest = at;
    }

    fn touch(&mut self, at: u32) {
        if self.newest != at {
            self.unlink(at);
            self.link_newest(at);
        }
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: &K) -> bool {
        self.find(key).is_some()
    }

    /// The value of `key`, its recency unchanged.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.find(key).map(|at| &self.node(at).value)
    }

    /// The value of `key`, mutably, its recency unchanged.
    pub fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        let at = self.find(key)?;
        Some(&mut self.node_mut(at).value)
    }

    /// The value of `key`, which becomes the most recently used.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let at = self.find(key)?;
        self.touch(at);
        Some(&mut self.node_mut(at).value)
    }

    /// The value of `key`, made by `make` if missing; either way the most recently
    /// used. One hash of the key.
    pub fn get_or_insert_mut(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let hash = self.hasher.hash_one(&key);
        let LruMap { slots, free, index, hasher, .. } = self;
        let same = |at: &u32| slots[*at as usize].as_ref().is_some_and(|n| n.key == key);
        let rehash = |at: &u32| hasher.hash_one(&slots[*at as usize].as_ref().expect("indexed slots hold entries").key);
        let (at, new) = match index.entry(hash, same, rehash) {
            Entry::Occupied(o) => (*o.get(), false),
            Entry::Vacant(v) => {
                let at = free.pop().unwrap_or_else(|| u32::try_from(slots.len()).expect("fewer than 2^32 entries"));
                v.insert(at);
                (at, true)
            }
        };
        if new {
            let node = Some(Node { key, value: make(), newer: NIL, older: NIL });
            match slots.get_mut(at as usize) {
                Some(slot) => *slot = node,
                None => slots.push(node),
            }
            self.link_newest(at);
        } else {
            self.touch(at);
        }
        &mut self.node_mut(at).value
    }

    fn take(&mut self, at: u32) -> (K, V) {
        self.unlink(at);
        let n = self.slots[at as usize].take().expect("an indexed slot holds an entry");
        self.free.push(at);
        (n.key, n.value)
    }

    /// Removes `key`, returning its value.
    pub fn pop(&mut self, key: &K) -> Option<V> {
        let slots = &self.slots;
        let same = |at: &u32| slots[*at as usize].as_ref().is_some_and(|n| n.key == *key);
        let (at, _) = self.index.find_entry(self.hasher.hash_one(key), same).ok()?.remove();
        Some(self.take(at).1)
    }

    /// Removes the least recently used entry.
    pub fn pop_lru(&mut self) -> Option<(K, V)> {
        let at = self.oldest;
        if at == NIL {
            return None;
        }
        let hash = self.hasher.hash_one(&self.node(at).key);
        self.index.find_entry(hash, |i| *i == at).expect("a linked entry is indexed").remove();
        Some(self.take(at))
    }

    /// All entries, most recently used first.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let mut at = self.newest;
        std::iter::from_fn(move || {
            let n = self.slots.get(at as usize)?.as_ref()?;
            at = n.older;
            Some((&n.key, &n.value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(l: &LruMap<u32, u32>) -> Vec<u32> {
        l.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn keeps_the_order_of_use_through_every_operation() {
        let mut l: LruMap<u32, u32> = LruMap::default();
        for k in 0..5 {
            *l.get_or_insert_mut(k, || k * 10) += 1;
        }
        assert_eq!(keys(&l), [4, 3, 2, 1, 0]);
        assert_eq!(l.get_mut(&1).copied(), Some(11));
        assert_eq!(l.peek(&3), Some(&31), "peek does not touch");
        assert_eq!(*l.get_or_insert_mut(0, || 99), 1, "a held key keeps its value and is touched");
        assert_eq!(keys(&l), [0, 1, 4, 3, 2]);
        assert_eq!(l.pop(&4), Some(41));
        assert_eq!(l.pop(&4), None);
        assert_eq!(l.pop_lru(), Some((2, 21)));
        l.get_or_insert_mut(7, || 70);
        assert_eq!(keys(&l), [7, 0, 1, 3]);
        assert!(l.contains(&3) && !l.contains(&2));
        while l.pop_lru().is_some() {}
        assert!(l.is_empty() && keys(&l).is_empty());
        l.get_or_insert_mut(8, || 80);
        assert_eq!((keys(&l), l.len()), (vec![8], 1));
    }

    #[test]
    fn agrees_with_the_lru_crate_on_a_long_mixed_run() {
        let mut ours: LruMap<u32, u64> = LruMap::default();
        let mut theirs: lru::LruCache<u32, u64> = lru::LruCache::unbounded();
        let mut x = 0x2545_f491_u64;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = (x % 257) as u32;
            match x >> 60 {
                0..=5 => *ours.get_or_insert_mut(k, || step) += 1,
                6..=8 => {
                    if let Some(v) = ours.get_mut(&k) {
                        *v += 3;
                    }
                }
                9..=10 => assert_eq!(ours.pop(&k), theirs.pop(&k)),
                11 => assert_eq!(ours.pop_lru(), theirs.pop_lru()),
                _ => assert_eq!(ours.peek(&k), theirs.peek(&k)),
            }
            match x >> 60 {
                0..=5 => *theirs.get_or_insert_mut(k, || step) += 1,
                6..=8 => {
                    if let Some(v) = theirs.get_mut(&k) {
                        *v += 3;
                    }
                }
                _ => {}
            }
            if step % 997 == 0 {
                assert!(ours.iter().eq(theirs.iter()), "step {step}");
            }
        }
        assert!(ours.iter().eq(theirs.iter()));
        assert_eq!(ours.len(), theirs.len());
    }
}
