//! UDP: DNS by port, DTLS by its record headers on any port (behind a CAPWAP
//! preamble on CAPWAP's ports).

use super::{Inner, L3, Packet, Parsed, be16, capwap, dtls, geneve, vxlan};
use crate::{
    Class, EventKind, KernelConfig,
    proto::{DNS_MIN_LEN, GENEVE_PORT, VXLAN_PORT, dtls_content_is_evented},
};

/// Field offsets.
pub mod field {
    /// Source port.
    pub const SRC_PORT: usize = 0;
    /// Destination port.
    pub const DST_PORT: usize = 2;
    /// Length of header and payload.
    pub const LENGTH: usize = 4;
}

/// The header's length.
pub const HLEN: usize = 8;

/// Reads the UDP header at `l3.l4_off`: a VXLAN or Geneve tunnel by the destination
/// port, else DNS by either port, else DTLS.
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P, cfg: &KernelConfig, p: &mut Parsed, l3: &L3) -> Option<Inner> {
    let Some(hdr) = pkt.array_at::<HLEN>(l3.l4_off) else {
        p.truncated = true;
        return None;
    };
    if l3.l4_off + HLEN > l3.end {
        p.truncated = true;
        return None;
    }
    let (src_port, dst_port) = (be16(hdr, field::SRC_PORT), be16(hdr, field::DST_PORT));
    let (payload_end, claimed_end) = payload(p, hdr, l3);
    let payload_off = p.payload_off;
    if is_tunnel_port(dst_port) {
        return tunnel_at(pkt, p, payload_off, dst_port);
    }
    if cfg.is_dns_port(src_port) || cfg.is_dns_port(dst_port) {
        dns(p);
        return None;
    }
    let mut records = payload_off;
    if capwap::is_port(src_port, dst_port)
        && let Some(off) = capwap::dtls_start(pkt, payload_off)
    {
        records = off;
        p.payload_off = off;
        if p.payload_end < off {
            p.payload_end = off;
        }
    }
    records_at::<P, false>(pkt, p, records, payload_end, claimed_end);
    None
}

/// Sets `p`'s payload from the header `hdr` at `l3.l4_off`; the payload's end in the
/// packet and where the UDP length says the datagram ends. The UDP length bounds the
/// payload; a length below 8 leaves none.
#[inline(always)]
pub(super) fn payload(p: &mut Parsed, hdr: &[u8; HLEN], l3: &L3) -> (usize, usize) {
    let udp_len = be16(hdr, field::LENGTH) as usize;
    let payload_off = l3.l4_off + HLEN;
    let claimed_end = if udp_len < HLEN { payload_off } else { l3.l4_off + udp_len };
    let payload_end = if claimed_end < l3.end { claimed_end } else { l3.end };
    p.payload_off = payload_off;
    p.payload_end = if payload_end > payload_off { payload_end } else { payload_off };
    (payload_end, claimed_end)
}

/// Whether a datagram to `dst_port` carries a VXLAN or Geneve tunnel.
#[inline(always)]
pub(super) fn is_tunnel_port(dst_port: u16) -> bool {
    dst_port == VXLAN_PORT || dst_port == GENEVE_PORT
}

/// A datagram on a DNS port: class DNS, an event when it holds a message header's start.
#[inline(always)]
pub(super) fn dns(p: &mut Parsed) {
    p.class = Class::Dns;
    if p.payload_end - p.payload_off >= DNS_MIN_LEN {
        p.event = EventKind::Dns as u8;
    }
}

/// DTLS records at `records` (the payload, or behind a CAPWAP preamble): class DTLS,
/// an event for handshake, alert and change-cipher-spec records. `ONE_MESSAGE`: as
/// for [`dtls::classify`].
#[inline(always)]
pub(super) fn records_at<P: Packet, const ONE_MESSAGE: bool>(
    pkt: &P,
    p: &mut Parsed,
    records: usize,
    payload_end: usize,
    claimed_end: usize,
) {
    let walk = dtls::classify::<P, ONE_MESSAGE>(pkt, records, payload_end, claimed_end);
    if walk != 0 {
        p.class = Class::Dtls;
        p.extra = walk;
        if dtls_content_is_evented(dtls::content_mask(walk)) {
            p.event = EventKind::Dtls as u8;
        }
    }
}

