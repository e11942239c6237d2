//! One TCP flow's retransmitted large segments, and the rule that makes one of them a
//! PMTU black hole.
//!
//! A black hole drops one segment, the oldest unacknowledged one, every time it is
//! sent: the sender's retransmission timer resends that same segment (flow, seq) at
//! steady or growing gaps (RTO back-off) until the connection gives up. What looks
//! like it and is not:
//! - many segments each retransmitted once (loss recovery, or spurious retransmissions);
//! - one segment resent at shrinking gaps (no retransmission timer does that);
//! - a segment the receiver acknowledged (its FIN or RST acknowledges past the
//!   segment's end): the retransmissions were spurious, or the ACKs were lost;
//! - the copy of the original transmission, where the vantage point doubles packets
//!   (a SPAN port, a bridge): it looks like a first retransmission;
//! - a segment whose retransmissions stopped early: the timer would have resent it
//!   again (its next gap is at least the last one) and did not, while nothing said the
//!   connection ended. Without a FIN or RST the acknowledgment itself is not an event
//!   (ACK-only packets cost the kernel nothing), but its effect is visible: no sender
//!   gives up after fewer than [`GIVES_UP_AFTER`] retransmissions, so one that stops
//!   sooner was acknowledged.

use agent_common::flow::{FlowState, seq_before};

/// Segments remembered per flow; the least recently retransmitted one makes room. A
/// black hole resends one segment at every timeout, so it stays among the recent.
pub const MAX_SEGMENTS: usize = 8;

/// A gap counts as "steady or growing" when it is at least this fraction of the one
/// before (RTO back-off doubles it; timer granularity makes it a little uneven).
const MIN_GAP_RATIO: (u64, u64) = (4, 5);

/// Fewer retransmissions than any TCP stack makes before it gives up on a connection
/// (Windows: 5, `TcpMaxDataRetransmissions`; Linux: 15, `tcp_retries2`; macOS: 8). A
/// segment that stops being resent before this many was acknowledged.
pub const GIVES_UP_AFTER: u64 = 5;

/// The next retransmission is overdue this many last gaps after the last one (back-off
/// doubles the gap; the slack covers timer granularity and the RTO's cap)...
const OVERDUE_GAPS: u64 = 3;
/// ...plus this long.
const OVERDUE_SLACK_NS: u64 = 1_000_000_000;

/// One retransmitted segment.
#[derive(Clone, Debug)]
pub struct Segment {
    /// First sequence number.
    pub seq: u32,
    /// Payload bytes (the largest seen at this sequence number).
    pub len: u16,
    /// IP length of the largest transmission (headers and options included).
    pub packet_size: u16,
    /// Retransmissions counted (a copy of the original transmission is not one).
    pub count: u64,
    /// The last `run` retransmissions came at steady or growing gaps.
    pub run: u64,
    /// Time of the first counted retransmission.
    pub first: u64,
    /// Time of the second one (it becomes the first if the first was a copy).
    second: u64,
    /// Time of the last one.
    pub last: u64,
    /// Gap before the last one, when there are two.
    last_gap: Option<u64>,
    /// Its first event was taken for the copy of its original transmission.
    copy_discounted: bool,
    /// The receiver acknowledged it.
    pub acked: bool,
}

impl Segment {
    fn new(seq: u32, len: u16, packet_size: u16) -> Segment {
        Segment {
            seq,
            len,
            packet_size,
            count: 0,
            run: 0,
            first: 0,
            second: 0,
            last: 0,
            last_gap: None,
            copy_discounted: false,
            acked: false,
        }
    }

    /// When its next retransmission is overdue, for a segment whose retransmissions
    /// stopping would show it was acknowledged (`None`: too few to tell, or enough
    /// that the sender may have given up).
    pub fn overdue_at(&self) -> Option<u64> {
        if self.count >= GIVES_UP_AFTER {
            return None;
        }
        let gap = self.last_gap?;
        Some(self.last.saturating_add(gap.saturating_mul(OVERDUE_GAPS)).saturating_add(OVERDUE_SLACK_NS))
    }

    /// Its retransmissions stopped early by `now`: it was acknowledged.
    pub fn stopped_early(&self, now: u64) -> bool {
        self.overdue_at().is_some_and(|at| now >= at)
    }

    /// Sequence number just past the segment.
    pub fn end(&self) -> u32 {
        self.seq.wrapping_add(u32::from(self.len))
    }

    fn count_one(&mut self, now: u64) {
        match self.count {
            0 => {
                (self.first, self.run, self.last_gap) = (now, 1, None);
            }
            _ => {
                let gap = now.saturating_sub(self.last);
                let steady = match self.last_gap {
                    None => true,
                    Some(prev) => gap * MIN_GAP_RATIO.1 >= prev * MIN_GAP_RATIO.0,
                };
                // A shrinking gap starts a new run: this one and the one before.
                self.run = if steady { self.run + 1 } else { 2 };
                if self.count == 1 {
                    self.second = now;
                }
                self.last_gap = Some(gap);
            }
        }
        self.count += 1;
        self.last = now;
    }

