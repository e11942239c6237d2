//! The configuration file in operation: mistakes pointed at by FILE:LINE:COL, and
//! SIGHUP, which reloads it without re-attaching and reopens the `--json` file.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use pathwatch::lab::netns::wait_for;
use pathwatch_tests::{
    TempDir, bin, dns_query,
    http::get_in,
    json_lines,
    metrics::metric,
    netns::{spawn_in_netns, udp_send, udp_send_here},
    pathwatch, privileged,
    proc::Proc,
    procfs::links_of,
};
use serde_json::Value;

use super::{METRICS_PORT, agent, pair};

#[test]
fn config_errors_point_at_file_line_and_column() {
    let dir = TempDir::new("ops4");
    let cases = [
        (
            "unknown-key.toml",
            "[dns]\ntimeout_s = 5.0\ntimout = 3\n",
            "3:1",
            "unknown field `timout`, expected one of `ports`, `timeout_s`",
        ),
        ("wrong-type.toml", "[dtls]\ntimeout_s = \"ten\"\n", "2:13", "expected a positive number of seconds"),
        (
            "negative.toml",
            "[output]\nreport_interval_s = 10\n\n[dns]\ntimeout_s = -5\n",
            "5:13",
            "-5 is not allowed here: expected a positive number of seconds",
        ),
        (
            "cap-zero.toml",
            "[dns]\ntimeout_s = 5.0\n\n[pmtu]\nflows_cap = 0\n",
            "5:13",
            "0 is not allowed here: expected a capacity from 1 to 100000000",
        ),
    ];
    let pcap = dir.0.join("never-read.pcap");
    for (name, text, at, allowed) in cases {
        let file = dir.0.join(name);
        std::fs::write(&file, text).unwrap();
        let f = file.to_str().unwrap();
        let want = format!("{f}:{at}: ");
        for args in [
            vec!["run", "-i", "lo", "--config", f],
            vec!["replay", "--config", f, pcap.to_str().unwrap()],
            vec!["config", "check", f],
        ] {
            let (code, out, err) = pathwatch(&args);
            assert_eq!(code, 2, "pathwatch {args:?}: exit code\n{err}");
            assert!(err.contains(&want), "pathwatch {args:?}: stderr lacks {want:?}:\n{err}");
            assert!(err.contains(allowed), "pathwatch {args:?}: stderr does not say {allowed:?}:\n{err}");
            assert!(out.trim().is_empty(), "pathwatch {args:?}: stdout: {out}");
        }
        eprintln!("{}", pathwatch(&["config", "check", f]).2.trim());
    }
}

// ---------------------------------------------------------------------------------
// SIGHUP reloads the configuration without re-attaching: the DNS ports (kernel),
//    a detector threshold, and the stats interval.

/// The test's configuration: `ports`, `storm_min_queries` and `report_interval_s`
/// vary; queries time out after 0.3 s.
fn hup_config(ports: &str, storm_min_queries: u32, report_interval_s: f64) -> String {
    format!(
        "[dns]\nports = [{ports}]\ntimeout_s = 0.3\nstorm_min_queries = {storm_min_queries}\n\n\
         [output]\nreport_interval_s = {report_interval_s}\n"
    )
}

