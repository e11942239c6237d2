//! The detectors, fed one event at a time on event time (kernel timestamp live,
//! capture timestamp in a replay).

pub mod dns;
pub mod dtls;
pub mod finding;
pub mod pending;
pub mod pmtu;
pub mod queue;
pub mod table;
pub mod util;

use std::collections::BTreeMap;

use agent_common::EventKind;

use crate::{config::Config, decode::icmp, event::Event};

pub use finding::{Emission, Finding, FindingBook, Severity};

/// All detectors and the findings they produced.
pub struct Detectors {
    /// DNS probe storms.
    pub dns: dns::DnsDetector,
    /// Blocked DTLS, VPN reconnect loops.
    pub dtls: dtls::DtlsDetector,
    /// PMTU.
    pub pmtu: pmtu::PmtuDetector,
    /// Findings.
    pub book: FindingBook,
    last_ts: u64,
}

impl Detectors {
    /// Detectors configured by `cfg`, printing findings as `mode` says.
    pub fn new(cfg: &Config, mode: Emission) -> Detectors {
        Detectors {
            dns: dns::DnsDetector::new(cfg),
            dtls: dtls::DtlsDetector::new(cfg),
            pmtu: pmtu::PmtuDetector::new(cfg),
            book: FindingBook::new(mode, cfg.output.findings_cap.0),
            last_ts: 0,
        }
    }

    /// Applies a new configuration without losing state: thresholds, caps, and the
    /// findings' repeat interval and cap.
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.dns.reconfigure(cfg);
        self.dtls.reconfigure(cfg);
        self.pmtu.reconfigure(cfg);
        self.book.reconfigure(cfg.output.finding_interval_s.ns(), cfg.output.findings_cap.0);
    }

    /// One event.
    pub fn on_event(&mut self, ev: &Event) {
        self.last_ts = self.last_ts.max(ev.header.ts_ns);
        match ev.kind() {
            EventKind::Dns => self.dns.on_event(ev),
            EventKind::Dtls => self.dtls.on_dtls(ev),
            EventKind::Tls => self.dtls.on_tls(ev),
            EventKind::IcmpError => {
                let i = ev.header.info;
                let decoded = icmp::decode(i.icmp_type, i.icmp_code, i.icmp_mtu, &ev.snap);
                self.pmtu.on_icmp(ev, &decoded);
                self.dtls.on_icmp(ev, &decoded);
            }
            EventKind::TcpSyn => self.pmtu.on_syn(ev),
            EventKind::TcpLargeRetransmit => self.pmtu.on_retransmit(ev),
        }
        self.flush_if_full();
    }

    /// A replay builds findings at its end; a table of marks that fills up before then
    /// is built now, so no finding is lost to `output.pending_cap`.
    fn flush_if_full(&mut self) {
        if self.dns.pending_full() || self.dtls.pending_full() || self.pmtu.pending_full() {
            self.flush();
        }
    }

    /// Time passes without events (live: a timer; replay: between frames).
    pub fn tick(&mut self, now_ns: u64) {
        self.last_ts = self.last_ts.max(now_ns);
        self.dns.expire(now_ns);
        self.dtls.expire(now_ns);
        self.flush_if_full();
    }

    /// End of input at `end_ns`: time out what is due, and queue a replay's findings.
    pub fn finish(&mut self, end_ns: u64) {
        self.tick(end_ns);
        self.flush();
        self.book.finish();
    }

    /// Builds the findings whose evidence changed since the last call (the detectors
    /// update their state per event and build findings only here).
    pub fn flush(&mut self) {
        self.dns.flush(&mut self.book);
        self.dtls.flush(&mut self.book);
        self.pmtu.flush(&mut self.book);
    }

    /// Findings due to be printed (after a flush).
    pub fn take_due(&mut self) -> Vec<Finding> {
        self.flush();
        self.book.take_due()
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
        let mut out = Vec::new();
        out.extend(self.dns.occupancy());
        out.extend(self.dtls.occupancy());
        out.extend(self.pmtu.occupancy());
        let (len, ev) = self.book.occupancy();
        out.push(("findings", len, ev));
        out
    }
}
