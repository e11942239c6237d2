//! DNS messages from event snaps: header and first question, with hickory-proto.
//!
//! Only the header and the question are read: responses are often cut (by the
//! event's snap or the capture), and the detectors need no more.

use hickory_proto::{
    op::{Header, MessageType, Query},
    serialize::binary::{BinDecodable, BinDecoder},
};

use super::name::DnsName;

/// What the detectors need of a DNS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    /// Transaction id.
    pub id: u16,
    /// QR set.
    pub is_response: bool,
    /// RCODE (low 4 bits of the header).
    pub rcode: u8,
    /// The first question, when it could be read.
    pub question: Option<Question>,
}

/// A question.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Question {
    /// QNAME.
    pub name: DnsName,
    /// QTYPE.
    pub qtype: u16,
}

/// Decodes the header and first question of `bytes`; `None` when not even the
/// 12-byte header is there.
pub fn decode(bytes: &[u8]) -> Option<DnsMessage> {
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).ok()?;
    let question = if header.counts.queries > 0 {
        Query::read(&mut decoder)
            .ok()
            .map(|q| Question { name: DnsName::from_labels(q.name().iter()), qtype: u16::from(q.query_type()) })
    } else {
        None
    };
    Some(DnsMessage {
        id: header.metadata.id,
        is_response: header.metadata.message_type == MessageType::Response,
        rcode: bytes[3] & 0x0f,
        question,
    })
}

/// The mnemonic of a query type (`A`, `AAAA`, …), or `TYPE<n>` (RFC 3597).
pub fn qtype_name(qtype: u16) -> String {
    match qtype {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        35 => "NAPTR".into(),
        43 => "DS".into(),
        44 => "SSHFP".into(),
        46 => "RRSIG".into(),
        48 => "DNSKEY".into(),
        64 => "SVCB".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}

/// The mnemonic of an RCODE (`NOERROR`, `SERVFAIL`, …), or `RCODE<n>`.
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `A mus.cisco.com`, id 0x03a7, as the AnyConnect seed capture sends it.
    const MUS_QUERY: &[u8] =
        b"\x03\xa7\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03mus\x05cisco\x03com\x00\x00\x01\x00\x01";

    #[test]
    fn query_header_and_question() {
        let m = decode(MUS_QUERY).unwrap();
        assert_eq!((m.id, m.is_response, m.rcode), (0x03a7, false, 0));
        let q = m.question.unwrap();
        assert_eq!((q.name.to_string(), q.qtype), ("mus.cisco.com".to_string(), 1));
    }

    #[test]
    fn servfail_response_and_case_folding() {
        let mut r = MUS_QUERY.to_vec();
        r[2] = 0x81;
        r[3] = 0x82;
        r[13] = b'M';
        let m = decode(&r).unwrap();
        assert!(m.is_response);
        assert_eq!(rcode_name(m.rcode), "SERVFAIL");
        assert_eq!(m.question.unwrap().name, DnsName::from_dotted("mus.cisco.com"));
    }

    #[test]
    fn truncated_messages_keep_what_they_have() {
        assert!(decode(&MUS_QUERY[..11]).is_none());
        let m = decode(&MUS_QUERY[..20]).unwrap();
        assert_eq!(m.id, 0x03a7);
        assert!(m.question.is_none());
    }

    #[test]
    fn compression_loop_and_lying_counts_do_not_hang() {
        // qdcount 0xffff, name is a pointer to itself.
        let m = b"\x00\x01\x01\x00\xff\xff\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01";
        let d = decode(m).unwrap();
        assert!(d.question.is_none());
    }

    #[test]
    fn control_bytes_in_labels_survive_and_are_escaped() {
        let q = b"\x00\x02\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03\x01\x02\x03\x03com\x00\x00\x01\x00\x01";
        let m = decode(q).unwrap();
        assert_eq!(m.question.unwrap().name.to_string(), "\\001\\002\\003.com");
    }
}
