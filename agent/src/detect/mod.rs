//! The detectors, fed one event at a time on event time (kernel timestamp live,
//! capture timestamp in a replay).

pub mod dedup;
pub mod dns;
pub mod drops;
pub mod dtls;
pub mod finding;
pub mod hashing;
pub mod kind;
pub mod lru_map;
pub mod pending;
pub mod pmtu;
pub mod queue;
pub mod table;
pub mod util;

use std::collections::BTreeMap;

use agent_common::EventKind;

use crate::{
    config::Config,
    decode::icmp::{self, IcmpError},
    event::Event,
};

pub use finding::{Emission, Finding, FindingBook, Severity};
pub use kind::FindingKind;

/// What every detector does: take events on event time, let time pass, build its
/// findings on demand, and account for the state it holds.
pub trait Detector {
    /// One event; `icmp` is its ICMP error, decoded once for every detector.
    fn on_event(&mut self, ev: &Event, icmp: Option<&IcmpError>);
    /// An event that repeats one seen moments ago (a SPAN port, a bridge, two watched
    /// interfaces): it is no evidence, but tells where packets are seen twice.
    fn on_duplicate(&mut self, _ev: &Event) {}
    /// Time passes without events (live: a timer; replay: between frames).
    fn expire(&mut self, now_ns: u64);
    /// Builds the findings whose evidence changed since the last call.
    fn flush(&mut self, book: &mut FindingBook);
    /// Applies a new configuration without losing state.
    fn reconfigure(&mut self, cfg: &Config);
    /// Whether its table of marked findings is full (build them before the next mark).
    fn pending_full(&self) -> bool;
    /// Its tables: name, entries held, entries evicted.
    fn occupancy(&self) -> Vec<(&'static str, usize, u64)>;
}

/// All detectors and the findings they produced.
pub struct Detectors {
    /// DNS probe storms.
    pub dns: dns::DnsDetector,
    /// Blocked DTLS, VPN reconnect loops.
    pub dtls: dtls::DtlsDetector,
    /// PMTU.
    pub pmtu: pmtu::PmtuDetector,
    /// This host's drops: evidence for the others' findings, and suppressed ICMP.
    pub drops: drops::DropLedger,
    /// Findings.
    pub book: FindingBook,
    /// Recognises copies of one packet, which are no evidence.
    dedup: dedup::Dedup,
    last_ts: u64,
}

impl Detectors {
    /// Detectors configured by `cfg`, printing findings as `mode` says.
    pub fn new(cfg: &Config, mode: Emission) -> Detectors {
        Detectors {
            dns: dns::DnsDetector::new(cfg),
            dtls: dtls::DtlsDetector::new(cfg),
            pmtu: pmtu::PmtuDetector::new(cfg),
            drops: drops::DropLedger::new(cfg),
            book: FindingBook::new(mode, cfg.output.findings_cap.0),
            dedup: dedup::Dedup::new(cfg.events.duplicate_window_s.ns()),
            last_ts: 0,
        }
    }

    /// The detectors, in the order they see each event.
    fn each(&mut self) -> [&mut dyn Detector; 4] {
        [&mut self.dns, &mut self.dtls, &mut self.pmtu, &mut self.drops]
    }

    /// Applies a new configuration without losing state: thresholds, caps, and the
    /// findings' repeat interval and cap.
    pub fn reconfigure(&mut self, cfg: &Config) {
        for d in self.each() {
            d.reconfigure(cfg);
        }
        self.book.reconfigure(cfg.output.finding_interval_s.ns(), cfg.output.findings_cap.0);
        self.dedup.reconfigure(cfg.events.duplicate_window_s.ns());
    }

    /// One event. A copy of an event seen moments ago is counted and shown to the
    /// detectors as a duplicate, never as evidence.
    pub fn on_event(&mut self, ev: &Event) {
        self.last_ts = self.last_ts.max(ev.header.ts_ns);
        if self.dedup.is_duplicate(ev) {
            for d in self.each() {
                d.on_duplicate(ev);
            }
            return;
        }
        let decoded = (ev.kind() == EventKind::IcmpError).then(|| {
            let i = ev.header.info;
            icmp::decode(i.icmp_type, i.icmp_code, i.icmp_mtu, &ev.snap)
        });
        for d in self.each() {
            d.on_event(ev, decoded.as_ref());
        }
        self.flush_if_full();
    }

    /// Tells the detectors whether this host's drops are watched (`run` with the drop
    /// program attached): without, no finding can say whether this host dropped its
    /// packets (`dropped_here: "unknown"`).
    pub fn set_drops_watched(&mut self, watched: bool) {
        self.drops.set_watched(watched);
    }

    /// A packet this host's kernel dropped: evidence for the findings about it.
    pub fn on_drop(&mut self, d: &crate::drops::DropEvent) {
        self.last_ts = self.last_ts.max(d.packet.header.ts_ns);
        self.drops.record(d);
        self.flush_if_full();
    }

    /// A replay builds findings at its end; a table of marks that fills up before then
    /// is built now, so no finding is lost to `output.pending_cap`.
    fn flush_if_full(&mut self) {
        if self.each().iter().any(|d| d.pending_full()) {
            self.flush();
        }
    }

    /// Time passes without events (live: a timer; replay: between frames).
    pub fn tick(&mut self, now_ns: u64) {
        self.last_ts = self.last_ts.max(now_ns);
        for d in self.each() {
            d.expire(now_ns);
        }
        self.flush_if_full();
    }

    /// End of input at `end_ns`: time out what is due, and queue a replay's findings.
    pub fn finish(&mut self, end_ns: u64) {
        self.tick(end_ns);
        self.flush();
        self.book.finish();
    }

    /// Builds the findings whose evidence changed since the last call (the detectors
    /// update their state per event and build findings only here), then adds what this
    /// host's drops say about them.
    pub fn flush(&mut self) {
        let Detectors { dns, dtls, pmtu, drops, book, last_ts, .. } = self;
        for d in [dns as &mut dyn Detector, dtls, pmtu, drops] {
            d.flush(book);
        }
        let all = drops.take_changed();
        book.annotate(&drops::ANNOTATED, all, *last_ts, |f| drops.annotate(f));
    }

    /// Findings due to be printed (after a flush).
    pub fn take_due(&mut self) -> Vec<Finding> {
        self.flush();
        self.book.take_due()
    }

    /// Events recognised as copies of one seen moments before.
    pub fn duplicates(&self) -> u64 {
        self.dedup.duplicates()
    }

    /// Latest event time seen.
    pub fn now(&self) -> u64 {
        self.last_ts
    }

    /// Entries held per table.
    pub fn tracked(&self) -> BTreeMap<&'static str, u64> {
        self.tables().into_iter().map(|(n, len, _)| (n, len as u64)).collect()
    }

    /// Entries evicted per table.
    pub fn evictions(&self) -> BTreeMap<&'static str, u64> {
        self.tables().into_iter().map(|(n, _, ev)| (n, ev)).collect()
    }

    fn tables(&self) -> Vec<(&'static str, usize, u64)> {
        let mut out: Vec<(&'static str, usize, u64)> =
            [&self.dns as &dyn Detector, &self.dtls, &self.pmtu, &self.drops]
                .iter()
                .flat_map(|d| d.occupancy())
                .collect();
        let (len, ev) = self.book.occupancy();
        out.push(("findings", len, ev));
        out
    }
}
