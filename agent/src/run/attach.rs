//! Attaching the programs to interfaces: XDP at ingress (driver mode where the
//! interface supports it, generic otherwise), TC (tcx) at egress. Every attachment is
//! a bpf_link owned by this process, so nothing stays attached after it exits,
//! however it exits.

use std::collections::BTreeMap;

use aya::programs::{
    LinkOrder, TcAttachType, XdpMode as AyaXdpMode, tc::SchedClassifierLinkId, tc::TcAttachOptions, xdp::XdpLinkId,
};

use super::slots::{Choice, SlotBook};
use crate::{
    cli::XdpMode,
    kernel::{Kernel, counters::ClassCounts},
    printable,
};

/// One watched interface.
#[derive(Debug)]
pub struct Attached {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Counter slot (0: shared).
    pub slot: u32,
    /// `native` or `skb`.
    pub xdp_mode: &'static str,
    xdp: Option<XdpLinkId>,
    tc: Option<SchedClassifierLinkId>,
}

/// Why an interface could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No such interface.
    #[error("no interface named {0:?} (see `ip -br link`)")]
    NoSuchInterface(String),
    /// The interface already has an XDP program or link, from another process.
    #[error("{iface}: an XDP program is already attached{holder} — stop it first, or watch another interface")]
    Busy {
        /// Interface.
        iface: String,
        /// Who holds it, when known (", held by pid 1234 (pathwatch)").
        holder: String,
    },
    /// Permission.
    #[error("{0}: not allowed to attach (needs CAP_NET_ADMIN and CAP_BPF, or root)")]
    Permission(String),
    /// Anything else.
    #[error("{iface}: attaching {what} failed: {detail}")]
    Other {
        /// Interface.
        iface: String,
        /// XDP or TC.
        what: &'static str,
        /// The error, with the kernel's reason.
        detail: String,
    },
}

/// Interface index by name.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex(3) only reads a NUL-terminated string, and `c` is one
    // (CString) that lives until after the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Names of the interfaces that exist now.
pub fn interface_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether `name` matches the shell-style `pattern` (`*` and `?`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Whether an `-i` argument is a glob.
pub fn is_glob(arg: &str) -> bool {
    arg.contains(['*', '?'])
}

fn errno_of(e: &aya::programs::ProgramError) -> Option<i32> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        src = s.source();
    }
    None
}

/// An interface the counters are reported for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Interface name.
    pub name: String,
    /// Interface index (the last one, when gone).
    pub ifindex: u32,
    /// Counter slot (0: shared).
    pub slot: u32,
    /// Gone, its counters kept (final) until its slot goes to another interface.
    pub gone: bool,
}

/// The interfaces whose counters the stats lines, the summary and /metrics report,
/// and what the run's totals need besides them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceSet {
    /// Watched interfaces, then gone ones that still hold a slot.
    pub listed: Vec<Listed>,
    /// Final counts of gone interfaces whose slots went to others.
    pub retired: ClassCounts,
    /// Whether an interface ever counted in the shared slot 0 (its counts are then
    /// part of the totals, once).
    pub shared_slot_used: bool,
}

/// The attachments of one run.
pub struct Attachments {
    /// By interface name.
    pub by_name: BTreeMap<String, Attached>,
    /// Counter slots: an interface that goes and comes back counts on in its slot
    /// (and metrics stay monotonic) unless the slot went to a new interface meanwhile.
    slots: SlotBook,
    /// Final counts of gone interfaces whose slots went to others.
    retired: ClassCounts,
    shared_slot_used: bool,
    mode: XdpMode,
    egress: bool,
}

impl Attachments {
    /// No attachments yet.
    pub fn new(mode: XdpMode, egress: bool) -> Attachments {
        Attachments {
            by_name: BTreeMap::new(),
            slots: SlotBook::new(),
            retired: ClassCounts::default(),
            shared_slot_used: false,
            mode,
            egress,
        }
    }

