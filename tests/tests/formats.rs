//! Capture formats read back by `pathwatch replay`: the same frames written with each
//! link type replay knows (no root needed), and tcpdump's Linux cooked v2 (SLL2, `-i
//! any`) pcap and tshark's pcapng (SLL) as the real tools write them, taken in a
//! namespace of our own while `dig` sends DNS queries to a local dnsmasq.

use std::time::Duration;

use pathwatch::lab::netns::{NetNs, wait_for};
use pathwatch_tests::{
    TempDir, dns_query, dns_response, eth_to_raw_ip, eth_to_sll, eth_to_sll2, json_lines, pathwatch, privileged, udp4,
    write_pcap_linktype,
};
use serde_json::Value;

/// An Ethernet/IPv6/UDP frame.
fn udp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(src, dst, 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("build frame");
    out
}

/// A SERVFAIL storm on mus.cisco.com over IPv4 and one on another name over IPv6.
fn storm_frames() -> Vec<(u64, Vec<u8>)> {
    let (c4, r4) = ([198, 18, 0, 2], [198, 18, 0, 1]);
    let (mut c6, mut r6) = ([0u8; 16], [0u8; 16]);
    c6[0] = 0xfd;
    c6[15] = 2;
    r6[0] = 0xfd;
    r6[15] = 1;
    let mut frames = Vec::new();
    for i in 0..6u16 {
        let t = 1_600_000_000_000_000_000 + u64::from(i) * 15_000_000_000;
        let port = 50000 + i;
        frames.push((t, udp4(c4, r4, port, 53, &dns_query(i, "mus.cisco.com"))));
        frames.push((t + 2_000_000_000, udp4(r4, c4, 53, port, &dns_response(i, "mus.cisco.com", 2))));
        frames.push((t + 1_000, udp6(c6, r6, port, 53, &dns_query(0x100 + i, "v6.example"))));
        frames.push((t + 3_000_000, udp6(r6, c6, 53, port, &dns_response(0x100 + i, "v6.example", 3))));
    }
    frames.sort_by_key(|(t, _)| *t);
    frames
}

/// `replay --json -` of `capture`: its lines, the summary without its file names.
fn replay_lines(capture: &std::path::Path) -> Vec<Value> {
    let (code, out, err) = pathwatch(&["replay", "--json", "-", capture.to_str().unwrap()]);
    assert_eq!(code, 0, "{}: {err}", capture.display());
    let mut lines = json_lines(&out);
    let summary = lines.last_mut().expect("a summary line").as_object_mut().expect("an object");
    assert_eq!(summary["type"], "summary");
    summary.remove("files");
    lines
}

#[test]
fn cooked_and_raw_ip_captures_replay_like_ethernet() {
    let dir = TempDir::new("linktypes");
    let frames = storm_frames();
    let write = |name: &str, linktype: u32, convert: fn(&[u8]) -> Vec<u8>| {
        let path = dir.0.join(name);
        write_pcap_linktype(&path, linktype, frames.iter().map(|(t, f)| (*t, convert(f))));
        path
    };
    let ethernet = replay_lines(&write("ethernet.pcap", 1, |f| f.to_vec()));
    let summary = ethernet.last().unwrap();
    assert_eq!(summary["packets"], 24);
    assert_eq!((&summary["events"]["dns_servfail"], &summary["events"]["dns_nxdomain"]), (&6.into(), &6.into()));
    let qnames: Vec<&Value> =
        ethernet.iter().filter(|l| l["type"] == "finding").map(|l| &l["subject"]["qname"]).collect();
    assert_eq!(qnames, ["mus.cisco.com", "v6.example"], "{ethernet:#?}");
    for (name, linktype, convert) in [
        ("sll.pcap", 113, eth_to_sll as fn(&[u8]) -> Vec<u8>),
        ("sll2.pcap", 276, eth_to_sll2),
        ("raw.pcap", 101, eth_to_raw_ip),
    ] {
        let got = replay_lines(&write(name, linktype, convert));
        assert_eq!(got, ethernet, "{name} (link type {linktype}) replays differently from Ethernet");
    }
}

