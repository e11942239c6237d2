//! The configuration file (TOML): every threshold, cap and port, with documented
//! defaults (`pathwatch config default` prints them, commented).
//!
//! Mistakes are pointed at precisely: unknown keys, wrong types and impossible values
//! (a negative timeout, a cap of 0) fail with the file, line and column, and what is
//! allowed. Range checks live in the value types, so that serde reports them at the
//! value's own position.

use std::{fmt, net::IpAddr, path::Path};

use agent_common::{KernelConfig, config::DEFAULT_LARGE_PACKET_BYTES, flow::DEFAULT_FLOW_ENTRIES};
use serde::{Deserialize, Deserializer, Serialize};

use crate::decode::name::DnsName;

macro_rules! checked_number {
    ($(#[$doc:meta])* $name:ident($inner:ty), $check:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(CheckedVisitor::<$inner> { ok: $check, what: $what }).map($name)
            }
        }
    };
}

/// The numbers a checked value is read from: a TOML integer, or a float where the
/// value is a float.
trait CheckedInner: Copy {
    fn from_i64(v: i64) -> Option<Self>;
    fn from_f64(v: f64) -> Option<Self>;
}

impl CheckedInner for f64 {
    fn from_i64(v: i64) -> Option<f64> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<f64> {
        Some(v)
    }
}

macro_rules! checked_integer {
    ($($t:ty),*) => {$(
        impl CheckedInner for $t {
            fn from_i64(v: i64) -> Option<$t> {
                <$t>::try_from(v).ok()
            }
            fn from_f64(_: f64) -> Option<$t> {
                None
            }
        }
    )*};
}
checked_integer!(u16, u32, u64);

/// Reads a number and checks its range; a value of the wrong type (a string, a
/// float for an integer) is reported with what is allowed, not as a Rust type.
struct CheckedVisitor<T> {
    ok: fn(T) -> bool,
    what: &'static str,
}

impl<'de, T: CheckedInner> serde::de::Visitor<'de> for CheckedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        match T::from_i64(v) {
            Some(x) if (self.ok)(x) => Ok(x),
            _ => Err(E::custom(format!("{v} is not allowed here: expected {}", self.what))),
        }
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::custom(format!("{v} is not allowed here: expected {}", self.what))),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
        match T::from_f64(v) {
            Some(x) if (self.ok)(x) => Ok(x),
            Some(_) => Err(E::custom(format!("{v} is not allowed here: expected {}", self.what))),
            None => Err(E::invalid_type(serde::de::Unexpected::Float(v), &self)),
        }
    }
}

checked_number!(
    /// A duration in seconds, greater than zero.
    Secs(f64), |v| v.is_finite() && v > 0.0, "a positive number of seconds"
);
checked_number!(
    /// A duration in seconds, zero or more (zero turns a feature off).
    SecsOrZero(f64), |v| v.is_finite() && v >= 0.0, "zero or a positive number of seconds"
);
checked_number!(
    /// A table size, at least 1.
    Cap(u64), |v| (1..=100_000_000).contains(&v), "a capacity from 1 to 100000000"
);
checked_number!(
    /// A count threshold, at least 2.
    Count(u64), |v| (2..=1_000_000).contains(&v), "a count from 2 to 1000000"
);
checked_number!(
    /// A fraction from 0 to 1.
    Ratio(f64), |v| (0.0..=1.0).contains(&v), "a fraction from 0 to 1"
);
checked_number!(
    /// A UDP/TCP port, 1-65535.
    Port(u16), |v| v != 0, "a port from 1 to 65535"
);
checked_number!(
    /// An MTU or packet size in bytes, 576-65535.
    Bytes(u32), |v| (576..=65535).contains(&v), "a size from 576 to 65535 bytes"
);
checked_number!(
    /// A ring-buffer size: a power of two from 4096 bytes to 1 GiB.
    RingBytes(u32), |v| v.is_power_of_two() && (4096..=1 << 30).contains(&v), "a power of two from 4096 to 1073741824"
);

impl Secs {
    /// As nanoseconds.
    pub fn ns(self) -> u64 {
        (self.0 * 1e9) as u64
    }
}

impl SecsOrZero {
    /// As nanoseconds.
    pub fn ns(self) -> u64 {
        (self.0 * 1e9) as u64
    }
}

/// A name clients probe for, with what it means and what to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownProbe {
    /// The probed name (compared case-insensitively).
    pub qname: String,
    /// Short identifier shown as `known_probe`.
    pub name: String,
    /// What the operator should do.
    pub remedy: String,
}

