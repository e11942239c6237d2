//! The kernel programs on crafted frames, with BPF_PROG_TEST_RUN (DESIGN.md, "How we
//! prove it", step 2).
//!
//! Every frame goes through `pathwatch_xdp` and `pathwatch_tc` and through the
//! userspace classifier; each run asserts that the hook passed the packet and that the
//! kernel and its userspace twin agree on the class, the `truncated` statistic and
//! every byte of the event. On top of that each test asserts what the frame *should*
//! give: the class, and the event's header fields and snap bytes.
//!
//! Frames are built with etherparse's `PacketBuilder`; what it cannot express (VLAN
//! and QinQ tags, PPPoE, IPv6 extension chains, a bad IHL, DTLS and TLS records) is
//! spliced in as bytes. Every frame is tried under six link layers: untagged, one
//! 802.1Q tag, QinQ (0x88a8 outer, 0x8100 inner), two 802.1Q tags, PPPoE, and
//! 802.1Q + PPPoE.
//!
//! - `dns_frames`, `dtls_frames`, `tls_frames`, `icmp_error_frames`, `tcp_syn_frames`,
//!   `large_df_frames`, `other_frames`: every class, over IPv4 and IPv6.
//! - `every_truncation_of_every_crafted_frame`: each of those frames cut at every length.
//! - `ipv6_extension_header_chains`, `ipv4_options_and_fragments`: the IP layer's walk.
//! - `config_change_reaches_the_kernel_without_reload`: the CONFIG map is live.
//! - `ringbuf_reservation_failures_are_counted`: a full ring buffer loses events, counted.
//! - `forwarded_packets_raise_events_once`: TC reports only what XDP did not.

use std::collections::BTreeSet;

use agent_common::{
    Class, Direction, EventHeader, EventInfo, EventKind, KernelConfig,
    event::{IP_FLAG_DF, IP_FLAG_FRAGMENT, IP_FLAG_MF, RECORD_SMALL, SNAP_LARGE, SNAP_SMALL},
    proto::{
        self, CT_ALERT, CT_APPLICATION_DATA, CT_HANDSHAKE, DTLS_1_0, DTLS_1_2, DTLS_CISCO, ETH_HLEN, IPPROTO_DSTOPTS,
        IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP,
        MAX_IPV6_EXT_HEADERS, TCP_ACK, TCP_SYN,
    },
    stats,
};
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IcmpEchoHeader, Icmpv4Type, Icmpv6Type, IpFragOffset, IpHeaders,
    IpNumber, Ipv4Header, Ipv4Options, Ipv6Header, PacketBuilder, TcpHeader, icmpv4, icmpv6,
};
use pathwatch::{
    classify::Classifier,
    event::Event,
    kernel::{
        LoadOptions,
        counters::ClassCounts,
        testrun::{Hook, MIN_FRAME, TestRunner},
    },
};
use pathwatch_tests::{dns_query, dns_response, privileged};

// ---------------------------------------------------------------------------------
// Hosts and link layers
// ---------------------------------------------------------------------------------

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
/// Ephemeral ports of the client.
const UDP_CLIENT_PORT: u16 = 50000;
const TCP_CLIENT_PORT: u16 = 50001;
/// TCP flag PSH (agent_common::proto names only the flags the classifiers test).
const TCP_PSH: u8 = 0x08;
/// TCP window every crafted segment advertises.
const WINDOW: u16 = 64240;
/// Payload of the large TCP segments: 1300 + 40 (IPv4) or + 60 (IPv6) exceeds the
/// default `large_packet_bytes` (1280).
const LARGE_SEG: usize = 1300;

/// IP version of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ip {
    V4,
    V6,
}

/// The three hosts of the crafted traffic, all in the test ranges (198.18.0.0/15, fd00::/8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Host {
    Client,
    Server,
    Router,
}

impl Ip {
    const BOTH: [Ip; 2] = [Ip::V4, Ip::V6];

    fn v4(host: Host) -> [u8; 4] {
        match host {
            Host::Client => [198, 18, 0, 1],
            Host::Server => [198, 19, 0, 2],
            Host::Router => [198, 18, 0, 254],
        }
    }

    fn v6(host: Host) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        match host {
            Host::Client => a[15] = 1,
            Host::Server => {
                a[3] = 1;
                a[15] = 2;
            }
            Host::Router => a[15] = 0xfe,
        }
        a
    }

    /// The address as events carry it (IPv4 in the first four bytes).
    fn addr(self, host: Host) -> [u8; 16] {
        match self {
            Ip::V4 => {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&Ip::v4(host));
                a
            }
            Ip::V6 => Ip::v6(host),
        }
    }

    fn version(self) -> u8 {
        match self {
            Ip::V4 => 4,
            Ip::V6 => 6,
        }
    }

    /// IP headers from `src` to `dst`; IPv4 with DF set (etherparse's default).
    fn headers(self, src: Host, dst: Host) -> IpHeaders {
        match self {
            Ip::V4 => IpHeaders::Ipv4(
                Ipv4Header::new(0, 64, IpNumber::UDP, Ip::v4(src), Ip::v4(dst)).unwrap(),
                Default::default(),
            ),
            Ip::V6 => IpHeaders::Ipv6(
                Ipv6Header { hop_limit: 64, source: Ip::v6(src), destination: Ip::v6(dst), ..Default::default() },
                Default::default(),
            ),
        }
    }

    /// IPv4 headers without DF.
    fn headers_no_df(src: Host, dst: Host) -> IpHeaders {
        let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, Ip::v4(src), Ip::v4(dst)).unwrap();
        h.dont_fragment = false;
        IpHeaders::Ipv4(h, Default::default())
    }

    fn icmp_proto(self) -> u8 {
        match self {
            Ip::V4 => IPPROTO_ICMP,
            Ip::V6 => IPPROTO_ICMPV6,
        }
    }
}

/// What sits between the Ethernet addresses and the IP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Plain Ethernet II.
    Plain,
    /// One 802.1Q tag (VLAN 100).
    Vlan,
    /// QinQ: an 802.1ad tag (0x88a8, VLAN 200) outside an 802.1Q tag (VLAN 100).
    QinQ,
    /// Two 802.1Q tags (0x8100, VLAN 300, outside VLAN 100), as older switches stack them.
    DoubleQ,
    /// A PPPoE session header and the PPP protocol field.
    Pppoe,
    /// One 802.1Q tag, then PPPoE.
    VlanPppoe,
}

impl Link {
    const ALL: [Link; 6] = [Link::Plain, Link::Vlan, Link::QinQ, Link::DoubleQ, Link::Pppoe, Link::VlanPppoe];

    fn vlan_depth(self) -> u8 {
        match self {
            Link::Plain | Link::Pppoe => 0,
            Link::Vlan | Link::VlanPppoe => 1,
            Link::QinQ | Link::DoubleQ => 2,
        }
    }

    /// Bytes this link layer adds in front of the IP header, beyond the Ethernet header.
    fn extra(self) -> usize {
        match self {
            Link::Plain => 0,
            Link::Vlan => 4,
            Link::QinQ | Link::DoubleQ => 8,
            Link::Pppoe => 8,
            Link::VlanPppoe => 12,
        }
    }

    /// The untagged Ethernet `frame` re-framed with this link layer; `None` for PPPoE
    /// around a frame that is not IP.
    fn apply(self, frame: &[u8]) -> Option<Vec<u8>> {
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let body = &frame[ETH_HLEN..];
        let mut out = frame[..12].to_vec();
        match self {
            Link::QinQ => out.extend_from_slice(&[0x88, 0xa8, 0x00, 200]),
            Link::DoubleQ => out.extend_from_slice(&[0x81, 0x00, 0x01, 0x2c]),
            _ => {}
        }
        if self.vlan_depth() >= 1 {
            out.extend_from_slice(&[0x81, 0x00, 0x00, 100]);
        }
        if matches!(self, Link::Pppoe | Link::VlanPppoe) {
            let ppp = match ethertype {
                proto::ETH_P_IPV4 => proto::PPP_IPV4,
                proto::ETH_P_IPV6 => proto::PPP_IPV6,
                _ => return None,
            };
            // Ethertype, version/type 0x11, code 0 (session data), session id, length
            // (PPP protocol field + payload), PPP protocol.
            out.extend_from_slice(&proto::ETH_P_PPPOE_SESSION.to_be_bytes());
            out.extend_from_slice(&[0x11, 0x00, 0x12, 0x34]);
            out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
            out.extend_from_slice(&ppp.to_be_bytes());
        } else {
            out.extend_from_slice(&ethertype.to_be_bytes());
        }
        out.extend_from_slice(body);
        Some(out)
    }
}

// ---------------------------------------------------------------------------------
// Frame builders
// ---------------------------------------------------------------------------------

/// An untagged Ethernet frame carrying UDP.
fn udp(ip: IpHeaders, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ip(ip).udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("build UDP frame");
    out
}

/// A TCP header with `flags` (the TCP flags byte) and raw `options` (a multiple of 4).
fn tcp_header(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, options: &[u8]) -> TcpHeader {
    let mut h = TcpHeader::new(sport, dport, seq, WINDOW);
    h.fin = flags & proto::TCP_FIN != 0;
    h.syn = flags & TCP_SYN != 0;
    h.rst = flags & proto::TCP_RST != 0;
    h.psh = flags & TCP_PSH != 0;
    h.ack = flags & TCP_ACK != 0;
    h.acknowledgment_number = ack;
    h.set_options_raw(options).expect("TCP options");
    h
}

/// An untagged Ethernet frame carrying TCP.
fn tcp(ip: IpHeaders, hdr: TcpHeader, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ip(ip).tcp_header(hdr);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("build TCP frame");
    out
}

/// An ICMP message of either version.
enum Icmp {
    V4(Icmpv4Type),
    V6(Icmpv6Type),
}

/// An untagged Ethernet frame carrying an ICMP or ICMPv6 message with `quote` after
/// its 8-byte header.
fn icmp(ip: IpHeaders, msg: Icmp, quote: &[u8]) -> Vec<u8> {
    let step = PacketBuilder::ethernet2(MAC_A, MAC_B).ip(ip);
    let mut out = Vec::new();
    match msg {
        Icmp::V4(t) => step.icmpv4(t).write(&mut out, quote),
        Icmp::V6(t) => step.icmpv6(t).write(&mut out, quote),
    }
    .expect("build ICMP frame");
    out
}

/// The IP packet of an untagged Ethernet frame (what an ICMP error quotes).
fn ip_packet(frame: &[u8]) -> Vec<u8> {
    frame[ETH_HLEN..].to_vec()
}

/// An ARP request, untagged.
fn arp() -> Vec<u8> {
    let req = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &MAC_A,
        &Ip::v4(Host::Client),
        &[0; 6],
        &Ip::v4(Host::Server),
    )
    .unwrap();
    let b = PacketBuilder::ethernet2(MAC_A, [0xff; 6]).arp(req);
    let mut out = Vec::new();
    b.write(&mut out).expect("build ARP frame");
    out
}

/// One DTLS record.
fn dtls_record(ct: u8, version: u16, epoch: u16, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut r = vec![ct];
    r.extend_from_slice(&version.to_be_bytes());
    r.extend_from_slice(&epoch.to_be_bytes());
    r.extend_from_slice(&seq.to_be_bytes()[2..]);
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

/// One unfragmented DTLS handshake message.
fn dtls_handshake(msg_type: u8, msg_seq: u16, body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_be_bytes();
    let mut h = vec![msg_type, len[1], len[2], len[3]];
    h.extend_from_slice(&msg_seq.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, len[1], len[2], len[3]]);
    h.extend_from_slice(body);
    h
}

