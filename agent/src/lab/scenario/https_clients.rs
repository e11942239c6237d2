//! `https-clients`: ordinary HTTPS, which must give no finding at all. A browser-like
//! client fetches from a real TLS server at irregular gaps, and an API poller on
//! another client address fetches at a steady rhythm: six sessions 5 s apart, as
//! regular and as long as `vpn-reconnect-loop`'s restarts, but with no VPN anywhere
//! (no DTLS, no tunnel) — the traffic that was taken for a VPN reconnect loop.

use std::{
    io,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use super::{Ctx, Def, Layout};
use crate::{
    detect::kind::FindingKind,
    lab::{
        netns::NetNs,
        signals,
        topology::{CLIENT_V4, MORE_CLIENTS_V4, SERVER_V4},
        web::{self, Fetch},
    },
};

/// Every finding kind's name: this scenario forbids them all.
const EVERY_KIND: [&str; FindingKind::ALL.len()] = {
    let mut names = [""; FindingKind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = FindingKind::ALL[i].name();
        i += 1;
    }
    names
};

/// The scenario.
pub const DEF: Def = Def {
    name: "https-clients",
    about: "curl -> openssl s_server (TCP 443): one client at irregular gaps (0.2-7.9 s, 10 fetches), a poller on \
            198.18.1.3 every 5 s (6 fetches); no VPN, no DTLS",
    expected: "no finding at all (a steady poller is not a VPN reconnect loop without VPN evidence)",
    present: &[],
    absent: &EVERY_KIND,
    layout: Layout::Direct,
    run,
};

/// The browser-like client's pauses between fetches: no two neighbours alike, so no
/// run of its sessions is regular.
const PAUSES_S: [f64; 9] = [0.2, 3.1, 0.6, 7.9, 1.3, 4.6, 0.4, 2.2, 6.3];
/// The poller's period and number of fetches (a regular run spanning 25 s).
const POLL_EVERY: Duration = Duration::from_secs(5);
const POLLS: usize = 6;

fn browse(client: &NetNs, ca: &Path) -> io::Result<Vec<Fetch>> {
    let mut out = vec![web::fetch(client, None, SERVER_V4, ca)?];
    for p in PAUSES_S {
        signals::sleep(Duration::from_secs_f64(p))?;
        out.push(web::fetch(client, None, SERVER_V4, ca)?);
    }
    Ok(out)
}

fn poll(client: &NetNs, source: &str, ca: &Path) -> io::Result<Vec<Fetch>> {
    let start = Instant::now();
    let mut out = Vec::with_capacity(POLLS);
    for i in 0..POLLS {
        signals::sleep_until(start + POLL_EVERY * i as u32)?;
        out.push(web::fetch(client, Some(source), SERVER_V4, ca)?);
    }
    Ok(out)
}

fn range(gaps: &[f64]) -> (f64, f64) {
    gaps.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), &g| (lo.min(g), hi.max(g)))
}

fn run(ctx: &mut Ctx) -> io::Result<()> {
    let poller = MORE_CLIENTS_V4[0];
    ctx.step(&format!("server: openssl s_server -www on {SERVER_V4}:{} (lab certificate)", web::HTTPS_PORT))?;
    let server = web::start_server(&ctx.topo.server, ctx.pki, &ctx.dir)?;
    ctx.topo.add_client_v4(poller)?;
    ctx.start_agent()?;
    ctx.step(&format!(
        "client: curl from {CLIENT_V4} after pauses of {PAUSES_S:?} s; meanwhile curl from {poller} every {} s, {POLLS} \
         times",
        POLL_EVERY.as_secs()
    ))?;
    let (client, ca) = (&ctx.topo.client, ctx.pki.ca.as_path());
    let (browsed, polled) = thread::scope(|s| {
        let b = s.spawn(|| browse(client, ca));
        let p = poll(client, poller, ca);
        (b.join().unwrap_or_else(|_| Err(io::Error::other("the browsing thread panicked"))), p)
    });
    let (browsed, polled) = (browsed?, polled?);
    signals::sleep(Duration::from_millis(300))?;
    ctx.stop_agent();

    let ok = |f: &[Fetch]| f.iter().filter(|x| x.status == 200).count();
    let (b_gaps, p_gaps) = (web::gaps(&browsed), web::gaps(&polled));
    let ((b_lo, b_hi), (p_lo, p_hi)) = (range(&b_gaps), range(&p_gaps));
    ctx.check(format!("every fetch got 200 ({}/{}, {}/{})", ok(&browsed), browsed.len(), ok(&polled), polled.len()), {
        ok(&browsed) == browsed.len() && ok(&polled) == polled.len()
    });
    // Neighbouring gaps at least 1.5x apart: no three sessions in a row look regular.
    let irregular = b_gaps.windows(2).all(|w| w[0].max(w[1]) >= 1.5 * w[0].min(w[1]));
    ctx.check(format!("the client's gaps are irregular ({b_lo:.1}-{b_hi:.1} s, neighbours >= 1.5x apart)"), irregular);
    let period = POLL_EVERY.as_secs_f64();
    ctx.check(
        format!("the poller is regular (gaps {p_lo:.2}-{p_hi:.2} s, {period} +- 0.25)"),
        p_lo >= period - 0.25 && p_hi <= period + 0.25,
    );
    let hellos = ctx.event("tls_hello");
    let sessions = (browsed.len() + polled.len()) as u64;
    ctx.check(
        format!("the agent saw every TLS handshake (tls_hello {hellos}, >= 2 x {sessions} sessions)"),
        hellos >= 2 * sessions,
    );
    ctx.check(format!("no DTLS at all (dtls_client_hello {})", ctx.event("dtls_client_hello")), {
        ctx.event("dtls_client_hello") == 0
    });
    ctx.fact(format!(
        "curl {}/{} at gaps {b_lo:.1}-{b_hi:.1} s, poller {}/{} every {period:.0} s; agent saw tls_hello={hellos}",
        ok(&browsed),
        browsed.len(),
        ok(&polled),
        polled.len()
    ));
    ctx.keep(server);
    Ok(())
}
