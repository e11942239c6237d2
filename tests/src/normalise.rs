//! Events from the kernel and from the userspace classifier made comparable.

use pathwatch::event::Event;

/// `ev` without what only the kernel fills in: the kernel stamps its own clock and,
/// under BPF_PROG_TEST_RUN, the test device's ifindex; the userspace classifier is
/// given neither.
pub fn normalise(mut ev: Event) -> Event {
    ev.header.ts_ns = 0;
    ev.header.ifindex = 0;
    ev
}