/// A (D)TLS ClientHello body: `version`, a random, no session, no cookie, `suites`
/// cipher suites, null compression.
fn client_hello_body(version: u16, suites: u16, dtls: bool) -> Vec<u8> {
    let mut b = version.to_be_bytes().to_vec();
    b.extend((0..32u8).map(|i| i.wrapping_mul(7)));
    b.push(0);
    if dtls {
        b.push(0);
    }
    b.extend_from_slice(&(suites * 2).to_be_bytes());
    for s in 0..suites {
        b.extend_from_slice(&(0xc000 + s).to_be_bytes());
    }
    b.extend_from_slice(&[1, 0]);
    if !dtls {
        b.extend_from_slice(&[0, 0]);
    }
    b
}

/// A TLS record carrying one handshake message.
fn tls_handshake_record(version: u16, hs_type: u8, body: &[u8]) -> Vec<u8> {
    let hs_len = (body.len() as u32).to_be_bytes();
    let rec_len = ((body.len() + 4) as u16).to_be_bytes();
    let mut r = vec![CT_HANDSHAKE];
    r.extend_from_slice(&version.to_be_bytes());
    r.extend_from_slice(&rec_len);
    r.extend_from_slice(&[hs_type, hs_len[1], hs_len[2], hs_len[3]]);
    r.extend_from_slice(body);
    r
}

/// An IPv6 extension header to splice in front of the transport header.
#[derive(Clone, Copy, Debug)]
enum Ext {
    /// Hop-by-hop options, `(len + 1) * 8` bytes.
    HopByHop(u8),
    /// A routing header (segment routing, no segments left), `(len + 1) * 8` bytes.
    Routing(u8),
    /// Destination options, `(len + 1) * 8` bytes.
    DestOpts(u8),
    /// A fragment header: offset in 8-byte units, more-fragments flag.
    Fragment { offset: u16, more: bool },
}

impl Ext {
    fn proto(self) -> u8 {
        match self {
            Ext::HopByHop(_) => IPPROTO_HOPOPTS,
            Ext::Routing(_) => IPPROTO_ROUTING,
            Ext::DestOpts(_) => IPPROTO_DSTOPTS,
            Ext::Fragment { .. } => IPPROTO_FRAGMENT,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ext::HopByHop(len) | Ext::DestOpts(len) => {
                // One PadN option fills the header.
                let total = (len as usize + 1) * 8;
                let mut h = vec![next, len, 1, (total - 4) as u8];
                h.resize(total, 0);
                h
            }
            Ext::Routing(len) => {
                let mut h = vec![next, len, 4, 0];
                h.resize((len as usize + 1) * 8, 0);
                h
            }
            Ext::Fragment { offset, more } => {
                let field = (offset << 3) | more as u16;
                let mut h = vec![next, 0];
                h.extend_from_slice(&field.to_be_bytes());
                h.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                h
            }
        }
    }
}

/// Splices `exts` between the IPv6 header of an untagged frame and what follows it,
/// chaining the next-header fields and growing the payload length.
fn with_ipv6_exts(frame: &[u8], exts: &[Ext]) -> Vec<u8> {
    let ip = ETH_HLEN;
    let transport = frame[ip + 6];
    let mut chain = Vec::new();
    for (i, ext) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(transport, |e| e.proto());
        chain.extend(ext.bytes(next));
    }
    let mut out = frame[..ip + 40].to_vec();
    out[ip + 6] = exts.first().map_or(transport, |e| e.proto());
    let payload_len = u16::from_be_bytes([out[ip + 4], out[ip + 5]]) + chain.len() as u16;
    out[ip + 4..ip + 6].copy_from_slice(&payload_len.to_be_bytes());
    out.extend(chain);
    out.extend_from_slice(&frame[ip + 40..]);
    out
}

// ---------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------

/// The event a frame must produce, in terms of the untagged frame.
#[derive(Clone, Debug)]
struct Want {
    kind: EventKind,
    ip: Ip,
    src: Host,
    dst: Host,
    l4_proto: u8,
    ports: (u16, u16),
    ip_flags: u8,
    tcp_flags: u8,
    l4_payload_len: usize,
    /// Offset of the snap in the untagged frame (0 when there is none).
    snap_offset: usize,
    snap: Vec<u8>,
    info: EventInfo,
}

