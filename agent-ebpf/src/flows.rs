//! The walk's flow table in the kernel: the `FLOWS` LRU map.

use agent_common::{FlowKey, FlowState, stats, wire::LargeSegments};

use crate::maps::{FLOWS, stat};

/// `bpf_map_update_elem` flag: insert only if the key is absent.
const BPF_NOEXIST: u64 = aya_ebpf::bindings::BPF_NOEXIST as u64;
/// The helper's error when the key is present (`-EEXIST`).
const EEXIST: i32 = -17;

/// The `FLOWS` map, shared by every CPU and both hooks.
pub struct KernelFlows;

impl LargeSegments for KernelFlows {
    /// Updates the flow in place; a new flow is inserted, once even when two CPUs race.
    #[inline(always)]
    fn on_large_segment(&mut self, key: &FlowKey, seq: u32, len: u16) -> Option<FlowState> {
        match FLOWS.get_ptr_mut(key) {
            Some(state) => {
                // SAFETY: a pointer to the map value, valid for this program run.
                let state = unsafe { &mut *state };
                if state.on_segment(seq, len) { Some(*state) } else { None }
            }
            None => {
                match FLOWS.insert(key, &FlowState::first(seq, len), BPF_NOEXIST) {
                    Ok(()) => stat(stats::FLOWS_INSERTED),
                    // Another CPU inserted the same flow first: one insertion, not two.
                    Err(EEXIST) => {}
                    Err(_) => stat(stats::FLOW_INSERT_FAILED),
                }
                None
            }
        }
    }
}
