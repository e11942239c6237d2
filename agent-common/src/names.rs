//! Names of the kernel programs and maps, so userspace never spells them by hand.

/// The XDP program (ingress).
pub const PROG_XDP: &str = "pathwatch_xdp";
/// The TC classifier (egress).
pub const PROG_TC: &str = "pathwatch_tc";
/// A program that only returns `XDP_PASS`: the benchmark baseline.
pub const PROG_XDP_BASELINE: &str = "pathwatch_xdp_pass";
/// A classifier that only returns `TC_ACT_OK`: the TC benchmark baseline.
pub const PROG_TC_BASELINE: &str = "pathwatch_tc_pass";
/// Benchmark floor: the interface slot and one per-CPU counter, no header walk.
pub const PROG_XDP_COUNT_FLOOR: &str = "pathwatch_xdp_count_floor";
/// Benchmark floor: the count floor plus the smallest ring-buffer event.
pub const PROG_XDP_EVENT_FLOOR: &str = "pathwatch_xdp_event_floor";

/// Per-CPU packet and byte counters, indexed by [`crate::class::counter_index`].
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Per-CPU kernel statistics (lost events, parse errors), indexed by [`crate::stats`].
pub const MAP_STATS: &str = "STATS";
/// Interface index to counter slot.
pub const MAP_IFACE_SLOTS: &str = "IFACE_SLOTS";
/// Runtime configuration, one [`crate::KernelConfig`] at index 0.
pub const MAP_CONFIG: &str = "CONFIG";
/// Ring buffer of events.
pub const MAP_EVENTS: &str = "EVENTS";
/// Per-flow state for oversized TCP segments (LRU).
pub const MAP_FLOWS: &str = "FLOWS";
