//! What the drop program and the agent agree on: which dropped packets matter, how
//! they are counted, and the record that tells the agent about one.
//!
//! The drop program runs on the kernel's `kfree_skb` tracepoint, which fires only for
//! a packet the kernel frees as dropped, with the reason (`enum skb_drop_reason`). It
//! walks the dropped packet's headers with the same walk as the classifiers
//! ([`crate::wire::walk`]), counts it per (reason, [`DropClass`]) in a per-CPU array,
//! and, for the classes a detector reads, writes a [`DropInfo`] followed by an event
//! record (an [`EventHeader`](crate::EventHeader) and its snap) to a ring buffer of
//! its own, so that a drop flood cannot crowd packet events out of theirs. The kernel's
//! structure layouts differ between versions: the agent reads the offsets it needs
//! from the kernel's BTF and hands them over in [`DropConfig`].

/// What a dropped packet was, as far as the diagnoses care: the classifiers' class
/// ([`crate::Class`], the same values), and one of drops' own.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropClass {
    /// Anything else: counted, no event.
    Other = crate::Class::Other as u8,
    /// DNS (by port, as [`crate::Class::Dns`]).
    Dns = crate::Class::Dns as u8,
    /// DTLS records (any port).
    Dtls = crate::Class::Dtls as u8,
    /// A TLS handshake record on TCP.
    Tls = crate::Class::Tls as u8,
    /// An ICMP or ICMPv6 error (unreachable, frag-needed, packet too big, ...).
    IcmpError = crate::Class::IcmpError as u8,
    /// A TCP SYN: counted, no event.
    TcpSyn = crate::Class::TcpSyn as u8,
    /// A large DF packet (IPv4 with DF, or IPv6, over `large_packet_bytes`), or any
    /// packet the kernel dropped as too big for its next hop (`PKT_TOO_BIG`).
    LargeDf = crate::Class::LargeDf as u8,
    /// A packet to or from a VPN port of the config (`dtls.vpn_ports`) of no class above.
    VpnPort = 7,
}

/// Number of drop classes (the counter array's inner dimension).
pub const DROP_CLASSES: u32 = 8;

impl DropClass {
    /// Every class, in counter order.
    pub const ALL: [DropClass; DROP_CLASSES as usize] = [
        DropClass::Other,
        DropClass::Dns,
        DropClass::Dtls,
        DropClass::Tls,
        DropClass::IcmpError,
        DropClass::TcpSyn,
        DropClass::LargeDf,
        DropClass::VpnPort,
    ];

    /// The class stored as `raw`.
    pub const fn from_u8(raw: u8) -> DropClass {
        match raw {
            1 => DropClass::Dns,
            2 => DropClass::Dtls,
            3 => DropClass::Tls,
            4 => DropClass::IcmpError,
            5 => DropClass::TcpSyn,
            6 => DropClass::LargeDf,
            7 => DropClass::VpnPort,
            _ => DropClass::Other,
        }
    }

    /// The name used in JSON and in the `class` label of `pathwatch_drops_total`.
    pub const fn name(self) -> &'static str {
        match self {
            DropClass::Other => "other",
            DropClass::Dns => "dns",
            DropClass::Dtls => "dtls",
            DropClass::Tls => "tls",
            DropClass::IcmpError => "icmp_error",
            DropClass::TcpSyn => "tcp_syn",
            DropClass::LargeDf => "large_df",
            DropClass::VpnPort => "vpn_port",
        }
    }

    /// Whether a detector reads drops of this class (they raise a drop event).
    pub const fn raises_event(self) -> bool {
        !matches!(self, DropClass::Other | DropClass::TcpSyn)
    }
}

/// Drop reasons counted apart: `enum skb_drop_reason` values below this have a slot
/// each (the kernel has about 130); larger ones (subsystem reasons, a future kernel's)
/// share the last slot, [`DROP_REASON_OVERFLOW`].
pub const DROP_REASON_SLOTS: u32 = 256;
/// The slot of every reason at or above it.
pub const DROP_REASON_OVERFLOW: u32 = DROP_REASON_SLOTS - 1;
/// Entries of the `DROP_COUNTERS` per-CPU array.
pub const DROP_COUNTER_ENTRIES: u32 = DROP_REASON_SLOTS * DROP_CLASSES;

/// The counter slot of `reason` (the kernel's value).
#[inline(always)]
pub const fn reason_slot(reason: u32) -> u32 {
    if reason < DROP_REASON_OVERFLOW { reason } else { DROP_REASON_OVERFLOW }
}

