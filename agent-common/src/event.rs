//! The compact event the kernel programs put in the ring buffer.
//!
//! A record is an [`EventHeader`] followed by `snap_len` bytes of the packet (the
//! "snap": the DNS message, the DTLS or TLS records, the ICMP message with its quoted
//! header). Records come in four sizes ([`record_len`]), so that a TCP event or a DNS
//! query for a short name does not move 600 bytes through the ring buffer: under a flood,
//! the ring's size in events is what decides how long a consumer may stall.
//! Bulk packets produce no event at all.

/// What kind of packet an event reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// A DNS message over UDP (query or response); snap = the DNS message.
    Dns = 1,
    /// A UDP datagram carrying DTLS handshake, alert or change-cipher-spec records; snap =
    /// the first [`SNAP_SMALL`] bytes of the records.
    Dtls = 2,
    /// A TCP segment starting with a TLS ClientHello or ServerHello; snap = the first
    /// [`SNAP_SMALL`] bytes of the records.
    Tls = 3,
    /// An ICMP or ICMPv6 error; snap = the ICMP message (header, then the quoted packet).
    IcmpError = 4,
    /// A TCP SYN or SYN-ACK, with its MSS option if any; no snap.
    TcpSyn = 5,
    /// A retransmitted TCP segment that was large and could not be fragmented; no snap.
    TcpLargeRetransmit = 6,
    /// A TCP segment with FIN or RST that raises no other event: its acknowledgment
    /// number says what the peer received (the PMTU detector's evidence that a
    /// segment got through); `tcp_seq`, `tcp_ack` and `tcp_flags` set, no snap.
    TcpFin = 7,
}

impl EventKind {
    /// Every kind, in numeric order.
    pub const ALL: [EventKind; 7] = [
        EventKind::Dns,
        EventKind::Dtls,
        EventKind::Tls,
        EventKind::IcmpError,
        EventKind::TcpSyn,
        EventKind::TcpLargeRetransmit,
        EventKind::TcpFin,
    ];

    /// The kind stored as `raw`, if it names one.
    pub const fn from_u8(raw: u8) -> Option<EventKind> {
        match raw {
            1 => Some(EventKind::Dns),
            2 => Some(EventKind::Dtls),
            3 => Some(EventKind::Tls),
            4 => Some(EventKind::IcmpError),
            5 => Some(EventKind::TcpSyn),
            6 => Some(EventKind::TcpLargeRetransmit),
            7 => Some(EventKind::TcpFin),
            _ => None,
        }
    }

    /// The name used in JSON and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Dns => "dns",
            EventKind::Dtls => "dtls",
            EventKind::Tls => "tls",
            EventKind::IcmpError => "icmp_error",
            EventKind::TcpSyn => "tcp_syn",
            EventKind::TcpLargeRetransmit => "tcp_large_retransmit",
            EventKind::TcpFin => "tcp_fin",
        }
    }
}

/// IPv4 "don't fragment" (always set for IPv6, which routers never fragment).
pub const IP_FLAG_DF: u8 = 1;
/// IPv4 "more fragments" or an IPv6 fragment header with M set.
pub const IP_FLAG_MF: u8 = 2;
/// The packet is a fragment (first fragment: the transport header is present).
pub const IP_FLAG_FRAGMENT: u8 = 4;

/// Kind-specific fields. Every field exists for every kind; the ones a kind does not
/// use are zero, so that two classifiers can be compared byte for byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventInfo {
    /// TCP sequence number (TCP kinds).
    pub tcp_seq: u32,
    /// TCP acknowledgment number (TCP kinds).
    pub tcp_ack: u32,
    /// MSS option value, 0 when absent (`TcpSyn`).
    pub tcp_mss: u16,
    /// TCP window field (TCP kinds).
    pub tcp_window: u16,
    /// TCP payload length of the retransmitted segment (`TcpLargeRetransmit`).
    pub seg_len: u16,
    /// Largest TCP payload known to have been acknowledged on the flow (`TcpLargeRetransmit`).
    pub largest_acked: u16,
    /// Retransmissions seen on the flow so far, this one included (`TcpLargeRetransmit`).
    pub retransmits: u32,
    /// ICMP type (`IcmpError`).
    pub icmp_type: u8,
    /// ICMP code (`IcmpError`).
    pub icmp_code: u8,
    /// DTLS records walked in the datagram (`Dtls`).
    pub dtls_records: u8,
    /// Bit `t - 20` set for each DTLS content type `t` seen (`Dtls`).
    pub dtls_content_mask: u8,
    /// Next-hop MTU (ICMPv4 frag-needed) or MTU (ICMPv6 packet too big) (`IcmpError`).
    pub icmp_mtu: u32,
    /// Bit `h` set for each DTLS handshake message type `h` < 32 seen in epoch 0 (`Dtls`),
    /// or the TLS handshake type (`Tls`).
    pub handshake_mask: u32,
    /// Record version of the first DTLS record (`Dtls`) or TLS record (`Tls`).
    pub record_version: u16,
    /// Padding, always zero.
    pub _pad16: u16,
    /// Padding, always zero.
    pub _pad: u32,
}

