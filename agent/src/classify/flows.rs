//! Replay's flow cache for the walk's large segments: the same two-way sets as the
//! kernel's `FLOWS` array (`agent_common::flow`), so both keep and forget the same
//! flows.

use agent_common::{
    FlowState,
    flow::{FlowSet, FlowSlotOutcome, flow_sets},
    wire::LargeSegments,
};

/// Flows that sent large segments, two to a set.
pub struct FlowTable {
    sets: Vec<FlowSet>,
    held: u64,
    evictions: u64,
}

impl FlowTable {
    /// A cache of at least `capacity` flows ([`flow_sets`] sets of two).
    pub fn new(capacity: usize) -> FlowTable {
        let sets = flow_sets(u32::try_from(capacity).unwrap_or(u32::MAX));
        FlowTable { sets: vec![FlowSet::default(); sets as usize], held: 0, evictions: 0 }
    }

    /// The set mask the walk must use with this cache (`KernelConfig::flow_set_mask`).
    pub fn set_mask(&self) -> u32 {
        self.sets.len() as u32 - 1
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        self.held as usize
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Flows that took the place of another.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

impl LargeSegments for FlowTable {
    fn on_large_segment(&mut self, set: u32, tag: u64, seq: u32, len: u16) -> Option<FlowState> {
        let set = self.sets.get_mut(set as usize)?;
        let (retransmission, outcome) = set.on_segment(tag, seq, len);
        match outcome {
            FlowSlotOutcome::Hit => {}
            FlowSlotOutcome::Inserted => self.held += 1,
            FlowSlotOutcome::Evicted => self.evictions += 1,
        }
        retransmission
    }
}
