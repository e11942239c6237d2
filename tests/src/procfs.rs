//! What the kernel says of a running agent, for the live tests to assert on: the bpf
//! objects it holds (from /proc/PID/fdinfo, or bpftool), its status fields, CPU time
//! and descriptors, and what `ip link` and bpftool show attached to an interface.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use pathwatch::lab::netns::NetNs;

/// One bpf object a process holds, from /proc/PID/fdinfo.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BpfFd {
    /// `link_type`, `link_id`, `prog_id`, `ifindex`.
    Link(String, u32, u32, u32),
    /// A program.
    Prog(u32),
    /// `map_id`, `map_type`, `max_entries`.
    Map(u32, u32, u32),
}

impl BpfFd {
    /// The link type (`xdp`, `tcx`) of a link.
    pub fn link_type(&self) -> Option<&str> {
        match self {
            BpfFd::Link(t, ..) => Some(t),
            _ => None,
        }
    }
}

/// Every bpf object `pid` holds a descriptor of, sorted (empty when it is gone).
pub fn bpf_fds(pid: u32) -> Vec<BpfFd> {
    let mut out = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return out };
    for fd in fds.flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
        let num =
            |k: &str| field(k).and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok())).unwrap_or(0);
        if let Some(t) = field("link_type:") {
            out.push(BpfFd::Link(t, num("link_id:"), num("prog_id:"), num("ifindex:")));
        } else if field("map_id:").is_some() {
            out.push(BpfFd::Map(num("map_id:"), num("map_type:"), num("max_entries:")));
        } else if field("prog_id:").is_some() {
            out.push(BpfFd::Prog(num("prog_id:")));
        }
    }
    out.sort();
    out
}

/// The bpf links `pid` holds, sorted.
pub fn links_of(pid: u32) -> Vec<BpfFd> {
    bpf_fds(pid).into_iter().filter(|f| matches!(f, BpfFd::Link(..))).collect()
}

/// The link types (`xdp`, `tcx`) `pid` holds on `ifindex`.
pub fn link_types_on(pid: u32, ifindex: u32) -> Vec<String> {
    bpf_fds(pid)
        .into_iter()
        .filter_map(|f| match f {
            BpfFd::Link(t, _, _, i) if i == ifindex => Some(t),
            _ => None,
        })
        .collect()
}

/// Whether `pid` watches `ifindex`: an XDP and a tcx link on it.
pub fn watched(pid: u32, ifindex: u32) -> bool {
    let t = link_types_on(pid, ifindex);
    t.iter().any(|t| t == "xdp") && t.iter().any(|t| t == "tcx")
}

/// A line `Key:\tvalue` of /proc/PID/status.
pub fn status_field(pid: u32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':'))).map(|v| v.trim().to_string())
}

/// `VmHWM` (peak RSS) in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmHWM").and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok())).unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces: fields are counted after its closing paren.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Clock ticks per second (the unit of [`cpu_ticks`]).
pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The open file descriptors of `pid`, ascending.
pub fn fds_of(pid: u32) -> Vec<u64> {
    let mut fds: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// bpftool's path, when it is installed (the tests work without it).
pub fn bpftool() -> Option<&'static str> {
    ["/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool"].into_iter().find(|p| Path::new(p).exists())
}

/// Whether a bpf object of kind `what` (`prog`, `map`, `link`) with `id` still exists
/// anywhere: asked of bpftool when there is one, else of every process's fdinfo.
pub fn bpf_object_exists(what: &str, id: u32) -> bool {
    if let Some(tool) = bpftool() {
        return Command::new(tool)
            .args([what, "show", "id", &id.to_string()])
            .output()
            .is_ok_and(|o| o.status.success());
    }
    let Ok(procs) = std::fs::read_dir("/proc") else { return false };
    procs.flatten().filter_map(|p| p.file_name().to_string_lossy().parse::<u32>().ok()).any(|pid| {
        bpf_fds(pid).iter().any(|f| match (what, f) {
            ("prog", BpfFd::Prog(p)) | ("prog", BpfFd::Link(_, _, p, _)) => *p == id,
            ("map", BpfFd::Map(m, _, _)) => *m == id,
            ("link", BpfFd::Link(_, l, _, _)) => *l == id,
            _ => false,
        })
    })
}

/// Everything under `dir`, recursively, sorted (bpffs pins).
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(tree(&p));
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// What `ip -d link` shows of XDP on `iface` in `ns`, and `bpftool net` of tcx.
pub fn shown_attached(ns: &NetNs, iface: &str) -> Vec<String> {
    let mut found = Vec::new();
    let link =
        ns.exec("ip", &["-d", "link", "show", "dev", iface]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if link.as_ref().is_ok_and(|l| l.contains("xdp")) {
        found.push(format!("ip link: {}", link.unwrap()));
    }
    if let Some(tool) = bpftool() {
        let net = ns
            .exec(tool, &["net", "show", "dev", iface])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if net.contains("tcx") || net.lines().any(|l| l.contains(iface) && l.contains("id ")) {
            found.push(format!("bpftool net: {net}"));
        }
    }
    found
}
