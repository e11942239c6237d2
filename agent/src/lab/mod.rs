//! `pathwatch lab`: a network-namespace testbed that reproduces each field problem
//! with real software (unbound, dnsmasq, ocserv, openconnect, nftables, the kernel's
//! own PMTU handling), runs the agent live on the lab gateway exactly as an operator
//! would, and reports what it found against what each scenario should produce.
//!
//! Every scenario gets a fresh lab (`pwlab-client`, `pwlab-gw`, `pwlab-server`, and
//! `pwlab-router` beyond the gateway for the faults that are not the gateway's), its
//! daemons owned by PID, its files in the run's temp dir; all of it is removed at the
//! end, on failure and on Ctrl-C, and a run first removes what a killed run left.

pub mod agent;
pub mod netns;
pub mod nft;
pub mod packages;
pub mod pki;
pub mod report;
pub mod resolver;
pub mod scenario;
pub mod signals;
pub mod topology;
pub mod traffic;
pub mod vpn;
pub mod web;
pub mod workdir;

use std::{path::PathBuf, time::Instant};

use crate::{
    cli::LabArgs,
    output::{JsonTarget, Output},
};
use scenario::{Ctx, Def, Outcome};
use topology::{SERVER_V4, Topology};

/// Name prefix of the lab's namespaces.
pub const PREFIX: &str = "pwlab-";

/// The agent's configuration in the lab: thresholds scaled down so that each
/// scenario takes seconds, not minutes; everything else is the default.
pub const AGENT_CONFIG: &str = "# pathwatch lab: thresholds scaled down for the lab (everything else default).\n\
[dtls]\n\
# default 10: ClientHellos unanswered for 3 s are dtls_blocked\n\
timeout_s = 3.0\n\
# default 10 and 300: the lab's rhythms are 5 s (openconnect restarts, an HTTPS\n\
# poller), six sessions spanning 25 s\n\
reconnect_min_period_s = 2.0\n\
reconnect_min_span_s = 20.0\n\
\n\
[output]\n\
# default 10: a stats line every 2 s\n\
report_interval_s = 2.0\n";

/// The scaled-down settings, in one line.
pub const AGENT_CONFIG_BRIEF: &str = "dtls.timeout_s = 3 (default 10), dtls.reconnect_min_period_s = 2 (default \
                                       10), dtls.reconnect_min_span_s = 20 (default 300), output.report_interval_s = 2 \
                                       (default 10)";

fn select(names: &[String]) -> Result<Vec<&'static Def>, String> {
    if names.is_empty() {
        return Ok(scenario::ALL.iter().collect());
    }
    let mut out: Vec<&'static Def> = Vec::new();
    for n in names {
        let def = scenario::by_name(n).ok_or_else(|| {
            format!(
                "unknown scenario {n:?}; the scenarios are: {}",
                scenario::ALL.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
            )
        })?;
        if !out.iter().any(|d| d.name == def.name) {
            out.push(def);
        }
    }
    Ok(out)
}

/// What `--keep` left running.
struct Kept {
    scenario: &'static str,
    namespaces: Vec<String>,
    pids: Vec<(u32, String, String)>,
    dir: PathBuf,
}

/// Runs the lab; returns the exit code.
pub fn main(args: LabArgs) -> u8 {
    let selected = match select(&args.scenarios) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("error: {msg}");
            return 2;
        }
    };
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("pathwatch lab needs root (it creates network namespaces); run it with sudo");
        return 2;
    }
    let mut out = match Output::new(JsonTarget::from_arg(args.json.as_deref()), 0) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    signals::install();
    match lab(&args, &selected, &mut out) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            out.error(&format!("error: {e}"));
            1
        }
    }
}