/// `[dns]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Ports besides 53 that carry DNS.
    pub ports: Vec<Port>,
    /// A query unanswered this long is a timeout.
    pub timeout_s: Secs,
    /// Queries older than this no longer count towards a storm.
    pub window_s: Secs,
    /// Queries for one (client, name, type) in the window before it can be a storm.
    pub storm_min_queries: Count,
    /// Fraction of those that must have failed (SERVFAIL, NXDOMAIN, REFUSED, timeout).
    pub storm_min_failed_ratio: Ratio,
    /// `periodic`: every interval within this fraction of the median interval.
    pub periodic_tolerance: Ratio,
    /// A storm warns only once its queries span this long (and three periods).
    pub storm_min_span_s: Secs,
    /// Names negative by design (`local`, `name.lan`, DNS-SD, SOA/PTR) warn only
    /// once their storm spans this long.
    pub negative_min_span_s: Secs,
    /// A name answered NOERROR before it started failing warns only once its storm
    /// spans this long.
    pub resolved_before_min_span_s: Secs,
    /// `dns_resolver_outage`: at least this many distinct names failing at one
    /// resolver...
    pub outage_min_names: Count,
    /// ...within this long...
    pub outage_window_s: Secs,
    /// ...and at least this fraction of its lookups in that time failed.
    pub outage_min_failed_ratio: Ratio,
    /// Transactions tracked (LRU); also the query packets awaiting their timeout.
    pub transactions_cap: Cap,
    /// (client, name, type) series tracked (LRU).
    pub names_cap: Cap,
    /// Names known to be probes, in addition to the built-in table.
    pub known_probes: Vec<KnownProbe>,
}

/// `[dtls]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DtlsConfig {
    /// A flow with ClientHellos and no DTLS record back for this long is blocked.
    pub timeout_s: Secs,
    /// DTLS flows tracked (LRU); also the flows awaiting an answer.
    pub flows_cap: Cap,
    /// DTLS and TLS between one client and server this close in time belong together:
    /// a TLS session near blocked DTLS marks the fallback, DTLS near a reconnect rhythm
    /// is its VPN evidence.
    pub tls_window_s: Secs,
    /// TLS sessions in a regular run before a reconnect loop is named.
    pub reconnect_min_sessions: Count,
    /// The regular run must span at least this long.
    pub reconnect_min_span_s: Secs,
    /// Reconnect intervals within this fraction of their median are regular.
    pub reconnect_tolerance: Ratio,
    /// Shorter reconnect periods are not a VPN reconnect loop.
    pub reconnect_min_period_s: Secs,
    /// Servers known to be VPN concentrators: a rhythm of TLS sessions to them needs no
    /// DTLS to be a reconnect loop.
    pub vpn_servers: Vec<IpAddr>,
    /// Server ports known to carry only VPN tunnels (as `vpn_servers`, for any server).
    pub vpn_ports: Vec<Port>,
}

/// `[pmtu]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PmtuConfig {
    /// IPv4 DF packets and IPv6 packets longer than this are `large_df`.
    pub large_packet_bytes: Bytes,
    /// The path MTU when known in advance (e.g. 1418 for an AnyConnect DTLS tunnel).
    pub tunnel_mtu: Option<Bytes>,
    /// Retransmissions of an oversized segment before a black hole is named.
    pub black_hole_min_retransmits: Count,
    /// TCP flows tracked in userspace (LRU).
    pub flows_cap: Cap,
    /// Flows the kernel's large-segment table holds (set at load time).
    pub kernel_flow_entries: Cap,
}

/// `[output]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// How often `run` prints a `stats` line.
    pub report_interval_s: Secs,
    /// A finding is printed again at most this often (and only when it changed).
    pub finding_interval_s: Secs,
    /// Findings held (LRU).
    pub findings_cap: Cap,
    /// Findings waiting to be (re)built, per kind (LRU): live between two reports, in
    /// a replay until its end.
    pub pending_cap: Cap,
}

/// `[kernel]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelSettings {
    /// Event ring buffer size (set at load time).
    pub ringbuf_bytes: RingBytes,
    /// Stamp events with the precise clock instead of the kernel tick (1-4 ms); the
    /// precise read costs about 25 ns per event on a VM.
    pub precise_timestamps: bool,
    /// Attach the drop program to `kfree_skb`, so findings say whether this host
    /// dropped the packets (applies at start).
    pub drops: bool,
}

/// `[metrics]`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `[ADDR:]PORT` to serve /metrics on (the `--metrics` flag wins).
    pub listen: Option<String>,
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Events, before any detector.
    pub events: EventsConfig,
    /// DNS.
    pub dns: DnsConfig,
    /// DTLS and VPN.
    pub dtls: DtlsConfig,
    /// Path MTU.
    pub pmtu: PmtuConfig,
    /// Output.
    pub output: OutputConfig,
    /// Kernel.
    pub kernel: KernelSettings,
    /// This host's own drops, as evidence.
    pub drops: DropsConfig,
    /// Metrics.
    pub metrics: MetricsConfig,
}