#[test]
fn sighup_reloads_dns_ports_without_reattaching() {
    if !privileged("sighup_reloads_dns_ports_without_reattaching") {
        return;
    }
    let dir = TempDir::new("ops5");
    let net = pair(5);
    let config = dir.0.join("pathwatch.toml");
    // Stats every minute (none during the test), storms from 50 queries.
    std::fs::write(&config, hup_config("", 50, 60.0)).unwrap();
    let cfg = config.to_str().unwrap().to_string();
    let mut a = agent(
        &net.a,
        &[],
        &bin(),
        &["run", "-i", &net.a_if, "--metrics", &METRICS_PORT.to_string(), "--config", &cfg],
        &dir.0,
    );
    let ns = net.a.name().to_string();
    let metrics_at = SocketAddr::from((Ipv4Addr::LOCALHOST, METRICS_PORT));
    let count = |class: &str| {
        let (status, text) = get_in(&ns, metrics_at, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        metric(
            &text,
            "pathwatch_packets_total",
            &[("iface", net.a_if.as_str()), ("direction", "ingress"), ("class", class)],
        )
    };
    let scrape = |name: &str, labels: &[(&str, &str)]| {
        let (status, text) = get_in(&ns, metrics_at, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        metric(&text, name, labels)
    };
    let storms = || scrape("pathwatch_findings_total", &[("kind", "dns_probe_storm")]);
    let stats_lines = |a: &Proc| a.stdout().lines().filter(|l| l.starts_with("stats: ")).count();
    // Queries to port 53, where nobody listens: each fails, answered by ICMP port
    // unreachable or (past the kernel's ICMP rate limit) timing out after 0.3 s. They
    // are 0.2 s apart, so that three of them span more than the timeout, as a storm
    // must.
    let failing = |name: &str, n: u16| {
        let p: Vec<Vec<u8>> = (0..n).map(|i| dns_query(0x700 + i, name)).collect();
        let to = SocketAddr::from((net.a_ip, 53));
        udp_send(net.b.name(), net.b_ip, to, p, None, Duration::from_millis(200));
    };

    let to = SocketAddr::from((net.a_ip, 5353));
    let mut id = 0x500u16;
    let mut send = |n: usize| {
        let p: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                id += 1;
                dns_query(id, "hup.test")
            })
            .collect();
        udp_send(net.b.name(), net.b_ip, to, p, None, Duration::ZERO);
    };

    // Port 5353 is not DNS yet.
    send(3);
    assert!(
        wait_for(Duration::from_secs(3), || count("other") >= 3),
        "5353 traffic not counted as other: {}",
        count("other")
    );
    assert_eq!(count("dns"), 0, "5353 is not a DNS port yet");
    let links = links_of(a.pid());
    assert!(
        links.iter().any(|l| l.link_type() == Some("xdp")) && links.iter().any(|l| l.link_type() == Some("tcx")),
        "{links:?}"
    );

    // Four failing queries for one name are no storm while 50 are needed.
    failing("quiet.test", 4);
    let failed = || {
        scrape("pathwatch_dns_timeouts_total", &[])
            + scrape("pathwatch_events_total", &[("kind", "icmp_port_unreachable")])
    };
    assert!(
        wait_for(Duration::from_secs(3), || failed() >= 4),
        "the queries never failed (timeouts + ICMP port unreachable): {}",
        failed()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(storms(), 0, "a storm below the threshold:\n{}", a.logs());
    assert_eq!(stats_lines(&a), 0, "a stats line before the 60 s interval:\n{}", a.logs());

    // Now it is, within a second of the SIGHUP; storms need 3 queries, and stats
    // lines come every 0.25 s.
    std::fs::write(&config, hup_config("5353", 3, 0.25)).unwrap();
    let stats_before = stats_lines(&a);
    let dns_before = count("dns");
    let t0 = Instant::now();
    a.signal(libc::SIGHUP);
    let mut took = None;
    for _ in 0..40 {
        send(1);
        if count("dns") > dns_before {
            took = Some(t0.elapsed());
            break;
        }
        if t0.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let took = took.unwrap_or_else(|| panic!("5353 never counted as DNS after SIGHUP:\n{}", a.logs()));
    eprintln!("5353 classified as DNS {} ms after SIGHUP", took.as_millis());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        wait_for(Duration::from_secs(2), || a.stderr().contains(&format!("notice: SIGHUP: reloaded {cfg}"))),
        "{}",
        a.logs()
    );
    assert_eq!(links_of(a.pid()), links, "the bpf links changed across SIGHUP");
    assert!(!a.stderr().contains("apply only at the next start"), "{}", a.logs());

    // The new stats interval: lines every 0.25 s from the reload on.
    assert!(
        wait_for(Duration::from_secs(3), || stats_lines(&a) >= stats_before + 4),
        "stats lines after SIGHUP set report_interval_s = 0.25: {} in {:?}\n{}",
        stats_lines(&a) - stats_before,
        t0.elapsed(),
        a.logs()
    );
    let (took, seen) = (t0.elapsed(), stats_lines(&a) - stats_before);
    eprintln!("{seen} stats lines in {} ms after SIGHUP (interval 250 ms)", took.as_millis());
    assert!(seen as f64 <= took.as_secs_f64() / 0.25 + 1.0, "{seen} stats lines in {took:?}: faster than the interval");

    // The new threshold: three failing queries for a new name are a storm now.
    failing("loud.test", 3);
    let named = |a: &Proc| a.stdout().lines().any(|l| l.contains("dns_probe_storm") && l.contains("loud.test"));
    assert!(
        wait_for(Duration::from_secs(3), || named(&a) && storms() >= 1),
        "no storm for loud.test with storm_min_queries = 3 ({} storms):\n{}",
        storms(),
        a.logs()
    );

    // A broken file: reported with line and column, old settings kept.
    std::fs::write(&config, "[dns]\nports = [5353]\ntimeout_s = \"soon\"\n").unwrap();
    a.signal(libc::SIGHUP);
    let want = format!("error: SIGHUP: {cfg}:3:13: ");
    assert!(wait_for(Duration::from_secs(3), || a.stderr().contains(&want)), "no {want:?} on stderr:\n{}", a.logs());
    assert!(a.stderr().contains("old settings kept"), "{}", a.logs());
    assert!(a.running(), "the agent stopped on a broken config:\n{}", a.logs());
    let before = count("dns");
    send(2);
    assert!(
        wait_for(Duration::from_secs(3), || count("dns") >= before + 2),
        "5353 no longer DNS after a broken reload: {}",
        count("dns")
    );
    assert_eq!(links_of(a.pid()), links, "the bpf links changed across the broken SIGHUP");
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());
}

