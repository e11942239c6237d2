//! The scenarios: each reproduces one field problem (or its healthy twin) with real
//! software on a fresh lab, runs the agent on the gateway meanwhile, and states what
//! the agent must find, and must not.

mod dns_probe_storm;
mod dns_resolver_outage;
mod dtls_blocked;
mod dtls_blocked_beyond;
mod dtls_port_mismatch;
mod https_clients;
mod pmtu_black_hole;
mod pmtu_black_hole_beyond;
mod pmtu_ok;
mod vpn_ok;
mod vpn_reconnect_loop;

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

pub use super::topology::Layout;
use super::{
    agent::{Agent, AgentReport},
    netns::Daemon,
    pki::Pki,
    topology::Topology,
};

/// One scenario.
pub struct Def {
    /// Name on the command line.
    pub name: &'static str,
    /// What it reproduces.
    pub about: &'static str,
    /// What the agent must report, in words.
    pub expected: &'static str,
    /// Finding kinds that must be there.
    pub present: &'static [&'static str],
    /// Finding kinds that must not.
    pub absent: &'static [&'static str],
    /// The hosts it needs: a router beyond the gateway or not.
    pub layout: Layout,
    /// Builds the fault, makes the traffic, stops the agent, checks the evidence.
    pub run: fn(&mut Ctx) -> io::Result<()>,
}

/// Every scenario, in the order `pathwatch lab` runs them.
pub const ALL: &[Def] = &[
    dns_probe_storm::DEF,
    vpn_ok::DEF,
    dtls_blocked::DEF,
    dtls_blocked_beyond::DEF,
    dtls_port_mismatch::DEF,
    pmtu_black_hole::DEF,
    pmtu_black_hole_beyond::DEF,
    pmtu_ok::DEF,
    https_clients::DEF,
    vpn_reconnect_loop::DEF,
    dns_resolver_outage::DEF,
];

/// The scenario named `name`.
pub fn by_name(name: &str) -> Option<&'static Def> {
    ALL.iter().find(|d| d.name == name)
}

/// One verified statement.
#[derive(Clone, Debug)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Whether it held.
    pub ok: bool,
}

/// What a scenario works with, and what it records.
pub struct Ctx<'a> {
    /// The lab.
    pub topo: &'a Topology,
    /// The scenario's own directory (configs, logs).
    pub dir: PathBuf,
    /// The VPN credentials.
    pub pki: &'a Pki,
    agent_bin: &'a Path,
    agent_config: &'a Path,
    agent: Option<Agent>,
    /// The agent's report, once stopped.
    pub report: Option<AgentReport>,
    /// Checks made.
    pub checks: Vec<Check>,
    /// Short facts for the table's evidence column ("dig: 8/8 SERVFAIL").
    pub facts: Vec<String>,
    /// Log excerpts to show (title, lines).
    pub logs: Vec<(String, Vec<String>)>,
    /// Daemons that outlive the scenario's function (kept with `--keep`).
    pub daemons: Vec<Daemon>,
    say: &'a mut dyn FnMut(&str),
}

