//! `/metrics` and `/healthz` (`run --metrics [ADDR:]PORT`).
//!
//! Built on prometheus-client with one custom collector: every value is read at
//! scrape time (kernel per-CPU counters summed over CPUs, userspace counters under
//! their lock), so the packet path does no work for metrics. Labels carry only
//! bounded values: interface, direction, class, kind, source, rcode, table, the
//! kernel's drop reason (and the build's version). The drop program's families are
//! in [`drops`]. Served by hyper on the agent's tokio runtime, a few connections
//! at a time, resting after a failed accept (out of file descriptors) instead of
//! spinning; a port alone listens on 127.0.0.1.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::{Class, Direction, stats as kstats};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::Shared;
use crate::detect::FindingKind;

mod drops;

/// Findings count as active while their latest evidence is this recent.
const ACTIVE_WINDOW_NS: u64 = 300_000_000_000;

/// Parses `--metrics`: `PORT` (127.0.0.1), `ADDR:PORT` or `[V6]:PORT`.
pub fn parse_listen(arg: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = arg.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    arg.parse::<SocketAddr>()
        .map_err(|_| format!("--metrics {arg:?}: expected PORT (listens on 127.0.0.1), ADDR:PORT or [IPv6]:PORT"))
}

struct AgentCollector {
    shared: Arc<Shared>,
    clock: super::EventClock,
}

impl std::fmt::Debug for AgentCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentCollector")
    }
}

