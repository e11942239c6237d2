//! Helpers shared by the integration tests: where the captures are, the rule for
//! privileged tests, and the tshark oracle; the wild corpus, capture rewriting and
//! diagnosis comparison in their own modules.

pub mod diagnosis;
pub mod transform;
pub mod wild;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// The captures: a copy of `../shared/pcaps` made by hand and kept in the repository,
/// because CI and a clean clone have no `../shared`. No test compares the two; when
/// `../shared/pcaps` changes, copy it again.
pub fn pcaps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps")
}

/// Every capture file under `pcaps_dir()`, sorted.
pub fn all_pcaps() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["dns", "dtls", "icmp", "misc", "seed"] {
        for entry in std::fs::read_dir(pcaps_dir().join(dir)).expect("pcaps dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "pcap" || e == "pcapng") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The path of a capture relative to `pcaps_dir()` (as EXPECTED.tsv names it).
pub fn rel(path: &Path) -> String {
    path.strip_prefix(pcaps_dir()).unwrap_or(path).to_string_lossy().into_owned()
}

/// Whether a privileged test may run. It runs as root. Otherwise it is skipped with
/// its reason printed, unless `PATHWATCH_REQUIRE_BPF` is set (CI), where a skip is a
/// failure.
pub fn privileged(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("PATHWATCH_REQUIRE_BPF").is_some() {
        panic!("{test}: needs root (BPF, namespaces) and PATHWATCH_REQUIRE_BPF is set");
    }
    eprintln!("SKIP {test}: needs root (BPF, namespaces); set PATHWATCH_REQUIRE_BPF=1 to make this a failure");
    false
}

/// One row of EXPECTED.tsv: column name → count.
pub type ExpectedRow = BTreeMap<String, u64>;

/// EXPECTED.tsv: file → row (the `linktype` column left out).
pub fn expected() -> BTreeMap<String, ExpectedRow> {
    let text = std::fs::read_to_string(pcaps_dir().join("EXPECTED.tsv")).expect("EXPECTED.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let mut out = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let mut row = ExpectedRow::new();
        for (name, value) in header.iter().zip(&cols).skip(2) {
            row.insert((*name).to_string(), value.parse().expect("count"));
        }
        out.insert(cols[0].to_string(), row);
    }
    out
}

/// EXPECTED.tsv's columns that the `summary` line's `events` object counts too, with
/// the summary's name for each (DESIGN.md: "These counters count packets, as
/// EXPECTED.tsv does"). `packets` is the summary's own `packets`.
pub const SUMMARY_EVENT_COLUMNS: &[(&str, &str)] = &[
    ("dns_queries", "dns_query"),
    ("dns_responses", "dns_response"),
    ("dns_servfail", "dns_servfail"),
    ("dns_nxdomain", "dns_nxdomain"),
    ("dtls_records", "dtls_record"),
    ("dtls_client_hello", "dtls_client_hello"),
    ("dtls_hello_verify", "dtls_hello_verify"),
    ("dtls_server_hello", "dtls_server_hello"),
    ("icmp_frag_needed", "icmp_frag_needed"),
    ("icmpv6_ptb", "icmpv6_packet_too_big"),
    ("icmp_port_unreach", "icmp_port_unreachable"),
];

/// The `pathwatch` binary of this build (cargo builds it for `agent/tests`, next to
/// the test executables' `deps` directory).
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let bin = dir.join("pathwatch");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo xtask test`)",
        bin.display()
    );
    bin
}

/// Runs `pathwatch ARGS`, returning (exit code, stdout, stderr).
pub fn pathwatch(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin()).args(args).output().expect("run pathwatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// JSON lines of a `--json -` run, parsed.
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// A fresh scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `pathwatch-test-<name>-<pid>`.
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("pathwatch-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes frames (timestamp ns, Ethernet bytes) to a pcap file.
pub fn write_pcap(path: &Path, frames: impl IntoIterator<Item = (u64, Vec<u8>)>) {
    write_pcap_linktype(path, 1, frames);
}

/// Writes frames (timestamp ns, bytes as link type `linktype` has them, e.g. 113 for
/// Linux cooked SLL, 276 for SLL2, 101 for raw IP) to a pcap file.
pub fn write_pcap_linktype(path: &Path, linktype: u32, frames: impl IntoIterator<Item = (u64, Vec<u8>)>) {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let file = std::io::BufWriter::new(std::fs::File::create(path).expect("create pcap"));
    let header = PcapHeader {
        ts_resolution: pcap_file::TsResolution::NanoSecond,
        datalink: pcap_file::DataLink::from(linktype),
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(file, header).expect("pcap header");
    for (ts, data) in frames {
        let pkt = PcapPacket::new(std::time::Duration::from_nanos(ts), data.len() as u32, &data);
        w.write_packet(&pkt).expect("write packet");
    }
}

/// An Ethernet frame as Linux cooked capture v1 (SLL, link type 113) has it: a 16-byte
/// header with the packet type (0 = to us), ARPHRD_ETHER, the source MAC and the
/// EtherType, then the frame's payload.
pub fn eth_to_sll(eth: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 1, 0, 6];
    out.extend_from_slice(&eth[6..12]);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&eth[12..]);
    out
}

/// An Ethernet frame as Linux cooked capture v2 (SLL2, link type 276) has it: a
/// 20-byte header with the EtherType first, then the payload.
pub fn eth_to_sll2(eth: &[u8]) -> Vec<u8> {
    let mut out = eth[12..14].to_vec();
    out.extend_from_slice(&[0, 0]); // reserved
    out.extend_from_slice(&2u32.to_be_bytes()); // interface index
    out.extend_from_slice(&[0, 1, 0, 6]); // ARPHRD_ETHER, to us, address length
    out.extend_from_slice(&eth[6..12]);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&eth[14..]);
    out
}

/// An untagged Ethernet frame's IP packet, as raw-IP captures (link type 101) have it.
pub fn eth_to_raw_ip(eth: &[u8]) -> Vec<u8> {
    eth[14..].to_vec()
}

/// An Ethernet/IPv4/UDP frame.
pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("build frame");
    out
}

/// A DNS query message for `name` (type A) with `id`.
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// A DNS response message to [`dns_query`]`(id, name)`: the question echoed, no
/// answers, response code `rcode` (2 = SERVFAIL, 3 = NXDOMAIN).
pub fn dns_response(id: u16, name: &str, rcode: u8) -> Vec<u8> {
    let mut m = dns_query(id, name);
    m[2] = 0x81;
    m[3] = 0x80 | (rcode & 0x0f);
    m
}

/// Seconds since the epoch of an RFC 3339 UTC time as the agent writes it
/// (`2020-06-17T20:21:32.289178Z`), or `None` when it is not one.
pub fn rfc3339_secs(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from 1970-01-01 to y-m-d (proleptic Gregorian), after Howard Hinnant.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3_600 + min * 60) as f64 + sec)
}

/// Makes sure the lab's Debian packages (and openssl) are there for a live test,
/// installing what is missing the way `pathwatch lab` does.
pub fn lab_tools() {
    pathwatch::lab::packages::ensure(&mut |l| eprintln!("{l}")).expect("lab packages");
    assert!(pathwatch::lab::packages::on_path("openssl"), "openssl is missing: apt-get install openssl");
}

/// One sample of a Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (with its `_total` suffix, as exposed).
    pub name: String,
    /// Label pairs, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// The samples of a Prometheus text exposition (format 0.0.4), comments skipped and
/// label values unescaped (`\"`, `\\`, `\n`). Panics on a line it cannot read.
pub fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad(line));
        let name = line[..name_end].to_string();
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                r = r.trim_start_matches(',');
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after) = r.split_once("=\"").unwrap_or_else(|| bad(line));
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => bad(line),
                        },
                        Some((_, c)) => value.push(c),
                        None => bad(line),
                    }
                };
                labels.push((key.to_string(), value));
                r = &after[end + 1..];
            }
        }
        let value = rest.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or_else(|| bad(line));
        out.push(Sample { name, labels, value });
    }
    out
}

