//! The wild corpus: real public captures that are not in `tests/pcaps`, and the
//! findings each must and must not give. The captures themselves are never committed
//! (they come from other projects' repositories); the repository keeps the recipe,
//! `tests/wild/SOURCES.tsv`, and `cargo xtask wild` assembles the files from it.
//! `tests/wild/README.md` says more.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository's root (the parent of the tests crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests crate inside the workspace").to_path_buf()
}

/// `tests/wild`: the recipe and the ground truth.
pub fn recipe_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("wild")
}

/// Where the assembled wild corpus may be, in the order looked at: `$PATHWATCH_WILD`,
/// `../shared/pcaps/wild` beside the clone (CI), `target/wild` (what `cargo xtask
/// wild` writes by default; the target directory this test binary was built in).
pub fn corpus_candidates() -> Vec<PathBuf> {
    candidates_of("wild", "PATHWATCH_WILD")
}

/// Where a corpus called `name` may be: `$ENV`, `../shared/pcaps/NAME`, then `NAME`
/// in the target directory this test binary was built in and in `target/`.
pub fn candidates_of(name: &str, env: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(d) = std::env::var_os(env).filter(|d| !d.is_empty()) {
        out.push(PathBuf::from(d));
    }
    out.push(repo_root().join("../shared/pcaps").join(name));
    let exe = std::env::current_exe().ok();
    // target/<profile>/deps/<test exe>: three levels up is the target directory.
    if let Some(target) = exe.as_deref().and_then(Path::parent).and_then(Path::parent).and_then(Path::parent) {
        out.push(target.join(name));
    }
    let default = repo_root().join("target").join(name);
    if !out.contains(&default) {
        out.push(default);
    }
    out
}

/// The first candidate directory that holds at least one capture.
pub fn corpus_dir() -> Option<PathBuf> {
    corpus_candidates().into_iter().find(|d| !captures_in(d).is_empty())
}

/// The `.pcap` / `.pcapng` files directly in `dir`, sorted.
pub fn captures_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    out.sort();
    out
}

/// Whether a missing corpus fails the test (`PATHWATCH_REQUIRE_WILD=1`) rather than
/// skipping it with a note.
pub fn required() -> bool {
    std::env::var("PATHWATCH_REQUIRE_WILD").is_ok_and(|v| v == "1")
}

/// The corpus directory, or `None` after printing why the caller skips (panics
/// instead when [`required`]).
pub fn corpus_or_skip(test: &str) -> Option<PathBuf> {
    named_corpus_or_skip(test, "wild", "PATHWATCH_WILD")
}

/// As [`corpus_or_skip`], for the corpus `name` (`formats`: `cargo xtask wild --corpus
/// formats`).
pub fn named_corpus_or_skip(test: &str, name: &str, env: &str) -> Option<PathBuf> {
    let candidates = candidates_of(name, env);
    let dir = candidates.iter().find(|d| !captures_in(d).is_empty()).cloned();
    if dir.is_none() {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        assert!(
            !required(),
            "{test}: {name} corpus not assembled (looked in {looked:?}) and PATHWATCH_REQUIRE_WILD=1: run cargo xtask wild --corpus {name}"
        );
        eprintln!("{test}: skipped: {name} corpus not assembled (run cargo xtask wild --corpus {name})");
    }
    dir
}

/// The rows of a tab-separated table with a header line, each as (column, value)
/// pairs in header order; blank lines and lines starting with `#` are skipped.
pub fn read_tsv(path: &Path) -> Vec<Vec<(String, String)>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    let Some(header) = lines.next() else { return Vec::new() };
    let header: Vec<&str> = header.split('\t').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split('\t').chain(std::iter::repeat("")))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn col<'a>(row: &'a [(String, String)], name: &str) -> &'a str {
    row.iter().find(|(h, _)| h == name).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// One capture of the recipe (only the columns the tests use).
#[derive(Clone, Debug)]
pub struct Source {
    /// File name in the corpus directory.
    pub file: String,
    /// `tune` (thresholds may be set looking at it) or `holdout` (judged only).
    pub set: String,
}

/// `tests/wild/SOURCES.tsv`.
pub fn sources() -> Vec<Source> {
    read_tsv(&recipe_dir().join("SOURCES.tsv"))
        .iter()
        .map(|r| Source { file: col(r, "file").to_string(), set: col(r, "set").to_string() })
        .filter(|s| !s.file.is_empty())
        .collect()
}

