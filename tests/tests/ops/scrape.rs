//! A real Prometheus scraping the live agent: what it stores equals what was sent and
//! what the agent's summary says (the drop program's counts included), and every
//! dashboard and rule expression runs on it.

use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddr},
    process::{Command, Stdio},
    time::Duration,
};

use pathwatch::lab::netns::wait_for;
use pathwatch_tests::{
    TempDir, dns_query,
    expr::{dashboard, exprs, label_values, substitute, variable_query},
    http::get_in,
    json_lines,
    metrics::{metric, samples, unbounded_labels},
    netns::udp_send,
    privileged,
    tools::ensure_tool,
};

use super::{METRICS_PORT, QUERIES, prom_api, scraped};

/// DNS queries sent to a port nobody listens on, for the drop program to count.
const DROPPED: u64 = 4;

#[test]
fn prometheus_scrapes_the_live_agent() {
    if !privileged("prometheus_scrapes_the_live_agent") {
        return;
    }
    let promtool = ensure_tool("promtool", "prometheus");
    let dir = TempDir::new("ops1");
    let mut s = scraped(1, &dir.0);
    let ns = s.net.a.name().to_string();
    let iface = s.net.a_if.clone();

    let dns_prom = prom_api(&ns).value("sum(pathwatch_packets_total{class=\"dns\"})") as u64;
    let dns_iface =
        prom_api(&ns).value(&format!("sum(pathwatch_packets_total{{class=\"dns\",iface=\"{iface}\"}})")) as u64;
    let queries = prom_api(&ns).value("pathwatch_events_total{kind=\"dns_query\"}") as u64;
    let responses = prom_api(&ns).value("pathwatch_events_total{kind=\"dns_response\"}") as u64;
    let nxdomain = prom_api(&ns).value("pathwatch_dns_responses_total{rcode=\"NXDOMAIN\"}") as u64;
    let up = prom_api(&ns).value("up{job=\"pathwatch\"}");
    let dns_rate = prom_api(&ns).value("sum(rate(pathwatch_packets_total{class=\"dns\"}[1m]))");
    eprintln!(
        "prometheus: dns packets {dns_prom} (on {iface}: {dns_iface}), dns_query {queries}, dns_response {responses}, NXDOMAIN {nxdomain}, up {up}, dns rate {dns_rate:.3}/s"
    );
    assert_eq!(up, 1.0, "up{{job=\"pathwatch\"}}");
    assert_eq!(dns_prom, 2 * QUERIES as u64, "DNS packets on {iface}: {QUERIES} queries in, {QUERIES} answers out");
    assert_eq!(dns_iface, dns_prom);
    assert_eq!(queries, QUERIES as u64, "pathwatch_events_total{{kind=\"dns_query\"}}");
    assert_eq!(responses, QUERIES as u64, "pathwatch_events_total{{kind=\"dns_response\"}}");
    assert_eq!(nxdomain, 2, "NXDOMAIN answers");
    assert!(dns_rate > 0.0, "rate() sees the DNS traffic arrive");

    // The drop program: DNS queries to an address of the agent's namespace where nobody
    // listens (on lo, so that the interface's counts above stay as they are), which
    // the kernel drops as NO_SOCKET, class dns.
    let [_, _, net_octet, _] = s.net.a_ip.octets();
    let closed = Ipv4Addr::new(198, 18, net_octet, 3);
    s.net.a.ip(&["addr", "add", &format!("{closed}/32"), "dev", "lo"]).unwrap();
    let unheard: Vec<Vec<u8>> = (0..DROPPED).map(|i| dns_query(0x5000 + i as u16, "drop.test")).collect();
    udp_send(&ns, s.net.a_ip, SocketAddr::from((closed, 53)), unheard, None, Duration::from_millis(10));
    let no_socket_dns = [("reason", "NO_SOCKET"), ("class", "dns")];
    let metrics_addr = SocketAddr::from((s.net.a_ip, METRICS_PORT));
    let mut text = String::new();
    let counted = wait_for(Duration::from_secs(10), || {
        text = get_in(&ns, metrics_addr, "/metrics").map(|(_, t)| t).unwrap_or_default();
        metric(&text, "pathwatch_drops_total", &no_socket_dns) >= DROPPED
    });
    assert!(counted, "the drop program never counted the {DROPPED} dropped DNS queries:\n{text}");
    let drop_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("pathwatch_drop")).collect();
    eprintln!("/metrics, the drop program's samples:\n{}", drop_lines.join("\n"));
    assert_eq!(metric(&text, "pathwatch_drops_total", &no_socket_dns), DROPPED, "NO_SOCKET dns drops");
    assert_eq!(metric(&text, "pathwatch_drops_watched", &[]), 1, "the drop program is attached");
    assert_eq!(metric(&text, "pathwatch_drop_events_lost_total", &[]), 0, "drop events lost");
    assert_eq!(metric(&text, "pathwatch_drop_events_suppressed_total", &[]), 0, "drop events over the rate limit");
    // Stored by Prometheus at its next scrape (the series is new: absent until then).
    let stored_query = "pathwatch_drops_total{reason=\"NO_SOCKET\",class=\"dns\"}";
    let mut stored = serde_json::Value::Null;
    let found = wait_for(Duration::from_secs(15), || {
        stored = prom_api(&ns).query(stored_query);
        stored["data"]["result"][0]["value"][1].as_str() == Some(DROPPED.to_string().as_str())
    });
    assert!(found, "Prometheus never stored {DROPPED} NO_SOCKET dns drops: {stored}");

    // /metrics itself: what Prometheus stored, and clean for promtool (with the drop
    // families and their series).
    let (status, text) = get_in(&ns, metrics_addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(metric(&text, "pathwatch_drops_total", &no_socket_dns), DROPPED);
    assert_eq!(
        metric(&text, "pathwatch_packets_total", &[("class", "dns")]),
        dns_prom,
        "/metrics and Prometheus disagree"
    );
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let check = check.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success() && said.is_empty(), "promtool check metrics ({}):\n{said}", check.status);
    // Labels carry bounded values only: none of the addresses or names that went by.
    let sent: Vec<String> = [
        s.net.a_ip.to_string(),
        s.net.b_ip.to_string(),
        Ipv4Addr::new(198, 18, net_octet, 9).to_string(),
        closed.to_string(),
        "ok.test".into(),
        "nx.test".into(),
        "drop.test".into(),
    ]
    .into();
    let problems = unbounded_labels(&text, &sent);
    assert!(problems.is_empty(), "/metrics labels:\n{}", problems.join("\n"));
    assert!(samples(&text).len() > 50, "too few samples to say anything:\n{text}");
    // Lost events by source: ringbuf, queue (no userspace queue: always 0) and
    // undecodable records; none in this run.
    let lost: Vec<(String, f64)> = samples(&text)
        .into_iter()
        .filter(|x| x.name == "pathwatch_events_lost_total")
        .map(|x| (x.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","), x.value))
        .collect();
    let want = ["source=ringbuf", "source=queue", "source=undecodable"].map(|l| (l.to_string(), 0.0));
    assert_eq!(lost, want, "pathwatch_events_lost_total");
    let help = text.lines().find(|l| l.starts_with("# HELP pathwatch_events_lost_total ")).expect("HELP");
    assert!(help.contains("queue = ") && help.contains("always 0") && help.contains("undecodable = "), "{help}");
    let (status, body) = get_in(&ns, metrics_addr, "/healthz").unwrap();
    assert_eq!((status, body.trim()), (200, "ok"), "/healthz");
    let (status, _) = get_in(&ns, metrics_addr, "/nothing-here").unwrap();
    assert_eq!(status, 404, "a path other than /metrics and /healthz");

    // The agent's own summary for the same interface.
    assert_eq!(s.agent.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", s.agent.logs());
    let lines = json_lines(&std::fs::read_to_string(&s.json).unwrap());
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    let i = &summary["interfaces"][&iface];
    let dns_summary =
        i["ingress"]["packets"]["dns"].as_u64().unwrap() + i["egress"]["packets"]["dns"].as_u64().unwrap();
    assert_eq!(dns_summary, dns_prom, "summary vs Prometheus, DNS packets on {iface}");
    assert_eq!(summary["classes"]["dns"].as_u64(), Some(dns_prom));
    assert_eq!(summary["events"]["dns_query"].as_u64(), Some(queries));
    assert_eq!(summary["events"]["dns_response"].as_u64(), Some(responses));
    let drops = &summary["drops"];
    assert_eq!(drops["watching"], true, "{drops}");
    let by = drops["by_reason_class"].as_array().unwrap();
    let no_socket = by.iter().find(|d| d["reason"] == "NO_SOCKET" && d["class"] == "dns");
    assert_eq!(no_socket.and_then(|d| d["count"].as_u64()), Some(DROPPED), "summary vs /metrics, drops: {drops}");
    drop(s.prom);
}

