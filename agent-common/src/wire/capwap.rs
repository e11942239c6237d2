//! CAPWAP (RFC 5415, UDP 5246 control and 5247 data): a datagram whose 4-byte
//! preamble has type 1 carries DTLS records after it, which tshark dissects as DTLS.
//! Only that case is read; plain CAPWAP is left alone.

use super::Packet;
use crate::proto::{CAPWAP_CONTROL_PORT, CAPWAP_DATA_PORT};

/// The preamble's length when it announces DTLS (version/type, 3 reserved bytes).
pub const DTLS_HLEN: usize = 4;
/// Version 0, type 1: a CAPWAP DTLS header.
const PREAMBLE_DTLS: u8 = 0x01;

/// Whether either port is CAPWAP's.
#[inline(always)]
pub fn is_port(src: u16, dst: u16) -> bool {
    src == CAPWAP_CONTROL_PORT || src == CAPWAP_DATA_PORT || dst == CAPWAP_CONTROL_PORT || dst == CAPWAP_DATA_PORT
}

/// Where the DTLS records start in the CAPWAP payload at `off`, if it has them.
#[inline(always)]
pub fn dtls_start<P: Packet>(pkt: &P, off: usize) -> Option<usize> {
    (pkt.u8_at(off)? == PREAMBLE_DTLS).then_some(off + DTLS_HLEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dtls_preamble_moves_the_records() {
        assert_eq!(dtls_start(&&[0x01, 0, 0, 0, 22][..], 0), Some(4));
        assert_eq!(dtls_start(&&[0x00, 0x10, 0, 0][..], 0), None);
        assert_eq!(dtls_start(&&[][..], 0), None);
        assert!(is_port(5246, 40000) && is_port(40000, 5247) && !is_port(4433, 5248));
    }
}