/// The fixed part of every event record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// Kernel `CLOCK_MONOTONIC` time (live) or capture time (replay), in ns.
    pub ts_ns: u64,
    /// Interface the hook ran on (0 under BPF_PROG_TEST_RUN and in replay).
    pub ifindex: u32,
    /// Packet length as the hook saw it.
    pub wire_len: u32,
    /// [`EventKind`] as `u8`.
    pub kind: u8,
    /// [`crate::Direction`] as `u8`.
    pub direction: u8,
    /// [`crate::Class`] as `u8`.
    pub class: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// IP protocol number of the transport (after IPv6 extension headers).
    pub l4_proto: u8,
    /// `IP_FLAG_*` bits.
    pub ip_flags: u8,
    /// TCP flags byte (TCP only).
    pub tcp_flags: u8,
    /// VLAN tags in front of the IP header (0-2).
    pub vlan_depth: u8,
    /// Source address; IPv4 in the first 4 bytes, the rest zero.
    pub src_addr: [u8; 16],
    /// Destination address; IPv4 in the first 4 bytes, the rest zero.
    pub dst_addr: [u8; 16],
    /// Source port (UDP/TCP), host order.
    pub src_port: u16,
    /// Destination port (UDP/TCP), host order.
    pub dst_port: u16,
    /// IP length as the header claims (IPv4 total length, IPv6 40 + payload length).
    pub ip_len: u16,
    /// Transport payload bytes present in the packet (bounded by the headers and the capture).
    pub l4_payload_len: u16,
    /// Bytes of snap that follow this header.
    pub snap_len: u16,
    /// Offset in the frame where the snap starts.
    pub snap_offset: u16,
    /// Padding, always zero.
    pub _pad: u32,
    /// Kind-specific fields.
    pub info: EventInfo,
}

// SAFETY: `EventHeader` is `repr(C)` and made only of integers and arrays of them, with no implicit padding: any bit pattern the kernel writes is a valid value, and aya copies it as bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for EventHeader {}

/// Size of [`EventHeader`] in bytes.
pub const HEADER_LEN: usize = core::mem::size_of::<EventHeader>();
/// Snap capacity of a small record: DTLS and TLS record headers with the start of
/// the handshake (what tells two ClientHellos apart), a DNS query for a short name.
pub const SNAP_SMALL: usize = 64;
/// Snap capacity of a medium record: a DNS query for a name of up to ~110 characters,
/// an ICMP error with its quoted headers.
pub const SNAP_MEDIUM: usize = 128;
/// Snap capacity of a large record: the DNS header and a first question with the
/// longest legal name (12 + 255 + 4 bytes), also when an ICMP error quotes it behind
/// its own header and an IP header with options and a UDP header (8 + 60 + 8 + 271).
/// The rest of a response (its answers) is read by no detector.
pub const SNAP_LARGE: usize = 352;
/// The most snap bytes an event of `kind` (an [`EventKind`] as `u8`) carries: only
/// what the detectors read. DNS messages and ICMP errors: up to [`SNAP_LARGE`], the
/// header and the (quoted) question. DTLS and TLS records: [`SNAP_SMALL`], the header's
/// `info` already holds what the detectors read of them. TCP kinds: nothing, the header
/// holds their fields.
pub const fn snap_cap(kind: u8) -> usize {
    if kind == EventKind::Dtls as u8 || kind == EventKind::Tls as u8 {
        SNAP_SMALL
    } else if kind == EventKind::Dns as u8 || kind == EventKind::IcmpError as u8 {
        SNAP_LARGE
    } else {
        0
    }
}

/// The record size for `snap` bytes of snap: the header and the smallest snap class
/// that holds them (the ring buffer reserves a size fixed when the program is
/// verified, so records come in four sizes).
pub const fn record_len(snap: usize) -> usize {
    HEADER_LEN
        + if snap == 0 {
            0
        } else if snap <= SNAP_SMALL {
            SNAP_SMALL
        } else if snap <= SNAP_MEDIUM {
            SNAP_MEDIUM
        } else {
            SNAP_LARGE
        }
}

/// Size of a record with no snap (the TCP kinds).
pub const RECORD_BARE: usize = HEADER_LEN;
/// Size of a small record.
pub const RECORD_SMALL: usize = HEADER_LEN + SNAP_SMALL;
/// Size of a medium record.
pub const RECORD_MEDIUM: usize = HEADER_LEN + SNAP_MEDIUM;
/// Size of a large record.
pub const RECORD_LARGE: usize = HEADER_LEN + SNAP_LARGE;

const _: () = assert!(core::mem::size_of::<EventInfo>() == 40);
const _: () = assert!(EventKind::ALL.len() == EventKind::TcpFin as usize);
const _: () = {
    let mut i = 0;
    while i < EventKind::ALL.len() {
        assert!(EventKind::ALL[i] as usize == i + 1);
        i += 1;
    }
};
const _: () = assert!(HEADER_LEN == 112);
const _: () =
    assert!(RECORD_SMALL.is_multiple_of(8) && RECORD_MEDIUM.is_multiple_of(8) && RECORD_LARGE.is_multiple_of(8));
const _: () = assert!(12 + 255 + 4 <= SNAP_LARGE && 8 + 60 + 8 + 12 + 255 + 4 <= SNAP_LARGE);