    /// What the counters are reported for.
    pub fn interface_set(&self) -> InterfaceSet {
        let watched = self.by_name.values().map(|a| Listed {
            name: a.name.clone(),
            ifindex: a.ifindex,
            slot: a.slot,
            gone: false,
        });
        let gone = self.slots.gone_holders().map(|(name, ifindex, slot)| Listed {
            name: name.to_string(),
            ifindex,
            slot,
            gone: true,
        });
        InterfaceSet {
            listed: watched.chain(gone).collect(),
            retired: self.retired,
            shared_slot_used: self.shared_slot_used,
        }
    }

    /// Makes `choice`'s slot ready for `name`: a reclaimed slot's final counts are kept
    /// in `retired`, and any slot new to the name is zeroed. Falls back to the shared
    /// slot when the kernel map cannot be written.
    fn prepare_slot(&mut self, kernel: &mut Kernel, name: &str, choice: Choice) -> Choice {
        let slot = match &choice {
            Choice::Own(_) | Choice::Shared => return choice,
            Choice::Free(slot) => *slot,
            Choice::Reclaim { slot, from } => {
                match kernel.counters(&[*slot]) {
                    Ok(snapshot) => self.retired.add(&snapshot.slot(*slot)),
                    Err(e) => tracing::warn!("{}: final counters lost: {e}", printable::text(from)),
                }
                // Its counts are in `retired` now, whatever happens to the slot.
                self.slots.forget(from);
                *slot
            }
        };
        match kernel.clear_slot(slot) {
            Ok(()) => choice,
            Err(e) => {
                tracing::warn!(
                    "{}: cannot zero counter slot {slot}, counting in the shared slot: {e}",
                    printable::text(name)
                );
                Choice::Shared
            }
        }
    }

