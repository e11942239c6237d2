//! An adversarial flood against small caps: random names from random clients and
//! large segments of random flows. Every table stays within its cap, memory stays
//! bounded, and no random value reaches a metric label.

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use pathwatch_tests::{
    TempDir, dns_query,
    http::get_in,
    metrics::{metric, samples, unbounded_labels},
    netns::{in_netns, send_frames},
    privileged,
    proc::agent,
    procfs::{BpfFd, bpf_fds, bpftool, peak_rss_kib, status_field},
};
use serde_json::Value;

use super::{FLOOD_DST_MAC, pair, summary_of, u};

/// xorshift64*: reproducible randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// An address in 198.18.0.0/15.
    fn addr(&mut self) -> [u8; 4] {
        let r = self.next();
        [198, 18 + (r & 1) as u8, (r >> 8) as u8, (r >> 16) as u8]
    }

    fn port(&mut self) -> u16 {
        1024 + (self.next() % 60000) as u16
    }

    fn name(&mut self) -> String {
        const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut label =
            |n: usize| (0..n).map(|_| ALPHA[(self.next() % ALPHA.len() as u64) as usize] as char).collect::<String>();
        format!("{}.{}.flood.test", label(12), label(6))
    }
}

const FLOOD_SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x66, 0x02];

/// A DNS query for a random name from a random client; the name and the client's
/// address are added to `sent`.
fn dns_frame(r: &mut Rng, dst: [u8; 4], sent: &mut Vec<String>) -> Vec<u8> {
    let (name, src) = (r.name(), r.addr());
    sent.extend([name.clone(), Ipv4Addr::from(src).to_string()]);
    let payload = dns_query(r.next() as u16, &name);
    let b = etherparse::PacketBuilder::ethernet2(FLOOD_SRC_MAC, FLOOD_DST_MAC).ipv4(src, dst, 64).udp(r.port(), 53);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

/// A DF TCP segment of 1360 payload bytes (1400-byte IPv4 packet).
fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, seq: u32) -> Vec<u8> {
    let mut ip = etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, src, dst).unwrap();
    ip.dont_fragment = true;
    let b = etherparse::PacketBuilder::ethernet2(FLOOD_SRC_MAC, FLOOD_DST_MAC)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .tcp(sport, 443, seq, 64240)
        .ack(1)
        .psh();
    let payload = [0x5au8; 1360];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

