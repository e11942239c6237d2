//! The benchmark packets, one per kind the kernel benchmark measures.

use etherparse::PacketBuilder;

const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const CLIENT: [u8; 4] = [198, 18, 1, 2];
const SERVER: [u8; 4] = [198, 19, 2, 2];
const CLIENT6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const SERVER6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// Writes a finished builder step with `payload` into a new frame.
macro_rules! build {
    ($b:expr, $payload:expr) => {{
        let payload: &[u8] = $payload;
        let b = $b;
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).expect("building a frame into a Vec");
        out
    }};
}

/// A DNS query for `A mus.cisco.com`.
pub fn dns_query_message() -> Vec<u8> {
    b"\x03\xa7\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03mus\x05cisco\x03com\x00\x00\x01\x00\x01".to_vec()
}

/// A non-matching TCP segment of 1500 bytes of IP (1514 on the wire), without DF (a
/// DF segment this large is `large_df` and tracked, see [`tcp_large_df_retransmit`]).
pub fn tcp_nonmatch() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(CLIENT, SERVER, 64).tcp(40000, 5001, 1000, 64240).ack(1);
    let mut f = build!(b, &[0x5a; 1460]);
    f[14 + 6] &= !0x40;
    f
}

/// Segment `n` of a bulk transfer as Linux sends it: 1460 bytes, DF set (`large_df`,
/// tracked in the flow table), each starting where the one before ended.
pub fn tcp_bulk_segment(n: u32) -> Vec<u8> {
    let mut f = tcp_nonmatch();
    f[14 + 6] |= 0x40;
    f[38..42].copy_from_slice(&(1000 + n.wrapping_mul(1460)).to_be_bytes());
    f
}

/// The same segment with DF set: `large_df`, tracked in the flow table; repeated, it is
/// a retransmission every time.
pub fn tcp_large_df_retransmit() -> Vec<u8> {
    let mut f = tcp_nonmatch();
    f[14 + 6] |= 0x40;
    // The IPv4 header checksum is not checked by the programs.
    f
}

/// An ARP request: the header walk stops after Ethernet (the cost of layer 2 alone).
pub fn arp() -> Vec<u8> {
    let mut f = tcp_nonmatch();
    f.truncate(60);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f
}

/// The 1500-byte TCP frame relabelled as GRE: the walk stops after IPv4 (layers 2 and 3
/// alone).
pub fn ipv4_gre() -> Vec<u8> {
    let mut f = tcp_nonmatch();
    f[14 + 9] = 47;
    f
}

/// A non-matching 512-byte UDP datagram.
pub fn udp_nonmatch() -> Vec<u8> {
    build!(PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(CLIENT, SERVER, 64).udp(40000, 8080), &[0x11; 512])
}

/// A DNS query.
pub fn dns_query() -> Vec<u8> {
    build!(PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(CLIENT, SERVER, 64).udp(40000, 53), &dns_query_message())
}

/// A DNS SERVFAIL response.
pub fn dns_response() -> Vec<u8> {
    let mut m = dns_query_message();
    m[2] = 0x81;
    m[3] = 0x82;
    build!(PacketBuilder::ethernet2(DST_MAC, SRC_MAC).ipv4(SERVER, CLIENT, 64).udp(53, 40000), &m)
}

/// A DNS query over IPv6.
pub fn ipv6_dns() -> Vec<u8> {
    build!(PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv6(CLIENT6, SERVER6, 64).udp(40000, 53), &dns_query_message())
}

/// A DNS query in an 802.1Q tag.
pub fn vlan_dns() -> Vec<u8> {
    let plain = dns_query();
    let mut f = plain[..12].to_vec();
    f.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
    f.extend_from_slice(&plain[12..]);
    f
}

