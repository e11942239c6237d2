//! `dtls-port-mismatch`: ocserv tells clients to use DTLS on the address and port
//! they connected to, but listens for DTLS elsewhere (`udp-listen-host`), the way an
//! ASA with a non-default `dtls port` does (CSCuh61321). The server's kernel answers
//! the ClientHello with ICMP port unreachable and openconnect gives up DTLS.

use std::{io, time::Duration};

use super::{Ctx, Def, Layout};
use crate::lab::{
    signals,
    topology::SERVER_V4,
    vpn::{Ocserv, OpenConnect, VPN_PORT},
};

/// The scenario.
pub const DEF: Def = Def {
    name: "dtls-port-mismatch",
    about: "ocserv announces DTLS on 198.18.2.2:443 but listens for it on 198.18.2.3:443; the server answers ICMP \
            port unreachable",
    expected: "dtls_port_unreachable (icmp_from 198.18.2.2), not dtls_blocked",
    present: &["dtls_port_unreachable"],
    absent: &["dtls_blocked"],
    layout: Layout::Direct,
    run,
};

/// Where ocserv really listens for DTLS.
const DTLS_ELSEWHERE: &str = "198.18.2.3";

fn run(ctx: &mut Ctx) -> io::Result<()> {
    ctx.topo.server.ip(&["addr", "add", &format!("{DTLS_ELSEWHERE}/24"), "dev", &ctx.topo.server_if])?;
    ctx.step(&format!("server: ocserv TLS on {SERVER_V4}:443, DTLS on {DTLS_ELSEWHERE}:443 (udp-listen-host)"))?;
    let ocserv = Ocserv::start(&ctx.topo.server, &ctx.dir, ctx.pki, SERVER_V4, Some(DTLS_ELSEWHERE))?;
    ctx.start_agent()?;
    ctx.step("client: openconnect")?;
    let mut oc = OpenConnect::start(&ctx.topo.client, &ctx.dir, ctx.pki, SERVER_V4, "pwlab-tun")?;
    oc.wait_connected(Duration::from_secs(20))?;
    let gave_up = oc.wait_log(&["DTLS disabled", "Set up UDP failed"], Duration::from_secs(5))?;
    ctx.check("openconnect gives up DTLS (\"Set up UDP failed\" / \"DTLS disabled\")", gave_up.is_some());
    // Past dtls.timeout_s: the flow must stay "unreachable", not turn "blocked".
    signals::sleep(Duration::from_millis(3500))?;
    ctx.stop_agent();
    match ctx.findings("dtls_port_unreachable").into_iter().find(|f| f["subject"]["server"] == SERVER_V4) {
        Some(f) => {
            let e = &f["evidence"];
            ctx.check(format!("icmp_from = {}", e["icmp_from"]), e["icmp_from"] == SERVER_V4);
            ctx.check(format!("subject port = {}", f["subject"]["port"]), f["subject"]["port"] == VPN_PORT);
        }
        None => {
            ctx.check(format!("a dtls_port_unreachable finding for {SERVER_V4}"), false);
        }
    }
    let listening = std::fs::read_to_string(&ocserv.log).unwrap_or_default();
    ctx.log("ocserv", listening.lines().filter(|l| l.starts_with("listening")).map(str::to_string).collect());
    ctx.log("openconnect", oc.story());
    ctx.keep(ocserv.daemon);
    ctx.keep(oc.daemon);
    Ok(())
}
