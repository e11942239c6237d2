//! Where lines go: JSON lines (`finding`, `stats`, `summary`) for machines, and a
//! compact human rendering for operators.
//!
//! `--json -` sends JSON to stdout and the human lines to stderr; `--json PATH`
//! appends JSON to a file (reopened on SIGHUP, for logrotate) and keeps the human
//! lines on stdout. A JSON target that fails (a full disk, a closed pipe) is reported
//! once and dropped; everything else keeps going. For a command (`replay`), a reader
//! that closes standard output (`| head`) just ends it, quietly.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, IsTerminal, Write},
    path::PathBuf,
};

use serde_json::{Map, Value};

use crate::{detect::Finding, printable};

/// Where JSON lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonTarget {
    /// No JSON.
    None,
    /// Standard output (`--json -`).
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

impl JsonTarget {
    /// From the `--json` argument.
    pub fn from_arg(arg: Option<&str>) -> JsonTarget {
        match arg {
            None => JsonTarget::None,
            Some("-") => JsonTarget::Stdout,
            Some(path) => JsonTarget::File(PathBuf::from(path)),
        }
    }
}

enum Sink {
    Stdout(io::Stdout),
    Stderr(io::Stderr),
    File(BufWriter<File>),
}

impl Sink {
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        match self {
            Sink::Stdout(s) => {
                let mut l = s.lock();
                l.write_all(line.as_bytes())?;
                l.write_all(b"\n")?;
                l.flush()
            }
            Sink::Stderr(s) => {
                let mut l = s.lock();
                l.write_all(line.as_bytes())?;
                l.write_all(b"\n")
            }
            Sink::File(f) => {
                f.write_all(line.as_bytes())?;
                f.write_all(b"\n")?;
                f.flush()
            }
        }
    }
}

/// Whose output it is: it decides what a closed standard output means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// `run`: the agent keeps counting whatever happens to its outputs.
    Agent,
    /// `replay` and other commands: a reader that went away (`| head`) ends the
    /// output quietly, as it does for tcpdump or tshark.
    Command,
}

/// The outputs of one command.
pub struct Output {
    target: JsonTarget,
    json: Option<Sink>,
    human: Sink,
    verbose: u8,
    role: Role,
    stdout_closed: bool,
    /// JSON write failures (the target is dropped after the first).
    pub json_errors: u64,
}

impl Output {
    /// Opens the outputs. Fails only when a JSON file cannot be opened.
    pub fn new(target: JsonTarget, verbose: u8) -> io::Result<Output> {
        let (json, human) = match &target {
            JsonTarget::None => (None, Sink::Stdout(io::stdout())),
            JsonTarget::Stdout => (Some(Sink::Stdout(io::stdout())), Sink::Stderr(io::stderr())),
            JsonTarget::File(p) => (Some(Sink::File(open_append(p)?)), Sink::Stdout(io::stdout())),
        };
        Ok(Output { target, json, human, verbose, role: Role::Agent, stdout_closed: false, json_errors: 0 })
    }

    /// The outputs of a command that ends when its reader goes away (`replay`): a
    /// closed standard output is no error, and [`Output::stdout_closed`] says so.
    pub fn for_command(mut self) -> Output {
        self.role = Role::Command;
        self
    }

    /// Whether standard output was closed by its reader (`| head`).
    pub fn stdout_closed(&self) -> bool {
        self.stdout_closed
    }

    /// Whether human lines go to a terminal (for progress bars and colour).
    pub fn human_is_terminal(&self) -> bool {
        match &self.human {
            Sink::Stdout(s) => s.is_terminal(),
            Sink::Stderr(s) => s.is_terminal(),
            Sink::File(_) => false,
        }
    }

    /// The verbosity (`-v` count).
    pub fn verbose(&self) -> u8 {
        self.verbose
    }

    /// Reopens a JSON file (SIGHUP after logrotate moved it). Lines written before
    /// are flushed to the old file first, so none is lost across the reopen.
    pub fn reopen(&mut self) -> io::Result<()> {
        if let JsonTarget::File(p) = &self.target {
            if let Some(Sink::File(f)) = &mut self.json {
                let _ = f.flush();
            }
            self.json = Some(Sink::File(open_append(p)?));
        }
        Ok(())
    }

    /// Writes one JSON line.
    pub fn json(&mut self, value: &Value) {
        let Some(sink) = &mut self.json else { return };
        if let Err(e) = sink.write_line(&value.to_string()) {
            self.json = None;
            let to_stdout = self.target == JsonTarget::Stdout;
            if to_stdout && e.kind() == io::ErrorKind::BrokenPipe {
                self.stdout_closed = true;
                if self.role == Role::Command {
                    return;
                }
            }
            self.json_errors += 1;
            let where_ = match &self.target {
                JsonTarget::File(p) => crate::printable::path(p),
                _ => "standard output".to_string(),
            };
            let after = match self.role {
                Role::Agent => "; JSON output stopped, the agent keeps running",
                Role::Command => "",
            };
            self.error(&format!("error: cannot write JSON lines to {where_}: {e}{after}"));
        }
    }

    /// A human line (never fails the command).
    ///
    /// Control characters other than line breaks are escaped here, whatever the line
    /// carries ([`printable::lines`]): the last guard before the terminal.
    pub fn human(&mut self, line: &str) {
        if let Err(e) = self.human.write_line(&printable::lines(line))
            && e.kind() == io::ErrorKind::BrokenPipe
            && matches!(self.human, Sink::Stdout(_))
        {
            self.stdout_closed = true;
        }
    }

    /// An error or warning: always to standard error, whatever the outputs are;
    /// escaped as [`Output::human`] is.
    pub fn error(&mut self, line: &str) {
        let _ = Sink::Stderr(io::stderr()).write_line(&printable::lines(line));
    }

    /// A finding, both ways.
    pub fn finding(&mut self, f: &Finding) {
        self.json(&f.to_json());
        for line in render_finding(f) {
            self.human(&line);
        }
    }
}

fn open_append(p: &PathBuf) -> io::Result<BufWriter<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new().create(true).append(true).mode(0o640).open(p).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot open {} for JSON lines: {e}", crate::printable::path(p)))
    })?;
    Ok(BufWriter::new(f))
}

/// `key value` pairs of an evidence object, for one human line.
fn render_evidence(evidence: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for (k, v) in evidence {
        let v = match v {
            Value::Null => continue,
            Value::Object(m) if m.is_empty() => continue,
            Value::String(s) => s.clone(),
            Value::Object(m) => {
                format!("{{{}}}", m.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(","))
            }
            Value::Array(a) => format!("[{}]", a.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")),
            other => other.to_string(),
        };
        parts.push(format!("{k}={v}"));
    }
    parts.join("  ")
}

/// A finding as three lines: what, evidence, remedy.
pub fn render_finding(f: &Finding) -> Vec<String> {
    vec![
        format!("[{}] {}: {}", f.severity.name(), f.kind.name(), f.summary),
        format!("    evidence: {}", render_evidence(&f.evidence)),
        format!("    remedy: {}", f.remedy),
    ]
}