impl Want {
    fn new(kind: EventKind, ip: Ip, (src, dst): (Host, Host), l4_proto: u8, ports: (u16, u16)) -> Want {
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
        }
    }

    /// The snap is the transport payload, the last `len` bytes of `frame`, capped at
    /// `SNAP_LARGE` for DNS and `SNAP_SMALL` for DTLS and TLS.
    fn payload(mut self, frame: &[u8], len: usize) -> Want {
        let cap = if matches!(self.kind, EventKind::Dtls | EventKind::Tls) { SNAP_SMALL } else { SNAP_LARGE };
        self.snap_offset = frame.len() - len;
        self.snap = frame[self.snap_offset..][..len.min(cap)].to_vec();
        self.l4_payload_len = len;
        self
    }

    /// The snap is the ICMP message, the last `len` bytes of `frame`, capped at `SNAP_LARGE`.
    fn icmp_message(mut self, frame: &[u8], len: usize) -> Want {
        self.snap_offset = frame.len() - len;
        self.snap = frame[self.snap_offset..][..len.min(SNAP_LARGE)].to_vec();
        self.l4_payload_len = len - proto::ICMP_HLEN;
        self
    }

    fn info(mut self, info: EventInfo) -> Want {
        self.info = info;
        self
    }

    fn tcp_flags(mut self, flags: u8) -> Want {
        self.tcp_flags = flags;
        self
    }

    fn ip_flags(mut self, flags: u8) -> Want {
        self.ip_flags = flags;
        self
    }

    fn l4_payload_len(mut self, len: usize) -> Want {
        self.l4_payload_len = len;
        self
    }

    /// The complete header the event must have for the untagged `frame` under `link`
    /// (time and interface zeroed, as `normalise` does).
    fn header(&self, class: Class, frame: &[u8], link: Link, direction: Direction) -> EventHeader {
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
            vlan_depth: link.vlan_depth(),
            src_addr: self.ip.addr(self.src),
            dst_addr: self.ip.addr(self.dst),
            src_port: self.ports.0,
            dst_port: self.ports.1,
            ip_len: claimed_ip_len(frame) as u16,
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
fn claimed_ip_len(frame: &[u8]) -> usize {
    let ip = &frame[ETH_HLEN..];
    match u16::from_be_bytes([frame[12], frame[13]]) {
        proto::ETH_P_IPV4 => u16::from_be_bytes([ip[2], ip[3]]) as usize,
        proto::ETH_P_IPV6 => 40 + u16::from_be_bytes([ip[4], ip[5]]) as usize,
        _ => 0,
    }
}

/// `frame` with `n` bytes of Ethernet trailer (padding, or an FCS) after the IP packet.
fn with_trailer(mut frame: Vec<u8>, n: usize) -> Vec<u8> {
    frame.resize(frame.len() + n, 0xee);
    frame
}

/// `frame` with `n` more bytes in its IP packet, after the transport payload, that
/// the UDP length does not cover.
fn with_ip_slack(mut frame: Vec<u8>, n: usize) -> Vec<u8> {
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
struct Case {
    name: String,
    /// DNS ports configured besides 53.
    dns_ports: Vec<u16>,
    /// Frames sent first on the same fresh flow state (e.g. the first copy of a
    /// retransmitted segment); untagged, re-framed like `frame`.
    before: Vec<Vec<u8>>,
    /// The frame, untagged Ethernet.
    frame: Vec<u8>,
    class: Class,
    event: Option<Want>,
    /// Classes a cut of the frame may claim besides its own, `other` and `large_df`,
    /// because the bytes cut away are what outranks or rules out that class (see
    /// `every_truncation_of_every_crafted_frame`).
    cut_may_be: Vec<Class>,
}

impl Case {
    fn new(name: impl Into<String>, frame: Vec<u8>, class: Class) -> Case {
        Case {
            name: name.into(),
            dns_ports: Vec::new(),
            before: Vec::new(),
            frame,
            class,
            event: None,
            cut_may_be: Vec::new(),
        }
    }

    fn cut_may_be(mut self, class: Class) -> Case {
        self.cut_may_be.push(class);
        self
    }

    fn event(mut self, want: Want) -> Case {
        self.event = Some(want);
        self
    }

    fn after(mut self, before: Vec<Vec<u8>>) -> Case {
        self.before = before;
        self
    }

    fn dns_port(mut self, port: u16) -> Case {
        self.dns_ports.push(port);
        self
    }

    fn config(&self) -> KernelConfig {
        let mut cfg = KernelConfig::new();
        for &p in &self.dns_ports {
            cfg.add_dns_port(p);
        }
        cfg
    }
}

// ---------------------------------------------------------------------------------
// The rig: kernel programs and the userspace classifier side by side
// ---------------------------------------------------------------------------------

/// What one classifier made of one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    class: Class,
    truncated: bool,
    events: Vec<Event>,
}

fn normalise(mut ev: Event) -> Event {
    // The kernel stamps its own clock and, under BPF_PROG_TEST_RUN, the test device's
    // ifindex; the userspace classifier is given neither.
    ev.header.ts_ns = 0;
    ev.header.ifindex = 0;
    ev
}

fn direction(hook: Hook) -> Direction {
    if hook == Hook::Tc { Direction::Egress } else { Direction::Ingress }
}

/// XDP_PASS for XDP, TC_ACT_OK for TC.
fn pass_action(hook: Hook) -> u32 {
    if hook == Hook::Tc { 0 } else { 2 }
}

/// Whether BPF_PROG_TEST_RUN refuses `frame` for a TC program (EINVAL): the kernel
/// builds the test skb with `eth_type_trans` and, for an untagged IPv4 or IPv6 frame,
/// insists that the whole fixed IP header is present (measured on Linux 6.18; tagged,
/// PPPoE and non-IP frames of any length from 14 bytes are accepted). XDP runs take
/// every frame from 14 bytes, and both hooks share the parsing code, so XDP's runs of
/// these cuts still cover it.
fn skb_test_run_refuses(frame: &[u8]) -> bool {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    (ethertype == proto::ETH_P_IPV4 && frame.len() < ETH_HLEN + 20)
        || (ethertype == proto::ETH_P_IPV6 && frame.len() < ETH_HLEN + 40)
}

/// Flow-table size of the rig, kernel and userspace.
const FLOW_ENTRIES: usize = 64;

struct Rig {
    runner: TestRunner,
    cfg: KernelConfig,
    /// TC test runs the kernel refused (see `skb_test_run_refuses`).
    tc_refused: u64,
}

impl Rig {
    fn new() -> Rig {
        let cfg = KernelConfig::new();
        // A small flow table: emptying it (`fresh`, before every sequence) walks its
        // buckets, and no test holds more than a few flows.
        let opts = LoadOptions { flow_entries: FLOW_ENTRIES as u32, ..Default::default() };
        Rig { runner: TestRunner::with_options(&opts, &cfg).expect("load the kernel programs"), cfg, tc_refused: 0 }
    }

    /// Writes `cfg` to the kernel's CONFIG map; userspace classifiers made from now
    /// on use it too.
    fn configure(&mut self, cfg: KernelConfig) {
        self.runner.kernel().set_config(&cfg).expect("write CONFIG");
        self.cfg = cfg;
    }

    /// Empty flow state on both sides: the kernel's FLOWS map, a new classifier.
    fn fresh(&mut self) -> Classifier {
        self.runner.reset_flows().expect("reset FLOWS");
        Classifier::new(self.cfg, FLOW_ENTRIES)
    }

    fn stat(&mut self, index: u32) -> u64 {
        self.runner.stat(index).expect("read STATS")
    }

    /// `frame` through `hook` and through `user` (holding the same flow state as the
    /// kernel). Asserts that the hook passed the packet and that kernel and userspace
    /// agree on class, truncation and events.
    ///
    /// `None` when the kernel refuses to test-run the frame at TC at all (see
    /// `skb_test_run_refuses`).
    fn step(&mut self, hook: Hook, user: &mut Classifier, frame: &[u8], what: &str) -> Option<Seen> {
        let truncated_before = self.stat(stats::TRUNCATED);
        let run = match self.runner.run(hook, frame, true) {
            Ok(run) => run,
            Err(_) if hook == Hook::Tc && skb_test_run_refuses(frame) => return None,
            Err(e) => panic!("{what} ({hook:?}): test run: {e:#}"),
        };
        let truncated = self.stat(stats::TRUNCATED) != truncated_before;
        assert_eq!(run.action, pass_action(hook), "{what} ({hook:?}): the program must pass every packet");
        let kernel = Seen {
            class: run.class.unwrap_or_else(|| panic!("{what} ({hook:?}): no class counter moved")),
            truncated,
            events: run.events.into_iter().map(normalise).collect(),
        };
        let u = user.classify(frame, direction(hook), 0, 0);
        let userspace =
            Seen { class: u.class, truncated: u.truncated, events: u.event.into_iter().map(normalise).collect() };
        assert_eq!(kernel, userspace, "{what} ({hook:?}): kernel (left) and userspace classifier (right) differ");
        Some(kernel)
    }

    /// `before`, then `frame`, through each hook on fresh flow state. Asserts that
    /// XDP and TC see the same (up to the event's direction); returns what XDP saw of
    /// `frame`.
    ///
    /// Where the kernel refuses the TC test run (`skb_test_run_refuses`), only XDP's
    /// run is compared with userspace.
    fn run_case(&mut self, before: &[Vec<u8>], frame: &[u8], what: &str) -> Seen {
        let mut seen = Vec::new();
        for hook in [Hook::Xdp, Hook::Tc] {
            let mut user = self.fresh();
            for (i, f) in before.iter().enumerate() {
                let ran = self.step(hook, &mut user, f, &format!("{what} (frame {i} before it)"));
                assert!(ran.is_some(), "{what}: a whole frame is always test-run");
            }
            let Some(mut s) = self.step(hook, &mut user, frame, what) else {
                assert_eq!(hook, Hook::Tc);
                self.tc_refused += 1;
                continue;
            };
            for ev in &mut s.events {
                assert_eq!(ev.header.direction, direction(hook) as u8, "{what} ({hook:?}): event direction");
                ev.header.direction = Direction::Ingress as u8;
            }
            seen.push(s);
        }
        if let [xdp, tc] = &seen[..] {
            assert_eq!(xdp, tc, "{what}: XDP (left) and TC (right) differ");
        }
        seen.swap_remove(0)
    }

    /// Runs `case` under every link layer and asserts its class and event.
    fn check(&mut self, case: &Case) {
        self.configure(case.config());
        for link in Link::ALL {
            let Some(frame) = link.apply(&case.frame) else { continue };
            let before: Vec<Vec<u8>> = case.before.iter().map(|f| link.apply(f).expect("same link")).collect();
            let what = format!("{} over {link:?}", case.name);
            let refused = self.tc_refused;
            let seen = self.run_case(&before, &frame, &what);
            assert_eq!(self.tc_refused, refused, "{what}: the kernel refused a whole frame at TC");
            assert_eq!(seen.class, case.class, "{what}: class");
            assert!(!seen.truncated, "{what}: a whole frame is not truncated");
            match &case.event {
                None => assert!(seen.events.is_empty(), "{what}: no event expected, got {:?}", seen.events),
                Some(want) => {
                    assert_eq!(seen.events.len(), 1, "{what}: one event expected, got {:?}", seen.events);
                    let ev = &seen.events[0];
                    let header = want.header(case.class, &case.frame, link, Direction::Ingress);
                    assert_eq!(ev.header, header, "{what}: event header (left: got, right: expected)");
                    assert_eq!(ev.snap, want.snap, "{what}: snap bytes");
                    let at = ev.header.snap_offset as usize;
                    assert_eq!(
                        &frame[at..at + ev.snap.len()],
                        &ev.snap[..],
                        "{what}: snap is the frame's bytes at snap_offset"
                    );
                }
            }
        }
    }

    fn check_all(&mut self, cases: &[Case]) {
        for case in cases {
            self.check(case);
        }
    }
}

/// Loads the programs for a privileged test, or `None` when it is skipped.
fn rig(test: &str) -> Option<Rig> {
    privileged(test).then(Rig::new)
}

// ---------------------------------------------------------------------------------
// The crafted frames, per class
// ---------------------------------------------------------------------------------

fn dns_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for ip in Ip::BOTH {
        let q = dns_query(0x1234, "mus.cisco.com");
        let frame = udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &q);
        let want = Want::new(EventKind::Dns, ip, (Host::Client, Host::Server), IPPROTO_UDP, (UDP_CLIENT_PORT, 53))
            .payload(&frame, q.len());
        cases.push(Case::new(format!("{ip:?} UDP/53 query"), frame, Class::Dns).event(want));

        let r = dns_response(0x1234, "mus.cisco.com", 2);
        let frame = udp(ip.headers(Host::Server, Host::Client), 53, UDP_CLIENT_PORT, &r);
        let want = Want::new(EventKind::Dns, ip, (Host::Server, Host::Client), IPPROTO_UDP, (53, UDP_CLIENT_PORT))
            .payload(&frame, r.len());
        cases.push(Case::new(format!("{ip:?} UDP/53 SERVFAIL response"), frame, Class::Dns).event(want));

        // Fewer than DNS_MIN_LEN bytes: counted as DNS, nothing to report.
        let frame = udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &[0x12, 0x34, 0x01]);
        cases.push(Case::new(format!("{ip:?} UDP/53 with 3 payload bytes"), frame, Class::Dns));

        // DNS over TCP is counted, never reported.
        let mut msg = (q.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&q);
        let hdr = tcp_header(TCP_CLIENT_PORT, 53, 7000, 9000, TCP_ACK | TCP_PSH, &[]);
        let frame = tcp(ip.headers(Host::Client, Host::Server), hdr, &msg);
        cases.push(Case::new(format!("{ip:?} TCP/53 query"), frame, Class::Dns));

        // Port precedes SYN: a SYN to port 53 is DNS, with no event.
        let hdr = tcp_header(TCP_CLIENT_PORT, 53, 7000, 0, TCP_SYN, &[2, 4, 0x05, 0xb4]);
        let frame = tcp(ip.headers(Host::Client, Host::Server), hdr, &[]);
        cases.push(Case::new(format!("{ip:?} TCP/53 SYN"), frame, Class::Dns));

        // A configured extra DNS port.
        let frame = udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 5353, &q);
        let want = Want::new(EventKind::Dns, ip, (Host::Client, Host::Server), IPPROTO_UDP, (UDP_CLIENT_PORT, 5353))
            .payload(&frame, q.len());
        cases.push(
            Case::new(format!("{ip:?} UDP/5353 query, 5353 configured"), frame, Class::Dns).dns_port(5353).event(want),
        );

        // A large (EDNS) response: DNS outranks large_df; the snap stops at SNAP_LARGE.
        let mut big = dns_response(0x1234, "mus.cisco.com", 0);
        big.resize(LARGE_SEG, 0xab);
        let frame = udp(ip.headers(Host::Server, Host::Client), 53, UDP_CLIENT_PORT, &big);
        let want = Want::new(EventKind::Dns, ip, (Host::Server, Host::Client), IPPROTO_UDP, (53, UDP_CLIENT_PORT))
            .payload(&frame, big.len());
        cases.push(Case::new(format!("{ip:?} large UDP/53 response"), frame, Class::Dns).event(want));

        // Bytes after the IP packet (Ethernet padding or FCS) are not the payload.
        let frame = udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &q);
        let want = Want::new(EventKind::Dns, ip, (Host::Client, Host::Server), IPPROTO_UDP, (UDP_CLIENT_PORT, 53))
            .payload(&frame, q.len());
        cases.push(
            Case::new(format!("{ip:?} UDP/53 query, 6-byte Ethernet trailer"), with_trailer(frame, 6), Class::Dns)
                .event(want.clone()),
        );
        // Nor are bytes in the IP packet beyond the UDP length.
        let frame = udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &q);
        cases.push(
            Case::new(
                format!("{ip:?} UDP/53 query, IP packet 4 bytes longer than UDP"),
                with_ip_slack(frame, 4),
                Class::Dns,
            )
            .event(want),
        );
    }
    cases
}

/// The DTLS info of a datagram.
fn dtls_info(records: u8, content_mask: u8, handshake_mask: u32, version: u16) -> EventInfo {
    EventInfo {
        dtls_records: records,
        dtls_content_mask: content_mask,
        handshake_mask,
        record_version: version,
        ..Default::default()
    }
}

const CT_BIT_HANDSHAKE: u8 = 1 << (CT_HANDSHAKE - 20);

