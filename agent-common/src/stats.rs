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
/// A flow took the place of another in the flow cache (its set was full): the other
/// flow is forgotten, and a retransmission of it would not be seen as one.
pub const FLOW_EVICTIONS: u32 = 5;
/// Link-layer framing the programs do not parse (more VLAN tags than supported).
pub const UNSUPPORTED_L2: u32 = 6;
/// Packets whose snapshot bytes could not be copied into the event.
pub const SNAP_COPY_FAILED: u32 = 7;
/// Flows inserted into an empty place of the flow cache. The programs never delete
/// one, so this is how many the cache holds (since it was last emptied).
pub const FLOWS_INSERTED: u32 = 8;

/// GRE headers decapsulated (IPv4, IPv6 or Ethernet inside; ERSPAN counts apart).
pub const ENCAP_GRE: u32 = 9;
/// ERSPAN type I, II or III headers (in GRE) decapsulated.
pub const ENCAP_ERSPAN: u32 = 10;
/// IPv4 in IPv4 (IP protocol 4) decapsulated.
pub const ENCAP_IPIP: u32 = 11;
/// IPv6 in IPv4 (6in4, protocol 41), IPv4 in IPv6 (4in6) and IPv6 in IPv6 decapsulated.
pub const ENCAP_IP6: u32 = 12;
/// VXLAN headers (UDP 4789) decapsulated.
pub const ENCAP_VXLAN: u32 = 13;
/// Geneve headers (UDP 6081) decapsulated.
pub const ENCAP_GENEVE: u32 = 14;
/// MPLS label stacks popped.
pub const ENCAP_MPLS: u32 = 15;
/// Packets inside more than [`crate::proto::MAX_TUNNEL_DEPTH`] encapsulations (class `other`).
pub const TUNNEL_DEPTH_LIMIT: u32 = 16;

/// Number of statistics.
pub const NUM_STATS: u32 = 17;

/// The statistics the header walk counts (`wire::walk`, and the kernel for a walk
/// that stopped early), as opposed to the ring buffer's and the flow table's: what
/// replay reports, the same from the userspace classifier as from the kernel.
pub const WALK: [u32; 12] = [
    TRUNCATED,
    IPV6_EXT_LIMIT,
    NON_FIRST_FRAGMENT,
    UNSUPPORTED_L2,
    ENCAP_GRE,
    ENCAP_ERSPAN,
    ENCAP_IPIP,
    ENCAP_IP6,
    ENCAP_VXLAN,
    ENCAP_GENEVE,
    ENCAP_MPLS,
    TUNNEL_DEPTH_LIMIT,
];

/// Names of the statistics, by index.
pub const NAMES: [&str; NUM_STATS as usize] = [
    "ringbuf_full",
    "events_submitted",
    "truncated",
    "ipv6_ext_limit",
    "non_first_fragment",
    "flow_evictions",
    "unsupported_l2",
    "snap_copy_failed",
    "flows_inserted",
    "encap_gre",
    "encap_erspan",
    "encap_ipip",
    "encap_ip6",
    "encap_vxlan",
    "encap_geneve",
    "encap_mpls",
    "tunnel_depth_limit",
];
