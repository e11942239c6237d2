//! The walk's flow cache in the kernel: the `FLOWS` array of two-way sets.

use agent_common::{FlowState, flow::FlowSlotOutcome, stats, wire::LargeSegments};

use crate::maps::{FLOWS, stat};

/// The `FLOWS` array, shared by every CPU and both hooks.
///
/// Updated in place without a lock: a flow's segments are handled on one CPU at a
/// time (a NIC steers a flow to one queue; a socket's segments leave one at a time),
/// so two CPUs write one set at once only for two flows that share it, at the same
/// moment, which at worst mixes up those two flows' counts once.
pub struct KernelFlows;

impl LargeSegments for KernelFlows {
    #[inline(always)]
    fn on_large_segment(&mut self, set: u32, tag: u64, seq: u32, len: u16) -> Option<FlowState> {
        let set = FLOWS.get_ptr_mut(set)?;
        // SAFETY: a pointer to the map value, valid for this program run.
        let (retransmission, outcome) = unsafe { &mut *set }.on_segment(tag, seq, len);
        match outcome {
            FlowSlotOutcome::Hit => {}
            FlowSlotOutcome::Inserted => stat(stats::FLOWS_INSERTED),
            FlowSlotOutcome::Evicted => stat(stats::FLOW_EVICTIONS),
        }
        retransmission
    }
}
