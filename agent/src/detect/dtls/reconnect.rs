//! TLS sessions that come back at a steady rhythm: `vpn_reconnect_loop`.
//!
//! A VPN that lost its DTLS tunnel falls back to TLS and rebuilds its session at a
//! steady rhythm (AnyConnect: about once a minute). Browsers, apps and API pollers also
//! open TLS sessions to one server again and again, so the rhythm alone proves nothing.
//! A loop needs both:
//!
//! - a sustained rhythm: the latest run of sessions from one client to one server:port
//!   whose intervals are all within `reconnect_tolerance` of their median, with at
//!   least `reconnect_min_sessions` sessions over at least `reconnect_min_span_s`, no
//!   more often than `reconnect_min_period_s`. It is judged again at every new session:
//!   a session off the rhythm ends the run, and the finding is no longer extended;
//! - VPN evidence for that client and server: DTLS ClientHellos between them within
//!   `tls_window_s` of the run (`dtls`; blocked or unreachable DTLS starts with those
//!   too), or the server or port listed in `vpn_servers` / `vpn_ports` (`config`).
//!
//! A session is a TLS ClientHello on a new TCP flow (the client port changed): a
//! retransmitted or copied ClientHello, or the second ClientHello after a TLS 1.3
//! HelloRetryRequest, is the same session. "A long-lived session torn down and rebuilt"
//! is not used as evidence: the kernel reports neither FIN nor RST nor the bulk
//! packets in between, so a session's end and its lifetime are not visible, only its
//! start, which is the rhythm itself.

use std::{collections::VecDeque, net::IpAddr};

use agent_common::proto::HS_CLIENT_HELLO;
use serde_json::{Map, json};

use super::Subject;
use crate::{
    config::Config,
    detect::{
        finding::{Finding, FindingBook, Severity},
        kind::FindingKind,
        pending::Pending,
        table::Table,
        util::{intervals, median, regularity, round3, secs},
    },
    event::Event,
};

/// TLS session starts remembered per (client, server, port).
const SESSION_TIMES: usize = 32;

/// A run of sessions at a regular interval, as of its latest session.
#[derive(Clone, Copy, Debug)]
struct Run {
    first: u64,
    last: u64,
    sessions: u64,
    period_s: f64,
}

#[derive(Default)]
struct Sessions {
    starts: VecDeque<u64>,
    /// Client port of the latest session.
    last_port: u16,
    /// The latest run of regular intervals (one session alone is a run of one).
    run: Option<Run>,
    /// The latest run that was a loop, as it stood at its last session on the rhythm.
    looped: Option<Run>,
}

/// Which evidence says the client and server are a VPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VpnEvidence {
    Dtls,
    Config,
}

impl VpnEvidence {
    fn name(self) -> &'static str {
        match self {
            VpnEvidence::Dtls => "dtls",
            VpnEvidence::Config => "config",
        }
    }
}

/// TLS sessions per subject, DTLS ClientHellos per (client, server), and the loops.
pub(super) struct Reconnect {
    tls_window_ns: u64,
    min_sessions: u64,
    min_span_ns: u64,
    tolerance: f64,
    min_period_s: f64,
    vpn_servers: Vec<IpAddr>,
    vpn_ports: Vec<u16>,
    tls: Table<Subject, Sessions>,
    /// Latest TLS ClientHello per (client, server), any port.
    tls_last: Table<(IpAddr, IpAddr), u64>,
    /// First and latest DTLS ClientHello per (client, server), any port.
    dtls_pairs: Table<(IpAddr, IpAddr), (u64, u64)>,
    pending: Pending<Subject>,
}

/// How many of the latest `intervals` form a regular run: each within `tolerance` of
/// the run's median. The run grows back from the newest interval while it stays regular.
fn latest_regular_run(intervals: &[f64], tolerance: f64) -> usize {
    (1..=intervals.len())
        .take_while(|&k| regularity(&intervals[intervals.len() - k..], tolerance).is_some_and(|(regular, ..)| regular))
        .last()
        .unwrap_or(0)
}

