//! `pmtu-black-hole`: the gateway's far link is narrower (MTU 1400) than what the
//! client sends, and the gateway's own ICMP "fragmentation needed" is dropped in its
//! output hook. The client's bulk upload keeps retransmitting full-size segments and
//! stalls: Linux sets DF on TCP and `net.ipv4.tcp_mtu_probing` is 0.

use std::{io, time::Duration};

use super::{Ctx, Def};
use crate::lab::{
    nft,
    topology::SERVER_V4,
    traffic::{self, Transfer},
};

/// The scenario.
pub const DEF: Def = Def {
    name: "pmtu-black-hole",
    about: "gateway far link MTU 1400, its ICMP frag-needed dropped (nft output hook); bulk TCP upload client -> \
            server",
    expected: "pmtu_black_hole (icmp_seen false), the upload stalls, no pmtu_signal",
    present: &["pmtu_black_hole"],
    absent: &["pmtu_signal"],
    run,
};

/// The far link's MTU.
pub const FAR_MTU: u32 = 1400;
const BYTES: u64 = 4_000_000;
const LIMIT: Duration = Duration::from_secs(5);
const PORT: u16 = 5001;

/// The narrow link, a fresh route cache, and the upload (shared with `pmtu-ok`).
pub fn narrow_link_and_upload(ctx: &mut Ctx) -> io::Result<Transfer> {
    ctx.step(&format!("gateway: {} mtu {FAR_MTU}", ctx.topo.gw_server_if))?;
    ctx.topo.narrow_far_link(FAR_MTU)?;
    ctx.topo.client.ip(&["route", "flush", "cache"])?;
    let probing = ctx
        .topo
        .client
        .exec("sysctl", &["-n", "net.ipv4.tcp_mtu_probing"])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    ctx.fact(format!("tcp_mtu_probing={probing}"));
    ctx.start_agent()?;
    ctx.step(&format!(
        "client: socat upload of {BYTES} bytes to {SERVER_V4}:{PORT} (route cache flushed, at most {} s)",
        LIMIT.as_secs()
    ))?;
    let t = traffic::bulk_upload(&ctx.topo.client, &ctx.topo.server, SERVER_V4, PORT, BYTES, LIMIT, &ctx.dir)?;
    ctx.fact(format!("upload {}/{} B in {:.1} s", t.received, t.bytes, t.seconds));
    Ok(t)
}

fn run(ctx: &mut Ctx) -> io::Result<()> {
    ctx.step("gateway: nft drop its own icmp frag-needed (output hook)")?;
    nft::apply(&ctx.topo.gw, &nft::drop_own_frag_needed())?;
    let t = narrow_link_and_upload(ctx)?;
    ctx.check(format!("the upload stalls ({} of {} bytes arrived)", t.received, t.bytes), !t.completed);
    let dropped = nft::counters(&ctx.topo.gw).iter().sum::<u64>();
    ctx.check(format!("the gateway dropped its ICMP frag-needed ({dropped}x)"), dropped > 0);
    ctx.stop_agent();
    match ctx.findings("pmtu_black_hole").into_iter().find(|f| f["subject"]["receiver"] == SERVER_V4) {
        Some(f) => {
            let e = &f["evidence"];
            ctx.check(format!("icmp_seen = {}", e["icmp_seen"]), e["icmp_seen"] == false);
            let seg = e["segment_size"].as_u64().unwrap_or(0);
            ctx.check(format!("segment_size = {seg} (> {} fits)", FAR_MTU - 40), seg > u64::from(FAR_MTU - 40));
            let n = e["retransmissions"].as_u64().unwrap_or(0);
            ctx.check(format!("retransmissions = {n} (>= 3)"), n >= 3);
        }
        None => {
            ctx.check(format!("a pmtu_black_hole finding towards {SERVER_V4}"), false);
        }
    }
    Ok(())
}
