//! Per-CPU kernel statistics: why events were lost and why parsing stopped early.
//!
//! Each is an index into the `STATS` per-CPU array of `u64`.

/// An event could not be reserved in the ring buffer (the consumer fell behind).
pub const RINGBUF_FULL: u32 = 0;
/// Events submitted to the ring buffer.
pub const EVENTS_SUBMITTED: u32 = 1;
/// A header ended before the packet said it would (parse stopped, class kept so far).
pub const TRUNCATED: u32 = 2;
/// An IPv6 extension-header chain longer than [`crate::proto::MAX_IPV6_EXT_HEADERS`].
pub const IPV6_EXT_LIMIT: u32 = 3;
/// A non-first IP fragment (no transport header to read).
pub const NON_FIRST_FRAGMENT: u32 = 4;
/// A flow could not be inserted into the flow table.
pub const FLOW_INSERT_FAILED: u32 = 5;
/// Link-layer framing the programs do not parse (MPLS, more VLAN tags than supported).
pub const UNSUPPORTED_L2: u32 = 6;
/// Packets whose snapshot bytes could not be copied into the event.
pub const SNAP_COPY_FAILED: u32 = 7;
/// Flows inserted into the flow table. The programs never delete one, so what was
/// inserted and is no longer held was evicted by the LRU map (which counts nothing).
pub const FLOWS_INSERTED: u32 = 8;

/// Number of statistics.
pub const NUM_STATS: u32 = 9;

/// Names of the statistics, by index.
pub const NAMES: [&str; NUM_STATS as usize] = [
    "ringbuf_full",
    "events_submitted",
    "truncated",
    "ipv6_ext_limit",
    "non_first_fragment",
    "flow_insert_failed",
    "unsupported_l2",
    "snap_copy_failed",
    "flows_inserted",
];