type Labels = Vec<(&'static str, String)>;

fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let probe = ConstCounter::new(0u64);
    let mut m = enc.encode_descriptor(name, help, None, probe.metric_type())?;
    for (labels, v) in samples {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let probe = ConstGauge::new(0i64);
    let mut m = enc.encode_descriptor(name, help, None, probe.metric_type())?;
    for (labels, v) in samples {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Both read the kernel before the state lock is taken, the order every reader keeps.
        let drop_counts = super::drops::counts(&self.shared);
        // A gone interface keeps its series, final, until its slot goes to another.
        let super::stats::Counted { interfaces, totals, kstats } = super::stats::counted(&self.shared);
        let mut packets = Vec::new();
        let mut bytes = Vec::new();
        for (listed, counts) in &interfaces {
            for dir in Direction::ALL {
                for class in Class::ALL {
                    let c = counts.get(dir, class);
                    let labels: Labels = vec![
                        ("iface", listed.name.clone()),
                        ("direction", dir.name().into()),
                        ("class", class.name().into()),
                    ];
                    packets.push((labels.clone(), c.packets));
                    bytes.push((labels, c.bytes));
                }
            }
        }
        counter_family(
            &mut enc,
            "pathwatch_packets",
            "Packets seen by the kernel programs, by interface, direction and class.",
            &packets,
        )?;
        counter_family(
            &mut enc,
            "pathwatch_bytes",
            "Bytes seen by the kernel programs, by interface, direction and class.",
            &bytes,
        )?;

        let (kernel_held, kernel_evicted) = super::stats::kernel_flows(&self.shared, &kstats);
        let st = self.shared.state.lock().expect("state lock");
        let mut counts = st.counts;
        counts.dtls_record = Direction::ALL.iter().map(|d| totals.get(*d, Class::Dtls).packets).sum();
        let events = serde_json::to_value(counts).expect("plain counters");
        let mut per_kind = Vec::new();
        for (k, v) in events.as_object().expect("object") {
            if k != "events_lost" {
                per_kind.push((vec![("kind", k.clone())], v.as_u64().unwrap_or(0)));
            }
        }
        counter_family(
            &mut enc,
            "pathwatch_events",
            "Events decoded from the kernel, by kind (packets, as in the summary line).",
            &per_kind,
        )?;
        counter_family(
            &mut enc,
            "pathwatch_events_lost",
            "Events lost before the detectors, by source: ringbuf = the kernel could not reserve ring-buffer \
             space (a consumer falling behind shows here); queue = dropped from a userspace queue, always 0 (the \
             agent reads the ring buffer straight into the detectors); undecodable = ring-buffer records the agent \
             could not decode.",
            &[
                (vec![("source", "ringbuf".into())], kstats[kstats::RINGBUF_FULL as usize]),
                (vec![("source", "queue".into())], 0),
                (vec![("source", "undecodable".into())], st.undecodable),
            ],
        )?;
        let rcodes: Vec<(Labels, u64)> =
            st.detectors.dns.rcode_totals.iter().map(|(r, n)| (vec![("rcode", r.clone())], *n)).collect();
        counter_family(&mut enc, "pathwatch_dns_responses", "DNS responses by rcode.", &rcodes)?;
        counter_family(
            &mut enc,
            "pathwatch_dns_timeouts",
            "DNS query packets left unanswered for dns.timeout_s.",
            &[(vec![], st.detectors.dns.timeouts_total)],
        )?;
        let totals = st.detectors.book.totals();
        let active = st.detectors.book.active(self.clock.now(), ACTIVE_WINDOW_NS);
        let findings: Vec<(Labels, u64)> = FindingKind::ALL
            .iter()
            .map(|k| (vec![("kind", k.name().to_string())], totals.get(k).copied().unwrap_or(0)))
            .collect();
        counter_family(&mut enc, "pathwatch_findings", "Findings raised, by kind.", &findings)?;
        let active: Vec<(Labels, i64)> = FindingKind::ALL
            .iter()
            .map(|k| (vec![("kind", k.name().to_string())], active.get(k).copied().unwrap_or(0) as i64))
            .collect();
        gauge_family(
            &mut enc,
            "pathwatch_active_findings",
            "Findings at warning or above whose latest evidence is less than 5 minutes old, by kind (info findings are not active).",
            &active,
        )?;
        let mut tracked: Vec<(Labels, i64)> =
            st.detectors.tracked().into_iter().map(|(t, n)| (vec![("table", t.to_string())], n as i64)).collect();
        tracked.push((vec![("table", "kernel_flows".to_string())], kernel_held as i64));
        gauge_family(&mut enc, "pathwatch_tracked_entries", "Entries held per state table.", &tracked)?;
        let mut evictions: Vec<(Labels, u64)> =
            st.detectors.evictions().into_iter().map(|(t, n)| (vec![("table", t.to_string())], n)).collect();
        evictions.push((vec![("table", "kernel_flows".to_string())], kernel_evicted));
        counter_family(
            &mut enc,
            "pathwatch_evictions",
            "Entries evicted per state table (LRU, at its cap).",
            &evictions,
        )?;
        drop(st);
        drops::encode(&mut enc, drop_counts.as_ref())?;
        gauge_family(
            &mut enc,
            "pathwatch_build_info",
            "Build information; always 1.",
            &[(vec![("version", env!("CARGO_PKG_VERSION").to_string())], 1)],
        )?;
        Ok(())
    }
}

/// The metrics text for the current state (Prometheus text format 0.0.4).
pub fn render(shared: &Arc<Shared>, clock: super::EventClock) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AgentCollector { shared: shared.clone(), clock }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).expect("writing to a String");
    out
}

/// Connections served at once; more wait in the listen backlog until one ends.
pub const MAX_CONNECTIONS: usize = 8;
/// A connection that sends no complete request head for this long (also one idle
/// between keep-alive requests) is closed, so that idle clients cannot hold every
/// connection slot.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed `accept` (EMFILE: out of file descriptors, ENOBUFS, ...), the
/// listener rests this long at first, doubling to [`ACCEPT_PAUSE_MAX`] while failures
/// go on: the pending connection stays pending, and retrying at once would spin.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(50);
/// The longest rest between two accepts that fail.
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Accept failures are reported at most this often (with their count).
const ACCEPT_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Failed accepts: how long to rest after each, and what to tell the operator, when.
#[derive(Debug)]
struct AcceptFailures {
    total: u64,
    unreported: u64,
    last_report: Option<Instant>,
    pause: Duration,
    failing: bool,
}

impl AcceptFailures {
    fn new() -> AcceptFailures {
        AcceptFailures { total: 0, unreported: 0, last_report: None, pause: ACCEPT_PAUSE_MIN, failing: false }
    }