    /// Takes the first counted retransmission back: it was the copy of the original
    /// transmission. Exact without keeping every time: the run either holds every
    /// retransmission (then it loses the first, and the gaps after it were steady
    /// among themselves too) or started after the first (then it is unchanged).
    fn discount_copy(&mut self) {
        if self.copy_discounted {
            return;
        }
        self.copy_discounted = true;
        if self.count == 0 {
            return;
        }
        if self.run == self.count {
            self.run -= 1;
        }
        self.count -= 1;
        self.first = self.second;
        if self.count < 2 {
            self.last_gap = None;
        }
    }
}

/// What a flow's retransmissions and its receiver's acknowledgments showed.
#[derive(Debug, Default)]
pub struct FlowSegments {
    /// Retransmitted large segments, least recently retransmitted first.
    pub segments: Vec<Segment>,
    /// Largest segment payload known to have been acknowledged.
    pub largest_acked: u16,
    /// Highest acknowledgment number the receiver sent on a FIN or RST.
    acked_to: Option<u32>,
    /// The vantage point doubles this flow's packets.
    doubled: bool,
    /// The kernel's flow state rebuilt from this flow's events. Where packets are
    /// doubled, the copy of every original large segment is an event (it looks like a
    /// retransmission) and the copies of true retransmissions are duplicates: the
    /// events are then exactly the sender's transmissions, and this replica infers
    /// what was acknowledged as the kernel would from a clean vantage point. (The
    /// kernel's own inference is spoiled there: each copy looks like the largest
    /// segment sent again.) Unused where packets are not doubled.
    replica: Option<FlowState>,
}

impl FlowSegments {
    /// One retransmission of `[seq, seq + len)` at `now`; `kernel_acked` is the largest
    /// size the classifier saw acknowledged (the sender moved past it).
    pub fn retransmitted(&mut self, seq: u32, len: u16, packet_size: u16, kernel_acked: u16, now: u64) {
        self.largest_acked = self.largest_acked.max(kernel_acked);
        match &mut self.replica {
            None => self.replica = Some(FlowState::first(seq, len)),
            Some(r) => {
                r.on_segment(seq, len);
            }
        }
        if self.doubled {
            self.largest_acked = self.largest_acked.max(self.replica.map_or(0, |r| r.largest_acked));
        }
        let i = match self.segments.iter().position(|s| s.seq == seq) {
            Some(i) => i,
            None => {
                if self.segments.len() == MAX_SEGMENTS {
                    self.segments.remove(0);
                }
                let mut s = Segment::new(seq, len, packet_size);
                if self.doubled {
                    // Its first "retransmission" is the copy of the original.
                    s.copy_discounted = true;
                    self.segments.push(s);
                    self.ack_known(self.segments.len() - 1);
                    return;
                }
                self.segments.push(s);
                self.segments.len() - 1
            }
        };
        let mut s = self.segments.remove(i);
        s.len = s.len.max(len);
        s.packet_size = s.packet_size.max(packet_size);
        s.count_one(now);
        self.segments.push(s);
        self.ack_known(self.segments.len() - 1);
    }

    /// The receiver's FIN or RST acknowledged everything before `ack`: the segments
    /// that end at or before it got through.
    pub fn receiver_acked(&mut self, ack: u32) {
        if self.acked_to.is_none_or(|to| seq_before(to, ack)) {
            self.acked_to = Some(ack);
        }
        for i in 0..self.segments.len() {
            self.ack_known(i);
        }
    }

    /// Marks segment `i` acknowledged if an acknowledgment already seen covers it.
    fn ack_known(&mut self, i: usize) {
        let Some(to) = self.acked_to else { return };
        let s = &mut self.segments[i];
        if !s.acked && !seq_before(to, s.end()) {
            s.acked = true;
            self.largest_acked = self.largest_acked.max(s.len);
        }
    }

    /// The flow's packets are seen twice: every segment's first event was the copy of
    /// its original transmission, and so will be the next ones'.
    pub fn doubling(&mut self) {
        if self.doubled {
            return;
        }
        self.doubled = true;
        self.largest_acked = self.largest_acked.max(self.replica.map_or(0, |r| r.largest_acked));
        for s in &mut self.segments {
            s.discount_copy();
        }
    }

