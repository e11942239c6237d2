//! `pmtu-black-hole-beyond`: the same black hole one hop further: a router beyond the
//! gateway has the narrow link and drops its own ICMP "fragmentation needed". The
//! agent on the gateway sees the same symptom and must give the same diagnosis, and
//! must not blame the gateway: nothing of it was dropped there.

use std::io;

use super::{
    Ctx, Def, Layout,
    pmtu_black_hole::{FRAG_NEEDED_RULE, black_hole_evidence, narrow_link_and_upload},
};
use crate::lab::nft;

/// The scenario.
pub const DEF: Def = Def {
    name: "pmtu-black-hole-beyond",
    about: "a router beyond the gateway: its far link MTU 1400, its ICMP frag-needed dropped (nft output hook); bulk \
            TCP upload client -> server",
    expected: "pmtu_black_hole (icmp_seen false, dropped_here false), the upload stalls, no pmtu_signal, no \
               local_icmp_suppressed",
    present: &["pmtu_black_hole"],
    absent: &["pmtu_signal", "local_icmp_suppressed"],
    layout: Layout::Routed,
    run,
};

fn run(ctx: &mut Ctx) -> io::Result<()> {
    let topo = ctx.topo;
    let router = topo.router.as_ref().ok_or_else(|| io::Error::other("the lab has no router"))?;
    ctx.step("router: nft drop its own icmp frag-needed (output hook)")?;
    nft::apply(&router.ns, &nft::drop_own_frag_needed())?;
    let t = narrow_link_and_upload(ctx)?;
    ctx.check(format!("the upload stalls ({} of {} bytes arrived)", t.received, t.bytes), !t.completed);
    let dropped = nft::counter_of(&router.ns, FRAG_NEEDED_RULE).unwrap_or(0);
    ctx.check(format!("the router dropped its ICMP frag-needed ({dropped}x)"), dropped > 0);
    ctx.fact(format!("router nft dropped {dropped} own frag-needed"));
    ctx.stop_agent();
    if let Some(e) = black_hole_evidence(ctx) {
        ctx.check(
            format!("dropped_here = {} (the router dropped them)", e["dropped_here"]),
            e["dropped_here"] == false,
        );
        let icmp = e["icmp_dropped_here"].as_u64().unwrap_or(0);
        ctx.check(format!("icmp_dropped_here = {} (0)", e["icmp_dropped_here"]), icmp == 0);
    }
    Ok(())
}
