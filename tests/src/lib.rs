//! Helpers shared by the integration tests: where the captures are, the rule for
//! privileged tests, the tshark oracle, frames and pcaps; one module per job for the
//! rest (the wild corpus, capture rewriting, diagnosis comparison, and the harness of
//! the live tests: namespaces, processes, /proc, metrics, Prometheus, outside tools).

pub mod diagnosis;
pub mod expr;
pub mod http;
pub mod metrics;
pub mod netns;
pub mod normalise;
pub mod proc;
pub mod procfs;
pub mod prometheus;
pub mod tools;
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

/// The repository's root (the workspace).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

/// `deploy/REL`: what operators install beside the binary.
pub fn deploy_file(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
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
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
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
    expected_in(&pcaps_dir().join("EXPECTED.tsv"))
}

/// A table in EXPECTED.tsv's format at `path`: file → row.
pub fn expected_in(path: &Path) -> BTreeMap<String, ExpectedRow> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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
