//! `cargo xtask bench precision`: how often pathwatch is right on real traffic it was
//! not built from. The release binary replays every capture of the wild corpus
//! (tests/wild/README.md); per set (`tune`, `holdout`) it counts the findings at
//! warning or above on healthy captures (those with no `expected` row in
//! tests/wild/GROUND-TRUTH.tsv; goal 0) and the `expected` rows found with the right
//! subject (recall; goal all), and lists every finding on healthy captures.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::wild::{col, corpus_dir, ground_truth_path, read_tsv, recipe};

/// The heading of the section this benchmark owns in BENCHMARKS.md.
pub const HEADING: &str = "## Precision on real traffic";

/// One `expected` or `benign` row.
struct Truth {
    file: String,
    kind: String,
    subject: Vec<(String, String)>,
    expected: bool,
}

impl Truth {
    fn matches(&self, f: &Value) -> bool {
        f["kind"] == self.kind.as_str()
            && self.subject.iter().all(|(k, v)| {
                let got = &f["subject"][k.as_str()];
                got.as_str().is_some_and(|s| s.eq_ignore_ascii_case(v))
                    || got.as_u64().is_some_and(|n| v.parse() == Ok(n))
            })
    }
}

fn ground_truth() -> Result<Vec<Truth>> {
    let rows = read_tsv(&ground_truth_path())?;
    Ok(rows
        .iter()
        .map(|r| Truth {
            file: col(r, "file").to_string(),
            kind: col(r, "kind").to_string(),
            subject: col(r, "subject")
                .split(',')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
            expected: col(r, "verdict") == "expected",
        })
        .collect())
}

fn warns(f: &Value) -> bool {
    matches!(f["severity"].as_str(), Some("warning" | "critical"))
}

/// The final findings of `bin replay --json - file`.
fn replay(bin: &Path, file: &Path) -> Result<Vec<Value>> {
    let out = Command::new(bin)
        .args(["replay", "--json", "-"])
        .arg(file)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .with_context(|| format!("{}: no summary ({})", file.display(), String::from_utf8_lossy(&out.stderr).trim()))?;
    Ok(summary["findings"].as_array().cloned().unwrap_or_default())
}