/// Index into `DROP_COUNTERS` of (reason, class).
#[inline(always)]
pub const fn drop_counter_index(reason: u32, class: DropClass) -> u32 {
    (reason_slot(reason) * DROP_CLASSES + class as u32) & (DROP_COUNTER_ENTRIES - 1)
}

/// `enum skb_drop_reason`'s `SKB_DROP_REASON_PKT_TOO_BIG` is looked up by name in the
/// kernel's BTF (values differ between versions) and given here.
pub const NO_REASON: u32 = u32::MAX;

/// What the drop program knows of a drop beyond the packet: the record starts with it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropInfo {
    /// `enum skb_drop_reason` as the kernel gave it.
    pub reason: u32,
    /// The interface the packet came in on (`skb->skb_iif`); 0 for a packet this
    /// host made.
    pub in_ifindex: u32,
    /// The device the skb was on when dropped (`skb->dev`), 0 if none.
    pub dev_ifindex: u32,
    /// The route's device (`skb_dst(skb)->dev`), 0 if the packet had no route yet.
    pub route_ifindex: u32,
    /// That device's MTU, 0 if unknown.
    pub route_mtu: u32,
    /// [`DropClass`] as `u8`.
    pub class: u8,
    /// `DROP_F_*` bits.
    pub flags: u8,
    /// Padding, always zero.
    pub _pad: u16,
    /// Drop events this CPU suppressed (over the rate) before this one.
    pub suppressed_before: u32,
    /// Padding, always zero.
    pub _pad2: u32,
}

/// The packet had a route (`skb->_skb_refdst` set) when dropped.
pub const DROP_F_ROUTED: u8 = 1;

/// Size of [`DropInfo`].
pub const DROP_INFO_LEN: usize = core::mem::size_of::<DropInfo>();
/// Snap bytes a drop record carries: an ICMP error's quoted headers, a DNS question.
pub const DROP_SNAP: usize = crate::event::SNAP_LARGE;
/// Size of a drop record: the [`DropInfo`], the event header, the snap.
pub const DROP_RECORD_LEN: usize = DROP_INFO_LEN + crate::event::HEADER_LEN + DROP_SNAP;
/// Bytes of the dropped packet (from its network header) the program copies to walk.
pub const DROP_COPY: usize = 512;
/// Where the copied network header starts in the scratch frame: after a made-up
/// Ethernet header that carries `skb->protocol`, so the walk starts where it always does.
pub const DROP_L3_OFF: usize = 14;

/// Drop events each CPU may write per [`DROP_EVENT_PERIOD_NS`]; beyond them, the drop
/// is still counted, and the event counted as suppressed. A drop flood thus costs the
/// agent at most this many records per period per CPU.
pub const DROP_EVENTS_PER_PERIOD: u32 = 64;
/// The rate limit's period (100 ms: at most 640 drop events per second per CPU).
pub const DROP_EVENT_PERIOD_NS: u64 = 100_000_000;

/// Default size of the drop event ring buffer: 1 MiB, 2 k records, three seconds of
/// the rate limit on one CPU.
pub const DEFAULT_DROP_RINGBUF_BYTES: u32 = 1 << 20;

/// Offsets in the kernel's structures, from its BTF, and the drop program's settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropConfig {
    /// `sk_buff.head`.
    pub skb_head: u32,
    /// `sk_buff.network_header` (u16 offset from head).
    pub skb_network_header: u32,
    /// `sk_buff.len`.
    pub skb_len: u32,
    /// `sk_buff.data_len`.
    pub skb_data_len: u32,
    /// `sk_buff.data`.
    pub skb_data: u32,
    /// `sk_buff.skb_iif`.
    pub skb_iif: u32,
    /// `sk_buff.dev`.
    pub skb_dev: u32,
    /// `sk_buff._skb_refdst`.
    pub skb_refdst: u32,
    /// `sk_buff.protocol`.
    pub skb_protocol: u32,
    /// `net_device.ifindex`.
    pub dev_ifindex: u32,
    /// `net_device.mtu`.
    pub dev_mtu: u32,
    /// `dst_entry.dev`.
    pub dst_dev: u32,
    /// The value of `SKB_DROP_REASON_PKT_TOO_BIG`, [`NO_REASON`] if the kernel has none.
    pub reason_pkt_too_big: u32,
    /// 1 once the agent wrote the offsets; the program counts nothing before.
    pub ready: u32,
    /// VPN ports from the config (`dtls.vpn_ports`), 0 for none.
    pub vpn_ports: [u16; 8],
    /// `net_device.nd_net` (the device's network namespace).
    pub dev_nd_net: u32,
    /// `net.ns.inum`: the namespace's inode number, as `/proc/self/ns/net` has it.
    pub net_inum: u32,
    /// Count only drops in the network namespace of this inode number (the agent's:
    /// the tracepoint fires for every namespace of the host); 0 counts all.
    pub netns_inum: u32,
    /// Padding, always zero.
    pub _pad: u32,
}