fn dtls_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for ip in Ip::BOTH {
        let c2s = (Host::Client, Host::Server);
        let s2c = (Host::Server, Host::Client);
        // ClientHellos in the three record versions; the 0xfeff one is longer than a
        // small record's snap (it goes out as a large record).
        for (version, suites) in [(DTLS_1_0, 60), (DTLS_1_2, 4), (DTLS_CISCO, 2)] {
            let hello = dtls_handshake(proto::HS_CLIENT_HELLO, 0, &client_hello_body(version, suites, true));
            let d = dtls_record(CT_HANDSHAKE, version, 0, 0, &hello);
            let frame = udp(ip.headers(c2s.0, c2s.1), UDP_CLIENT_PORT, 443, &d);
            let want = Want::new(EventKind::Dtls, ip, c2s, IPPROTO_UDP, (UDP_CLIENT_PORT, 443))
                .payload(&frame, d.len())
                .info(dtls_info(1, CT_BIT_HANDSHAKE, 1 << proto::HS_CLIENT_HELLO, version));
            cases.push(Case::new(format!("{ip:?} DTLS {version:#06x} ClientHello"), frame, Class::Dtls).event(want));
        }

        // HelloVerifyRequest from the server.
        let hvr = dtls_handshake(proto::HS_HELLO_VERIFY_REQUEST, 0, &[0xfe, 0xff, 4, 1, 2, 3, 4]);
        let d = dtls_record(CT_HANDSHAKE, DTLS_1_0, 0, 0, &hvr);
        let frame = udp(ip.headers(s2c.0, s2c.1), 443, UDP_CLIENT_PORT, &d);
        let want = Want::new(EventKind::Dtls, ip, s2c, IPPROTO_UDP, (443, UDP_CLIENT_PORT))
            .payload(&frame, d.len())
            .info(dtls_info(1, CT_BIT_HANDSHAKE, 1 << proto::HS_HELLO_VERIFY_REQUEST, DTLS_1_0));
        cases.push(Case::new(format!("{ip:?} DTLS HelloVerifyRequest"), frame, Class::Dtls).event(want));

        // A server flight: ServerHello, Certificate, ServerHelloDone in three records.
        let mut d = dtls_record(CT_HANDSHAKE, DTLS_1_2, 0, 1, &dtls_handshake(2, 1, &[0xfe, 0xfd, 9, 9, 9, 9]));
        d.extend(dtls_record(CT_HANDSHAKE, DTLS_1_2, 0, 2, &dtls_handshake(11, 2, &[0x30; 40])));
        d.extend(dtls_record(CT_HANDSHAKE, DTLS_1_2, 0, 3, &dtls_handshake(14, 3, &[])));
        let frame = udp(ip.headers(s2c.0, s2c.1), 443, UDP_CLIENT_PORT, &d);
        let want = Want::new(EventKind::Dtls, ip, s2c, IPPROTO_UDP, (443, UDP_CLIENT_PORT))
            .payload(&frame, d.len())
            .info(dtls_info(3, CT_BIT_HANDSHAKE, (1 << 2) | (1 << 11) | (1 << 14), DTLS_1_2));
        cases.push(
            Case::new(format!("{ip:?} DTLS ServerHello+Certificate+ServerHelloDone flight"), frame, Class::Dtls)
                .event(want),
        );

        // An encrypted alert (epoch 1) is reported, with no handshake types.
        let d = dtls_record(CT_ALERT, DTLS_1_2, 1, 7, &[0xa5; 26]);
        let frame = udp(ip.headers(c2s.0, c2s.1), UDP_CLIENT_PORT, 443, &d);
        let want = Want::new(EventKind::Dtls, ip, c2s, IPPROTO_UDP, (UDP_CLIENT_PORT, 443))
            .payload(&frame, d.len())
            .info(dtls_info(1, 1 << (CT_ALERT - 20), 0, DTLS_1_2));
        cases.push(Case::new(format!("{ip:?} DTLS encrypted alert"), frame, Class::Dtls).event(want));

        // Application data only: DTLS, but nothing to report.
        let mut d = dtls_record(CT_APPLICATION_DATA, DTLS_CISCO, 1, 20, &[0x17; 100]);
        d.extend(dtls_record(CT_APPLICATION_DATA, DTLS_CISCO, 1, 21, &[0x18; 30]));
        let frame = udp(ip.headers(c2s.0, c2s.1), UDP_CLIENT_PORT, 443, &d);
        cases.push(Case::new(format!("{ip:?} DTLS application data only"), frame, Class::Dtls));

        // A large application-data datagram: DTLS outranks large_df.
        let d = dtls_record(CT_APPLICATION_DATA, DTLS_1_2, 1, 22, &[0x19; LARGE_SEG]);
        let frame = udp(ip.headers(c2s.0, c2s.1), UDP_CLIENT_PORT, 443, &d);
        cases.push(Case::new(format!("{ip:?} DTLS large application data"), frame, Class::Dtls));

        // An encrypted handshake record (epoch 1, e.g. Finished): reported, no types.
        let d = dtls_record(CT_HANDSHAKE, DTLS_1_2, 1, 0, &[0x5c; 40]);
        let frame = udp(ip.headers(c2s.0, c2s.1), UDP_CLIENT_PORT, 443, &d);
        let want = Want::new(EventKind::Dtls, ip, c2s, IPPROTO_UDP, (UDP_CLIENT_PORT, 443))
            .payload(&frame, d.len())
            .info(dtls_info(1, CT_BIT_HANDSHAKE, 0, DTLS_1_2));
        cases.push(Case::new(format!("{ip:?} DTLS encrypted handshake (epoch 1)"), frame, Class::Dtls).event(want));

        // Two handshake messages in one record.
        let mut msgs = dtls_handshake(2, 1, &[0xfe, 0xfd, 1, 2, 3]);
        msgs.extend(dtls_handshake(14, 2, &[]));
        let d = dtls_record(CT_HANDSHAKE, DTLS_1_0, 0, 1, &msgs);
        let frame = udp(ip.headers(s2c.0, s2c.1), 443, UDP_CLIENT_PORT, &d);
        let want = Want::new(EventKind::Dtls, ip, s2c, IPPROTO_UDP, (443, UDP_CLIENT_PORT))
            .payload(&frame, d.len())
            .info(dtls_info(1, CT_BIT_HANDSHAKE, (1 << 2) | (1 << 14), DTLS_1_0));
        cases.push(
            Case::new(format!("{ip:?} DTLS ServerHello+ServerHelloDone in one record"), frame, Class::Dtls).event(want),
        );

        // A record followed by a stray byte does not fill the datagram: not DTLS. Cut
        // before the stray byte, the record runs to the end of what is there, exactly
        // like a capture cut short: that cut is DTLS.
        let mut d =
            dtls_record(CT_HANDSHAKE, DTLS_1_2, 0, 0, &dtls_handshake(1, 0, &client_hello_body(DTLS_1_2, 2, true)));
        d.push(0);
        let frame = udp(ip.headers(c2s.0, c2s.1), UDP_CLIENT_PORT, 443, &d);
        cases.push(
            Case::new(format!("{ip:?} DTLS ClientHello and a stray byte"), frame, Class::Other).cut_may_be(Class::Dtls),
        );
    }
    cases
}

fn tls_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for ip in Ip::BOTH {
        let flags = TCP_ACK | TCP_PSH;
        let tcp_info = |seq, ack| EventInfo { tcp_seq: seq, tcp_ack: ack, tcp_window: WINDOW, ..Default::default() };

        let rec = tls_handshake_record(0x0301, proto::HS_CLIENT_HELLO, &client_hello_body(0x0303, 3, false));
        let hdr = tcp_header(TCP_CLIENT_PORT, 443, 1001, 5001, flags, &[]);
        let frame = tcp(ip.headers(Host::Client, Host::Server), hdr, &rec);
        let want = Want::new(EventKind::Tls, ip, (Host::Client, Host::Server), IPPROTO_TCP, (TCP_CLIENT_PORT, 443))
            .payload(&frame, rec.len())
            .tcp_flags(flags)
            .info(EventInfo {
                handshake_mask: 1 << proto::HS_CLIENT_HELLO,
                record_version: 0x0301,
                ..tcp_info(1001, 5001)
            });
        cases.push(Case::new(format!("{ip:?} TLS ClientHello"), frame, Class::Tls).event(want));

        let rec = tls_handshake_record(0x0303, proto::HS_SERVER_HELLO, &[0x03, 0x03, 0x11, 0x22, 0x33, 0x44]);
        let hdr = tcp_header(443, TCP_CLIENT_PORT, 5001, 1200, flags, &[]);
        let frame = tcp(ip.headers(Host::Server, Host::Client), hdr, &rec);
        let want = Want::new(EventKind::Tls, ip, (Host::Server, Host::Client), IPPROTO_TCP, (443, TCP_CLIENT_PORT))
            .payload(&frame, rec.len())
            .tcp_flags(flags)
            .info(EventInfo {
                handshake_mask: 1 << proto::HS_SERVER_HELLO,
                record_version: 0x0303,
                ..tcp_info(5001, 1200)
            });
        cases.push(Case::new(format!("{ip:?} TLS ServerHello"), frame, Class::Tls).event(want));

        // A handshake record with another message (Certificate): TLS, not reported.
        let rec = tls_handshake_record(0x0303, 11, &[0x30; 50]);
        let hdr = tcp_header(443, TCP_CLIENT_PORT, 5100, 1200, flags, &[]);
        let frame = tcp(ip.headers(Host::Server, Host::Client), hdr, &rec);
        cases.push(Case::new(format!("{ip:?} TLS Certificate"), frame, Class::Tls));

        // A long ClientHello: the snap stops at SNAP_SMALL (the record header and the
        // start of the hello; the header's info holds the rest).
        let rec = tls_handshake_record(0x0301, proto::HS_CLIENT_HELLO, &client_hello_body(0x0303, 300, false));
        let hdr = tcp_header(TCP_CLIENT_PORT, 443, 1001, 5001, flags, &[]);
        let frame = tcp(ip.headers(Host::Client, Host::Server), hdr, &rec);
        let want = Want::new(EventKind::Tls, ip, (Host::Client, Host::Server), IPPROTO_TCP, (TCP_CLIENT_PORT, 443))
            .payload(&frame, rec.len())
            .tcp_flags(flags)
            .info(EventInfo {
                handshake_mask: 1 << proto::HS_CLIENT_HELLO,
                record_version: 0x0301,
                ..tcp_info(1001, 5001)
            });
        cases.push(Case::new(format!("{ip:?} TLS ClientHello, 600+ bytes"), frame, Class::Tls).event(want));

        // TCP Fast Open: a SYN carrying the ClientHello is TLS (TLS outranks SYN); cut
        // before the record, it is a plain SYN.
        let rec = tls_handshake_record(0x0301, proto::HS_CLIENT_HELLO, &client_hello_body(0x0303, 3, false));
        let opts = [2, 4, 0x05, 0xb4, 34, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1];
        let hdr = tcp_header(TCP_CLIENT_PORT, 443, 999, 0, TCP_SYN, &opts);
        let frame = tcp(ip.headers(Host::Client, Host::Server), hdr, &rec);
        let want = Want::new(EventKind::Tls, ip, (Host::Client, Host::Server), IPPROTO_TCP, (TCP_CLIENT_PORT, 443))
            .payload(&frame, rec.len())
            .tcp_flags(TCP_SYN)
            .info(EventInfo {
                handshake_mask: 1 << proto::HS_CLIENT_HELLO,
                record_version: 0x0301,
                ..tcp_info(999, 0)
            });
        cases.push(
            Case::new(format!("{ip:?} TLS ClientHello in a SYN (TFO)"), frame, Class::Tls)
                .event(want)
                .cut_may_be(Class::TcpSyn),
        );
    }
    cases
}

