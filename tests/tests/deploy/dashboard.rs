//! The Grafana dashboard: its structure, and every expression of it and of the rules
//! run on a real Prometheus scraping the stand-in exporter.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use pathwatch_tests::{
    TempDir, deploy_file,
    expr::{dashboard, exprs, label_values, substitute, variable_query},
    prometheus::{self, Api},
    tools::tool,
};
use serde_json::Value;

use super::{
    ALERTS, METRICS,
    exporter::{FakeExporter, free_port},
};

/// A Prometheus server child process, killed by its PID when dropped (also when the
/// test panics), then its data directory removed.
struct Prometheus {
    child: Child,
    api: Api,
    log: PathBuf,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus with `rule_file` and one scrape job `pathwatch` on
    /// 127.0.0.1:`target_port`, and waits until it is ready.
    fn start(prometheus: &str, name: &str, rule_file: &Path, target_port: u16) -> Prometheus {
        let dir = TempDir::new(name);
        let config = dir.0.join("prometheus.yml");
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, target_port));
        std::fs::write(&config, prometheus::config(rule_file, target)).expect("write prometheus.yml");
        let log = dir.0.join("prometheus.log");
        let logfile = std::fs::File::create(&log).expect("prometheus log");
        let port = free_port();
        let child = Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("log fd"))
            .stderr(logfile)
            .spawn()
            .expect("start prometheus");
        let api = Api::at(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        let mut p = Prometheus { child, api, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}) before it was ready:\n{}", p.log());
            }
            if p.api.ready() {
                return p;
            }
            assert!(Instant::now() < deadline, "prometheus not ready within 60 s:\n{}", p.log());
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/api/v1/<path>`, parsed.
    fn api(&self, path: &str) -> Value {
        self.api.api(path)
    }

    /// An instant query: the result vector, or a panic naming `what` and the error.
    fn query(&self, what: &str, expr: &str) -> Vec<Value> {
        self.api.results(what, expr)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn grafana_dashboard_structure() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(d["uid"].is_string() && d["title"].is_string(), "uid and title");

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var =
        |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no template variable {name}"));
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let query_of = |v: &Value| v["query"].as_str().or_else(|| v["query"]["query"].as_str()).map(str::to_string);
    assert_eq!(query_of(var("instance")).as_deref(), Some("label_values(pathwatch_packets_total, instance)"));
    assert_eq!(
        query_of(var("iface")).as_deref(),
        Some("label_values(pathwatch_packets_total{instance=~\"$instance\"}, iface)")
    );

    let mut ids = BTreeSet::new();
    let mut all = Vec::new();
    let panels = d["panels"].as_array().expect("panels");
    for p in panels.iter().flat_map(|p| std::iter::once(p).chain(p["panels"].as_array().into_iter().flatten())) {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id in {title}");
        let g = &p["gridPos"];
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24, "{title}: wider than the grid");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: panel datasource");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}: target datasource");
            let e = t["expr"].as_str().unwrap_or_else(|| panic!("{title}: target without expr"));
            assert!(e.contains("instance=~\"$instance\""), "{title}: not filtered by $instance: {e}");
            if e.contains("pathwatch_packets_total") || e.contains("pathwatch_bytes_total") {
                assert!(e.contains("iface=~\"$iface\""), "{title}: not filtered by $iface: {e}");
            }
            all.push(e.to_string());
        }
    }
    for m in METRICS {
        assert!(all.iter().any(|e| e.contains(m)), "no dashboard panel shows {m}");
    }
    // The panels the dashboard is for.
    let titles: Vec<String> =
        panels.iter().filter_map(|p| p["title"].as_str()).map(str::to_lowercase).collect::<Vec<_>>();
    for want in [
        "packets/s",
        "bytes/s",
        "events/s by kind",
        "lost events",
        "host drops/s by reason and class",
        "watching host drops",
        "dns responses",
        "active findings",
        "tracked entries",
        "evictions",
    ] {
        assert!(titles.iter().any(|t| t.contains(want)), "no panel titled like {want:?}");
    }
}

#[test]
fn dashboard_and_rule_queries_run_on_prometheus() {
    let test = "dashboard_and_rule_queries_run_on_prometheus";
    let Some(prometheus) = tool(test, "prometheus", "prometheus") else { return };
    let exporter = FakeExporter::start();
    let prom = Prometheus::start(
        &prometheus,
        "deploy-prometheus",
        &deploy_file("prometheus/pathwatch-rules.yml"),
        exporter.port,
    );

    // Two scrapes at least, so rate() has something to say.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = prom.query("up", "up{job=\"pathwatch\"} == 1");
        let rate = prom.query("rate", "rate(pathwatch_packets_total[1m])");
        if !up.is_empty() && !rate.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape the stand-in exporter twice in 60 s:\n{}",
            prom.log()
        );
        thread::sleep(Duration::from_millis(250));
    }

    // The dashboard: every expression runs and (but for the alert annotation) finds data.
    let d = dashboard();
    let found = exprs(&d, "$");
    assert!(found.len() >= 10, "only {} expressions in the dashboard", found.len());
    for (at, expr) in &found {
        let q = substitute(expr);
        let result = prom.query(at, &q);
        if !expr.contains("ALERTS") {
            assert!(
                !result.is_empty(),
                "{at}: the query\n    {q}\nreturns nothing on data that follows the metric contract"
            );
        }
    }
    // The template variables' selectors.
    for v in d["templating"]["list"].as_array().expect("templating") {
        if v["type"] != "query" {
            continue;
        }
        let query = variable_query(v).expect("variable query");
        let (selector, label) = label_values(query);
        let result = prom.query(query, &substitute(&selector));
        assert!(!result.is_empty(), "variable {}: {selector} selects nothing", v["name"]);
        for s in &result {
            assert!(s["metric"][&label].is_string(), "variable {}: a series without {label}: {s}", v["name"]);
        }
    }
    println!("{} dashboard expressions ran on Prometheus", found.len());

    // The rules as Prometheus loaded them: each expression runs, each evaluation is
    // healthy, and each alert carries severity, summary, description and runbook.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rules = loop {
        let v = prom.api("rules");
        assert_eq!(v["status"], "success", "{v}");
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown") {
            break rules;
        }
        assert!(Instant::now() < deadline, "rules not evaluated within 60 s: {v}\n{}", prom.log());
        thread::sleep(Duration::from_millis(250));
    };
    for r in &rules {
        let name = r["name"].as_str().expect("rule name");
        assert_eq!(r["health"], "ok", "rule {name}: {}", r["lastError"]);
        prom.query(name, r["query"].as_str().expect("rule query"));
    }
    let alerting: Vec<&Value> = rules.iter().filter(|r| r["type"] == "alerting").collect();
    for a in ALERTS {
        assert!(alerting.iter().any(|r| r["name"] == *a), "Prometheus did not load alert {a}");
    }
    for r in &alerting {
        let name = r["name"].as_str().unwrap();
        let sev = r["labels"]["severity"].as_str().unwrap_or_else(|| panic!("{name}: no severity label"));
        assert!(["info", "warning", "critical"].contains(&sev), "{name}: severity {sev}");
        for k in ["summary", "description", "runbook"] {
            let text = r["annotations"][k].as_str().unwrap_or("");
            assert!(text.len() > 10, "{name}: no {k} annotation");
        }
    }
    let runbook = |a: &str| {
        alerting.iter().find(|r| r["name"] == a).expect("alert")["annotations"]["runbook"].as_str().unwrap().to_string()
    };
    let pmtu_severity =
        alerting.iter().find(|r| r["name"] == "PathwatchPmtuBlackHole").expect("alert")["labels"]["severity"].clone();
    assert_eq!(pmtu_severity, "critical");
    // The remedies of DESIGN.md, quoted.
    assert!(runbook("PathwatchDnsProbeStorm").contains("Make mus.cisco.com resolvable (DNS entry or hosts file)"));
    assert!(runbook("PathwatchDnsResolverOutage").contains("Check the resolver named in the finding"));
    assert!(runbook("PathwatchDtlsBlocked").contains("allow UDP 443 to the VPN server / fix the DTLS port"));
    let pmtu = runbook("PathwatchPmtuBlackHole");
    assert!(
        pmtu.contains("Let ICMP fragmentation-needed through or clamp the TCP MSS")
            && pmtu.contains("tcp option maxseg size set")
    );
    assert!(runbook("PathwatchLocalIcmpSuppressed").contains("Allow the ICMP errors this host sends out of the chain"));
    assert!(runbook("PathwatchEventsLost").contains("the agent's ring buffer overflows: raise kernel.ringbuf_bytes"));
    println!("{} rules loaded and evaluated by Prometheus", rules.len());
    drop(prom);
    drop(exporter);
}
