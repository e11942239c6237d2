//! Per-flow state for oversized TCP segments, the rule that spots their
//! retransmissions, and the cache that holds it.
//!
//! Only `large_df` TCP segments touch the cache, so bulk traffic that fits the path
//! costs nothing here; bulk traffic that does not (full-size DF segments, most of what
//! a gateway carries) pays one lookup per segment, so the lookup is made cheap: a
//! two-way set-associative array indexed by a hash of the flow ([`FlowSet`],
//! [`flow_hash`]), not a hash map with its 40-byte key compare and LRU list. A flow
//! is known by a 64-bit tag of its hash; two flows with one tag (odds ~2^-64 per pair,
//! the hash seeded per run) would share a state. A set holds two flows; a third
//! takes the way used least recently, counted as an eviction. The update rule and the
//! set logic are pure functions used by the kernel and the userspace classifier alike,
//! so that both keep the same flows and agree on every event.

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

/// Flows per [`FlowSet`].
pub const FLOW_WAYS: usize = 2;

/// One way of a [`FlowSet`]: a flow's tag (0: empty) and its state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowWay {
    /// [`flow_hash`] of the flow with its low bit set; 0 when the way is empty.
    pub tag: u64,
    /// The flow's state.
    pub state: FlowState,
    /// In way 0: the way used last (0 or 1). Elsewhere zero.
    pub mru: u32,
}

/// A set of the flow cache: [`FLOW_WAYS`] flows, one cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSet {
    /// The ways.
    pub ways: [FlowWay; FLOW_WAYS],
}

// SAFETY: `FlowSet` is `repr(C)` and made only of integers, with no implicit padding: any bit pattern the kernel writes is a valid value, and aya copies it as bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowSet {}

const _: () = assert!(core::mem::size_of::<FlowWay>() == 32);
const _: () = assert!(core::mem::size_of::<FlowSet>() == 64);

/// The number of sets for a cache of at least `entries` flows (at least one set): a
/// power of two, so a set is picked by masking the hash.
pub const fn flow_sets(entries: u32) -> u32 {
    let sets = entries.div_ceil(FLOW_WAYS as u32);
    if sets <= 1 { 1 } else { sets.next_power_of_two() }
}

/// What a [`FlowSet`] lookup did besides updating the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowSlotOutcome {
    /// The flow was held.
    Hit,
    /// The flow took an empty way.
    Inserted,
    /// The flow took the way of another flow, which is forgotten.
    Evicted,
}

impl FlowSet {
    /// Accounts the segment `[seq, seq + len)` of the flow tagged `tag` (see
    /// [`FlowState::on_segment`]); the flow's state when it is a retransmission, and
    /// what happened to the set.
    #[inline(always)]
    pub fn on_segment(&mut self, tag: u64, seq: u32, len: u16) -> (Option<FlowState>, FlowSlotOutcome) {
        let [w0, w1] = &mut self.ways;
        if w0.tag == tag {
            w0.mru = 0;
            return (w0.state.on_segment(seq, len).then_some(w0.state), FlowSlotOutcome::Hit);
        }
        if w1.tag == tag {
            w0.mru = 1;
            return (w1.state.on_segment(seq, len).then_some(w1.state), FlowSlotOutcome::Hit);
        }
        // The way not used last: an empty one when there is one.
        let (way, outcome) = if w0.tag == 0 {
            (0, FlowSlotOutcome::Inserted)
        } else if w1.tag == 0 {
            (1, FlowSlotOutcome::Inserted)
        } else {
            (w0.mru ^ 1, FlowSlotOutcome::Evicted)
        };
        let first = FlowState::first(seq, len);
        if way == 0 {
            *w0 = FlowWay { tag, state: first, mru: 0 };
        } else {
            *w1 = FlowWay { tag, state: first, mru: 0 };
            w0.mru = 1;
        }
        (None, outcome)
    }
}

/// Multiplier of the flow hash (the 64-bit golden ratio).
const HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// One round of the flow hash.
#[inline(always)]
const fn hash_round(h: u64, w: u64) -> u64 {
    let h = (h ^ w).wrapping_mul(HASH_MUL);
    h ^ (h >> 32)
}

/// The hash of a flow from its key words ([`FlowKey`]'s layout as five `u64`, IPv4
/// addresses in the low half of words 0 and 2, words 1 and 3 zero) and the run's
/// `seed`. A multiply-xorshift per word and murmur3's finaliser: a dozen instructions
/// for IPv4, where a hash map's jhash of the 40-byte key takes several times that.
#[inline(always)]
pub const fn flow_hash(words: &[u64; 5], seed: u64) -> u64 {
    let mut h = hash_round(seed ^ HASH_MUL, words[0]);
    h = hash_round(h, words[2]);
    if words[1] | words[3] != 0 {
        h = hash_round(h, words[1]);
        h = hash_round(h, words[3]);
    }
    h = hash_round(h, words[4]);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The tag of a flow with hash `hash`: never 0 (an empty way).
#[inline(always)]
pub const fn flow_tag(hash: u64) -> u64 {
    hash | 1
}

/// The set of a flow with hash `hash` in a cache whose sets are `set_mask + 1`.
#[inline(always)]
pub const fn flow_set_index(hash: u64, set_mask: u32) -> u32 {
    (hash >> 40) as u32 & set_mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_two_flows_and_a_third_takes_the_one_used_least_recently() {
        let mut set = FlowSet::default();
        assert_eq!(set.on_segment(3, 0, 1448), (None, FlowSlotOutcome::Inserted));
        assert_eq!(set.on_segment(5, 0, 1448), (None, FlowSlotOutcome::Inserted));
        assert_eq!(set.on_segment(3, 1448, 1448), (None, FlowSlotOutcome::Hit));
        let (retx, outcome) = set.on_segment(3, 0, 1448);
        assert_eq!((retx.map(|s| s.retransmits), outcome), (Some(1), FlowSlotOutcome::Hit));
        // Flow 3 was used last: flow 7 takes flow 5's way.
        assert_eq!(set.on_segment(7, 0, 1448), (None, FlowSlotOutcome::Evicted));
        assert_eq!(set.on_segment(3, 0, 1448).0.map(|s| s.retransmits), Some(2));
        assert_eq!(set.on_segment(5, 0, 1448), (None, FlowSlotOutcome::Evicted));
        assert_eq!(set.on_segment(3, 0, 1448).1, FlowSlotOutcome::Hit);
    }

    #[test]
    fn the_hash_tells_flows_apart_by_every_field_and_by_seed() {
        let base = [0x0100_12c6_u64, 0, 0x0200_12c6, 0, 443 | 40000 << 16 | 4 << 32];
        let h = flow_hash(&base, 0);
        for i in 0..5 {
            for bit in [0, 17, 40, 63] {
                let mut w = base;
                w[i] ^= 1 << bit;
                assert_ne!(flow_hash(&w, 0), h, "word {i} bit {bit}");
            }
        }
        assert_ne!(flow_hash(&base, 1), h);
        assert_eq!(flow_tag(h) & 1, 1);
        assert!(flow_set_index(h, 1023) <= 1023);
        assert_eq!((flow_sets(0), flow_sets(1), flow_sets(2), flow_sets(3), flow_sets(65536)), (1, 1, 1, 2, 32768));
    }

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