fn icmp_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let r2c = (Host::Router, Host::Client);
    let s2c = (Host::Server, Host::Client);
    let icmp_info =
        |t: u8, code: u8, mtu: u32| EventInfo { icmp_type: t, icmp_code: code, icmp_mtu: mtu, ..Default::default() };
    for ip in Ip::BOTH {
        // The packets the errors quote: a large DF TCP segment, a DTLS ClientHello.
        let big = tcp(
            ip.headers(Host::Client, Host::Server),
            tcp_header(TCP_CLIENT_PORT, 443, 1, 1, TCP_ACK, &[]),
            &[0x42; LARGE_SEG],
        );
        let hello =
            dtls_record(CT_HANDSHAKE, DTLS_CISCO, 0, 0, &dtls_handshake(1, 0, &client_hello_body(DTLS_CISCO, 2, true)));
        let dgram = ip_packet(&udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 443, &hello));
        let ip_hlen = if ip == Ip::V4 { 20 } else { 40 };
        let mut add = |name: &str, src_dst: (Host, Host), msg: Icmp, quote: &[u8], info: EventInfo| {
            let frame = icmp(ip.headers(src_dst.0, src_dst.1), msg, quote);
            let want = Want::new(EventKind::IcmpError, ip, src_dst, ip.icmp_proto(), (0, 0))
                .icmp_message(&frame, proto::ICMP_HLEN + quote.len())
                .info(info);
            cases.push(Case::new(format!("{ip:?} {name}"), frame, Class::IcmpError).event(want));
        };
        match ip {
            Ip::V4 => {
                // A router quotes the IP header and the first 8 bytes of the segment.
                let quote = &ip_packet(&big)[..ip_hlen + 8];
                add(
                    "ICMP 3/4 frag needed, next-hop MTU 1400",
                    r2c,
                    Icmp::V4(Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded {
                        next_hop_mtu: 1400,
                    })),
                    quote,
                    icmp_info(3, 4, 1400),
                );
                add(
                    "ICMP 3/3 port unreachable quoting a DTLS datagram",
                    s2c,
                    Icmp::V4(Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port)),
                    &dgram,
                    icmp_info(3, 3, 0),
                );
                add(
                    "ICMP 12/0 parameter problem",
                    r2c,
                    Icmp::V4(Icmpv4Type::ParameterProblem(icmpv4::ParameterProblemHeader::PointerIndicatesError(9))),
                    &dgram[..ip_hlen + 8],
                    icmp_info(12, 0, 0),
                );
                add(
                    "ICMP 11/0 time exceeded",
                    r2c,
                    Icmp::V4(Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit)),
                    &dgram[..ip_hlen + 8],
                    icmp_info(11, 0, 0),
                );
            }
            Ip::V6 => {
                add(
                    "ICMPv6 2/0 packet too big, MTU 1280, 200-byte quote",
                    r2c,
                    Icmp::V6(Icmpv6Type::PacketTooBig { mtu: 1280 }),
                    &ip_packet(&big)[..200],
                    icmp_info(2, 0, 1280),
                );
                // As Linux sends it: as much of the packet as fits in 1280 bytes; the
                // snap stops at SNAP_LARGE.
                add(
                    "ICMPv6 2/0 packet too big, MTU 1400, 1232-byte quote",
                    r2c,
                    Icmp::V6(Icmpv6Type::PacketTooBig { mtu: 1400 }),
                    &ip_packet(&big)[..1232],
                    icmp_info(2, 0, 1400),
                );
                add(
                    "ICMPv6 1/4 port unreachable quoting a DTLS datagram",
                    s2c,
                    Icmp::V6(Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port)),
                    &dgram,
                    icmp_info(1, 4, 0),
                );
                add(
                    "ICMPv6 4/1 parameter problem",
                    r2c,
                    Icmp::V6(Icmpv6Type::ParameterProblem(icmpv6::ParameterProblemHeader {
                        code: icmpv6::ParameterProblemCode::UnrecognizedNextHeader,
                        pointer: 6,
                    })),
                    &dgram,
                    icmp_info(4, 1, 0),
                );
                // Longer than large_packet_bytes: the ICMP error outranks large_df.
                let mut quote = ip_packet(&big);
                quote.truncate(1300);
                add(
                    "ICMPv6 1/4 port unreachable, 1300-byte quote",
                    s2c,
                    Icmp::V6(Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port)),
                    &quote,
                    icmp_info(1, 4, 0),
                );
                add(
                    "ICMPv6 3/0 hop limit exceeded",
                    r2c,
                    Icmp::V6(Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded)),
                    &dgram[..ip_hlen + 8],
                    icmp_info(3, 0, 0),
                );
            }
        }
    }
    cases
}

fn tcp_syn_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for ip in Ip::BOTH {
        let c2s = (Host::Client, Host::Server);
        let mut add =
            |name: &str, (src, dst): (Host, Host), ports: (u16, u16), flags: u8, ack: u32, opts: &[u8], mss: u16| {
                let frame = tcp(ip.headers(src, dst), tcp_header(ports.0, ports.1, 3000, ack, flags, opts), &[]);
                let want =
                    Want::new(EventKind::TcpSyn, ip, (src, dst), IPPROTO_TCP, ports).tcp_flags(flags).info(EventInfo {
                        tcp_seq: 3000,
                        tcp_ack: ack,
                        tcp_window: WINDOW,
                        tcp_mss: mss,
                        ..Default::default()
                    });
                cases.push(Case::new(format!("{ip:?} {name}"), frame, Class::TcpSyn).event(want));
            };
        // NOP, NOP, SACK permitted, MSS 1460.
        add("SYN, MSS 1460 after NOPs", c2s, (TCP_CLIENT_PORT, 443), TCP_SYN, 0, &[1, 1, 4, 2, 2, 4, 0x05, 0xb4], 1460);
        add("SYN without options", c2s, (TCP_CLIENT_PORT, 443), TCP_SYN, 0, &[], 0);
        add("SYN, window scale only", c2s, (TCP_CLIENT_PORT, 443), TCP_SYN, 0, &[1, 3, 3, 7], 0);
        // The last position an MSS option can start at and still fit: 36 NOPs first.
        let mut late = vec![1u8; 36];
        late.extend_from_slice(&[2, 4, 0x05, 0x8a]);
        add("SYN, MSS 1418 after 36 NOPs", c2s, (TCP_CLIENT_PORT, 443), TCP_SYN, 0, &late, 1418);
        add(
            "SYN-ACK, MSS 1418",
            (Host::Server, Host::Client),
            (443, TCP_CLIENT_PORT),
            TCP_SYN | TCP_ACK,
            3001,
            &[2, 4, 0x05, 0x8a],
            1418,
        );
        // Padded to Ethernet's 60-byte minimum (IPv6: a 4-byte trailer).
        let frame =
            tcp(ip.headers(Host::Client, Host::Server), tcp_header(TCP_CLIENT_PORT, 443, 3000, 0, TCP_SYN, &[]), &[]);
        let want = Want::new(EventKind::TcpSyn, ip, c2s, IPPROTO_TCP, (TCP_CLIENT_PORT, 443))
            .tcp_flags(TCP_SYN)
            .info(EventInfo { tcp_seq: 3000, tcp_window: WINDOW, ..Default::default() });
        let trailer = if ip == Ip::V4 { 60 - frame.len() } else { 4 };
        cases.push(
            Case::new(format!("{ip:?} SYN with an Ethernet trailer"), with_trailer(frame, trailer), Class::TcpSyn)
                .event(want),
        );
    }
    cases
}

/// FIN and RST: a `TcpFin` event carrying the acknowledgment number, whatever the
/// segment's class; SYN outranks it, and a large retransmission replaces it.
fn tcp_fin_cases() -> Vec<Case> {
    let (fin, rst) = (proto::TCP_FIN, proto::TCP_RST);
    let mut cases = Vec::new();
    for ip in Ip::BOTH {
        let s2c = (Host::Server, Host::Client);
        let mut add = |name: &str, flags: u8, payload: &[u8], class: Class| {
            let frame =
                tcp(ip.headers(s2c.0, s2c.1), tcp_header(443, TCP_CLIENT_PORT, 8000, 20_000, flags, &[]), payload);
            let want = Want::new(EventKind::TcpFin, ip, s2c, IPPROTO_TCP, (443, TCP_CLIENT_PORT))
                .tcp_flags(flags)
                .l4_payload_len(payload.len())
                .info(EventInfo { tcp_seq: 8000, tcp_ack: 20_000, tcp_window: WINDOW, ..Default::default() });
            cases.push(Case::new(format!("{ip:?} {name}"), frame, class).event(want));
        };
        add("FIN-ACK", fin | TCP_ACK, &[], Class::Other);
        add("FIN-PSH-ACK with data", fin | TCP_PSH | TCP_ACK, b"bye\r\n", Class::Other);
        add("RST", rst, &[], Class::Other);
        add("RST-ACK", rst | TCP_ACK, &[], Class::Other);
        // A FIN on a large DF segment sent for the first time: still large_df.
        add("large DF FIN, first time", fin | TCP_ACK, &[0x5a; LARGE_SEG], Class::LargeDf);

        // SYN with FIN (a scan): the SYN rule decides.
        let c2s = (Host::Client, Host::Server);
        let flags = TCP_SYN | fin;
        let frame = tcp(ip.headers(c2s.0, c2s.1), tcp_header(TCP_CLIENT_PORT, 443, 3000, 0, flags, &[]), &[]);
        let want = Want::new(EventKind::TcpSyn, ip, c2s, IPPROTO_TCP, (TCP_CLIENT_PORT, 443))
            .tcp_flags(flags)
            .info(EventInfo { tcp_seq: 3000, tcp_window: WINDOW, ..Default::default() });
        cases.push(Case::new(format!("{ip:?} SYN-FIN is a SYN"), frame, Class::TcpSyn).event(want));

        // A large FIN sent again is a retransmission first.
        let flags = fin | TCP_ACK;
        let seg = tcp(
            ip.headers(c2s.0, c2s.1),
            tcp_header(TCP_CLIENT_PORT, 443, 10_000, 777, flags, &[]),
            &[0x5a; LARGE_SEG],
        );
        let want = Want::new(EventKind::TcpLargeRetransmit, ip, c2s, IPPROTO_TCP, (TCP_CLIENT_PORT, 443))
            .tcp_flags(flags)
            .l4_payload_len(LARGE_SEG)
            .info(EventInfo {
                tcp_seq: 10_000,
                tcp_ack: 777,
                tcp_window: WINDOW,
                seg_len: LARGE_SEG as u16,
                retransmits: 1,
                ..Default::default()
            });
        cases.push(
            Case::new(format!("{ip:?} large DF FIN sent again"), seg.clone(), Class::LargeDf)
                .after(vec![seg])
                .event(want),
        );
        // DNS over TCP and TLS records keep their own rules: no FIN event.
        let frame = tcp(ip.headers(c2s.0, c2s.1), tcp_header(TCP_CLIENT_PORT, 53, 7000, 9000, fin | TCP_ACK, &[]), &[]);
        cases.push(Case::new(format!("{ip:?} FIN on TCP/53"), frame, Class::Dns));
    }
    cases
}

/// A large TCP segment from the client, `LARGE_SEG` bytes at `seq`.
fn large_segment(ip: Ip, seq: u32) -> Vec<u8> {
    tcp(
        ip.headers(Host::Client, Host::Server),
        tcp_header(TCP_CLIENT_PORT, 443, seq, 777, TCP_ACK, &[]),
        &[0x5a; LARGE_SEG],
    )
}

fn large_df_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for ip in Ip::BOTH {
        let seg = large_segment(ip, 10_000);
        let retransmit = |retransmits: u32, largest_acked: u16, seq: u32| {
            Want::new(
                EventKind::TcpLargeRetransmit,
                ip,
                (Host::Client, Host::Server),
                IPPROTO_TCP,
                (TCP_CLIENT_PORT, 443),
            )
            .tcp_flags(TCP_ACK)
            .l4_payload_len(LARGE_SEG)
            .info(EventInfo {
                tcp_seq: seq,
                tcp_ack: 777,
                tcp_window: WINDOW,
                seg_len: LARGE_SEG as u16,
                largest_acked,
                retransmits,
                ..Default::default()
            })
        };
        cases.push(Case::new(format!("{ip:?} large DF TCP segment, first time"), seg.clone(), Class::LargeDf));
        cases.push(
            Case::new(format!("{ip:?} large DF TCP segment, sent again"), seg.clone(), Class::LargeDf)
                .after(vec![seg.clone()])
                .event(retransmit(1, 0, 10_000)),
        );
        cases.push(
            Case::new(format!("{ip:?} large DF TCP segment, third time"), seg.clone(), Class::LargeDf)
                .after(vec![seg.clone(), seg.clone()])
                .event(retransmit(2, 0, 10_000)),
        );
        // Two full-size segments, then the second again: the sender retransmits from
        // its oldest unacknowledged byte, so the first one got through.
        let next = large_segment(ip, 10_000 + LARGE_SEG as u32);
        cases.push(
            Case::new(
                format!("{ip:?} large DF TCP segment resent after a full-size one"),
                next.clone(),
                Class::LargeDf,
            )
            .after(vec![seg.clone(), next.clone()])
            .event(retransmit(1, LARGE_SEG as u16, 10_000 + LARGE_SEG as u32)),
        );
        // Large UDP with DF (any IPv6 packet): large_df, no flow tracking.
        let frame = udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 4500, &[0x33; LARGE_SEG]);
        cases.push(Case::new(format!("{ip:?} large DF UDP datagram"), frame, Class::LargeDf));
    }
    cases
}