fn lab(args: &LabArgs, selected: &[&'static Def], out: &mut Output) -> std::io::Result<bool> {
    let started = Instant::now();
    let _lock = workdir::Lock::take()?;
    let removed = workdir::remove_leftovers(PREFIX);
    if !removed.is_empty() {
        out.human(&format!("lab: removed leftovers of an earlier run: {}", removed.join(", ")));
    }
    packages::ensure(&mut |l| out.human(&format!("lab: {l}")))?;
    let agent_bin = match &args.agent {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    if !agent_bin.is_file() {
        return Err(std::io::Error::other(format!("agent binary {} does not exist", agent_bin.display())));
    }
    let mut work = workdir::WorkDir::create()?;
    let pki = pki::Pki::create(&work.sub("pki")?, SERVER_V4)?;
    let agent_config = work.path().join("agent.toml");
    std::fs::write(&agent_config, AGENT_CONFIG)?;
    out.human(&format!(
        "lab: {} scenario(s); agent {} run on the gateway's two interfaces with --config {} ({AGENT_CONFIG_BRIEF})",
        selected.len(),
        agent_bin.display(),
        agent_config.display()
    ));

    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut kept: Option<Kept> = None;
    for (i, def) in selected.iter().enumerate() {
        if signals::interrupted() {
            break;
        }
        let last = i + 1 == selected.len();
        out.human(&format!("lab: [{}/{}] {}: {}", i + 1, selected.len(), def.name, def.about));
        let t0 = Instant::now();
        let (outcome, topo, daemons) = match Topology::build_layout(PREFIX, def.layout) {
            Err(e) => (Outcome::failed(def, format!("building the lab: {e}"), t0), None, Vec::new()),
            Ok(topo) => {
                let dir = work.sub(def.name)?;
                let mut say = |l: &str| out.human(l);
                let mut ctx = Ctx::new(&topo, dir, &pki, &agent_bin, &agent_config, &mut say);
                let o = scenario::run(def, &mut ctx, t0);
                let daemons = std::mem::take(&mut ctx.daemons);
                drop(ctx);
                (o, Some(topo), daemons)
            }
        };
        out.human(&format!(
            "lab: {} {} in {:.1} s (found: {})",
            def.name,
            if outcome.pass { "passed" } else { "FAILED" },
            outcome.seconds,
            {
                let k: Vec<&str> = outcome.found.iter().filter_map(|f| f["kind"].as_str()).collect();
                if k.is_empty() { "nothing".to_string() } else { k.join(", ") }
            }
        ));
        out.json(&report::scenario_json(&outcome));
        outcomes.push(outcome);
        if args.keep && last && !signals::interrupted() {
            if let Some(topo) = topo {
                let pids = daemons
                    .into_iter()
                    .map(|d| (d.ns().to_string(), d.name().to_string(), d))
                    .map(|(ns, name, d)| (d.release(), name, ns))
                    .collect();
                work.keep();
                kept =
                    Some(Kept { scenario: def.name, namespaces: topo.release(), pids, dir: work.path().to_path_buf() });
            }
        } else {
            // Daemons first (by PID), then the namespaces with whatever is left in them.
            drop(daemons);
            drop(topo);
        }
    }
    let interrupted = signals::interrupted();
    let seconds = started.elapsed().as_secs_f64();

    out.human("");
    for l in report::table(&outcomes) {
        out.human(&l);
    }
    out.human("");
    for o in &outcomes {
        for l in report::details(o) {
            out.human(&l);
        }
        out.human("");
    }
    let passed = outcomes.iter().filter(|o| o.pass).count();
    out.human(&format!(
        "lab: {passed}/{} scenario(s) met their expectation in {seconds:.1} s{}",
        outcomes.len(),
        if interrupted { " (interrupted: the remaining scenarios did not run)" } else { "" }
    ));
    out.json(&report::summary_json(
        &outcomes,
        seconds,
        interrupted,
        &agent_bin.display().to_string(),
        AGENT_CONFIG_BRIEF,
    ));
    if let Some(k) = kept {
        out.human(&format!("lab: --keep: the lab is left as {} left it. To remove it:", k.scenario));
        for (pid, name, ns) in &k.pids {
            if *pid != 0 {
                out.human(&format!("  kill {pid}    # {name} in {ns}"));
            }
        }
        for ns in &k.namespaces {
            out.human(&format!("  ip netns pids {ns} | xargs -r kill    # anything else still in it"));
            out.human(&format!("  ip netns del {ns}"));
        }
        out.human(&format!("  rm -rf {}", k.dir.display()));
        out.human("(or run `pathwatch lab` again: it removes the leftovers first)");
    }
    Ok(passed == outcomes.len() && passed == selected.len() && !interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_picked_by_name_once_each_and_unknown_names_list_the_valid_ones() {
        assert_eq!(select(&[]).unwrap().len(), scenario::ALL.len());
        let picked = select(&["pmtu-ok".into(), "vpn-ok".into(), "pmtu-ok".into()]).unwrap();
        assert_eq!(picked.iter().map(|d| d.name).collect::<Vec<_>>(), ["pmtu-ok", "vpn-ok"]);
        let e = select(&["vpn-ok".into(), "nope".into()]).unwrap_err();
        assert!(e.contains("\"nope\""), "{e}");
        for d in scenario::ALL {
            assert!(e.contains(d.name), "{e}");
        }
    }

    #[test]
    fn the_lab_agent_config_is_a_valid_config() {
        let c = crate::config::Config::parse(AGENT_CONFIG, std::path::Path::new("agent.toml")).unwrap();
        assert_eq!(c.dtls.timeout_s.0, 3.0);
        assert_eq!(c.dtls.reconnect_min_period_s.0, 2.0);
        assert_eq!(c.dtls.reconnect_min_span_s.0, 20.0);
        assert_eq!(c.output.report_interval_s.0, 2.0);
    }
}
