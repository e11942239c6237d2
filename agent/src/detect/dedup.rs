//! Duplicate events: one packet seen twice is one packet.
//!
//! SPAN and mirror ports, bridges, `tcpdump -i any` on a gateway, merged captures and
//! two watched interfaces of one bridge all show some packets twice, microseconds
//! apart. Taken as evidence, a copy doubles a storm's queries and turns an original
//! TCP segment into a "retransmission". An event is a duplicate when an event with
//! the same packet identity (addresses, ports, transport fields and the bytes it
//! carries, whatever the interface, direction or link layer) was seen less than
//! `events.duplicate_window_s` before it. Real retransmissions are far slower (a DNS
//! client waits ≥ 1 s, a TCP RTO is ≥ 200 ms), so the window separates the two.
//!
//! Fingerprints live in a set-associative table (a bucket of [`WAYS`] slots per hash,
//! the oldest replaced): constant memory and cost per event, and a flood of events
//! between a packet and its copy rarely pushes the original out. When it does, a
//! fingerprint is only forgotten (the copy then counts as evidence, as it did before
//! this stage existed); an event that was not seen is never dropped.

use std::hash::{BuildHasher, Hasher};

use ahash::RandomState;

use crate::event::Event;

/// Buckets of the fingerprint table (a power of two).
const BUCKETS: usize = 4096;
/// Slots per bucket.
const WAYS: usize = 4;

#[derive(Clone, Copy, Default)]
struct Slot {
    fingerprint: u64,
    ts_ns: u64,
}

/// Recognises events that repeat one seen moments ago.
pub struct Dedup {
    window_ns: u64,
    hasher: RandomState,
    buckets: Vec<[Slot; WAYS]>,
    duplicates: u64,
}

impl Dedup {
    /// A recogniser with a window of `window_ns` (0 turns it off).
    pub fn new(window_ns: u64) -> Dedup {
        Dedup {
            window_ns,
            hasher: RandomState::with_seeds(0x7061_7468, 0x7761_7463, 0x6864_6564, 0x7570_0001),
            buckets: vec![[Slot::default(); WAYS]; BUCKETS],
            duplicates: 0,
        }
    }

    /// Applies a new window (SIGHUP); fingerprints seen so far stay.
    pub fn reconfigure(&mut self, window_ns: u64) {
        self.window_ns = window_ns;
    }

    /// Whether `ev` repeats an event seen within the window; counts it if so.
    pub fn is_duplicate(&mut self, ev: &Event) -> bool {
        if self.window_ns == 0 {
            return false;
        }
        let fingerprint = self.fingerprint(ev) | 1; // 0 marks an empty slot
        let bucket = &mut self.buckets[(fingerprint >> 1) as usize & (BUCKETS - 1)];
        let ts = ev.header.ts_ns;
        if let Some(slot) = bucket.iter_mut().find(|s| s.fingerprint == fingerprint) {
            // Two interfaces' events may reach us slightly out of order: either way round.
            // The window runs from the packet itself, not from its latest copy.
            let copy = ts.abs_diff(slot.ts_ns) <= self.window_ns;
            if !copy {
                slot.ts_ns = ts;
            }
            self.duplicates += u64::from(copy);
            return copy;
        }
        let oldest = bucket.iter_mut().min_by_key(|s| s.ts_ns).expect("WAYS > 0");
        *oldest = Slot { fingerprint, ts_ns: ts };
        false
    }

    /// Duplicates recognised since start.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// What makes two events the same packet. Left out on purpose: the time, the
    /// interface, the direction and the link layer (VLAN depth, wire length, where
    /// the snap starts), which differ between two vantage points of one packet, and
    /// the kernel's per-flow state (`retransmits`, `largest_acked`), which a copy
    /// advances.
    fn fingerprint(&self, ev: &Event) -> u64 {
        let h = &ev.header;
        let i = &h.info;
        // The identity packed into whole words first: one hash round per word, not
        // one per field (this runs for every event).
        let words = [
            u64::from(h.kind)
                | u64::from(h.ip_version) << 8
                | u64::from(h.l4_proto) << 16
                | u64::from(h.ip_flags) << 24
                | u64::from(h.tcp_flags) << 32
                | u64::from(i.icmp_type) << 40
                | u64::from(i.icmp_code) << 48,
            u64::from(h.src_port)
                | u64::from(h.dst_port) << 16
                | u64::from(h.ip_len) << 32
                | u64::from(h.l4_payload_len) << 48,
            u64::from(i.tcp_seq) | u64::from(i.tcp_ack) << 32,
            u64::from(i.tcp_mss)
                | u64::from(i.tcp_window) << 16
                | u64::from(i.seg_len) << 32
                | u64::from(i.record_version) << 48,
            u64::from(i.icmp_mtu) | u64::from(i.handshake_mask) << 32,
        ];
        let mut s = self.hasher.build_hasher();
        for w in words {
            s.write_u64(w);
        }
        s.write(&h.src_addr);
        s.write(&h.dst_addr);
        s.write(&ev.snap);
        s.finish()
    }
}

#[cfg(test)]
mod tests {
    use agent_common::{EventHeader, EventKind};

    use super::*;

    const MS: u64 = 1_000_000;

    fn query(ts_ns: u64, id: u16, ifindex: u32) -> Event {
        let header = EventHeader {
            ts_ns,
            ifindex,
            kind: EventKind::Dns as u8,
            ip_version: 4,
            l4_proto: 17,
            src_port: 40000,
            dst_port: 53,
            snap_len: 2,
            ..Default::default()
        };
        Event { header, snap: id.to_be_bytes().to_vec() }
    }

    #[test]
    fn a_copy_within_the_window_is_a_duplicate_on_any_interface() {
        let mut d = Dedup::new(5 * MS);
        assert!(!d.is_duplicate(&query(1000 * MS, 7, 2)));
        assert!(d.is_duplicate(&query(1000 * MS + 3_000, 7, 3)), "3 µs later, seen on another interface");
        assert_eq!(d.duplicates(), 1);
    }

    #[test]
    fn a_retransmission_after_the_window_and_a_different_packet_are_not() {
        let mut d = Dedup::new(5 * MS);
        assert!(!d.is_duplicate(&query(1000 * MS, 7, 2)));
        assert!(!d.is_duplicate(&query(2000 * MS, 7, 2)), "a client's retry a second later");
        assert!(!d.is_duplicate(&query(2000 * MS + 1, 8, 2)), "another id");
        assert_eq!(d.duplicates(), 0);
    }

    #[test]
    fn a_window_of_zero_recognises_nothing() {
        let mut d = Dedup::new(0);
        assert!(!d.is_duplicate(&query(1000 * MS, 7, 2)));
        assert!(!d.is_duplicate(&query(1000 * MS, 7, 2)));
        assert_eq!(d.duplicates(), 0);
    }
}