fn other_cases() -> Vec<Case> {
    let mut cases = vec![Case::new("ARP request", arp(), Class::Other)];
    // IPv4 without DF may be fragmented on the way: never large_df, however long.
    let frame = udp(Ip::headers_no_df(Host::Client, Host::Server), UDP_CLIENT_PORT, 4500, &[0x33; LARGE_SEG]);
    cases.push(Case::new("V4 large UDP without DF", frame, Class::Other));
    let frame = tcp(
        Ip::headers_no_df(Host::Client, Host::Server),
        tcp_header(TCP_CLIENT_PORT, 443, 1, 1, TCP_ACK, &[]),
        &[0x5a; LARGE_SEG],
    );
    cases.push(Case::new("V4 large TCP segment without DF", frame, Class::Other));
    for ip in Ip::BOTH {
        let hdr = tcp_header(TCP_CLIENT_PORT, 443, 4000, 4000, TCP_ACK, &[]);
        cases.push(Case::new(
            format!("{ip:?} small TCP ACK"),
            tcp(ip.headers(Host::Client, Host::Server), hdr, &[]),
            Class::Other,
        ));
        let hdr = tcp_header(TCP_CLIENT_PORT, 443, 4000, 4000, TCP_ACK | TCP_PSH, &[]);
        let frame = tcp(ip.headers(Host::Client, Host::Server), hdr, b"GET / HTTP/1.1\r\n\r\n");
        cases.push(Case::new(format!("{ip:?} small TCP data"), frame, Class::Other));
        let frame = udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 4500, &[0x17, 0xfe, 0xfd, 0, 1]);
        cases.push(Case::new(format!("{ip:?} small UDP, not DTLS"), frame, Class::Other));
        let frame = udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 5353, &dns_query(7, "printer.local"));
        cases.push(Case::new(format!("{ip:?} UDP/5353, not configured"), frame, Class::Other));
        let echo = IcmpEchoHeader { id: 1, seq: 1 };
        let msg = match ip {
            Ip::V4 => Icmp::V4(Icmpv4Type::EchoRequest(echo)),
            Ip::V6 => Icmp::V6(Icmpv6Type::EchoRequest(echo)),
        };
        let frame = icmp(ip.headers(Host::Client, Host::Server), msg, &[0x61; 32]);
        cases.push(Case::new(format!("{ip:?} ICMP echo request"), frame, Class::Other));
    }
    let ts =
        icmpv4::TimestampMessage { id: 1, seq: 2, originate_timestamp: 3, receive_timestamp: 0, transmit_timestamp: 0 };
    let frame = icmp(Ip::V4.headers(Host::Client, Host::Server), Icmp::V4(Icmpv4Type::TimestampRequest(ts)), &[]);
    cases.push(Case::new("V4 ICMP timestamp request", frame, Class::Other));
    // Three VLAN tags: more than the programs parse.
    let plain = udp(Ip::V4.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &dns_query(3, "three.tags"));
    let mut frame = plain[..12].to_vec();
    for vid in [300u16, 200, 100] {
        frame.extend_from_slice(&[0x81, 0x00]);
        frame.extend_from_slice(&vid.to_be_bytes());
    }
    frame.extend_from_slice(&plain[12..]);
    cases.push(Case::new("V4 UDP/53 behind three VLAN tags", frame, Class::Other));
    // PPPoE carrying LCP, not IP.
    let mut frame = MAC_A.to_vec();
    frame.extend_from_slice(&MAC_B);
    frame.extend_from_slice(&proto::ETH_P_PPPOE_SESSION.to_be_bytes());
    frame.extend_from_slice(&[0x11, 0x00, 0x12, 0x34, 0x00, 0x0a, 0xc0, 0x21, 0x09, 0x01, 0x00, 0x08, 0, 0, 0, 0]);
    cases.push(Case::new("PPPoE LCP echo request", frame, Class::Other));
    // Malformed IP headers are not IP the classifiers read, whole or cut.
    let mut frame = udp(Ip::V6.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &dns_query(4, "bad.version"));
    frame[ETH_HLEN] = 0x40 | (frame[ETH_HLEN] & 0x0f);
    cases.push(Case::new("V6 ethertype, IP version 4 in the header", frame, Class::Other));
    let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, Ip::v4(Host::Client), Ip::v4(Host::Server)).unwrap();
    h.options = Ipv4Options::from([1, 1, 1, 0]);
    let mut frame = udp(IpHeaders::Ipv4(h, Default::default()), UDP_CLIENT_PORT, 53, &dns_query(4, "short.total"));
    frame[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&20u16.to_be_bytes());
    cases.push(Case::new("V4 IHL 6, total length 20", frame, Class::Other));
    cases
}

/// UDP/53 queries behind IPv6 extension chains, and fragments.
fn ipv6_ext_cases() -> Vec<Case> {
    let q = dns_query(0x4242, "example.test");
    let base = udp(Ip::V6.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &q);
    let dns = |frame: &[u8]| {
        Want::new(EventKind::Dns, Ip::V6, (Host::Client, Host::Server), IPPROTO_UDP, (UDP_CLIENT_PORT, 53))
            .payload(frame, q.len())
    };
    let mut cases = Vec::new();
    let frame = with_ipv6_exts(&base, &[Ext::HopByHop(0), Ext::Routing(2), Ext::DestOpts(1)]);
    cases.push(
        Case::new("V6 hop-by-hop + routing + destination options, UDP/53", frame.clone(), Class::Dns)
            .event(dns(&frame)),
    );
    let frame = with_ipv6_exts(&base, &[Ext::Fragment { offset: 0, more: true }]);
    let want = dns(&frame).ip_flags(IP_FLAG_DF | IP_FLAG_FRAGMENT | IP_FLAG_MF);
    cases.push(Case::new("V6 first fragment (offset 0, M set), UDP/53", frame, Class::Dns).event(want));
    let frame = with_ipv6_exts(&base, &[Ext::HopByHop(0), Ext::Fragment { offset: 0, more: false }, Ext::DestOpts(0)]);
    let want = dns(&frame).ip_flags(IP_FLAG_DF | IP_FLAG_FRAGMENT);
    cases.push(
        Case::new("V6 hop-by-hop + atomic fragment + destination options, UDP/53", frame, Class::Dns).event(want),
    );
    // A non-first fragment has no transport header: what follows looks like UDP/53
    // but must not be read.
    let frame = with_ipv6_exts(&base, &[Ext::Fragment { offset: 185, more: true }]);
    cases.push(Case::new("V6 non-first fragment, small", frame, Class::Other));
    let big = udp(Ip::V6.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &[0; LARGE_SEG]);
    let frame = with_ipv6_exts(&big, &[Ext::Fragment { offset: 185, more: false }]);
    cases.push(Case::new("V6 non-first fragment, large", frame, Class::LargeDf));
    // The chain limit: MAX_IPV6_EXT_HEADERS headers are walked, one more is not.
    let chain = vec![Ext::DestOpts(0); MAX_IPV6_EXT_HEADERS];
    let frame = with_ipv6_exts(&base, &chain);
    cases.push(
        Case::new(format!("V6 {MAX_IPV6_EXT_HEADERS} extension headers, UDP/53"), frame.clone(), Class::Dns)
            .event(dns(&frame)),
    );
    let chain = vec![Ext::DestOpts(0); MAX_IPV6_EXT_HEADERS + 1];
    let frame = with_ipv6_exts(&base, &chain);
    cases.push(Case::new(format!("V6 {} extension headers, UDP/53", MAX_IPV6_EXT_HEADERS + 1), frame, Class::Other));
    cases
}

/// UDP/53 queries behind IPv4 options, a bad IHL, and IPv4 fragments.
fn ipv4_header_cases() -> Vec<Case> {
    let q = dns_query(0x5151, "example.test");
    let mut cases = Vec::new();
    for ihl in 6..=15u8 {
        // NOPs, then end of options.
        let mut opts = vec![1u8; (ihl as usize - 5) * 4];
        *opts.last_mut().unwrap() = 0;
        let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, Ip::v4(Host::Client), Ip::v4(Host::Server)).unwrap();
        h.options = Ipv4Options::try_from(&opts[..]).unwrap();
        let frame = udp(IpHeaders::Ipv4(h, Default::default()), UDP_CLIENT_PORT, 53, &q);
        assert_eq!(frame[ETH_HLEN] & 0x0f, ihl);
        let want = Want::new(EventKind::Dns, Ip::V4, (Host::Client, Host::Server), IPPROTO_UDP, (UDP_CLIENT_PORT, 53))
            .payload(&frame, q.len());
        cases.push(Case::new(format!("V4 IHL {ihl}, UDP/53"), frame, Class::Dns).event(want));
    }
    let plain = udp(Ip::V4.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &q);
    for ihl in 0..5u8 {
        let mut frame = plain.clone();
        frame[ETH_HLEN] = 0x40 | ihl;
        cases.push(Case::new(format!("V4 IHL {ihl}, UDP/53 behind it"), frame, Class::Other));
    }
    // First fragment: the transport header is there.
    let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, Ip::v4(Host::Client), Ip::v4(Host::Server)).unwrap();
    h.dont_fragment = false;
    h.more_fragments = true;
    let frame = udp(IpHeaders::Ipv4(h.clone(), Default::default()), UDP_CLIENT_PORT, 53, &q);
    let want = Want::new(EventKind::Dns, Ip::V4, (Host::Client, Host::Server), IPPROTO_UDP, (UDP_CLIENT_PORT, 53))
        .payload(&frame, q.len())
        .ip_flags(IP_FLAG_MF | IP_FLAG_FRAGMENT);
    cases.push(Case::new("V4 first fragment (MF, offset 0), UDP/53", frame, Class::Dns).event(want));
    // Non-first fragments: bytes that look like UDP/53 must not be read.
    for more in [true, false] {
        let mut h = h.clone();
        h.more_fragments = more;
        h.fragment_offset = IpFragOffset::try_new(185).unwrap();
        let frame = udp(IpHeaders::Ipv4(h, Default::default()), UDP_CLIENT_PORT, 53, &q);
        cases.push(Case::new(
            format!("V4 non-first fragment (offset 185, MF {more}), UDP/53 bytes"),
            frame,
            Class::Other,
        ));
    }
    cases
}

