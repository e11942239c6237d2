//! Linux capabilities of this process, to name exactly what is missing.

/// CAP_NET_ADMIN.
pub const CAP_NET_ADMIN: u32 = 12;
/// CAP_SYS_ADMIN.
pub const CAP_SYS_ADMIN: u32 = 21;
/// CAP_PERFMON.
pub const CAP_PERFMON: u32 = 38;
/// CAP_BPF.
pub const CAP_BPF: u32 = 39;

/// What the agent needs: load programs and maps (CAP_BPF), attach to interfaces
/// (CAP_NET_ADMIN), and the pointer arithmetic on packets the verifier allows only to
/// "perfmon" programs (CAP_PERFMON).
pub const NEEDED: [(u32, &str); 3] =
    [(CAP_BPF, "CAP_BPF"), (CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_PERFMON, "CAP_PERFMON")];

/// The effective capability set, from /proc/self/status.
pub fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// The capabilities in [`NEEDED`] this process lacks (CAP_SYS_ADMIN stands in for
/// CAP_BPF and CAP_PERFMON, as on kernels before 5.8).
pub fn missing() -> Vec<&'static str> {
    let eff = effective();
    let has = |c: u32| eff & (1u64 << c) != 0;
    NEEDED.iter().filter(|(c, _)| !(has(*c) || (*c != CAP_NET_ADMIN && has(CAP_SYS_ADMIN)))).map(|(_, n)| *n).collect()
}

/// Drops every capability except CAP_BPF and CAP_NET_ADMIN (kept to attach to
/// interfaces that appear later) from all sets, and from the bounding set; returns the
/// names kept. Loading is done by then, so CAP_PERFMON and the rest are not needed.
pub fn keep_only_attach() -> Result<Vec<&'static str>, caps::errors::CapsError> {
    use caps::{CapSet, Capability};
    let keep = [(Capability::CAP_BPF, "CAP_BPF"), (Capability::CAP_NET_ADMIN, "CAP_NET_ADMIN")];
    let permitted = caps::read(None, CapSet::Permitted)?;
    let kept: caps::CapsHashSet = keep.iter().map(|(c, _)| *c).filter(|c| permitted.contains(c)).collect();
    // The bounding set first: shrinking it needs CAP_SETPCAP, dropped just below.
    for c in caps::all() {
        if !kept.contains(&c) {
            let _ = caps::drop(None, CapSet::Bounding, c);
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new())?;
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    Ok(keep.iter().filter(|(c, _)| kept.contains(c)).map(|(_, n)| *n).collect())
}
