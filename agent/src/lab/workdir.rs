//! The run's scratch directory and lock, and the leftovers of a run that died.
//!
//! Everything a run writes (PKI, daemon configs and logs, the agent's JSON) lives in
//! one directory, `$TMPDIR/pathwatch-lab-<pid>`, removed when the run ends. A lock
//! keeps two labs from tearing down each other's namespaces; `kill -9` releases it
//! with the process, so the next run finds the dead run's namespaces, processes and
//! directory and removes them first.

use std::{
    io,
    path::{Path, PathBuf},
};

use super::netns;

/// Name prefix of the scratch directories.
const DIR_PREFIX: &str = "pathwatch-lab-";

/// A scratch directory, removed on drop unless kept.
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// Creates `$TMPDIR/pathwatch-lab-<pid>` (readable by the daemons' users).
    pub fn create() -> io::Result<WorkDir> {
        let path = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(WorkDir { path, keep: false })
    }

    /// Creates a directory at `path` (the tests' own), removed on drop.
    pub fn at(path: &Path) -> io::Result<WorkDir> {
        let _ = std::fs::remove_dir_all(path);
        std::fs::create_dir_all(path)?;
        Ok(WorkDir { path: path.to_path_buf(), keep: false })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory, created.
    pub fn sub(&self, name: &str) -> io::Result<PathBuf> {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }

    /// Leaves the directory in place (`--keep`: the kept daemons use its files).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The lab lock, held for the whole run: an abstract Unix socket name, which only
/// one process can bind and which the kernel frees when that process dies, however
/// it dies. No file is left behind.
pub struct Lock {
    _socket: std::os::unix::net::UnixListener,
}

impl Lock {
    /// Takes the lock, or says that another lab holds it.
    pub fn take() -> io::Result<Lock> {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(b"pathwatch-lab")?;
        match std::os::unix::net::UnixListener::bind_addr(&addr) {
            Ok(socket) => Ok(Lock { _socket: socket }),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "another `pathwatch lab` is running (it holds the abstract socket @pathwatch-lab); wait for it to finish",
            )),
            Err(e) => Err(e),
        }
    }
}

/// Removes what a dead or kept run left: namespaces named `prefix*` (and every
/// process in them, by PID) and scratch directories of other runs. Returns what it
/// removed, for the log. Call it holding the [`Lock`].
pub fn remove_leftovers(prefix: &str) -> Vec<String> {
    let mut removed = Vec::new();
    for ns in netns::netns_with_prefix(prefix) {
        let pids = netns::pids_in(&ns);
        netns::remove_netns(&ns);
        removed.push(if pids.is_empty() {
            format!("namespace {ns}")
        } else {
            format!("namespace {ns} (killed pid {})", pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
        });
    }
    let own = format!("{DIR_PREFIX}{}", std::process::id());
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_run_dir = name
                .strip_prefix(DIR_PREFIX)
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
            if is_run_dir && name != own && std::fs::remove_dir_all(e.path()).is_ok() {
                removed.push(format!("directory {}", e.path().display()));
            }
        }
    }
    removed
}
