//! Protocol constants and the small predicates the header walk ([`crate::wire`])
//! applies, and that the agent's decoders share with it: what a DTLS record, a TLS
//! handshake or an ICMP error is.

/// EtherType IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType 802.1ad (QinQ outer) VLAN tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
/// EtherType PPPoE session stage.
pub const ETH_P_PPPOE_SESSION: u16 = 0x8864;
/// PPP protocol number for IPv4.
pub const PPP_IPV4: u16 = 0x0021;
/// PPP protocol number for IPv6.
pub const PPP_IPV6: u16 = 0x0057;
/// EtherType transparent Ethernet bridging: an Ethernet frame follows (GRE, Geneve).
pub const ETH_P_TEB: u16 = 0x6558;
/// EtherType MPLS unicast.
pub const ETH_P_MPLS_UC: u16 = 0x8847;
/// EtherType MPLS multicast.
pub const ETH_P_MPLS_MC: u16 = 0x8848;
/// GRE protocol ERSPAN type I (without GRE sequence number) and type II.
pub const ETH_P_ERSPAN: u16 = 0x88be;
/// GRE protocol ERSPAN type III.
pub const ETH_P_ERSPAN3: u16 = 0x22eb;
/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// VLAN tag length.
pub const VLAN_HLEN: usize = 4;
/// PPPoE session header plus the PPP protocol field.
pub const PPPOE_HLEN: usize = 8;
/// VLAN tags parsed in front of the IP header.
pub const MAX_VLAN_TAGS: usize = 2;
/// Offsets into a frame beyond this are not parsed (IPv6 extension chains, DTLS
/// records, TCP payload start): it keeps the kernel's offset ranges small for the
/// verifier, and the userspace classifier stops at the same place.
pub const MAX_PARSE_OFFSET: usize = 0x3fff;

/// IP protocol numbers.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IPv4 in IP (IP-in-IP, 4in6).
pub const IPPROTO_IPIP: u8 = 4;
/// TCP.
pub const IPPROTO_TCP: u8 = 6;
/// UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 in IP (6in4, IPv6-in-IPv6).
pub const IPPROTO_IPV6: u8 = 41;
/// IPv6 routing header.
pub const IPPROTO_ROUTING: u8 = 43;
/// IPv6 fragment header.
pub const IPPROTO_FRAGMENT: u8 = 44;
/// GRE.
pub const IPPROTO_GRE: u8 = 47;
/// ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 destination options.
pub const IPPROTO_DSTOPTS: u8 = 60;
/// IPv6 extension headers skipped before giving up (hop-by-hop, routing, fragment,
/// destination options).
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// Whether `next` is an IPv6 extension header the classifiers skip.
#[inline(always)]
pub const fn is_ipv6_skippable_ext(next: u8) -> bool {
    matches!(next, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_DSTOPTS)
}

/// Encapsulations decapsulated in front of the packet that is classified (GRE,
/// ERSPAN, IP in IP, VXLAN, Geneve; MPLS labels are link-layer framing and do not
/// count). A packet inside more is `other`, counted as `tunnel_depth_limit`. Each
/// level is another pass of the link and IP walk, which the verifier checks again.
pub const MAX_TUNNEL_DEPTH: u8 = 2;
/// MPLS labels popped looking for the bottom of the stack.
pub const MAX_MPLS_LABELS: usize = 8;
/// VXLAN's UDP destination port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// Geneve's UDP destination port (IANA).
pub const GENEVE_PORT: u16 = 6081;
/// CAPWAP control's UDP port.
pub const CAPWAP_CONTROL_PORT: u16 = 5246;
/// CAPWAP data's UDP port.
pub const CAPWAP_DATA_PORT: u16 = 5247;

/// Bytes of a DNS message needed before it is reported (id and flags).
pub const DNS_MIN_LEN: usize = 4;

/// TCP flags.
pub const TCP_FIN: u8 = 0x01;
/// SYN.
pub const TCP_SYN: u8 = 0x02;
/// RST.
pub const TCP_RST: u8 = 0x04;
/// ACK.
pub const TCP_ACK: u8 = 0x10;
/// The flags that open or close a connection. Both classifiers test this one mask
/// before anything else about them, so that a segment with none of them (the ACKs and
/// data of a transfer, nearly every TCP segment) pays a single branch.
pub const TCP_SYN_FIN_RST: u8 = TCP_SYN | TCP_FIN | TCP_RST;
/// TCP option kinds.
pub const TCPOPT_EOL: u8 = 0;
/// NOP.
pub const TCPOPT_NOP: u8 = 1;
/// Maximum segment size.
pub const TCPOPT_MSS: u8 = 2;
/// Option bytes a TCP header can carry.
pub const MAX_TCP_OPTION_BYTES: usize = 40;
/// The option walk looks for an option starting at positions `0..=MSS_LAST_START`
/// (an option at 39 has no room for its length byte).
pub const MSS_LAST_START: usize = 38;

