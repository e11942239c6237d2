//! The agent on the lab gateway, run exactly as an operator would run it:
//! `pathwatch run -i IF1 -i IF2 --json FILE --config FILE` inside the gateway's
//! namespace, stopped with SIGTERM, its JSON lines (findings, stats, summary) read
//! back.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    netns::{Daemon, NetNs},
    resolver::tail,
    signals,
};

/// A running agent.
pub struct Agent {
    daemon: Daemon,
    /// Its JSON lines.
    pub json: PathBuf,
    /// Its human output and errors.
    pub log: PathBuf,
}

/// What a stopped agent reported.
#[derive(Clone, Debug, Default)]
pub struct AgentReport {
    /// Exit code (`None`: it had to be killed).
    pub exit: Option<i32>,
    /// Every JSON line.
    pub lines: Vec<Value>,
    /// Every finding once, with final evidence (the summary's list; the finding
    /// lines, last of each, when there is no summary).
    pub findings: Vec<Value>,
    /// The summary line.
    pub summary: Option<Value>,
    /// The human output.
    pub log: String,
}

impl Agent {
    /// Starts `bin run` in `ns` on `interfaces` (XDP + TC egress on each), JSON lines
    /// to `dir/agent.json`, and waits until it is attached.
    pub fn start(ns: &NetNs, bin: &Path, interfaces: &[&str], config: Option<&Path>, dir: &Path) -> io::Result<Agent> {
        let json = dir.join("agent.json");
        let log = dir.join("agent.log");
        let _ = std::fs::remove_file(&json);
        let _ = std::fs::remove_file(&log);
        let mut args: Vec<String> = vec!["run".into()];
        for i in interfaces {
            args.extend(["-i".into(), (*i).to_string()]);
        }
        args.extend(["--json".into(), json.to_string_lossy().into_owned()]);
        if let Some(c) = config {
            args.extend(["--config".into(), c.to_string_lossy().into_owned()]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut daemon = ns.spawn("pathwatch run", &bin.to_string_lossy(), &argv, Some(&log))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::fs::read_to_string(&log).unwrap_or_default().contains("pathwatch: watching") {
                return Ok(Agent { daemon, json, log });
            }
            if !daemon.running() || Instant::now() >= deadline {
                return Err(io::Error::other(format!("the agent did not attach: {}", tail(&log, 8))));
            }
            signals::sleep(Duration::from_millis(20))?;
        }
    }

    /// The agent's PID.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The complete JSON lines written so far.
    pub fn lines(&self) -> Vec<Value> {
        read_lines(&self.json)
    }

    /// Waits up to `timeout` for a finding line that `pred` accepts; returns it with
    /// the moment it was first seen in the file (polled every 50 ms).
    pub fn wait_finding(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> io::Result<Option<(Value, Instant)>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.lines().into_iter().find(|l| l["type"] == "finding" && pred(l)) {
                return Ok(Some((f, Instant::now())));
            }
            if !self.daemon.running() {
                return Err(io::Error::other(format!("the agent exited: {}", tail(&self.log, 8))));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            signals::sleep(Duration::from_millis(50))?;
        }
    }

    /// Stops the agent with SIGTERM (it detaches and writes its summary) and reads
    /// what it reported.
    pub fn stop(mut self) -> AgentReport {
        let exit = self.daemon.stop(libc::SIGTERM, Duration::from_secs(10));
        let lines = read_lines(&self.json);
        let summary = lines.iter().rev().find(|l| l["type"] == "summary").cloned();
        let findings = match summary.as_ref().and_then(|s| s["findings"].as_array()) {
            Some(all) => all.clone(),
            None => {
                let mut last: Vec<Value> = Vec::new();
                for l in lines.iter().filter(|l| l["type"] == "finding") {
                    last.retain(|f| !(f["kind"] == l["kind"] && f["subject"] == l["subject"]));
                    last.push(l.clone());
                }
                last
            }
        };
        AgentReport { exit, lines, findings, summary, log: std::fs::read_to_string(&self.log).unwrap_or_default() }
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A line still being written has no newline yet: leave it for the next read.
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

impl AgentReport {
    /// Kinds of the findings, in order, each once.
    pub fn kinds(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for f in &self.findings {
            if let Some(k) = f["kind"].as_str()
                && !out.iter().any(|o| o == k)
            {
                out.push(k.to_string());
            }
        }
        out
    }

    /// Findings of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.findings.iter().filter(|f| f["kind"] == kind).collect()
    }

    /// A counter of the summary's `events` (0 when absent).
    pub fn event(&self, name: &str) -> u64 {
        self.summary.as_ref().and_then(|s| s["events"][name].as_u64()).unwrap_or(0)
    }
}
