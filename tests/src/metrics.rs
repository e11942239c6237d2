//! The agent's /metrics as the tests read it: the samples of a Prometheus text
//! exposition, the sum of one metric's matching samples, and the check that no label
//! carries an unbounded value (an address, a name a test sent).

/// One sample of a Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (with its `_total` suffix, as exposed).
    pub name: String,
    /// Label pairs, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// The samples of a Prometheus text exposition (format 0.0.4), comments skipped and
/// label values unescaped (`\"`, `\\`, `\n`). Panics on a line it cannot read.
pub fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad(line));
        let name = line[..name_end].to_string();
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                r = r.trim_start_matches(',');
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after) = r.split_once("=\"").unwrap_or_else(|| bad(line));
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => bad(line),
                        },
                        Some((_, c)) => value.push(c),
                        None => bad(line),
                    }
                };
                labels.push((key.to_string(), value));
                r = &after[end + 1..];
            }
        }
        let value = rest.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or_else(|| bad(line));
        out.push(Sample { name, labels, value });
    }
    out
}

fn bad<T>(line: &str) -> T {
    panic!("not a sample line: {line:?}")
}

/// The label keys the agent's metrics may carry (DESIGN.md, "Metrics"); besides them,
/// only `pathwatch_build_info` has one, `version` (the build's, a constant).
pub const LABEL_KEYS: &[&str] = &["iface", "direction", "class", "kind", "source", "rcode", "table", "reason"];

/// Whether `v` is written as the kernel's drop reasons are (`NO_SOCKET`,
/// `OTHER_SUBSYSTEM`): a name from a bounded enum, never something a packet carried.
fn is_reason_name(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// What is wrong with the labels of a scrape of the agent's /metrics: a key outside
/// [`LABEL_KEYS`], a `reason` that is not a kernel drop reason's name, or a value that
/// is an IP address or contains one of `sent` (the addresses and names a test sent).
/// Empty when nothing is.
pub fn unbounded_labels(text: &str, sent: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for s in samples(text) {
        for (k, v) in &s.labels {
            let allowed = LABEL_KEYS.contains(&k.as_str()) || (s.name == "pathwatch_build_info" && k == "version");
            if !allowed {
                problems.push(format!("{}: label key {k:?} is not one of {LABEL_KEYS:?}", s.name));
            }
            if k == "reason" && !is_reason_name(v) {
                problems.push(format!("{}: label reason={v:?} is not a kernel drop reason's name", s.name));
            }
            if v.parse::<std::net::IpAddr>().is_ok() {
                problems.push(format!("{}: label {k}={v:?} is an address", s.name));
            }
            if let Some(x) = sent.iter().find(|x| !x.is_empty() && v.contains(x.as_str())) {
                problems.push(format!("{}: label {k}={v:?} carries {x:?}, which the test sent", s.name));
            }
        }
    }
    problems
}

/// The sum of the samples of metric `name` whose labels include every pair of
/// `want`, as an integer (the agent's counters are). Panics on a line that is not a
/// sample, like [`samples`].
pub fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> u64 {
    let sum: f64 = samples(text)
        .iter()
        .filter(|s| s.name == name && want.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|s| s.value)
        .sum();
    sum as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_escaped_label_values() {
        let text = "# HELP x X.\n# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"u\\\\o,te\"} 3\nup 1\n";
        let s = samples(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].labels, [("a".to_string(), "1".to_string()), ("b".to_string(), "q\"u\\o,te".to_string())]);
        assert_eq!((s[1].name.as_str(), s[1].labels.len(), s[1].value), ("up", 0, 1.0));
    }

    #[test]
    fn unbounded_labels_are_named() {
        let ok = "pathwatch_packets_total{iface=\"eth0\",direction=\"ingress\",class=\"dns\"} 1\n\
                  pathwatch_build_info{version=\"0.1.0\"} 1\n";
        assert!(unbounded_labels(ok, &["a.test".into()]).is_empty());
        let bad = "pathwatch_x_total{client=\"198.18.0.2\"} 1\npathwatch_y_total{kind=\"a.test storm\"} 1\n\
                   pathwatch_drops_total{reason=\"no socket\",class=\"dns\"} 1\n";
        let problems = unbounded_labels(bad, &["a.test".into()]);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[3].contains("reason=\"no socket\""), "{problems:?}");
        let drops = "pathwatch_drops_total{reason=\"NO_SOCKET\",class=\"dns\"} 1\n";
        assert!(unbounded_labels(drops, &[]).is_empty());
    }

    #[test]
    fn metric_sums_the_samples_whose_labels_match() {
        let text = "# TYPE p counter\np_total{iface=\"a\",class=\"dns\"} 3\np_total{iface=\"b\",class=\"dns\"} 4\n\
                    p_total{iface=\"a\",class=\"other\"} 5\nq_total 9\n";
        assert_eq!(metric(text, "p_total", &[("class", "dns")]), 7);
        assert_eq!(metric(text, "p_total", &[("iface", "a"), ("class", "dns")]), 3);
        assert_eq!(metric(text, "p_total", &[]), 12);
        assert_eq!(metric(text, "q_total", &[]), 9);
        assert_eq!(metric(text, "p_total", &[("iface", "c")]), 0);
    }
}
