//! The Debian packages the lab runs. Missing ones are installed with apt-get, saying
//! what and why; `apt-get update` runs only when something is missing.

use std::{
    io,
    process::{Command, Stdio},
};

/// (package, a program it provides).
pub const PACKAGES: &[(&str, &str)] = &[
    ("dnsmasq", "dnsmasq"),
    ("unbound", "unbound"),
    ("ocserv", "ocserv"),
    ("openconnect", "openconnect"),
    ("nftables", "nft"),
    ("gnutls-bin", "certtool"),
    ("iperf3", "iperf3"),
    ("socat", "socat"),
    ("iproute2", "ip"),
    ("dnsutils", "dig"),
    ("curl", "curl"),
    ("openssl", "openssl"),
];

fn installed(package: &str, program: &str) -> bool {
    let dpkg = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"ii"));
    dpkg || on_path(program)
}

/// Whether `program` is an executable on PATH (or in the sbin directories, which a
/// sudo PATH may lack).
pub fn on_path(program: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .any(|d| std::path::Path::new(d).join(program).is_file())
}

/// The packages that are not installed.
pub fn missing() -> Vec<&'static str> {
    PACKAGES.iter().filter(|(p, prog)| !installed(p, prog)).map(|(p, _)| *p).collect()
}

/// Installs what is missing; `say` prints progress. Fails when apt-get does.
pub fn ensure(say: &mut dyn FnMut(&str)) -> io::Result<()> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    say(&format!("installing missing packages: {} (apt-get update, then apt-get install)", missing.join(" ")));
    let apt = |args: &[&str]| -> io::Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| io::Error::new(e.kind(), format!("apt-get: {e} (install {} by hand)", missing.join(" "))))?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "apt-get {} failed ({status}); install {} by hand",
                args.join(" "),
                missing.join(" ")
            )))
        }
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    apt(&args)?;
    let still = self::missing();
    if !still.is_empty() {
        return Err(io::Error::other(format!("still missing after apt-get install: {}", still.join(" "))));
    }
    say(&format!("installed: {}", missing.join(" ")));
    Ok(())
}
