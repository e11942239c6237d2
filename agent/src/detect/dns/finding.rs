//! The findings' words: summary, evidence and remedy of a `dns_probe_storm` and of a
//! `dns_resolver_outage`, and how urgent each is.

use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::{
    outage::OutageEvidence,
    pattern::Pattern,
    series::{Counts, IcmpReport, SeriesKey},
};
use crate::{
    config::KnownProbe,
    decode::dns::{qtype_name, rcode_name},
    detect::{
        finding::{Finding, Severity, rfc3339},
        kind::FindingKind,
        util::{round3, secs},
    },
};

/// How long a storm must persist before it warns.
pub struct Persistence {
    /// `dns.storm_min_span_s` (and three periods).
    pub min_span_s: f64,
    /// `dns.negative_min_span_s`.
    pub negative_min_span_s: f64,
    /// `dns.resolved_before_min_span_s`.
    pub resolved_before_min_span_s: f64,
}

/// What is known of a storm besides its counts.
pub struct StormFacts<'a> {
    /// Its series.
    pub key: &'a SeriesKey,
    /// The name, printable.
    pub qname: String,
    /// The shape of its queries.
    pub pattern: Pattern,
    /// Median latency of the series' answers.
    pub median_latency: Option<f64>,
    /// The known probe it is.
    pub probe: Option<KnownProbe>,
    /// The name is negative by design.
    pub negative: bool,
    /// It was answered NOERROR before the storm began.
    pub resolved_before: bool,
    /// A lookup sent since the storm began was answered NOERROR (late answers
    /// included): the name works, the failing was a passing stall.
    pub resolved_again: bool,
    /// The longest run of failed lookups with no NOERROR answer between (s).
    pub longest_failing_s: f64,
    /// The latest ICMP error about its queries.
    pub icmp: Option<IcmpReport>,
}

/// An ICMP error's meaning, in words.
fn icmp_words(r: &IcmpReport) -> String {
    let what = match (r.ip_version, r.icmp_type, r.code) {
        (4, 3, 0) => "network unreachable",
        (4, 3, 1) => "host unreachable",
        (4, 3, 2) => "protocol unreachable",
        (4, 3, 3) => "port unreachable",
        (4, 3, 9 | 10 | 13) => "administratively prohibited",
        (4, 11, _) | (6, 3, _) => "time exceeded",
        (6, 1, 0) => "no route",
        (6, 1, 1) => "administratively prohibited",
        (6, 1, 3) => "address unreachable",
        (6, 1, 4) => "port unreachable",
        _ => return format!("type {} code {}", r.icmp_type, r.code),
    };
    what.to_string()
}

/// A storm's subject: who asks whom for what.
pub fn storm_subject(key: &SeriesKey, qname: &str) -> Map<String, Value> {
    let mut subject = Map::new();
    subject.insert("client".into(), json!(key.client.to_string()));
    subject.insert("resolver".into(), json!(key.resolver.to_string()));
    subject.insert("qname".into(), json!(qname));
    subject.insert("qtype".into(), json!(qtype_name(key.qtype)));
    subject
}

