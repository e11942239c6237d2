//! `dtls-blocked`: the gateway drops UDP to the VPN port. openconnect keeps its TLS
//! (CSTP) tunnel and retries DTLS; the agent must name the blocked DTLS, with the TLS
//! session as the fallback evidence.

use std::{io, time::Duration};

use super::{Ctx, Def};
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
    expected: "dtls_blocked with tls_session_seen = true; openconnect logs the DTLS handshake timing out",
    present: &["dtls_blocked"],
    absent: &["dtls_port_unreachable"],
    run,
};

fn run(ctx: &mut Ctx) -> io::Result<()> {
    ctx.step(&format!("gateway: nft drop forwarded udp dport {VPN_PORT}"))?;
    nft::apply(&ctx.topo.gw, &nft::drop_udp_forward(VPN_PORT))?;
    ctx.step(&format!("server: ocserv on {SERVER_V4} (TCP 443 + UDP 443)"))?;
    let ocserv = Ocserv::start(&ctx.topo.server, &ctx.dir, ctx.pki, SERVER_V4, None)?;
    ctx.start_agent()?;
    ctx.step("client: openconnect (waits for DTLS to give up, ~12 s)")?;
    let mut oc = OpenConnect::start(&ctx.topo.client, &ctx.dir, ctx.pki, SERVER_V4, "pwlab-tun")?;
    let failed = oc.wait_log(&["DTLS handshake timed out", "DTLS handshake failed"], Duration::from_secs(25))?;
    ctx.check("openconnect: \"DTLS handshake timed out/failed\"", failed.is_some());
    oc.wait_connected(Duration::from_secs(10))?;
    let (sent, got) = traffic::ping(&ctx.topo.client, TUNNEL_SERVER, 3, 0.2)?;
    ctx.check(format!("the tunnel works over TLS ({got}/{sent} pings)"), got >= 2);
    let dropped = nft::counters(&ctx.topo.gw).iter().sum::<u64>();
    ctx.fact(format!("gateway dropped {dropped} UDP datagrams"));
    ctx.stop_agent();
    match ctx.findings("dtls_blocked").into_iter().find(|f| f["subject"]["server"] == SERVER_V4) {
        Some(f) => {
            let e = &f["evidence"];
            ctx.check(format!("tls_session_seen = {}", e["tls_session_seen"]), e["tls_session_seen"] == true);
            ctx.check(format!("subject port = {}", f["subject"]["port"]), f["subject"]["port"] == VPN_PORT);
        }
        None => {
            ctx.check(format!("a dtls_blocked finding for {SERVER_V4}"), false);
        }
    }
    ctx.log("openconnect", oc.story());
    ctx.keep(ocserv.daemon);
    ctx.keep(oc.daemon);
    Ok(())
}