/// The captures to check in `dir`: every file of the recipe (a file the recipe names
/// that is absent is still listed, so that the caller reports it), or, while the
/// recipe is empty, every capture in `dir`.
pub fn corpus_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let sources = sources();
    if sources.is_empty() {
        return captures_in(dir).into_iter().map(|p| (p, String::new())).collect();
    }
    sources.into_iter().map(|s| (dir.join(&s.file), s.set)).collect()
}

/// What a ground-truth row says about its finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The finding must be raised.
    Expected,
    /// A trap: the finding must not be raised at warning or above.
    Benign,
}

/// One row of `tests/wild/GROUND-TRUTH.tsv`.
#[derive(Clone, Debug)]
pub struct Truth {
    /// File name in the corpus.
    pub file: String,
    /// Finding kind (`dns_probe_storm`, ...).
    pub kind: String,
    /// Subject fields that must match (`client=10.0.0.2,qname=a.example`); fields not
    /// named match anything.
    pub subject: Vec<(String, String)>,
    /// Expected or benign.
    pub verdict: Verdict,
    /// Why, in words.
    pub why: String,
}

impl Truth {
    /// Whether `finding` (a finding's JSON) is this row's: same kind, and every named
    /// subject field equal (numbers compared as their decimal text).
    pub fn matches(&self, finding: &Value) -> bool {
        finding["kind"] == self.kind.as_str()
            && self.subject.iter().all(|(k, v)| {
                let got = &finding["subject"][k.as_str()];
                got.as_str().map(|s| s.eq_ignore_ascii_case(v)).unwrap_or(false)
                    || got.as_u64().is_some_and(|n| v.parse() == Ok(n))
            })
    }
}

/// Parses a subject column: `key=value` pairs separated by commas.
pub fn parse_subject(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("subject part {p:?} is not key=value"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// `tests/wild/GROUND-TRUTH.tsv`.
pub fn ground_truth() -> Vec<Truth> {
    read_tsv(&recipe_dir().join("GROUND-TRUTH.tsv"))
        .iter()
        .map(|r| Truth {
            file: col(r, "file").to_string(),
            kind: col(r, "kind").to_string(),
            subject: parse_subject(col(r, "subject")),
            verdict: match col(r, "verdict") {
                "expected" => Verdict::Expected,
                "benign" => Verdict::Benign,
                v => panic!("GROUND-TRUTH.tsv: verdict {v:?} is neither expected nor benign"),
            },
            why: col(r, "why").to_string(),
        })
        .collect()
}

/// Whether a finding's severity is warning or critical.
pub fn warns(finding: &Value) -> bool {
    matches!(finding["severity"].as_str(), Some("warning" | "critical"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_row_matches_on_kind_and_every_named_subject_field() {
        let t = Truth {
            file: "x.pcap".into(),
            kind: "dns_probe_storm".into(),
            subject: parse_subject("client=10.0.0.2, qname=A.example"),
            verdict: Verdict::Expected,
            why: String::new(),
        };
        let f =
            json!({"kind":"dns_probe_storm","subject":{"client":"10.0.0.2","resolver":"10.0.0.1","qname":"a.example"}});
        assert!(t.matches(&f));
        assert!(!t.matches(&json!({"kind":"dtls_blocked","subject":f["subject"].clone()})));
        assert!(!t.matches(&json!({"kind":"dns_probe_storm","subject":{"client":"10.0.0.3","qname":"a.example"}})));
        let port = Truth { subject: parse_subject("port=8801"), kind: "dtls_blocked".into(), ..t };
        assert!(port.matches(&json!({"kind":"dtls_blocked","subject":{"port":8801}})));
    }

    #[test]
    fn tsv_rows_are_read_by_header_and_short_rows_padded() {
        let dir = crate::TempDir::new("tsv");
        let p = dir.0.join("t.tsv");
        std::fs::write(&p, "# note\nfile\tkind\tsubject\n\na.pcap\tdtls_blocked\n").unwrap();
        let rows = read_tsv(&p);
        assert_eq!(rows.len(), 1);
        assert_eq!((col(&rows[0], "file"), col(&rows[0], "subject"), col(&rows[0], "nope")), ("a.pcap", "", ""));
    }
}
