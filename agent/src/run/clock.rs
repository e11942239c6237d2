//! Kernel event time (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) to wall-clock time.

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime(2) writes one timespec through the pointer, which points
    // at `ts`, a live local borrowed exclusively for the call.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Monotonic now, on the kernel programs' clock.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Converts monotonic event times to wall-clock times, with the offset taken once at
/// start (so that event times stay ordered even if the wall clock is stepped).
#[derive(Clone, Copy, Debug)]
pub struct EventClock {
    offset: i128,
}

impl EventClock {
    /// Measures the offset between CLOCK_REALTIME and CLOCK_MONOTONIC now.
    pub fn new() -> EventClock {
        let mono = monotonic_ns();
        let real = clock_ns(libc::CLOCK_REALTIME);
        EventClock { offset: real as i128 - mono as i128 }
    }

    /// Wall-clock ns for a monotonic ns.
    pub fn wall(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset).max(0) as u64
    }

    /// Wall-clock now.
    pub fn now(&self) -> u64 {
        self.wall(monotonic_ns())
    }
}

impl Default for EventClock {
    fn default() -> Self {
        EventClock::new()
    }
}
