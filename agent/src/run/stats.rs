//! The `stats` lines of a live run, and its summary: kernel counters summed over CPUs
//! (read here, not per packet), userspace event counters, table occupancy.

use std::time::Instant;

use agent_common::{Class, Direction, stats as kstats};
use serde_json::{Map, Value, json};

use super::{EventClock, Shared, kernel_stats_json};
use crate::{detect::finding::rfc3339, report};

/// Per interface and direction: packets and bytes per class; totals per class.
fn interface_counters(shared: &Shared) -> (Value, u64, [u64; 8], [u64; kstats::NUM_STATS as usize]) {
    let interfaces = shared.state.lock().expect("state lock").interfaces.clone();
    let kernel = shared.kernel.lock().expect("kernel lock");
    let slots: Vec<u32> = interfaces.iter().map(|(_, _, s)| *s).collect();
    let snapshot = kernel.counters(&slots).unwrap_or_default();
    let kstats = kernel.stats().unwrap_or([0; kstats::NUM_STATS as usize]);
    drop(kernel);
    let mut per_iface = Map::new();
    let mut classes = [0u64; 8];
    let mut packets = 0;
    for (name, ifindex, slot) in &interfaces {
        let mut iface = Map::new();
        iface.insert("ifindex".into(), json!(ifindex));
        for dir in Direction::ALL {
            let mut pk = Map::new();
            let mut by = Map::new();
            for class in Class::ALL {
                let c = snapshot.get(*slot, dir, class);
                pk.insert(class.name().into(), json!(c.packets));
                by.insert(class.name().into(), json!(c.bytes));
                if *slot != 0 {
                    classes[class as usize] += c.packets;
                    packets += c.packets;
                }
            }
            iface.insert(dir.name().into(), json!({"packets": pk, "bytes": by}));
        }
        per_iface.insert(name.clone(), Value::Object(iface));
    }
    (Value::Object(per_iface), packets, classes, kstats)
}

/// The kernel's flow table: flows held, and flows evicted (inserted and no longer
/// held: the programs never delete one, and the LRU map counts nothing). `kstats`
/// must be read before this call, so that the count errs low, never high.
pub fn kernel_flows(shared: &Shared, kstats: &[u64; kstats::NUM_STATS as usize]) -> (u64, u64) {
    let held = shared.kernel.lock().expect("kernel lock").flow_count().unwrap_or(0);
    let evicted = kstats[kstats::FLOWS_INSERTED as usize].saturating_sub(held);
    let before = shared.kernel_flows_evicted.fetch_max(evicted, std::sync::atomic::Ordering::Relaxed);
    (held, evicted.max(before))
}

/// A `stats` line.
pub fn stats_line(shared: &Shared, clock: &EventClock, started: Instant) -> Value {
    let (interfaces, packets, classes, kstats) = interface_counters(shared);
    let (kernel_held, kernel_evicted) = kernel_flows(shared, &kstats);
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
        "events_lost": {"ringbuf": kstats[kstats::RINGBUF_FULL as usize], "queue": 0, "undecodable": st.undecodable},
        "kernel": kernel_stats_json(&kstats),
        "undecodable_events": st.undecodable,
        "tracked": tracked,
        "evictions": evictions,
        "findings": st.detectors.book.all().len(),
    })
}

/// The summary line of a live run.
pub fn summary_line(shared: &Shared, clock: &EventClock, started: Instant) -> Value {
    let (interfaces, packets, classes, kstats) = interface_counters(shared);
    let (kernel_held, kernel_evicted) = kernel_flows(shared, &kstats);
    let st = shared.state.lock().expect("state lock");
    let mut counts = st.counts;
    counts.dtls_record = classes[Class::Dtls as usize];
    counts.events_lost = kstats[kstats::RINGBUF_FULL as usize];
    let mut head = Map::new();
    head.insert("time".into(), json!(rfc3339(clock.now())));
    head.insert("duration_s".into(), json!((started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0));
    head.insert("interfaces".into(), interfaces);
    head.insert("kernel".into(), kernel_stats_json(&kstats));
    head.insert("undecodable_events".into(), json!(st.undecodable));
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
                        "{name} {}: {}",
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
    report::render_summary(summary["packets"].as_u64().unwrap_or(0), &classes, &counts, &st.detectors)
}
