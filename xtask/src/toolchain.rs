//! Which compiler builds the eBPF programs, decided exactly as `agent/build.rs` decides.
//!
//! The kernel programs need `core` built from source for the bpfel target: a rustup
//! nightly with `rust-src` (a typical laptop), or Debian's `rustc-web` + `rust-web-src`
//! linked as the rustup toolchain `debian-web` (a machine where rustup cannot download).
//! The decision is a pure function so it can be tested without touching the machine;
//! the probes that feed it are thin wrappers over `rustup` and `bpf-linker`.

use std::path::{Path, PathBuf};

use crate::sh;

/// The rustup name Debian's compiler is linked under (agent/build.rs knows it too).
pub const DEBIAN_TOOLCHAIN: &str = "debian-web";
/// Where Debian's `rustc-web` lives (`/usr/bin/rustc`, `/usr/lib/rustlib/src`).
pub const DEBIAN_PREFIX: &str = "/usr";
/// The rustup toolchain preferred when it has `rust-src`.
pub const NIGHTLY: &str = "nightly";
/// Environment variable that overrides the choice (read by agent/build.rs as well).
pub const OVERRIDE_ENV: &str = "PATHWATCH_EBPF_TOOLCHAIN";
/// Relative to a sysroot: present exactly when that toolchain can build `core`.
pub const CORE_SRC: &str = "lib/rustlib/src/rust/library/core/src/lib.rs";
/// The oldest Debian rustc-web known to build the eBPF crate (bookworm's first
/// rustc-web, 1.85, is what apt offers before `apt-get update`).
pub const MIN_DEBIAN_RUSTC: (u32, u32, u32) = (1, 96, 0);
/// The bpf-linker release the project is built and tested with.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM that bpf-linker 0.13 is built against (`--features llvm-22`).
pub const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

/// The toolchain that will build the eBPF programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// rustup `nightly` with `rust-src`: nothing to install for the compiler.
    Nightly,
    /// Debian's `rustc-web`; `link` says the rustup link is still to be made.
    DebianWeb { link: bool },
    /// `PATHWATCH_EBPF_TOOLCHAIN` names some other rustup toolchain, used as is.
    Other(String),
}

impl Choice {
    /// The rustup toolchain name.
    pub fn name(&self) -> &str {
        match self {
            Choice::Nightly => NIGHTLY,
            Choice::DebianWeb { .. } => DEBIAN_TOOLCHAIN,
            Choice::Other(name) => name,
        }
    }

    /// Whether Debian's compiler packages are needed.
    pub fn needs_debian_compiler(&self) -> bool {
        matches!(self, Choice::DebianWeb { .. })
    }
}

/// The decision: an explicit override wins; otherwise nightly if its sysroot has the
/// `core` sources, else Debian's compiler (linked now if it is not yet).
/// agent/build.rs makes the same choice once setup has installed Debian's compiler.
pub fn choose(override_name: Option<&str>, nightly_has_src: bool, debian_web_linked: bool) -> Choice {
    match override_name {
        Some(NIGHTLY) => Choice::Nightly,
        Some(DEBIAN_TOOLCHAIN) => Choice::DebianWeb { link: !debian_web_linked },
        Some(other) => Choice::Other(other.to_string()),
        None if nightly_has_src => Choice::Nightly,
        None => Choice::DebianWeb { link: !debian_web_linked },
    }
}

/// Whether `rustup toolchain list` output names `name` (lines look like
/// `debian-web`, `stable-x86_64-unknown-linux-gnu (active, default)`).
pub fn toolchain_listed(list: &str, name: &str) -> bool {
    list.lines().any(|l| l.split_whitespace().next() == Some(name))
}

/// The first `X.Y.Z` in a `--version` line (`rustc 1.97.0-nightly (...)` → 1.97.0).
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split_whitespace().find_map(|token| {
        let core = token.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let v = (parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(v)
    })
}

/// `X.Y.Z` as text.
pub fn version_string(v: (u32, u32, u32)) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

