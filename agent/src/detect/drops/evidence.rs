//! The words a finding gains from this host's drops: `dropped_here` (true, false, or
//! `"unknown"` when drops are not watched), where and why they were dropped, and a
//! summary and remedy that say whether to fix this host or look beyond it.
//!
//! A finding's subject is its identity (DESIGN.md fixes its keys per kind), so the
//! packets to look up are read back from it: a black hole's `flow`, a DTLS subject's
//! client, server and port, a storm's client and resolver. Only evidence, summary and
//! remedy change; kind, subject and severity never do.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value, json};

use super::{DropLedger, PKT_TOO_BIG, Tally};
use crate::{
    detect::{finding::Finding, kind::FindingKind},
    drops::DropHook,
};

/// The kinds whose findings say whether this host dropped their packets.
pub const ANNOTATED: [FindingKind; 4] = [
    FindingKind::DnsProbeStorm,
    FindingKind::DtlsBlocked,
    FindingKind::DtlsPortUnreachable,
    FindingKind::PmtuBlackHole,
];

/// Adds the drop evidence to `f` (see the module's comment); returns what, changed,
/// is worth printing `f` again for, or `None` when its kind has none.
pub(super) fn annotate(ledger: &DropLedger, f: &mut Finding) -> Option<String> {
    if !ANNOTATED.contains(&f.kind) {
        return None;
    }
    let known = if ledger.watched() {
        match f.kind {
            FindingKind::PmtuBlackHole => black_hole(ledger, f),
            FindingKind::DtlsBlocked | FindingKind::DtlsPortUnreachable => dtls(ledger, f),
            _ => dns(ledger, f),
        }
    } else {
        None
    };
    Some(known.unwrap_or_else(|| {
        f.evidence.insert("dropped_here".into(), json!("unknown"));
        "unknown".into()
    }))
}

fn addr(subject: &Map<String, Value>, key: &str) -> Option<IpAddr> {
    subject.get(key)?.as_str()?.parse().ok()
}

/// A black hole's `flow`: `sender:port -> receiver:port` (IPv6 in brackets).
fn flow(subject: &Map<String, Value>) -> Option<(SocketAddr, SocketAddr)> {
    let (a, b) = subject.get("flow")?.as_str()?.split_once(" -> ")?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `dropped_here: false`.
fn not_here(f: &mut Finding) -> String {
    f.evidence.insert("dropped_here".into(), json!(false));
    "false".into()
}

/// `dropped_here: true` and where, from the tally of the finding's packets.
fn here(f: &mut Finding, t: &Tally) {
    let e = &mut f.evidence;
    e.insert("dropped_here".into(), json!(true));
    e.insert("drop_reason".into(), json!(t.reason));
    e.insert("drop_hook".into(), json!(t.hook.name()));
    e.insert("drop_count".into(), json!(t.count));
    e.insert("drop_interface".into(), if t.interface.is_empty() { Value::Null } else { json!(t.interface) });
    if t.reason == PKT_TOO_BIG && t.mtu != 0 {
        e.insert("drop_interface_mtu".into(), json!(t.mtu));
    }
}

fn material(t: &Tally) -> String {
    format!("true|{}|{}", t.reason, t.hook.name())
}

/// `(why, hook hook)`, as summaries say where.
fn where_words(t: &Tally) -> String {
    format!("({}, {} hook)", t.why(), t.hook.name())
}

/// An interface as an nftables match on the outgoing device, when its name is one
/// nftables takes unquoted-safe (a name this host gave it), or its index.
fn nft_oif(interface: &str) -> Option<String> {
    if !interface.is_empty() && interface.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!("oif {interface} "));
    }
    let safe = !interface.is_empty() && interface.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    safe.then(|| format!("oifname \"{interface}\" "))
}

