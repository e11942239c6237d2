//! The `stats` lines of a live run, and its summary: kernel counters summed over CPUs
//! (read here, not per packet), userspace event counters, table occupancy.

use std::time::Instant;

use agent_common::{Class, Direction, stats as kstats};
use serde_json::{Map, Value, json};

use super::{EventClock, Listed, Shared};
use crate::{detect::finding::rfc3339, kernel::counters::ClassCounts, report};

/// The kernel's counters as reported: per listed interface, and the run's totals.
pub struct Counted {
    /// Each listed interface with its counters.
    pub interfaces: Vec<(Listed, ClassCounts)>,
    /// Every packet the programs counted on watched interfaces in this run: the listed
    /// interfaces' slots (each once), the shared slot when used, and the final counts
    /// of interfaces whose slots went to others. It never goes back.
    pub totals: ClassCounts,
    /// The kernel statistics.
    pub kstats: [u64; kstats::NUM_STATS as usize],
}

/// The entry (and `iface` label) of the interfaces that count in the shared slot 0.
pub const SHARED_SLOT_NAME: &str = "(shared)";

/// Reads the counters of the listed interfaces and the kernel statistics.
pub fn counted(shared: &Shared) -> Counted {
    let set = shared.state.lock().expect("state lock").interfaces.clone();
    let mut slots: Vec<u32> = set.listed.iter().map(|l| l.slot).filter(|s| *s != 0).collect();
    if set.shared_slot_used {
        slots.push(0);
    }
    slots.sort_unstable();
    slots.dedup();
    let kernel = shared.kernel.lock().expect("kernel lock");
    // No slot at all: read slot 0 alone (an empty list would read every slot).
    let snapshot = kernel.counters(if slots.is_empty() { &[0] } else { &slots }).unwrap_or_default();
    let kstats = kernel.stats().unwrap_or([0; kstats::NUM_STATS as usize]);
    drop(kernel);
    let mut totals = set.retired;
    for slot in &slots {
        totals.add(&snapshot.slot(*slot));
    }
    // Interfaces without a slot of their own (past the 63 slots) count together in
    // slot 0: they are reported as one entry, so that no two entries hold the same
    // packets and a sum over interfaces stays true.
    let mut interfaces: Vec<(Listed, ClassCounts)> = set
        .listed
        .into_iter()
        .filter(|l| l.slot != 0)
        .map(|l| {
            let c = snapshot.slot(l.slot);
            (l, c)
        })
        .collect();
    if set.shared_slot_used {
        let shared = Listed { name: SHARED_SLOT_NAME.into(), ifindex: 0, slot: 0, gone: false };
        interfaces.push((shared, snapshot.slot(0)));
    }
    Counted { interfaces, totals, kstats }
}

/// Packets per class over both directions, and their sum.
fn class_totals(totals: &ClassCounts) -> ([u64; 8], u64) {
    let mut classes = [0u64; 8];
    for dir in Direction::ALL {
        for class in Class::ALL {
            classes[class as usize] += totals.get(dir, class).packets;
        }
    }
    (classes, classes.iter().sum())
}

/// Per interface and direction: packets and bytes per class; totals per class.
fn interface_counters(shared: &Shared) -> (Value, u64, [u64; 8], [u64; kstats::NUM_STATS as usize]) {
    let counted = counted(shared);
    let mut per_iface = Map::new();
    for (listed, counts) in &counted.interfaces {
        let mut iface = Map::new();
        iface.insert("ifindex".into(), json!(listed.ifindex));
        iface.insert("gone".into(), json!(listed.gone));
        for dir in Direction::ALL {
            let mut pk = Map::new();
            let mut by = Map::new();
            for class in Class::ALL {
                let c = counts.get(dir, class);
                pk.insert(class.name().into(), json!(c.packets));
                by.insert(class.name().into(), json!(c.bytes));
            }
            iface.insert(dir.name().into(), json!({"packets": pk, "bytes": by}));
        }
        per_iface.insert(listed.name.clone(), Value::Object(iface));
    }
    let (classes, packets) = class_totals(&counted.totals);
    (Value::Object(per_iface), packets, classes, counted.kstats)
}

/// The kernel's flow cache: flows held, and flows evicted (a flow that took another's
/// place, counted by the programs).
pub fn kernel_flows(shared: &Shared, kstats: &[u64; kstats::NUM_STATS as usize]) -> (u64, u64) {
    let held = shared.kernel.lock().expect("kernel lock").flow_count().unwrap_or(0);
    (held, kstats[kstats::FLOW_EVICTIONS as usize])
}

/// A `stats` line.
pub fn stats_line(shared: &Shared, clock: &EventClock, started: Instant) -> Value {
    let (interfaces, packets, classes, kstats) = interface_counters(shared);
    let (kernel_held, kernel_evicted) = kernel_flows(shared, &kstats);
    let drops = super::drops::counts(shared);
    let st = shared.state.lock().expect("state lock");
    let mut counts = st.counts;
    counts.dtls_record = classes[Class::Dtls as usize];
    counts.events_lost = kstats[kstats::RINGBUF_FULL as usize];
    let (tracked, evictions) =
        report::tables_json(&st.detectors, &[("kernel_flows", kernel_held, Some(kernel_evicted))]);
    json!({
        "type": "stats",
        "time": rfc3339(clock.now()),
        "uptime_s": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "packets": packets,
        "classes": report::classes_json(&classes),
        "interfaces": interfaces,
        "events": report::events_json(&counts),
        "duplicates": st.detectors.duplicates(),
        "events_lost": {"ringbuf": kstats[kstats::RINGBUF_FULL as usize], "queue": 0, "undecodable": st.undecodable},
        "kernel": report::kernel_stats_json(&kstats),
        "undecodable_events": st.undecodable,
        "tracked": tracked,
        "evictions": evictions,
        "findings": st.detectors.book.all().len(),
        "drops": super::drops::drops_json(drops.as_ref(), st.drop_events),
    })
}

