//! Frames through the userspace classifier, the detectors and both renderers, the way
//! `replay` (findings at the end) and `run` (findings as they happen) drive them,
//! checking every line that would be printed.

use agent_common::{Class, Direction};
use pathwatch::{
    classify::Classifier,
    config::Config,
    counts::EventCounts,
    detect::{Detectors, Emission, Finding, finding::rfc3339},
    output::render_finding,
    render::event_line,
    report,
};
use serde_json::{Map, json};

use crate::{assert_printable, json_line};

/// How strictly printed lines are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Every line printable ASCII: the default configuration, so every string comes
    /// from the agent or, escaped, from a packet.
    Printable,
    /// JSON lines valid only: a fuzzed configuration's own strings (a known probe's
    /// remedy) are printed as the operator wrote them.
    JsonOnly,
}

/// Lines checked and findings seen by one run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Lines (JSON and human) that were checked.
    pub lines: usize,
    /// Kinds of the findings in the summary.
    pub kinds: Vec<&'static str>,
}

struct Printer {
    check: Check,
    lines: usize,
}

impl Printer {
    fn human(&mut self, line: &str) {
        self.lines += 1;
        if self.check == Check::Printable {
            assert_printable("human line", line);
        }
    }

    fn json(&mut self, what: &str, v: &serde_json::Value) {
        self.lines += 1;
        let line = json_line(what, v);
        if self.check == Check::Printable {
            assert_printable(what, &line);
        }
    }

    fn finding(&mut self, f: &Finding) {
        self.json("finding line", &f.to_json());
        for l in render_finding(f) {
            self.human(&l);
        }
    }
}

/// Runs `frames` (capture time ns, Ethernet bytes) with `cfg`.
pub fn run(cfg: &Config, live: bool, frames: &[(u64, &[u8])], check: Check) -> Outcome {
    let mut classifier = Classifier::new(cfg.kernel_config(), cfg.pmtu.kernel_flow_entries.0 as usize);
    let emission =
        if live { Emission::Live { interval_ns: cfg.output.finding_interval_s.ns() } } else { Emission::AtEnd };
    let mut detectors = Detectors::new(cfg, emission);
    let mut counts = EventCounts::default();
    let mut classes = [0u64; 8];
    let mut p = Printer { check, lines: 0 };
    let (mut first, mut last) = (u64::MAX, 0u64);
    for (ts, frame) in frames {
        first = first.min(*ts);
        last = last.max(*ts);
        let c = classifier.classify(frame, Direction::Ingress, 0, *ts);
        classes[c.class as usize] += 1;
        if let Some(ev) = &c.event {
            counts.count(ev);
            p.human(&event_line(ev));
            detectors.on_event(ev);
        }
        detectors.tick(*ts);
        for f in detectors.take_due() {
            p.finding(&f);
        }
    }
    counts.dtls_record = classes[Class::Dtls as usize];
    detectors.finish(last);
    for f in detectors.take_due() {
        p.finding(&f);
    }
    let mut head = Map::new();
    head.insert("source".into(), json!("userspace"));
    head.insert("start".into(), json!((!frames.is_empty()).then(|| rfc3339(first))));
    head.insert("end".into(), json!((!frames.is_empty()).then(|| rfc3339(last))));
    let held = classifier.flows().len() as u64;
    let summary =
        report::summary_json(head, frames.len() as u64, &classes, &counts, &detectors, &[("kernel_flows", held, None)]);
    p.json("summary line", &summary);
    for l in report::render_summary(frames.len() as u64, &classes, &counts, &detectors) {
        p.human(&l);
    }
    let kinds = detectors.book.all().iter().map(|f| f.kind.name()).collect();
    Outcome { lines: p.lines, kinds }
}
