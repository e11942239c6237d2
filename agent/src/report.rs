//! The `stats` and `summary` lines, built the same way for `run` and `replay`.

use agent_common::Class;
use serde_json::{Map, Value, json};

use crate::{
    counts::EventCounts,
    detect::{Detectors, dns},
};

/// `agent_common::stats::NAMES` as JSON, for the stats and summary lines.
pub fn kernel_stats_json(stats: &[u64; agent_common::stats::NUM_STATS as usize]) -> Value {
    let names = agent_common::stats::NAMES.iter();
    Value::Object(names.zip(stats).map(|(n, v)| ((*n).to_string(), json!(v))).collect())
}

/// The walk's statistics (`agent_common::stats::WALK`) as JSON, for replay's summary.
pub fn walk_stats_json(stats: &[u64; agent_common::stats::NUM_STATS as usize]) -> Value {
    let walk = agent_common::stats::WALK.iter().map(|&i| i as usize);
    Value::Object(walk.map(|i| (agent_common::stats::NAMES[i].to_string(), json!(stats[i]))).collect())
}

/// Packets per class.
pub fn classes_json(classes: &[u64; 8]) -> Value {
    Value::Object(Class::ALL.iter().map(|c| (c.name().to_string(), json!(classes[*c as usize]))).collect())
}

/// The `events` object: every counter of [`EventCounts`], in declaration order.
pub fn events_json(c: &EventCounts) -> Value {
    serde_json::to_value(c).expect("plain counters")
}

/// `tracked` and `evictions`, with extra tables (the kernel's) merged in.
pub fn tables_json(d: &Detectors, extra: &[(&str, u64, Option<u64>)]) -> (Value, Value) {
    let mut tracked: Map<String, Value> = d.tracked().into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let mut evictions: Map<String, Value> = d.evictions().into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    for (name, held, evicted) in extra {
        tracked.insert((*name).to_string(), json!(held));
        if let Some(evicted) = evicted {
            evictions.insert((*name).to_string(), json!(evicted));
        }
    }
    (Value::Object(tracked), Value::Object(evictions))
}

/// The summary line. `head` holds the command-specific fields that come first.
pub fn summary_json(
    head: Map<String, Value>,
    packets: u64,
    classes: &[u64; 8],
    counts: &EventCounts,
    d: &Detectors,
    extra_tables: &[(&str, u64, Option<u64>)],
) -> Value {
    let findings = d.book.all();
    let (tracked, evictions) = tables_json(d, extra_tables);
    let mut m = Map::new();
    m.insert("type".into(), json!("summary"));
    m.extend(head);
    m.insert("packets".into(), json!(packets));
    m.insert("classes".into(), classes_json(classes));
    m.insert("events".into(), events_json(counts));
    m.insert("duplicates".into(), json!(d.duplicates()));
    m.insert("tracked".into(), tracked);
    m.insert("evictions".into(), evictions);
    m.insert(
        "findings".into(),
        Value::Array(
            findings
                .iter()
                .map(|f| {
                    let mut v = f.to_json();
                    v.as_object_mut().expect("object").remove("type");
                    v
                })
                .collect(),
        ),
    );
    m.insert("fleet".into(), Value::Array(dns::fleet(&findings)));
    Value::Object(m)
}

/// The summary for people.
pub fn render_summary(packets: u64, classes: &[u64; 8], counts: &EventCounts, d: &Detectors) -> Vec<String> {
    let class_list: Vec<String> = Class::ALL
        .iter()
        .filter(|c| classes[**c as usize] > 0)
        .map(|c| format!("{} {}", c.name(), classes[*c as usize]))
        .collect();
    let events = events_json(counts);
    let event_list: Vec<String> = events
        .as_object()
        .expect("object")
        .iter()
        .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let findings = d.book.all();
    let mut by_kind = std::collections::BTreeMap::<&str, u64>::new();
    for f in &findings {
        *by_kind.entry(f.kind.name()).or_default() += 1;
    }
    let finding_list: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let duplicates = match d.duplicates() {
        0 => String::new(),
        n => format!(" ({n} duplicates, no evidence)"),
    };
    let mut lines = vec![format!(
        "summary: {packets} packets ({}); events: {}{duplicates}; findings: {}",
        if class_list.is_empty() { "none".into() } else { class_list.join(", ") },
        if event_list.is_empty() { "none".into() } else { event_list.join(", ") },
        if finding_list.is_empty() { "none".into() } else { finding_list.join(", ") },
    )];
    for f in dns::fleet(&findings) {
        lines.push(format!(
            "fleet: {} clients storm on {} {}",
            f["clients"],
            f["qtype"].as_str().unwrap_or(""),
            f["qname"].as_str().unwrap_or("")
        ));
    }
    lines
}
