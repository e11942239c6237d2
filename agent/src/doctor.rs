//! `pathwatch doctor`: can this host run the agent, and if not, what exactly to do.
//!
//! Each check prints `ok`, `warn` or `FAIL` with what it found and, when it is not
//! ok, the fix. The exit code is 0 when the agent can run, 1 when it cannot.

use agent_common::KernelConfig;

use crate::{
    caps,
    kernel::{
        Kernel, KernelError, LoadOptions,
        layout::{KernelLayout, LayoutError, VMLINUX_BTF},
    },
    run::interface_names,
};

struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, status: &str, what: &str, found: &str, fix: Option<&str>) {
        if status == "FAIL" {
            self.failed = true;
        }
        println!("{status:<4}  {what:<22} {found}");
        if let Some(fix) = fix {
            println!("      {:<22} fix: {fix}", "");
        }
    }
}

fn kernel_release() -> (String, (u32, u32)) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let mut parts =
        release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse().unwrap_or(0));
    (release.clone(), (parts.next().unwrap_or(0), parts.next().unwrap_or(0)))
}

/// Runs every check; returns the exit code.
pub fn main() -> u8 {
    let mut r = Report { failed: false };
    println!("pathwatch doctor {}", env!("CARGO_PKG_VERSION"));

    let (release, version) = kernel_release();
    if version >= (6, 6) {
        r.line("ok", "kernel", &format!("{release} (ring buffer, XDP links, tcx links)"), None);
    } else if version >= (5, 18) {
        r.line(
            "warn",
            "kernel",
            &format!("{release}: no tcx before 6.6, TC egress would use netlink filters that outlive a killed agent"),
            Some("use kernel 6.6 or newer, or run with --no-egress"),
        );
    } else {
        r.line(
            "FAIL",
            "kernel",
            &format!("{release}: the programs need 5.18+ (bpf_xdp_load_bytes)"),
            Some("upgrade the kernel to 6.6 or newer"),
        );
    }

    if std::path::Path::new(VMLINUX_BTF).exists() {
        r.line(
            "ok",
            "BTF",
            &format!("{VMLINUX_BTF} present (the drop program reads the kernel's layout from it)"),
            None,
        );
    } else {
        r.line(
            "warn",
            "BTF",
            &format!("{VMLINUX_BTF} missing: the drop program cannot run (the XDP and TC programs do not need it)"),
            Some(BTF_FIX),
        );
    }

    let missing = caps::missing();
    if missing.is_empty() {
        r.line("ok", "capabilities", "CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON effective", None);
    } else {
        let fix = format!(
            "run as root, or grant {}: `sudo setcap cap_bpf,cap_net_admin,cap_perfmon+ep $(command -v pathwatch)` (systemd: AmbientCapabilities=)",
            missing.join(", ")
        );
        r.line("FAIL", "capabilities", &format!("missing {}", missing.join(", ")), Some(&fix));
    }

    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit(2) writes one rlimit through the pointer, which points at
    // `lim`, a live rlimit we borrow exclusively for the call.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    let memlock = if lim.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".to_string()
    } else {
        format!("{} KiB", lim.rlim_cur / 1024)
    };
    if version >= (5, 11) || lim.rlim_cur == libc::RLIM_INFINITY {
        r.line("ok", "memlock", &format!("{memlock} (BPF memory is charged to the cgroup since 5.11)"), None);
    } else {
        r.line(
            "FAIL",
            "memlock",
            &format!("{memlock}: too low for the maps on this kernel"),
            Some("`ulimit -l unlimited`, or LimitMEMLOCK=infinity in the unit"),
        );
    }

    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled") {
        r.line(
            "ok",
            "unprivileged BPF",
            &format!("kernel.unprivileged_bpf_disabled = {} (pathwatch needs capabilities either way)", v.trim()),
            None,
        );
    }

    let mut kernel = match Kernel::load(&LoadOptions::default(), &KernelConfig::new()) {
        Ok(k) => {
            r.line("ok", "load programs", "XDP and TC programs pass the verifier", None);
            Some(k)
        }
        Err(KernelError::Permission(e)) => {
            r.line("FAIL", "load programs", &e, Some("see capabilities above"));
            None
        }
        Err(e) => {
            r.line("FAIL", "load programs", &format!("{e}"), Some("report this with the verifier log above"));
            None
        }
    };

    // The drop program: the kernel's layout from its BTF, then the verifier's say.
    // Loaded, never attached: doctor leaves the host as it was.
    let layout = KernelLayout::from_kernel();
    let loaded = match (&layout, kernel.as_mut()) {
        (Ok(_), Some(k)) => Some(k.load_drops().map_err(|e| e.to_string())),
        _ => None,
    };
    let (status, found, fix) = drop_program(layout.as_ref(), loaded);
    r.line(status, "drop program", &found, fix.as_deref());

    if kernel.is_some() {
        // Judged from the driver, without attaching anything: a native XDP attach
        // resets the rings of some NICs, and doctor must not disturb the box.
        for name in interface_names() {
            let driver = driver_name(&name).unwrap_or_else(|| "unknown".into());
            let busy = crate::run::ifindex(&name).map(crate::run::xdp_holder).unwrap_or_default();
            if !busy.is_empty() {
                r.line(
                    "warn",
                    &format!("XDP on {name}"),
                    &format!("an XDP program is attached{busy}"),
                    Some("pathwatch cannot share the interface; stop that program or watch another one"),
                );
            } else if NATIVE_XDP_DRIVERS.contains(&driver.as_str()) {
                r.line("ok", &format!("XDP on {name}"), &format!("native (driver {driver})"), None);
            } else {
                r.line(
                    "warn",
                    &format!("XDP on {name}"),
                    &format!("generic (skb) mode (driver {driver} has no native XDP)"),
                    Some("fine for lower rates; --xdp-mode auto falls back by itself"),
                );
            }
        }
    }
    if r.failed {
        println!("pathwatch cannot run here yet: fix the FAIL lines above.");
        1
    } else {
        println!("pathwatch can run here.");
        0
    }
}

