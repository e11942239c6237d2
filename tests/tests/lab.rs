//! `pathwatch lab` end to end: every scenario, with real daemons in network
//! namespaces and the agent live on the lab gateway, meets its expectation; and a
//! run removes what a dead run left behind.

use std::{
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use pathwatch::lab::{PREFIX, netns};
use pathwatch_tests::{json_lines, pathwatch, privileged};
use serde_json::Value;

/// The lab owns the `pwlab-` namespaces: one run at a time, whatever the test threads.
static LAB: Mutex<()> = Mutex::new(());

fn lab_lock() -> std::sync::MutexGuard<'static, ()> {
    LAB.lock().unwrap_or_else(|e| e.into_inner())
}

fn kinds(s: &Value) -> Vec<&str> {
    s["found"].as_array().map(|a| a.iter().filter_map(|f| f["kind"].as_str()).collect()).unwrap_or_default()
}

/// Every lab scenario, in the order the lab runs them.
const SCENARIOS: [&str; 11] = [
    "dns-probe-storm",
    "vpn-ok",
    "dtls-blocked",
    "dtls-blocked-beyond",
    "dtls-port-mismatch",
    "pmtu-black-hole",
    "pmtu-black-hole-beyond",
    "pmtu-ok",
    "https-clients",
    "vpn-reconnect-loop",
    "dns-resolver-outage",
];

#[test]
fn lab_all_scenarios() {
    if !privileged("lab_all_scenarios") {
        return;
    }
    let _one = lab_lock();
    let t0 = Instant::now();
    let (code, stdout, stderr) = pathwatch(&["lab", "--json", "-"]);
    let took = t0.elapsed();
    eprintln!("{stderr}");
    let lines = json_lines(&stdout);
    let scenarios: Vec<&Value> = lines.iter().filter(|l| l["type"] == "lab_scenario").collect();
    let names: Vec<&str> = scenarios.iter().filter_map(|s| s["scenario"].as_str()).collect();
    assert_eq!(names, SCENARIOS, "{stdout}");
    for s in &scenarios {
        let name = s["scenario"].as_str().unwrap_or("?");
        let found = kinds(s);
        assert_eq!(s["pass"], true, "{name} did not meet its expectation: {s:#}");
        for k in s["expected"]["kinds"].as_array().expect("expected.kinds") {
            assert!(found.contains(&k.as_str().unwrap_or("")), "{name}: {k} not found in {found:?}");
        }
        for k in s["expected"]["absent"].as_array().expect("expected.absent") {
            assert!(!found.contains(&k.as_str().unwrap_or("")), "{name}: {k} found: {s:#}");
        }
    }
    let vpn_ok = scenarios.iter().find(|s| s["scenario"] == "vpn-ok").expect("vpn-ok");
    assert!(kinds(vpn_ok).iter().all(|k| !k.starts_with("dtls_") && *k != "vpn_reconnect_loop"), "{vpn_ok:#}");
    let pmtu_ok = scenarios.iter().find(|s| s["scenario"] == "pmtu-ok").expect("pmtu-ok");
    assert!(!kinds(pmtu_ok).contains(&"pmtu_black_hole"), "{pmtu_ok:#}");
    // The same diagnosis whether the fault is on the agent's host or one hop beyond;
    // only the attribution differs.
    for (name, kind, here) in [
        ("dtls-blocked", "dtls_blocked", true),
        ("dtls-blocked-beyond", "dtls_blocked", false),
        ("pmtu-black-hole", "pmtu_black_hole", true),
        ("pmtu-black-hole-beyond", "pmtu_black_hole", false),
    ] {
        let s = scenarios.iter().find(|s| s["scenario"] == name).expect(name);
        let f = s["found"].as_array().into_iter().flatten().find(|f| f["kind"] == kind).expect(kind);
        assert_eq!(f["evidence"]["dropped_here"], here, "{name}: {f:#}");
        assert_eq!(kinds(s).contains(&"local_icmp_suppressed"), name == "pmtu-black-hole", "{name}: {s:#}");
    }
    let https = scenarios.iter().find(|s| s["scenario"] == "https-clients").expect("https-clients");
    assert!(kinds(https).is_empty(), "ordinary HTTPS gave findings: {https:#}");
    let outage = scenarios.iter().find(|s| s["scenario"] == "dns-resolver-outage").expect("dns-resolver-outage");
    assert!(!kinds(outage).contains(&"dns_probe_storm"), "{outage:#}");
    let summary = lines.last().expect("a summary line");
    assert_eq!(summary["type"], "lab_summary");
    assert_eq!(summary["pass"], true, "{summary:#}");
    assert_eq!(code, 0, "exit code");
    assert!(netns::netns_with_prefix(PREFIX).is_empty(), "namespaces left: {:?}", netns::netns_with_prefix(PREFIX));
    assert!(took < Duration::from_secs(300), "the lab took {took:?} (limit 5 minutes)");
}

/// A stale process in a leftover namespace, killed by PID if the test ends early.
struct Stale(Option<std::process::Child>);

impl Drop for Stale {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        netns::remove_netns("pwlab-gw");
    }
}

#[test]
fn lab_removes_the_leftovers_of_a_dead_run() {
    if !privileged("lab_removes_the_leftovers_of_a_dead_run") {
        return;
    }
    let _one = lab_lock();
    // What a `kill -9` of a lab run leaves: its gateway namespace, a process in it.
    netns::remove_netns("pwlab-gw");
    netns::ip(&["netns", "add", "pwlab-gw"]).expect("ip netns add pwlab-gw");
    let child = Command::new("ip")
        .args(["netns", "exec", "pwlab-gw", "sleep", "120"])
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep in pwlab-gw");
    let mut stale = Stale(Some(child));
    assert!(netns::wait_for(Duration::from_secs(5), || !netns::pids_in("pwlab-gw").is_empty()));

    let (code, stdout, stderr) = pathwatch(&["lab", "dns-probe-storm", "--json", "-"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("removed leftovers") && stderr.contains("pwlab-gw"), "{stderr}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.iter().filter(|l| l["type"] == "lab_scenario" && l["pass"] == true).count(), 1, "{stdout}");
    let exited = stale.0.as_mut().expect("child").try_wait().expect("try_wait");
    assert!(exited.is_some(), "the stale process in pwlab-gw is still running");
    assert!(netns::netns_with_prefix(PREFIX).is_empty(), "namespaces left: {:?}", netns::netns_with_prefix(PREFIX));
}

#[test]
fn lab_names_the_scenarios_when_given_an_unknown_one() {
    let (code, _, stderr) = pathwatch(&["lab", "no-such-scenario"]);
    assert_eq!(code, 2, "{stderr}");
    for name in SCENARIOS {
        assert!(stderr.contains(name), "{stderr}");
    }
}
