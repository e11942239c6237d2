//! A bounded FIFO that counts what it drops: the time-ordered queues of the detectors
//! (DNS query deadlines, DTLS flows waiting for an answer).
//!
//! Such a queue is ordered by time, not by use, so it cannot be a [`Table`]; but it is
//! state that hostile input can grow like any table, so it has a cap and reports its
//! occupancy and evictions the same way. The entry it drops at the cap is handed
//! back: it stood for something live (a query that would otherwise never time out),
//! and the caller must drop that too.
//!
//! [`Table`]: super::table::Table

use std::collections::VecDeque;

use super::table::clamp_capacity;

/// A FIFO of at most `capacity` entries; pushing onto a full one evicts the oldest.
pub struct BoundedQueue<T> {
    name: &'static str,
    items: VecDeque<T>,
    capacity: usize,
    evictions: u64,
}

impl<T> BoundedQueue<T> {
    /// A queue called `name` (as reported in `tracked` / `evictions`) holding at most
    /// `capacity` entries (at least one).
    pub fn new(name: &'static str, capacity: u64) -> BoundedQueue<T> {
        BoundedQueue { name, items: VecDeque::new(), capacity: clamp_capacity(capacity), evictions: 0 }
    }

    /// The queue's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Appends `item`; when the queue was full, the oldest entry is evicted, counted
    /// and returned.
    #[must_use = "an evicted entry stands for state the caller must drop too"]
    pub fn push_back(&mut self, item: T) -> Option<T> {
        let evicted = if self.items.len() >= self.capacity {
            self.evictions += 1;
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        evicted
    }

    /// The oldest entry.
    pub fn front(&self) -> Option<&T> {
        self.items.front()
    }

    /// The newest entry, to complete after pushing it.
    pub fn back_mut(&mut self) -> Option<&mut T> {
        self.items.back_mut()
    }

    /// Takes the oldest entry off in the ordinary way (it is due, not evicted).
    pub fn pop_front(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Entries evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Changes the capacity; when it shrinks, the oldest entries beyond it are
    /// evicted, counted and returned.
    #[must_use = "evicted entries stand for state the caller must drop too"]
    pub fn resize(&mut self, capacity: u64) -> Vec<T> {
        self.capacity = clamp_capacity(capacity);
        let excess = self.items.len().saturating_sub(self.capacity);
        self.evictions += excess as u64;
        self.items.drain(..excess).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_hands_back_and_counts_its_oldest_entry() {
        let mut q = BoundedQueue::new("q", 2);
        assert_eq!((q.push_back(1), q.push_back(2)), (None, None));
        assert_eq!(q.push_back(3), Some(1));
        assert_eq!(q.pop_front(), Some(2), "taking a due entry off is not an eviction");
        assert_eq!((q.len(), q.evictions()), (1, 1));
        assert_eq!(q.push_back(4), None);
        assert_eq!(q.resize(1), vec![3]);
        assert_eq!((q.front(), q.len(), q.evictions()), (Some(&4), 1, 2));
    }
}
