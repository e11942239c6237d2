//! The finding kinds: one enum, so the JSON `kind`, the metrics' bounded `kind` label,
//! the alert rules and the tests all name the same closed set.

/// What a finding diagnoses. The order is the order of DESIGN.md's schema table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    /// A client re-asking one failing name.
    DnsProbeStorm,
    /// One resolver failing many names for many lookups at once.
    DnsResolverOutage,
    /// DTLS handshakes that never get an answer.
    DtlsBlocked,
    /// DTLS handshakes answered by ICMP port unreachable.
    DtlsPortUnreachable,
    /// A VPN client rebuilding its tunnel at a steady rhythm.
    VpnReconnectLoop,
    /// A large segment retransmitted and never acknowledged, with no ICMP.
    PmtuBlackHole,
    /// ICMP frag-needed / packet-too-big seen: discovery is working.
    PmtuSignal,
    /// A SYN advertising an MSS larger than a known path MTU allows.
    MssExceedsPathMtu,
    /// ICMP errors this host generated and its own firewall dropped.
    LocalIcmpSuppressed,
}

impl FindingKind {
    /// Every kind, in schema order.
    pub const ALL: [FindingKind; 9] = [
        FindingKind::DnsProbeStorm,
        FindingKind::DnsResolverOutage,
        FindingKind::DtlsBlocked,
        FindingKind::DtlsPortUnreachable,
        FindingKind::VpnReconnectLoop,
        FindingKind::PmtuBlackHole,
        FindingKind::PmtuSignal,
        FindingKind::MssExceedsPathMtu,
        FindingKind::LocalIcmpSuppressed,
    ];

    /// The name in JSON, in metrics labels and in alert rules.
    pub const fn name(self) -> &'static str {
        match self {
            FindingKind::DnsProbeStorm => "dns_probe_storm",
            FindingKind::DnsResolverOutage => "dns_resolver_outage",
            FindingKind::DtlsBlocked => "dtls_blocked",
            FindingKind::DtlsPortUnreachable => "dtls_port_unreachable",
            FindingKind::VpnReconnectLoop => "vpn_reconnect_loop",
            FindingKind::PmtuBlackHole => "pmtu_black_hole",
            FindingKind::PmtuSignal => "pmtu_signal",
            FindingKind::MssExceedsPathMtu => "mss_exceeds_path_mtu",
            FindingKind::LocalIcmpSuppressed => "local_icmp_suppressed",
        }
    }

    /// The kind with this JSON name.
    pub fn from_name(name: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::FindingKind;

    #[test]
    fn every_name_is_distinct_and_maps_back() {
        for k in FindingKind::ALL {
            assert_eq!(FindingKind::from_name(k.name()), Some(k));
        }
        let mut names: Vec<_> = FindingKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FindingKind::ALL.len());
        assert_eq!(FindingKind::from_name("dns_storm"), None);
    }
}
