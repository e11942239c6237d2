//! The maps the programs share with the agent, and the small helpers that touch them.

use agent_common::{
    class::{COUNTER_ENTRIES, Counter, IFINDEX_LIMIT, counter_index},
    config::KernelConfig,
    event::RECORD_LARGE,
    flow::{DEFAULT_FLOW_ENTRIES, FlowKey, FlowState},
    stats::NUM_STATS,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};

/// Packets and bytes per (slot, direction, class).
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_ENTRIES, 0);

/// Lost events and parse statistics (see `agent_common::stats`).
#[map(name = "STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_STATS, 0);

/// ifindex → watched flag and counter slot (0: not watched).
#[map(name = "IFACE_SLOTS")]
pub static IFACE_SLOTS: Array<u32> = Array::with_max_entries(IFINDEX_LIMIT, 0);

/// Run-time configuration, entry 0.
#[map(name = "CONFIG")]
pub static CONFIG: Array<KernelConfig> = Array::with_max_entries(1, 0);

/// Events for the agent. The agent sets the size at load time.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// When the consumer was last woken (monotonic ns), entry 0.
#[map(name = "LAST_WAKEUP")]
pub static LAST_WAKEUP: Array<u64> = Array::with_max_entries(1, 0);

/// Flows that sent large segments (LRU: old flows make room for new ones).
#[map(name = "FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);

const _: () = assert!(RECORD_LARGE < 4096);

/// The configuration, if the agent has written one.
#[inline(always)]
pub fn config() -> Option<&'static KernelConfig> {
    CONFIG.get(0)
}

/// Value of `IFACE_SLOTS` for `ifindex`: 0 when the interface is not watched.
#[inline(always)]
pub fn iface_slot(ifindex: u32) -> u32 {
    match IFACE_SLOTS.get(ifindex) {
        Some(v) => *v,
        None => 0,
    }
}

/// Counts one packet.
#[inline(always)]
pub fn count_packet(slot: u32, direction: u32, class: u32, bytes: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter_index(slot, direction, class)) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Bumps one statistic.
#[inline(always)]
pub fn stat(index: u32) {
    if let Some(c) = STATS.get_ptr_mut(index) {
        unsafe { *c += 1 };
    }
}
