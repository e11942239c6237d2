//! Findings, and when to print them.
//!
//! A finding is identified by its kind and subject. Live, it is printed when it first
//! holds, and again only when its evidence changed materially and at most once per
//! `output.finding_interval_s`. A replay prints each finding once, with its evidence
//! at the end of the capture. The summary lists every finding once, final.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{kind::FindingKind, table::Table};

/// How urgent a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing (a PMTU signal: discovery is working).
    Info,
    /// Something is broken for someone.
    Warning,
    /// Traffic is being lost.
    Critical,
}

impl Severity {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One diagnosis with its evidence and remedy. Every string in it is printable ASCII
/// (values from packets are escaped before they get here).
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// What it diagnoses.
    pub kind: FindingKind,
    /// Severity.
    pub severity: Severity,
    /// Event time of the first evidence, ns since the epoch.
    pub first_seen_ns: u64,
    /// Event time of the latest evidence.
    pub last_seen_ns: u64,
    /// One line for an operator.
    pub summary: String,
    /// Who and what (DESIGN.md fixes the keys per kind).
    pub subject: Map<String, Value>,
    /// Why.
    pub evidence: Map<String, Value>,
    /// What to do.
    pub remedy: String,
}

/// RFC 3339 UTC with microseconds, as in DESIGN.md.
pub fn rfc3339(ns: u64) -> String {
    humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns)).to_string()
}

impl Finding {
    /// Identity: kind and subject.
    pub fn key(&self) -> String {
        format!("{}{}", self.kind, Value::Object(self.subject.clone()))
    }

    /// The JSON line (without the trailing newline).
    pub fn to_json(&self) -> Value {
        json!({
            "type": "finding",
            "kind": self.kind.name(),
            "severity": self.severity.name(),
            "first_seen": rfc3339(self.first_seen_ns),
            "last_seen": rfc3339(self.last_seen_ns),
            "summary": self.summary,
            "subject": self.subject,
            "evidence": self.evidence,
            "remedy": self.remedy,
        })
    }
}

/// When findings are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emission {
    /// As they happen; repeats at most once per interval (ns), and only when changed.
    Live {
        /// Minimum time between two prints of one finding.
        interval_ns: u64,
    },
    /// Once each, at the end of the input.
    AtEnd,
}

struct Entry {
    /// As its detector built it.
    base: Finding,
    /// With what [`FindingBook::annotate`] added (this host's drops).
    finding: Finding,
    material: String,
    /// What the annotation added that, changed, is worth printing again for.
    annotation: String,
    /// Material and annotation as last printed.
    printed_material: Option<String>,
    printed_at: u64,
    /// Waits in the due list: annotated now, it is printed annotated.
    in_due: bool,
}

impl Entry {
    fn shown(&self) -> String {
        format!("{}|{}", self.material, self.annotation)
    }

    /// Live: queues the finding when it was never printed, or when what it shows
    /// changed and the repeat interval has passed.
    fn consider(&mut self, mode: Emission, now_ns: u64, due: &mut Vec<Finding>) {
        let Emission::Live { interval_ns } = mode else { return };
        let shown = self.shown();
        let is_due = match &self.printed_material {
            None => true,
            Some(m) => *m != shown && now_ns.saturating_sub(self.printed_at) >= interval_ns,
        };
        if is_due {
            self.printed_material = Some(shown);
            self.printed_at = now_ns;
            self.in_due = true;
            due.push(self.finding.clone());
        }
    }
}

/// Every finding so far, and the ones due to be printed.
pub struct FindingBook {
    mode: Emission,
    entries: Table<String, Entry>,
    due: Vec<Finding>,
    /// Keys upserted since the last [`FindingBook::annotate`].
    fresh: Vec<String>,
    totals: BTreeMap<FindingKind, u64>,
}

impl FindingBook {
    /// A book holding at most `cap` findings.
    pub fn new(mode: Emission, cap: u64) -> FindingBook {
        FindingBook {
            mode,
            entries: Table::new("findings", cap),
            due: Vec::new(),
            fresh: Vec::new(),
            totals: BTreeMap::new(),
        }
    }

    /// Applies a new repeat interval (live only; a replay prints at the end whatever
    /// it says) and a new cap (shrinking evicts the least recently updated findings,
    /// counted as evictions). Findings held keep their state.
    pub fn reconfigure(&mut self, interval_ns: u64, cap: u64) {
        if let Emission::Live { interval_ns: current } = &mut self.mode {
            *current = interval_ns;
        }
        self.entries.resize(cap);
    }