impl Reconnect {
    pub(super) fn new(cfg: &Config) -> Reconnect {
        let mut r = Reconnect {
            tls_window_ns: 0,
            min_sessions: 0,
            min_span_ns: 0,
            tolerance: 0.0,
            min_period_s: 0.0,
            vpn_servers: Vec::new(),
            vpn_ports: Vec::new(),
            tls: Table::new("tls_sessions", cfg.dtls.flows_cap.0),
            tls_last: Table::new("tls_pairs", cfg.dtls.flows_cap.0),
            dtls_pairs: Table::new("dtls_pairs", cfg.dtls.flows_cap.0),
            pending: Pending::new("pending_vpn_reconnect_loop", cfg.output.pending_cap.0),
        };
        r.reconfigure(cfg);
        r
    }

    pub(super) fn reconfigure(&mut self, cfg: &Config) {
        let d = &cfg.dtls;
        self.tls_window_ns = d.tls_window_s.ns();
        self.min_sessions = d.reconnect_min_sessions.0;
        self.min_span_ns = d.reconnect_min_span_s.ns();
        self.tolerance = d.reconnect_tolerance.0;
        self.min_period_s = d.reconnect_min_period_s.0;
        self.vpn_servers = d.vpn_servers.clone();
        self.vpn_ports = d.vpn_ports.iter().map(|p| p.0).collect();
        self.tls.resize(d.flows_cap.0);
        self.tls_last.resize(d.flows_cap.0);
        self.dtls_pairs.resize(d.flows_cap.0);
        self.pending.resize(cfg.output.pending_cap.0);
    }

    pub(super) fn occupancy(&self) -> Vec<(&'static str, usize, u64)> {
        vec![
            (self.tls.name(), self.tls.len(), self.tls.evictions()),
            (self.tls_last.name(), self.tls_last.len(), self.tls_last.evictions()),
            (self.dtls_pairs.name(), self.dtls_pairs.len(), self.dtls_pairs.evictions()),
            self.pending.occupancy(),
        ]
    }

    pub(super) fn pending_full(&self) -> bool {
        self.pending.is_full()
    }

    /// Whether `client` started a TLS session to `server` within `tls_window_s` of `now`.
    pub(super) fn tls_seen(&self, client: IpAddr, server: IpAddr, now: u64) -> bool {
        self.tls_last.peek(&(client, server)).is_some_and(|&last| now.abs_diff(last) <= self.tls_window_ns)
    }

    /// A DTLS ClientHello from `client` to `server`: VPN evidence for their TLS.
    pub(super) fn on_dtls_hello(&mut self, client: IpAddr, server: IpAddr, now: u64) {
        let seen = self.dtls_pairs.entry((client, server), || (now, now));
        seen.0 = seen.0.min(now);
        seen.1 = seen.1.max(now);
    }

    /// A TLS ClientHello or ServerHello on TCP.
    pub(super) fn on_tls(&mut self, ev: &Event) {
        if ev.header.info.handshake_mask & (1 << HS_CLIENT_HELLO) == 0 {
            return;
        }
        let now = ev.header.ts_ns;
        let subject = Subject { client: ev.src_ip(), server: ev.dst_ip(), port: ev.header.dst_port };
        *self.tls_last.entry((subject.client, subject.server), || now) = now;
        let tls = self.tls.entry(subject, Sessions::default);
        if !tls.starts.is_empty() && tls.last_port == ev.header.src_port {
            return;
        }
        tls.last_port = ev.header.src_port;
        if tls.starts.len() == SESSION_TIMES {
            tls.starts.pop_front();
        }
        tls.starts.push_back(now);
        let gaps = intervals(tls.starts.make_contiguous());
        let k = latest_regular_run(&gaps, self.tolerance);
        let mut run_gaps = gaps[gaps.len() - k..].to_vec();
        let period_s = median(&mut run_gaps).unwrap_or(0.0);
        // A run that filled the whole window and was already longer than it goes on
        // from where it began; otherwise it begins `k` sessions back.
        let run = match tls.run {
            Some(r) if k == gaps.len() && r.sessions as usize >= tls.starts.len() - 1 => {
                Run { first: r.first, last: now, sessions: r.sessions + 1, period_s }
            }
            _ => Run { first: tls.starts[tls.starts.len() - 1 - k], last: now, sessions: k as u64 + 1, period_s },
        };
        tls.run = Some(run);
        if run.sessions >= self.min_sessions
            && run.last.saturating_sub(run.first) >= self.min_span_ns
            && run.period_s >= self.min_period_s
        {
            tls.looped = Some(run);
            self.pending.mark(&subject, now);
        }
    }

