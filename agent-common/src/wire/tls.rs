//! TLS over TCP: a segment whose payload starts with a handshake record header.

use super::{Packet, Parsed};
use crate::{
    Class, EventKind,
    proto::{TLS_RECORD_HLEN, is_tls_handshake_record, tls_handshake_is_evented},
};

/// Field offsets.
pub mod field {
    /// Record: content type.
    pub const CONTENT_TYPE: usize = 0;
    /// Record: protocol version (major, minor).
    pub const VERSION: usize = 1;
    /// The first handshake message's type, after the record header.
    pub const HS_TYPE: usize = 5;
}

/// Whether the payload `[off, end)` starts with a TLS handshake record; if so the class
/// is TLS, and a ClientHello or ServerHello is an event with its type in `p.extra`.
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P, p: &mut Parsed, off: usize, end: usize) -> bool {
    if end - off < TLS_RECORD_HLEN {
        return false;
    }
    let Some(rec) = pkt.array_at::<TLS_RECORD_HLEN>(off) else {
        return false;
    };
    if !is_tls_handshake_record(rec[field::CONTENT_TYPE], rec[field::VERSION], rec[field::VERSION + 1]) {
        return false;
    }
    p.class = Class::Tls;
    if let Some(hs) = pkt.u8_at(off + field::HS_TYPE)
        && off + TLS_RECORD_HLEN < end
        && tls_handshake_is_evented(hs)
    {
        p.event = EventKind::Tls as u8;
        p.extra = hs as u64;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(payload: &[u8], end: usize) -> (bool, Parsed) {
        let mut p = Parsed::new();
        (parse(&payload, &mut p, 0, end), p)
    }

    #[test]
    fn client_hello_is_an_event_with_its_type() {
        let (is, p) = tls(&[22, 3, 1, 0, 200, 1, 0, 0, 196], 9);
        assert!(is);
        assert_eq!((p.class, p.event, p.extra), (Class::Tls, EventKind::Tls as u8, 1));
    }

    #[test]
    fn other_handshakes_only_count_and_a_bare_header_is_no_event() {
        let (is, p) = tls(&[22, 3, 3, 0, 40, 11, 0], 7);
        assert_eq!((is, p.class, p.event), (true, Class::Tls, 0));
        let (is, p) = tls(&[22, 3, 3, 0, 40, 1], 5);
        assert_eq!((is, p.event), (true, 0));
    }

    #[test]
    fn application_data_and_ssl2_are_not_tls_handshakes() {
        assert!(!tls(&[23, 3, 3, 0, 40, 1], 6).0);
        assert!(!tls(&[22, 2, 0, 0, 40, 1], 6).0);
        assert!(!tls(&[22, 3, 3, 0], 4).0);
    }
}