impl<'a> Ctx<'a> {
    /// A context for one scenario run.
    pub fn new(
        topo: &'a Topology,
        dir: PathBuf,
        pki: &'a Pki,
        agent_bin: &'a Path,
        agent_config: &'a Path,
        say: &'a mut dyn FnMut(&str),
    ) -> Ctx<'a> {
        Ctx {
            topo,
            dir,
            pki,
            agent_bin,
            agent_config,
            agent: None,
            report: None,
            checks: Vec::new(),
            facts: Vec::new(),
            logs: Vec::new(),
            daemons: Vec::new(),
            say,
        }
    }

    /// Prints a progress line, after checking for Ctrl-C.
    pub fn step(&mut self, msg: &str) -> io::Result<()> {
        super::signals::check()?;
        (self.say)(&format!("  {msg}"));
        Ok(())
    }

    /// Starts the agent on both gateway interfaces.
    pub fn start_agent(&mut self) -> io::Result<()> {
        let [a, b] = self.topo.gw_interfaces();
        self.step(&format!("agent: pathwatch run -i {a} -i {b} (in {})", self.topo.gw.name()))?;
        self.agent = Some(Agent::start(&self.topo.gw, self.agent_bin, &[a, b], Some(self.agent_config), &self.dir)?);
        Ok(())
    }

    /// Stops the agent (SIGTERM) and keeps its report; a no-op when it is not running.
    pub fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            let report = agent.stop();
            (self.say)(&format!(
                "  agent stopped (exit {}): {} JSON lines, findings: {}",
                report.exit.map_or("killed".to_string(), |c| c.to_string()),
                report.lines.len(),
                if report.findings.is_empty() { "none".to_string() } else { report.kinds().join(", ") }
            ));
            self.report = Some(report);
        }
    }

    /// Waits up to `timeout` for the running agent to report a finding of `kind` that
    /// `pred` accepts; returns whether it did (false when the agent is not running).
    pub fn wait_finding(&mut self, kind: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> io::Result<bool> {
        match self.agent.as_mut() {
            Some(a) => Ok(a.wait_finding(timeout, |f| f["kind"] == kind && pred(f))?.is_some()),
            None => Ok(false),
        }
    }

    /// The agent's findings of `kind` (after [`Ctx::stop_agent`]).
    pub fn findings(&self, kind: &str) -> Vec<Value> {
        self.report.as_ref().map(|r| r.of_kind(kind).into_iter().cloned().collect()).unwrap_or_default()
    }

    /// A summary event counter of the agent (after [`Ctx::stop_agent`]).
    pub fn event(&self, name: &str) -> u64 {
        self.report.as_ref().map_or(0, |r| r.event(name))
    }

    /// Records a check; returns whether it held.
    pub fn check(&mut self, what: impl Into<String>, ok: bool) -> bool {
        self.checks.push(Check { what: what.into(), ok });
        ok
    }

    /// Records a fact for the evidence column.
    pub fn fact(&mut self, fact: impl Into<String>) {
        self.facts.push(fact.into());
    }

    /// Records log lines to show.
    pub fn log(&mut self, title: impl Into<String>, lines: Vec<String>) {
        self.logs.push((title.into(), lines));
    }

    /// Hands a daemon to the runner: stopped with the lab, or kept with `--keep`.
    pub fn keep(&mut self, d: Daemon) {
        self.daemons.push(d);
    }
}

/// A scenario's result.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The scenario.
    pub def: &'static Def,
    /// The agent's findings (final evidence).
    pub found: Vec<Value>,
    /// The checks, including the expected and forbidden kinds.
    pub checks: Vec<Check>,
    /// Facts for the evidence column.
    pub facts: Vec<String>,
    /// Log excerpts.
    pub logs: Vec<(String, Vec<String>)>,
    /// Why it could not complete.
    pub error: Option<String>,
    /// Whether it met its expectation.
    pub pass: bool,
    /// How long it took.
    pub seconds: f64,
}

impl std::fmt::Debug for Def {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Runs `def` in `ctx`: its function, then the kind checks. The agent is stopped
/// whatever happened; the daemons stay in `ctx` for the runner.
pub fn run(def: &'static Def, ctx: &mut Ctx, started: Instant) -> Outcome {
    let result = (def.run)(ctx);
    ctx.stop_agent();
    let found = ctx.report.as_ref().map(|r| r.findings.clone()).unwrap_or_default();
    let kinds: Vec<&str> = found.iter().filter_map(|f| f["kind"].as_str()).collect();
    let mut checks = Vec::new();
    if result.is_ok() {
        for k in def.present {
            checks.push(Check { what: format!("{k} found"), ok: kinds.contains(k) });
        }
        for k in def.absent {
            checks.push(Check { what: format!("no {k}"), ok: !kinds.contains(k) });
        }
    }
    checks.append(&mut ctx.checks);
    let error = result.err().map(|e| e.to_string());
    let pass = error.is_none() && checks.iter().all(|c| c.ok);
    Outcome {
        def,
        found,
        checks,
        facts: std::mem::take(&mut ctx.facts),
        logs: std::mem::take(&mut ctx.logs),
        error,
        pass,
        seconds: started.elapsed().as_secs_f64(),
    }
}

impl Outcome {
    /// A scenario that could not even start.
    pub fn failed(def: &'static Def, error: String, started: Instant) -> Outcome {
        Outcome {
            def,
            found: Vec::new(),
            checks: Vec::new(),
            facts: Vec::new(),
            logs: Vec::new(),
            error: Some(error),
            pass: false,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}
