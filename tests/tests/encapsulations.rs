//! The formats corpus (`tests/formats`): real captures of every encapsulation and link
//! type replay reads, each counted as tshark counts it (`tests/formats/EXPECTED.tsv`),
//! in userspace and through the kernel programs alike. The captures are assembled by
//! `cargo xtask wild --corpus formats`; without them the test skips with a note.

use std::{collections::BTreeMap, path::Path};

use pathwatch_tests::{
    SUMMARY_EVENT_COLUMNS, expected_in, json_lines, pathwatch, privileged,
    wild::{named_corpus_or_skip, read_tsv, repo_root},
};
use serde_json::Value;

/// Files tshark counts more in than pathwatch by design: `zeek-vxlan-triple-v2.pcap`
/// nests three VXLANs and the walk follows two (`MAX_TUNNEL_DEPTH`; the query inside
/// is counted as `tunnel_depth_limit`, not as DNS). Their counts may only fall short
/// of tshark's, never exceed them, and every frame must still be read.
const PAST_THE_DEPTH_LIMIT: &[&str] = &["zeek-vxlan-triple-v2.pcap"];

/// The summary line of `pathwatch replay [--kernel] --json - FILE`.
fn summary(file: &Path, kernel: bool) -> Value {
    let mut args = vec!["replay"];
    if kernel {
        args.push("--kernel");
    }
    args.extend(["--json", "-", file.to_str().unwrap()]);
    let (code, out, err) = pathwatch(&args);
    assert_eq!(code, 0, "{}: {err}", file.display());
    json_lines(&out).pop().expect("a summary line")
}

/// EXPECTED.tsv's columns as the summary counts them.
fn counts(summary: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::from([("packets".to_string(), summary["packets"].as_u64().unwrap())]);
    for (column, event) in SUMMARY_EVENT_COLUMNS {
        out.insert(column.to_string(), summary["events"][event].as_u64().unwrap());
    }
    out
}

#[test]
fn every_encapsulation_and_link_type_counts_as_tshark_does() {
    let test = "every_encapsulation_and_link_type_counts_as_tshark_does";
    let Some(dir) = named_corpus_or_skip(test, "formats", "PATHWATCH_FORMATS") else { return };
    let recipe = repo_root().join("tests/formats");
    let expected = expected_in(&recipe.join("EXPECTED.tsv"));
    let sets: BTreeMap<String, String> = read_tsv(&recipe.join("SOURCES.tsv"))
        .into_iter()
        .map(|row| {
            let get = |name: &str| row.iter().find(|(h, _)| h == name).map(|(_, v)| v.clone()).unwrap_or_default();
            (get("file"), get("set"))
        })
        .collect();
    let kernel = privileged(test);
    let (mut problems, mut exact, mut short) = (Vec::new(), 0, 0);
    for (file, want) in &expected {
        let path = dir.join(file);
        let set = sets.get(file).map(String::as_str).unwrap_or("?");
        let user = summary(&path, false);
        let got = counts(&user);
        let want: BTreeMap<String, u64> =
            want.iter().filter(|(c, _)| got.contains_key(*c)).map(|(c, n)| (c.clone(), *n)).collect();
        if PAST_THE_DEPTH_LIMIT.contains(&file.as_str()) {
            let over: Vec<String> = got
                .iter()
                .filter(|(c, n)| **n > want[*c])
                .map(|(c, n)| format!("{c} {n} > tshark {}", want[c]))
                .collect();
            if !over.is_empty() || got["packets"] != want["packets"] {
                problems
                    .push(format!("{file} ({set}): {over:?}, packets {} (tshark {})", got["packets"], want["packets"]));
            }
            short += usize::from(got != want);
            exact += usize::from(got == want);
        } else if got != want {
            let diff: Vec<String> = got
                .iter()
                .filter(|(c, n)| **n != want[*c])
                .map(|(c, n)| format!("{c} {n} (tshark {})", want[c]))
                .collect();
            problems.push(format!("{file} ({set}): {}", diff.join(", ")));
        } else {
            exact += 1;
        }
        if kernel {
            let through_kernel = summary(&path, true);
            for key in ["packets", "classes", "events"] {
                if through_kernel[key] != user[key] {
                    problems.push(format!("{file}: --kernel {key} {} != userspace {}", through_kernel[key], user[key]));
                }
            }
        }
    }
    eprintln!(
        "{} formats captures: {exact} exactly as tshark counts, {short} short of it past the tunnel depth limit",
        expected.len()
    );
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}
