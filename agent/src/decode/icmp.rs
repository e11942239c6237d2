//! ICMP errors from event snaps: type, code, MTU, and the flow in the quoted packet.
//!
//! The quoted packet is whatever the reporting router chose to send back: often cut,
//! sometimes garbage. etherparse's lax IP slicing reads as much of it as is there.

use std::net::IpAddr;

use etherparse::LaxIpSlice;

/// An ICMP or ICMPv6 error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpError {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Next-hop MTU (v4 frag-needed) or MTU (v6 packet too big), else 0.
    pub mtu: u32,
    /// The packet the error is about, when its IP header could be read.
    pub quoted: Option<QuotedFlow>,
}

/// The flow of a quoted packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuotedFlow {
    /// Source of the original packet.
    pub src: IpAddr,
    /// Destination of the original packet.
    pub dst: IpAddr,
    /// IP protocol of the original packet.
    pub proto: u8,
    /// Source port (UDP/TCP), when the first 4 transport bytes were quoted.
    pub src_port: Option<u16>,
    /// Destination port (UDP/TCP), likewise.
    pub dst_port: Option<u16>,
}

/// Decodes an ICMP error from its snap (ICMP header first); `info` fields come from
/// the event header, the quote from the bytes after the 8-byte ICMP header.
pub fn decode(icmp_type: u8, code: u8, mtu: u32, snap: &[u8]) -> IcmpError {
    let quoted = snap.get(8..).and_then(quoted_flow);
    IcmpError { icmp_type, code, mtu, quoted }
}

/// The UDP payload of the packet an ICMP error quotes (its snap, ICMP header first),
/// as far as it was quoted: the DNS detector reads the query's header from it.
pub fn quoted_udp_payload(snap: &[u8]) -> Option<&[u8]> {
    let (ip, _ext_err) = LaxIpSlice::from_slice(snap.get(8..)?).ok()?;
    let payload = ip.payload();
    (payload.ip_number.0 == 17).then_some(())?;
    payload.payload.get(8..)
}

fn quoted_flow(bytes: &[u8]) -> Option<QuotedFlow> {
    let (ip, _ext_err) = LaxIpSlice::from_slice(bytes).ok()?;
    let payload = ip.payload();
    let proto = payload.ip_number.0;
    let ports = (proto == 6 || proto == 17) && payload.payload.len() >= 4 && !payload.fragmented_after_first();
    let (src_port, dst_port) = if ports {
        let p = payload.payload;
        (Some(u16::from_be_bytes([p[0], p[1]])), Some(u16::from_be_bytes([p[2], p[3]])))
    } else {
        (None, None)
    };
    Some(QuotedFlow { src: ip.source_addr(), dst: ip.destination_addr(), proto, src_port, dst_port })
}

trait FirstFragment {
    fn fragmented_after_first(&self) -> bool;
}

impl FirstFragment for etherparse::LaxIpPayloadSlice<'_> {
    /// etherparse marks any fragment as `fragmented`; only a non-first one lacks the
    /// transport header, and its payload cannot be told apart here, so a fragmented
    /// quote is trusted only when it is the first fragment (offset 0), which is what
    /// routers quote in practice.
    fn fragmented_after_first(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag_needed_quote() -> Vec<u8> {
        // ICMP header: type 3 code 4, next-hop MTU 1400.
        let mut m = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
        // Quoted IPv4 header (TCP, DF) 198.18.0.2 -> 198.19.0.2, then 8 TCP bytes.
        m.extend_from_slice(&[0x45, 0, 0x05, 0xdc, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 19, 0, 2]);
        m.extend_from_slice(&[0xc3, 0x50, 0x13, 0x89, 0, 0, 0, 1]);
        m
    }

    #[test]
    fn frag_needed_quotes_the_tcp_flow() {
        let e = decode(3, 4, 1400, &frag_needed_quote());
        let q = e.quoted.unwrap();
        assert_eq!(q.src, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(q.dst, "198.19.0.2".parse::<IpAddr>().unwrap());
        assert_eq!((q.proto, q.src_port, q.dst_port), (6, Some(50000), Some(5001)));
    }

    #[test]
    fn a_quoted_udp_payload_is_what_follows_the_udp_header() {
        // Port unreachable quoting 198.18.0.2:40000 -> 198.19.0.1:53, then 3 bytes.
        let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0x45, 0, 0, 31, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 2, 198, 19, 0, 1]);
        m.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 11, 0, 0, 0x12, 0x34, 0x01]);
        assert_eq!(quoted_udp_payload(&m), Some(&[0x12, 0x34, 0x01][..]));
        assert_eq!(quoted_udp_payload(&frag_needed_quote()), None, "TCP is not UDP");
        assert_eq!(quoted_udp_payload(&m[..20]), None);
    }

    #[test]
    fn garbage_or_short_quotes_give_no_flow() {
        assert!(decode(3, 3, 0, &[3, 3, 0, 0, 0, 0, 0, 0]).quoted.is_none());
        assert!(decode(3, 3, 0, &[3, 3, 0, 0, 0, 0, 0, 0, 0x99, 1, 2, 3]).quoted.is_none());
        let cut = &frag_needed_quote()[..30];
        let q = decode(3, 4, 1400, cut).quoted;
        assert!(q.is_none_or(|q| q.src_port.is_none()));
    }
}
