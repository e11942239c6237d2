//! `vpn-ok`: openconnect to ocserv with nothing in the way. DTLS comes up, traffic
//! crosses the tunnel, and the agent must stay quiet about DTLS.

use std::{io, time::Duration};

use super::{Ctx, Def, Layout};
use crate::lab::{
    signals,
    topology::SERVER_V4,
    traffic,
    vpn::{Ocserv, OpenConnect, TUNNEL_SERVER},
};

/// The scenario.
pub const DEF: Def = Def {
    name: "vpn-ok",
    about: "openconnect <-> ocserv (TLS on TCP 443, DTLS on UDP 443), nothing blocked; pings cross the tunnel",
    expected: "no dtls_blocked, dtls_port_unreachable or vpn_reconnect_loop; openconnect logs \"Established DTLS connection\"",
    present: &[],
    absent: &["dtls_blocked", "dtls_port_unreachable", "vpn_reconnect_loop"],
    layout: Layout::Direct,
    run,
};

fn run(ctx: &mut Ctx) -> io::Result<()> {
    ctx.step(&format!("server: ocserv on {SERVER_V4} (TCP 443 + UDP 443), lab CA, password file"))?;
    let ocserv = Ocserv::start(&ctx.topo.server, &ctx.dir, ctx.pki, SERVER_V4, None)?;
    ctx.start_agent()?;
    ctx.step("client: openconnect --servercert pin-sha256:... --passwd-on-stdin --script (tun only)")?;
    let mut oc = OpenConnect::start(&ctx.topo.client, &ctx.dir, ctx.pki, SERVER_V4, "pwlab-tun")?;
    oc.wait_connected(Duration::from_secs(20))?;
    let dtls = oc.wait_log(&["Established DTLS connection"], Duration::from_secs(5))?;
    ctx.check("openconnect: \"Established DTLS connection\"", dtls.is_some());
    ctx.step(&format!("client: ping {TUNNEL_SERVER} across the tunnel"))?;
    let (sent, got) = traffic::ping(&ctx.topo.client, TUNNEL_SERVER, 5, 0.2)?;
    ctx.fact(format!("DTLS up, ping over tunnel {got}/{sent}"));
    ctx.check(format!("pings cross the tunnel ({got}/{sent})"), got >= 4);
    // Longer than dtls.timeout_s, so that a wrongly "blocked" flow would show.
    signals::sleep(Duration::from_secs(3))?;
    ctx.stop_agent();
    let (hello, server_hello) = (ctx.event("dtls_client_hello"), ctx.event("dtls_server_hello"));
    ctx.fact(format!("agent saw dtls_client_hello={hello} dtls_server_hello={server_hello}"));
    ctx.check(
        format!("the agent saw the DTLS handshake (client_hello {hello}, server_hello {server_hello})"),
        hello >= 1 && server_hello >= 1,
    );
    ctx.log("openconnect", oc.story());
    ctx.keep(ocserv.daemon);
    ctx.keep(oc.daemon);
    Ok(())
}
