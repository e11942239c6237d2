//! The crafted frames inside tunnels: a DNS query (or, behind CAPWAP, a DTLS
//! ClientHello) carried by every encapsulation the walk decapsulates, two deep, and
//! three deep (past `MAX_TUNNEL_DEPTH`: `other`). The inner packet is the event's
//! subject: its addresses, ports, IP length and VLAN tags; the outer one only counts.

use agent_common::{
    Class, EventKind,
    proto::{
        self, CT_HANDSHAKE, DTLS_1_2, ETH_HLEN, ETH_P_ERSPAN, ETH_P_ERSPAN3, ETH_P_IPV4, ETH_P_IPV6, ETH_P_MPLS_UC,
        ETH_P_TEB, IPPROTO_GRE, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_UDP,
    },
    stats,
};
use etherparse::{IpNumber, PacketBuilder};
use pathwatch_tests::dns_query;

use super::cases_app::{CT_BIT_HANDSHAKE, dtls_info};
use super::expect::{Case, Want};
use super::frames::{
    Host, Ip, MAC_A, MAC_B, UDP_CLIENT_PORT, client_hello_body, dtls_handshake, dtls_record, ip_packet, udp,
};

/// An untagged Ethernet frame whose IP header (`ip`, router to server) carries
/// `payload` as protocol `proto`.
fn ip_frame(ip: Ip, proto: u8, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ip(ip.headers(Host::Router, Host::Server));
    let mut out = Vec::new();
    b.write(&mut out, IpNumber(proto), payload).expect("build the outer IP frame");
    out
}