/// Every crafted frame.
fn all_cases() -> Vec<Case> {
    [
        dns_cases(),
        dtls_cases(),
        tls_cases(),
        icmp_cases(),
        tcp_syn_cases(),
        tcp_fin_cases(),
        large_df_cases(),
        other_cases(),
        ipv6_ext_cases(),
        ipv4_header_cases(),
    ]
    .concat()
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

/// DNS: UDP/53 queries and responses are `dns` with a `Dns` event whose snap is the
/// DNS message; UDP/53 with under 4 payload bytes, TCP/53 (data or SYN) are `dns`
/// without event; a configured extra port (5353) is DNS too.
#[test]
fn dns_frames() {
    let Some(mut rig) = rig("dns_frames") else { return };
    rig.check_all(&dns_cases());
}

/// DTLS: ClientHellos in versions 0xfeff, 0xfefd and 0x0100 on UDP/443 and a
/// HelloVerifyRequest give a `Dtls` event with one record and the handshake type; a
/// three-record server flight sets bits 2, 11 and 14 of the handshake mask; an
/// encrypted alert is reported with no handshake types; application data alone is
/// `dtls` without event.
#[test]
fn dtls_frames() {
    let Some(mut rig) = rig("dtls_frames") else { return };
    rig.check_all(&dtls_cases());
}

/// TLS: a TCP segment starting with a handshake record carrying a ClientHello or
/// ServerHello is `tls` with a `Tls` event (type bit, record version, TCP fields,
/// snap = the records); another handshake message is `tls` without event.
#[test]
fn tls_frames() {
    let Some(mut rig) = rig("tls_frames") else { return };
    rig.check_all(&tls_cases());
}

/// ICMP errors: v4 frag-needed (next-hop MTU in `icmp_mtu`), port unreachable and time
/// exceeded; v6 packet too big (MTU), port unreachable and hop limit exceeded. Each is
/// `icmp_error` with an event whose snap is the ICMP message with its quote (capped at
/// SNAP_LARGE for a 1232-byte quote).
#[test]
fn icmp_error_frames() {
    let Some(mut rig) = rig("icmp_error_frames") else { return };
    rig.check_all(&icmp_cases());
}

/// TCP SYN: `tcp_syn` with a `TcpSyn` event carrying the MSS option (1460 after NOPs
/// and SACK-permitted, 1418 at the last position it fits, 1418 on a SYN-ACK), or 0
/// when there is none.
#[test]
fn tcp_syn_frames() {
    let Some(mut rig) = rig("tcp_syn_frames") else { return };
    rig.check_all(&tcp_syn_cases());
}

/// FIN and RST: a `TcpFin` event with the sequence and acknowledgment numbers and the
/// flags, in the segment's own class (`other`, or `large_df` for a large DF one sent the
/// first time); a SYN-FIN is a SYN, a large FIN sent again a `TcpLargeRetransmit`, and
/// a FIN on TCP/53 stays DNS without event.
#[test]
fn tcp_fin_frames() {
    let Some(mut rig) = rig("tcp_fin_frames") else { return };
    rig.check_all(&tcp_fin_cases());
}

/// Large DF packets: a TCP segment over `large_packet_bytes` is `large_df` without
/// event the first time; sent again it gives `TcpLargeRetransmit` with `seg_len` and
/// `retransmits` 1 (2 the third time); resent after a full-size segment went through,
/// `largest_acked` is that size. Large DF UDP is `large_df` without event.
#[test]
fn large_df_frames() {
    let Some(mut rig) = rig("large_df_frames") else { return };
    rig.check_all(&large_df_cases());
}

/// `other`: ARP, large IPv4 UDP or TCP without DF, small TCP ACKs and data, small
/// non-DTLS UDP, UDP/5353 when not configured, ICMP echo. No event for any.
#[test]
fn other_frames() {
    let Some(mut rig) = rig("other_frames") else { return };
    rig.check_all(&other_cases());
}

/// Every crafted frame (all the cases above, under every link layer) cut at every
/// length from MIN_FRAME to one byte short, through XDP and TC (except the TC runs
/// the kernel refuses: untagged IP frames cut inside the fixed IP header, see
/// `skb_test_run_refuses`). Frames that `before` a case are sent whole first, so a
/// cut retransmission is still a retransmission.
///
/// A cut frame is the same packet seen with fewer bytes; its headers still claim the
/// full lengths. A *correct partial classification* of it is, precisely:
/// 1. the hook passes it (XDP_PASS / TC_ACT_OK), and the kernel and the userspace
///    classifier agree on its class, `truncated` and events (checked in `step`);
/// 2. its class is the full frame's, or `other` (the bytes that decide the class are
///    gone), or `large_df` when the full frame's IP header claims a large DF packet
///    (the class the IP header alone decides) -- never another class, with one
///    deliberate exception, declared per case (`Case::cut_may_be`): a class the cut
///    bytes outranked or ruled out. A TFO SYN whose ClientHello is cut off is a plain
///    `tcp_syn`; a DTLS record followed by a stray byte (not DTLS: the records do not
///    fill the datagram) cut before that byte is indistinguishable from a DTLS
///    datagram cut by the capture, which the DTLS rule accepts;
/// 3. it has no event, or one event of the full frame's kind whose header equals the
///    full frame's event header except `wire_len` (the cut length), `l4_payload_len`
///    and `snap_len` (at most the full values: only bytes present are counted) and,
///    for DTLS, the records walked before the cut (`dtls_records` at most the full
///    count, content and handshake masks subsets of the full ones) -- or, for a
///    declared fallback class, that class's event;
/// 4. its snap is the cut frame's bytes at `snap_offset` and ends within the cut
///    frame; unless it is a fallback's, it is a prefix of the full frame's snap, at
///    the same offset.
#[test]
fn every_truncation_of_every_crafted_frame() {
    if !privileged("every_truncation_of_every_crafted_frame") {
        return;
    }
    let cases = all_cases();
    // Independent rigs (each its own programs and maps) share the cases out.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let tallies: Vec<[u64; 3]> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let cases = &cases;
                scope.spawn(move || {
                    let mut rig = Rig::new();
                    let mut tally = [0u64; 3];
                    for case in cases.iter().skip(t).step_by(threads) {
                        let (cuts, events) = check_truncations(&mut rig, case);
                        tally[0] += cuts;
                        tally[1] += events;
                    }
                    tally[2] = rig.tc_refused;
                    tally
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a truncation worker failed (its panic is above)")).collect()
    });
    let [cuts, events, refused] = tallies.iter().fold([0; 3], |a, t| [a[0] + t[0], a[1] + t[1], a[2] + t[2]]);
    eprintln!(
        "{} cases: {cuts} cut frames, {events} partial events, {refused} TC runs refused by the kernel",
        cases.len()
    );
}

/// Every cut of `case` under every link layer; returns (cut frames, events they raised).
fn check_truncations(rig: &mut Rig, case: &Case) -> (u64, u64) {
    let (mut cuts, mut events) = (0, 0);
    rig.configure(case.config());
    // Whether the IP header claims a large DF packet: a cut that loses the transport
    // header still has that, and is `large_df`.
    let large_ip = {
        let f = &case.frame;
        let ip_len = claimed_ip_len(f) as u32;
        let v4_df = f[12..14] == proto::ETH_P_IPV4.to_be_bytes() && f[ETH_HLEN + 6] & 0x40 != 0;
        let v6 = f[12..14] == proto::ETH_P_IPV6.to_be_bytes();
        rig.cfg.is_large(ip_len, v4_df || v6)
    };
    for link in Link::ALL {
        let Some(frame) = link.apply(&case.frame) else { continue };
        let before: Vec<Vec<u8>> = case.before.iter().map(|f| link.apply(f).expect("same link")).collect();
        let name = format!("{} over {link:?}", case.name);
        let full = rig.run_case(&before, &frame, &name);
        for cut in MIN_FRAME..frame.len() {
            let what = format!("{name} cut to {cut} of {} bytes", frame.len());
            let part = &frame[..cut];
            let seen = rig.run_case(&before, part, &what);
            assert_partial(case, &full, &seen, part, large_ip, &what);
            cuts += 1;
            events += seen.events.len() as u64;
        }
    }
    (cuts, events)
}

/// See `every_truncation_of_every_crafted_frame` for the rule.
fn assert_partial(case: &Case, full: &Seen, cut: &Seen, part: &[u8], large_ip: bool, what: &str) {
    let fallback = cut.class != full.class && case.cut_may_be.contains(&cut.class);
    let allowed =
        cut.class == full.class || cut.class == Class::Other || (cut.class == Class::LargeDf && large_ip) || fallback;
    assert!(allowed, "{what}: class {:?}, but the whole frame is {:?}", cut.class, full.class);
    assert!(cut.events.len() <= 1, "{what}: more than one event");
    let Some(ev) = cut.events.first() else { return };
    let at = ev.header.snap_offset as usize;
    assert_eq!(ev.snap.len(), ev.header.snap_len as usize, "{what}: snap_len");
    assert!(at + ev.snap.len() <= part.len(), "{what}: snap [{at}, +{}) runs past the cut", ev.snap.len());
    assert_eq!(&ev.snap[..], &part[at..at + ev.snap.len()], "{what}: snap is not the frame's bytes");
    assert_eq!(ev.header.wire_len as usize, part.len(), "{what}: wire_len");
    if fallback {
        // The event of the class the cut fell back to: nothing of the whole frame's to compare.
        assert_eq!(ev.header.class, cut.class as u8, "{what}: event class");
        return;
    }
    let Some(whole) = full.events.first() else {
        panic!("{what}: event {ev:?}, but the whole frame has none");
    };
    let (h, w) = (&ev.header, &whole.header);
    assert!(h.l4_payload_len <= w.l4_payload_len, "{what}: l4_payload_len {} > {}", h.l4_payload_len, w.l4_payload_len);
    assert!(h.snap_len <= w.snap_len, "{what}: snap_len");
    if h.kind == EventKind::Dtls as u8 {
        let (i, wi) = (&h.info, &w.info);
        assert!(i.dtls_records >= 1 && i.dtls_records <= wi.dtls_records, "{what}: dtls_records {}", i.dtls_records);
        assert_eq!(i.dtls_content_mask & !wi.dtls_content_mask, 0, "{what}: content mask not a subset");
        assert_eq!(i.handshake_mask & !wi.handshake_mask, 0, "{what}: handshake mask not a subset");
    }
    // Everything else is the whole frame's.
    let mut same = *h;
    same.wire_len = w.wire_len;
    same.l4_payload_len = w.l4_payload_len;
    same.snap_len = w.snap_len;
    if h.kind == EventKind::Dtls as u8 {
        same.info.dtls_records = w.info.dtls_records;
        same.info.dtls_content_mask = w.info.dtls_content_mask;
        same.info.handshake_mask = w.info.handshake_mask;
    }
    assert_eq!(same, *w, "{what}: event header differs from the whole frame's beyond what the cut explains");
    assert_eq!(&ev.snap[..], &whole.snap[..ev.snap.len()], "{what}: snap is not a prefix of the whole frame's");
}

/// IPv6 extension headers: hop-by-hop + routing + destination options, a first or
/// atomic fragment, and exactly MAX_IPV6_EXT_HEADERS headers are walked to UDP/53
/// (`dns`, event at the right offset, fragment flags); a non-first fragment has no
/// transport layer (`other`, or `large_df` when large; NON_FIRST_FRAGMENT counted);
/// one header more than the limit stops the walk (`other`; IPV6_EXT_LIMIT counted).
#[test]
fn ipv6_extension_header_chains() {
    let Some(mut rig) = rig("ipv6_extension_header_chains") else { return };
    for case in ipv6_ext_cases() {
        let (frag0, limit0) = (rig.stat(stats::NON_FIRST_FRAGMENT), rig.stat(stats::IPV6_EXT_LIMIT));
        rig.check(&case);
        let runs = 2 * Link::ALL.len() as u64;
        let non_first = if case.name.contains("non-first") { runs } else { 0 };
        let over_limit = if case.name.contains(&format!("{} extension", MAX_IPV6_EXT_HEADERS + 1)) { runs } else { 0 };
        assert_eq!(rig.stat(stats::NON_FIRST_FRAGMENT) - frag0, non_first, "{}: NON_FIRST_FRAGMENT", case.name);
        assert_eq!(rig.stat(stats::IPV6_EXT_LIMIT) - limit0, over_limit, "{}: IPV6_EXT_LIMIT", case.name);
    }
}

/// IPv4 header: options (IHL 6 to 15) are stepped over to UDP/53 (`dns`, event at the
/// right offset); IHL 0 to 4 is not IPv4 we read (`other`); a first fragment is
/// parsed (MF and fragment flags in the event); a non-first fragment has no
/// transport layer (`other`, NON_FIRST_FRAGMENT counted).
#[test]
fn ipv4_options_and_fragments() {
    let Some(mut rig) = rig("ipv4_options_and_fragments") else { return };
    for case in ipv4_header_cases() {
        let frag0 = rig.stat(stats::NON_FIRST_FRAGMENT);
        rig.check(&case);
        let non_first = if case.name.contains("non-first") { 2 * Link::ALL.len() as u64 } else { 0 };
        assert_eq!(rig.stat(stats::NON_FIRST_FRAGMENT) - frag0, non_first, "{}: NON_FIRST_FRAGMENT", case.name);
    }
}

/// The CONFIG map is read per packet: with one loaded program set, UDP/5353 is
/// `other`, then `dns` (with its event) once 5353 is configured, then `other` again;
/// a 1000-byte DF datagram becomes `large_df` when `large_packet_bytes` drops to 900.
#[test]
fn config_change_reaches_the_kernel_without_reload() {
    let Some(mut rig) = rig("config_change_reaches_the_kernel_without_reload") else { return };
    let q = dns_query(99, "printer.local");
    let mdns = udp(Ip::V4.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 5353, &q);
    let big = udp(Ip::V6.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 4500, &[0; 1000]);
    let mut with_5353 = KernelConfig::new();
    with_5353.add_dns_port(5353);
    let mut small_threshold = KernelConfig::new();
    small_threshold.large_packet_bytes = 900;

    let steps: [(&str, KernelConfig, &[u8], Class, usize); 5] = [
        ("UDP/5353, default config", KernelConfig::new(), &mdns, Class::Other, 0),
        ("UDP/5353, 5353 configured", with_5353, &mdns, Class::Dns, 1),
        ("UDP/5353, 5353 removed", KernelConfig::new(), &mdns, Class::Other, 0),
        ("1040-byte IPv6 UDP, default threshold", KernelConfig::new(), &big, Class::Other, 0),
        ("1040-byte IPv6 UDP, threshold 900", small_threshold, &big, Class::LargeDf, 0),
    ];
    for (what, cfg, frame, class, events) in steps {
        rig.configure(cfg);
        let seen = rig.run_case(&[], frame, what);
        assert_eq!(seen.class, class, "{what}");
        assert_eq!(seen.events.len(), events, "{what}: events");
    }
}

/// A ring buffer too small for the events: with a 4096-byte ring buffer and nothing
/// draining it, 40 DNS queries through XDP fill it (16 small records of 248 bytes fit);
/// every frame that found no room is counted in RINGBUF_FULL, every one that did in
/// EVENTS_SUBMITTED, and after a drain there is room again.
#[test]
fn ringbuf_reservation_failures_are_counted() {
    if !privileged("ringbuf_reservation_failures_are_counted") {
        return;
    }
    let opts = LoadOptions { ringbuf_bytes: 4096, ..Default::default() };
    let mut runner = TestRunner::with_options(&opts, &KernelConfig::new()).expect("load with a small ring buffer");
    let frame = udp(Ip::V4.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &dns_query(1, "mus.cisco.com"));
    const SENT: u64 = 40;
    for _ in 0..SENT {
        let (action, _) = runner.run_repeat(Hook::Xdp, &frame, 1).expect("test run");
        assert_eq!(action, 2);
    }
    let drained = runner.drain() as u64;
    // Each record is RECORD_SMALL bytes after an 8-byte ring-buffer header, rounded to 8.
    let per_record = (8 + RECORD_SMALL as u64).div_ceil(8) * 8;
    assert_eq!(drained, 4096 / per_record, "records that fit a 4096-byte ring buffer");
    let stats = runner.kernel().stats().expect("read STATS");
    assert_eq!(stats[stats::RINGBUF_FULL as usize], SENT - drained, "RINGBUF_FULL = sent - drained");
    assert_eq!(stats[stats::EVENTS_SUBMITTED as usize], drained, "EVENTS_SUBMITTED = drained");

    // Drained, the ring buffer takes events again.
    let run = runner.run(Hook::Tc, &frame, true).expect("test run");
    assert_eq!(run.events.len(), 1, "an event after the drain");
    assert_eq!(run.class, Some(Class::Dns));
    let stats = runner.kernel().stats().expect("read STATS");
    assert_eq!(stats[stats::RINGBUF_FULL as usize], SENT - drained, "no new loss after the drain");
}

/// The flow table at its cap, which the LRU map fills without counting what it
/// evicts: with room for 8 flows, the large segments of 40 flows insert 40 flows
/// (FLOWS_INSERTED), the map holds at most 8, and a segment of a flow still held
/// inserts nothing. The agent reports `inserted - held` as the table's evictions.
#[test]
fn flow_table_insertions_are_counted_at_the_cap() {
    if !privileged("flow_table_insertions_are_counted_at_the_cap") {
        return;
    }
    const CAP: u32 = 8;
    const FLOWS: u16 = 40;
    let opts = LoadOptions { flow_entries: CAP, ..Default::default() };
    let mut runner = TestRunner::with_options(&opts, &KernelConfig::new()).expect("load with a small flow table");
    let segment = |k: u16, seq: u32| {
        tcp(
            Ip::V4.headers(Host::Client, Host::Server),
            tcp_header(TCP_CLIENT_PORT + k, 443, seq, 777, TCP_ACK, &[]),
            &[0x5a; LARGE_SEG],
        )
    };
    for k in 0..FLOWS {
        let (action, _) = runner.run_repeat(Hook::Xdp, &segment(k, 10_000), 1).expect("test run");
        assert_eq!(action, 2);
    }
    // The newest flow is held: its next segment updates it in place.
    runner.run_repeat(Hook::Xdp, &segment(FLOWS - 1, 10_000 + LARGE_SEG as u32), 1).expect("test run");
    let held = runner.flow_count().expect("count FLOWS");
    assert!(held > 0 && held <= u64::from(CAP), "FLOWS holds {held}, cap {CAP}");
    assert_eq!(runner.stat(stats::FLOWS_INSERTED).unwrap(), u64::from(FLOWS), "one insertion per flow");
    assert_eq!(runner.stat(stats::FLOW_INSERT_FAILED).unwrap(), 0, "the LRU map makes room");
}

/// One event per packet per host (DESIGN.md, "Data flow"). A packet forwarded between
/// watched interfaces passes XDP on its way in and TC on its way out: XDP reports it,
/// TC only counts it; TC does report packets this host originated (ingress_ifindex 0)
/// and ones that came in on an interface the agent does not watch. Only the reporting
/// hook accounts large segments in the flow table, so a forwarded flow's
/// retransmission, seen at both hooks, gives the same event as the userspace
/// classifier seeing each packet once.
#[test]
fn forwarded_packets_raise_events_once() {
    let Some(mut rig) = rig("forwarded_packets_raise_events_once") else { return };
    const WATCHED: u32 = 7;
    const UNWATCHED: u32 = 9;
    rig.runner.kernel().watch_interface(WATCHED, 0).expect("watch an interface");
    for ip in Ip::BOTH {
        let query = udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &dns_query(5, "mus.cisco.com"));
        for (ingress, events) in [(WATCHED, 0), (UNWATCHED, 1), (0, 1)] {
            let run = rig.runner.run_tc_from(&query, ingress, true).expect("TC test run");
            assert_eq!(run.action, pass_action(Hook::Tc));
            assert_eq!(run.class, Some(Class::Dns), "{ip:?} query in on ifindex {ingress}, out at TC");
            assert_eq!(run.events.len(), events, "{ip:?} query in on ifindex {ingress}: events at TC");
        }

        // The userspace classifier sees each segment once (in `step`, which asserts
        // that the kernel's XDP run agrees with it); the kernel also sees it at TC.
        let mut user = rig.fresh();
        let (a, b) = (large_segment(ip, 10_000), large_segment(ip, 10_000 + LARGE_SEG as u32));
        let mut kernel_events = Vec::new();
        for (i, seg) in [&a, &b, &a].into_iter().enumerate() {
            let what = format!("{ip:?} forwarded segment {i}");
            let seen = rig.step(Hook::Xdp, &mut user, seg, &what).expect("XDP test run");
            kernel_events.extend(seen.events);
            let out = rig.runner.run_tc_from(seg, WATCHED, true).expect("TC test run");
            assert_eq!(out.class, Some(Class::LargeDf), "{what} at TC");
            assert!(out.events.is_empty(), "{what}: no event at TC");
        }
        assert_eq!(kernel_events.len(), 1, "{ip:?}: one retransmission");
        let info = kernel_events[0].header.info;
        assert_eq!((info.retransmits, info.largest_acked, info.seg_len), (1, 0, LARGE_SEG as u16), "{ip:?}");
    }
}