/// The summary line of a live run.
pub fn summary_line(shared: &Shared, clock: &EventClock, started: Instant) -> Value {
    let (interfaces, packets, classes, kstats) = interface_counters(shared);
    let (kernel_held, kernel_evicted) = kernel_flows(shared, &kstats);
    let drops = super::drops::counts(shared);
    let st = shared.state.lock().expect("state lock");
    let mut counts = st.counts;
    counts.dtls_record = classes[Class::Dtls as usize];
    counts.events_lost = kstats[kstats::RINGBUF_FULL as usize];
    let mut head = Map::new();
    head.insert("time".into(), json!(rfc3339(clock.now())));
    head.insert("duration_s".into(), json!((started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0));
    head.insert("interfaces".into(), interfaces);
    head.insert("kernel".into(), report::kernel_stats_json(&kstats));
    head.insert("undecodable_events".into(), json!(st.undecodable));
    head.insert("drops".into(), super::drops::drops_json(drops.as_ref(), st.drop_events));
    report::summary_json(
        head,
        packets,
        &classes,
        &counts,
        &st.detectors,
        &[("kernel_flows", kernel_held, Some(kernel_evicted))],
    )
}

/// A stats line for people.
pub fn render(line: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(ifaces) = line["interfaces"].as_object() {
        for (name, v) in ifaces {
            for dir in ["ingress", "egress"] {
                let classes: Vec<String> = v[dir]["packets"]
                    .as_object()
                    .map(|m| {
                        m.iter().filter(|(_, n)| n.as_u64().unwrap_or(0) > 0).map(|(c, n)| format!("{c} {n}")).collect()
                    })
                    .unwrap_or_default();
                if !classes.is_empty() {
                    parts.push(format!(
                        "{name}{} {}: {}",
                        if v["gone"] == true { " (gone)" } else { "" },
                        if dir == "ingress" { "in" } else { "out" },
                        classes.join(", ")
                    ));
                }
            }
        }
    }
    let events: Vec<String> = line["events"]
        .as_object()
        .map(|m| m.iter().filter(|(_, n)| n.as_u64().unwrap_or(0) > 0).map(|(c, n)| format!("{c} {n}")).collect())
        .unwrap_or_default();
    format!(
        "stats: {}; events: {}; lost {}",
        if parts.is_empty() { "no packets".into() } else { parts.join(" | ") },
        if events.is_empty() { "none".into() } else { events.join(", ") },
        line["events_lost"]["ringbuf"]
    )
}

/// The summary for people.
pub fn render_summary(summary: &Value, shared: &Shared) -> Vec<String> {
    let st = shared.state.lock().expect("state lock");
    let mut classes = [0u64; 8];
    for c in Class::ALL {
        classes[c as usize] = summary["classes"][c.name()].as_u64().unwrap_or(0);
    }
    // The kernel-side counts as the JSON summary has them (the human line said
    // nothing of lost events otherwise).
    let mut counts = st.counts;
    counts.dtls_record = summary["events"]["dtls_record"].as_u64().unwrap_or(0);
    counts.events_lost = summary["events"]["events_lost"].as_u64().unwrap_or(0);
    let mut lines = report::render_summary(summary["packets"].as_u64().unwrap_or(0), &classes, &counts, &st.detectors);
    lines.extend(render_drops(&summary["drops"]));
    lines
}

/// The drop program's counts for people: one line, reasons and classes by count.
fn render_drops(drops: &Value) -> Option<String> {
    if drops["watching"] != true {
        return None;
    }
    let mut by: Vec<(u64, String)> = drops["by_reason_class"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let n = r["count"].as_u64().unwrap_or(0);
            (n, format!("{} {} {n}", r["reason"].as_str().unwrap_or("?"), r["class"].as_str().unwrap_or("?")))
        })
        .collect();
    by.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let listed: Vec<String> = by.into_iter().map(|(_, s)| s).collect();
    let suppressed = drops["suppressed"].as_u64().unwrap_or(0);
    Some(format!(
        "dropped here: {}{}",
        if listed.is_empty() { "nothing".to_string() } else { listed.join(", ") },
        if suppressed > 0 { format!(" ({suppressed} drop events over the rate, counted only)") } else { String::new() }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_listed_by_count_and_only_when_watched() {
        assert_eq!(render_drops(&json!({"watching": false})), None);
        let d = json!({"watching": true, "suppressed": 3, "by_reason_class": [
            {"reason": "NO_SOCKET", "class": "dns", "count": 2},
            {"reason": "PKT_TOO_BIG", "class": "large_df", "count": 21}]});
        assert_eq!(
            render_drops(&d).unwrap(),
            "dropped here: PKT_TOO_BIG large_df 21, NO_SOCKET dns 2 (3 drop events over the rate, counted only)"
        );
        assert_eq!(render_drops(&json!({"watching": true, "by_reason_class": []})).unwrap(), "dropped here: nothing");
    }
}
