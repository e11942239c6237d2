//! A stand-in for the agent's /metrics: every family and label value of the metric
//! contract, its counters growing with each scrape, so that rate() has data.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use super::{
    CLASSES, DIRECTIONS, DROP_CLASSES, DROP_REASONS, EVENT_KINDS, FINDING_KINDS, IFACES, LOST_SOURCES, RCODES, TABLES,
};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0").local_addr().expect("local addr").port()
}

/// The metrics text of the contract, with counters growing with `n` (the scrape number).
fn contract_metrics(n: u64) -> String {
    let mut m = String::new();
    let mut family = |name: &str, kind: &str, help: &str, series: Vec<(String, u64)>| {
        m.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in series {
            m.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let per = |label: &str, values: &[&str], f: &dyn Fn(usize) -> u64| -> Vec<(String, u64)> {
        values.iter().enumerate().map(|(i, v)| (format!("{{{label}=\"{v}\"}}"), f(i))).collect()
    };
    let traffic = |scale: u64| {
        let mut out = Vec::new();
        for iface in IFACES {
            for dir in DIRECTIONS {
                for (i, class) in CLASSES.iter().enumerate() {
                    let labels = format!("{{iface=\"{iface}\",direction=\"{dir}\",class=\"{class}\"}}");
                    out.push((labels, n * scale * (i as u64 + 1)));
                }
            }
        }
        out
    };
    let packets = traffic(10);
    let bytes = traffic(1000);
    family("pathwatch_packets_total", "counter", "Packets seen.", packets);
    family("pathwatch_bytes_total", "counter", "Bytes seen.", bytes);
    family("pathwatch_events_total", "counter", "Events decoded.", per("kind", EVENT_KINDS, &|i| n * (i as u64 + 1)));
    family("pathwatch_events_lost_total", "counter", "Events lost.", per("source", LOST_SOURCES, &|i| n * i as u64));
    family("pathwatch_dns_responses_total", "counter", "DNS responses.", per("rcode", RCODES, &|i| n * (4 - i as u64)));
    family("pathwatch_dns_timeouts_total", "counter", "DNS timeouts.", vec![(String::new(), n)]);
    family(
        "pathwatch_findings_total",
        "counter",
        "Findings raised.",
        per("kind", FINDING_KINDS, &|i| n / 5 + i as u64),
    );
    family("pathwatch_active_findings", "gauge", "Active findings.", per("kind", FINDING_KINDS, &|i| (i % 2) as u64));
    family("pathwatch_tracked_entries", "gauge", "Tracked entries.", per("table", TABLES, &|i| 100 * (i as u64 + 1)));
    family("pathwatch_evictions_total", "counter", "Evictions.", per("table", TABLES, &|i| n * i as u64));
    let drops = DROP_REASONS
        .iter()
        .enumerate()
        .flat_map(|(r, reason)| {
            DROP_CLASSES.iter().enumerate().map(move |(c, class)| {
                (format!("{{reason=\"{reason}\",class=\"{class}\"}}"), n * (r * DROP_CLASSES.len() + c + 1) as u64)
            })
        })
        .collect();
    family("pathwatch_drops_total", "counter", "Packets this host dropped.", drops);
    family(
        "pathwatch_drop_events_suppressed_total",
        "counter",
        "Drop events suppressed.",
        vec![(String::new(), 2 * n)],
    );
    family("pathwatch_drop_events_lost_total", "counter", "Drop events lost.", vec![(String::new(), n)]);
    family("pathwatch_drops_watched", "gauge", "Drop program attached.", vec![(String::new(), 1)]);
    family("pathwatch_build_info", "gauge", "Build information.", vec![("{version=\"0.1.0\"}".into(), 1)]);
    m
}

/// A stand-in for the agent's /metrics: serves `contract_metrics` on 127.0.0.1 until
/// dropped.
pub(crate) struct FakeExporter {
    pub(crate) port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeExporter {
    pub(crate) fn start() -> FakeExporter {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind exporter");
        let port = listener.local_addr().expect("exporter addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = AtomicU64::new(0);
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => req.extend_from_slice(&buf[..k]),
                    }
                }
                let (status, body) = if req.starts_with(b"GET /metrics") {
                    ("200 OK", contract_metrics(scrapes.fetch_add(1, Ordering::SeqCst) + 1))
                } else if req.starts_with(b"GET /healthz") {
                    ("200 OK", "ok\n".to_string())
                } else {
                    ("404 Not Found", "only /metrics and /healthz\n".to_string())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeExporter { port, stop, thread: Some(thread) }
    }
}

impl Drop for FakeExporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
