//! A process a live test starts inside a namespace (usually the agent), with its
//! output kept in files and its end under the test's control: signalled, waited for
//! with a deadline, and killed by its PID when the handle drops, also when the test
//! fails.

use std::{
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Stdio},
    time::{Duration, Instant},
};

use pathwatch::lab::netns::{NetNs, wait_for};

/// A process started in a namespace, stdout and stderr in files of their own (or
/// stdout a pipe), killed by its PID when dropped.
pub struct Proc {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    /// `wrapper... program args...` inside `ns`, stdout and stderr in
    /// `DIR/TAG.out` and `DIR/TAG.err`. The wrappers the tests use (`ip netns exec`,
    /// `setpriv`, `unshare`, `sh -c 'exec "$@"'`) exec their command, so the PID is
    /// the program's own.
    pub fn spawn(ns: &NetNs, wrapper: &[&str], program: &Path, args: &[&str], dir: &Path, tag: &str) -> Proc {
        Proc::start(ns, wrapper, program, args, dir, tag, false)
    }

    /// [`Proc::spawn`] with stdout a pipe, for [`Proc::take_stdout`].
    pub fn spawn_piped(ns: &NetNs, wrapper: &[&str], program: &Path, args: &[&str], dir: &Path, tag: &str) -> Proc {
        Proc::start(ns, wrapper, program, args, dir, tag, true)
    }

    fn start(
        ns: &NetNs,
        wrapper: &[&str],
        program: &Path,
        args: &[&str],
        dir: &Path,
        tag: &str,
        piped_stdout: bool,
    ) -> Proc {
        let (out, err) = (dir.join(format!("{tag}.out")), dir.join(format!("{tag}.err")));
        let mut c = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = ns.cmd(w);
                c.args(rest).arg(program);
                c
            }
            None => ns.cmd(program.to_str().unwrap()),
        };
        c.args(args).stdin(Stdio::null()).stderr(std::fs::File::create(&err).unwrap());
        if piped_stdout {
            c.stdout(Stdio::piped());
        } else {
            c.stdout(std::fs::File::create(&out).unwrap());
        }
        let child = c.spawn().unwrap_or_else(|e| panic!("{c:?}: {e}"));
        Proc { child: Some(child), out, err }
    }

    /// The read end of a piped stdout ([`Proc::spawn_piped`]); dropping it closes
    /// the pipe under the process.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    /// What it wrote to stdout so far (empty for a piped stdout).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Its PID (0 once it was waited for).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `sig` (a SIGSTOP'd process stays stopped until SIGCONT).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Waits up to `timeout` for the exit code (`Some(-1)`: killed by a signal);
    /// kills the process and returns None if it is still running then.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig`, then [`Proc::wait`]s.
    pub fn stop(&mut self, sig: i32, timeout: Duration) -> Option<i32> {
        self.signal(sig);
        self.wait(timeout)
    }

    /// Both outputs, for a failure message.
    pub fn logs(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout(), self.stderr())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A stopped process dies of SIGKILL too.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `program ARGS` (the agent) in `ns` behind `wrapper` (e.g. setpriv) and
/// waits up to 20 s until it says it is watching; panics with its output if it does
/// not.
pub fn agent_with(ns: &NetNs, wrapper: &[&str], program: &Path, args: &[&str], dir: &Path, tag: &str) -> Proc {
    let mut a = Proc::spawn(ns, wrapper, program, args, dir, tag);
    let ready = wait_for(Duration::from_secs(20), || a.stderr().contains("pathwatch: watching") || !a.running());
    assert!(ready && a.running(), "the agent did not start:\n{}", a.logs());
    a
}

/// `pathwatch ARGS` (this build's) in `ns`, output in `DIR/agent.*`, once it is
/// watching: [`agent_with`] without a wrapper.
pub fn agent(ns: &NetNs, args: &[&str], dir: &Path) -> Proc {
    agent_with(ns, &[], &crate::bin(), args, dir, "agent")
}
