//! Userspace consumer throughput: ring-buffer records decoded and fed through the
//! event counters and every detector, on one core, without the kernel.
//!
//! The events are made by the userspace classifier from realistic frames (DNS
//! queries and SERVFAIL answers for many clients and names, DTLS ClientHellos, ICMP
//! frag-needed, SYNs), serialised as ring-buffer records, then replayed with
//! advancing timestamps.

use agent_common::{Direction, EventHeader, event::HEADER_LEN};

use crate::frames;
use pathwatch::{
    classify::Classifier,
    config::Config,
    counts::EventCounts,
    detect::{Detectors, Emission},
    event::Event,
};

/// Events per ring-buffer drain (the live agent drains whatever is there on each
/// wake-up; 1024 is a modest batch at high rates).
const BATCH: usize = 1024;

/// Records a consumer would read: header bytes then snap bytes.
pub fn records(distinct: usize) -> Vec<Vec<u8>> {
    let mut c = Classifier::default();
    let mut out = Vec::with_capacity(distinct);
    let mut i = 0u32;
    while out.len() < distinct {
        let client = [198, 18, (i >> 8) as u8 & 0x3f, i as u8];
        let frame = match i % 8 {
            0..=2 => frames::dns_query_from(client, i % 512),
            3..=4 => frames::dns_servfail_to(client, i % 512),
            5 => frames::dtls_client_hello(),
            6 => frames::icmp_frag_needed(),
            _ => frames::tcp_syn_from(client),
        };
        if let Some(ev) = c.classify(&frame, Direction::Ingress, 1, 0).event {
            out.push(to_record(&ev));
        }
        i += 1;
    }
    out
}

/// An event as the kernel writes it into the ring buffer.
pub fn to_record(ev: &Event) -> Vec<u8> {
    let mut r = vec![0u8; HEADER_LEN + ev.snap.len()];
    // SAFETY: `r` holds at least HEADER_LEN = size_of::<EventHeader>() bytes,
    // write_unaligned needs no alignment, and EventHeader is plain old data.
    unsafe { std::ptr::write_unaligned(r.as_mut_ptr().cast::<EventHeader>(), ev.header) };
    r[HEADER_LEN..].copy_from_slice(&ev.snap);
    r
}

/// CPU time of the calling thread, in seconds (immune to other load on the machine).
pub fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime(2) writes one timespec through the pointer, which points
    // at `ts`, a live local borrowed exclusively for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Events per second of CPU time through decode + counters + detectors, for `total`
/// events.
pub fn run(total: usize) -> (f64, usize) {
    let recs = records(100_000);
    let mut detectors = Detectors::new(&Config::default(), Emission::Live { interval_ns: 60_000_000_000 });
    let mut counts = EventCounts::default();
    let mut findings = 0;
    let start = thread_cpu_secs();
    let mut ts = 1_700_000_000_000_000_000u64;
    for i in 0..total {
        let Ok(mut ev) = Event::from_record(&recs[i % recs.len()]) else { continue };
        ts += 1_000; // 1 µs of event time per event: a 1 M events/s stream
        ev.header.ts_ns = ts;
        counts.count(&ev);
        detectors.on_event(&ev);
        // As `run` does: findings are built and printed once per ring-buffer drain.
        if i % BATCH == BATCH - 1 {
            findings += detectors.take_due().len();
        }
    }
    findings += detectors.take_due().len();
    let secs = thread_cpu_secs() - start;
    (total as f64 / secs, findings)
}