/// A storm's finding and the evidence that, changed, is worth printing again.
pub fn storm_finding(f: StormFacts<'_>, c: &Counts, persistence: &Persistence) -> (Finding, String) {
    let key = f.key;
    let qtype = qtype_name(key.qtype);
    let qname = &f.qname;
    let pattern = &f.pattern;
    let first = c.first_ts.unwrap_or(c.last_ts);
    let span = secs(c.last_ts.saturating_sub(first));
    let mut min_span = persistence.min_span_s;
    if f.negative {
        min_span = min_span.max(persistence.negative_min_span_s);
    }
    let mut persisted = span >= min_span && pattern.period.is_none_or(|p| span >= 3.0 * p);
    if f.resolved_before || f.resolved_again {
        // A name that also resolves failed for as long as its longest run of failures,
        // not from its first failure to its last (two stalls a day apart are not a
        // day of failing).
        persisted &= f.longest_failing_s >= persistence.resolved_before_min_span_s;
    }
    let severity = if persisted { Severity::Warning } else { Severity::Info };
    let rcodes: Map<String, Value> = c.rcodes.iter().map(|(r, n)| (rcode_name(*r), json!(n))).collect();
    let icmp = f.icmp.filter(|_| c.icmp_errors > 0);

    let subject = storm_subject(key, qname);

    let mut evidence = Map::new();
    evidence.insert("queries".into(), json!(c.queries));
    evidence.insert("responses".into(), json!(c.responses));
    evidence.insert("rcodes".into(), Value::Object(rcodes));
    evidence.insert("timeouts".into(), json!(c.timeouts));
    evidence.insert("pending".into(), json!(c.pending));
    evidence.insert("lookups".into(), json!(c.lookups));
    evidence.insert("failed_lookups".into(), json!(c.failed));
    evidence.insert("icmp_errors".into(), json!(c.icmp_errors));
    evidence.insert("icmp_from".into(), json!(icmp.map(|i| i.from.to_string())));
    evidence.insert("pattern".into(), json!(pattern.name));
    evidence.insert("period_s".into(), json!(pattern.period.map(round3)));
    evidence.insert("jitter_s".into(), json!(pattern.jitter.map(round3)));
    evidence.insert("episodes".into(), json!(pattern.episodes));
    evidence.insert("span_s".into(), json!(round3(span)));
    evidence.insert("median_latency_s".into(), json!(f.median_latency.map(round3)));
    evidence.insert("known_probe".into(), json!(f.probe.as_ref().map(|p| p.name.clone())));
    evidence.insert("negative_by_design".into(), json!(f.negative));
    evidence.insert("resolved_before".into(), json!(f.resolved_before));
    evidence.insert("resolved_again".into(), json!(f.resolved_again));
    evidence.insert("longest_failing_s".into(), json!(round3(f.longest_failing_s)));

    let how = match (pattern.name, pattern.period) {
        ("periodic", Some(p)) => format!(" every {p:.1} s"),
        ("episodes", _) => format!(" {} times in {} episodes", c.queries, pattern.episodes),
        ("backoff", _) => format!(
            ", retrying with growing back-off ({} s)",
            pattern.gaps.iter().map(|g| format!("{g:.0}")).collect::<Vec<_>>().join(", ")
        ),
        _ => format!(" {} times", c.queries),
    };
    let summary =
        format!("{} asks {} for {qtype} {qname}{how}; {}", key.client, key.resolver, describe_failures(c, icmp));
    let resolver = key.resolver;
    let remedy = match (&f.probe, icmp) {
        (Some(p), _) => p.remedy.clone(),
        (None, Some(i)) if i.from == resolver => format!(
            "{resolver} answers DNS queries with ICMP {}: nothing serves DNS there. Start the DNS service on \
             {resolver}, or point {} at a resolver that runs.",
            icmp_words(&i),
            key.client
        ),
        (None, Some(i)) => format!(
            "{} reports ICMP {} for queries to {resolver}: the path is broken, not the resolver. Fix the route \
             from {} to {resolver} at {}, or the firewall there that rejects DNS.",
            i.from,
            icmp_words(&i),
            key.client,
            i.from
        ),
        (None, None) => format!(
            "Find out why {resolver} cannot resolve {qname} ({}) and fix the name or the resolver; if the name \
             should not exist, stop the client from asking for it.",
            if c.responses == 0 { "it never answers" } else { "it answers with errors" }
        ),
    };
    let finding = Finding {
        kind: FindingKind::DnsProbeStorm,
        severity,
        first_seen_ns: first,
        last_seen_ns: c.last_evidence,
        summary,
        subject,
        evidence,
        remedy,
    };
    let material = format!(
        "{}|{:?}|{}|{}|{}",
        pattern.name,
        c.rcodes.keys().collect::<Vec<_>>(),
        c.responses == 0,
        c.icmp_errors > 0,
        severity.name()
    );
    (finding, material)
}

