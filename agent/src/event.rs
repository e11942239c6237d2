//! Events as the agent holds them: the kernel's [`EventHeader`] plus the snap bytes.
//!
//! The same type comes out of the ring buffer (live), out of BPF_PROG_TEST_RUN
//! (`replay --kernel`) and out of the userspace classifier (`replay`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{
    Class, Direction, EventHeader, EventKind,
    event::{HEADER_LEN, SNAP_LARGE},
};

/// One event: what the kernel (or replay's classifier) saw in one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The fixed part.
    pub header: EventHeader,
    /// The packet bytes the event carries (`header.snap_len` of them).
    pub snap: Vec<u8>,
}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Shorter than a header.
    #[error("record of {0} bytes is shorter than an event header ({HEADER_LEN})")]
    Short(usize),
    /// Unknown event kind.
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    /// The snap length runs past the record.
    #[error("snap length {snap_len} runs past the {len}-byte record")]
    SnapOverrun {
        /// Claimed snap length.
        snap_len: usize,
        /// Record length.
        len: usize,
    },
}

impl Event {
    /// Decodes a ring-buffer record (header, then snap bytes).
    pub fn from_record(record: &[u8]) -> Result<Event, RecordError> {
        if record.len() < HEADER_LEN {
            return Err(RecordError::Short(record.len()));
        }
        // SAFETY: EventHeader is plain old data (repr(C), integers and byte arrays
        // only) and the record holds at least HEADER_LEN bytes; read_unaligned does
        // not need the ring buffer's alignment.
        let header: EventHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
        if EventKind::from_u8(header.kind).is_none() {
            return Err(RecordError::UnknownKind(header.kind));
        }
        let snap_len = header.snap_len as usize;
        if snap_len > SNAP_LARGE || HEADER_LEN + snap_len > record.len() {
            return Err(RecordError::SnapOverrun { snap_len, len: record.len() });
        }
        Ok(Event { header, snap: record[HEADER_LEN..HEADER_LEN + snap_len].to_vec() })
    }

    /// The event kind.
    pub fn kind(&self) -> EventKind {
        EventKind::from_u8(self.header.kind).expect("checked when the event was made")
    }

    /// The packet class.
    pub fn class(&self) -> Class {
        Class::from_u8(self.header.class).unwrap_or(Class::Other)
    }

    /// The hook direction.
    pub fn direction(&self) -> Direction {
        Direction::from_u8(self.header.direction).unwrap_or(Direction::Ingress)
    }

    /// Source address.
    pub fn src_ip(&self) -> IpAddr {
        addr(self.header.ip_version, &self.header.src_addr)
    }

    /// Destination address.
    pub fn dst_ip(&self) -> IpAddr {
        addr(self.header.ip_version, &self.header.dst_addr)
    }
}

/// An address as stored in events and flow keys (IPv4 in the first four bytes).
pub fn addr(ip_version: u8, bytes: &[u8; 16]) -> IpAddr {
    if ip_version == 6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, snap: &[u8]) -> Vec<u8> {
        let header = EventHeader { kind, snap_len: snap.len() as u16, ip_version: 4, ..Default::default() };
        let mut out = vec![0u8; HEADER_LEN];
        // SAFETY: `out` holds HEADER_LEN = size_of::<EventHeader>() bytes and
        // write_unaligned needs no alignment; EventHeader is plain old data.
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast(), header) };
        out.extend_from_slice(snap);
        out.resize(out.len().max(HEADER_LEN + 128), 0xee);
        out
    }

    #[test]
    fn decodes_header_and_only_the_snap_bytes() {
        let ev = Event::from_record(&record(EventKind::Dns as u8, b"abcd")).unwrap();
        assert_eq!(ev.kind(), EventKind::Dns);
        assert_eq!(ev.snap, b"abcd");
    }

    #[test]
    fn rejects_short_unknown_and_overrunning_records() {
        assert_eq!(Event::from_record(&[0u8; 10]), Err(RecordError::Short(10)));
        assert_eq!(Event::from_record(&record(99, b"")), Err(RecordError::UnknownKind(99)));
        let mut r = record(EventKind::Dns as u8, b"");
        r[64] = 0xff; // snap_len low byte
        r[65] = 0x01;
        assert!(matches!(Event::from_record(&r), Err(RecordError::SnapOverrun { .. })));
    }
}
