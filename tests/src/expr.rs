//! The PromQL expressions operators get from `deploy/`: every expression of the
//! Grafana dashboard, with Grafana's variables substituted the way a query sees them,
//! and its template variables' `label_values(SELECTOR, LABEL)`. The deploy tests run
//! them against the metric contract, the ops tests against a live agent.

use serde_json::Value;

/// The Grafana dashboard (`deploy/grafana/pathwatch.json`), parsed.
pub fn dashboard() -> Value {
    let path = crate::deploy_file("grafana/pathwatch.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Every string under an `"expr"` key in `v`, with the JSON path where it was found
/// (`at` names `v`, e.g. `$`).
pub fn exprs(v: &Value, at: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    collect(v, at, &mut out);
    out
}

fn collect(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push((at.to_string(), s.clone())),
                    _ => collect(x, &format!("{at}.{k}"), out),
                }
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| collect(x, &format!("{at}[{i}]"), out)),
        _ => {}
    }
}

/// A dashboard expression with Grafana's variables replaced as a query would see
/// them (every instance and interface; fixed intervals). Panics on a variable it
/// does not know, so a new one cannot slip through untested.
pub fn substitute(expr: &str) -> String {
    let s = expr
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
        .replace("${iface}", ".*")
        .replace("$iface", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m");
    assert!(!s.contains('$'), "a Grafana variable the test does not know in: {expr}");
    s
}

/// The query of a template variable (a string, or an object with a `query`).
pub fn variable_query(v: &Value) -> Option<&str> {
    v["query"].as_str().or_else(|| v["query"]["query"].as_str())
}

/// `label_values(SELECTOR, LABEL)` → (SELECTOR, LABEL).
pub fn label_values(query: &str) -> (String, String) {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(...): {query}"));
    let (sel, label) = inner.rsplit_once(',').unwrap_or_else(|| panic!("label_values without a label: {query}"));
    (sel.trim().to_string(), label.trim().to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn exprs_are_found_with_their_paths() {
        let v = json!({"panels": [{"targets": [{"expr": "a"}, {"expr": "b"}]}, {"expr": "c", "x": {"expr": 1}}]});
        let found = exprs(&v, "$");
        let want = [("$.panels[0].targets[0]", "a"), ("$.panels[0].targets[1]", "b"), ("$.panels[1]", "c")];
        assert_eq!(found, want.map(|(a, e)| (a.to_string(), e.to_string())));
    }

    #[test]
    fn grafana_variables_are_substituted_and_label_values_split() {
        let q = "rate(x{instance=~\"$instance\",iface=~\"${iface}\"}[$__rate_interval])";
        assert_eq!(substitute(q), "rate(x{instance=~\".*\",iface=~\".*\"}[1m])");
        let (sel, label) = label_values("label_values(pathwatch_packets_total{instance=~\"$instance\"}, iface)");
        assert_eq!((sel.as_str(), label.as_str()), ("pathwatch_packets_total{instance=~\"$instance\"}", "iface"));
    }

    #[test]
    #[should_panic(expected = "a Grafana variable the test does not know")]
    fn an_unknown_grafana_variable_is_refused() {
        substitute("x{job=\"$job\"}");
    }
}
