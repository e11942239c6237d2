//! What a crafted frame must give: its class and the event, header field by field
//! and snap byte by byte (`Want`), bundled with the frame as a `Case`.

use agent_common::{
    Class, Direction, EventHeader, EventInfo, EventKind, KernelConfig,
    event::{IP_FLAG_DF, SNAP_LARGE, SNAP_MEDIUM, SNAP_SMALL, snap_cap},
    proto::{self, ETH_HLEN},
};

use super::frames::{Host, Ip, Link};

/// The event a frame must produce, in terms of the untagged frame.
#[derive(Clone, Debug)]
pub(crate) struct Want {
    pub(crate) kind: EventKind,
    pub(crate) ip: Ip,
    pub(crate) src: Host,
    pub(crate) dst: Host,
    pub(crate) l4_proto: u8,
    pub(crate) ports: (u16, u16),
    pub(crate) ip_flags: u8,
    pub(crate) tcp_flags: u8,
    pub(crate) l4_payload_len: usize,
    /// Offset of the snap in the untagged frame (0 when there is none).
    pub(crate) snap_offset: usize,
    pub(crate) snap: Vec<u8>,
    pub(crate) info: EventInfo,
    /// For a packet inside a tunnel or under MPLS labels: the offset of its IP header
    /// in the untagged frame, and the VLAN tags of its own Ethernet header (`None`
    /// under MPLS: the link's). The event's `ip_len` and `vlan_depth` are the inner
    /// packet's.
    pub(crate) inner: Option<(usize, Option<u8>)>,
}

impl Want {
    pub(crate) fn new(kind: EventKind, ip: Ip, (src, dst): (Host, Host), l4_proto: u8, ports: (u16, u16)) -> Want {
        Want {
            kind,
            ip,
            src,
            dst,
            l4_proto,
            ports,
            ip_flags: IP_FLAG_DF,
            tcp_flags: 0,
            l4_payload_len: 0,
            snap_offset: 0,
            snap: Vec::new(),
            info: EventInfo::default(),
            inner: None,
        }
    }

    /// The event's subject is the IP packet at `ip_off` of the untagged frame, inside a
    /// tunnel behind `vlans` VLAN tags of its own (`None`: not in a tunnel).
    pub(crate) fn inner(mut self, ip_off: usize, vlans: Option<u8>) -> Want {
        self.inner = Some((ip_off, vlans));
        self
    }

    /// The snap is the transport payload, the last `len` bytes of `frame`, capped at
    /// `SNAP_LARGE` for DNS and `SNAP_SMALL` for DTLS and TLS.
    pub(crate) fn payload(mut self, frame: &[u8], len: usize) -> Want {
        let cap = if matches!(self.kind, EventKind::Dtls | EventKind::Tls) { SNAP_SMALL } else { SNAP_LARGE };
        assert_eq!(cap, snap_cap(self.kind as u8));
        self.snap_offset = frame.len() - len;
        self.snap = frame[self.snap_offset..][..len.min(cap)].to_vec();
        self.l4_payload_len = len;
        self
    }

    /// The snap is the ICMP message, the last `len` bytes of `frame`, capped at
    /// `SNAP_MEDIUM` for a packet-too-big signal (v4 3/4, v6 2), at `SNAP_LARGE` for
    /// the other errors (whose quote may hold a DNS question).
    pub(crate) fn icmp_message(mut self, frame: &[u8], len: usize) -> Want {
        self.snap_offset = frame.len() - len;
        let (t, code) = (frame[self.snap_offset], frame[self.snap_offset + 1]);
        let pmtu = if self.ip == Ip::V4 { (t, code) == (3, 4) } else { t == 2 };
        let cap = if pmtu { SNAP_MEDIUM } else { SNAP_LARGE };
        self.snap = frame[self.snap_offset..][..len.min(cap)].to_vec();
        self.l4_payload_len = len - proto::ICMP_HLEN;
        self
    }

    pub(crate) fn info(mut self, info: EventInfo) -> Want {
        self.info = info;
        self
    }

    pub(crate) fn tcp_flags(mut self, flags: u8) -> Want {
        self.tcp_flags = flags;
        self
    }

    pub(crate) fn ip_flags(mut self, flags: u8) -> Want {
        self.ip_flags = flags;
        self
    }

    pub(crate) fn l4_payload_len(mut self, len: usize) -> Want {
        self.l4_payload_len = len;
        self
    }