// ---------------------------------------------------------------------------------
// The dashboard's and the rules' expressions on the live agent's data.

#[test]
fn dashboard_and_rules_run_on_the_live_agent() {
    if !privileged("dashboard_and_rules_run_on_the_live_agent") {
        return;
    }
    let dir = TempDir::new("ops2");
    let s = scraped(2, &dir.0);
    let ns = s.net.a.name().to_string();

    let dashboard = dashboard();
    let found = exprs(&dashboard, "$");
    assert!(found.len() >= 10, "only {} expressions in the dashboard", found.len());
    let mut empty = Vec::new();
    for (at, expr) in &found {
        let q = substitute(expr);
        let v = prom_api(&ns).query(&q);
        assert_eq!(v["status"], "success", "{at}: the dashboard query\n    {q}\nfails on the live agent's data: {v}");
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        if result.is_empty() {
            empty.push(q.clone());
        }
        // The packets panel shows the DNS traffic that was sent.
        if q.starts_with("sum by (direction, class) (rate(pathwatch_packets_total") {
            let dns_in = result.iter().find(|r| r["metric"]["class"] == "dns" && r["metric"]["direction"] == "ingress");
            let rate: f64 = dns_in.and_then(|r| r["value"][1].as_str()).and_then(|x| x.parse().ok()).unwrap_or(0.0);
            assert!(rate > 0.0, "{at}: no DNS ingress rate on the packets panel: {v}");
        }
    }
    // Only the firing-alerts panel may be empty on a healthy agent.
    assert!(empty.iter().all(|q| q.starts_with("ALERTS")), "dashboard queries that find no live data: {empty:#?}");
    // The template variables (`label_values(SELECTOR, LABEL)`) find this agent and
    // its interface.
    for v in dashboard["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
        let query = variable_query(v).expect("variable query");
        let (selector, label) = label_values(query);
        let selector = substitute(&selector);
        let r = prom_api(&ns).query(&selector);
        let values: Vec<&str> =
            r["data"]["result"].as_array().unwrap().iter().filter_map(|x| x["metric"][&label].as_str()).collect();
        assert!(!values.is_empty(), "variable {}: {selector} finds no {label}", v["name"]);
        if label == "iface" {
            assert!(values.contains(&s.net.a_if.as_str()), "variable iface: {values:?}");
        }
    }

    // The rules as Prometheus loaded them: every one evaluated healthy on live data.
    let mut rules = Vec::new();
    let evaluated = wait_for(Duration::from_secs(15), || {
        let v = prom_api(&ns).api("rules");
        rules = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown")
    });
    assert!(evaluated, "rules not evaluated: {rules:?}");
    for r in &rules {
        let name = r["name"].as_str().unwrap();
        assert_eq!(r["health"], "ok", "rule {name}: {}", r["lastError"]);
        let q = r["query"].as_str().unwrap();
        let v = prom_api(&ns).query(q);
        assert_eq!(v["status"], "success", "rule {name}: {q}: {v}");
    }
    // The recording rule for packets carries the live interface.
    let recorded = wait_for(Duration::from_secs(10), || {
        prom_api(&ns).query(&format!(
            "iface_direction_class:pathwatch_packets:rate5m{{class=\"dns\",iface=\"{}\"}} > 0",
            s.net.a_if
        ))["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    assert!(recorded, "the recording rule never saw the DNS traffic");
    // A healthy agent fires nothing (the probe storm etc. need minutes; up == 1).
    let firing = prom_api(&ns).query("ALERTS{alertname=~\"Pathwatch.*\",alertstate=\"firing\"}");
    assert_eq!(firing["data"]["result"].as_array().map(Vec::len), Some(0), "{firing}");
    eprintln!("{} dashboard expressions and {} rules ran on the live agent's data", found.len(), rules.len());
}