    /// An accept failed with `error` at `now`: how long to rest, and a line to print
    /// (the first failure at once, then at most every [`ACCEPT_REPORT_EVERY`]).
    fn failed(&mut self, error: &std::io::Error, now: Instant) -> (Duration, Option<String>) {
        self.total += 1;
        self.unreported += 1;
        self.failing = true;
        let pause = self.pause;
        self.pause = (self.pause * 2).min(ACCEPT_PAUSE_MAX);
        let due = self.last_report.is_none_or(|t| now.duration_since(t) >= ACCEPT_REPORT_EVERY);
        let line = due.then(|| {
            let line = format!(
                "warning: metrics: cannot accept connections: {error}; {} failed accepts since the last report, {} in all; retrying at most every {} ms",
                self.unreported,
                self.total,
                ACCEPT_PAUSE_MAX.as_millis()
            );
            self.unreported = 0;
            self.last_report = Some(now);
            line
        });
        (pause, line)
    }

    /// An accept succeeded: a line to print when it ends a run of failures.
    fn succeeded(&mut self) -> Option<String> {
        self.pause = ACCEPT_PAUSE_MIN;
        std::mem::take(&mut self.failing)
            .then(|| format!("notice: metrics: accepting connections again ({} failed accepts in all)", self.total))
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until the runtime stops: at most
/// [`MAX_CONNECTIONS`] at once, resting after failed accepts.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, clock: super::EventClock) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut failures = AcceptFailures::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                if let Some(line) = failures.succeeded() {
                    eprintln!("{line}");
                }
                stream
            }
            Err(e) => {
                let (pause, line) = failures.failed(&e, Instant::now());
                if let Some(line) = line {
                    eprintln!("{line}");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move {
                    let (status, ctype, body) = match (req.method(), req.uri().path()) {
                        (&hyper::Method::GET, "/metrics") => (
                            StatusCode::OK,
                            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                            render(&shared, clock),
                        ),
                        (&hyper::Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
                        (&hyper::Method::GET, _) => {
                            (StatusCode::NOT_FOUND, "text/plain", "only /metrics and /healthz\n".into())
                        }
                        _ => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into()),
                    };
                    Response::builder().status(status).header("content-type", ctype).body(Full::new(Bytes::from(body)))
                }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_accepts_rest_longer_and_are_reported_once_in_a_while() {
        let mut f = AcceptFailures::new();
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        let t0 = Instant::now();
        let (pause, line) = f.failed(&emfile, t0);
        assert_eq!(pause, ACCEPT_PAUSE_MIN);
        let line = line.expect("the first failure is reported");
        assert!(
            line.starts_with("warning: metrics: cannot accept connections: ") && line.contains("1 in all"),
            "{line}"
        );
        let mut pauses = vec![pause];
        for k in 1..100u32 {
            let (pause, line) = f.failed(&emfile, t0 + Duration::from_millis(100) * k);
            assert!(line.is_none(), "reported again after {k} failures: {line:?}");
            pauses.push(pause);
        }
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(*pauses.last().unwrap(), ACCEPT_PAUSE_MAX);
        let (_, line) = f.failed(&emfile, t0 + ACCEPT_REPORT_EVERY);
        let line = line.expect("reported again after a minute");
        assert!(line.contains("; 100 failed accepts since the last report, 101 in all;"), "{line}");
        let back = f.succeeded().expect("the end of the failures is said");
        assert!(back.contains("101 failed accepts in all"), "{back}");
        assert_eq!(f.succeeded(), None, "said once");
        assert_eq!(f.failed(&emfile, t0 + ACCEPT_REPORT_EVERY * 3).0, ACCEPT_PAUSE_MIN, "the pause starts over");
    }

    #[test]
    fn a_port_alone_is_loopback() {
        assert_eq!(parse_listen("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(parse_listen("0.0.0.0:9464").unwrap().to_string(), "0.0.0.0:9464");
        assert_eq!(parse_listen("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert!(parse_listen("localhost:x").is_err());
    }
}