/// The tunnel [`parse`] would find at `l3.l4_off`, without the rest of it.
#[inline(always)]
pub fn tunnel<P: Packet>(pkt: &P, p: &mut Parsed, l3: &L3) -> Option<Inner> {
    let hdr = pkt.array_at::<HLEN>(l3.l4_off)?;
    if l3.l4_off + HLEN > l3.end {
        return None;
    }
    let dst_port = be16(hdr, field::DST_PORT);
    if !is_tunnel_port(dst_port) {
        return None;
    }
    tunnel_at(pkt, p, l3.l4_off + HLEN, dst_port)
}

/// VXLAN or Geneve (by `dst_port`) at `payload_off`.
#[inline(always)]
fn tunnel_at<P: Packet>(pkt: &P, p: &mut Parsed, payload_off: usize, dst_port: u16) -> Option<Inner> {
    if dst_port == VXLAN_PORT { vxlan::parse(pkt, p, payload_off) } else { geneve::parse(pkt, p, payload_off) }
}

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::*;
    use crate::proto::DTLS_1_2;

    fn datagram(dport: u16, len: u16, payload: &[u8]) -> Vec<u8> {
        let mut d = vec![0x30, 0x39];
        d.extend_from_slice(&dport.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(payload);
        d
    }

    fn udp(d: &[u8]) -> Parsed {
        let mut p = Parsed::new();
        let l3 = L3 { l4_off: 0, end: d.len(), claimed_end: d.len() };
        assert_eq!(parse(&d, &KernelConfig::new(), &mut p, &l3), None);
        p
    }

    #[test]
    fn dns_query_is_an_event_an_empty_one_only_counts() {
        let p = udp(&datagram(53, 20, &[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
        assert_eq!((p.class, p.event, p.payload_off, p.payload_end), (Class::Dns, EventKind::Dns as u8, 8, 20));
        let p = udp(&datagram(53, 10, &[0xab, 0xcd]));
        assert_eq!((p.class, p.event), (Class::Dns, 0));
    }

    #[test]
    fn udp_length_bounds_the_payload() {
        let p = udp(&datagram(9, 12, &[0; 20]));
        assert_eq!((p.payload_off, p.payload_end), (8, 12));
        let p = udp(&datagram(9, 3, &[0; 20]));
        assert_eq!((p.payload_off, p.payload_end), (8, 8));
    }

    #[test]
    fn dtls_handshake_on_any_port_and_application_data_only_counts() {
        let hs = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
        let p = udp(&datagram(4433, 8 + 14, &hs));
        assert_eq!((p.class, p.event), (Class::Dtls, EventKind::Dtls as u8));
        assert_eq!(dtls::version(p.extra), DTLS_1_2);
        let app = [23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1];
        let p = udp(&datagram(4433, 8 + 14, &app));
        assert_eq!((p.class, p.event), (Class::Dtls, 0));
    }

    #[test]
    fn dtls_behind_a_capwap_preamble() {
        let mut capwap = vec![0x01, 0, 0, 0];
        capwap.extend_from_slice(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        let p = udp(&datagram(5246, 8 + 18, &capwap));
        assert_eq!((p.class, p.event, p.payload_off, p.payload_end), (Class::Dtls, EventKind::Dtls as u8, 12, 26));
        let p = udp(&datagram(4433, 8 + 18, &capwap));
        assert_eq!(p.class, Class::Other);
    }

    #[test]
    fn vxlan_and_geneve_by_destination_port_before_dns() {
        let mut p = Parsed::new();
        let d = datagram(4789, 16, &[0x08, 0, 0, 0, 0, 0, 1, 0]);
        let l3 = L3 { l4_off: 0, end: d.len(), claimed_end: d.len() };
        let vxlan = Some(Inner { ethertype: crate::proto::ETH_P_TEB, off: 16, stat: crate::stats::ENCAP_VXLAN });
        assert_eq!(parse(&&d[..], &KernelConfig::new(), &mut p, &l3), vxlan);
        assert_eq!(tunnel(&&d[..], &mut p, &l3), vxlan);
        let mut d = datagram(6081, 16, &[0, 0, 0x65, 0x58, 0, 0, 1, 0]);
        assert!(parse(&&d[..], &KernelConfig::new(), &mut p, &l3).is_some());
        d[..2].copy_from_slice(&[0, 53]);
        assert!(tunnel(&&d[..], &mut p, &l3).is_some());
        d[2..4].copy_from_slice(&[0, 53]);
        assert_eq!(parse(&&d[..], &KernelConfig::new(), &mut p, &l3), None);
        assert_eq!(tunnel(&&d[..], &mut p, &l3), None);
        assert_eq!(p.class, Class::Dns);
    }

    #[test]
    fn header_cut_is_truncated() {
        assert!(udp(&datagram(53, 8, &[])[..7]).truncated);
    }
}