/// The failure clause of a storm's summary: never empty, a storm failed by definition.
fn describe_failures(c: &Counts, icmp: Option<IcmpReport>) -> String {
    let mut parts = Vec::new();
    for (rcode, what) in [(2u8, "SERVFAIL"), (3, "NXDOMAIN"), (5, "REFUSED")] {
        if let Some(n) = c.rcodes.get(&rcode) {
            parts.push(format!("{n}/{} answered {what}", c.queries));
        }
    }
    if let Some(i) = icmp {
        parts.push(format!("{}/{} answered by ICMP {} from {}", c.icmp_errors, c.queries, icmp_words(&i), i.from));
    } else if c.responses == 0 {
        parts.push(format!("0/{} answered", c.queries));
    }
    if c.timeouts > 0 {
        parts.push(format!("{} timed out", c.timeouts));
    }
    if parts.is_empty() {
        parts.push(format!("{}/{} lookups failed", c.failed, c.lookups));
    }
    parts.join(", ")
}

/// A duration for a summary: seconds under two minutes, else minutes.
fn duration_words(ns: u64) -> String {
    let s = secs(ns);
    if s < 120.0 { format!("{s:.0} s") } else { format!("{:.0} min", s / 60.0) }
}

/// A resolver outage's finding and its material evidence.
pub fn outage_finding(resolver: IpAddr, e: &OutageEvidence, active: Option<(u64, u64)>) -> (Finding, String) {
    let duration = e.duration_ns(active);
    let rcodes: Map<String, Value> = e.rcodes.iter().map(|(r, n)| (rcode_name(*r), json!(n))).collect();
    let mut subject = Map::new();
    subject.insert("resolver".into(), json!(resolver.to_string()));
    let mut evidence = Map::new();
    evidence.insert("start".into(), json!(rfc3339(e.start)));
    evidence.insert("end".into(), json!(rfc3339(e.end)));
    evidence.insert("duration_s".into(), json!(round3(secs(duration))));
    evidence.insert("episodes".into(), json!(e.episodes));
    evidence.insert("clients".into(), json!(e.clients.len()));
    evidence.insert("names".into(), json!(e.names.len()));
    evidence.insert("queries".into(), json!(e.queries));
    evidence.insert("lookups".into(), json!(e.lookups));
    evidence.insert("failed".into(), json!(e.failed));
    evidence.insert("rcodes".into(), Value::Object(rcodes));
    evidence.insert("timeouts".into(), json!(e.timeouts));
    evidence.insert("icmp_errors".into(), json!(e.icmp_errors));
    let mut how = Vec::new();
    if e.timeouts > 0 {
        how.push("timeouts".to_string());
    }
    for (rcode, what) in [(2u8, "SERVFAIL"), (5, "REFUSED")] {
        if e.rcodes.get(&rcode).is_some_and(|n| *n > 0) {
            how.push(what.to_string());
        }
    }
    if e.icmp_errors > 0 {
        how.push("ICMP errors".to_string());
    }
    let plural = |n: usize, one: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") };
    let summary = format!(
        "resolver {resolver} failed {}/{} lookups of {} from {} for {}{} ({})",
        e.failed,
        e.lookups,
        plural(e.names.len(), "name"),
        plural(e.clients.len(), "client"),
        duration_words(duration),
        if e.episodes > 1 { format!(" in {} episodes", e.episodes) } else { String::new() },
        how.join(", ")
    );
    let remedy = format!(
        "Check the resolver {resolver}: is its DNS service up and answering, and can it reach its upstream \
         (forwarders or root servers)? Many names failed there at once, so fix the resolver (or point its \
         clients at another one), not the names."
    );
    let finding = Finding {
        kind: FindingKind::DnsResolverOutage,
        severity: Severity::Warning,
        first_seen_ns: e.start,
        last_seen_ns: e.end,
        summary,
        subject,
        evidence,
        remedy,
    };
    (finding, format!("{}|{}", e.episodes, how.join(",")))
}
