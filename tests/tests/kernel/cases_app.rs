//! The crafted frames whose class their payload decides: DNS, DTLS, TLS, and the ICMP
//! errors (with the packet they quote).

use agent_common::{
    Class, EventInfo, EventKind,
    proto::{
        self, CT_ALERT, CT_APPLICATION_DATA, CT_HANDSHAKE, DTLS_1_0, DTLS_1_2, DTLS_CISCO, IPPROTO_TCP, IPPROTO_UDP,
        TCP_ACK, TCP_SYN,
    },
};
use etherparse::{Icmpv4Type, Icmpv6Type, icmpv4, icmpv6};
use pathwatch_tests::{dns_query, dns_response};

use super::expect::{Case, Want, with_ip_slack, with_trailer};
use super::frames::{
    Host, Icmp, Ip, LARGE_SEG, TCP_CLIENT_PORT, TCP_PSH, UDP_CLIENT_PORT, WINDOW, client_hello_body, dtls_handshake,
    dtls_record, icmp, ip_packet, tcp, tcp_header, tls_handshake_record, udp,
};

pub(crate) fn dns_cases() -> Vec<Case> {
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
pub(crate) fn dtls_info(records: u8, content_mask: u8, handshake_mask: u32, version: u16) -> EventInfo {
    EventInfo {
        dtls_records: records,
        dtls_content_mask: content_mask,
        handshake_mask,
        record_version: version,
        ..Default::default()
    }
}

pub(crate) const CT_BIT_HANDSHAKE: u8 = 1 << (CT_HANDSHAKE - 20);

pub(crate) fn dtls_cases() -> Vec<Case> {
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

pub(crate) fn tls_cases() -> Vec<Case> {
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

pub(crate) fn icmp_cases() -> Vec<Case> {
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
                // snap stops at SNAP_MEDIUM.
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
