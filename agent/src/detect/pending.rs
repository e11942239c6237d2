//! Findings to (re)build, with the event time of their latest change.
//!
//! A detector updates its state on every event but builds a finding (strings, JSON
//! maps) only when the findings are next read: after each batch of events live, once
//! at the end of a replay. A storm answered a million times costs one build per batch,
//! not a million. A replay holds its marks until the end, so the marks live in a
//! bounded [`Table`] (`output.pending_cap`): when one fills up, the detectors build
//! the marked findings at once ([`crate::detect::Detectors::on_event`]) instead of
//! letting a mark go. Only a mark that arrives while its table is full and cannot be
//! flushed first is dropped, and counted.

use std::hash::Hash;

use super::table::Table;

/// Keys marked since the last drain, with the time of their latest mark.
pub struct Pending<K: Hash + Eq> {
    marks: Table<K, u64>,
}

impl<K: Hash + Eq + Clone> Pending<K> {
    /// Marks called `name` (in `tracked` / `evictions`), at most `capacity` of them.
    pub fn new(name: &'static str, capacity: u64) -> Pending<K> {
        Pending { marks: Table::new(name, capacity) }
    }

    /// Marks `key` as changed at `now`.
    pub fn mark(&mut self, key: &K, now: u64) {
        match self.marks.get_mut(key) {
            Some(t) => *t = (*t).max(now),
            None => {
                self.marks.entry(key.clone(), || now);
            }
        }
    }

    /// Every marked key with its time, in the order of their latest marks.
    pub fn drain(&mut self) -> Vec<(K, u64)> {
        self.marks.drain()
    }

    /// Whether the next new key would drop the least recently marked one.
    pub fn is_full(&self) -> bool {
        self.marks.is_full()
    }

    /// Whether nothing is marked.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// Changes the capacity (dropping the least recently marked keys, counted).
    pub fn resize(&mut self, capacity: u64) {
        self.marks.resize(capacity);
    }

    /// (name, keys held, keys evicted), for `tracked` and `evictions`.
    pub fn occupancy(&self) -> (&'static str, usize, u64) {
        (self.marks.name(), self.marks.len(), self.marks.evictions())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_key_with_the_latest_time_in_mark_order() {
        let mut p = Pending::new("p", 10);
        p.mark(&"a", 5);
        p.mark(&"b", 6);
        p.mark(&"a", 9);
        assert_eq!(p.drain(), vec![("b", 6), ("a", 9)]);
        assert!(p.is_empty());
    }

    #[test]
    fn past_its_cap_the_least_recently_marked_key_is_dropped_and_counted() {
        let mut p = Pending::new("p", 2);
        p.mark(&"a", 1);
        p.mark(&"b", 2);
        p.mark(&"a", 3);
        p.mark(&"c", 4);
        assert_eq!(p.occupancy(), ("p", 2, 1));
        assert_eq!(p.drain(), vec![("a", 3), ("c", 4)], "b was marked least recently");
        p.mark(&"d", 5);
        assert_eq!(p.occupancy(), ("p", 1, 1));
    }
}
