//! Per-flow state for oversized TCP segments, and the rule that spots their retransmissions.
//!
//! Only `large_df` TCP segments touch this table, so bulk traffic that fits the path
//! costs nothing here. The update rule is a pure function used by both the kernel and
//! the userspace classifier.

/// A TCP flow in one direction (sender → receiver).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Sender address (IPv4 in the first 4 bytes).
    pub src_addr: [u8; 16],
    /// Receiver address (IPv4 in the first 4 bytes).
    pub dst_addr: [u8; 16],
    /// Sender port.
    pub src_port: u16,
    /// Receiver port.
    pub dst_port: u16,
    /// 4 or 6.
    pub ip_version: u8,
    /// Padding, always zero.
    pub _pad: [u8; 3],
}

/// What the table remembers about a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Highest `seq + len` sent so far.
    pub max_end: u32,
    /// `seq + len` of the largest segment so far.
    pub max_len_end: u32,
    /// Largest segment payload so far.
    pub max_len: u16,
    /// Largest segment payload known to have been acknowledged.
    pub largest_acked: u16,
    /// Retransmissions seen.
    pub retransmits: u32,
    /// 1 once data at or before the end of the largest segment was sent again: that
    /// segment is then known *not* to be acknowledged, and a later retransmission
    /// further on (the next hole of the same loss burst) proves nothing about it.
    /// Cleared when a fresh segment of the largest size takes its place. 0 otherwise
    /// (no `bool` across the kernel boundary).
    pub largest_resent: u32,
}

// SAFETY: `FlowKey` is `repr(C)` and made only of integers and arrays of them, with no implicit padding: any bit pattern the kernel writes is a valid value, and aya copies it as bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowKey {}
// SAFETY: `FlowState` is `repr(C)` and made only of integers and arrays of them, with no implicit padding: any bit pattern the kernel writes is a valid value, and aya copies it as bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowState {}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowState>() == 20);

/// `a` comes before `b` in sequence space (RFC 1982 arithmetic).
#[inline(always)]
pub const fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl FlowState {
    /// The state after the first large segment of a flow.
    #[inline(always)]
    pub const fn first(seq: u32, len: u16) -> FlowState {
        let end = seq.wrapping_add(len as u32);
        FlowState { max_end: end, max_len_end: end, max_len: len, largest_acked: 0, retransmits: 0, largest_resent: 0 }
    }

    /// Accounts one large segment `[seq, seq + len)` with `len > 0`. Returns true when
    /// it is a retransmission (it starts before the highest sequence already sent).
    ///
    /// A sender starts retransmitting from its oldest unacknowledged byte, so every
    /// segment that ended at or before `seq` was acknowledged: if the largest one did,
    /// its size is now known to pass the path. That holds only while the largest
    /// segment itself was not sent again: a SACK or RACK recovery resends every hole
    /// of a burst in order (seen live in a PMTU black hole: the first full-size
    /// segment, then the next one, all lost), and the second proves nothing about the
    /// first.
    #[inline(always)]
    pub fn on_segment(&mut self, seq: u32, len: u16) -> bool {
        if seq_before(seq, self.max_end) {
            if seq_before(seq, self.max_len_end) {
                self.largest_resent = 1;
            } else if self.largest_resent == 0 && self.max_len > self.largest_acked {
                self.largest_acked = self.max_len;
            }
            self.retransmits = self.retransmits.wrapping_add(1);
            true
        } else {
            let end = seq.wrapping_add(len as u32);
            self.max_end = end;
            if len > self.max_len || (len == self.max_len && self.largest_resent != 0) {
                self.max_len = len;
                self.max_len_end = end;
                self.largest_resent = 0;
            }
            false
        }
    }
}

/// Default number of flows the kernel table holds.
pub const DEFAULT_FLOW_ENTRIES: u32 = 65536;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_of_one_loss_burst_do_not_prove_the_largest_segment_passed() {
        // Five full-size segments lost in a black hole; RTO resends the first, the
        // recovery then the second: nothing got through.
        let mut s = FlowState::first(1000, 1448);
        for i in 1..5 {
            assert!(!s.on_segment(1000 + i * 1448, 1448));
        }
        assert!(s.on_segment(1000, 1448));
        assert!(s.on_segment(1000 + 1448, 1448));
        assert!(s.on_segment(1000 + 2 * 1448, 1448));
        assert_eq!((s.largest_acked, s.retransmits), (0, 3));
    }

    #[test]
    fn a_later_hole_proves_it_while_the_largest_segment_was_not_resent() {
        let mut s = FlowState::first(1000, 1448);
        assert!(!s.on_segment(2448, 1448));
        assert!(s.on_segment(2448, 1448));
        assert_eq!(s.largest_acked, 1448);
        // Resent once, then a fresh full-size segment takes its place.
        let mut s = FlowState::first(1000, 1448);
        assert!(s.on_segment(1000, 1448));
        assert!(!s.on_segment(2448, 1448));
        assert!(!s.on_segment(3896, 1448));
        assert!(s.on_segment(3896, 1448));
        assert_eq!(s.largest_acked, 1448);
    }
}