// ---------------------------------------------------------------------------------
// `--json FILE` is reopened on SIGHUP (logrotate) without losing a line.

#[test]
fn json_file_reopens_on_sighup_without_losing_lines() {
    if !privileged("json_file_reopens_on_sighup_without_losing_lines") {
        return;
    }
    const INTERVAL: f64 = 0.5;
    const SENT: usize = 60;
    let dir = TempDir::new("ops6");
    let net = pair(6);
    let config = dir.0.join("pathwatch.toml");
    std::fs::write(&config, format!("[output]\nreport_interval_s = {INTERVAL}\n")).unwrap();
    let json = dir.0.join("findings.jsonl");
    let rotated = dir.0.join("findings.jsonl.1");
    let mut a = agent(
        &net.a,
        &[],
        &bin(),
        &["run", "-i", &net.a_if, "--config", config.to_str().unwrap(), "--json", json.to_str().unwrap()],
        &dir.0,
    );
    // Steady DNS queries, one every 50 ms for 3 s.
    let (from, to) = (net.b_ip, SocketAddr::from((net.a_ip, 53)));
    let traffic = spawn_in_netns(net.b.name(), move || {
        let p: Vec<Vec<u8>> = (0..SENT).map(|i| dns_query(0x600 + i as u16, "rotate.test")).collect();
        udp_send_here(from, to, &p, None, Duration::from_millis(50));
    });
    std::thread::sleep(Duration::from_millis(1600));
    std::fs::rename(&json, &rotated).unwrap();
    a.signal(libc::SIGHUP);
    assert!(wait_for(Duration::from_secs(3), || json.exists()), "the JSON file was not reopened:\n{}", a.logs());
    traffic.join().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());
    assert!(!a.stderr().contains("error"), "{}", a.logs());

    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&json).unwrap();
    assert!(old.ends_with('\n') && new.ends_with('\n'), "a file ends with a partial line");
    let (old, new) = (json_lines(&old), json_lines(&new));
    assert!(!old.is_empty() && !new.is_empty(), "old {} lines, new {}", old.len(), new.len());
    assert!(old.iter().all(|l| l["type"] != "summary"), "a summary in the rotated file");
    let summary = new.last().unwrap();
    assert_eq!(summary["type"], "summary", "the summary is the new file's last line");
    assert_eq!(new.iter().filter(|l| l["type"] == "summary").count(), 1);

    // The stats lines, across both files: periodic, none lost, none repeated.
    let stats: Vec<&Value> = old.iter().chain(&new).filter(|l| l["type"] == "stats").collect();
    let uptimes: Vec<f64> = stats.iter().map(|l| l["uptime_s"].as_f64().unwrap()).collect();
    let gaps: Vec<f64> = uptimes.windows(2).map(|w| w[1] - w[0]).collect();
    let in_old = old.iter().filter(|l| l["type"] == "stats").count();
    eprintln!("{} stats lines ({in_old} before the rotation), uptimes {uptimes:?}", stats.len());
    assert!(in_old >= 2 && stats.len() - in_old >= 2, "stats lines on both sides of the rotation");
    for (k, g) in gaps.iter().enumerate() {
        assert!(
            *g > 0.0 && *g < 1.5 * INTERVAL,
            "stats lines {k} and {} are {g:.3} s apart (interval {INTERVAL} s): lost or repeated around the rotation",
            k + 1
        );
    }
    // The human output (stdout, never rotated) printed one `stats:` line per JSON one.
    let human = a.stdout().lines().filter(|l| l.starts_with("stats: ")).count();
    assert_eq!(stats.len(), human, "JSON stats lines across both files vs stats lines on stdout");
    let duration = summary["duration_s"].as_f64().unwrap();
    let last = uptimes.last().unwrap();
    assert!(duration - last < 1.5 * INTERVAL, "stats stopped {:.3} s before the end", duration - last);
    // Cumulative counters never go back; every query is in the summary.
    let queries: Vec<u64> = stats.iter().map(|l| l["events"]["dns_query"].as_u64().unwrap()).collect();
    assert!(queries.windows(2).all(|w| w[0] <= w[1]), "dns_query went back: {queries:?}");
    assert_eq!(summary["events"]["dns_query"].as_u64(), Some(SENT as u64), "{summary}");
    assert_eq!(summary["interfaces"][&net.a_if]["ingress"]["packets"]["dns"].as_u64(), Some(SENT as u64));
}
