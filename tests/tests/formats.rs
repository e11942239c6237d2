//! Capture formats written by the real tools, read back by `pathwatch replay`:
//! tcpdump's Linux cooked v2 (SLL2, `-i any`) pcap and tshark's pcapng (SLL), taken in
//! a namespace of our own while `dig` sends DNS queries to a local dnsmasq.

use std::time::Duration;

use pathwatch::lab::netns::{NetNs, wait_for};
use pathwatch_tests::{TempDir, json_lines, pathwatch, privileged};

#[test]
fn sll2_pcap_from_tcpdump_and_pcapng_from_tshark_replay_alike() {
    if !privileged("sll2_pcap_from_tcpdump_and_pcapng_from_tshark_replay_alike") {
        return;
    }
    let dir = TempDir::new("formats");
    let ns = NetNs::new("pwt-fmt-a").unwrap();
    ns.ip(&["addr", "add", "198.18.50.1/32", "dev", "lo"]).unwrap();
    let _dns = ns
        .spawn(
            "dnsmasq",
            "dnsmasq",
            &[
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=198.18.50.1",
                "--bind-interfaces",
                "--address=/ok.test/198.18.50.9",
                "--user=root",
                "--pid-file=",
            ],
            None,
        )
        .unwrap();
    let pcap = dir.0.join("any.pcap");
    let pcapng = dir.0.join("any.pcapng");
    let (td_log, ts_log) = (dir.0.join("tcpdump.log"), dir.0.join("tshark.log"));
    let mut td = ns
        .spawn(
            "tcpdump",
            "tcpdump",
            &["-i", "any", "--immediate-mode", "-U", "-n", "-w", pcap.to_str().unwrap(), "udp port 53"],
            Some(&td_log),
        )
        .unwrap();
    let mut ts = ns
        .spawn("tshark", "tshark", &["-i", "any", "-f", "udp port 53", "-w", pcapng.to_str().unwrap()], Some(&ts_log))
        .unwrap();
    let says = |p: &std::path::Path, what: &str| std::fs::read_to_string(p).unwrap_or_default().contains(what);
    assert!(
        wait_for(Duration::from_secs(30), || says(&td_log, "listening on") && says(&ts_log, "Capturing on")),
        "capture tools did not start"
    );
    // tshark says "Capturing on" as it starts dumpcap, which may not have its socket
    // open yet: give both a moment.
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        ns.exec("dig", &["+tries=1", "+time=2", "@198.18.50.1", "ok.test"]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    td.stop(libc::SIGINT, Duration::from_secs(5));
    ts.stop(libc::SIGINT, Duration::from_secs(5));

    let mut counts = Vec::new();
    for f in [&pcap, &pcapng] {
        let (code, out, err) = pathwatch(&["replay", "--json", "-", f.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {err}", f.display());
        let summary = json_lines(&out).pop().unwrap();
        counts.push((
            summary["events"]["dns_query"].as_u64().unwrap(),
            summary["events"]["dns_response"].as_u64().unwrap(),
        ));
    }
    // Each datagram is seen once, on lo: a query and its answer. (tcpdump needs
    // --immediate-mode: without it, packets still in the capture ring when it is
    // stopped are counted as "received by filter" but never written.)
    let logs = format!(
        "pcap {} bytes, tcpdump: {}; tshark: {}",
        std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0),
        std::fs::read_to_string(&td_log).unwrap_or_default(),
        std::fs::read_to_string(&ts_log).unwrap_or_default()
    );
    assert_eq!(counts[0], (3, 3), "tcpdump SLL2 pcap: {logs}");
    assert_eq!(counts[1], (3, 3), "tshark pcapng: {logs}; tshark reads {:?}", tshark_dns_counts(&pcapng));
    let (code, out, _) = pathwatch(&["replay", "--json", "-", pcap.to_str().unwrap(), pcapng.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(json_lines(&out).pop().unwrap()["events"]["dns_query"], 6, "two files merged");
}

/// (queries, responses) in a capture as tshark itself reads it, for the failure message.
fn tshark_dns_counts(capture: &std::path::Path) -> (usize, usize) {
    let count = |filter: &str| {
        std::process::Command::new("tshark")
            .args(["-r", capture.to_str().unwrap(), "-Y", filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
            .unwrap_or(0)
    };
    (count("dns.flags.response == 0"), count("dns.flags.response == 1"))
}
