//! Outside programs the tests run (promtool, prometheus, systemd-analyze, dnsmasq …):
//! finding them, installing a missing Debian package, and running one to completion
//! under a deadline, killed by its PID when it overruns.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use crate::privileged;

/// A finished child process.
pub struct Output {
    /// The exit code; None when killed by a signal or never started.
    pub code: Option<i32>,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr (or why it could not start).
    pub stderr: String,
}

impl Output {
    /// Whether it exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Exit code and both outputs, for a failure message.
    pub fn text(&self) -> String {
        format!("exit code {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs `program args` in `cwd` with `env` added, killing it (by PID) if it is not
/// done within `timeout`, which is then a test failure. A program that cannot be
/// started gives no exit code and the reason on stderr.
pub fn run_env(program: &str, args: &[&str], cwd: &Path, env: &[(&str, &str)], timeout: Duration) -> Output {
    let spawned = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Output { code: None, stdout: String::new(), stderr: format!("cannot run {program}: {e}\n") },
    };
    let pipe = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().expect("stdout")));
    let err = pipe(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                // The readers may be held by grandchildren: leave them.
                panic!("{program} {args:?} did not finish within {timeout:?}; killed (pid {})", child.id());
            }
        }
    };
    Output { code: status.code(), stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// [`run_env`] with no environment added.
pub fn run(program: &str, args: &[&str], cwd: &Path, timeout: Duration) -> Output {
    run_env(program, args, cwd, &[], timeout)
}

/// The executable `tool` on PATH (or in the sbin directories).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from)).find_map(|dir| {
        let p = dir.join(tool);
        let meta = std::fs::metadata(&p).ok()?;
        use std::os::unix::fs::PermissionsExt;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(p)
    })
}

/// One apt-get at a time (tests run in parallel threads).
static APT: Mutex<()> = Mutex::new(());

/// Installs Debian `packages` (as root): `apt-get install`, after `apt-get update` if
/// the first attempt fails.
pub fn apt_install(packages: &[&str]) {
    let _guard = APT.lock().unwrap_or_else(|e| e.into_inner());
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let limit = Duration::from_secs(900);
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(packages);
    let mut out = run_env("apt-get", &args, Path::new("/"), &env, limit);
    if !out.ok() {
        let update = run_env("apt-get", &["update", "-q"], Path::new("/"), &env, limit);
        assert!(update.ok(), "apt-get update failed:\n{}", update.text());
        out = run_env("apt-get", &args, Path::new("/"), &env, limit);
    }
    assert!(out.ok(), "apt-get install {packages:?} failed:\n{}", out.text());
}

/// The path of `tool`, for a test named `test`: found, or installed from Debian
/// `package` when root. Otherwise None: the test is skipped (or fails under
/// PATHWATCH_REQUIRE_BPF).
pub fn tool(test: &str, tool: &str, package: &str) -> Option<String> {
    if let Some(p) = which(tool) {
        return Some(utf8(p));
    }
    if !privileged(test) {
        eprintln!("SKIP {test}: {tool} (Debian package {package}) is not installed");
        return None;
    }
    Some(ensure_tool(tool, package))
}

/// The path of `tool`, installing Debian `package` when it is missing; for tests
/// that already run as root.
pub fn ensure_tool(tool: &str, package: &str) -> String {
    if let Some(p) = which(tool) {
        return utf8(p);
    }
    apt_install(&[package]);
    utf8(which(tool).unwrap_or_else(|| panic!("installed {package} but {tool} is still missing")))
}

fn utf8(p: PathBuf) -> String {
    p.to_str().expect("utf-8 tool path").to_string()
}
