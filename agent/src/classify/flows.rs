//! Replay's flow table for the walk's large segments: the userspace counterpart of the
//! kernel's `FLOWS` LRU map.

use agent_common::{FlowKey, FlowState, wire::LargeSegments};
use ahash::RandomState;
use lru::LruCache;
use std::num::NonZeroUsize;

/// Flows that sent large segments, least recently used evicted first.
pub struct FlowTable {
    flows: LruCache<FlowKey, FlowState, RandomState>,
    evictions: u64,
}

impl FlowTable {
    /// A table holding at most `capacity` flows (at least one).
    pub fn new(capacity: usize) -> FlowTable {
        FlowTable {
            flows: LruCache::with_hasher(NonZeroUsize::new(capacity.max(1)).unwrap(), RandomState::new()),
            evictions: 0,
        }
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Flows evicted to make room.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

impl LargeSegments for FlowTable {
    fn on_large_segment(&mut self, key: &FlowKey, seq: u32, len: u16) -> Option<FlowState> {
        if let Some(state) = self.flows.get_mut(key) {
            return state.on_segment(seq, len).then_some(*state);
        }
        if self.flows.push(*key, FlowState::first(seq, len)).is_some_and(|(k, _)| k != *key) {
            self.evictions += 1;
        }
        None
    }
}