/// Replays the corpus with `bin` and returns the benchmark's JSON object.
pub fn measure(bin: &Path) -> Result<Value> {
    let Some(dir) = corpus_dir() else { bail!("the wild corpus is not assembled: run `cargo xtask wild` first") };
    let sources: Vec<(String, String)> =
        read_tsv(&recipe())?.iter().map(|r| (col(r, "file").to_string(), col(r, "set").to_string())).collect();
    let truth = ground_truth()?;
    let files: Vec<PathBuf> = sources.iter().map(|(f, _)| dir.join(f)).collect();
    let results: Mutex<Vec<Option<Result<Vec<Value>>>>> = Mutex::new((0..files.len()).map(|_| None).collect());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(f) = files.get(i) else { break };
                    let r = replay(bin, f);
                    results.lock().expect("results")[i] = Some(r);
                }
            });
        }
    });
    let results = results.into_inner().expect("results");
    let mut sets: BTreeMap<String, [u64; 6]> = BTreeMap::new(); // files, healthy, warn_healthy, expected, found, other_warn
    let mut by_kind: BTreeMap<(String, String, String), (u64, Vec<String>)> = BTreeMap::new();
    let (mut listed, mut missed, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for ((file, set), result) in sources.iter().zip(results) {
        let findings = match result.expect("every file ran") {
            Ok(f) => f,
            Err(e) => {
                failed.push(format!("{e:#}"));
                continue;
            }
        };
        let rows: Vec<&Truth> = truth.iter().filter(|t| &t.file == file).collect();
        let expected: Vec<&&Truth> = rows.iter().filter(|t| t.expected).collect();
        let s = sets.entry(set.clone()).or_default();
        s[0] += 1;
        if expected.is_empty() {
            s[1] += 1;
            for f in &findings {
                let (kind, sev) = (f["kind"].as_str().unwrap_or("?"), f["severity"].as_str().unwrap_or("?"));
                let e = by_kind.entry((set.clone(), kind.to_string(), sev.to_string())).or_default();
                e.0 += 1;
                if !e.1.contains(file) {
                    e.1.push(file.clone());
                }
                if warns(f) {
                    s[2] += 1;
                    listed.push(json!({"set": set, "file": file, "kind": kind, "severity": sev,
                        "subject": f["subject"], "summary": f["summary"]}));
                }
            }
        } else {
            s[3] += expected.len() as u64;
            for t in &expected {
                if findings.iter().any(|f| t.matches(f)) {
                    s[4] += 1;
                } else {
                    missed.push(json!({"set": set, "file": file, "kind": t.kind,
                        "subject": t.subject.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")}));
                }
            }
            s[5] += findings.iter().filter(|f| warns(f) && !expected.iter().any(|t| t.matches(f))).count() as u64;
        }
    }
    let sets: Vec<Value> = sets
        .iter()
        .map(|(set, s)| {
            json!({"set": set, "files": s[0], "healthy_files": s[1], "warnings_on_healthy": s[2],
                "expected": s[3], "found": s[4], "other_warnings_on_problem_files": s[5]})
        })
        .collect();
    let by_kind: Vec<Value> = by_kind
        .into_iter()
        .map(|((set, kind, sev), (n, files))| json!({"set": set, "kind": kind, "severity": sev, "findings": n, "files": files}))
        .collect();
    Ok(json!({"corpus": dir.display().to_string(), "sets": sets, "healthy_findings_by_kind": by_kind,
        "warnings_on_healthy": listed, "missed": missed, "failed": failed}))
}

/// The BENCHMARKS.md section for `v` (the object [`measure`] returns).
pub fn section(v: &Value, date: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{HEADING}\n");
    let _ = writeln!(
        o,
        "Measured {date} with `cargo xtask bench precision`: the release build replays every capture of the wild corpus (tests/wild/README.md; real public captures pathwatch was not built from), judged by tests/wild/GROUND-TRUTH.tsv. Healthy = no `expected` row. `tune` captures may inform thresholds, `holdout` ones only judge them.\n"
    );
    let _ = writeln!(
        o,
        "| set | files | healthy files | warnings or worse on healthy files (goal 0) | expected findings | found, right subject (goal all) | other warnings on problem files | met |\n|---|---:|---:|---:|---:|---:|---:|---|"
    );
    for s in v["sets"].as_array().into_iter().flatten() {
        let ok =
            s["warnings_on_healthy"] == 0 && s["found"] == s["expected"] && s["other_warnings_on_problem_files"] == 0;
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s["set"].as_str().unwrap_or("?"),
            s["files"],
            s["healthy_files"],
            s["warnings_on_healthy"],
            s["expected"],
            s["found"],
            s["other_warnings_on_problem_files"],
            if ok { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(
        o,
        "\nEvery finding on healthy captures, by kind and severity:\n\n| set | kind | severity | findings | files |\n|---|---|---|---:|---|"
    );
    let by_kind = v["healthy_findings_by_kind"].as_array().cloned().unwrap_or_default();
    if by_kind.is_empty() {
        let _ = writeln!(o, "| - | none | - | 0 | - |");
    }
    for k in &by_kind {
        let files: Vec<&str> = k["files"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            k["set"].as_str().unwrap_or("?"),
            k["kind"].as_str().unwrap_or("?"),
            k["severity"].as_str().unwrap_or("?"),
            k["findings"],
            files.join(", ")
        );
    }
    let missed = v["missed"].as_array().cloned().unwrap_or_default();
    if !missed.is_empty() {
        let _ = writeln!(o, "\nExpected findings not raised:\n");
        for m in &missed {
            let _ = writeln!(
                o,
                "- {} ({}): {} {}",
                m["file"].as_str().unwrap_or("?"),
                m["set"].as_str().unwrap_or("?"),
                m["kind"].as_str().unwrap_or("?"),
                m["subject"].as_str().unwrap_or("")
            );
        }
    }
    let failed = v["failed"].as_array().cloned().unwrap_or_default();
    if !failed.is_empty() {
        let _ = writeln!(o, "\nCaptures that could not be replayed:\n");
        for f in &failed {
            let _ = writeln!(o, "- {}", f.as_str().unwrap_or("?"));
        }
    }
    o.push('\n');
    o
}

/// `doc` with the section under [`HEADING`] (up to the next `## ` heading) replaced by
/// `section`, or `section` appended when `doc` has none.
pub fn splice(doc: &str, section: &str) -> String {
    let Some(start) = doc.find(HEADING) else {
        let sep = if doc.is_empty() || doc.ends_with("\n\n") {
            ""
        } else if doc.ends_with('\n') {
            "\n"
        } else {
            "\n\n"
        };
        return format!("{doc}{sep}{section}");
    };
    let after = start + HEADING.len();
    let end = doc[after..].find("\n## ").map(|i| after + i + 1).unwrap_or(doc.len());
    format!("{}{section}{}", &doc[..start], &doc[end..])
}

/// The precision section of an existing BENCHMARKS.md, to carry over when the other
/// benchmarks rewrite it.
pub fn existing_section(doc: &str) -> Option<String> {
    let start = doc.find(HEADING)?;
    let after = start + HEADING.len();
    let end = doc[after..].find("\n## ").map(|i| after + i + 1).unwrap_or(doc.len());
    Some(doc[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_only_its_own_section() {
        let doc = format!("# B\n\n## Replay\n\nfast\n\n{HEADING}\n\nold\n\n## Memory\n\nsmall\n");
        let new = format!("{HEADING}\n\nnew\n\n");
        let got = splice(&doc, &new);
        assert_eq!(got, format!("# B\n\n## Replay\n\nfast\n\n{HEADING}\n\nnew\n\n## Memory\n\nsmall\n"));
        assert_eq!(existing_section(&got).as_deref(), Some(new.as_str()));
        let appended = splice("# B\n\n## Replay\n\nfast\n", &new);
        assert_eq!(appended, format!("# B\n\n## Replay\n\nfast\n\n{new}"));
        assert_eq!(existing_section("# B\n"), None);
    }

    #[test]
    fn truth_matches_named_subject_fields_only() {
        let t = Truth {
            file: "f".into(),
            kind: "vpn_reconnect_loop".into(),
            subject: vec![("port".into(), "443".into())],
            expected: false,
        };
        assert!(t.matches(&json!({"kind":"vpn_reconnect_loop","subject":{"client":"a","port":443}})));
        assert!(!t.matches(&json!({"kind":"vpn_reconnect_loop","subject":{"client":"a","port":8443}})));
        assert!(!t.matches(&json!({"kind":"dtls_blocked","subject":{"port":443}})));
    }
}
