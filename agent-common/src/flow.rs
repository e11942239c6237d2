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
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowState {}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowState>() == 16);

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
        FlowState { max_end: end, max_len_end: end, max_len: len, largest_acked: 0, retransmits: 0 }
    }

    /// Accounts one large segment `[seq, seq + len)` with `len > 0`. Returns true when
    /// it is a retransmission (it starts before the highest sequence already sent).
    ///
    /// A sender retransmits from its oldest unacknowledged byte, so every segment that
    /// ended at or before `seq` was acknowledged: if the largest one did, its size is
    /// now known to pass the path.
    #[inline(always)]
    pub fn on_segment(&mut self, seq: u32, len: u16) -> bool {
        if seq_before(seq, self.max_end) {
            if !seq_before(seq, self.max_len_end) && self.max_len > self.largest_acked {
                self.largest_acked = self.max_len;
            }
            self.retransmits = self.retransmits.wrapping_add(1);
            true
        } else {
            let end = seq.wrapping_add(len as u32);
            self.max_end = end;
            if len > self.max_len {
                self.max_len = len;
                self.max_len_end = end;
            }
            false
        }
    }
}

/// Default number of flows the kernel table holds.
pub const DEFAULT_FLOW_ENTRIES: u32 = 65536;