/// A counter slot that goes to another interface is zeroed first (the agent reuses
/// the slots of interfaces that went), and a slot asked for twice is summed once.
#[test]
fn a_cleared_counter_slot_starts_at_zero_and_a_slot_is_summed_once() {
    let Some(mut rig) = rig("a_cleared_counter_slot_starts_at_zero_and_a_slot_is_summed_once") else { return };
    // An XDP test run comes in on the loopback device of this namespace.
    const LO: u32 = 1;
    const SLOT: u32 = 5;
    rig.runner.kernel().watch_interface(LO, SLOT).expect("watch lo");
    let query = udp(Ip::V4.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &dns_query(9, "slot.test"));
    let dns_in = |runner: &mut TestRunner, slots: &[u32]| {
        runner.kernel().counters(slots).expect("read COUNTERS").get(SLOT, Direction::Ingress, Class::Dns).packets
    };
    rig.runner.run_repeat(Hook::Xdp, &query, 3).expect("test run");
    assert_eq!(dns_in(&mut rig.runner, &[SLOT]), 3);
    assert_eq!(dns_in(&mut rig.runner, &[SLOT, SLOT, SLOT]), 3, "a slot asked for three times");
    let shared = rig.runner.kernel().counters(&[0]).expect("read COUNTERS").slot(0);
    rig.runner.kernel().clear_slot(SLOT).expect("clear the slot");
    let cleared = rig.runner.kernel().counters(&[SLOT]).expect("read COUNTERS").slot(SLOT);
    assert_eq!(cleared, ClassCounts::default(), "every CPU's counters of the slot");
    assert_eq!(
        rig.runner.kernel().counters(&[0]).expect("read COUNTERS").slot(0),
        shared,
        "the shared slot is untouched"
    );
    rig.runner.run_repeat(Hook::Xdp, &query, 2).expect("test run");
    assert_eq!(dns_in(&mut rig.runner, &[SLOT]), 2, "counting on from zero");
    rig.runner.kernel().unwatch_interface(LO).expect("unwatch lo");
}

/// The catalogue itself: every class is covered over both IP versions where it
/// exists for both (other: also without IP), and case names are unique.
#[test]
fn crafted_frames_cover_every_class() {
    let cases = all_cases();
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    for class in Class::ALL {
        for ip in ["V4", "V6"] {
            assert!(
                cases.iter().any(|c| c.class == class && c.name.starts_with(ip)),
                "no {ip} case of class {}",
                class.name()
            );
        }
    }
}
