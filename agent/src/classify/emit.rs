//! The event for a walked frame: the header as the kernel writes it (the same
//! `wire::record::write_header`), then the snap bytes.

use agent_common::{
    Direction, EventHeader,
    event::snap_cap,
    wire::{
        Parsed,
        record::{Snap, write_header},
    },
};

use crate::event::Event;

/// The event the kernel would write for `p`, found in `frame`.
pub(super) fn event(frame: &[u8], p: &Parsed, direction: Direction, ifindex: u32, ts_ns: u64) -> Event {
    let (off, end) = p.snap();
    let len = end.saturating_sub(off).min(snap_cap(p.event));
    let mut header = EventHeader::default();
    write_header(&frame, p, &mut header, ts_ns, ifindex, direction, Snap { offset: off, len: len as u16 });
    Event { header, snap: frame[off..off + len].to_vec() }
}