/// An untagged Ethernet frame of `ethertype` around `body`.
fn ether(ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = MAC_A.to_vec();
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// A GRE header: `flags` (C 0x8000, K 0x2000, S 0x1000) with their fields, `proto`.
fn gre(flags: u16, proto: u16) -> Vec<u8> {
    let mut h = flags.to_be_bytes().to_vec();
    h.extend_from_slice(&proto.to_be_bytes());
    for bit in [0x8000u16, 0x2000, 0x1000] {
        if flags & bit != 0 {
            h.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
        }
    }
    h
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The DNS query every tunnel carries, in an untagged frame over `ip`.
fn dns_frame(ip: Ip) -> (Vec<u8>, usize) {
    let q = dns_query(0x5151, "tunnel.example");
    (udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &q), q.len())
}

/// `frame`, which ends with the DNS query of [`dns_frame`] over `inner` (inside a
/// tunnel, with `inner_vlans` tags in front of its IP header; `None` under MPLS
/// labels only), is `dns` with that query's event, and counts `counted` each run.
fn dns_inside(name: String, frame: Vec<u8>, inner: Ip, inner_vlans: Option<u8>, counted: &[u32]) -> Case {
    let (plain, q_len) = dns_frame(inner);
    let inner_ip_off = frame.len() - ip_packet(&plain).len();
    let want = Want::new(EventKind::Dns, inner, (Host::Client, Host::Server), IPPROTO_UDP, (UDP_CLIENT_PORT, 53))
        .payload(&frame, q_len)
        .inner(inner_ip_off, inner_vlans);
    counted.iter().fold(Case::new(name, frame, Class::Dns).event(want), |c, &s| c.counts(s))
}

pub(crate) fn tunnel_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for outer in Ip::BOTH {
        for inner in Ip::BOTH {
            let (plain, _) = dns_frame(inner);
            let ethertype = if inner == Ip::V4 { ETH_P_IPV4 } else { ETH_P_IPV6 };
            let f = ip_frame(outer, IPPROTO_GRE, &cat(&[&gre(0, ethertype), &ip_packet(&plain)]));
            cases.push(dns_inside(
                format!("{outer:?} GRE carrying {inner:?} DNS"),
                f,
                inner,
                Some(0),
                &[stats::ENCAP_GRE],
            ));

            let (proto, stat) = match (outer, inner) {
                (Ip::V4, Ip::V4) => (IPPROTO_IPIP, stats::ENCAP_IPIP),
                (_, Ip::V4) => (IPPROTO_IPIP, stats::ENCAP_IP6),
                (_, Ip::V6) => (IPPROTO_IPV6, stats::ENCAP_IP6),
            };
            let f = ip_frame(outer, proto, &ip_packet(&plain));
            cases.push(dns_inside(format!("{outer:?} carrying {inner:?} DNS (IP in IP)"), f, inner, Some(0), &[stat]));

            // VXLAN and Geneve (two option words) with an Ethernet frame inside.
            let vx = cat(&[&[0x08, 0, 0, 0, 0, 0x12, 0x34, 0], &plain]);
            let f = udp(outer.headers(Host::Router, Host::Server), 49152, proto::VXLAN_PORT, &vx);
            cases.push(dns_inside(
                format!("{outer:?} VXLAN carrying {inner:?} DNS"),
                f,
                inner,
                Some(0),
                &[stats::ENCAP_VXLAN],
            ));
            let gn = cat(&[&[0x02, 0, 0x65, 0x58, 0, 0, 0x07, 0], &[0x01, 0x02, 0x80, 0x01, 0, 0, 0, 9], &plain]);
            let f = udp(outer.headers(Host::Router, Host::Server), 49153, proto::GENEVE_PORT, &gn);
            cases.push(dns_inside(
                format!("{outer:?} Geneve carrying {inner:?} DNS"),
                f,
                inner,
                Some(0),
                &[stats::ENCAP_GENEVE],
            ));
        }
        let (v4, _) = dns_frame(Ip::V4);
        let (v6, _) = dns_frame(Ip::V6);
        // GRE with checksum, key and sequence number; Ethernet inside with a VLAN tag.
        let tagged = cat(&[&v6[..12], &[0x81, 0x00, 0x00, 0x2a], &v6[12..]]);
        let f = ip_frame(outer, IPPROTO_GRE, &cat(&[&gre(0xb000, ETH_P_TEB), &tagged]));
        cases.push(dns_inside(
            format!("{outer:?} GRE (checksum, key, sequence) carrying Ethernet, 802.1Q, V6 DNS"),
            f,
            Ip::V6,
            Some(1),
            &[stats::ENCAP_GRE],
        ));
        // ERSPAN type I (no sequence number, no header), II, III without and with the
        // platform-specific subheader.
        let f = ip_frame(outer, IPPROTO_GRE, &cat(&[&gre(0, ETH_P_ERSPAN), &v4]));
        cases.push(dns_inside(
            format!("{outer:?} ERSPAN I carrying V4 DNS"),
            f,
            Ip::V4,
            Some(0),
            &[stats::ENCAP_ERSPAN],
        ));
        let ii = [0x10, 0x64, 0x00, 0x07, 0, 0, 0, 1];
        let f = ip_frame(outer, IPPROTO_GRE, &cat(&[&gre(0x1000, ETH_P_ERSPAN), &ii, &v6]));
        cases.push(dns_inside(
            format!("{outer:?} ERSPAN II carrying V6 DNS"),
            f,
            Ip::V6,
            Some(0),
            &[stats::ENCAP_ERSPAN],
        ));
        let mut iii = [0x20, 0x64, 0x00, 0x07, 1, 2, 3, 4, 0, 0, 0x00, 0x00];
        let f = ip_frame(outer, IPPROTO_GRE, &cat(&[&gre(0x1000, ETH_P_ERSPAN3), &iii, &v4]));
        cases.push(dns_inside(
            format!("{outer:?} ERSPAN III carrying V4 DNS"),
            f,
            Ip::V4,
            Some(0),
            &[stats::ENCAP_ERSPAN],
        ));
        iii[11] = 0x01;
        let sub = [0x08, 0, 0, 0, 0, 0, 0, 0];
        let f = ip_frame(outer, IPPROTO_GRE, &cat(&[&gre(0x1000, ETH_P_ERSPAN3), &iii, &sub, &v4]));
        cases.push(dns_inside(
            format!("{outer:?} ERSPAN III with subheader carrying V4 DNS"),
            f,
            Ip::V4,
            Some(0),
            &[stats::ENCAP_ERSPAN],
        ));
        // MPLS inside GRE.
        let labels = [0, 0x01, 0x01, 64];
        let f = ip_frame(outer, IPPROTO_GRE, &cat(&[&gre(0x2000, ETH_P_MPLS_UC), &labels, &ip_packet(&v6)]));
        cases.push(dns_inside(
            format!("{outer:?} GRE carrying MPLS, V6 DNS"),
            f,
            Ip::V6,
            Some(0),
            &[stats::ENCAP_GRE, stats::ENCAP_MPLS],
        ));
    }
    let ((v4, _), (v6, _)) = (dns_frame(Ip::V4), dns_frame(Ip::V6));
    // PPTP's enhanced GRE: PPP with address/control, and compressed with an ack.
    let pptp_v4 = cat(&[&[0x30, 0x01, 0x88, 0x0b, 0, 60, 0, 7, 0, 0, 0, 1, 0xff, 0x03, 0x00, 0x21], &ip_packet(&v4)]);
    let f = ip_frame(Ip::V4, IPPROTO_GRE, &pptp_v4);
    cases.push(dns_inside("V4 PPTP GRE carrying PPP, V4 DNS".into(), f, Ip::V4, Some(0), &[stats::ENCAP_GRE]));
    let pptp_v6 = cat(&[&[0x30, 0x81, 0x88, 0x0b, 0, 60, 0, 7, 0, 0, 0, 2, 0, 0, 0, 1, 0x57], &ip_packet(&v6)]);
    let f = ip_frame(Ip::V6, IPPROTO_GRE, &pptp_v6);
    cases.push(dns_inside(
        "V6 PPTP GRE (ack, compressed PPP) carrying V6 DNS".into(),
        f,
        Ip::V6,
        Some(0),
        &[stats::ENCAP_GRE],
    ));
    // MPLS label stacks on the link.
    for inner in Ip::BOTH {
        let (plain, _) = dns_frame(inner);
        let f = ether(ETH_P_MPLS_UC, &cat(&[&[0, 0x10, 0x00, 64, 0, 0x20, 0x01, 64], &ip_packet(&plain)]));
        cases.push(dns_inside(format!("{inner:?} DNS under two MPLS labels"), f, inner, None, &[stats::ENCAP_MPLS]));
    }
    // Two deep: GRE inside VXLAN; three deep (IP in IP thrice) is past the limit.
    let gre_frame = ip_frame(Ip::V4, IPPROTO_GRE, &cat(&[&gre(0, ETH_P_IPV6), &ip_packet(&v6)]));
    let vx = cat(&[&[0x08, 0, 0, 0, 0, 0, 0x05, 0], &gre_frame]);
    let f = udp(Ip::V6.headers(Host::Router, Host::Server), 49152, proto::VXLAN_PORT, &vx);
    cases.push(dns_inside(
        "V6 VXLAN carrying V4 GRE carrying V6 DNS".into(),
        f,
        Ip::V6,
        Some(0),
        &[stats::ENCAP_VXLAN, stats::ENCAP_GRE],
    ));
    let mut packet = ip_packet(&v4);
    for _ in 0..3 {
        packet = ip_packet(&ip_frame(Ip::V4, IPPROTO_IPIP, &packet));
    }
    let f = cat(&[&v4[..ETH_HLEN], &packet]);
    cases.push(
        Case::new("V4 DNS three IP-in-IP deep (past the limit)", f, Class::Other)
            .counts(stats::ENCAP_IPIP)
            .counts(stats::ENCAP_IPIP)
            .counts(stats::TUNNEL_DEPTH_LIMIT),
    );
    // DTLS behind a CAPWAP preamble of type 1, on the control and the data port.
    for (ip, port) in [(Ip::V4, proto::CAPWAP_CONTROL_PORT), (Ip::V6, proto::CAPWAP_DATA_PORT)] {
        let hello = dtls_handshake(proto::HS_CLIENT_HELLO, 0, &client_hello_body(DTLS_1_2, 4, true));
        let d = dtls_record(CT_HANDSHAKE, DTLS_1_2, 0, 0, &hello);
        let frame = udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, port, &cat(&[&[1, 0, 0, 0], &d]));
        let want = Want::new(EventKind::Dtls, ip, (Host::Client, Host::Server), IPPROTO_UDP, (UDP_CLIENT_PORT, port))
            .payload(&frame, d.len())
            .info(dtls_info(1, CT_BIT_HANDSHAKE, 1 << proto::HS_CLIENT_HELLO, DTLS_1_2));
        cases.push(
            Case::new(format!("{ip:?} DTLS ClientHello behind CAPWAP on UDP/{port}"), frame, Class::Dtls).event(want),
        );
    }
    cases
}
