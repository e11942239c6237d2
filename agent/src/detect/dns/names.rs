//! Names that are negative by design: asking for them and being told "no such name"
//! is how the client finds out that a local service is absent, not a broken resolver.
//!
//! Stub resolvers expand single labels with search suffixes (`printer.lan`,
//! `localdomain.localdomain`), Windows looks for `wpad` and domain controllers
//! (`_ldap._tcp...`), DNS-SD browses `_service._proto` names, and dynamic-update
//! clients ask for the SOA of their zone and reverse PTR names. Such a storm stays
//! `info` unless it persists for minutes (`dns.negative_min_span_s`).

use crate::decode::name::DnsName;

/// Suffixes (last labels) of private or link-local zones that public resolvers
/// answer NXDOMAIN for.
const LOCAL_SUFFIXES: &[&[u8]] = &[b"local", b"lan", b"home", b"internal", b"localdomain"];

/// QTYPE SOA (dynamic update finds its zone) and PTR (reverse lookups).
const SOA: u16 = 6;
const PTR: u16 = 12;

/// Whether failing lookups of `name` / `qtype` are expected by design.
pub fn negative_by_design(name: &DnsName, qtype: u16) -> bool {
    if qtype == SOA || qtype == PTR {
        return true;
    }
    let labels: Vec<&[u8]> = name.labels().collect();
    let [.., last] = labels.as_slice() else { return true };
    labels.len() == 1
        || LOCAL_SUFFIXES.contains(last)
        || labels.ends_with(&[b"home".as_slice(), b"arpa".as_slice()])
        || labels.iter().any(|l| l.first() == Some(&b'_'))
        || labels[0] == b"wpad"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negative(name: &str, qtype: u16) -> bool {
        negative_by_design(&DnsName::from_dotted(name), qtype)
    }

    #[test]
    fn local_zones_dns_sd_dynamic_update_and_wpad_are_negative_by_design() {
        for name in [
            "local",
            "printer",
            "nas.lan",
            "router.home",
            "db.corp.internal",
            "localdomain.localdomain",
            "hub.home.arpa",
            "_ldap._tcp.dc._msdcs.workgroup",
            "_sip._udp.sip.example.net",
            "wpad.example.com",
            "Printer.LOCAL",
        ] {
            assert!(negative(name, 1), "{name}");
        }
        assert!(negative("example.com", 6), "SOA");
        assert!(negative("1.0.0.127.in-addr.arpa", 12), "PTR");
    }

    #[test]
    fn ordinary_names_are_not() {
        for name in ["mus.cisco.com", "sls.update.microsoft.com", "local.example.com", "lan.example.org", "arpa.io"] {
            assert!(!negative(name, 1), "{name}");
        }
        assert!(!negative("example.com", 28));
    }
}
