//! The Prometheus alert rules and the example configuration, as promtool sees them.

use std::{collections::BTreeSet, time::Duration};

use pathwatch_tests::{
    deploy_file, repo,
    tools::{run, tool},
};

use super::{ALERTS, read};

/// The alert names in a rules file (`- alert: Name` lines).
fn alert_names(rules: &str) -> Vec<String> {
    rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(|n| n.trim().to_string()).collect()
}

// ---------------------------------------------------------------------------------
// Prometheus rules and configuration.

#[test]
fn prometheus_rules_check_and_unit_tests() {
    let Some(promtool) = tool("prometheus_rules_check_and_unit_tests", "promtool", "prometheus") else { return };
    let limit = Duration::from_secs(120);
    let check = run(&promtool, &["check", "rules", "deploy/prometheus/pathwatch-rules.yml"], &repo(), limit);
    assert!(check.ok() && check.stdout.contains("SUCCESS"), "promtool check rules:\n{}", check.text());
    println!("{}", check.stdout.trim());

    let test = run(&promtool, &["test", "rules", "deploy/prometheus/pathwatch-rules-test.yml"], &repo(), limit);
    assert!(test.ok() && test.stdout.contains("SUCCESS"), "promtool test rules:\n{}", test.text());
    println!("{}", test.stdout.trim());

    // Every alert is tested firing (a non-empty exp_alerts) and not firing (exp_alerts: []).
    let alerts = alert_names(&read(&deploy_file("prometheus/pathwatch-rules.yml")));
    for a in ALERTS {
        assert!(alerts.iter().any(|x| x == a), "pathwatch-rules.yml has no alert {a}");
    }
    let tests = read(&deploy_file("prometheus/pathwatch-rules-test.yml"));
    let (mut firing, mut silent) = (BTreeSet::new(), BTreeSet::new());
    let mut current: Option<String> = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:").or_else(|| line.strip_prefix("- alertname:")) {
            current = Some(name.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = current.clone().expect("exp_alerts before any alertname");
            let rest = rest.split('#').next().unwrap_or("").trim();
            if rest == "[]" {
                silent.insert(name);
            } else {
                assert!(rest.is_empty(), "unexpected exp_alerts form: {line}");
                firing.insert(name);
            }
        }
    }
    for a in &alerts {
        assert!(firing.contains(a), "pathwatch-rules-test.yml never shows {a} firing");
        assert!(silent.contains(a), "pathwatch-rules-test.yml never shows {a} not firing (exp_alerts: [])");
    }
}

#[test]
fn prometheus_example_config_checks() {
    let Some(promtool) = tool("prometheus_example_config_checks", "promtool", "prometheus") else { return };
    let out =
        run(&promtool, &["check", "config", "deploy/prometheus/prometheus.yml"], &repo(), Duration::from_secs(120));
    assert!(out.ok(), "promtool check config:\n{}", out.text());
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("is valid prometheus config file"), "{}", out.text());
    assert!(
        text.contains("SUCCESS: 1 rule files found"),
        "prometheus.yml should load pathwatch-rules.yml:\n{}",
        out.text()
    );
    let config = read(&deploy_file("prometheus/prometheus.yml"));
    assert!(
        config.contains("job_name: pathwatch"),
        "the scrape job must be named pathwatch (the up/absent alerts use it)"
    );
}
