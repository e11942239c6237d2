//! The crafted frames whose class TCP and IP decide: SYN, FIN and RST, large DF
//! segments and their retransmissions, `other`, and the IP layer's own walk (IPv6
//! extension chains, IPv4 options and fragments).

use agent_common::{
    Class, EventInfo, EventKind,
    event::{IP_FLAG_DF, IP_FLAG_FRAGMENT, IP_FLAG_MF},
    proto::{self, ETH_HLEN, IPPROTO_TCP, IPPROTO_UDP, MAX_IPV6_EXT_HEADERS, TCP_ACK, TCP_SYN},
};
use etherparse::{
    IcmpEchoHeader, Icmpv4Type, Icmpv6Type, IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv4Options, icmpv4,
};
use pathwatch_tests::dns_query;

use super::expect::{Case, Want, with_trailer};
use super::frames::{
    Ext, Host, Icmp, Ip, LARGE_SEG, MAC_A, MAC_B, TCP_CLIENT_PORT, TCP_PSH, UDP_CLIENT_PORT, WINDOW, arp, icmp, tcp,
    tcp_header, udp, with_ipv6_exts,
};

pub(crate) fn tcp_syn_cases() -> Vec<Case> {
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
pub(crate) fn tcp_fin_cases() -> Vec<Case> {
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
pub(crate) fn large_segment(ip: Ip, seq: u32) -> Vec<u8> {
    tcp(
        ip.headers(Host::Client, Host::Server),
        tcp_header(TCP_CLIENT_PORT, 443, seq, 777, TCP_ACK, &[]),
        &[0x5a; LARGE_SEG],
    )
}

pub(crate) fn large_df_cases() -> Vec<Case> {
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

pub(crate) fn other_cases() -> Vec<Case> {
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
pub(crate) fn ipv6_ext_cases() -> Vec<Case> {
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
pub(crate) fn ipv4_header_cases() -> Vec<Case> {
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
