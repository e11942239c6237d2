//! `dns-probe-storm`: the AnyConnect core module's `mus.cisco.com` probe (Cisco bug
//! CSCvu39643) against a resolver that answers SERVFAIL, every 1.5 s instead of the
//! field's 15 s.

use std::{io, time::Duration};

use super::{Ctx, Def, Layout};
use crate::lab::{
    resolver::{OK_ADDR, OK_NAME, Resolver},
    signals,
    topology::SERVER_V4,
    traffic,
};

/// The scenario.
pub const DEF: Def = Def {
    name: "dns-probe-storm",
    about: "the client asks A mus.cisco.com every 1.5 s (8 times); the resolver (unbound forwarding to a dnsmasq \
            without upstreams) answers SERVFAIL",
    expected: "dns_probe_storm: pattern periodic (~1.5 s), known_probe cisco-anyconnect-mus",
    present: &["dns_probe_storm"],
    absent: &[],
    layout: Layout::Direct,
    run,
};

const PROBE: &str = "mus.cisco.com";
const PERIOD: Duration = Duration::from_millis(1500);
const PROBES: usize = 8;

fn run(ctx: &mut Ctx) -> io::Result<()> {
    ctx.step(&format!(
        "resolver: unbound on {SERVER_V4}:53 -> dnsmasq with no upstream servers (REFUSED, so SERVFAIL)"
    ))?;
    let resolver = Resolver::start(&ctx.topo.server, &ctx.dir, SERVER_V4)?;
    ctx.start_agent()?;
    let ok = traffic::dig(&ctx.topo.client, SERVER_V4, OK_NAME, "A")?;
    ctx.check(
        format!("the resolver answers other names ({OK_NAME} A: {} {})", ok.status, ok.answers.join("; ")),
        ok.status == "NOERROR" && ok.answers.iter().any(|a| a.ends_with(OK_ADDR)),
    );
    ctx.step(&format!("client: dig A {PROBE} every {:.1} s, {PROBES} times", PERIOD.as_secs_f64()))?;
    let digs = traffic::dig_every(&ctx.topo.client, SERVER_V4, PROBE, "A", PERIOD, PROBES)?;
    let servfail = digs.iter().filter(|d| d.status == "SERVFAIL").count();
    ctx.fact(format!("dig: {servfail}/{} SERVFAIL", digs.len()));
    ctx.check(format!("the resolver answered SERVFAIL ({servfail}/{})", digs.len()), servfail == digs.len());
    // The last answer is on its way through the gateway.
    signals::sleep(Duration::from_millis(300))?;
    ctx.stop_agent();

    let storm = ctx.findings("dns_probe_storm").into_iter().find(|f| f["subject"]["qname"] == PROBE);
    if let Some(f) = storm {
        let e = &f["evidence"];
        ctx.check(format!("known_probe = {}", e["known_probe"]), e["known_probe"] == "cisco-anyconnect-mus");
        ctx.check(format!("pattern = {}", e["pattern"]), e["pattern"] == "periodic");
        let period = e["period_s"].as_f64().unwrap_or(0.0);
        ctx.check(format!("period_s = {period} (1.5 +- 0.15)"), (period - PERIOD.as_secs_f64()).abs() <= 0.15);
    } else {
        ctx.check(format!("a dns_probe_storm finding for {PROBE}"), false);
    }
    ctx.keep(resolver.unbound);
    ctx.keep(resolver.dnsmasq);
    Ok(())
}
