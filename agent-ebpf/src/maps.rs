//! The maps the programs share with the agent, and the small helpers that touch them.

use agent_common::{
    class::{COUNTER_ENTRIES, Counter, IFINDEX_LIMIT, counter_index},
    config::KernelConfig,
    event::RECORD_LARGE,
    flow::{DEFAULT_FLOW_ENTRIES, FlowSet, flow_sets},
    stats::NUM_STATS,
};
use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
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

/// This CPU's part of the wakeup rule, entry 0 (see `emit`): per CPU, so that deciding
/// whether to wake the consumer touches no cache line another CPU or the consumer
/// writes (asking the ring buffer how much waits would read the consumer's position).
#[map(name = "WAKEUP")]
pub static WAKEUP: PerCpuArray<Wakeup> = PerCpuArray::with_max_entries(1, 0);

/// What one CPU remembers for the wakeup rule.
#[repr(C)]
pub struct Wakeup {
    /// Record bytes this CPU wrote since it last woke the consumer.
    pub pending_bytes: u64,
    /// When this CPU last woke the consumer (the event clock, ns).
    pub last_ns: u64,
}

/// Flows that sent large segments, two to a set (`agent_common::flow`): an array, so a
/// lookup is an address computed inline, not a helper call hashing a key. The agent
/// sets the number of sets at load time (`flow_sets`).
#[map(name = "FLOWS")]
pub static FLOWS: Array<FlowSet> = Array::with_max_entries(flow_sets(DEFAULT_FLOW_ENTRIES), 0);

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