fn dtls_record(content_type: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
    let mut r = vec![content_type, 0xfe, 0xfd];
    r.extend_from_slice(&epoch.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

/// A DTLS 1.2 ClientHello on UDP 443.
pub fn dtls_client_hello() -> Vec<u8> {
    let body_len = 180usize;
    let mut hs = vec![1, 0, 0, body_len as u8, 0, 0, 0, 0, 0, 0, 0, body_len as u8];
    hs.extend_from_slice(&[0xfe, 0xfd]);
    hs.resize(12 + body_len, 0x42);
    build!(
        PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(CLIENT, SERVER, 64).udp(40000, 443),
        &dtls_record(22, 0, &hs)
    )
}

/// A DTLS application-data record of 1200 bytes: class dtls, no event.
pub fn dtls_app_data() -> Vec<u8> {
    build!(
        PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(CLIENT, SERVER, 64).udp(40000, 443),
        &dtls_record(23, 1, &[0x77; 1200])
    )
}

/// An ICMP frag-needed (next-hop MTU 1400) quoting a DF TCP segment.
pub fn icmp_frag_needed() -> Vec<u8> {
    let quoted = &tcp_large_df_retransmit()[14..14 + 28];
    let b = PacketBuilder::ethernet2(DST_MAC, SRC_MAC).ipv4([198, 18, 1, 1], CLIENT, 64).icmpv4(
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ),
    );
    build!(b, quoted)
}

/// A DNS query from `client` for one of 512 names.
pub fn dns_query_from(client: [u8; 4], name: u32) -> Vec<u8> {
    build!(PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(client, SERVER, 64).udp(40000, 53), &numbered_query(name))
}

/// A SERVFAIL answer to [`dns_query_from`].
pub fn dns_servfail_to(client: [u8; 4], name: u32) -> Vec<u8> {
    let mut m = numbered_query(name);
    m[2] = 0x81;
    m[3] = 0x82;
    build!(PacketBuilder::ethernet2(DST_MAC, SRC_MAC).ipv4(SERVER, client, 64).udp(53, 40000), &m)
}

fn numbered_query(name: u32) -> Vec<u8> {
    let label = format!("host{name}");
    let mut m = vec![(name >> 8) as u8, name as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, label.len() as u8];
    m.extend_from_slice(label.as_bytes());
    m.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    m
}

/// A SYN with MSS 1460 from `client`.
pub fn tcp_syn_from(client: [u8; 4]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(client, SERVER, 64)
        .tcp(40000, 443, 1, 64240)
        .syn()
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
        .expect("one option fits");
    build!(b, &[])
}

/// Every benchmark frame: JSON key and bytes, in report order.
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("tcp_nonmatch", tcp_nonmatch()),
        ("udp_nonmatch", udp_nonmatch()),
        ("dns_query", dns_query()),
        ("dns_response", dns_response()),
        ("dtls_client_hello", dtls_client_hello()),
        ("dtls_app_data", dtls_app_data()),
        ("icmp_frag_needed", icmp_frag_needed()),
        ("ipv6_dns", ipv6_dns()),
        ("vlan_dns", vlan_dns()),
    ]
}

/// Kinds that raise an event (the others must cost almost nothing).
pub fn evented(key: &str) -> bool {
    matches!(
        key,
        "dns_query"
            | "dns_response"
            | "dtls_client_hello"
            | "icmp_frag_needed"
            | "ipv6_dns"
            | "vlan_dns"
            | "tcp_large_df_retransmit"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::{Class, Direction};
    use pathwatch::classify::Classifier;

    #[test]
    fn each_frame_is_the_kind_it_says() {
        let mut c = Classifier::default();
        let mut class = |f: &[u8]| {
            let r = c.classify(f, Direction::Ingress, 0, 0);
            (r.class, r.event.is_some())
        };
        assert_eq!(tcp_nonmatch().len(), 1514);
        assert_eq!(class(&tcp_nonmatch()), (Class::Other, false));
        assert_eq!(class(&udp_nonmatch()), (Class::Other, false));
        for f in [dns_query(), dns_response(), ipv6_dns(), vlan_dns()] {
            assert_eq!(class(&f), (Class::Dns, true));
        }
        assert_eq!(class(&dtls_client_hello()), (Class::Dtls, true));
        assert_eq!(class(&dtls_app_data()), (Class::Dtls, false));
        assert_eq!(class(&icmp_frag_needed()), (Class::IcmpError, true));
        assert_eq!(class(&arp()), (Class::Other, false));
        assert_eq!(class(&ipv4_gre()), (Class::Other, false));
        assert_eq!(class(&tcp_large_df_retransmit()), (Class::LargeDf, false));
        assert_eq!(
            class(&tcp_large_df_retransmit()),
            (Class::LargeDf, true),
            "the same segment again is a retransmission"
        );
        let mut c = Classifier::default();
        for n in 0..3 {
            let r = c.classify(&tcp_bulk_segment(n), Direction::Ingress, 0, 0);
            assert_eq!((r.class, r.event.is_some()), (Class::LargeDf, false), "bulk segment {n}: in order, no event");
        }
        assert_eq!(c.flows().len(), 1, "one flow");
    }
}