#[test]
fn an_adversarial_flood_stays_within_the_caps_and_memory() {
    if !privileged("an_adversarial_flood_stays_within_the_caps_and_memory") {
        return;
    }
    const NAMES: usize = 6000;
    const FLOWS: usize = 4000;
    const RSS_LIMIT_KIB: u64 = 128 * 1024;
    let dir = TempDir::new("flt8");
    let p = pair(8);
    let config = dir.0.join("pathwatch.toml");
    std::fs::write(
        &config,
        "[dns]\nnames_cap = 1000\ntransactions_cap = 2000\n\n[pmtu]\nflows_cap = 1000\nkernel_flow_entries = 1024\n",
    )
    .unwrap();
    let json = dir.0.join("agent.json");
    const PORT: u16 = 9464;
    let port = PORT.to_string();
    let mut a = agent(
        &p.a,
        &[
            "run",
            "-i",
            &p.a_if,
            "--config",
            config.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--metrics",
            &port,
        ],
        &dir.0,
    );
    let rss_idle = peak_rss_kib(a.pid());

    // Random queries from random clients, and large DF segments of random flows, each
    // sent twice (the second is a retransmission), interleaved.
    let dst = p.a_ip.octets();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let mut frames = Vec::with_capacity(NAMES + 2 * FLOWS);
    let mut flows = Vec::with_capacity(FLOWS);
    // Every name and address the flood carries, to look for in the metrics' labels.
    let mut carried = vec![p.a_ip.to_string(), p.b_ip.to_string()];
    for k in 0..NAMES.max(FLOWS) {
        if k < NAMES {
            frames.push(dns_frame(&mut r, dst, &mut carried));
        }
        if k < FLOWS {
            let (src, sport, seq) = (r.addr(), r.port(), r.next() as u32);
            carried.push(Ipv4Addr::from(src).to_string());
            frames.push(tcp_frame(src, dst, sport, seq));
            flows.push((src, sport, seq));
        }
        if k >= 16 && k - 16 < FLOWS {
            // The retransmission, a few flows later.
            let (src, sport, seq) = flows[k - 16];
            frames.push(tcp_frame(src, dst, sport, seq));
        }
    }
    for &(src, sport, seq) in flows.iter().skip(NAMES.max(FLOWS).saturating_sub(16)) {
        frames.push(tcp_frame(src, dst, sport, seq));
    }
    assert_eq!(frames.len(), NAMES + 2 * FLOWS);
    let total = frames.len();
    let b_if = p.b_if.clone();
    let t0 = Instant::now();
    let sent = in_netns(p.b.name(), move || send_frames(&b_if, FLOOD_DST_MAC, &frames, Duration::from_secs(30)));
    let took = t0.elapsed();
    eprintln!("flood: {sent} of {total} frames sent in {:.2} s", took.as_secs_f64());
    assert_eq!(sent, total, "the flood was cut short");
    std::thread::sleep(Duration::from_millis(1500));
    // A live scrape: only bounded labels, none of the random names or addresses.
    let (status, text) =
        get_in(p.a.name(), SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)), "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{text}");
    let problems = unbounded_labels(&text, &carried);
    assert!(problems.is_empty(), "/metrics labels after the flood:\n{}", problems.join("\n"));
    assert!(metric(&text, "pathwatch_evictions_total", &[("table", "dns_names")]) > 0, "{text}");
    eprintln!(
        "flood: {} samples on /metrics, every label bounded ({} sent values checked)",
        samples(&text).len(),
        carried.len()
    );
    let rss_peak = peak_rss_kib(a.pid());
    let rss_now = status_field(a.pid(), "VmRSS").unwrap_or_default();

    // The kernel's flow cache (an array of 512 sets of two 32-byte ways, each led by
    // its flow's tag, 0 when empty), as bpftool sees it.
    let flows_map = bpf_fds(a.pid()).into_iter().find_map(|f| match f {
        BpfFd::Map(id, 2, 512) => Some(id),
        _ => None,
    });
    let bpftool_flows = match (bpftool(), flows_map) {
        (Some(tool), Some(id)) => {
            let out = Command::new(tool).args(["-j", "map", "dump", "id", &id.to_string()]).output().unwrap();
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            v.as_array().map(|sets| sets.iter().map(|set| occupied_ways(&set["value"])).sum::<u64>())
        }
        _ => None,
    };
    assert!(a.running(), "{}", a.logs());
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(30)), Some(0), "{}", a.logs());
    let s = summary_of(&std::fs::read_to_string(&json).unwrap());
    let (tracked, evictions) = (&s["tracked"], &s["evictions"]);
    eprintln!(
        "flood: peak RSS {rss_peak} KiB ({rss_idle} KiB before the flood, VmRSS {rss_now} after); classes {}; events {}; kernel {}",
        s["classes"], s["events"], s["kernel"]
    );
    eprintln!("flood: tracked {tracked}; evictions {evictions}; kernel FLOWS by bpftool: {bpftool_flows:?}");

    assert!(rss_peak > 0 && rss_peak < RSS_LIMIT_KIB, "peak RSS {rss_peak} KiB");
    assert_eq!(u(&s["interfaces"][&p.a_if]["ingress"]["packets"]["dns"]), NAMES as u64, "every query counted");
    let decoded_q = u(&s["events"]["dns_query"]);
    let decoded_r = u(&s["events"]["tcp_large_retransmit"]);
    assert!(
        decoded_q > 2000 && decoded_r > 1000,
        "too few events reached the detectors to test the caps: {}",
        s["events"]
    );
    for (table, cap) in [("dns_names", 1000), ("dns_transactions", 2000), ("tcp_flows", 1000)] {
        let held = u(&tracked[table]);
        let evicted = u(&evictions[table]);
        assert!(held <= cap, "{table}: {held} held, cap {cap}");
        assert!(evicted > 0, "{table}: nothing evicted");
    }
    let kernel_flows = u(&tracked["kernel_flows"]);
    assert!(kernel_flows > 0 && kernel_flows <= 1024, "kernel FLOWS holds {kernel_flows}, cap 1024");
    // Every flow was inserted at least once (more if its retransmission came after
    // its eviction): what the map no longer holds was evicted.
    let kernel_evicted = u(&evictions["kernel_flows"]);
    assert!(kernel_evicted + kernel_flows >= FLOWS as u64, "{kernel_evicted} evicted + {kernel_flows} held < {FLOWS}");
    assert_eq!(kernel_flows, u(&s["kernel"]["flows_inserted"]), "every flow inserted in an empty way is held");
    assert_eq!(kernel_evicted, u(&s["kernel"]["flow_evictions"]));
    if let Some(n) = bpftool_flows {
        assert_eq!(n, kernel_flows, "bpftool and the summary disagree on the FLOWS map");
    }
}

/// Ways of one `FLOWS` set, as bpftool dumps its value (hex byte strings without BTF,
/// or the struct with it), whose tag (their first 8 bytes) is not 0.
fn occupied_ways(value: &Value) -> u64 {
    match value {
        Value::Array(bytes) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_str().and_then(|s| u8::from_str_radix(s.trim_start_matches("0x"), 16).ok()))
                .collect();
            bytes.chunks(32).filter(|way| way.len() >= 8 && way[..8].iter().any(|b| *b != 0)).count() as u64
        }
        Value::Object(set) => {
            set["ways"].as_array().map_or(0, |ways| ways.iter().filter(|w| w["tag"].as_u64() != Some(0)).count() as u64)
        }
        _ => 0,
    }
}
