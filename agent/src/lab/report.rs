//! What `pathwatch lab` prints: per scenario a table row (expected, found, key
//! evidence, pass/FAIL, seconds), then the findings themselves and the log lines
//! that show the fault; and the same as JSON lines (`lab_scenario`, `lab_summary`).

use serde_json::{Value, json};

use super::scenario::Outcome;
use crate::detect::kind::FindingKind;

/// Evidence keys worth a table cell, per finding kind.
fn key_evidence(kind: &str) -> &'static [&'static str] {
    match kind {
        "dns_probe_storm" => &["queries", "rcodes", "pattern", "period_s", "known_probe"],
        "dns_resolver_outage" => &["clients", "names", "queries", "failed", "timeouts", "rcodes"],
        "dtls_blocked" => {
            &["client_hellos", "server_records", "tls_session_seen", "dropped_here", "drop_reason", "drop_count"]
        }
        "dtls_port_unreachable" => &["icmp_from", "icmp_count", "client_hellos"],
        "vpn_reconnect_loop" => &["sessions", "period_s", "span_s", "vpn_evidence"],
        "pmtu_black_hole" => &[
            "retransmissions",
            "segment_size",
            "largest_acked_size",
            "icmp_seen",
            "dropped_here",
            "drop_reason",
            "drop_interface",
            "icmp_dropped_here",
        ],
        "local_icmp_suppressed" => &["suppressed", "by_type", "drop_hook"],
        "pmtu_signal" => &["icmp_type", "next_hop_mtu", "count"],
        "mss_exceeds_path_mtu" => &["mss", "path_mtu"],
        _ => &[],
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => m.iter().map(|(k, v)| format!("{k}:{}", value_text(v))).collect::<Vec<_>>().join(","),
        Value::Array(a) => a.iter().map(value_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// `k=v` pairs of the key evidence of one finding.
pub fn brief(f: &Value) -> String {
    let kind = f["kind"].as_str().unwrap_or("");
    key_evidence(kind)
        .iter()
        .filter(|k| !f["evidence"][**k].is_null())
        .map(|k| format!("{k}={}", value_text(&f["evidence"][*k])))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The evidence cell: the key evidence of the expected findings, else the facts.
fn evidence_cell(o: &Outcome) -> String {
    let mut parts: Vec<String> =
        o.found.iter().filter(|f| o.def.present.iter().any(|k| f["kind"] == *k)).map(brief).collect();
    if parts.is_empty() {
        parts = o.facts.clone();
    }
    if let Some(e) = &o.error {
        parts.push(format!("error: {e}"));
    }
    parts.join("; ")
}

fn found_cell(o: &Outcome) -> String {
    let mut kinds: Vec<&str> = Vec::new();
    for k in o.found.iter().filter_map(|f| f["kind"].as_str()) {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    if kinds.is_empty() { "(none)".to_string() } else { kinds.join(", ") }
}

fn expected_cell(o: &Outcome) -> String {
    if o.def.present.is_empty() && FindingKind::ALL.iter().all(|k| o.def.absent.contains(&k.name())) {
        return "no finding".into();
    }
    let mut parts: Vec<String> = o.def.present.iter().map(|k| (*k).to_string()).collect();
    parts.extend(o.def.absent.iter().map(|k| format!("no {k}")));
    parts.join(", ")
}

/// The results table.
pub fn table(outcomes: &[Outcome]) -> Vec<String> {
    let header = ["scenario", "expected", "found", "result", "time", "evidence"];
    let rows: Vec<[String; 6]> = outcomes
        .iter()
        .map(|o| {
            [
                o.def.name.to_string(),
                expected_cell(o),
                found_cell(o),
                if o.pass { "pass".into() } else { "FAIL".into() },
                format!("{:.1} s", o.seconds),
                evidence_cell(o),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 6]| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 5 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header)];
    out.push(line(width.map(|w| "-".repeat(w)).each_ref().map(String::as_str)).chars().take(160).collect());
    for r in &rows {
        out.push(line(r.each_ref().map(String::as_str)));
    }
    out
}

/// A finding from its JSON line, as three lines (what, evidence, remedy).
pub fn finding_lines(f: &Value) -> Vec<String> {
    let evidence = f["evidence"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k}={}", value_text(v)))
                .collect::<Vec<_>>()
                .join("  ")
        })
        .unwrap_or_default();
    vec![
        format!(
            "[{}] {}: {}",
            f["severity"].as_str().unwrap_or("?"),
            f["kind"].as_str().unwrap_or("?"),
            f["summary"].as_str().unwrap_or("")
        ),
        format!("    evidence: {evidence}"),
        format!("    remedy: {}", f["remedy"].as_str().unwrap_or("")),
    ]
}

/// A scenario's details: what it did, its checks, its findings, its log lines.
pub fn details(o: &Outcome) -> Vec<String> {
    let mut out = vec![format!(
        "== {} ({}, {:.1} s): {}",
        o.def.name,
        if o.pass { "pass" } else { "FAIL" },
        o.seconds,
        o.def.about
    )];
    out.push(format!("   expected: {}", o.def.expected));
    for c in &o.checks {
        out.push(format!("   [{}] {}", if c.ok { "ok" } else { "FAILED" }, c.what));
    }
    if let Some(e) = &o.error {
        out.push(format!("   error: {e}"));
    }
    if !o.facts.is_empty() {
        out.push(format!("   facts: {}", o.facts.join("; ")));
    }
    if o.found.is_empty() {
        out.push("   findings: none".into());
    } else {
        out.push("   findings:".into());
        for f in &o.found {
            out.extend(finding_lines(f).into_iter().map(|l| format!("   {l}")));
        }
    }
    for (title, lines) in &o.logs {
        out.push(format!("   {title} log:"));
        if lines.is_empty() {
            out.push("     (nothing)".into());
        }
        out.extend(lines.iter().map(|l| format!("     {l}")));
    }
    out
}

/// The `lab_scenario` JSON line.
pub fn scenario_json(o: &Outcome) -> Value {
    json!({
        "type": "lab_scenario",
        "scenario": o.def.name,
        "about": o.def.about,
        "expected": {"kinds": o.def.present, "absent": o.def.absent, "text": o.def.expected},
        "found": o.found,
        "checks": o.checks.iter().map(|c| json!({"check": c.what, "ok": c.ok})).collect::<Vec<_>>(),
        "facts": o.facts,
        "logs": o.logs.iter().map(|(t, l)| json!({"source": t, "lines": l})).collect::<Vec<_>>(),
        "error": o.error,
        "pass": o.pass,
        "seconds": (o.seconds * 10.0).round() / 10.0,
    })
}

/// The `lab_summary` JSON line.
pub fn summary_json(outcomes: &[Outcome], seconds: f64, interrupted: bool, agent: &str, config: &str) -> Value {
    let failed: Vec<&str> = outcomes.iter().filter(|o| !o.pass).map(|o| o.def.name).collect();
    json!({
        "type": "lab_summary",
        "scenarios": outcomes.len(),
        "passed": outcomes.len() - failed.len(),
        "failed": failed,
        "pass": failed.is_empty() && !interrupted,
        "interrupted": interrupted,
        "seconds": (seconds * 10.0).round() / 10.0,
        "agent": agent,
        "agent_config": config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::scenario::{ALL, Check};

    fn storm() -> Value {
        json!({"type": "finding", "kind": "dns_probe_storm", "severity": "warning", "summary": "s", "remedy": "r",
               "evidence": {"queries": 8, "responses": 8, "rcodes": {"SERVFAIL": 8}, "timeouts": 0,
                            "pattern": "periodic", "period_s": 1.5, "jitter_s": null, "known_probe": "cisco-anyconnect-mus"}})
    }

    #[test]
    fn brief_shows_the_key_evidence_of_a_kind() {
        assert_eq!(
            brief(&storm()),
            "queries=8 rcodes=SERVFAIL:8 pattern=periodic period_s=1.5 known_probe=cisco-anyconnect-mus"
        );
    }

    #[test]
    fn brief_says_where_a_black_hole_was_dropped() {
        let f = json!({"kind": "pmtu_black_hole", "evidence": {"retransmissions": 5, "segment_size": 1448,
                       "icmp_seen": false, "dropped_here": true, "drop_reason": "PKT_TOO_BIG",
                       "drop_interface": "pwlab-g1", "icmp_dropped_here": 20}});
        assert_eq!(
            brief(&f),
            "retransmissions=5 segment_size=1448 icmp_seen=false dropped_here=true drop_reason=PKT_TOO_BIG \
             drop_interface=pwlab-g1 icmp_dropped_here=20"
        );
    }

    #[test]
    fn a_row_per_scenario_with_its_verdict_and_the_json_says_the_same() {
        let outcome = |pass: bool| Outcome {
            def: &ALL[0],
            found: if pass { vec![storm()] } else { Vec::new() },
            checks: vec![Check { what: "dns_probe_storm found".into(), ok: pass }],
            facts: vec!["dig: 8/8 SERVFAIL".into()],
            logs: Vec::new(),
            error: None,
            pass,
            seconds: 11.26,
        };
        let rows = table(&[outcome(true), outcome(false)]);
        assert_eq!(rows.len(), 4);
        assert!(rows[2].starts_with("dns-probe-storm") && rows[2].contains(" pass ") && rows[2].contains("11.3 s"));
        assert!(rows[2].contains("known_probe=cisco-anyconnect-mus"), "{}", rows[2]);
        assert!(rows[3].contains(" FAIL ") && rows[3].contains("(none)") && rows[3].ends_with("dig: 8/8 SERVFAIL"));
        let j = scenario_json(&outcome(true));
        assert_eq!((j["type"].as_str(), j["pass"].as_bool()), (Some("lab_scenario"), Some(true)));
        assert_eq!(j["expected"]["kinds"][0], "dns_probe_storm");
        assert_eq!(j["found"][0]["kind"], "dns_probe_storm");
        let s = summary_json(&[outcome(true), outcome(false)], 20.0, false, "a", "c");
        assert_eq!(s["failed"][0], "dns-probe-storm");
        assert_eq!(s["pass"], false);
    }

    #[test]
    fn a_scenario_that_forbids_every_kind_expects_no_finding_and_one_that_forbids_some_names_them() {
        let outcome = |name: &str| Outcome {
            def: crate::lab::scenario::by_name(name).expect(name),
            found: Vec::new(),
            checks: Vec::new(),
            facts: Vec::new(),
            logs: Vec::new(),
            error: None,
            pass: true,
            seconds: 1.0,
        };
        assert_eq!(expected_cell(&outcome("https-clients")), "no finding");
        assert_eq!(
            expected_cell(&outcome("vpn-ok")),
            "no dtls_blocked, no dtls_port_unreachable, no vpn_reconnect_loop"
        );
    }
}