/// What to do when the kernel has no BTF.
const BTF_FIX: &str = "build the kernel with CONFIG_DEBUG_INFO_BTF=y (most distributions' kernels have it)";

/// What a run does without the drop program, said on every line where it cannot run.
const WITHOUT_DROPS: &str = "pathwatch runs without it, and its findings will say dropped_here: \"unknown\" (whether this host dropped the packets)";

/// The drop program's line: `layout` as read from the kernel's BTF, and whether the
/// verifier took the program (`None`: not tried, the layout or the other programs
/// failed). Not a FAIL either way: the agent runs without it.
fn drop_program(
    layout: Result<&KernelLayout, &LayoutError>,
    loaded: Option<Result<(), String>>,
) -> (&'static str, String, Option<String>) {
    match (layout, loaded) {
        (Err(e @ LayoutError::NoBtf), _) => ("warn", format!("cannot run: {e}; {WITHOUT_DROPS}"), Some(BTF_FIX.into())),
        (Err(e), _) => (
            "warn",
            format!("cannot run: {e}; {WITHOUT_DROPS}"),
            Some(
                "use Linux 6.6 or newer (kfree_skb has carried its drop reason since 5.17); on a newer kernel, report \
                 this line with `uname -r`; `kernel.drops = false` in the configuration silences the run's notice"
                    .into(),
            ),
        ),
        (Ok(l), None) => (
            "warn",
            format!(
                "kfree_skb tracepoint and offsets as expected ({} drop reasons), but the program was not loaded; {WITHOUT_DROPS}",
                l.reasons.len()
            ),
            Some("see load programs above".into()),
        ),
        (Ok(_), Some(Err(e))) => (
            "warn",
            format!("the kernel refused the program: {e}; {WITHOUT_DROPS}"),
            Some("report this with the verifier log above; `kernel.drops = false` silences the run's notice".into()),
        ),
        (Ok(l), Some(Ok(()))) => (
            "ok",
            format!(
                "kfree_skb tracepoint (skb, location, reason) and sk_buff offsets as expected, {} drop reasons named; \
                 the program passes the verifier",
                l.reasons.len()
            ),
            None,
        ),
    }
}