/// `[drops]`: what the agent makes of the drops the kernel's drop program reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DropsConfig {
    /// ICMP errors this host made and its own firewall dropped, within
    /// `icmp_suppressed_window_s`, before `local_icmp_suppressed` is named.
    pub icmp_suppressed_min: Count,
    /// The window those suppressed ICMP errors must fall in.
    pub icmp_suppressed_window_s: Secs,
    /// Tallies of dropped packets held (per flow, per address pair; LRU), and reporters
    /// of suppressed ICMP held (LRU).
    pub tallies_cap: Cap,
}

impl Default for DropsConfig {
    fn default() -> Self {
        DropsConfig { icmp_suppressed_min: Count(3), icmp_suppressed_window_s: Secs(300.0), tallies_cap: Cap(20_000) }
    }
}

/// `[events]`: what happens to every event before the detectors see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// An event identical to one seen less than this long before is a copy of the
    /// same packet (a SPAN port, a bridge, two watched interfaces): counted as a
    /// duplicate and given to no detector. 0 turns this off.
    pub duplicate_window_s: SecsOrZero,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { duplicate_window_s: SecsOrZero(0.005) }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            ports: Vec::new(),
            timeout_s: Secs(5.0),
            window_s: Secs(300.0),
            storm_min_queries: Count(4),
            storm_min_failed_ratio: Ratio(0.5),
            periodic_tolerance: Ratio(0.1),
            storm_min_span_s: Secs(30.0),
            negative_min_span_s: Secs(300.0),
            resolved_before_min_span_s: Secs(600.0),
            outage_min_names: Count(3),
            outage_window_s: Secs(60.0),
            outage_min_failed_ratio: Ratio(0.5),
            transactions_cap: Cap(100_000),
            names_cap: Cap(20_000),
            known_probes: Vec::new(),
        }
    }
}

impl Default for DtlsConfig {
    fn default() -> Self {
        DtlsConfig {
            timeout_s: Secs(10.0),
            flows_cap: Cap(20_000),
            tls_window_s: Secs(300.0),
            reconnect_min_sessions: Count(4),
            reconnect_min_span_s: Secs(300.0),
            reconnect_tolerance: Ratio(0.25),
            reconnect_min_period_s: Secs(10.0),
            vpn_servers: Vec::new(),
            vpn_ports: Vec::new(),
        }
    }
}

impl Default for PmtuConfig {
    fn default() -> Self {
        PmtuConfig {
            large_packet_bytes: Bytes(DEFAULT_LARGE_PACKET_BYTES),
            tunnel_mtu: None,
            black_hole_min_retransmits: Count(3),
            flows_cap: Cap(50_000),
            kernel_flow_entries: Cap(DEFAULT_FLOW_ENTRIES as u64),
        }
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            report_interval_s: Secs(10.0),
            finding_interval_s: Secs(60.0),
            findings_cap: Cap(10_000),
            pending_cap: Cap(10_000),
        }
    }
}

impl Default for KernelSettings {
    fn default() -> Self {
        KernelSettings {
            ringbuf_bytes: RingBytes(agent_common::config::DEFAULT_RINGBUF_BYTES),
            precise_timestamps: false,
            drops: true,
        }
    }
}

/// The AnyConnect probe of the field notes (Cisco bug CSCvu39643).
pub const MUS_REMEDY: &str = "Make mus.cisco.com resolvable: add a DNS entry for it on the resolver (or a hosts-file \
entry on the client), or deploy an AnyConnect VPN profile so the core module stops probing (Cisco bug CSCvu39643).";

impl Config {
    /// The built-in known probes followed by the configured ones.
    pub fn known_probes(&self) -> Vec<KnownProbe> {
        let mut out = vec![KnownProbe {
            qname: "mus.cisco.com".into(),
            name: "cisco-anyconnect-mus".into(),
            remedy: MUS_REMEDY.into(),
        }];
        out.extend(self.dns.known_probes.iter().cloned());
        out
    }

    /// The known probes as names, for lookups.
    pub fn known_probe_names(&self) -> Vec<(DnsName, KnownProbe)> {
        self.known_probes().into_iter().map(|p| (DnsName::from_dotted(&p.qname), p)).collect()
    }

