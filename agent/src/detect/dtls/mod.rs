//! DTLS and the VPN around it: `dtls_blocked`, `dtls_port_unreachable`,
//! `vpn_reconnect_loop`.
//!
//! Two halves that lean on each other. [`blocked`] follows DTLS flows: ClientHellos
//! that the client kept sending and no DTLS record answered are blocked DTLS, an ICMP
//! port unreachable quoting the flow says nothing listens there. [`reconnect`] follows
//! TLS sessions: a steady rhythm of new sessions from one client to one server is a
//! VPN that keeps reconnecting, but only with VPN evidence for that pair (DTLS between
//! them, or a server or port configured as a VPN), because browsers and pollers open
//! TLS sessions at a rhythm too. Each half asks the other one question: was TLS seen
//! near this blocked DTLS (the fallback), was DTLS seen near this rhythm (the VPN).

mod blocked;
mod reconnect;
#[cfg(test)]
pub(crate) mod testing;

use std::net::IpAddr;

use agent_common::{EventKind, proto::HS_CLIENT_HELLO};
use serde_json::{Map, json};

use super::{Detector, finding::FindingBook};
use crate::{config::Config, decode::icmp::IcmpError, event::Event};

/// One client's view of one server's UDP or TCP port: the subject of every finding here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Subject {
    client: IpAddr,
    server: IpAddr,
    port: u16,
}

impl Subject {
    fn to_json(self) -> Map<String, serde_json::Value> {
        let mut m = Map::new();
        m.insert("client".into(), json!(self.client.to_string()));
        m.insert("server".into(), json!(self.server.to_string()));
        m.insert("port".into(), json!(self.port));
        m
    }
}

/// The DTLS / VPN detector.
pub struct DtlsDetector {
    blocked: blocked::Blocked,
    reconnect: reconnect::Reconnect,
}

impl DtlsDetector {
    /// A detector with `cfg`'s thresholds and caps.
    pub fn new(cfg: &Config) -> DtlsDetector {
        DtlsDetector { blocked: blocked::Blocked::new(cfg), reconnect: reconnect::Reconnect::new(cfg) }
    }

    /// A datagram of DTLS handshake, alert or CCS records.
    fn on_dtls(&mut self, ev: &Event) {
        if ev.header.info.handshake_mask & (1 << HS_CLIENT_HELLO) != 0 {
            self.reconnect.on_dtls_hello(ev.src_ip(), ev.dst_ip(), ev.header.ts_ns);
        }
        self.blocked.on_dtls(ev);
    }
}

impl Detector for DtlsDetector {
    fn on_event(&mut self, ev: &Event, icmp: Option<&IcmpError>) {
        match (ev.kind(), icmp) {
            (EventKind::Dtls, _) => {
                self.blocked.expire(ev.header.ts_ns);
                self.on_dtls(ev);
            }
            (EventKind::Tls, _) => {
                self.blocked.expire(ev.header.ts_ns);
                self.reconnect.on_tls(ev);
            }
            (EventKind::IcmpError, Some(icmp)) => self.blocked.on_icmp(ev, icmp),
            _ => {}
        }
    }

    // `on_duplicate` keeps the default (a copy is no evidence): the flows here also
    // recognise a copied ClientHello themselves, by its bytes, for the inputs where
    // nothing upstream does.

    fn expire(&mut self, now_ns: u64) {
        self.blocked.expire(now_ns);
    }

    fn flush(&mut self, book: &mut FindingBook) {
        self.blocked.flush(book, &self.reconnect);
        self.reconnect.flush(book);
    }

    fn reconfigure(&mut self, cfg: &Config) {
        self.blocked.reconfigure(cfg);
        self.reconnect.reconfigure(cfg);
    }

    fn pending_full(&self) -> bool {
        self.blocked.pending_full() || self.reconnect.pending_full()
    }

    fn occupancy(&self) -> Vec<(&'static str, usize, u64)> {
        let mut out = self.blocked.occupancy();
        out.extend(self.reconnect.occupancy());
        out
    }
}
