//! `dns-resolver-outage`: one resolver stops answering everyone at once. Three
//! clients each look up their own two names every 2 s (names the resolver serves);
//! then unbound stalls (SIGSTOP) for 60 s and resumes (SIGCONT). Its receive buffer
//! is small, as on a busy resolver: the first queries of the stall are answered late
//! when it resumes, the rest are dropped. That is one outage of the resolver, not
//! six names each failing on their own.

use std::{
    io, thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{Ctx, Def, Layout};
use crate::lab::{
    netns::NetNs,
    resolver::{Resolver, udp_rcvbuf_errors},
    signals,
    topology::{CLIENT_V4, MORE_CLIENTS_V4, SERVER_V4},
    traffic::{self, Dig},
};

/// The scenario.
pub const DEF: Def = Def {
    name: "dns-resolver-outage",
    about: "3 clients each ask 2 names (unbound local data) every 2 s; unbound is stopped (SIGSTOP) for 60 s, then \
            resumes (SIGCONT)",
    expected: "dns_resolver_outage for the resolver (3 clients, 6 names), no per-name dns_probe_storm",
    present: &["dns_resolver_outage"],
    absent: &["dns_probe_storm"],
    layout: Layout::Direct,
    run,
};

/// (client address, its names); every name resolves to an address of the server net.
const CLIENTS: [(&str, [(&str, &str); 2]); 3] = [
    (CLIENT_V4, [("api.pwlab.test", "198.18.2.10"), ("time.pwlab.test", "198.18.2.11")]),
    (MORE_CLIENTS_V4[0], [("cam.pwlab.test", "198.18.2.12"), ("mqtt.pwlab.test", "198.18.2.13")]),
    (MORE_CLIENTS_V4[1], [("ntp.pwlab.test", "198.18.2.14"), ("update.pwlab.test", "198.18.2.15")]),
];
/// Each client asks one of its names this often, alternating them.
const EVERY: Duration = Duration::from_secs(2);
/// Healthy, then stalled, then healthy again.
const HEALTHY: Duration = Duration::from_secs(6);
const STALL: Duration = Duration::from_secs(60);
const RECOVERED: Duration = Duration::from_secs(6);
/// unbound's UDP receive buffer (the kernel makes it 2304 bytes: two queries).
const SO_RCVBUF: u32 = 1024;

/// One client's lookups, on a fixed schedule from `start + offset` until `end`.
fn client(
    ns: &NetNs,
    (source, names): (&str, [(&str, &str); 2]),
    start: Instant,
    end: Instant,
) -> io::Result<Vec<Dig>> {
    let mut out = Vec::new();
    for i in 0.. {
        let at = start + EVERY * i;
        if at >= end {
            break;
        }
        signals::sleep_until(at)?;
        out.push(traffic::dig_from(ns, Some(source), SERVER_V4, names[i as usize % 2].0, "A")?);
    }
    Ok(out)
}

/// How many: a count, or the length of a list or map (the evidence may give either).
fn how_many(v: &Value) -> u64 {
    match v {
        Value::Array(a) => a.len() as u64,
        Value::Object(m) => m.len() as u64,
        other => other.as_u64().unwrap_or(0),
    }
}

fn run(ctx: &mut Ctx) -> io::Result<()> {
    let names: Vec<(&str, &str)> = CLIENTS.iter().flat_map(|(_, n)| n.iter().copied()).collect();
    ctx.step(&format!("resolver: unbound on {SERVER_V4}:53 serving {} names, so-rcvbuf {SO_RCVBUF}", names.len()))?;
    let mut resolver = Resolver::start_with(&ctx.topo.server, &ctx.dir, SERVER_V4, &names, Some(SO_RCVBUF))?;
    for a in MORE_CLIENTS_V4 {
        ctx.topo.add_client_v4(a)?;
    }
    ctx.start_agent()?;
    ctx.step(&format!(
        "clients {CLIENT_V4}, {}, {}: dig every {} s; unbound SIGSTOP after {} s, SIGCONT {} s later, {} s more",
        MORE_CLIENTS_V4[0],
        MORE_CLIENTS_V4[1],
        EVERY.as_secs(),
        HEALTHY.as_secs(),
        STALL.as_secs(),
        RECOVERED.as_secs()
    ))?;
    let dropped_before = udp_rcvbuf_errors(&ctx.topo.server);
    let topo = ctx.topo;
    let start = Instant::now();
    let end = start + HEALTHY + STALL + RECOVERED;
    let (digs, stopped_at, resumed_at) = thread::scope(|s| {
        let threads: Vec<_> = CLIENTS
            .iter()
            .enumerate()
            // Staggered, so that the clients' queries interleave.
            .map(|(i, c)| s.spawn(move || client(&topo.client, *c, start + Duration::from_millis(600) * i as u32, end)))
            .collect();
        let stall = signals::sleep_until(start + HEALTHY).map(|()| {
            resolver.unbound.signal(libc::SIGSTOP);
            Instant::now()
        });
        let slept = match &stall {
            Ok(at) => signals::sleep_until(*at + STALL),
            Err(_) => Ok(()),
        };
        // Resumed whatever happened, so that nothing is left stopped.
        resolver.unbound.signal(libc::SIGCONT);
        let resumed_at = Instant::now();
        let digs: io::Result<Vec<Vec<Dig>>> = threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(io::Error::other("a client thread panicked"))))
            .collect();
        (digs.and_then(|d| slept.map(|()| d)), stall, resumed_at)
    });
    let (digs, stopped_at) = (digs?, stopped_at?);
    signals::sleep(Duration::from_millis(300))?;
    let dropped = udp_rcvbuf_errors(&ctx.topo.server).saturating_sub(dropped_before);
    ctx.check("unbound still runs after SIGCONT", resolver.unbound.running());
    ctx.stop_agent();

    // dig waits 1 s: a lookup is "before" when it ended before the stall, "stalled"
    // when it started and ended within it.
    let all: Vec<&Dig> = digs.iter().flatten().collect();
    let wait = Duration::from_millis(1200);
    let before: Vec<&&Dig> = all.iter().filter(|d| d.at + wait <= stopped_at).collect();
    let stalled: Vec<&&Dig> = all.iter().filter(|d| d.at >= stopped_at && d.at + wait <= resumed_at).collect();
    let after: Vec<&&Dig> = all.iter().filter(|d| d.at >= resumed_at).collect();
    let count = |v: &[&&Dig], status: &str| v.iter().filter(|d| d.status == status).count();
    let (ok_before, lost, ok_after) = (count(&before, "NOERROR"), count(&stalled, "timeout"), count(&after, "NOERROR"));
    ctx.check(format!("before the stall every lookup answered ({ok_before}/{} NOERROR)", before.len()), {
        !before.is_empty() && ok_before == before.len()
    });
    ctx.check(format!("during the stall every lookup timed out ({lost}/{})", stalled.len()), {
        stalled.len() >= 3 * names.len() && lost == stalled.len()
    });
    ctx.check(format!("after SIGCONT every lookup answered ({ok_after}/{} NOERROR)", after.len()), {
        !after.is_empty() && ok_after == after.len()
    });
    ctx.fact(format!(
        "dig: {ok_before}/{} NOERROR, stalled {} s: {lost}/{} timed out (unbound's full buffer dropped {dropped}), \
         then {ok_after}/{} NOERROR",
        before.len(),
        STALL.as_secs(),
        stalled.len(),
        after.len()
    ));
    match ctx.findings("dns_resolver_outage").into_iter().find(|f| f["subject"]["resolver"] == SERVER_V4) {
        Some(f) => {
            let e = &f["evidence"];
            let clients = how_many(&e["clients"]);
            ctx.check(format!("clients = {clients} (3)"), clients == CLIENTS.len() as u64);
            let n = how_many(&e["names"]);
            ctx.check(format!("names = {n} (>= 3)"), n >= 3);
            let timeouts = how_many(&e["timeouts"]);
            ctx.check(format!("timeouts = {timeouts} (> 0)"), timeouts > 0);
        }
        None => {
            ctx.check(format!("a dns_resolver_outage finding for {SERVER_V4}"), false);
        }
    }
    ctx.keep(resolver.unbound);
    ctx.keep(resolver.dnsmasq);
    Ok(())
}
