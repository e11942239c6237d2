//! IPv4: the fixed header, its options stepped over, fragments recognised.

use super::{L3, Packet, Parsed, be16};
use crate::{
    event::{IP_FLAG_DF, IP_FLAG_FRAGMENT, IP_FLAG_MF},
    stats,
};

/// Field offsets and bits.
pub mod field {
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub const VER_IHL: usize = 0;
    /// Total length.
    pub const TOTAL_LEN: usize = 2;
    /// Flags (3 bits) and fragment offset (13 bits).
    pub const FLAGS_FRAG: usize = 6;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Source then destination address.
    pub const ADDRS: usize = 12;
    /// "Don't fragment" in the flags/fragment field.
    pub const DF: u16 = 0x4000;
    /// "More fragments".
    pub const MF: u16 = 0x2000;
    /// The fragment offset.
    pub const FRAG_OFFSET: u16 = 0x1fff;
}

/// The fixed header's length.
pub const HLEN: usize = 20;

/// Reads the IPv4 header at `off`. `None` when it is not IPv4, is cut (`p.truncated`),
/// or is a non-first fragment (no transport header).
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P, p: &mut Parsed, off: usize) -> Option<L3> {
    let Some(hdr) = pkt.array_at::<HLEN>(off) else {
        p.truncated = true;
        return None;
    };
    let vihl = hdr[field::VER_IHL];
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    let total = be16(hdr, field::TOTAL_LEN) as usize;
    if ihl < HLEN || total < ihl {
        return None;
    }
    if !pkt.has(off + ihl) {
        p.truncated = true;
        return None;
    }
    p.ip_version = 4;
    p.ip_len = total as u32;
    p.l4_proto = hdr[field::PROTOCOL];
    let frag = be16(hdr, field::FLAGS_FRAG);
    if frag & field::DF != 0 {
        p.ip_flags |= IP_FLAG_DF;
    }
    if frag & field::MF != 0 {
        p.ip_flags |= IP_FLAG_MF | IP_FLAG_FRAGMENT;
    }
    if frag & field::FRAG_OFFSET != 0 {
        p.ip_flags |= IP_FLAG_FRAGMENT;
        pkt.stat(stats::NON_FIRST_FRAGMENT);
        return None;
    }
    let len = pkt.wire_len();
    let claimed_end = off + total;
    let end = if claimed_end < len { claimed_end } else { len };
    Some(L3 { l4_off: off + ihl, end, claimed_end })
}

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::*;

    /// A header with `ihl` words, total length `total`, flags/fragment `frag`, UDP.
    fn header(ihl: u8, total: u16, frag: u16) -> Vec<u8> {
        let mut h = vec![0x40 | ihl, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        h.resize(ihl as usize * 4, 1);
        h
    }

    fn ip(h: &[u8]) -> (Option<L3>, Parsed) {
        let mut p = Parsed::new();
        (parse(&h, &mut p, 0), p)
    }

    #[test]
    fn df_header_with_options_and_a_short_capture() {
        let mut h = header(6, 1500, 0x4000);
        h.extend_from_slice(&[0; 100]);
        let (l3, p) = ip(&h);
        assert_eq!(l3, Some(L3 { l4_off: 24, end: 124, claimed_end: 1500 }));
        assert_eq!((p.ip_version, p.ip_len, p.l4_proto, p.ip_flags), (4, 1500, 17, IP_FLAG_DF));
    }

    #[test]
    fn first_fragment_goes_on_later_ones_stop() {
        let (l3, p) = ip(&header(5, 20, 0x2000));
        assert!(l3.is_some());
        assert_eq!(p.ip_flags, IP_FLAG_MF | IP_FLAG_FRAGMENT);
        let (l3, p) = ip(&header(5, 20, 0x0010));
        assert_eq!((l3, p.ip_flags, p.truncated), (None, IP_FLAG_FRAGMENT, false));
    }

    #[test]
    fn not_ipv4_or_lengths_that_contradict_are_not_truncated() {
        let mut h = header(5, 20, 0);
        h[0] = 0x65;
        assert_eq!(ip(&h).0, None);
        assert!(!ip(&h).1.truncated);
        assert_eq!(ip(&header(4, 20, 0)).0, None);
        assert_eq!(ip(&header(6, 20, 0)).0, None);
    }

    #[test]
    fn cut_fixed_header_or_options_are_truncated() {
        let h = header(5, 20, 0);
        assert!(ip(&h[..19]).1.truncated);
        let h = header(8, 40, 0);
        assert!(ip(&h[..30]).1.truncated);
    }
}
