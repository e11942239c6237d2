//! The crafted traffic's hosts and link layers, and the frame builders: etherparse's
//! `PacketBuilder` where it can express the frame, bytes spliced in where it cannot
//! (VLAN and QinQ tags, PPPoE, IPv6 extension chains, DTLS and TLS records).

use agent_common::proto::{
    self, CT_HANDSHAKE, ETH_HLEN, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_ROUTING, TCP_ACK, TCP_SYN,
};
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv4Type, Icmpv6Type, IpHeaders, IpNumber, Ipv4Header,
    Ipv6Header, PacketBuilder, TcpHeader,
};

pub(crate) const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub(crate) const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
/// Ephemeral ports of the client.
pub(crate) const UDP_CLIENT_PORT: u16 = 50000;
pub(crate) const TCP_CLIENT_PORT: u16 = 50001;
/// TCP flag PSH (agent_common::proto names only the flags the classifiers test).
pub(crate) const TCP_PSH: u8 = 0x08;
/// TCP window every crafted segment advertises.
pub(crate) const WINDOW: u16 = 64240;
/// Payload of the large TCP segments: 1300 + 40 (IPv4) or + 60 (IPv6) exceeds the
/// default `large_packet_bytes` (1280).
pub(crate) const LARGE_SEG: usize = 1300;

/// IP version of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ip {
    V4,
    V6,
}

/// The three hosts of the crafted traffic, all in the test ranges (198.18.0.0/15, fd00::/8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    Client,
    Server,
    Router,
}

impl Ip {
    pub(crate) const BOTH: [Ip; 2] = [Ip::V4, Ip::V6];

    pub(crate) fn v4(host: Host) -> [u8; 4] {
        match host {
            Host::Client => [198, 18, 0, 1],
            Host::Server => [198, 19, 0, 2],
            Host::Router => [198, 18, 0, 254],
        }
    }

    pub(crate) fn v6(host: Host) -> [u8; 16] {
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
    pub(crate) fn addr(self, host: Host) -> [u8; 16] {
        match self {
            Ip::V4 => {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&Ip::v4(host));
                a
            }
            Ip::V6 => Ip::v6(host),
        }
    }

    pub(crate) fn version(self) -> u8 {
        match self {
            Ip::V4 => 4,
            Ip::V6 => 6,
        }
    }

    /// IP headers from `src` to `dst`; IPv4 with DF set (etherparse's default).
    pub(crate) fn headers(self, src: Host, dst: Host) -> IpHeaders {
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
    pub(crate) fn headers_no_df(src: Host, dst: Host) -> IpHeaders {
        let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, Ip::v4(src), Ip::v4(dst)).unwrap();
        h.dont_fragment = false;
        IpHeaders::Ipv4(h, Default::default())
    }

    pub(crate) fn icmp_proto(self) -> u8 {
        match self {
            Ip::V4 => IPPROTO_ICMP,
            Ip::V6 => IPPROTO_ICMPV6,
        }
    }
}

/// What sits between the Ethernet addresses and the IP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
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
    pub(crate) const ALL: [Link; 6] =
        [Link::Plain, Link::Vlan, Link::QinQ, Link::DoubleQ, Link::Pppoe, Link::VlanPppoe];

    pub(crate) fn vlan_depth(self) -> u8 {
        match self {
            Link::Plain | Link::Pppoe => 0,
            Link::Vlan | Link::VlanPppoe => 1,
            Link::QinQ | Link::DoubleQ => 2,
        }
    }

    /// Bytes this link layer adds in front of the IP header, beyond the Ethernet header.
    pub(crate) fn extra(self) -> usize {
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
    pub(crate) fn apply(self, frame: &[u8]) -> Option<Vec<u8>> {
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

/// An untagged Ethernet frame carrying UDP.
pub(crate) fn udp(ip: IpHeaders, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ip(ip).udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("build UDP frame");
    out
}

/// A TCP header with `flags` (the TCP flags byte) and raw `options` (a multiple of 4).
pub(crate) fn tcp_header(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, options: &[u8]) -> TcpHeader {
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
pub(crate) fn tcp(ip: IpHeaders, hdr: TcpHeader, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ip(ip).tcp_header(hdr);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("build TCP frame");
    out
}

/// An ICMP message of either version.
pub(crate) enum Icmp {
    V4(Icmpv4Type),
    V6(Icmpv6Type),
}

/// An untagged Ethernet frame carrying an ICMP or ICMPv6 message with `quote` after
/// its 8-byte header.
pub(crate) fn icmp(ip: IpHeaders, msg: Icmp, quote: &[u8]) -> Vec<u8> {
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
pub(crate) fn ip_packet(frame: &[u8]) -> Vec<u8> {
    frame[ETH_HLEN..].to_vec()
}

/// An ARP request, untagged.
pub(crate) fn arp() -> Vec<u8> {
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
pub(crate) fn dtls_record(ct: u8, version: u16, epoch: u16, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut r = vec![ct];
    r.extend_from_slice(&version.to_be_bytes());
    r.extend_from_slice(&epoch.to_be_bytes());
    r.extend_from_slice(&seq.to_be_bytes()[2..]);
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

/// One unfragmented DTLS handshake message.
pub(crate) fn dtls_handshake(msg_type: u8, msg_seq: u16, body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_be_bytes();
    let mut h = vec![msg_type, len[1], len[2], len[3]];
    h.extend_from_slice(&msg_seq.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, len[1], len[2], len[3]]);
    h.extend_from_slice(body);
    h
}

/// A (D)TLS ClientHello body: `version`, a random, no session, no cookie, `suites`
/// cipher suites, null compression.
pub(crate) fn client_hello_body(version: u16, suites: u16, dtls: bool) -> Vec<u8> {
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
pub(crate) fn tls_handshake_record(version: u16, hs_type: u8, body: &[u8]) -> Vec<u8> {
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
pub(crate) enum Ext {
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
    pub(crate) fn proto(self) -> u8 {
        match self {
            Ext::HopByHop(_) => IPPROTO_HOPOPTS,
            Ext::Routing(_) => IPPROTO_ROUTING,
            Ext::DestOpts(_) => IPPROTO_DSTOPTS,
            Ext::Fragment { .. } => IPPROTO_FRAGMENT,
        }
    }

    pub(crate) fn bytes(self, next: u8) -> Vec<u8> {
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
pub(crate) fn with_ipv6_exts(frame: &[u8], exts: &[Ext]) -> Vec<u8> {
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