/// A namespace of our own with `addr` on its loopback and dnsmasq answering `ok.test`
/// there (the daemon stops when the returned handle is dropped).
fn namespace_with_dnsmasq(name: &str, addr: &str) -> (NetNs, pathwatch::lab::netns::Daemon) {
    let ns = NetNs::new(name).unwrap();
    ns.ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]).unwrap();
    let net = addr.rsplit_once('.').map_or(addr, |(net, _)| net);
    let (listen, answer) = (format!("--listen-address={addr}"), format!("--address=/ok.test/{net}.9"));
    let args = [
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        &listen,
        "--bind-interfaces",
        &answer,
        "--user=root",
        "--pid-file=",
    ];
    let dns = ns.spawn("dnsmasq", "dnsmasq", &args, None).unwrap();
    (ns, dns)
}

#[test]
fn sll2_pcap_from_tcpdump_and_pcapng_from_tshark_replay_alike() {
    if !privileged("sll2_pcap_from_tcpdump_and_pcapng_from_tshark_replay_alike") {
        return;
    }
    let dir = TempDir::new("formats");
    let (ns, _dns) = namespace_with_dnsmasq("pwt-fmt-a", "198.18.50.1");
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

/// Runs `sh -c SCRIPT` (with `$PW` the pathwatch binary): exit code, stdout, stderr.
fn shell(script: &str) -> (i32, String, String) {
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .env("PW", pathwatch_tests::bin())
        .output()
        .expect("run sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `replay --json -` output lines without the summary's file names.
fn without_files(out: &str) -> Vec<Value> {
    let mut lines = json_lines(out);
    lines.last_mut().expect("a summary line").as_object_mut().expect("an object").remove("files");
    lines
}

#[test]
fn standard_input_and_gzip_zstd_xz_captures_replay_like_the_plain_file() {
    let dir = TempDir::new("compressed");
    let plain = dir.0.join("storm.pcap");
    write_pcap_linktype(&plain, 1, storm_frames());
    let want = replay_lines(&plain);
    assert!(want.iter().any(|l| l["type"] == "finding"), "the plain capture has findings to compare");
    let p = plain.to_str().unwrap();
    // The compressed copies as users make them, each under a name that says nothing
    // of its compression for one of them: the bytes decide.
    for (tool, file) in [("gzip -c", "storm.pcap.gz"), ("zstd -q -c", "storm.pcap.zst"), ("xz -c", "storm.bin")] {
        let packed = dir.0.join(file);
        let (code, _, err) = shell(&format!("{tool} '{p}' > '{}'", packed.display()));
        assert_eq!(code, 0, "{tool}: {err}");
        assert_eq!(replay_lines(&packed), want, "{file}");
    }
    let (code, out, err) = shell(&format!("cat '{p}' | \"$PW\" replay --json - -"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(without_files(&out), want, "cat | replay -");
    let (code, out, err) = shell(&format!("gzip -c '{p}' | \"$PW\" replay --json - -"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(without_files(&out), want, "gzip | replay -");
}

#[test]
fn a_gzip_capture_cut_short_keeps_the_findings_before_and_says_how_far_it_got() {
    let dir = TempDir::new("cut-gzip");
    let plain = dir.0.join("storm.pcap");
    let mut frames = storm_frames();
    // Unrelated traffic after the storm, so that the cut falls after it.
    let end = frames.last().unwrap().0;
    for i in 0..4000u64 {
        let f = udp4([198, 18, 0, 9], [198, 18, 0, 1], 40000, 9999, &i.to_le_bytes().repeat(64));
        frames.push((end + 1_000_000 + i * 1_000_000, f));
    }
    write_pcap_linktype(&plain, 1, frames);
    let gz = dir.0.join("storm.pcap.gz");
    let (code, _, err) = shell(&format!("gzip -1 -c '{}' > '{}'", plain.display(), gz.display()));
    assert_eq!(code, 0, "{err}");
    let mut bytes = std::fs::read(&gz).unwrap();
    bytes.truncate(bytes.len() * 3 / 4);
    std::fs::write(&gz, &bytes).unwrap();
    let (code, out, err) = pathwatch(&["replay", "--json", "-", gz.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("storm.pcap.gz") && err.contains("gzip stream is cut short"), "{err}");
    assert!(err.contains("bytes of capture"), "says how far it got: {err}");
    let lines = json_lines(&out);
    let kinds: Vec<&str> = lines.iter().filter(|l| l["type"] == "finding").filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(kinds, ["dns_probe_storm", "dns_probe_storm"], "the storms before the cut are kept");
    let summary = lines.last().unwrap();
    let packets = summary["packets"].as_u64().unwrap();
    assert!(packets > 24 && packets < 24 + 4000, "frames up to the cut were read: {packets}");
}

#[test]
fn an_nflog_capture_from_an_nftables_log_rule_replays_with_tsharks_counts() {
    if !privileged("an_nflog_capture_from_an_nftables_log_rule_replays_with_tsharks_counts") {
        return;
    }
    let dir = TempDir::new("nflog");
    let (ns, _dns) = namespace_with_dnsmasq("pwt-fmt-n", "198.18.51.1");
    // What a gateway operator writes to see DNS leave the host: a log rule to a
    // netlink group, read with `tcpdump -i nflog:N`.
    let rules = dir.0.join("log.nft");
    std::fs::write(
        &rules,
        "table inet pwt_log {\n  chain out {\n    type filter hook output priority 0;\n    udp dport 53 counter log group 7\n    udp sport 53 counter log group 7\n  }\n}\n",
    )
    .unwrap();
    ns.exec("nft", &["-f", rules.to_str().unwrap()]).unwrap();
    let pcap = dir.0.join("nflog.pcap");
    let log = dir.0.join("tcpdump.log");
    let mut td = ns
        .spawn(
            "tcpdump",
            "tcpdump",
            &["-i", "nflog:7", "--immediate-mode", "-U", "-w", pcap.to_str().unwrap()],
            Some(&log),
        )
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on")),
        "tcpdump did not start on nflog:7"
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut digs = String::new();
    for _ in 0..3 {
        let o = ns.exec("dig", &["+tries=1", "+time=2", "@198.18.51.1", "ok.test", "+short"]).unwrap();
        digs.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    // nfnetlink_log batches messages for up to a second (its default flush timeout)
    // before tcpdump sees them: wait for all six to be written.
    let written = || {
        let frames = pathwatch::capture::Capture::open(&pcap).and_then(|c| c.frames());
        frames.map(|f| f.map_while(Result::ok).count()).unwrap_or(0)
    };
    assert!(wait_for(Duration::from_secs(10), || written() >= 6), "nflog capture stuck at {} frames", written());
    td.stop(libc::SIGINT, Duration::from_secs(5));
    let bytes = std::fs::read(&pcap).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 239, "tcpdump wrote LINKTYPE_NFLOG");
    let (code, out, err) = pathwatch(&["replay", "--json", "-", pcap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let summary = json_lines(&out).pop().unwrap();
    let got = (summary["events"]["dns_query"].as_u64().unwrap(), summary["events"]["dns_response"].as_u64().unwrap());
    let ruleset = ns.exec("nft", &["list", "ruleset"]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let td_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(got, (3, 3), "{summary}\ntcpdump: {td_log}\nruleset: {ruleset:?}\ndig: {digs}");
    let tshark = tshark_dns_counts(&pcap);
    assert_eq!((got.0 as usize, got.1 as usize), tshark, "tshark reads the same capture");
}
