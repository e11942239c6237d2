//! The Debian packages the project needs, and installing only the missing ones.
//!
//! A new machine of the project's kind is Debian 12 with nothing but rustup's stable
//! toolchain; the eBPF compiler, LLVM for bpf-linker and the daemons and tools the
//! tests and the lab drive all come from apt. Deciding what is missing is pure
//! (dpkg-query output in, package names out) and unit-tested.

use std::{
    collections::HashSet,
    io::Write,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::sh;

/// LLVM 22 development files: bpf-linker 0.13 links against them, whichever compiler.
pub const LLVM: &str = "llvm-22-dev";
/// Debian's eBPF-capable compiler: rustc 1.96 at /usr/bin/rustc and its library sources.
pub const COMPILER: &[&str] = &["rustc-web", "rust-web-src"];
/// Tools the integration tests and the lab run.
pub const RUNTIME: &[&str] = &[
    "dnsmasq",
    "unbound",
    "ocserv",
    "openconnect",
    "nftables",
    "tshark",
    "tcpdump",
    "iperf3",
    "socat",
    "gnutls-bin",
    "dnsutils",
    "iproute2",
    "openssl",
    "prometheus",
    // The fault tests ask it which links, programs, maps and pins still exist.
    "bpftool",
    // The format tests compress captures as users do, with the real tools.
    "gzip",
    "zstd",
    "xz-utils",
];
/// Answer for tshark's "may non-root users capture?" debconf question, so it never asks.
const WIRESHARK_PRESEED: &str = "wireshark-common wireshark-common/install-setuid boolean false\n";
/// Options for every apt-get run: no prompts for changed config files, and wait for a
/// dpkg lock held by someone else instead of failing at once.
const APT_OPTIONS: &[&str] = &[
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
    "-o",
    "DPkg::Lock::Timeout=600",
];

/// Whether a dpkg `${Status}` (`want flag status`) means the package is on disk and
/// configured: `install ok installed`, `hold ok installed`.
pub fn is_installed(status: &str) -> bool {
    let words: Vec<&str> = status.split_whitespace().collect();
    words.len() == 3 && words[1] == "ok" && words[2] == "installed"
}

/// The installed packages named in `dpkg-query -W -f='${Package}\t${Status}\n'` output.
pub fn installed_set(dpkg_output: &str) -> HashSet<&str> {
    dpkg_output
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, status)| is_installed(status))
        .map(|(name, _)| name.trim())
        .collect()
}

/// The packages of `wanted` that the dpkg-query output does not show installed, in
/// `wanted`'s order.
pub fn missing<'a>(wanted: &[&'a str], dpkg_output: &str) -> Vec<&'a str> {
    let installed = installed_set(dpkg_output);
    wanted.iter().copied().filter(|p| !installed.contains(p)).collect()
}

/// Runs dpkg-query for `pkgs`; `None` when dpkg-query does not exist (not Debian).
/// Unknown packages are simply absent from the output (dpkg-query then exits 1).
pub fn query(pkgs: &[&str]) -> Result<Option<String>> {
    let out = match Command::new("dpkg-query").arg("-W").arg("-f=${Package}\t${Status}\n").args(pkgs).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("cannot run dpkg-query"),
    };
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The commands a root user would run to install `pkgs`, for error messages.
pub fn root_commands(pkgs: &[&str]) -> String {
    format!("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {}", pkgs.join(" "))
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args(APT_OPTIONS).stdin(Stdio::null());
    cmd
}

/// `apt-get update`. Sources other than Debian's may be unreachable here; that is a
/// warning, not a failure: the install that follows says whether anything is missing.
pub fn update(prefix: &str) -> Result<()> {
    let mut cmd = apt_get();
    cmd.args(["update", "-q"]);
    if let Err(e) = sh::run(prefix, &mut cmd) {
        println!("{prefix}  warning: {e:#}; going on with the package lists apt has");
    }
    Ok(())
}

/// Preseeds debconf so that installing tshark (wireshark-common) cannot ask.
pub fn preseed_wireshark(prefix: &str) -> Result<()> {
    println!("{prefix}  $ debconf-set-selections <<< '{}'", WIRESHARK_PRESEED.trim());
    let mut child = Command::new("debconf-set-selections")
        .stdin(Stdio::piped())
        .spawn()
        .context("cannot start debconf-set-selections")?;
    child.stdin.take().expect("piped stdin").write_all(WIRESHARK_PRESEED.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("debconf-set-selections failed ({status})");
    }
    Ok(())
}

/// `apt-get install -y PKGS` without prompts.
pub fn install(prefix: &str, pkgs: &[&str]) -> Result<()> {
    let mut cmd = apt_get();
    cmd.args(["install", "-y", "-q"]).args(pkgs);
    sh::run(prefix, &mut cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert!(is_installed("install ok installed"));
        assert!(is_installed("hold ok installed"));
        assert!(!is_installed("deinstall ok config-files"));
        assert!(!is_installed("install ok half-configured"));
        assert!(!is_installed("unknown ok not-installed"));
        assert!(!is_installed(""));
    }

    #[test]
    fn missing_keeps_order_and_ignores_other_lines() {
        let out = "dnsmasq\tinstall ok installed\nunbound\tdeinstall ok config-files\n\
                   tshark\tunknown ok not-installed\nsocat\thold ok installed\n";
        let wanted = ["rustc-web", "dnsmasq", "unbound", "tshark", "socat", "prometheus"];
        assert_eq!(missing(&wanted, out), ["rustc-web", "unbound", "tshark", "prometheus"]);
    }

    #[test]
    fn nothing_missing_when_all_installed() {
        let out: String = RUNTIME.iter().map(|p| format!("{p}\tinstall ok installed\n")).collect();
        assert!(missing(RUNTIME, &out).is_empty());
        assert_eq!(missing(RUNTIME, ""), RUNTIME);
    }

    #[test]
    fn root_commands_name_every_package() {
        let text = root_commands(&["llvm-22-dev", "tshark"]);
        assert!(text.starts_with("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "));
        assert!(text.ends_with("llvm-22-dev tshark"));
    }
}