/// Drivers with native XDP support in mainline Linux 6.x.
const NATIVE_XDP_DRIVERS: &[&str] = &[
    "mlx5_core",
    "mlx4_en",
    "i40e",
    "ice",
    "ixgbe",
    "ixgbevf",
    "igb",
    "igc",
    "ena",
    "virtio_net",
    "veth",
    "tun",
    "bnxt_en",
    "nfp",
    "qede",
    "sfc",
    "thunder-nicvf",
    "mvneta",
    "mvpp2",
    "stmmac",
    "dpaa2-eth",
    "enetc",
    "fec",
    "hv_netvsc",
    "netdevsim",
    "gve",
    "octeontx2-nicpf",
    "lan966x-switch",
    "cpsw",
    "mana",
    "idpf",
];

/// The interface's driver (ETHTOOL_GDRVINFO), as `ethtool -i` shows it.
fn driver_name(iface: &str) -> Option<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    // SAFETY: DrvInfo is repr(C) integers and byte arrays, for which all zeroes is a
    // valid value (it is what the kernel's struct ethtool_drvinfo starts as).
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    // SAFETY: ifreq is a C struct of a byte array and a union of integers and
    // pointers; all zeroes is a valid value of each (a null pointer, an empty name).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(iface.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: socket(2) takes integers only; the fd it returns is ours alone, used
    // only for the ioctl below and closed right after.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: SIOCETHTOOL reads the name from `ifr` (NUL-terminated: at most
    // IFNAMSIZ - 1 bytes were copied into a zeroed array) and, for ETHTOOL_GDRVINFO,
    // writes at most one ethtool_drvinfo through `ifru_data`, which points at `info`:
    // a repr(C) struct of that layout, alive and not otherwise borrowed during the call.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut ifr) };
    // SAFETY: `fd` is the socket opened above, closed once, and not used after.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    let name: String = info.driver[..end].iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }).collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use agent_common::drop::DropConfig;

    use super::*;

    fn layout() -> KernelLayout {
        let reasons = BTreeMap::from([(2, "NOT_SPECIFIED".to_string()), (3, "NO_SOCKET".to_string())]);
        KernelLayout { offsets: DropConfig::default(), reasons }
    }

    #[test]
    fn drop_program_ready_when_the_layout_is_read_and_the_verifier_takes_it() {
        let l = layout();
        let (status, found, fix) = drop_program(Ok(&l), Some(Ok(())));
        assert_eq!((status, fix), ("ok", None));
        assert!(found.contains("kfree_skb tracepoint") && found.contains("2 drop reasons"), "{found}");
    }

    #[test]
    fn drop_program_missing_says_what_findings_lose_and_what_to_do() {
        let l = layout();
        let missing = LayoutError::Missing("kfree_skb tracepoint (skb, location, reason)".into());
        let refused = Some(Err("loading pw_drop: invalid argument".to_string()));
        for (layout, loaded, fix) in [
            (Err(&LayoutError::NoBtf), None, "CONFIG_DEBUG_INFO_BTF=y"),
            (Err(&missing), None, "Linux 6.6 or newer"),
            (Ok(&l), None, "load programs above"),
            (Ok(&l), refused, "verifier log"),
        ] {
            let (status, found, got) = drop_program(layout, loaded);
            assert_eq!(status, "warn", "{found}");
            assert!(found.contains("dropped_here: \"unknown\""), "{found}");
            assert!(got.as_deref().is_some_and(|f| f.contains(fix)), "{found}: fix {got:?}");
        }
        let (_, found, _) = drop_program(Err(&missing), None);
        assert!(found.contains("kfree_skb tracepoint (skb, location, reason)"), "{found}");
    }
}
