//! What operators install beside the binary (`deploy/`), checked with the tools that
//! consume it:
//!
//! - [`rules`]: the Prometheus alert rules: `promtool check rules` and their unit tests
//!   (`promtool test rules`), which must show every alert firing and not firing; the
//!   example Prometheus configuration: `promtool check config`;
//! - [`dashboard`]: the Grafana dashboard's structure, and its and the rules'
//!   expressions run as queries on a real Prometheus that scrapes a stand-in exporter
//!   ([`exporter`]) serving the metric contract of DESIGN.md ("Metrics"), so a query
//!   naming a wrong metric or label comes back empty;
//! - [`systemd`]: the systemd unit: `systemd-analyze verify` and `systemd-analyze
//!   security`, and the logrotate snippet: `logrotate -d`;
//! - [`kubernetes`]: the Kubernetes manifests: `kubernetes-validate --strict` against
//!   the 1.30 schemas, plus the ServiceMonitor, the kustomization and the ConfigMap's
//!   TOML (parsed by the agent's own configuration parser).
//!
//! A missing Debian tool is installed with apt-get when running as root; otherwise the
//! test is skipped (a failure when PATHWATCH_REQUIRE_BPF is set). Every child process
//! has a deadline and is killed by its PID (`pathwatch_tests::tools`).

mod dashboard;
mod exporter;
mod kubernetes;
mod rules;
mod systemd;

use std::path::Path;

// ---------------------------------------------------------------------------------
// The metric contract (DESIGN.md, "Metrics").

const IFACES: &[&str] = &["eth0", "vpn0"];
const DIRECTIONS: &[&str] = &["ingress", "egress"];
const CLASSES: &[&str] = &["other", "dns", "dtls", "tls", "icmp_error", "tcp_syn", "large_df"];
const EVENT_KINDS: &[&str] = &[
    "dns_query",
    "dns_response",
    "dns_servfail",
    "dns_nxdomain",
    "dtls_record",
    "dtls_client_hello",
    "dtls_hello_verify",
    "dtls_server_hello",
    "tls_hello",
    "icmp_frag_needed",
    "icmpv6_packet_too_big",
    "icmp_port_unreachable",
    "tcp_syn",
    "tcp_large_retransmit",
    "tcp_fin",
];
const LOST_SOURCES: &[&str] = &["ringbuf", "queue", "undecodable"];
const RCODES: &[&str] = &["NOERROR", "SERVFAIL", "NXDOMAIN", "REFUSED"];
const FINDING_KINDS: &[&str] = &[
    "dns_probe_storm",
    "dns_resolver_outage",
    "dtls_blocked",
    "dtls_port_unreachable",
    "vpn_reconnect_loop",
    "pmtu_black_hole",
    "pmtu_signal",
    "mss_exceeds_path_mtu",
    "local_icmp_suppressed",
];
/// Drop reasons as the kernel names them (a few of its `enum skb_drop_reason`), and the
/// agent's catch-all for subsystem reasons.
const DROP_REASONS: &[&str] = &["NO_SOCKET", "NETFILTER_DROP", "PKT_TOO_BIG", "OTHER_SUBSYSTEM"];
const DROP_CLASSES: &[&str] = &["other", "dns", "dtls", "tls", "icmp_error", "tcp_syn", "large_df", "vpn_port"];
const TABLES: &[&str] = &["dns_transactions", "dns_names", "dtls_flows", "tcp_flows", "findings"];

/// Every metric family the agent exposes.
const METRICS: &[&str] = &[
    "pathwatch_packets_total",
    "pathwatch_bytes_total",
    "pathwatch_events_total",
    "pathwatch_events_lost_total",
    "pathwatch_dns_responses_total",
    "pathwatch_dns_timeouts_total",
    "pathwatch_findings_total",
    "pathwatch_active_findings",
    "pathwatch_tracked_entries",
    "pathwatch_evictions_total",
    "pathwatch_drops_total",
    "pathwatch_drop_events_suppressed_total",
    "pathwatch_drop_events_lost_total",
    "pathwatch_drops_watched",
    "pathwatch_build_info",
];

/// The alerts the rules must define.
const ALERTS: &[&str] = &[
    "PathwatchDnsProbeStorm",
    "PathwatchDnsResolverOutage",
    "PathwatchDtlsBlocked",
    "PathwatchPmtuBlackHole",
    "PathwatchLocalIcmpSuppressed",
    "PathwatchEventsLost",
    "PathwatchAgentDown",
    "PathwatchAgentAbsent",
];

/// The text of `path`; panics naming it.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
