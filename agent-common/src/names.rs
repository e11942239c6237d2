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
/// Benchmark floor at TC: as [`PROG_XDP_COUNT_FLOOR`], for a socket buffer.
pub const PROG_TC_COUNT_FLOOR: &str = "pathwatch_tc_count_floor";
/// Benchmark floor at TC: as [`PROG_XDP_EVENT_FLOOR`], for a socket buffer.
pub const PROG_TC_EVENT_FLOOR: &str = "pathwatch_tc_event_floor";

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
/// The flow cache of large DF segments (an array of two-way sets).
pub const MAP_FLOWS: &str = "FLOWS";

/// The drop program, on the `kfree_skb` tracepoint (BTF-typed).
pub const PROG_DROP: &str = "pathwatch_drop";
/// The tracepoint the drop program attaches to.
pub const TRACEPOINT_DROP: &str = "kfree_skb";
/// Per-CPU drop counters, indexed by [`crate::drop::drop_counter_index`].
pub const MAP_DROP_COUNTERS: &str = "DROP_COUNTERS";
/// The drop program's settings and the kernel's offsets, one [`crate::drop::DropConfig`].
pub const MAP_DROP_CONFIG: &str = "DROP_CONFIG";
/// Ring buffer of drop records ([`crate::drop::DROP_RECORD_LEN`] bytes each).
pub const MAP_DROP_EVENTS: &str = "DROP_EVENTS";
/// Per-CPU state of the drop events' rate limit, and events suppressed.
pub const MAP_DROP_RATE: &str = "DROP_RATE";