/// DTLS record header length.
pub const DTLS_RECORD_HLEN: usize = 13;
/// DTLS handshake message header length.
pub const DTLS_HANDSHAKE_HLEN: usize = 12;
/// DTLS records walked in one datagram.
pub const MAX_DTLS_RECORDS: usize = 8;
/// Handshake messages walked in one DTLS record.
pub const MAX_DTLS_HANDSHAKE_MSGS: usize = 4;
/// DTLS content type: change_cipher_spec.
pub const CT_CHANGE_CIPHER_SPEC: u8 = 20;
/// DTLS content type: alert.
pub const CT_ALERT: u8 = 21;
/// DTLS content type: handshake.
pub const CT_HANDSHAKE: u8 = 22;
/// DTLS content type: application data.
pub const CT_APPLICATION_DATA: u8 = 23;
/// DTLS 1.0.
pub const DTLS_1_0: u16 = 0xfeff;
/// DTLS 1.2 (also the legacy version field of DTLS 1.3).
pub const DTLS_1_2: u16 = 0xfefd;
/// Cisco's pre-standard DTLS (OpenSSL before 0.9.8f), used by AnyConnect.
pub const DTLS_CISCO: u16 = 0x0100;
/// Handshake types.
pub const HS_CLIENT_HELLO: u8 = 1;
/// ServerHello (also HelloRetryRequest in DTLS 1.3).
pub const HS_SERVER_HELLO: u8 = 2;
/// HelloVerifyRequest.
pub const HS_HELLO_VERIFY_REQUEST: u8 = 3;

/// A DTLS record content type: change_cipher_spec, alert, handshake, application
/// data, heartbeat or tls12_cid (20-25).
#[inline(always)]
pub const fn is_dtls_content_type(ct: u8) -> bool {
    ct >= 20 && ct <= 25
}

/// A DTLS record version: 1.0, 1.2 (and 1.3's legacy field) or Cisco's 0x0100.
#[inline(always)]
pub const fn is_dtls_version(version: u16) -> bool {
    version == DTLS_1_0 || version == DTLS_1_2 || version == DTLS_CISCO
}

/// Content types whose datagrams are reported as events (handshake, alert, CCS);
/// application data only counts.
#[inline(always)]
pub const fn dtls_content_is_evented(content_mask: u8) -> bool {
    content_mask & ((1 << (CT_CHANGE_CIPHER_SPEC - 20)) | (1 << (CT_ALERT - 20)) | (1 << (CT_HANDSHAKE - 20))) != 0
}

/// TLS record header length.
pub const TLS_RECORD_HLEN: usize = 5;

/// A TLS handshake record header: content type 22, version 3.0 to 3.4.
#[inline(always)]
pub const fn is_tls_handshake_record(ct: u8, major: u8, minor: u8) -> bool {
    ct == CT_HANDSHAKE && major == 3 && minor <= 4
}

/// TLS handshake types reported as events: ClientHello and ServerHello.
#[inline(always)]
pub const fn tls_handshake_is_evented(hs_type: u8) -> bool {
    hs_type == HS_CLIENT_HELLO || hs_type == HS_SERVER_HELLO
}

/// ICMPv4 destination unreachable.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMPv4 code: port unreachable.
pub const ICMP_PORT_UNREACH: u8 = 3;
/// ICMPv4 code: fragmentation needed and DF set.
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv4 time exceeded.
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMPv4 parameter problem.
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// ICMPv6 destination unreachable.
pub const ICMPV6_DEST_UNREACH: u8 = 1;
/// ICMPv6 code: port unreachable.
pub const ICMPV6_PORT_UNREACH: u8 = 4;
/// ICMPv6 packet too big.
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// ICMP header length (type, code, checksum, 4 bytes of rest).
pub const ICMP_HLEN: usize = 8;

/// An ICMPv4 error message type (3, 11, 12).
#[inline(always)]
pub const fn is_icmpv4_error(icmp_type: u8) -> bool {
    icmp_type == ICMP_DEST_UNREACH || icmp_type == ICMP_TIME_EXCEEDED || icmp_type == ICMP_PARAMETER_PROBLEM
}

/// An ICMPv6 error message type (1-4).
#[inline(always)]
pub const fn is_icmpv6_error(icmp_type: u8) -> bool {
    icmp_type >= 1 && icmp_type <= 4
}

/// The MTU an ICMP error announces: the next-hop MTU of a v4 frag-needed (bytes 6-7),
/// the MTU of a v6 packet-too-big (bytes 4-7), else 0. `rest` is bytes 4-7 of the header.
#[inline(always)]
pub const fn icmp_mtu(ip_version: u8, icmp_type: u8, icmp_code: u8, rest: [u8; 4]) -> u32 {
    if ip_version == 4 && icmp_type == ICMP_DEST_UNREACH && icmp_code == ICMP_FRAG_NEEDED {
        u16::from_be_bytes([rest[2], rest[3]]) as u32
    } else if ip_version == 6 && icmp_type == ICMPV6_PACKET_TOO_BIG {
        u32::from_be_bytes(rest)
    } else {
        0
    }
}
