//! MPLS label stacks (EtherType 0x8847/0x8848): labels popped to the bottom of the
//! stack, then IPv4 or IPv6 guessed from the version nibble, as tshark and the
//! kernel's own MPLS receive path do (MPLS carries no payload type).

use super::{Packet, Parsed, ethernet::L2};
use crate::{
    proto::{ETH_P_IPV4, ETH_P_IPV6, MAX_MPLS_LABELS},
    stats,
};

/// One label stack entry: label (20 bits), traffic class (3), bottom of stack (1), TTL (8).
pub const LABEL_LEN: usize = 4;
/// The bottom-of-stack bit, in the entry's third byte.
const BOTTOM_OF_STACK: u8 = 0x01;
/// The entry byte holding [`BOTTOM_OF_STACK`].
const BOS_BYTE: usize = 2;

/// Pops the label stack at `start`; the payload's EtherType and offset. `None` when
/// the stack is cut (`p.truncated`), deeper than [`MAX_MPLS_LABELS`]
/// (`unsupported_l2`), or carries neither IPv4 nor IPv6 (a pseudowire).
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P, p: &mut Parsed, start: usize) -> Option<L2> {
    let mut off = start;
    for _ in 0..MAX_MPLS_LABELS {
        let Some(entry) = pkt.array_at::<LABEL_LEN>(off) else {
            p.truncated = true;
            return None;
        };
        off += LABEL_LEN;
        if entry[BOS_BYTE] & BOTTOM_OF_STACK != 0 {
            pkt.stat(stats::ENCAP_MPLS);
            let Some(first) = pkt.u8_at(off) else {
                p.truncated = true;
                return None;
            };
            let ethertype = match first >> 4 {
                4 => ETH_P_IPV4,
                6 => ETH_P_IPV6,
                _ => return None,
            };
            return Some(L2 { ethertype, l3_off: off });
        }
    }
    pkt.stat(stats::UNSUPPORTED_L2);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop(b: &[u8]) -> (Option<L2>, Parsed) {
        let mut p = Parsed::new();
        (parse(&b, &mut p, 0), p)
    }

    #[test]
    fn two_labels_then_ipv4_or_ipv6() {
        let (l2, _) = pop(&[0, 0x10, 0x00, 64, 0, 0x20, 0x01, 64, 0x45, 0]);
        assert_eq!(l2, Some(L2 { ethertype: ETH_P_IPV4, l3_off: 8 }));
        let (l2, _) = pop(&[0, 0x10, 0x01, 64, 0x60, 0]);
        assert_eq!(l2, Some(L2 { ethertype: ETH_P_IPV6, l3_off: 4 }));
    }

    #[test]
    fn a_pseudowire_control_word_is_not_followed() {
        let (l2, p) = pop(&[0, 0x10, 0x01, 64, 0x00, 0, 0, 0]);
        assert_eq!((l2, p.truncated), (None, false));
    }

    #[test]
    fn cut_stacks_are_truncated_and_endless_ones_stop() {
        for cut in [&[0, 0x10, 0x00, 64, 0, 0x20][..], &[0, 0x10, 0x01, 64][..], &[0, 0x10][..]] {
            let (l2, p) = pop(cut);
            assert_eq!((l2, p.truncated), (None, true), "{cut:?}");
        }
        let endless = [0u8; LABEL_LEN * (MAX_MPLS_LABELS + 1) + 1];
        let (l2, p) = pop(&endless);
        assert_eq!((l2, p.truncated), (None, false));
    }
}
