//! Network namespaces, veth pairs and daemons, owned and cleaned up by name and PID.
//!
//! The lab and the live tests build their hosts here. Rules (DESIGN.md, "Test network
//! rules"): only namespaces this process created, only 198.18.0.0/15 and fd00::/8
//! inside them; every daemon is killed by PID and every namespace deleted by name,
//! also when a scenario fails (Drop), and leftovers of a killed run are removed first.

use std::{
    io::{self, Write},
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// Runs a command to completion; an error carries the command and its stderr.
pub fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.output().map_err(|e| io::Error::new(e.kind(), format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// `ip ARGS`.
pub fn ip(args: &[&str]) -> io::Result<Output> {
    run(Command::new("ip").args(args))
}

/// A network namespace, deleted (with every process still in it) on drop.
pub struct NetNs {
    name: String,
    armed: bool,
}

impl NetNs {
    /// Creates `name` (deleting a leftover of the same name first).
    pub fn new(name: &str) -> io::Result<NetNs> {
        remove_netns(name);
        ip(&["netns", "add", name])?;
        let ns = NetNs { name: name.to_string(), armed: true };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        run(self.cmd("ip").args(args))
    }

    /// `sysctl -w KEY=VALUE` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<Output> {
        run(self.cmd("sysctl").args(["-q", "-w", &format!("{key}={value}")]))
    }

    /// Runs a program inside the namespace to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        run(self.cmd(program).args(args))
    }

    /// Runs a program inside the namespace to completion with `input` on its standard
    /// input (`nft -f -`).
    pub fn exec_with_input(&self, program: &str, args: &[&str], input: &[u8]) -> io::Result<Output> {
        let mut c = self.cmd(program);
        c.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let what = format!("{c:?}");
        let mut child = c.spawn().map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input)?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(out)
    }

    /// Starts a program inside the namespace, killed by PID when the handle drops.
    pub fn spawn(&self, name: &str, program: &str, args: &[&str], log: Option<&Path>) -> io::Result<Daemon> {
        self.spawn_with_input(name, program, args, log, None)
    }

    /// Like [`NetNs::spawn`], with `input` written to the program's standard input,
    /// which is then closed (a password for `--passwd-on-stdin`). Without `input`
    /// standard input is /dev/null. Standard output and error go to `log` (truncated).
    pub fn spawn_with_input(
        &self,
        name: &str,
        program: &str,
        args: &[&str],
        log: Option<&Path>,
        input: Option<&[u8]>,
    ) -> io::Result<Daemon> {
        let mut c = self.cmd(program);
        c.args(args).stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
        match log {
            Some(path) => {
                let f = std::fs::File::create(path)?;
                c.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                c.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let mut child = c.spawn().map_err(|e| io::Error::new(e.kind(), format!("starting {name} ({program}): {e}")))?;
        if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
            // A program that exits before reading is reported by its log, not here.
            let _ = stdin.write_all(bytes);
        }
        Ok(Daemon { name: name.to_string(), ns: self.name.clone(), child: Some(child) })
    }

    /// Leaves the namespace in place when the handle drops (`pathwatch lab --keep`);
    /// returns its name.
    pub fn release(mut self) -> String {
        self.armed = false;
        self.name.clone()
    }

    /// PIDs of the processes in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if self.armed {
            remove_netns(&self.name);
        }
    }
}

/// PIDs of the processes in namespace `ns` (none when it does not exist).
pub fn pids_in(ns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process in namespace `name` (by PID) and deletes it; quiet if absent.
/// Kills again what shows up meanwhile (a daemon's child forked before its parent
/// died), for up to two seconds.
pub fn remove_netns(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let pids = pids_in(name);
        if pids.is_empty() || Instant::now() >= deadline {
            break;
        }
        for pid in pids {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours, so
            // it cannot break memory safety whatever the PID; the PID is one that
            // `ip netns pids` reported for our own namespace.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
}

/// Namespaces whose names start with `prefix` (leftovers of a killed run).
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(prefix))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Connects `a` and `b` with a veth pair named `a_if` / `b_if` (at most 15 bytes).
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) -> io::Result<()> {
    ip(&["link", "add", a_if, "netns", a.name(), "type", "veth", "peer", "name", b_if, "netns", b.name()])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// A process the lab started, killed by PID on drop.
pub struct Daemon {
    name: String,
    ns: String,
    child: Option<Child>,
}

impl Daemon {
    /// The process's name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace it runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Lets the process run on after the handle drops (`pathwatch lab --keep`);
    /// returns its PID (0 when it was already stopped).
    pub fn release(mut self) -> u32 {
        self.child.take().map_or(0, |c| c.id())
    }

    /// Waits up to `timeout` for the process to exit by itself; returns its exit
    /// code (`Some(-1)` when a signal ended it), or `None` while it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours; the
            // PID is our own child's, not yet reaped, so it names no other process.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `signal` and waits up to `timeout` for the process to exit (then kills it).
    /// Returns its exit code when it exited by itself.
    pub fn stop(&mut self, signal: i32, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; the
        // PID is our own child's, not yet reaped, so it names no other process.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `check` holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}
