//! Helpers shared by the integration tests: where the captures are, the rule for
//! privileged tests, and the tshark oracle.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// The captures (a copy of `../shared/pcaps`, kept in the repository so a clean clone
/// can run the tests; `pcaps_match_shared` checks the two agree).
pub fn pcaps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps")
}

/// Every capture file under `pcaps_dir()`, sorted.
pub fn all_pcaps() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["dns", "dtls", "icmp", "misc", "seed"] {
        for entry in std::fs::read_dir(pcaps_dir().join(dir)).expect("pcaps dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "pcap" || e == "pcapng") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The path of a capture relative to `pcaps_dir()` (as EXPECTED.tsv names it).
pub fn rel(path: &Path) -> String {
    path.strip_prefix(pcaps_dir()).unwrap_or(path).to_string_lossy().into_owned()
}

/// Whether a privileged test may run. It runs as root. Otherwise it is skipped with
/// its reason printed, unless `PATHWATCH_REQUIRE_BPF` is set (CI), where a skip is a
/// failure.
pub fn privileged(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("PATHWATCH_REQUIRE_BPF").is_some() {
        panic!("{test}: needs root (BPF, namespaces) and PATHWATCH_REQUIRE_BPF is set");
    }
    eprintln!("SKIP {test}: needs root (BPF, namespaces); set PATHWATCH_REQUIRE_BPF=1 to make this a failure");
    false
}

/// One row of EXPECTED.tsv: column name → count.
pub type ExpectedRow = BTreeMap<String, u64>;

/// EXPECTED.tsv: file → row (the `linktype` column left out).
pub fn expected() -> BTreeMap<String, ExpectedRow> {
    let text = std::fs::read_to_string(pcaps_dir().join("EXPECTED.tsv")).expect("EXPECTED.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let mut out = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let mut row = ExpectedRow::new();
        for (name, value) in header.iter().zip(&cols).skip(2) {
            row.insert((*name).to_string(), value.parse().expect("count"));
        }
        out.insert(cols[0].to_string(), row);
    }
    out
}
