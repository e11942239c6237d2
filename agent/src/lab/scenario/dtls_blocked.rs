//! `dtls-blocked`: the gateway drops UDP to the VPN port. openconnect keeps its TLS
//! (CSTP) tunnel and retries DTLS; the agent must name the blocked DTLS, with the TLS
//! session as the fallback evidence, and say that its own host (the gateway's
//! firewall, forward hook) dropped the ClientHellos.

use std::{io, time::Duration};

use serde_json::Value;

use super::{Ctx, Def, Layout};
use crate::lab::{
    nft,
    topology::SERVER_V4,
    traffic,
    vpn::{Ocserv, OpenConnect, TUNNEL_SERVER, VPN_PORT},
};

/// The scenario.
pub const DEF: Def = Def {
    name: "dtls-blocked",
    about: "nftables on the gateway drops UDP 443 (forward hook); openconnect falls back to TLS",
    expected: "dtls_blocked with tls_session_seen = true and dropped_here = true (NETFILTER_DROP, forward, as often \
               as nft counted); openconnect logs the DTLS handshake timing out",
    present: &["dtls_blocked"],
    absent: &["dtls_port_unreachable"],
    layout: Layout::Direct,
    run,
};

/// The nft rule that drops the DTLS (its text in `nft list ruleset`).
pub fn dtls_rule() -> String {
    format!("udp dport {VPN_PORT}")
}

/// The agent's dtls_blocked for the server, with the checks every blocked DTLS
/// shares (the TLS session beside it, the VPN port); its evidence. Call after
/// [`Ctx::stop_agent`].
pub fn blocked_evidence(ctx: &mut Ctx) -> Option<Value> {
    let Some(f) = ctx.findings("dtls_blocked").into_iter().find(|f| f["subject"]["server"] == SERVER_V4) else {
        ctx.check(format!("a dtls_blocked finding for {SERVER_V4}"), false);
        return None;
    };
    let e = f["evidence"].clone();
    ctx.check(format!("tls_session_seen = {}", e["tls_session_seen"]), e["tls_session_seen"] == true);
    ctx.check(format!("subject port = {}", f["subject"]["port"]), f["subject"]["port"] == VPN_PORT);
    Some(e)
}

fn run(ctx: &mut Ctx) -> io::Result<()> {
    let topo = ctx.topo;
    ctx.step(&format!("gateway: nft drop forwarded udp dport {VPN_PORT}"))?;
    nft::apply(&topo.gw, &nft::drop_udp_forward(VPN_PORT))?;
    ctx.step(&format!("server: ocserv on {SERVER_V4} (TCP 443 + UDP 443)"))?;
    let ocserv = Ocserv::start(&topo.server, &ctx.dir, ctx.pki, SERVER_V4, None)?;
    ctx.start_agent()?;
    ctx.step("client: openconnect (waits for DTLS to give up, ~12 s)")?;
    let mut oc = OpenConnect::start(&topo.client, &ctx.dir, ctx.pki, SERVER_V4, "pwlab-tun")?;
    let failed = oc.wait_log(&["DTLS handshake timed out", "DTLS handshake failed"], Duration::from_secs(25))?;
    ctx.check("openconnect: \"DTLS handshake timed out/failed\"", failed.is_some());
    oc.wait_connected(Duration::from_secs(10))?;
    let (sent, got) = traffic::ping(&topo.client, TUNNEL_SERVER, 3, 0.2)?;
    ctx.check(format!("the tunnel works over TLS ({got}/{sent} pings)"), got >= 2);
    // openconnect's next ClientHello is a minute away (LAB-FACTS.md): the count is final.
    let dropped = nft::counter_of(&topo.gw, &dtls_rule()).unwrap_or(0);
    ctx.fact(format!("gateway dropped {dropped} UDP datagrams"));
    ctx.stop_agent();
    if let Some(e) = blocked_evidence(ctx) {
        ctx.check(format!("dropped_here = {}", e["dropped_here"]), e["dropped_here"] == true);
        ctx.check(format!("drop_reason = {}", e["drop_reason"]), e["drop_reason"] == "NETFILTER_DROP");
        ctx.check(format!("drop_hook = {}", e["drop_hook"]), e["drop_hook"] == "forward");
        let count = e["drop_count"].as_u64();
        ctx.check(
            format!("drop_count = {} (nft counted {dropped})", e["drop_count"]),
            count.is_some_and(|n| n > 0 && n == dropped),
        );
    }
    ctx.log("openconnect", oc.story());
    ctx.keep(ocserv.daemon);
    ctx.keep(oc.daemon);
    Ok(())
}
