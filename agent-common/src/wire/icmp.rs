//! ICMP and ICMPv6 errors (they share the header layout): always an event.

use super::{L3, Packet, Parsed};
use crate::{
    Class, EventKind,
    proto::{ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_HLEN, ICMPV6_PACKET_TOO_BIG, is_icmpv4_error, is_icmpv6_error},
};

/// Field offsets.
pub mod field {
    /// Message type.
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// The 4 bytes after the checksum (the MTU of frag-needed and packet-too-big).
    pub const REST: usize = 4;
}

/// Reads the ICMP header at `l3.l4_off`; an error message becomes an event whose
/// payload is the quoted packet.
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P, p: &mut Parsed, l3: &L3) {
    let Some(hdr) = pkt.array_at::<ICMP_HLEN>(l3.l4_off) else {
        p.truncated = true;
        return;
    };
    if l3.l4_off + ICMP_HLEN > l3.end {
        p.truncated = true;
        return;
    }
    let t = hdr[field::TYPE];
    let is_error = if p.ip_version == 4 { is_icmpv4_error(t) } else { is_icmpv6_error(t) };
    if !is_error {
        return;
    }
    p.class = Class::IcmpError;
    p.event = EventKind::IcmpError as u8;
    p.payload_off = l3.l4_off + ICMP_HLEN;
    p.payload_end = l3.end;
    let pmtu = if p.ip_version == 4 {
        t == ICMP_DEST_UNREACH && hdr[field::CODE] == ICMP_FRAG_NEEDED
    } else {
        t == ICMPV6_PACKET_TOO_BIG
    };
    p.extra = u64::from(pmtu);
}

/// Whether the walked ICMP error `p` says a packet was too big (frag-needed, packet
/// too big): its quote then matters only up to the quoted transport ports, and its
/// event carries less of it ([`Parsed::snap`]).
#[inline(always)]
pub fn is_pmtu(p: &Parsed) -> bool {
    p.extra == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icmp(version: u8, m: &[u8], end: usize) -> Parsed {
        let mut p = Parsed::new();
        p.ip_version = version;
        parse(&m, &mut p, &L3 { l4_off: 0, end, claimed_end: end });
        p
    }

    #[test]
    fn frag_needed_is_an_event_with_the_quote_as_payload() {
        let m = [3, 4, 0, 0, 0, 0, 0x05, 0x78, 0x45, 0, 0, 20];
        let p = icmp(4, &m, m.len());
        assert_eq!((p.class, p.event, p.payload_off, p.payload_end), (Class::IcmpError, 4, 8, 12));
        assert!(is_pmtu(&p));
        assert!(is_pmtu(&icmp(6, &[2, 0, 0, 0, 0, 0, 5, 0], 8)));
        assert!(!is_pmtu(&icmp(4, &[3, 3, 0, 0, 0, 0, 0, 0], 8)));
    }

    #[test]
    fn echo_is_not_an_error_and_v6_types_differ() {
        assert_eq!(icmp(4, &[8, 0, 0, 0, 0, 0, 0, 0], 8).event, 0);
        assert_eq!(icmp(6, &[2, 0, 0, 0, 0, 0, 5, 0], 8).class, Class::IcmpError);
        assert_eq!(icmp(6, &[128, 0, 0, 0, 0, 0, 0, 0], 8).class, Class::Other);
    }

    #[test]
    fn header_cut_by_the_packet_or_the_ip_length_is_truncated() {
        assert!(icmp(4, &[3, 4, 0, 0, 0], 5).truncated);
        assert!(icmp(4, &[3, 4, 0, 0, 0, 0, 5, 0x78], 6).truncated);
    }
}
