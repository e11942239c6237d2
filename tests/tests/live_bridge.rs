//! One packet seen twice is one packet, live: an agent watching a bridge port and the
//! bridge itself sees every query to a resolver on the bridge host twice (XDP on the
//! port, then XDP on the bridge for local delivery) and every answer twice (TC egress
//! on the bridge, then on the port). The copies are counted as `duplicates` and are no
//! evidence: the storm counts each query once. Its twin, with the duplicate window at
//! 0, shows the same traffic counted twice, so the first test can fail.

use std::{path::Path, time::Duration};

use pathwatch::lab::{
    agent::{Agent, AgentReport},
    netns::{NetNs, netns_with_prefix, veth},
    resolver::Resolver,
    traffic,
    workdir::WorkDir,
};
use pathwatch_tests::{bin, lab_tools, privileged};

const BRIDGE_V4: &str = "198.18.6.1";
const CLIENT_V4: &str = "198.18.6.2";
/// Queries the client sends, one a second.
const QUERIES: usize = 8;

/// The gateway namespace (a bridge with one port) and the client behind that port.
struct BridgeLab {
    client: NetNs,
    gw: NetNs,
}

impl BridgeLab {
    fn build(prefix: &str) -> BridgeLab {
        let gw = NetNs::new(&format!("{prefix}gw")).expect("gateway namespace");
        let client = NetNs::new(&format!("{prefix}c")).expect("client namespace");
        veth(&gw, "port0", &client, "c0").expect("veth");
        for args in [
            &["link", "add", "br0", "type", "bridge"][..],
            &["link", "set", "port0", "master", "br0"],
            &["link", "set", "br0", "up"],
            &["addr", "add", &format!("{BRIDGE_V4}/24"), "dev", "br0"],
        ] {
            gw.ip(args).expect("bridge");
        }
        client.ip(&["addr", "add", &format!("{CLIENT_V4}/24"), "dev", "c0"]).expect("client address");
        BridgeLab { client, gw }
    }
}

/// Runs the agent on the port and the bridge while the client asks a failing name
/// once a second, and returns its report.
fn storm_through_a_bridge(tag: &str, config: &str) -> AgentReport {
    lab_tools();
    let prefix = format!("pwt-{tag}-");
    let dir =
        WorkDir::at(&std::env::temp_dir().join(format!("pathwatch-{tag}-{}", std::process::id()))).expect("work dir");
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, config).expect("agent config");
    let lab = BridgeLab::build(&prefix);
    let resolver = Resolver::start(&lab.gw, dir.path(), BRIDGE_V4).expect("unbound + dnsmasq");
    let agent =
        Agent::start(&lab.gw, &bin(), &["port0", "br0"], Some(Path::new(&config_path)), dir.path()).expect("agent");
    let digs = traffic::dig_every(&lab.client, BRIDGE_V4, "probe.example.com", "A", Duration::from_secs(1), QUERIES)
        .expect("dig");
    assert!(digs.iter().all(|d| d.status == "SERVFAIL"), "{digs:?}");
    let report = agent.stop();
    assert_eq!(report.exit, Some(0), "agent exit: {}", report.log);
    drop(resolver);
    drop(lab);
    drop(dir);
    assert!(netns_with_prefix(&prefix).is_empty(), "namespaces left: {:?}", netns_with_prefix(&prefix));
    report
}

/// The storm's `queries` and the summary's `duplicates` and `dns_query` count.
fn storm_counts(report: &AgentReport) -> (u64, u64, u64) {
    let summary = report.summary.as_ref().expect("summary line");
    let storms = report.of_kind("dns_probe_storm");
    assert_eq!(storms.len(), 1, "{:#?}", report.findings);
    assert_eq!(storms[0]["subject"]["client"], CLIENT_V4);
    (
        storms[0]["evidence"]["queries"].as_u64().expect("queries"),
        summary["duplicates"].as_u64().expect("duplicates"),
        summary["events"]["dns_query"].as_u64().expect("dns_query"),
    )
}

#[test]
fn a_query_seen_on_a_bridge_port_and_on_the_bridge_is_counted_once() {
    if !privileged("a_query_seen_on_a_bridge_port_and_on_the_bridge_is_counted_once") {
        return;
    }
    let report = storm_through_a_bridge("brdup", "");
    let (queries, duplicates, query_packets) = storm_counts(&report);
    assert_eq!(query_packets, 2 * QUERIES as u64, "the port and the bridge each count every query packet");
    assert_eq!(queries, QUERIES as u64, "each query is evidence once");
    // Every query and every answer was seen twice.
    assert_eq!(duplicates, 2 * QUERIES as u64, "{:?}", report.summary);
}

#[test]
fn with_the_duplicate_window_at_zero_the_same_queries_count_twice() {
    if !privileged("with_the_duplicate_window_at_zero_the_same_queries_count_twice") {
        return;
    }
    let report = storm_through_a_bridge("brtwice", "[events]\nduplicate_window_s = 0\n");
    let (queries, duplicates, _) = storm_counts(&report);
    assert_eq!((queries, duplicates), (2 * QUERIES as u64, 0), "{:?}", report.summary);
}
