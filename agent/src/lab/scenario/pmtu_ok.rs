//! `pmtu-ok`: the same narrow far link, ICMP allowed: the gateway's "fragmentation
//! needed" reaches the client, which lowers its path MTU and completes the upload.

use std::io;

use super::{
    Ctx, Def, Layout,
    pmtu_black_hole::{FAR_MTU, narrow_link_and_upload},
};
use crate::lab::topology::SERVER_V4;

/// The scenario.
pub const DEF: Def = Def {
    name: "pmtu-ok",
    about: "gateway far link MTU 1400, ICMP frag-needed allowed; bulk TCP upload client -> server",
    expected: "pmtu_signal (next_hop_mtu 1400), the upload completes, no pmtu_black_hole",
    present: &["pmtu_signal"],
    absent: &["pmtu_black_hole"],
    layout: Layout::Direct,
    run,
};

fn run(ctx: &mut Ctx) -> io::Result<()> {
    let t = narrow_link_and_upload(ctx)?;
    ctx.check(format!("the upload completes ({} of {} bytes)", t.received, t.bytes), t.completed);
    let route = ctx
        .topo
        .client
        .ip(&["route", "get", SERVER_V4])
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    ctx.check(format!("the client learned the path MTU ({route})"), route.contains(&format!("mtu {FAR_MTU}")));
    ctx.stop_agent();
    match ctx.findings("pmtu_signal").into_iter().find(|f| f["subject"]["receiver"] == SERVER_V4) {
        Some(f) => {
            let mtu = &f["evidence"]["next_hop_mtu"];
            ctx.check(format!("next_hop_mtu = {mtu}"), *mtu == FAR_MTU);
        }
        None => {
            ctx.check(format!("a pmtu_signal finding for traffic to {SERVER_V4}"), false);
        }
    }
    Ok(())
}
