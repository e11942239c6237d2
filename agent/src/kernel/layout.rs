//! What the drop program must know of this kernel, read from its BTF
//! (`/sys/kernel/btf/vmlinux`): where the `sk_buff`, `net_device` and `dst_entry` fields
//! it reads are, the names of the drop reasons (`enum skb_drop_reason`, whose values
//! change between versions), and whether `kfree_skb`'s tracepoint has the arguments
//! the program expects. Nothing is assumed of one kernel's layout.

use std::collections::BTreeMap;

use agent_common::drop::{DropConfig, NO_REASON};
use btf_rs::{Btf, Type};

/// Where the kernel's BTF is.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Bytes of `sk_buff` the program copies; every field it reads must lie inside.
const SKB_COPY: u32 = 256;

/// The kernel facts the drop program and the agent need.
#[derive(Clone, Debug)]
pub struct KernelLayout {
    /// The offsets, ready for the `DROP_CONFIG` map (VPN ports and `ready` unset).
    pub offsets: DropConfig,
    /// Drop reason values to their names, without the `SKB_DROP_REASON_` prefix.
    pub reasons: BTreeMap<u32, String>,
}

/// Why the drop program cannot run on this kernel.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// No BTF.
    #[error("the kernel has no BTF at {VMLINUX_BTF} (CONFIG_DEBUG_INFO_BTF)")]
    NoBtf,
    /// BTF could not be read.
    #[error("reading the kernel's BTF: {0}")]
    Btf(String),
    /// A type or field is missing or not as expected.
    #[error("the kernel's BTF has no {0}")]
    Missing(String),
}

impl KernelLayout {
    /// Reads the layout from the running kernel's BTF.
    pub fn from_kernel() -> Result<KernelLayout, LayoutError> {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            return Err(LayoutError::NoBtf);
        }
        let btf = Btf::from_file(VMLINUX_BTF).map_err(|e| LayoutError::Btf(e.to_string()))?;
        KernelLayout::from_btf(&btf)
    }

    /// Reads the layout from `btf`.
    pub fn from_btf(btf: &Btf) -> Result<KernelLayout, LayoutError> {
        check_tracepoint(btf)?;
        let skb = fields(btf, "sk_buff")?;
        let dev = fields(btf, "net_device")?;
        let dst = fields(btf, "dst_entry")?;
        let net = fields(btf, "net")?;
        let ns = fields(btf, "ns_common")?;
        let at = |m: &BTreeMap<String, u32>, s: &str, f: &str| {
            m.get(f).copied().ok_or_else(|| LayoutError::Missing(format!("{s}.{f}")))
        };
        let offsets = DropConfig {
            skb_head: at(&skb, "sk_buff", "head")?,
            skb_network_header: at(&skb, "sk_buff", "network_header")?,
            skb_len: at(&skb, "sk_buff", "len")?,
            skb_data_len: at(&skb, "sk_buff", "data_len")?,
            skb_data: at(&skb, "sk_buff", "data")?,
            skb_iif: at(&skb, "sk_buff", "skb_iif")?,
            skb_dev: at(&skb, "sk_buff", "dev")?,
            skb_refdst: at(&skb, "sk_buff", "_skb_refdst")?,
            skb_protocol: at(&skb, "sk_buff", "protocol")?,
            dev_ifindex: at(&dev, "net_device", "ifindex")?,
            dev_mtu: at(&dev, "net_device", "mtu")?,
            dst_dev: at(&dst, "dst_entry", "dev")?,
            reason_pkt_too_big: NO_REASON,
            ready: 0,
            vpn_ports: [0; 8],
            // `possible_net_t` holds the one pointer (with network namespaces built in).
            dev_nd_net: at(&dev, "net_device", "nd_net")?,
            net_inum: at(&net, "net", "ns")? + at(&ns, "ns_common", "inum")?,
            netns_inum: 0,
            _pad: 0,
        };
        for (name, off) in [
            ("head", offsets.skb_head),
            ("network_header", offsets.skb_network_header),
            ("len", offsets.skb_len),
            ("data_len", offsets.skb_data_len),
            ("data", offsets.skb_data),
            ("skb_iif", offsets.skb_iif),
            ("dev", offsets.skb_dev),
            ("_skb_refdst", offsets.skb_refdst),
            ("protocol", offsets.skb_protocol),
        ] {
            if off + 8 > SKB_COPY {
                return Err(LayoutError::Missing(format!("sk_buff.{name} within its first {SKB_COPY} bytes")));
            }
        }
        let reasons = drop_reasons(btf)?;
        let reason_pkt_too_big = reasons.iter().find(|(_, n)| *n == "PKT_TOO_BIG").map_or(NO_REASON, |(v, _)| *v);
        Ok(KernelLayout { offsets: DropConfig { reason_pkt_too_big, ..offsets }, reasons })
    }

    /// The name of drop reason `value` (e.g. `NETFILTER_DROP`); unknown values by number.
    pub fn reason_name(&self, value: u32) -> String {
        self.reasons.get(&value).cloned().unwrap_or_else(|| format!("REASON_{value}"))
    }
}