fn black_hole(ledger: &DropLedger, f: &mut Finding) -> Option<String> {
    let (s, r) = flow(&f.subject)?;
    let segments = ledger.segments(s.ip(), s.port(), r.ip(), r.port()).cloned();
    let icmp = ledger.too_big_icmp(s.ip(), r.ip()).cloned();
    let Some(primary) = segments.as_ref().or(icmp.as_ref()) else {
        f.summary.push_str("; not dropped on this host: beyond it");
        return Some(not_here(f));
    };
    here(f, primary);
    f.evidence.insert("icmp_dropped_here".into(), json!(icmp.as_ref().map_or(0, |t| t.count)));
    if let Some(i) = &icmp {
        f.evidence.insert("icmp_drop_reason".into(), json!(i.reason));
        f.evidence.insert("icmp_drop_hook".into(), json!(i.hook.name()));
    }
    let sender = s.ip();
    let v4 = sender.is_ipv4();
    let words = if v4 { "ICMP frag-needed" } else { "ICMPv6 packet-too-big" };
    let too_big = segments.as_ref().filter(|t| t.reason == PKT_TOO_BIG);
    let at = |t: &Tally| match (t.interface.is_empty(), t.mtu) {
        (true, _) => "this host".to_string(),
        (false, 0) => t.interface.clone(),
        (false, mtu) => format!("{} (MTU {mtu})", t.interface),
    };
    let dropped_segments = segments.as_ref().map(|t| match too_big {
        Some(_) => format!("{} dropped {} DF packets from {sender} that were too big", at(t), t.count),
        None => format!("this host dropped {} DF packets from {sender} {}", t.count, where_words(t)),
    });
    let dropped_icmp = icmp.as_ref().map(|i| {
        let who = if i.is_firewall() { "this host's firewall" } else { "this host" };
        let what = if i.hook == DropHook::Output {
            format!("the {} {words} it sent back", i.count)
        } else {
            format!("{} {words} on their way back to {sender}", i.count)
        };
        format!("{who} dropped {what} {}", where_words(i))
    });
    let note = match (&dropped_segments, &dropped_icmp) {
        (Some(seg), Some(icmp)) => format!("; here, {seg}, and {icmp}"),
        (Some(seg), None) if too_big.is_some() => {
            format!("; here, {seg}; the {words} this host sends back is not dropped here: it is lost beyond this host")
        }
        (Some(seg), None) => format!("; here, {seg}"),
        (None, Some(icmp)) => format!("; here, {icmp}"),
        (None, None) => String::new(),
    };
    f.summary.push_str(&note);

    let hdr = if v4 { 40 } else { 60 };
    // The kernel named the next hop's MTU: it is the path MTU this host knows, where
    // the detector, without an ICMP signal, could only leave it unknown.
    if let Some(t) = too_big.filter(|t| t.mtu > hdr)
        && f.evidence.get("estimated_path_mtu").is_none_or(Value::is_null)
    {
        f.evidence.insert("estimated_path_mtu".into(), json!(t.mtu));
        f.evidence.insert("suggested_mss".into(), json!(t.mtu - hdr));
    }
    let clamp = match too_big {
        Some(t) if t.mtu > hdr => {
            let mss = t.mtu - hdr;
            let oif = nft_oif(&t.interface).unwrap_or_default();
            format!(
                "clamp the MSS to {mss} on {} (nftables: `nft add rule inet filter forward {oif}tcp flags syn tcp \
                 option maxseg size set {mss}`)",
                if t.interface.is_empty() { "this host" } else { &t.interface }
            )
        }
        _ => "clamp the MSS to the path MTU minus 40 (IPv6: 60) bytes (nftables: `nft add rule inet filter forward \
              tcp flags syn tcp option maxseg size set rt mtu`)"
            .to_string(),
    };
    let icmp_match =
        if v4 { "icmp type destination-unreachable icmp code frag-needed" } else { "icmpv6 type packet-too-big" };
    f.remedy = match (&icmp, too_big) {
        (Some(i), _) if i.is_firewall() => format!(
            "This host's firewall drops the {words} that would tell {sender} to send smaller packets: allow it {} \
             this host (nftables: `nft insert rule inet filter {} {icmp_match} accept`), or {clamp}.",
            if i.hook == DropHook::Output { "out of" } else { "through" },
            i.hook.name()
        ),
        (Some(i), _) => format!("This host drops the {words} itself {}. {}", where_words(i), f.remedy),
        (None, Some(t)) => format!(
            "{} sends {words} back to {sender}, and something beyond this host drops it: let it through every \
             firewall between here and {sender}, or {clamp}.",
            at(t)
        ),
        (None, None) => format!("This host drops the segments itself {}. {}", where_words(primary), f.remedy),
    };
    Some(format!("{}|icmp={}", material(primary), icmp.is_some()))
}

fn dtls(ledger: &DropLedger, f: &mut Finding) -> Option<String> {
    let (client, server) = (addr(&f.subject, "client")?, addr(&f.subject, "server")?);
    let port = u16::try_from(f.subject.get("port")?.as_u64()?).ok()?;
    let Some(t) = ledger.vpn(client, server, port).cloned() else {
        if f.kind == FindingKind::DtlsBlocked {
            f.summary.push_str("; not dropped on this host: blocked beyond it");
        }
        return Some(not_here(f));
    };
    here(f, &t);
    let hook = t.hook.name();
    if t.is_firewall() {
        let fam = if server.is_ipv4() { "ip" } else { "ip6" };
        f.summary.push_str(&format!("; dropped by this host's firewall {}", where_words(&t)));
        f.remedy = format!(
            "This host's firewall drops it in its {hook} chain: allow it there (nftables: `nft insert rule inet filter \
             {hook} {fam} daddr {server} udp dport {port} accept`, and `... {fam} saddr {server} udp sport {port} \
             accept` for the answers). {}",
            f.remedy
        );
    } else {
        f.summary.push_str(&format!("; dropped by this host {}", where_words(&t)));
        f.remedy = format!("This host drops it itself {}. {}", where_words(&t), f.remedy);
    }
    Some(material(&t))
}

fn dns(ledger: &DropLedger, f: &mut Finding) -> Option<String> {
    let (client, resolver) = (addr(&f.subject, "client")?, addr(&f.subject, "resolver")?);
    let Some(t) = ledger.dns(client, resolver).cloned() else {
        return Some(not_here(f));
    };
    here(f, &t);
    f.summary.push_str(&format!(
        "; this host dropped {} of its DNS packet{} {}",
        t.count,
        if t.count == 1 { "" } else { "s" },
        where_words(&t)
    ));
    let who = if t.is_firewall() { "This host's firewall drops" } else { "This host drops" };
    f.remedy =
        format!("{who} DNS between {client} and {resolver} {}: allow it there first. {}", where_words(&t), f.remedy);
    Some(material(&t))
}