    /// The complete header the event must have for the untagged `frame` under `link`
    /// (time and interface zeroed, as `normalise` does).
    pub(crate) fn header(&self, class: Class, frame: &[u8], link: Link, direction: Direction) -> EventHeader {
        EventHeader {
            ts_ns: 0,
            ifindex: 0,
            wire_len: (frame.len() + link.extra()) as u32,
            kind: self.kind as u8,
            direction: direction as u8,
            class: class as u8,
            ip_version: self.ip.version(),
            l4_proto: self.l4_proto,
            ip_flags: self.ip_flags,
            tcp_flags: self.tcp_flags,
            vlan_depth: self.inner.and_then(|(_, vlans)| vlans).unwrap_or(link.vlan_depth()),
            src_addr: self.ip.addr(self.src),
            dst_addr: self.ip.addr(self.dst),
            src_port: self.ports.0,
            dst_port: self.ports.1,
            ip_len: self.inner.map_or(claimed_ip_len(frame), |(at, _)| ip_len_at(frame, at, self.ip)) as u16,
            l4_payload_len: self.l4_payload_len as u16,
            snap_len: self.snap.len() as u16,
            snap_offset: if self.snap.is_empty() { 0 } else { (self.snap_offset + link.extra()) as u16 },
            _pad: 0,
            info: self.info,
        }
    }
}

/// The IP length the header of an untagged frame claims (IPv4 total length, IPv6
/// 40 + payload length).
pub(crate) fn claimed_ip_len(frame: &[u8]) -> usize {
    let ip = &frame[ETH_HLEN..];
    match u16::from_be_bytes([frame[12], frame[13]]) {
        proto::ETH_P_IPV4 => u16::from_be_bytes([ip[2], ip[3]]) as usize,
        proto::ETH_P_IPV6 => 40 + u16::from_be_bytes([ip[4], ip[5]]) as usize,
        _ => 0,
    }
}

/// The IP length the header at `at` claims.
pub(crate) fn ip_len_at(frame: &[u8], at: usize, ip: Ip) -> usize {
    let ip_hdr = &frame[at..];
    match ip {
        Ip::V4 => u16::from_be_bytes([ip_hdr[2], ip_hdr[3]]) as usize,
        Ip::V6 => 40 + u16::from_be_bytes([ip_hdr[4], ip_hdr[5]]) as usize,
    }
}

/// `frame` with `n` bytes of Ethernet trailer (padding, or an FCS) after the IP packet.
pub(crate) fn with_trailer(mut frame: Vec<u8>, n: usize) -> Vec<u8> {
    frame.resize(frame.len() + n, 0xee);
    frame
}

/// `frame` with `n` more bytes in its IP packet, after the transport payload, that
/// the UDP length does not cover.
pub(crate) fn with_ip_slack(mut frame: Vec<u8>, n: usize) -> Vec<u8> {
    let (at, len) = match u16::from_be_bytes([frame[12], frame[13]]) {
        proto::ETH_P_IPV4 => (ETH_HLEN + 2, claimed_ip_len(&frame)),
        _ => (ETH_HLEN + 4, claimed_ip_len(&frame) - 40),
    };
    frame[at..at + 2].copy_from_slice(&((len + n) as u16).to_be_bytes());
    frame.resize(frame.len() + n, 0x77);
    frame
}

/// One crafted frame and what both classifiers must make of it.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    pub(crate) name: String,
    /// DNS ports configured besides 53.
    pub(crate) dns_ports: Vec<u16>,
    /// Frames sent first on the same fresh flow state (e.g. the first copy of a
    /// retransmitted segment); untagged, re-framed like `frame`.
    pub(crate) before: Vec<Vec<u8>>,
    /// The frame, untagged Ethernet.
    pub(crate) frame: Vec<u8>,
    pub(crate) class: Class,
    pub(crate) event: Option<Want>,
    /// Classes a cut of the frame may claim besides its own, `other` and `large_df`,
    /// because the bytes cut away are what outranks or rules out that class (see
    /// `every_truncation_of_every_crafted_frame`).
    pub(crate) cut_may_be: Vec<Class>,
    /// Statistics (`agent_common::stats`) each run of the whole frame adds one to,
    /// once per entry.
    pub(crate) counts: Vec<u32>,
}

impl Case {
    pub(crate) fn new(name: impl Into<String>, frame: Vec<u8>, class: Class) -> Case {
        Case {
            name: name.into(),
            dns_ports: Vec::new(),
            before: Vec::new(),
            frame,
            class,
            event: None,
            cut_may_be: Vec::new(),
            counts: Vec::new(),
        }
    }

    pub(crate) fn counts(mut self, stat: u32) -> Case {
        self.counts.push(stat);
        self
    }

    pub(crate) fn cut_may_be(mut self, class: Class) -> Case {
        self.cut_may_be.push(class);
        self
    }

    pub(crate) fn event(mut self, want: Want) -> Case {
        self.event = Some(want);
        self
    }

    pub(crate) fn after(mut self, before: Vec<Vec<u8>>) -> Case {
        self.before = before;
        self
    }

    pub(crate) fn dns_port(mut self, port: u16) -> Case {
        self.dns_ports.push(port);
        self
    }

    pub(crate) fn config(&self) -> KernelConfig {
        let mut cfg = KernelConfig::new();
        for &p in &self.dns_ports {
            cfg.add_dns_port(p);
        }
        cfg
    }
}