    /// The black-holed segment at `now`, if one is: larger than anything acknowledged,
    /// not acknowledged itself, retransmitted at least `min` times at steady or growing
    /// gaps, and still being resent. The most retransmitted one when several are.
    pub fn black_hole(&self, min: u64, now: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .filter(|s| !s.acked && s.len > self.largest_acked && s.run >= min && !s.stopped_early(now))
            .max_by_key(|s| (s.count, s.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn resent(f: &mut FlowSegments, seq: u32, times_s: &[f64]) {
        for t in times_s {
            f.retransmitted(seq, 1448, 1500, 0, (t * S as f64) as u64);
        }
    }

    #[test]
    fn rto_back_off_makes_a_run_and_a_shrinking_gap_restarts_it() {
        let mut f = FlowSegments::default();
        resent(&mut f, 1, &[1.0, 1.2, 1.6, 2.4, 4.0]);
        let s = f.black_hole(3, 0).expect("a black hole");
        assert_eq!((s.count, s.run), (5, 5));
        resent(&mut f, 1, &[4.1]);
        assert_eq!((f.segments[0].count, f.segments[0].run), (6, 2));
    }

    #[test]
    fn discounting_the_copy_is_what_counting_without_it_gives() {
        // Gaps from the copy: 0.5 s then 0.2 s (shrinking), then doubling.
        let times = [0.5, 0.7, 1.1, 1.9];
        let mut doubled = FlowSegments::default();
        resent(&mut doubled, 1, &[0.0]);
        resent(&mut doubled, 1, &times);
        doubled.doubling();
        let mut plain = FlowSegments::default();
        resent(&mut plain, 1, &times);
        let (d, p) = (&doubled.segments[0], &plain.segments[0]);
        assert_eq!((d.count, d.run, d.first, d.last), (p.count, p.run, p.first, p.last));
        // And both go on the same way.
        resent(&mut doubled, 1, &[3.5]);
        resent(&mut plain, 1, &[3.5]);
        assert_eq!((doubled.segments[0].count, doubled.segments[0].run), (plain.segments[0].count, 5));
    }

    #[test]
    fn an_acknowledgment_seen_first_covers_later_retransmissions() {
        let mut f = FlowSegments::default();
        f.retransmitted(1000, 1448, 1500, 0, 0);
        f.receiver_acked(1000 + 1448);
        resent(&mut f, 1000, &[1.0, 2.0, 4.0]);
        assert!(f.black_hole(3, 0).is_none());
        assert_eq!(f.largest_acked, 1448);
    }

    #[test]
    fn acknowledgments_compare_in_sequence_space() {
        let mut f = FlowSegments::default();
        let seq = u32::MAX - 100;
        resent(&mut f, seq, &[1.0, 2.0, 4.0]);
        f.receiver_acked(seq.wrapping_add(1448));
        assert!(f.black_hole(3, 0).is_none(), "an ack past the wrap covers the segment");
        let mut f = FlowSegments::default();
        resent(&mut f, seq, &[1.0, 2.0, 4.0]);
        f.receiver_acked(seq);
        assert!(f.black_hole(3, 0).is_some(), "an ack at the segment's start does not");
    }

    #[test]
    fn retransmissions_that_stop_before_any_stack_gives_up_were_acknowledged() {
        let mut f = FlowSegments::default();
        // 0.3, 0.6, 1.2 s: the next was due about 2.4 s after the last.
        resent(&mut f, 1, &[1.0, 1.3, 1.9, 3.1]);
        assert!(f.black_hole(3, 5 * S).is_some(), "still within the back-off");
        assert!(f.black_hole(3, 8 * S).is_none(), "overdue: the receiver took it");
        // A sender that kept at it for five retransmissions may have given up instead.
        resent(&mut f, 2, &[1.0, 1.3, 1.9, 3.1, 5.5, 10.3]);
        assert!(f.black_hole(3, 100 * S).is_some_and(|s| s.seq == 2));
    }

    #[test]
    fn where_packets_are_doubled_the_copies_show_what_was_acknowledged() {
        // Copies of the original 1448-byte segments, then the sender goes back to the
        // second (so the first got through) and resends it.
        let mut f = FlowSegments::default();
        for seq in [1000, 2448, 3896] {
            f.retransmitted(seq, 1448, 1500, 0, S);
        }
        f.doubling();
        resent(&mut f, 2448, &[2.0, 3.0, 5.0, 9.0]);
        assert_eq!(f.largest_acked, 1448, "a segment of that size passed");
        assert!(f.black_hole(3, 10 * S).is_none(), "the same size got through before: no PMTU black hole");
    }

    #[test]
    fn the_least_recently_retransmitted_segment_makes_room() {
        let mut f = FlowSegments::default();
        resent(&mut f, 1, &[1.0]);
        for i in 0..MAX_SEGMENTS as u32 - 1 {
            f.retransmitted(10_000 + i * 1448, 1448, 1500, 0, 2 * S);
        }
        resent(&mut f, 1, &[3.0]);
        f.retransmitted(99_000, 1448, 1500, 0, 4 * S);
        assert_eq!(f.segments.len(), MAX_SEGMENTS);
        assert!(f.segments.iter().any(|s| s.seq == 1), "the recently resent segment stays");
        assert!(!f.segments.iter().any(|s| s.seq == 10_000), "the oldest goes");
    }
}
