//! Where the agent's output goes wrong: the event consumer stalled with a tiny ring
//! buffer, the JSON target full, the JSON pipe closed. The kernel counts on, losses
//! are counted exactly, and the agent keeps running.

use std::{
    net::{SocketAddrV4, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use pathwatch::lab::netns::wait_for;
use pathwatch_tests::{
    TempDir, bin, dns_query, json_lines,
    netns::{Pair, spawn_in_netns},
    privileged,
    proc::{Proc, agent},
    procfs::status_field,
};

use super::{agent_with, dns_in, pair, queries, send_queries, silent_sink, summary_of, u};

#[test]
fn a_stalled_consumer_loses_events_exactly_and_resumes() {
    if !privileged("a_stalled_consumer_loses_events_exactly_and_resumes") {
        return;
    }
    // 100 queries/s for 8.5 s; the agent is stopped from 1.5 s to 6.5 s.
    const STEADY: usize = 850;
    const GAP: Duration = Duration::from_millis(10);
    const AFTER: usize = 8;
    let dir = TempDir::new("flt5");
    let p = pair(5);
    let _sink = silent_sink(p.a.name(), p.a_ip);
    let config = dir.0.join("pathwatch.toml");
    std::fs::write(
        &config,
        "[kernel]\nringbuf_bytes = 65536\n\n[dns]\ntimeout_s = 0.5\n\n[output]\nreport_interval_s = 0.5\n",
    )
    .unwrap();
    let json = dir.0.join("agent.json");
    let mut a = agent(
        &p.a,
        &["run", "-i", &p.a_if, "--config", config.to_str().unwrap(), "--json", json.to_str().unwrap()],
        &dir.0,
    );

    let (from, to) = (p.b_ip, p.a_ip);
    let t0 = Instant::now();
    let steady = spawn_in_netns(p.b.name(), move || {
        // Paced against the clock, so the rate holds whatever the sleeps do; bounded
        // by count and by time.
        let sock = UdpSocket::bind(SocketAddrV4::new(from, 0)).expect("bind UDP");
        let mut sent = 0;
        while sent < STEADY && t0.elapsed() < Duration::from_secs(20) {
            let due = GAP * sent as u32;
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
            sock.send_to(&dns_query(sent as u16, "steady.test"), SocketAddrV4::new(to, 53)).expect("send UDP");
            sent += 1;
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(1500));
    a.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    assert!(
        wait_for(Duration::from_secs(2), || status_field(a.pid(), "State").is_some_and(|s| s.starts_with('T'))),
        "not stopped"
    );
    std::thread::sleep(Duration::from_secs(5));
    a.signal(libc::SIGCONT);
    let resumed_after = stopped.elapsed();
    let lines_at_resume = std::fs::read_to_string(&json).unwrap_or_default().lines().count();
    // A new name after the stall: its storm can only come from events read after it.
    let after = spawn_in_netns(p.b.name(), move || {
        send_queries(from, to, "after.test", AFTER, Duration::from_millis(150), 0x8000)
    });
    let sent = steady.join().unwrap() + after.join().unwrap();
    // The last timeouts (0.5 s) and a tick of the detectors.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(a.running(), "{}", a.logs());
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());

    let text = std::fs::read_to_string(&json).unwrap();
    let lines = json_lines(&text);
    let s = summary_of(&text);
    let counted = u(&s["interfaces"][&p.a_if]["ingress"]["packets"]["dns"]);
    let decoded = u(&s["events"]["dns_query"]);
    let lost = u(&s["events"]["events_lost"]);
    eprintln!(
        "stalled {:.1} s: sent {sent} queries; the kernel counted {counted}; decoded {decoded}; lost {lost}; kernel stats {}",
        resumed_after.as_secs_f64(),
        s["kernel"]
    );
    assert_eq!(sent, STEADY + AFTER);
    assert_eq!(counted, sent as u64, "the kernel counters are exact whatever userspace does");
    assert!(lost > 0, "the 64 KiB ring buffer never overflowed in a 5 s stall");
    assert_eq!(lost, sent as u64 - decoded, "events_lost == queries sent - dns_query events decoded");
    assert_eq!(u(&s["kernel"]["ringbuf_full"]), lost);
    assert_eq!(u(&s["kernel"]["events_submitted"]), decoded, "every event submitted was decoded");
    assert_eq!(u(&s["undecodable_events"]), 0);
    for (k, v) in s["events"].as_object().unwrap() {
        if k != "dns_query" && k != "events_lost" {
            assert_eq!(v, 0, "event {k}: only queries were sent");
        }
    }

    // Detection resumed: a storm for the name sent after the stall, and the stats
    // lines written after it count on.
    let storm = lines
        .iter()
        .find(|l| l["type"] == "finding" && l["kind"] == "dns_probe_storm" && l["subject"]["qname"] == "after.test");
    assert!(storm.is_some(), "no dns_probe_storm for after.test:\n{}", a.logs());
    eprintln!("after the stall: {}", storm.unwrap()["summary"]);
    let later: Vec<u64> = lines
        .iter()
        .skip(lines_at_resume)
        .filter(|l| l["type"] == "stats")
        .map(|l| u(&l["events"]["dns_query"]))
        .collect();
    assert!(later.len() >= 2 && later.last() > later.first(), "dns_query in stats lines after SIGCONT: {later:?}");
    let stats_lost: Vec<u64> =
        lines.iter().filter(|l| l["type"] == "stats").map(|l| u(&l["events_lost"]["ringbuf"])).collect();
    assert!(stats_lost.windows(2).all(|w| w[0] <= w[1]) && stats_lost.last() == Some(&lost), "{stats_lost:?}");
}

// ---------------------------------------------------------------------------------
// The JSON target full, or gone.

/// Sends DNS queries and checks the agent counted them (from /metrics), that it is
/// still running and still writing stats lines (counted by `stats_lines`).
fn keeps_counting(p: &Pair, a: &mut Proc, port: u16, stats_lines: &dyn Fn(&Proc) -> usize) {
    let before = stats_lines(a);
    queries(p.b.name(), p.b_ip, p.a_ip, "full.test", 4, Duration::ZERO);
    let ns = p.a.name().to_string();
    assert!(
        wait_for(Duration::from_secs(3), || dns_in(&ns, port, &p.a_if) == Some(4)),
        "/metrics after the JSON target failed: {:?}\n{}",
        dns_in(&ns, port, &p.a_if),
        a.logs()
    );
    assert!(
        wait_for(Duration::from_secs(3), || stats_lines(a) >= before + 2),
        "human stats lines stopped:\n{}",
        a.logs()
    );
    assert!(a.running(), "{}", a.logs());
}

#[test]
fn a_full_json_target_is_reported_once_and_the_agent_keeps_counting() {
    if !privileged("a_full_json_target_is_reported_once_and_the_agent_keeps_counting") {
        return;
    }
    const PORT: u16 = 9465;
    let dir = TempDir::new("flt6");
    let p = pair(6);
    let config = dir.0.join("pathwatch.toml");
    std::fs::write(&config, "[output]\nreport_interval_s = 0.2\n").unwrap();
    // A 64 KiB tmpfs in a mount namespace of the agent's own (nothing to unmount
    // afterwards, whatever happens), 56 KiB of it filled first: a few lines fit.
    let mnt = dir.0.join("small");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.display().to_string();
    let script = format!(
        "mount -t tmpfs -o size=64k pwt-flt6 '{m}' && dd if=/dev/zero of='{m}/fill' bs=4096 count=14 2>/dev/null && exec \"$@\""
    );
    let wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", &script, "sh"];
    let out = format!("{m}/out.json");
    let port = PORT.to_string();
    let args = ["run", "-i", &p.a_if, "--config", config.to_str().unwrap(), "--metrics", &port, "--json", &out];
    let mut a = agent_with(&p.a, &wrapper, &args, &dir.0, "agent");
    let want = format!("error: cannot write JSON lines to {out}: No space left on device");
    assert!(wait_for(Duration::from_secs(10), || a.stderr().contains(&want)), "no {want:?}:\n{}", a.logs());
    assert!(a.stderr().contains("JSON output stopped, the agent keeps running"), "{}", a.logs());
    assert!(!Path::new(&out).exists(), "the tmpfs is visible outside the agent's mount namespace");
    eprintln!("{}", a.stderr().lines().find(|l| l.contains("cannot write JSON")).unwrap());

    keeps_counting(&p, &mut a, PORT, &|a: &Proc| a.stdout().lines().filter(|l| l.starts_with("stats: ")).count());
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());
    assert_eq!(a.stderr().matches("cannot write JSON lines").count(), 1, "reported more than once:\n{}", a.logs());
    let human = a.stdout();
    let summary = human.lines().find(|l| l.starts_with("summary: ")).unwrap_or_else(|| panic!("no summary:\n{human}"));
    assert!(summary.contains("dns 4") && summary.contains("dns_query 4"), "{summary}");
    assert!(!a.stderr().contains("panicked"), "{}", a.logs());
}

#[test]
fn json_into_a_closed_pipe_is_reported_and_the_agent_keeps_counting() {
    if !privileged("json_into_a_closed_pipe_is_reported_and_the_agent_keeps_counting") {
        return;
    }
    const PORT: u16 = 9466;
    let dir = TempDir::new("flt7");
    let p = pair(7);
    let config = dir.0.join("pathwatch.toml");
    std::fs::write(&config, "[output]\nreport_interval_s = 0.2\n").unwrap();
    let port = PORT.to_string();
    let args = ["run", "-i", &p.a_if, "--config", config.to_str().unwrap(), "--metrics", &port, "--json", "-"];
    let mut a = Proc::spawn_piped(&p.a, &[], &bin(), &args, &dir.0, "agent");
    // The reader goes away before the first line.
    drop(a.take_stdout().expect("a piped stdout"));
    let want = "error: cannot write JSON lines to standard output: Broken pipe";
    assert!(
        wait_for(Duration::from_secs(20), || a.stderr().contains(want) || !a.running()),
        "no {want:?}:\n{}",
        a.logs()
    );
    assert!(a.running(), "the agent died writing into a closed pipe:\n{}", a.logs());
    assert!(a.stderr().contains("JSON output stopped, the agent keeps running"), "{}", a.logs());
    eprintln!("{}", a.stderr().lines().find(|l| l.contains("cannot write JSON")).unwrap());

    // Human lines go to stderr with `--json -`.
    keeps_counting(&p, &mut a, PORT, &|a: &Proc| a.stderr().lines().filter(|l| l.starts_with("stats: ")).count());
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "no clean exit (SIGPIPE?):\n{}", a.logs());
    let err = a.stderr();
    assert_eq!(err.matches("cannot write JSON lines").count(), 1, "reported more than once:\n{err}");
    let summary = err.lines().find(|l| l.starts_with("summary: ")).unwrap_or_else(|| panic!("no summary:\n{err}"));
    assert!(summary.contains("dns_query 4"), "{summary}");
}