fn bad<T>(line: &str) -> T {
    panic!("not a sample line: {line:?}")
}

/// The label keys the agent's metrics may carry (DESIGN.md, "Metrics"); besides them,
/// only `pathwatch_build_info` has one, `version` (the build's, a constant).
pub const LABEL_KEYS: &[&str] = &["iface", "direction", "class", "kind", "source", "rcode", "table"];

/// What is wrong with the labels of a scrape of the agent's /metrics: a key outside
/// [`LABEL_KEYS`], or a value that is an IP address or contains one of `sent` (the
/// addresses and names a test sent). Empty when nothing is.
pub fn unbounded_labels(text: &str, sent: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for s in samples(text) {
        for (k, v) in &s.labels {
            let allowed = LABEL_KEYS.contains(&k.as_str()) || (s.name == "pathwatch_build_info" && k == "version");
            if !allowed {
                problems.push(format!("{}: label key {k:?} is not one of {LABEL_KEYS:?}", s.name));
            }
            if v.parse::<std::net::IpAddr>().is_ok() {
                problems.push(format!("{}: label {k}={v:?} is an address", s.name));
            }
            if let Some(x) = sent.iter().find(|x| !x.is_empty() && v.contains(x.as_str())) {
                problems.push(format!("{}: label {k}={v:?} carries {x:?}, which the test sent", s.name));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_escaped_label_values() {
        let text = "# HELP x X.\n# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"u\\\\o,te\"} 3\nup 1\n";
        let s = samples(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].labels, [("a".to_string(), "1".to_string()), ("b".to_string(), "q\"u\\o,te".to_string())]);
        assert_eq!((s[1].name.as_str(), s[1].labels.len(), s[1].value), ("up", 0, 1.0));
    }

    #[test]
    fn unbounded_labels_are_named() {
        let ok = "pathwatch_packets_total{iface=\"eth0\",direction=\"ingress\",class=\"dns\"} 1\n\
                  pathwatch_build_info{version=\"0.1.0\"} 1\n";
        assert!(unbounded_labels(ok, &["a.test".into()]).is_empty());
        let bad = "pathwatch_x_total{client=\"198.18.0.2\"} 1\npathwatch_y_total{kind=\"a.test storm\"} 1\n";
        let problems = unbounded_labels(bad, &["a.test".into()]);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
