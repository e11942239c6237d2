//! `pmtu-black-hole`: the gateway's far link is narrower (MTU 1400) than what the
//! client sends, and the gateway's own ICMP "fragmentation needed" is dropped in its
//! output hook. The client's bulk upload keeps retransmitting full-size segments and
//! stalls: Linux sets DF on TCP and `net.ipv4.tcp_mtu_probing` is 0. The agent runs on
//! that gateway, so it must also say that the gateway itself dropped the segments
//! (too big for the far link) and its own ICMP (its firewall).

use std::{io, time::Duration};

use serde_json::Value;

use super::{Ctx, Def, Layout};
use crate::lab::{
    nft, signals,
    topology::{GW_CLIENT_V4, GW_SERVER_V4, SERVER_V4},
    traffic::{self, Transfer},
};

/// The scenario.
pub const DEF: Def = Def {
    name: "pmtu-black-hole",
    about: "gateway far link MTU 1400, its ICMP frag-needed dropped (nft output hook); bulk TCP upload client -> \
            server",
    expected: "pmtu_black_hole (icmp_seen false, dropped_here true: PKT_TOO_BIG on the 1400 link, so \
               estimated_path_mtu 1400, the gateway's ICMP dropped as often as nft counted), local_icmp_suppressed, \
               the upload stalls, no pmtu_signal",
    present: &["pmtu_black_hole", "local_icmp_suppressed"],
    absent: &["pmtu_signal"],
    layout: Layout::Direct,
    run,
};

/// The far link's MTU.
pub const FAR_MTU: u32 = 1400;
const BYTES: u64 = 4_000_000;
const LIMIT: Duration = Duration::from_secs(5);
const PORT: u16 = 5001;
/// The nft rule that drops the ICMP frag-needed (its text in `nft list ruleset`).
pub const FRAG_NEEDED_RULE: &str = "icmp code frag-needed";

/// The narrow link (the far link nearest the server: the router's when the lab has
/// one, else the gateway's), a fresh route cache, and the upload (shared with
/// `pmtu-ok` and `pmtu-black-hole-beyond`).
pub fn narrow_link_and_upload(ctx: &mut Ctx) -> io::Result<Transfer> {
    let topo = ctx.topo;
    match &topo.router {
        Some(r) => {
            ctx.step(&format!("router: {} mtu {FAR_MTU}", r.server_if))?;
            r.narrow_far_link(FAR_MTU)?;
        }
        None => {
            ctx.step(&format!("gateway: {} mtu {FAR_MTU}", topo.gw_server_if))?;
            topo.narrow_far_link(FAR_MTU)?;
        }
    }
    topo.client.ip(&["route", "flush", "cache"])?;
    let probing = topo
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
    let t = traffic::bulk_upload(&topo.client, &topo.server, SERVER_V4, PORT, BYTES, LIMIT, &ctx.dir)?;
    ctx.fact(format!("upload {}/{} B in {:.1} s", t.received, t.bytes, t.seconds));
    Ok(t)
}

/// The agent's pmtu_black_hole towards the server, with the checks every black hole
/// shares (no ICMP seen, segments larger than the path, retransmitted); its evidence.
/// Call after [`Ctx::stop_agent`].
pub fn black_hole_evidence(ctx: &mut Ctx) -> Option<Value> {
    let Some(f) = ctx.findings("pmtu_black_hole").into_iter().find(|f| f["subject"]["receiver"] == SERVER_V4) else {
        ctx.check(format!("a pmtu_black_hole finding towards {SERVER_V4}"), false);
        return None;
    };
    let e = f["evidence"].clone();
    ctx.check(format!("icmp_seen = {}", e["icmp_seen"]), e["icmp_seen"] == false);
    let seg = e["segment_size"].as_u64().unwrap_or(0);
    ctx.check(format!("segment_size = {seg} (> {} fits)", FAR_MTU - 40), seg > u64::from(FAR_MTU - 40));
    let n = e["retransmissions"].as_u64().unwrap_or(0);
    ctx.check(format!("retransmissions = {n} (>= 3)"), n >= 3);
    Some(e)
}

