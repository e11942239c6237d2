//! A capture's diagnosis as the wild and metamorphic tests compare it: `pathwatch
//! replay --json -` run on files, its final findings and summary, and the part of a
//! finding that must not depend on timing (kind, subject, severity, counts).

use std::{collections::BTreeSet, path::Path};

use serde_json::Value;

/// What one replay said.
#[derive(Clone, Debug)]
pub struct Diagnosis {
    /// Exit code.
    pub code: i32,
    /// The summary line's `findings`: every finding once, with final evidence.
    pub findings: Vec<Value>,
    /// The summary line (`Null` when the replay printed none).
    pub summary: Value,
    /// Standard error (human output and errors).
    pub stderr: String,
}

/// Replays `files` (merged in time order, as `pathwatch replay` does).
pub fn replay(files: &[&Path]) -> Diagnosis {
    let mut args = vec!["replay".to_string(), "--json".into(), "-".into()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, stderr) = crate::pathwatch(&args);
    let summary = crate::json_lines(&out).into_iter().rev().find(|l| l["type"] == "summary").unwrap_or(Value::Null);
    let findings = summary["findings"].as_array().cloned().unwrap_or_default();
    Diagnosis { code, findings, summary, stderr }
}

/// Whether an evidence key is a count (and so must survive the transformations):
/// integers and objects of integers (`rcodes`), minus anything measured in time.
fn counting(key: &str, value: &Value) -> bool {
    let timing =
        key.ends_with("_s") || key.ends_with("_ms") || matches!(key, "start" | "end" | "first_seen" | "last_seen");
    !timing
        && (value.is_u64()
            || value.is_i64()
            || value.as_object().is_some_and(|o| !o.is_empty() && o.values().all(|v| v.is_u64())))
}

/// A finding reduced to what a transformation must keep: kind, severity, subject
/// and counting evidence, as one comparable line.
pub fn fingerprint(finding: &Value) -> String {
    let counts: serde_json::Map<String, Value> = finding["evidence"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| counting(k, v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    format!(
        "{} {} {} {}",
        finding["kind"].as_str().unwrap_or("?"),
        finding["severity"].as_str().unwrap_or("?"),
        finding["subject"],
        Value::Object(counts)
    )
}

impl Diagnosis {
    /// Every finding's [`fingerprint`].
    pub fn fingerprints(&self) -> BTreeSet<String> {
        self.findings.iter().map(fingerprint).collect()
    }

    /// How `other` differs from this diagnosis, one line per finding present in only
    /// one of them; empty when they agree.
    pub fn differences(&self, other: &Diagnosis) -> Vec<String> {
        let (a, b) = (self.fingerprints(), other.fingerprints());
        let lost = a.difference(&b).map(|f| format!("  lost:   {f}"));
        let gained = b.difference(&a).map(|f| format!("  gained: {f}"));
        lost.chain(gained).collect()
    }
}

/// `f` on every item, in `threads` threads; results in the items' order.
pub fn par_map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::{Mutex, atomic::AtomicUsize, atomic::Ordering};
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    results.lock().expect("results lock")[i] = Some(r);
                }
            });
        }
    });
    results.into_inner().expect("results lock").into_iter().map(|r| r.expect("every item ran")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprints_keep_counts_and_drop_timing() {
        let a = json!({"kind":"dns_probe_storm","severity":"warning","subject":{"client":"10.0.0.2"},
            "evidence":{"queries":8,"rcodes":{"SERVFAIL":8},"period_s":15.0,"median_latency_s":0.1,"pattern":"periodic"}});
        let mut b = a.clone();
        b["evidence"]["period_s"] = json!(15.2);
        b["first_seen"] = json!("2021-01-01T00:00:00Z");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b["evidence"]["rcodes"]["SERVFAIL"] = json!(7);
        assert_ne!(fingerprint(&a), fingerprint(&b));
        let mut c = a.clone();
        c["severity"] = json!("info");
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn par_map_keeps_order() {
        let v: Vec<u32> = (0..50).collect();
        assert_eq!(par_map(&v, 3, |x| x * 2), v.iter().map(|x| x * 2).collect::<Vec<_>>());
    }
}