    /// Records the current state of a finding; `material` summarises the evidence
    /// that, when it changes, is worth printing again.
    pub fn upsert(&mut self, finding: Finding, material: String, now_ns: u64) {
        let key = finding.key();
        let mut is_new = false;
        let entry = self.entries.entry(key.clone(), || {
            is_new = true;
            Entry {
                base: finding.clone(),
                finding: finding.clone(),
                material: String::new(),
                annotation: String::new(),
                printed_material: None,
                printed_at: 0,
                in_due: false,
            }
        });
        if is_new {
            *self.totals.entry(finding.kind).or_default() += 1;
        } else {
            let first = entry.base.first_seen_ns.min(finding.first_seen_ns);
            entry.base = finding;
            entry.base.first_seen_ns = first;
            entry.finding = entry.base.clone();
        }
        entry.material = material;
        entry.consider(self.mode, now_ns, &mut self.due);
        // Bounded like the book: past its size, the next annotation takes every finding.
        if self.fresh.len() <= self.entries.len() {
            self.fresh.push(key);
        }
    }

    /// Adds evidence the detectors do not hold (this host's drops) to the findings of
    /// `kinds` upserted since the last call, or to all of them when `all` (the
    /// evidence changed). `add` changes a copy of the finding as its detector built it
    /// and returns what, changed, is worth printing it again for. Findings waiting to
    /// be printed are printed with it.
    pub fn annotate(
        &mut self,
        kinds: &[FindingKind],
        all: bool,
        now_ns: u64,
        mut add: impl FnMut(&mut Finding) -> Option<String>,
    ) {
        let keys: Vec<String> = if all || self.fresh.len() > self.entries.len() {
            self.entries.iter().filter(|(_, e)| kinds.contains(&e.base.kind)).map(|(k, _)| k.clone()).collect()
        } else {
            std::mem::take(&mut self.fresh)
        };
        self.fresh.clear();
        let mut requeue = false;
        for key in keys {
            let Some(e) = self.entries.peek_mut(&key) else { continue };
            if !kinds.contains(&e.base.kind) {
                continue;
            }
            let mut f = e.base.clone();
            let Some(annotation) = add(&mut f) else { continue };
            e.finding = f;
            requeue |= e.in_due;
            if annotation != e.annotation {
                e.annotation = annotation;
                if e.in_due {
                    e.printed_material = Some(e.shown());
                } else {
                    e.consider(self.mode, now_ns, &mut self.due);
                }
            }
        }
        if requeue {
            for f in &mut self.due {
                if let Some(e) = self.entries.peek(&f.key()) {
                    f.clone_from(&e.finding);
                }
            }
        }
    }

    /// Whether a finding with this key exists.
    pub fn contains(&self, kind: FindingKind, subject: &Map<String, Value>) -> bool {
        self.entries.peek(&format!("{kind}{}", Value::Object(subject.clone()))).is_some()
    }

    /// Takes back a finding whose evidence turned out false (a PMTU black hole whose
    /// segment the receiver acknowledged after all): it leaves the summary. One already
    /// printed live stays printed; `pathwatch_findings_total` keeps counting it.
    pub fn withdraw(&mut self, kind: FindingKind, subject: &Map<String, Value>) {
        self.entries.remove(&format!("{kind}{}", Value::Object(subject.clone())));
    }

    /// At the end of the input: a replay queues every finding now, oldest first.
    pub fn finish(&mut self) {
        if self.mode == Emission::AtEnd {
            self.due = self.all();
        }
    }

    /// The findings due to be printed, oldest first.
    pub fn take_due(&mut self) -> Vec<Finding> {
        let due = std::mem::take(&mut self.due);
        for f in &due {
            if let Some(e) = self.entries.peek_mut(&f.key()) {
                e.in_due = false;
            }
        }
        due
    }

    /// Every finding, final, in order of first evidence.
    pub fn all(&self) -> Vec<Finding> {
        let mut all: Vec<Finding> = self.entries.iter().map(|(_, e)| e.finding.clone()).collect();
        all.sort_by_key(|a| (a.first_seen_ns, a.kind, a.key()));
        all
    }

    /// Findings first seen so far, per kind (the `pathwatch_findings_total` counter).
    pub fn totals(&self) -> &BTreeMap<FindingKind, u64> {
        &self.totals
    }

    /// Findings per kind at warning or above whose latest evidence is within
    /// `window_ns` of `now_ns`: what an alert should fire on (an `info` finding, such
    /// as a storm that has not persisted yet, is worth knowing, not paging for).
    pub fn active(&self, now_ns: u64, window_ns: u64) -> BTreeMap<FindingKind, u64> {
        let mut out = BTreeMap::new();
        for (_, e) in self.entries.iter() {
            if e.finding.severity >= Severity::Warning && now_ns.saturating_sub(e.finding.last_seen_ns) <= window_ns {
                *out.entry(e.finding.kind).or_default() += 1;
            }
        }
        out
    }