/// `btf_trace_kfree_skb` must be `(void *, struct sk_buff *, void *, enum
/// skb_drop_reason, ...)`: the program reads the skb as argument 0 and the reason as
/// argument 2 (the first, the tracepoint's data, is not the program's).
fn check_tracepoint(btf: &Btf) -> Result<(), LayoutError> {
    let missing = || LayoutError::Missing("kfree_skb tracepoint (skb, location, reason)".into());
    let td = btf
        .resolve_types_by_name("btf_trace_kfree_skb")
        .map_err(|_| missing())?
        .into_iter()
        .find(|t| matches!(t, Type::Typedef(_)))
        .ok_or_else(missing)?;
    let Type::Typedef(td) = td else { return Err(missing()) };
    let Ok(Type::Ptr(ptr)) = btf.resolve_chained_type(&td) else { return Err(missing()) };
    let Ok(Type::FuncProto(proto)) = btf.resolve_chained_type(&ptr) else { return Err(missing()) };
    if proto.parameters.len() < 4 {
        return Err(missing());
    }
    let skb_ok = match btf.resolve_chained_type(&proto.parameters[1]) {
        Ok(Type::Ptr(p)) => {
            matches!(btf.resolve_chained_type(&p), Ok(Type::Struct(s)) if btf.resolve_name(&s).is_ok_and(|n| n == "sk_buff"))
        }
        _ => false,
    };
    let reason_ok = matches!(btf.resolve_chained_type(&proto.parameters[3]),
        Ok(Type::Enum(e)) if btf.resolve_name(&e).is_ok_and(|n| n == "skb_drop_reason"));
    if skb_ok && reason_ok { Ok(()) } else { Err(missing()) }
}

/// Every field of struct `name` by name, with its byte offset, anonymous structs and
/// unions flattened (as C reads them).
fn fields(btf: &Btf, name: &str) -> Result<BTreeMap<String, u32>, LayoutError> {
    let st = btf
        .resolve_types_by_name(name)
        .map_err(|_| LayoutError::Missing(format!("struct {name}")))?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| LayoutError::Missing(format!("struct {name}")))?;
    let mut out = BTreeMap::new();
    flatten(btf, &st, 0, &mut out, 0);
    Ok(out)
}

fn flatten(btf: &Btf, st: &btf_rs::Struct, base_bits: u32, out: &mut BTreeMap<String, u32>, depth: u32) {
    for m in &st.members {
        let bits = base_bits + m.bit_offset();
        let name = btf.resolve_name(m).unwrap_or_default();
        if name.is_empty() {
            if depth < 8
                && let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(m)
            {
                flatten(btf, &inner, bits, out, depth + 1);
            }
        } else if m.bitfield_size().unwrap_or(0) == 0 && bits.is_multiple_of(8) {
            out.entry(name).or_insert(bits / 8);
        }
    }
}

/// `enum skb_drop_reason`: value to name, `SKB_DROP_REASON_` taken off.
fn drop_reasons(btf: &Btf) -> Result<BTreeMap<u32, String>, LayoutError> {
    let e = btf
        .resolve_types_by_name("skb_drop_reason")
        .map_err(|_| LayoutError::Missing("enum skb_drop_reason".into()))?
        .into_iter()
        .find_map(|t| match t {
            Type::Enum(e) => Some(e),
            _ => None,
        })
        .ok_or_else(|| LayoutError::Missing("enum skb_drop_reason".into()))?;
    let mut out = BTreeMap::new();
    for m in &e.members {
        let name = btf.resolve_name(m).map_err(|err| LayoutError::Btf(err.to_string()))?;
        let short = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(&name);
        out.insert(m.val(), short.to_string());
    }
    Ok(out)
}

/// Whether `s` is a drop reason name as the kernel writes them (for labels).
pub fn is_reason_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF (every kernel this agent supports has it; the test
    /// machines do): the offsets are where `pahole` puts them, the reasons named.
    #[test]
    fn reads_this_kernels_layout() {
        let Ok(layout) = KernelLayout::from_kernel() else {
            assert!(
                std::env::var_os("PATHWATCH_REQUIRE_BPF").is_none(),
                "PATHWATCH_REQUIRE_BPF is set but this kernel's BTF cannot be read"
            );
            return;
        };
        let o = layout.offsets;
        assert!(o.skb_head > 0 && o.skb_data > o.skb_head - 64 && o.skb_len > 0);
        assert_ne!(o.skb_network_header, o.skb_protocol);
        assert_eq!(layout.reasons.get(&2).map(String::as_str), Some("NOT_SPECIFIED"));
        assert!(layout.reasons.values().any(|n| n == "NETFILTER_DROP"));
        assert_ne!(o.reason_pkt_too_big, NO_REASON);
        assert!(layout.reasons.values().all(|n| is_reason_name(n)), "{:?}", layout.reasons);
    }
}