/// Whether `bpf-linker --version` output reports exactly `want`.
pub fn linker_is(version_output: &str, want: &str) -> bool {
    parse_version(version_output).is_some() && parse_version(version_output) == parse_version(want)
}

/// `rustup run TOOLCHAIN rustc --print sysroot`, if that toolchain exists.
pub fn sysroot(toolchain: &str) -> Option<PathBuf> {
    sh::capture("rustup", &["run", toolchain, "rustc", "--print", "sysroot"]).map(PathBuf::from)
}

/// Whether the sysroot holds the `core` sources.
pub fn has_core_src(sysroot: &Path) -> bool {
    sysroot.join(CORE_SRC).is_file()
}

/// `rustup run TOOLCHAIN rustc -V`.
pub fn rustc_version(toolchain: &str) -> Option<String> {
    sh::capture("rustup", &["run", toolchain, "rustc", "-V"])
}

/// `rustup toolchain list`, or empty when rustup is missing.
pub fn rustup_toolchains() -> String {
    sh::capture("rustup", &["toolchain", "list"]).unwrap_or_default()
}

/// `bpf-linker --version`, if one is on PATH.
pub fn bpf_linker_version() -> Option<String> {
    sh::capture("bpf-linker", &["--version"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_with_src_wins_without_override() {
        assert_eq!(choose(None, true, false), Choice::Nightly);
        assert_eq!(choose(None, true, true), Choice::Nightly);
    }

    #[test]
    fn nightly_without_src_falls_back_to_debian() {
        // This machine: a `nightly` toolchain exists but has no rust-src.
        assert_eq!(choose(None, false, true), Choice::DebianWeb { link: false });
        assert_eq!(choose(None, false, false), Choice::DebianWeb { link: true });
    }

    #[test]
    fn override_wins() {
        assert_eq!(choose(Some("debian-web"), true, false), Choice::DebianWeb { link: true });
        assert_eq!(choose(Some("nightly"), false, true), Choice::Nightly);
        assert_eq!(choose(Some("nightly-2026-05-01"), true, true), Choice::Other("nightly-2026-05-01".into()));
        assert!(!choose(Some("nightly-2026-05-01"), false, false).needs_debian_compiler());
        assert!(choose(None, false, true).needs_debian_compiler());
    }

    #[test]
    fn finds_linked_toolchain() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\nnightly-x86_64-unknown-linux-gnu\n\
                    1.95.0-x86_64-unknown-linux-gnu\ndebian-web\n";
        assert!(toolchain_listed(list, "debian-web"));
        assert!(!toolchain_listed(list, "nightly"));
        assert!(!toolchain_listed("debian-web-old\n", "debian-web"));
        assert!(!toolchain_listed("", "debian-web"));
        assert!(toolchain_listed("debian-web (active)\n", "debian-web"));
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version("rustc 1.96.0 (ac68faa20 2026-05-25) (built from a source tarball)"),
            Some((1, 96, 0))
        );
        assert_eq!(parse_version("rustc 1.97.0-nightly (e50aa6fba 2026-05-19)"), Some((1, 97, 0)));
        assert_eq!(parse_version("bpf-linker 0.13.0"), Some((0, 13, 0)));
        assert_eq!(parse_version("1.85.0+dfsg3-1~deb12u3"), Some((1, 85, 0)));
        assert_eq!(parse_version("no version here 2026-05-19"), None);
        assert!(parse_version("rustc 1.85.0 (x)").unwrap() < MIN_DEBIAN_RUSTC);
    }

    #[test]
    fn linker_version_must_match_exactly() {
        assert!(linker_is("bpf-linker 0.13.0", BPF_LINKER_VERSION));
        assert!(!linker_is("bpf-linker 0.9.15", BPF_LINKER_VERSION));
        assert!(!linker_is("bpf-linker 0.13.1", BPF_LINKER_VERSION));
        assert!(!linker_is("", BPF_LINKER_VERSION));
    }
}