    /// What says that `s` is a VPN during `run`, if anything does.
    fn vpn_evidence(&self, s: Subject, run: Run) -> Option<VpnEvidence> {
        let near = |&(first, last): &(u64, u64)| {
            last.saturating_add(self.tls_window_ns) >= run.first && first <= run.last.saturating_add(self.tls_window_ns)
        };
        if self.dtls_pairs.peek(&(s.client, s.server)).is_some_and(near) {
            Some(VpnEvidence::Dtls)
        } else if self.vpn_servers.contains(&s.server) || self.vpn_ports.contains(&s.port) {
            Some(VpnEvidence::Config)
        } else {
            None
        }
    }

    /// Builds the loops whose evidence changed since the last flush.
    pub(super) fn flush(&mut self, book: &mut FindingBook) {
        for (s, at) in self.pending.drain() {
            self.report(s, at, book);
        }
    }

    fn report(&self, s: Subject, now: u64, book: &mut FindingBook) {
        let Some(run) = self.tls.peek(&s).and_then(|t| t.looped) else { return };
        let Some(vpn) = self.vpn_evidence(s, run) else { return };
        let span_s = secs(run.last.saturating_sub(run.first));
        let mut evidence = Map::new();
        evidence.insert("sessions".into(), json!(run.sessions));
        evidence.insert("period_s".into(), json!(round3(run.period_s)));
        evidence.insert("span_s".into(), json!(round3(span_s)));
        evidence.insert("vpn_evidence".into(), json!(vpn.name()));
        let why = match vpn {
            VpnEvidence::Dtls => "it also sends DTLS to that server",
            VpnEvidence::Config => "the server is configured as a VPN",
        };
        let finding = Finding {
            kind: FindingKind::VpnReconnectLoop,
            severity: Severity::Warning,
            first_seen_ns: run.first,
            last_seen_ns: run.last,
            summary: format!(
                "{} opens a new TLS session to {}:{} every {:.0} s ({} sessions over {:.0} s) and {why}: the VPN keeps \
                 reconnecting",
                s.client, s.server, s.port, run.period_s, run.sessions, span_s
            ),
            subject: s.to_json(),
            evidence,
            remedy: "A VPN that reconnects at a steady rhythm has usually lost its DTLS tunnel and falls back to TLS \
                     with a smaller MTU: look for dtls_blocked / dtls_port_unreachable for this client, let the VPN's \
                     UDP port through, and check that the server's DTLS port matches the one it announces."
                .into(),
        };
        book.upsert(finding, format!("{:.0}|{}", run.period_s / 10.0, vpn.name()), now);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{T0, dtls_hello, found, tls_hello};
    use crate::{
        config::{Config, Port},
        detect::{Detectors, Emission, Finding, FindingKind},
    };

    const S: u64 = 1_000_000_000;

    /// TLS sessions from 198.18.0.1 to 198.18.1.1:443 with these gaps (s), each from
    /// a new client port, starting at T0; returns the time of the last.
    fn sessions(d: &mut Detectors, gaps: &[f64]) -> u64 {
        let mut t = T0;
        d.on_event(&tls_hello(t, 1, 40000, 1, 443));
        for (i, gap) in gaps.iter().enumerate() {
            t += (gap * S as f64) as u64;
            d.on_event(&tls_hello(t, 1, 40001 + i as u16, 1, 443));
        }
        t
    }

    /// Port 443 configured as a VPN port: the rhythm alone decides.
    fn vpn_port_443() -> Config {
        let mut cfg = Config::default();
        cfg.dtls.vpn_ports = vec![Port(443)];
        cfg
    }

    fn loops(cfg: &Config, gaps: &[f64]) -> Vec<Finding> {
        let mut d = Detectors::new(cfg, Emission::AtEnd);
        let end = sessions(&mut d, gaps);
        d.finish(end + S);
        found(&mut d, FindingKind::VpnReconnectLoop)
    }

    #[test]
    fn irregular_browser_sessions_are_no_loop() {
        // 21 sessions of a browser to one server, gaps from 0.04 to 162 s, with short
        // stretches of a page refreshing every ~11 s (where the old rule saw a loop
        // "every 11 s"): never a rhythm sustained for minutes.
        let gaps = [
            0.04, 11.2, 10.9, 0.3, 162.0, 0.05, 11.0, 11.4, 12.1, 45.3, 0.2, 98.7, 0.04, 30.5, 11.0, 0.9, 140.2, 11.3,
            0.06, 60.4,
        ];
        assert_eq!(gaps.len(), 20);
        assert!(loops(&vpn_port_443(), &gaps).is_empty());
    }

    #[test]
    fn four_sessions_110_110_183_s_apart_are_no_loop() {
        // Four sessions to www.google.com: the 183 s gap is off the 110 s rhythm, so
        // the latest regular run is three sessions, short of four.
        assert!(loops(&vpn_port_443(), &[110.0, 110.0, 183.0]).is_empty());
        // The same gaps in a steady rhythm are one.
        assert_eq!(loops(&vpn_port_443(), &[110.0, 110.0, 110.0]).len(), 1);
    }

    #[test]
    fn a_steady_rhythm_without_vpn_evidence_is_no_loop() {
        // An API poller every 60 s for ten minutes.
        assert!(loops(&Config::default(), &[60.0; 10]).is_empty());
        // DTLS between the client and another server is no evidence for this one.
        let mut d = Detectors::new(&Config::default(), Emission::AtEnd);
        let mut other = dtls_hello(T0, 1, 50000, 0);
        other.header.dst_addr[3] = 2;
        d.on_event(&other);
        let end = sessions(&mut d, &[60.0; 10]);
        d.finish(end + S);
        assert!(found(&mut d, FindingKind::VpnReconnectLoop).is_empty());
    }

    #[test]
    fn a_steady_rhythm_with_dtls_hellos_to_that_server_is_a_loop() {
        let mut d = Detectors::new(&Config::default(), Emission::AtEnd);
        let end = sessions(&mut d, &[60.0, 61.0, 59.0, 60.0, 60.5, 60.0]);
        // The client tries DTLS after its last session (as AnyConnect does after each
        // TLS connect), to another port of the same server.
        let mut hello = dtls_hello(end + S, 1, 50000, 0);
        hello.header.dst_port = 8443;
        d.on_event(&hello);
        d.finish(end + 2 * S);
        let f = found(&mut d, FindingKind::VpnReconnectLoop);
        assert_eq!(f.len(), 1, "{f:#?}");
        let e = &f[0].evidence;
        assert_eq!((&e["sessions"], &e["period_s"], &e["span_s"]), (&json!(7), &json!(60.0), &json!(360.5)));
        assert_eq!(e["vpn_evidence"], "dtls");
        assert_eq!(f[0].subject["port"], 443);
        assert!(f[0].summary.contains("every 60 s (7 sessions over 360 s)"), "{}", f[0].summary);
    }

    #[test]
    fn a_steady_rhythm_to_a_configured_vpn_server_or_port_is_a_loop() {
        let f = loops(&vpn_port_443(), &[60.0; 5]);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].evidence["vpn_evidence"], "config");
        let mut by_server = Config::default();
        by_server.dtls.vpn_servers = vec!["198.18.1.1".parse().unwrap()];
        let f = loops(&by_server, &[60.0; 5]);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].evidence["vpn_evidence"], "config");
        // Another server is not the configured one.
        by_server.dtls.vpn_servers = vec!["198.18.1.2".parse().unwrap()];
        assert!(loops(&by_server, &[60.0; 5]).is_empty());
        // Four sessions a minute apart span only 180 s: not sustained yet.
        assert!(loops(&vpn_port_443(), &[60.0; 3]).is_empty());
    }

    #[test]
    fn a_rhythm_that_breaks_stops_being_a_loop() {
        let mut d = Detectors::new(&vpn_port_443(), Emission::Live { interval_ns: 60 * S });
        // Six sessions a minute apart: a loop from the sixth on.
        let last_regular = sessions(&mut d, &[60.0; 5]);
        let f = found(&mut d, FindingKind::VpnReconnectLoop);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].evidence["sessions"], 6);
        // Then sessions off the rhythm: the loop is not extended, and is not printed again.
        for (i, gap) in [7.0, 150.0, 0.5, 95.0, 33.0].iter().enumerate() {
            let t = last_regular + (gap * S as f64) as u64 + i as u64 * 200 * S;
            d.on_event(&tls_hello(t, 1, 41000 + i as u16, 1, 443));
        }
        assert!(found(&mut d, FindingKind::VpnReconnectLoop).is_empty());
        d.finish(last_regular + 1200 * S);
        let all = d.book.all();
        let f: Vec<_> = all.iter().filter(|f| f.kind == FindingKind::VpnReconnectLoop).collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].last_seen_ns, last_regular, "the finding ends at the last session on the rhythm");
        assert_eq!(f[0].evidence["sessions"], 6);
        // A rhythm that breaks before it is sustained never becomes a loop.
        assert!(loops(&vpn_port_443(), &[60.0, 60.0, 60.0, 60.0, 20.0, 60.0, 60.0]).is_empty());
    }

    #[test]
    fn a_loop_longer_than_the_sessions_remembered_counts_them_all() {
        let f = loops(&vpn_port_443(), &[60.0; 49]);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!((&f[0].evidence["sessions"], &f[0].evidence["span_s"]), (&json!(50), &json!(2940.0)));
        assert_eq!(f[0].first_seen_ns, T0);
    }

    #[test]
    fn a_session_stamped_before_the_previous_one_ends_the_run() {
        // Live, events from two CPUs can reach the agent a little out of order.
        let mut d = Detectors::new(&vpn_port_443(), Emission::AtEnd);
        let last = sessions(&mut d, &[60.0; 5]);
        d.on_event(&tls_hello(last - S / 1000, 1, 42000, 1, 443));
        d.finish(last + S);
        let f = found(&mut d, FindingKind::VpnReconnectLoop);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!((f[0].last_seen_ns, &f[0].evidence["sessions"]), (last, &json!(6)));
    }

    #[test]
    fn a_repeated_client_hello_on_one_tcp_flow_is_one_session() {
        let mut d = Detectors::new(&vpn_port_443(), Emission::AtEnd);
        let mut t = T0;
        for i in 0..6u16 {
            d.on_event(&tls_hello(t, 1, 40000 + i, 1, 443));
            // A TCP retransmission (or a copy) of the ClientHello 200 ms later.
            d.on_event(&tls_hello(t + S / 5, 1, 40000 + i, 1, 443));
            t += 60 * S;
        }
        d.finish(t);
        let f = found(&mut d, FindingKind::VpnReconnectLoop);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].evidence["sessions"], 6);
    }
}
