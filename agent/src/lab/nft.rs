//! The faults, as nftables rules in one table (`inet pwlab`) of a namespace. Each
//! namespace has its own ruleset, so nothing here touches the host's firewall.
//! (`fwd` is a reserved word in nft: chains are named after their hook instead.)

use std::io;

use super::netns::NetNs;

/// Loads `ruleset` (nft syntax) into `ns`, atomically.
pub fn apply(ns: &NetNs, ruleset: &str) -> io::Result<()> {
    ns.exec_with_input("nft", &["-f", "-"], ruleset.as_bytes())?;
    Ok(())
}

/// The rules in `ns`, as `nft list ruleset` prints them.
pub fn list(ns: &NetNs) -> String {
    ns.exec("nft", &["list", "ruleset"]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

/// Gateway: drop forwarded UDP to `port` (DTLS blocked on the path; TCP still passes).
pub fn drop_udp_forward(port: u16) -> String {
    format!(
        "table inet pwlab {{\n  chain forward_filter {{\n    type filter hook forward priority 0; policy accept;\n    \
         udp dport {port} counter drop\n  }}\n}}\n"
    )
}

/// Gateway: reject forwarded UDP to `port` with ICMP port unreachable, from the
/// gateway's own address (a firewall that rejects instead of dropping).
pub fn reject_udp_forward(port: u16) -> String {
    format!(
        "table inet pwlab {{\n  chain forward_filter {{\n    type filter hook forward priority 0; policy accept;\n    \
         udp dport {port} counter reject with icmpx type port-unreachable\n  }}\n}}\n"
    )
}

/// Gateway: drop the ICMP "fragmentation needed" / "packet too big" the gateway
/// itself sends, in its output hook, before any interface sees it: a PMTU black hole.
pub fn drop_own_frag_needed() -> String {
    "table inet pwlab {\n  chain output_filter {\n    type filter hook output priority 0; policy accept;\n    \
     icmp type destination-unreachable icmp code frag-needed counter drop\n    \
     icmpv6 type packet-too-big counter drop\n  }\n}\n"
        .to_string()
}

/// The packet counters of the `counter` rules in `ns` (how many the fault caught).
pub fn counters(ns: &NetNs) -> Vec<u64> {
    list(ns)
        .lines()
        .filter_map(|l| l.split("counter packets ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse().ok())
        .collect()
}