    /// What the kernel programs need of this configuration.
    pub fn kernel_config(&self) -> KernelConfig {
        let mut k = KernelConfig::new();
        for p in &self.dns.ports {
            k.add_dns_port(p.0);
        }
        k.large_packet_bytes = self.pmtu.large_packet_bytes.0;
        if self.kernel.precise_timestamps {
            k.flags |= agent_common::config::KCFG_PRECISE_TIME;
        }
        k.wakeup_bytes = agent_common::config::wakeup_bytes_for(self.kernel.ringbuf_bytes.0);
        k
    }

    /// Parses `text` (read from `path`).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError {
                path: crate::printable::path(path),
                line,
                column,
                message: crate::printable::text(e.message().trim_end()),
            }
        })
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: crate::printable::path(path),
            line: 0,
            column: 0,
            message: format!("cannot read it: {e}"),
        })?;
        Config::parse(&text, path)
    }
}

/// `message` with its control characters escaped (`\u{1b}`): an error quotes keys
/// and values back from the file, and is printed to a terminal.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A configuration file that cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// 1-based line (0 when the file could not be read).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path, self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.path, self.line, self.column, self.message.trim_end())
        }
    }
}

impl std::error::Error for ConfigError {}

/// The default configuration, commented: what `pathwatch config default` prints.
pub const DEFAULT_TOML: &str = include_str!("config_default.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("t.toml"))
    }

    #[test]
    fn the_commented_default_file_is_the_default() {
        assert_eq!(parse(DEFAULT_TOML).unwrap(), Config::default());
    }

    #[test]
    fn every_setting_is_spelled_out_in_the_default_file() {
        // Serialising leaves out what is unset by default (tunnel_mtu, listen), which
        // the file shows commented out.
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let file: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
        for (section, keys) in &defaults {
            let written = file.get(section).and_then(toml::Value::as_table);
            for key in keys.as_table().unwrap().keys() {
                assert!(
                    written.is_some_and(|w| w.contains_key(key)),
                    "[{section}] {key} is missing from config_default.toml"
                );
            }
        }
    }

    #[test]
    fn unknown_key_is_named_with_its_position() {
        let e = parse("[dns]\ntimeout_s = 5\ntimout = 3\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 1));
        assert!(e.message.contains("unknown field `timout`"), "{}", e.message);
        assert!(e.to_string().starts_with("t.toml:3:1: "));
    }

    #[test]
    fn wrong_type_and_impossible_values_point_at_the_value() {
        let e = parse("[dtls]\ntimeout_s = \"ten\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 13), "{e}");
        assert!(e.message.contains("expected a positive number of seconds"), "{}", e.message);
        let e = parse("[dns]\nports = [5353.5]\n").unwrap_err();
        assert!(e.message.contains("expected a port from 1 to 65535"), "{}", e.message);
        let e = parse("[dns]\nnames_cap = -1\n").unwrap_err();
        assert!(e.message.contains("-1 is not allowed here: expected a capacity from 1"), "{}", e.message);
        let e = parse("[dns]\ntimeout_s = -5\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 13), "{e}");
        assert!(e.message.contains("positive number of seconds"), "{}", e.message);
        let e = parse("[dns]\nnames_cap = 0\n").unwrap_err();
        assert!(e.message.contains("capacity from 1"), "{}", e.message);
    }

    #[test]
    fn vpn_servers_and_ports_are_addresses_and_ports() {
        let c = parse("[dtls]\nvpn_servers = [\"192.0.2.10\", \"2001:db8::10\"]\nvpn_ports = [8443]\n").unwrap();
        assert_eq!(c.dtls.vpn_servers, ["192.0.2.10".parse::<IpAddr>().unwrap(), "2001:db8::10".parse().unwrap()]);
        assert_eq!(c.dtls.vpn_ports, [Port(8443)]);
        let e = parse("[dtls]\nvpn_servers = [\"vpn.example.com\"]\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 16), "{e}");
        assert!(e.message.contains("invalid IP address"), "{}", e.message);
        let e = parse("[dtls]\nvpn_ports = [0]\n").unwrap_err();
        assert!(e.message.contains("expected a port from 1 to 65535"), "{}", e.message);
    }

    #[test]
    fn extra_dns_ports_and_known_probes_reach_their_users() {
        let c = parse(
            "[dns]\nports = [5353]\n[[dns.known_probes]]\nqname = \"Probe.Example\"\nname = \"p\"\nremedy = \"r\"\n",
        )
        .unwrap();
        assert!(c.kernel_config().is_dns_port(5353));
        let names = c.known_probe_names();
        assert!(names.iter().any(|(n, p)| *n == DnsName::from_dotted("probe.example") && p.name == "p"));
        assert!(names.iter().any(|(_, p)| p.name == "cisco-anyconnect-mus"));
    }
}
