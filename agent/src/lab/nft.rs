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

/// Gateway (or router): drop forwarded UDP to `port` (DTLS blocked on the path; TCP
/// still passes).
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

/// Gateway (or router): drop the ICMP "fragmentation needed" / "packet too big" the
/// host itself sends, in its output hook, before any interface sees it: a PMTU black
/// hole.
pub fn drop_own_frag_needed() -> String {
    "table inet pwlab {\n  chain output_filter {\n    type filter hook output priority 0; policy accept;\n    \
     icmp type destination-unreachable icmp code frag-needed counter drop\n    \
     icmpv6 type packet-too-big counter drop\n  }\n}\n"
        .to_string()
}

/// Client: drop its own TCP to `port` in its output hook, so that a stalled
/// connection's retransmissions stop reaching the gateway (its counts are final).
pub fn drop_own_tcp(port: u16) -> String {
    format!(
        "table inet pwlab {{\n  chain output_filter {{\n    type filter hook output priority 0; policy accept;\n    \
         tcp dport {port} counter drop\n  }}\n}}\n"
    )
}

/// The packet counter of the first `counter` rule in `ns` whose text contains `rule`
/// (`"frag-needed"`, `"udp dport 443"`): what that one rule caught.
pub fn counter_of(ns: &NetNs, rule: &str) -> Option<u64> {
    list(ns).lines().filter(|l| l.contains(rule)).find_map(counter_in)
}

fn counter_in(line: &str) -> Option<u64> {
    line.split("counter packets ").nth(1)?.split_whitespace().next()?.parse().ok()
}

/// The packet counters of the `counter` rules in `ns` (how many the fault caught).
pub fn counters(ns: &NetNs) -> Vec<u64> {
    list(ns).lines().filter_map(counter_in).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_line_gives_its_packet_counter_and_a_line_without_one_nothing() {
        let line = "\t\ticmp type destination-unreachable icmp code frag-needed counter packets 7 bytes 4200 drop";
        assert_eq!(counter_in(line), Some(7));
        assert_eq!(counter_in("\t\ttype filter hook output priority filter; policy accept;"), None);
    }
}
