//! Packet classes and directions, and where their counters live.
//!
//! Every packet the kernel programs see gets exactly one class. The precedence is
//! fixed here and followed by both classifiers: ICMP errors first, then DNS (by port),
//! then DTLS (by record header), TLS handshake records, TCP SYN, large packets, and
//! everything else.

/// The class of one packet. Stored as `u8` wherever it crosses the boundary.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Anything that matches no other class (including non-IP frames).
    Other = 0,
    /// UDP or TCP to or from port 53 or a configured DNS port.
    Dns = 1,
    /// A UDP datagram made of DTLS records (any port).
    Dtls = 2,
    /// A TCP segment starting with a TLS handshake record.
    Tls = 3,
    /// ICMPv4 destination unreachable / time exceeded / parameter problem, ICMPv6 types 1-4.
    IcmpError = 4,
    /// A TCP segment with SYN set.
    TcpSyn = 5,
    /// An IPv4 packet with DF, or any IPv6 packet, longer than the configured size.
    LargeDf = 6,
}

/// Number of counter slots per direction (classes rounded up to a power of two).
pub const CLASS_SLOTS: u32 = 8;

impl Class {
    /// Every class, in counter order.
    pub const ALL: [Class; 7] =
        [Class::Other, Class::Dns, Class::Dtls, Class::Tls, Class::IcmpError, Class::TcpSyn, Class::LargeDf];

    /// The name used in JSON, metrics labels and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Class::Other => "other",
            Class::Dns => "dns",
            Class::Dtls => "dtls",
            Class::Tls => "tls",
            Class::IcmpError => "icmp_error",
            Class::TcpSyn => "tcp_syn",
            Class::LargeDf => "large_df",
        }
    }

    /// The class stored as `raw`, if it names one.
    pub const fn from_u8(raw: u8) -> Option<Class> {
        match raw {
            0 => Some(Class::Other),
            1 => Some(Class::Dns),
            2 => Some(Class::Dtls),
            3 => Some(Class::Tls),
            4 => Some(Class::IcmpError),
            5 => Some(Class::TcpSyn),
            6 => Some(Class::LargeDf),
            _ => None,
        }
    }
}

/// Which hook saw the packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// XDP, on the way in.
    Ingress = 0,
    /// TC, on the way out.
    Egress = 1,
}

impl Direction {
    /// Both directions, in counter order.
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// The name used in JSON and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// The direction stored as `raw`, if it names one.
    pub const fn from_u8(raw: u8) -> Option<Direction> {
        match raw {
            0 => Some(Direction::Ingress),
            1 => Some(Direction::Egress),
            _ => None,
        }
    }
}

/// Interfaces that get their own counters; slot 0 collects interfaces without one.
pub const MAX_IFACE_SLOTS: u32 = 64;
/// Size of the ifindex → slot array; larger interface indexes count in slot 0.
pub const IFINDEX_LIMIT: u32 = 65536;
/// Entries in the per-CPU counter array.
pub const COUNTER_ENTRIES: u32 = MAX_IFACE_SLOTS * 2 * CLASS_SLOTS;

/// Index of the counter for `(slot, direction, class)`.
#[inline(always)]
pub const fn counter_index(slot: u32, direction: u32, class: u32) -> u32 {
    (slot % MAX_IFACE_SLOTS) * 2 * CLASS_SLOTS + (direction & 1) * CLASS_SLOTS + (class % CLASS_SLOTS)
}

/// One per-CPU counter cell.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (the length the hook saw).
    pub bytes: u64,
}

// SAFETY: `Counter` is `repr(C)` and made only of integers and arrays of them, with no implicit padding: any bit pattern the kernel writes is a valid value, and aya copies it as bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Counter {}

const _: () = assert!(core::mem::size_of::<Counter>() == 16);
