//! ERSPAN type II and III (in GRE, protocol 0x88be and 0x22eb): the mirrored
//! Ethernet frame after the ERSPAN header. Type I, which has no header, is told
//! apart in [`super::gre`].

use super::{Inner, Packet, Parsed};
use crate::{proto::ETH_P_TEB, stats};

/// Type II's header length.
pub const TYPE2_HLEN: usize = 8;
/// Type III's header length, without the platform-specific subheader.
pub const TYPE3_HLEN: usize = 12;
/// Type III's optional platform-specific subheader.
pub const TYPE3_SUBHEADER_LEN: usize = 8;

/// Field offsets and bits of type III.
pub mod field {
    /// P (1 bit), frame type (5), hardware id (high 2).
    pub const FT_BYTE: usize = 10;
    /// Hardware id (low 4), D, granularity (2), O (the last bit).
    pub const O_BYTE: usize = 11;
    /// The platform-specific subheader follows.
    pub const O: u8 = 0x01;
    /// The frame type's shift in [`FT_BYTE`].
    pub const FT_SHIFT: u8 = 2;
    /// The frame type's mask after the shift.
    pub const FT_MASK: u8 = 0x1f;
    /// Frame type Ethernet (2 is a bare IP packet, not followed).
    pub const FT_ETHERNET: u8 = 0;
}

/// Type II at `off`: an Ethernet frame after 8 bytes.
#[inline(always)]
pub fn type2<P: Packet>(pkt: &P, p: &mut Parsed, off: usize) -> Option<Inner> {
    if pkt.array_at::<TYPE2_HLEN>(off).is_none() {
        p.truncated = true;
        return None;
    }
    Some(Inner { ethertype: ETH_P_TEB, off: off + TYPE2_HLEN, stat: stats::ENCAP_ERSPAN })
}

/// Type III at `off`: an Ethernet frame after 12 bytes, or 20 with the subheader.
#[inline(always)]
pub fn type3<P: Packet>(pkt: &P, p: &mut Parsed, off: usize) -> Option<Inner> {
    let Some(hdr) = pkt.array_at::<TYPE3_HLEN>(off) else {
        p.truncated = true;
        return None;
    };
    if (hdr[field::FT_BYTE] >> field::FT_SHIFT) & field::FT_MASK != field::FT_ETHERNET {
        return None;
    }
    let mut inner = off + TYPE3_HLEN;
    if hdr[field::O_BYTE] & field::O != 0 {
        inner += TYPE3_SUBHEADER_LEN;
    }
    Some(Inner { ethertype: ETH_P_TEB, off: inner, stat: stats::ENCAP_ERSPAN })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_two_is_eight_bytes() {
        let h: &[u8] = &[0x10, 0x64, 0x00, 0x01, 0, 0, 0, 0];
        let mut p = Parsed::new();
        assert_eq!(type2(&h, &mut p, 0), Some(Inner { ethertype: ETH_P_TEB, off: 8, stat: stats::ENCAP_ERSPAN }));
        assert_eq!((type2(&&h[..7], &mut p, 0), p.truncated), (None, true));
    }

    #[test]
    fn type_three_with_and_without_the_subheader() {
        let mut h = [0x20, 0x64, 0x00, 0x01, 1, 2, 3, 4, 0, 0, 0x00, 0x00];
        let mut p = Parsed::new();
        assert_eq!(type3(&&h[..], &mut p, 0), Some(Inner { ethertype: ETH_P_TEB, off: 12, stat: stats::ENCAP_ERSPAN }));
        h[field::O_BYTE] = 0x01;
        assert_eq!(type3(&&h[..], &mut p, 0), Some(Inner { ethertype: ETH_P_TEB, off: 20, stat: stats::ENCAP_ERSPAN }));
        assert!(!p.truncated);
    }

    #[test]
    fn type_three_ip_frames_are_not_followed_and_cut_headers_are_truncated() {
        let h = [0x20, 0x64, 0x00, 0x01, 1, 2, 3, 4, 0, 0, 2 << field::FT_SHIFT, 0x00];
        let mut p = Parsed::new();
        assert_eq!(type3(&&h[..], &mut p, 0), None);
        assert_eq!((type3(&&h[..11], &mut p, 0), p.truncated), (None, true));
    }
}