    /// Attaches to `name`; returns a notice to print when XDP fell back to skb mode.
    pub fn attach(&mut self, kernel: &mut Kernel, name: &str) -> Result<Option<String>, AttachError> {
        let ifindex = ifindex(name).ok_or_else(|| AttachError::NoSuchInterface(name.to_string()))?;
        let modes: &[(AyaXdpMode, &'static str)] = match self.mode {
            XdpMode::Auto => &[(AyaXdpMode::Driver, "native"), (AyaXdpMode::Skb, "skb")],
            XdpMode::Native => &[(AyaXdpMode::Driver, "native")],
            XdpMode::Skb => &[(AyaXdpMode::Skb, "skb")],
        };
        let mut notice = None;
        let mut attached = None;
        let mut last_err = None;
        for (mode, mode_name) in modes {
            match kernel.xdp().attach_to_if_index(ifindex, *mode) {
                Ok(id) => {
                    attached = Some((id, *mode_name));
                    break;
                }
                Err(e) => {
                    let errno = errno_of(&e);
                    if errno == Some(libc::EBUSY) || errno == Some(libc::EEXIST) {
                        return Err(AttachError::Busy { iface: name.to_string(), holder: xdp_holder(ifindex) });
                    }
                    if errno == Some(libc::EPERM) || errno == Some(libc::EACCES) {
                        return Err(AttachError::Permission(name.to_string()));
                    }
                    if self.mode == XdpMode::Auto && *mode_name == "native" {
                        notice = Some(format!(
                            "{name}: native XDP is not available ({e}); using generic (skb) mode, which costs more per packet"
                        ));
                    }
                    last_err = Some(e);
                }
            }
        }
        let Some((xdp, xdp_mode)) = attached else {
            let e = last_err.expect("at least one mode was tried");
            return Err(AttachError::Other {
                iface: name.to_string(),
                what: "XDP",
                detail: format!("{e}{}", if self.mode == XdpMode::Native { "; try --xdp-mode skb" } else { "" }),
            });
        };
        let tc = if self.egress {
            match kernel.tc().attach_to_if(ifindex, name) {
                Ok(id) => Some(id),
                Err(e) => {
                    let _ = kernel.xdp().detach(xdp);
                    return Err(AttachError::Other {
                        iface: name.to_string(),
                        what: "TC egress (tcx)",
                        detail: e.to_string(),
                    });
                }
            }
        } else {
            None
        };
        // Nothing maps to the slot until watch_interface: it is prepared first.
        let choice = self.slots.choose(name);
        let choice = self.prepare_slot(kernel, name, choice);
        self.slots.commit(name, ifindex, &choice);
        let slot = choice.slot();
        self.shared_slot_used |= slot == 0;
        if let Err(e) = kernel.watch_interface(ifindex, slot) {
            tracing::warn!("{}: cannot mark the interface as watched: {e}", printable::text(name));
        }
        self.by_name
            .insert(name.to_string(), Attached { name: name.to_string(), ifindex, slot, xdp_mode, xdp: Some(xdp), tc });
        Ok(notice)
    }

    /// Lets go of `name` (it may already be gone: the kernel then dropped the links).
    pub fn detach(&mut self, kernel: &mut Kernel, name: &str) -> Option<Attached> {
        let mut a = self.by_name.remove(name)?;
        if let Some(xdp) = a.xdp.take() {
            let _ = kernel.xdp().detach(xdp);
        }
        if let Some(tc) = a.tc.take() {
            let _ = kernel.tc().detach(tc);
        }
        let _ = kernel.unwatch_interface(a.ifindex);
        self.slots.gone(name);
        Some(a)
    }

    /// Detaches everything.
    pub fn detach_all(&mut self, kernel: &mut Kernel) {
        let names: Vec<String> = self.by_name.keys().cloned().collect();
        for n in names {
            self.detach(kernel, &n);
        }
    }
}

trait TcxAttach {
    fn attach_to_if(&mut self, ifindex: u32, name: &str) -> Result<SchedClassifierLinkId, aya::programs::ProgramError>;
}

impl TcxAttach for aya::programs::SchedClassifier {
    fn attach_to_if(
        &mut self,
        _ifindex: u32,
        name: &str,
    ) -> Result<SchedClassifierLinkId, aya::programs::ProgramError> {
        self.attach_with_options(name, TcAttachType::Egress, TcAttachOptions::TcxOrder(LinkOrder::default()))
    }
}

/// Which process holds an XDP link on `ifindex` of this network namespace, from
/// /proc/*/fdinfo of bpf links. An ifindex is only unique within a namespace (every
/// namespace's first veth may be 2), so the link must also carry the program that
/// rtnetlink says is attached here; without that answer, only processes in this
/// namespace are considered.
pub fn xdp_holder(ifindex: u32) -> String {
    let progs = super::links::xdp_prog_ids(ifindex).unwrap_or_default();
    let own_netns = std::fs::read_link("/proc/self/ns/net").ok();
    let Ok(procs) = std::fs::read_dir("/proc") else { return String::new() };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == std::process::id().to_string() {
            continue;
        }
        if progs.is_empty() && (own_netns.is_none() || std::fs::read_link(p.path().join("ns/net")).ok() != own_netns) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else { continue };
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else { continue };
            let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
            if field("link_type:") != Some("xdp") || field("ifindex:") != Some(ifindex.to_string().as_str()) {
                continue;
            }
            if !progs.is_empty()
                && !field("prog_id:").and_then(|v| v.parse().ok()).is_some_and(|id: u32| progs.contains(&id))
            {
                continue;
            }
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            return format!(", held by pid {pid} ({})", comm.trim());
        }
    }
    match progs.first() {
        Some(id) => format!(" (program id {id}, held by no process: attached with `ip link` or pinned)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("vpns*", "vpns0"));
        assert!(glob_match("vpns*", "vpns"));
        assert!(!glob_match("vpns*", "eth0"));
        assert!(glob_match("veth?", "veth1"));
        assert!(!glob_match("veth?", "veth10"));
        assert!(is_glob("tun*") && !is_glob("eth0"));
    }
}
