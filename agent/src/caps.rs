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
pub const NEEDED: [(u32, &str); 3] = [(CAP_BPF, "CAP_BPF"), (CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_PERFMON, "CAP_PERFMON")];

/// The effective capability set, from /proc/self/status.
pub fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// The capabilities in [`NEEDED`] this process lacks (CAP_SYS_ADMIN stands in for
/// CAP_BPF and CAP_PERFMON, as on kernels before 5.8).
pub fn missing() -> Vec<&'static str> {
    let eff = effective();
    let has = |c: u32| eff & (1u64 << c) != 0;
    NEEDED
        .iter()
        .filter(|(c, _)| !(has(*c) || (*c != CAP_NET_ADMIN && has(CAP_SYS_ADMIN))))
        .map(|(_, n)| *n)
        .collect()
}