/// One CPU's state of the drop events' rate limit, and what it did not send
/// (`DROP_RATE`, per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropRate {
    /// Start of the current period (ns).
    pub period_start: u64,
    /// Events written in it.
    pub used: u64,
    /// Events suppressed over the rate since the program was loaded.
    pub suppressed: u64,
    /// Events lost to a full ring buffer.
    pub ring_full: u64,
    /// Suppressed since the last event this CPU wrote (goes into that event).
    pub suppressed_since: u64,
}

// SAFETY: plain `repr(C)` integers and arrays of them, no implicit padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DropInfo {}
// SAFETY: `repr(C)`, five u64, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DropRate {}
// SAFETY: plain `repr(C)` integers and arrays of them, no implicit padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DropConfig {}

impl DropConfig {
    /// Whether `port` is one of the configured VPN ports.
    #[inline(always)]
    pub fn is_vpn_port(&self, port: u16) -> bool {
        if port == 0 {
            return false;
        }
        let mut i = 0;
        while i < self.vpn_ports.len() {
            if self.vpn_ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// The drop class of a packet the walk classed `class`, carrying `src_port` and
/// `dst_port`, dropped for `reason`.
#[inline(always)]
pub fn drop_class(cfg: &DropConfig, class: crate::Class, src_port: u16, dst_port: u16, reason: u32) -> DropClass {
    use crate::Class;
    match class {
        Class::Dns => DropClass::Dns,
        Class::Dtls => DropClass::Dtls,
        Class::Tls => DropClass::Tls,
        Class::IcmpError => DropClass::IcmpError,
        Class::LargeDf => DropClass::LargeDf,
        _ if reason == cfg.reason_pkt_too_big => DropClass::LargeDf,
        _ if cfg.is_vpn_port(src_port) || cfg.is_vpn_port(dst_port) => DropClass::VpnPort,
        Class::TcpSyn => DropClass::TcpSyn,
        _ => DropClass::Other,
    }
}

const _: () = assert!(DROP_INFO_LEN == 32);
const _: () = assert!(DROP_RECORD_LEN.is_multiple_of(8));
const _: () = assert!(DROP_COUNTER_ENTRIES.is_power_of_two());
const _: () = assert!(core::mem::size_of::<DropConfig>() == 88);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Class;

    fn cfg() -> DropConfig {
        DropConfig { reason_pkt_too_big: 93, vpn_ports: [443, 0, 0, 0, 0, 0, 0, 0], ..Default::default() }
    }

    #[test]
    fn a_packet_too_big_is_large_whatever_its_class() {
        assert_eq!(drop_class(&cfg(), Class::Other, 1, 2, 93), DropClass::LargeDf);
        assert_eq!(drop_class(&cfg(), Class::Other, 1, 2, 12), DropClass::Other);
        assert_eq!(drop_class(&cfg(), Class::IcmpError, 0, 0, 93), DropClass::IcmpError);
    }

    #[test]
    fn vpn_ports_name_packets_of_no_other_class() {
        assert_eq!(drop_class(&cfg(), Class::Other, 50000, 443, 12), DropClass::VpnPort);
        assert_eq!(drop_class(&cfg(), Class::TcpSyn, 50000, 443, 12), DropClass::VpnPort);
        assert_eq!(drop_class(&cfg(), Class::Dtls, 50000, 443, 12), DropClass::Dtls);
        assert_eq!(drop_class(&cfg(), Class::TcpSyn, 50000, 80, 12), DropClass::TcpSyn);
        assert!(!cfg().is_vpn_port(0));
    }

    #[test]
    fn reasons_beyond_the_slots_share_the_last() {
        assert_eq!(reason_slot(12), 12);
        assert_eq!(reason_slot(0x10003), DROP_REASON_OVERFLOW);
        assert_eq!(drop_counter_index(12, DropClass::IcmpError), 12 * 8 + 4);
        assert!(drop_counter_index(u32::MAX, DropClass::VpnPort) < DROP_COUNTER_ENTRIES);
        for (i, c) in DropClass::ALL.iter().enumerate() {
            assert_eq!(DropClass::from_u8(i as u8), *c);
        }
    }
}
