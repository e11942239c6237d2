//! Findings to (re)build, with the event time of their latest change.
//!
//! A detector updates its state on every event but builds a finding (strings, JSON
//! maps) only when the findings are next read: after each batch of events live, once
//! at the end of a replay. A storm answered a million times costs one build per batch,
//! not a million.

use std::{collections::HashMap, hash::Hash};

use ahash::RandomState;

/// Keys marked since the last drain, with the time of their latest mark.
pub struct Pending<K: Hash + Eq> {
    marks: HashMap<K, (u64, u64), RandomState>,
    seq: u64,
}

impl<K: Hash + Eq + Clone> Default for Pending<K> {
    fn default() -> Self {
        Pending { marks: HashMap::default(), seq: 0 }
    }
}

impl<K: Hash + Eq + Clone> Pending<K> {
    /// Marks `key` as changed at `now`.
    pub fn mark(&mut self, key: &K, now: u64) {
        self.seq += 1;
        let seq = self.seq;
        match self.marks.get_mut(key) {
            Some(m) => *m = (m.0.max(now), seq),
            None => {
                self.marks.insert(key.clone(), (now, seq));
            }
        }
    }

    /// Every marked key with its time, in the order of their latest marks.
    pub fn drain(&mut self) -> Vec<(K, u64)> {
        let mut all: Vec<(K, (u64, u64))> = self.marks.drain().collect();
        all.sort_by_key(|(_, (_, seq))| *seq);
        all.into_iter().map(|(k, (t, _))| (k, t)).collect()
    }

    /// Whether nothing is marked.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_key_with_the_latest_time_in_mark_order() {
        let mut p = Pending::default();
        p.mark(&"a", 5);
        p.mark(&"b", 6);
        p.mark(&"a", 9);
        assert_eq!(p.drain(), vec![("b", 6), ("a", 9)]);
        assert!(p.is_empty());
    }
}
