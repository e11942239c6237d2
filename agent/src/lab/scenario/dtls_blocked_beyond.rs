//! `dtls-blocked-beyond`: a router beyond the gateway drops UDP to the VPN port. The
//! agent on the gateway sees the ClientHellos leave and nothing come back, as in
//! `dtls-blocked`, and must give the same diagnosis without blaming the gateway.
//! It stops once the agent has named the blocked DTLS and openconnect's TLS (CSTP)
//! tunnel is up, instead of waiting the ~12 s for openconnect to give DTLS up (it
//! configures the tunnel only then).

use std::{io, time::Duration};

use super::{
    Ctx, Def, Layout,
    dtls_blocked::{blocked_evidence, dtls_rule},
};
use crate::lab::{
    nft,
    topology::SERVER_V4,
    vpn::{Ocserv, OpenConnect, VPN_PORT},
};

/// The scenario.
pub const DEF: Def = Def {
    name: "dtls-blocked-beyond",
    about: "nftables on a router beyond the gateway drops UDP 443 (forward hook); openconnect falls back to TLS",
    expected: "dtls_blocked with tls_session_seen = true and dropped_here = false, no local_icmp_suppressed",
    present: &["dtls_blocked"],
    absent: &["dtls_port_unreachable", "local_icmp_suppressed"],
    layout: Layout::Routed,
    run,
};

fn run(ctx: &mut Ctx) -> io::Result<()> {
    let topo = ctx.topo;
    let router = topo.router.as_ref().ok_or_else(|| io::Error::other("the lab has no router"))?;
    ctx.step(&format!("router: nft drop forwarded udp dport {VPN_PORT}"))?;
    nft::apply(&router.ns, &nft::drop_udp_forward(VPN_PORT))?;
    ctx.step(&format!("server: ocserv on {SERVER_V4} (TCP 443 + UDP 443)"))?;
    let ocserv = Ocserv::start(&topo.server, &ctx.dir, ctx.pki, SERVER_V4, None)?;
    ctx.start_agent()?;
    ctx.step("client: openconnect (until the agent reports dtls_blocked, at most 15 s)")?;
    let mut oc = OpenConnect::start(&topo.client, &ctx.dir, ctx.pki, SERVER_V4, "pwlab-tun")?;
    let named = ctx.wait_finding("dtls_blocked", Duration::from_secs(15), |f| f["subject"]["server"] == SERVER_V4)?;
    ctx.check("the agent reported dtls_blocked while openconnect retried", named);
    let cstp = oc.wait_log(&["CSTP connected"], Duration::from_secs(5))?;
    ctx.check("openconnect: \"CSTP connected\" (the TLS tunnel is up)", cstp.is_some());
    let dropped = nft::counter_of(&router.ns, &dtls_rule()).unwrap_or(0);
    ctx.check(format!("the router dropped the DTLS ({dropped} UDP datagrams)"), dropped > 0);
    ctx.fact(format!("router dropped {dropped} UDP datagrams"));
    ctx.stop_agent();
    if let Some(e) = blocked_evidence(ctx) {
        ctx.check(
            format!("dropped_here = {} (the router dropped them)", e["dropped_here"]),
            e["dropped_here"] == false,
        );
    }
    ctx.log("openconnect", oc.story());
    ctx.keep(ocserv.daemon);
    ctx.keep(oc.daemon);
    Ok(())
}
