//! `vpn-reconnect-loop`: a VPN client that keeps reconnecting. The gateway drops UDP
//! to the VPN port, and openconnect is restarted on a steady schedule: each run is a
//! new TLS (CSTP) session to ocserv and a new round of DTLS ClientHellos that nothing
//! answers — a regular rhythm of TLS sessions with the VPN evidence beside it.

use std::{
    io,
    time::{Duration, Instant},
};

use super::{Ctx, Def, Layout};
use crate::lab::{
    nft, signals,
    topology::{CLIENT_V4, SERVER_V4},
    vpn::{Ocserv, OpenConnect, VPN_PORT},
};

/// The scenario.
pub const DEF: Def = Def {
    name: "vpn-reconnect-loop",
    about: "nftables on the gateway drops UDP 443; openconnect to ocserv is restarted every 5 s (6 runs), each a new \
            TLS session with unanswered DTLS ClientHellos",
    expected: "vpn_reconnect_loop (period ~5 s) for the client and ocserv; dtls_blocked may be there too",
    present: &["vpn_reconnect_loop"],
    absent: &["dtls_port_unreachable"],
    layout: Layout::Direct,
    run,
};

/// One openconnect run starts this often...
const EVERY: Duration = Duration::from_secs(5);
/// ...this many times.
const RUNS: usize = 6;
/// Each run is stopped this long before the next one starts.
const GAP: Duration = Duration::from_millis(300);

fn run(ctx: &mut Ctx) -> io::Result<()> {
    ctx.step(&format!("gateway: nft drop forwarded udp dport {VPN_PORT}"))?;
    nft::apply(&ctx.topo.gw, &nft::drop_udp_forward(VPN_PORT))?;
    ctx.step(&format!("server: ocserv on {SERVER_V4} (TCP 443 + UDP 443)"))?;
    let ocserv = Ocserv::start(&ctx.topo.server, &ctx.dir, ctx.pki, SERVER_V4, None)?;
    ctx.start_agent()?;
    ctx.step(&format!(
        "client: openconnect started every {} s, {RUNS} times, each stopped (SIGTERM: BYE) {} ms before the next",
        EVERY.as_secs(),
        GAP.as_millis()
    ))?;
    let start = Instant::now();
    let (mut connected, mut dtls_up) = (0, 0);
    let mut last: Option<OpenConnect> = None;
    for i in 0..RUNS {
        signals::sleep_until(start + EVERY * i as u32)?;
        // Each run in its own directory: its own log, kept for the story.
        let dir = ctx.dir.join(format!("run-{}", i + 1));
        std::fs::create_dir_all(&dir)?;
        let mut oc = OpenConnect::start(&ctx.topo.client, &dir, ctx.pki, SERVER_V4, "pwlab-tun")?;
        if oc.wait_log(&["CSTP connected"], EVERY - GAP)?.is_some() {
            connected += 1;
        }
        signals::sleep_until(start + EVERY * (i as u32 + 1) - GAP)?;
        oc.stop();
        dtls_up += usize::from(!oc.lines_matching(&["Established DTLS"]).is_empty());
        last = Some(oc);
    }
    let dropped = nft::counters(&ctx.topo.gw).iter().sum::<u64>();
    ctx.check(format!("every run connected over TLS (\"CSTP connected\" {connected}/{RUNS})"), connected == RUNS);
    ctx.check(format!("the gateway dropped the DTLS ClientHellos ({dropped})"), dropped >= RUNS as u64);
    ctx.check(format!("DTLS never came up ({dtls_up} runs logged \"Established DTLS\")"), dtls_up == 0);
    ctx.stop_agent();
    ctx.fact(format!(
        "openconnect {connected}/{RUNS} TLS up, restarted every {} s; gateway dropped {dropped} UDP; agent saw \
         dtls_client_hello={}",
        EVERY.as_secs(),
        ctx.event("dtls_client_hello")
    ));
    let subject_is = |f: &serde_json::Value| f["subject"]["client"] == CLIENT_V4 && f["subject"]["server"] == SERVER_V4;
    match ctx.findings("vpn_reconnect_loop").into_iter().find(subject_is) {
        Some(f) => {
            let e = &f["evidence"];
            ctx.check(format!("subject port = {}", f["subject"]["port"]), f["subject"]["port"] == VPN_PORT);
            let period = e["period_s"].as_f64().unwrap_or(0.0);
            let every = EVERY.as_secs_f64();
            ctx.check(format!("period_s = {period} ({every} +- 0.5)"), (period - every).abs() <= 0.5);
            let sessions = e["sessions"].as_u64().unwrap_or(0);
            ctx.check(format!("sessions = {sessions} (>= 4)"), sessions >= 4);
            ctx.check(
                format!("vpn_evidence = {} (the DTLS beside it)", e["vpn_evidence"]),
                e["vpn_evidence"] == "dtls",
            );
        }
        None => {
            ctx.check(format!("a vpn_reconnect_loop finding for {CLIENT_V4} -> {SERVER_V4}"), false);
        }
    }
    if let Some(oc) = last {
        ctx.log("openconnect (last run)", oc.story());
        ctx.keep(oc.daemon);
    }
    ctx.keep(ocserv.daemon);
    Ok(())
}