    /// Entries held and evicted.
    pub fn occupancy(&self) -> (usize, u64) {
        (self.entries.len(), self.entries.evictions())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(queries: u64, at: u64) -> Finding {
        let mut subject = Map::new();
        subject.insert("client".into(), json!("198.18.0.2"));
        let mut evidence = Map::new();
        evidence.insert("queries".into(), json!(queries));
        Finding {
            kind: FindingKind::DnsProbeStorm,
            severity: Severity::Warning,
            first_seen_ns: at,
            last_seen_ns: at,
            summary: String::new(),
            subject,
            evidence,
            remedy: String::new(),
        }
    }

    #[test]
    fn live_prints_once_then_only_material_changes_at_most_once_per_interval() {
        let s = 1_000_000_000;
        let mut book = FindingBook::new(Emission::Live { interval_ns: 60 * s }, 10);
        book.upsert(finding(4, 0), "periodic".into(), 0);
        assert_eq!(book.take_due().len(), 1);
        book.upsert(finding(5, s), "periodic".into(), s);
        book.upsert(finding(6, 70 * s), "periodic".into(), 70 * s);
        assert!(book.take_due().is_empty(), "no material change");
        book.upsert(finding(7, 80 * s), "burst".into(), 80 * s);
        let due = book.take_due();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].first_seen_ns, 0, "first_seen is kept");
        book.upsert(finding(8, 90 * s), "periodic".into(), 90 * s);
        assert!(book.take_due().is_empty(), "changed again, but within the interval");
        assert_eq!(book.totals()[&FindingKind::DnsProbeStorm], 1);
    }

    #[test]
    fn reconfigure_changes_the_repeat_interval_and_the_cap() {
        let s = 1_000_000_000;
        let mut book = FindingBook::new(Emission::Live { interval_ns: 60 * s }, 10);
        book.upsert(finding(4, 0), "periodic".into(), 0);
        assert_eq!(book.take_due().len(), 1);
        book.upsert(finding(5, 2 * s), "burst".into(), 2 * s);
        assert!(book.take_due().is_empty(), "within the 60 s interval");
        book.reconfigure(s, 10);
        book.upsert(finding(6, 3 * s), "backoff".into(), 3 * s);
        assert_eq!(book.take_due().len(), 1, "the 1 s interval applies to a finding held before");
        let mut other = finding(1, 4 * s);
        other.subject.insert("client".into(), json!("198.18.0.3"));
        book.upsert(other, "x".into(), 4 * s);
        assert_eq!(book.occupancy(), (2, 0));
        book.reconfigure(s, 1);
        assert_eq!(book.occupancy(), (1, 1), "a smaller cap evicts the least recently updated");
        assert_eq!(book.all()[0].subject["client"], json!("198.18.0.3"));
        let mut replay = FindingBook::new(Emission::AtEnd, 10);
        replay.reconfigure(s, 10);
        assert_eq!(replay.mode, Emission::AtEnd, "a replay stays a replay");
    }

    #[test]
    fn annotation_applies_once_to_the_detectors_finding_and_due_ones_print_with_it() {
        let mut book = FindingBook::new(Emission::Live { interval_ns: 0 }, 10);
        book.upsert(finding(4, 0), "m".into(), 0);
        let add = |f: &mut Finding| {
            f.summary.push_str("; dropped here");
            Some("true".to_string())
        };
        book.annotate(&[FindingKind::DnsProbeStorm], false, 0, add);
        let due = book.take_due();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].summary, "; dropped here", "queued before, printed annotated");
        book.annotate(&[FindingKind::DnsProbeStorm], true, 1, add);
        assert!(book.take_due().is_empty(), "the same annotation again is nothing new");
        assert_eq!(book.all()[0].summary, "; dropped here", "annotated from the detector's finding, not twice");
        book.annotate(&[FindingKind::PmtuBlackHole], true, 2, |_| panic!("only the kinds asked for"));
        book.annotate(&[FindingKind::DnsProbeStorm], true, 3, |_| Some("false".into()));
        assert_eq!(book.take_due().len(), 1, "a changed annotation is printed again");
    }

    #[test]
    fn replay_prints_each_finding_once_at_the_end_with_final_evidence() {
        let mut book = FindingBook::new(Emission::AtEnd, 10);
        book.upsert(finding(4, 0), "a".into(), 0);
        book.upsert(finding(8, 5), "b".into(), 5);
        assert!(book.take_due().is_empty());
        book.finish();
        let due = book.take_due();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].evidence["queries"], json!(8));
    }
}