fn run(ctx: &mut Ctx) -> io::Result<()> {
    let topo = ctx.topo;
    ctx.step("gateway: nft drop its own icmp frag-needed (output hook)")?;
    nft::apply(&topo.gw, &nft::drop_own_frag_needed())?;
    let t = narrow_link_and_upload(ctx)?;
    ctx.check(format!("the upload stalls ({} of {} bytes arrived)", t.received, t.bytes), !t.completed);
    // The client's socket, orphaned by the timeout, goes on retransmitting: stop that
    // at the client, so that the gateway's nft counter and the agent count the same
    // drops.
    ctx.step(&format!("client: nft drop its own tcp dport {PORT} (the counts are final)"))?;
    nft::apply(&topo.client, &nft::drop_own_tcp(PORT))?;
    signals::sleep(Duration::from_millis(300))?;
    let dropped = nft::counter_of(&topo.gw, FRAG_NEEDED_RULE).unwrap_or(0);
    ctx.check(format!("the gateway dropped its ICMP frag-needed ({dropped}x)"), dropped > 0);
    ctx.fact(format!("gateway nft dropped {dropped} own frag-needed"));
    ctx.stop_agent();
    if let Some(e) = black_hole_evidence(ctx) {
        ctx.check(format!("dropped_here = {}", e["dropped_here"]), e["dropped_here"] == true);
        ctx.check(format!("drop_reason = {}", e["drop_reason"]), e["drop_reason"] == "PKT_TOO_BIG");
        ctx.check(format!("drop_hook = {}", e["drop_hook"]), e["drop_hook"] == "forward");
        ctx.check(
            format!("drop_interface = {} (the gateway's far link {})", e["drop_interface"], topo.gw_server_if),
            e["drop_interface"] == topo.gw_server_if.as_str(),
        );
        ctx.check(format!("drop_interface_mtu = {}", e["drop_interface_mtu"]), e["drop_interface_mtu"] == FAR_MTU);
        // The kernel named the MTU when it dropped the segments: the path MTU is known.
        ctx.check(format!("estimated_path_mtu = {}", e["estimated_path_mtu"]), e["estimated_path_mtu"] == FAR_MTU);
        ctx.check(format!("suggested_mss = {}", e["suggested_mss"]), e["suggested_mss"] == FAR_MTU - 40);
        let icmp = e["icmp_dropped_here"].as_u64();
        ctx.check(
            format!("icmp_dropped_here = {} (nft counted {dropped})", e["icmp_dropped_here"]),
            icmp.is_some_and(|n| n > 0 && n == dropped),
        );
        ctx.check(format!("icmp_drop_hook = {}", e["icmp_drop_hook"]), e["icmp_drop_hook"] == "output");
        let count = e["drop_count"].as_u64().unwrap_or(0);
        ctx.check(
            format!("drop_count = {count} (>= the ICMP it caused, {})", icmp.unwrap_or(0)),
            count > 0 && count >= icmp.unwrap_or(0),
        );
    }
    let gw_addr = |f: &Value| f["subject"]["reporter"] == GW_CLIENT_V4 || f["subject"]["reporter"] == GW_SERVER_V4;
    match ctx.findings("local_icmp_suppressed").into_iter().find(gw_addr) {
        Some(f) => {
            let e = &f["evidence"];
            let frag = e["by_type"]["frag_needed"].as_u64().unwrap_or(0);
            ctx.check(
                format!("local_icmp_suppressed by_type.frag_needed = {frag} (>= 3, nft counted {dropped})"),
                frag >= 3 && frag == dropped,
            );
            ctx.check(format!("local_icmp_suppressed drop_hook = {}", e["drop_hook"]), e["drop_hook"] == "output");
        }
        None => {
            ctx.check("a local_icmp_suppressed finding reported by a gateway address", false);
        }
    }
    Ok(())
}
