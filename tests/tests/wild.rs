//! The wild corpus (real public captures pathwatch was not built from, see
//! tests/wild/README.md) gives exactly its ground truth: every `expected` finding with
//! the right subject, no other finding at warning or above, and no `benign` trap
//! raised at warning or above. Skipped with a note when the corpus is not assembled,
//! unless `PATHWATCH_REQUIRE_WILD=1`.

use std::path::PathBuf;

use pathwatch_tests::{
    diagnosis::{Diagnosis, par_map, replay},
    wild::{Truth, Verdict, corpus_files, corpus_or_skip, ground_truth, warns},
};
use serde_json::Value;

fn brief(f: &Value) -> String {
    format!(
        "{} [{}] {}: {}",
        f["kind"].as_str().unwrap_or("?"),
        f["severity"].as_str().unwrap_or("?"),
        f["subject"],
        f["summary"].as_str().unwrap_or("")
    )
}

/// What is wrong with one file's diagnosis against its ground-truth rows.
fn judge(name: &str, d: &Diagnosis, truth: &[&Truth]) -> Vec<String> {
    let mut problems = Vec::new();
    for t in truth.iter().filter(|t| t.verdict == Verdict::Expected) {
        if !d.findings.iter().any(|f| t.matches(f)) {
            problems.push(format!("{name}: expected {} {:?} not raised ({})", t.kind, t.subject, t.why));
        }
    }
    for t in truth.iter().filter(|t| t.verdict == Verdict::Benign) {
        for f in d.findings.iter().filter(|f| warns(f) && t.matches(f)) {
            problems.push(format!("{name}: benign trap raised ({}): {}", t.why, brief(f)));
        }
    }
    for f in d.findings.iter().filter(|f| warns(f)) {
        let known = truth.iter().any(|t| t.verdict == Verdict::Expected && t.matches(f));
        if !known {
            problems.push(format!("{name}: unexpected {}", brief(f)));
        }
    }
    problems
}

#[test]
fn wild_captures_give_exactly_their_ground_truth() {
    let Some(dir) = corpus_or_skip("wild_captures_give_exactly_their_ground_truth") else { return };
    let files: Vec<PathBuf> = corpus_files(&dir).into_iter().map(|(p, _)| p).collect();
    let truth = ground_truth();
    for t in &truth {
        assert!(
            files.iter().any(|f| f.file_name().is_some_and(|n| n == t.file.as_str())),
            "GROUND-TRUTH.tsv names {}, which the corpus (SOURCES.tsv) does not have",
            t.file
        );
    }
    let results = par_map(&files, 2, |path| {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !path.exists() {
            return (
                name.clone(),
                None,
                vec![format!("{name}: missing from {} (run cargo xtask wild)", dir.display())],
            );
        }
        let d = replay(&[path]);
        let rows: Vec<&Truth> = truth.iter().filter(|t| t.file == name).collect();
        let mut problems = judge(&name, &d, &rows);
        // A capture cut short mid-record is replayed up to the cut and exits 2 with its
        // summary: that is right. Anything else without a summary is not.
        if d.summary.is_null() || !(d.code == 0 || d.code == 2) {
            problems.push(format!("{name}: exit {}: {}", d.code, d.stderr.lines().last().unwrap_or("")));
        }
        (name, Some(d), problems)
    });
    let expected = truth.iter().filter(|t| t.verdict == Verdict::Expected).count();
    let warned: usize =
        results.iter().flat_map(|(_, d, _)| d.iter()).map(|d| d.findings.iter().filter(|f| warns(f)).count()).sum();
    let problems: Vec<&String> = results.iter().flat_map(|(_, _, p)| p).collect();
    println!(
        "{} wild captures: {expected} expected findings, {warned} warnings or worse raised, {} problems",
        files.len(),
        problems.len()
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.iter().map(|p| p.as_str()).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn judging_catches_a_missing_an_unexpected_and_a_benign_finding() {
    use pathwatch_tests::wild::parse_subject;
    use serde_json::json;
    let row = |kind: &str, subject: &str, verdict| Truth {
        file: "x.pcap".into(),
        kind: kind.into(),
        subject: parse_subject(subject),
        verdict,
        why: "test".into(),
    };
    let storm =
        json!({"kind":"dns_probe_storm","severity":"warning","subject":{"client":"10.0.0.2","qname":"a.example"}});
    let local = json!({"kind":"dns_probe_storm","severity":"warning","subject":{"client":"10.0.0.2","qname":"local"}});
    let info = json!({"kind":"pmtu_signal","severity":"info","subject":{"reporter":"10.0.0.1"}});
    let d = |findings: Vec<Value>| Diagnosis { code: 0, findings, summary: json!({}), stderr: String::new() };
    let expected = row("dns_probe_storm", "qname=a.example", Verdict::Expected);
    let benign = row("dns_probe_storm", "qname=local", Verdict::Benign);
    assert!(judge("x", &d(vec![storm.clone(), info.clone()]), &[&expected, &benign]).is_empty());
    assert_eq!(judge("x", &d(vec![info.clone()]), &[&expected]).len(), 1, "missing");
    assert_eq!(judge("x", &d(vec![storm.clone()]), &[]).len(), 1, "unexpected");
    assert_eq!(judge("x", &d(vec![storm, local]), &[&expected, &benign]).len(), 2, "benign raised, and not expected");
}
